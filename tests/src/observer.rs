//! Run the real observer binary in a namespace and read its JSON lines.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::Netns;

/// Path of the observer binary under test: $OBSERVER_BIN, else the workspace's debug build.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("OBSERVER_BIN") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/observer");
    assert!(p.exists(), "{} is missing: build it first (`cargo xtask test` does)", p.display());
    p
}

pub struct Observer {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    stdout_done: Option<thread::JoinHandle<()>>,
}

/// One JSON report.
#[derive(Debug, Clone)]
pub struct Report(pub Value);

impl Observer {
    /// Start observer in `ns` with JSON output and wait until its programs are attached.
    pub fn start(ns: &Netns, args: &[&str]) -> Observer {
        Observer::start_with_env(ns, args, &[])
    }

    /// Like [`Observer::start`], with extra environment variables.
    pub fn start_with_env(ns: &Netns, args: &[&str], env: &[(&str, &str)]) -> Observer {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(binary())
            // JSON lines, unless the test asks for another format.
            .args(if args.contains(&"--format") { &[][..] } else { &["--format", "json"][..] })
            .args(if args.contains(&"--interval") { &[][..] } else { &["--interval", "0.5"][..] })
            // A probe of its own, even on a machine where an observer daemon runs; except
            // for the daemon itself and clients that attach to one.
            .args(if args.contains(&"--attach") || args.contains(&"daemon") { &[][..] } else { &["--standalone"][..] })
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn observer");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        let stdout_done = thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                // A last line without its newline: observer was killed while writing it.
                if !line.ends_with('\n') {
                    break;
                }
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("observer printed a line that is not JSON ({e}): {line}"));
                sink.lock().unwrap().push(v);
                line.clear();
            }
        });
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        let err_sink = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                // Stored before the signal, so that the caller sees the line it waited for.
                err_sink.lock().unwrap().push_str(&format!("{line}\n"));
                if line.contains("observer: attached") {
                    let _ = tx.send(());
                }
            }
        });
        let mut obs = Observer { child: Some(child), lines, stderr, stdout_done: Some(stdout_done) };
        // Disconnected (stderr closed: observer exited) or 30 s without the line.
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let status = obs.child.as_mut().and_then(|c| c.wait().ok());
            panic!("observer did not attach (exit: {status:?}); stderr:\n{}", obs.stderr());
        }
        obs
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Reports printed so far.
    pub fn reports(&self) -> Vec<Report> {
        self.lines.lock().unwrap().iter().cloned().map(Report).collect()
    }

    /// Wait until a report satisfies `pred`, up to `timeout`; return it.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Report) -> bool) -> Option<Report> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(r) = self.reports().into_iter().rev().find(|r| pred(r)) {
                return Some(r);
            }
            if Instant::now() > end {
                return None;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Like [`Observer::wait_for`], among the reports printed from now on only.
    pub fn wait_for_next(&self, timeout: Duration, pred: impl Fn(&Report) -> bool) -> Option<Report> {
        let seen = self.reports().len();
        let end = Instant::now() + timeout;
        loop {
            if let Some(r) = self.reports().into_iter().skip(seen).find(|r| pred(r)) {
                return Some(r);
            }
            if Instant::now() > end {
                return None;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGINT, wait for exit 0, and return the final report.
    pub fn stop(self) -> Report {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGINT) };
        self.stop_after_signal()
    }

    /// SIGTERM and wait: the exit status, for a run that prints no reports (the daemon).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let mut child = self.child.take().expect("running");
        let status = child.wait().expect("wait for observer");
        if let Some(h) = self.stdout_done.take() {
            h.join().expect("stdout reader");
        }
        status
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    /// Wait for exit 0 after a signal the caller sent, and return the final report.
    pub fn stop_after_signal(mut self) -> Report {
        let mut child = self.child.take().expect("running");
        let status = child.wait().expect("wait for observer");
        if let Some(h) = self.stdout_done.take() {
            h.join().expect("stdout reader");
        }
        assert!(status.success(), "observer exited with {status}; stderr:\n{}", self.stderr());
        let last = self.reports().pop().expect("observer printed no report");
        assert_eq!(last.0["final"], Value::Bool(true), "the last line must be the final summary");
        last
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Report {
    /// The TCP destination entry for `dest` (as printed, e.g. `10.77.3.2:80`).
    pub fn dest(&self, dest: &str) -> Option<&Value> {
        self.0["tcp"]["destinations"].as_array()?.iter().find(|d| d["dest"] == dest)
    }

    /// A since-start counter of `dest`, 0 when the destination is absent.
    pub fn total(&self, dest: &str, counter: &str) -> u64 {
        self.dest(dest).and_then(|d| d["total"][counter].as_u64()).unwrap_or(0)
    }

    pub fn window(&self, dest: &str, counter: &str) -> u64 {
        self.dest(dest).and_then(|d| d["window"][counter].as_u64()).unwrap_or(0)
    }

    pub fn port_total(&self, port: u16, counter: &str) -> u64 {
        self.0["tcp"]["local_ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["port"] == port))
            .and_then(|p| p["total"][counter].as_u64())
            .unwrap_or(0)
    }

    /// The DNS resolver entry for `resolver` (e.g. `10.77.3.2:53`).
    pub fn resolver(&self, resolver: &str) -> Option<&Value> {
        self.0["dns"]["resolvers"].as_array()?.iter().find(|r| r["resolver"] == resolver)
    }

    /// A since-start DNS counter of a resolver, 0 when absent.
    pub fn resolver_total(&self, resolver: &str, counter: &str) -> u64 {
        self.resolver(resolver).and_then(|r| r["total"][counter].as_u64()).unwrap_or(0)
    }

    /// The DNS name entry for (qname, qtype).
    pub fn name(&self, qname: &str, qtype: &str) -> Option<&Value> {
        self.0["dns"]["names"].as_array()?.iter().find(|n| n["qname"] == qname && n["qtype"] == qtype)
    }

    pub fn lost_total(&self) -> u64 {
        self.0["lost"]["total"].as_u64().expect("lost.total")
    }

    /// Events lost that could change what `programs` feed: every loss but the runs the
    /// kernel skipped of other programs. On a busy CPU a classic tracepoint program that
    /// interrupts another (a packet freed in a softirq: `kfree_skb`) is skipped and counted in
    /// `recursion_misses:PROGRAM`; a test of connects is not about a drop counter's miss.
    pub fn lost_affecting(&self, programs: &[&str]) -> u64 {
        let lost = &self.0["lost"];
        let n = |k: &str| lost[k].as_u64().unwrap_or(0);
        let own: u64 = programs.iter().map(|p| n(&format!("recursion_misses:{p}"))).sum();
        self.lost_total() - n("bpf_recursion_misses") + own
    }
}

/// The programs the connect layer's counts come from.
pub const CONNECT_PROGRAMS: &[&str] =
    &["inet_sock_set_state", "sys_enter_connect", "sys_exit_connect", "inet_sk_error_report", "tcp_send_reset", "tcp_receive_reset", "tcp_retransmit_synack", "observer_sockops"];
/// The programs DNS is read by (TC: never skipped, listed so a change of hook shows).
pub const PACKET_PROGRAMS: &[&str] = &["observer_ingress", "observer_egress", "observer_ingress_l3", "observer_egress_l3"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_skipped_runs_of_other_programs_are_left_out() {
        let r = Report(serde_json::json!({"lost": {
            "total": 7, "bpf_recursion_misses": 3, "recursion_misses:kfree_skb": 2,
            "recursion_misses:inet_sock_set_state": 1, "dns_ringbuf_full": 4,
        }}));
        assert_eq!(r.lost_affecting(&["sys_enter_connect"]), 4);
        assert_eq!(r.lost_affecting(CONNECT_PROGRAMS), 5);
        assert_eq!(r.lost_affecting(&["kfree_skb", "inet_sock_set_state"]), 7);
    }
}
