//! `cargo xtask bench-scale [SECS] [SOAK_MINUTES]`: observer on a busy node. For 1k, 10k, 30k,
//! 50k and 100k destinations (and half as many DNS names), a client namespace connects round-robin
//! to every destination at 10,000 connects a second (each refused by the server namespace,
//! which owns the whole 10.200.0.0/15 range) while it looks up every name in turn at 5,000
//! queries a second. Prints observer's memory, its CPU per interval, the time it takes to
//! close an interval (read the kernel's tables and rings, aggregate, judge, write), and what
//! it lost. With SOAK_MINUTES, then holds the 100k load that long and prints the memory at
//! the start and the end. BENCH_SCALE_SERIES=1 also prints each interval's CPU and close. A
//! benchmark that prints figures, not a test.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use observer_tests::{Pair, observer::binary, peak_rss_kib, peers, require_root, reset_peak_rss, rss_kib};
use serde_json::Value;

const CONNECTS_PER_S: u64 = 10_000;
const QUERIES_PER_S: u64 = 5_000;

struct Run {
    /// The process that holds the probe (observer, or the daemon), whose RSS is measured.
    pid: u32,
    child: std::process::Child,
    lines: Arc<Mutex<Vec<Value>>>,
    /// With BENCH_SCALE_DAEMON=1: the client attached to the daemon (which prints the
    /// reports), and the socket's directory.
    client: Option<(std::process::Child, peers::TempDir)>,
}

/// observer with its defaults but for the table sizes a 100k-destination node needs. With
/// BENCH_SCALE_DAEMON=1, `observer daemon` with the same flags and a client attached to it:
/// the figures are then the daemon's (its reports carry its own cost).
fn start(pair: &Pair) -> Run {
    let daemon = std::env::var_os("BENCH_SCALE_DAEMON").is_some_and(|v| v == "1");
    let dir = peers::TempDir::new("scale-daemon");
    let socket = dir.0.join("observer.sock");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &pair.client.name])
        .arg(binary())
        .args(["--format", "json", "--max-destinations", "131072", "--max-dns-names", "65536", "--no-ssl-uprobes"]);
    if daemon {
        cmd.args(["daemon", "--socket"]).arg(&socket);
        // BENCH_SCALE_DAEMON_ARGS: more daemon flags, e.g. `--memory-mb 1` to see its
        // memory without the flight recorder's history.
        if let Ok(more) = std::env::var("BENCH_SCALE_DAEMON_ARGS") {
            cmd.args(more.split_whitespace());
        }
    }
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start observer");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let out = child.stdout.take().expect("stdout");
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                sink.lock().unwrap().push(v);
            }
        }
    });
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("kernel maps take") {
                println!("  {line}");
            }
            if line.contains("observer: attached") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("observer attached");
    let pid = child.id();
    if !daemon {
        return Run { pid, child, lines, client: None };
    }
    // The reports come from a client attached to the daemon.
    let mut client = Command::new(binary())
        .args(["--attach", "--format", "json", "--socket"])
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the client");
    let out = client.stdout.take().expect("stdout");
    let sink = lines.clone();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                sink.lock().unwrap().push(v);
            }
        }
    });
    Run { pid, child, lines, client: Some((client, dir)) }
}

fn stop(mut run: Run) {
    if let Some((mut c, _dir)) = run.client.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(run.pid as i32, libc::SIGINT) };
    let _ = run.child.wait();
}

/// Figures over the reports from `from` on: (mean and max CPU ms per interval, mean and max
/// close ms, lost total at the end).
fn figures(lines: &[Value]) -> ((f64, f64), (f64, f64), String) {
    let costs: Vec<&Value> = lines.iter().filter_map(|l| l.get("observer")).collect();
    let stat = |key: &str| {
        let v: Vec<f64> = costs.iter().filter_map(|c| c[key].as_f64()).collect();
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        (mean, v.iter().copied().fold(0.0, f64::max))
    };
    // The total, and what it is made of: a count that is not zero needs its cause named.
    let lost = lines.last().map(|l| &l["lost"]);
    let total = lost.and_then(|l| l["total"].as_u64()).unwrap_or(0);
    let parts: Vec<String> = lost
        .and_then(Value::as_object)
        .map(|o| o.iter().filter(|(k, v)| *k != "total" && v.as_u64().is_some_and(|n| n > 0)).map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    let lost = if parts.is_empty() { total.to_string() } else { format!("{total} ({})", parts.join(", ")) };
    (stat("previous_interval_cpu_ms"), stat("previous_close_ms"), lost)
}

/// The namespaces: the server owns 10.200.0.0/15 (each connect refused at once) and echoes
/// DNS; the client routes that range to it.
fn setup() -> (Pair, peers_guard::Guard) {
    let pair = Pair::new("scale");
    let s = pair.server_ip();
    pair.server.run("ip route add local 10.200.0.0/15 dev lo");
    pair.client.run(&format!("ip route add 10.200.0.0/15 via {s}"));
    let echo = pair.server.spawn(&format!("{} dns-echo {s}:53", peers::peer_bin().display()));
    peers::wait_udp(&pair.server, 53);
    (pair, peers_guard::Guard(echo))
}

mod peers_guard {
    /// Keeps the DNS echo running while the pair lives.
    pub struct Guard(#[allow(dead_code)] pub observer_tests::Proc);
}

fn main() {
    require_root();
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let soak_min: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let peer = peers::peer_bin();
    if std::env::var_os("BENCH_SCALE_DAEMON").is_some_and(|v| v == "1") {
        println!("bench-scale: observer daemon, with one client attached (BENCH_SCALE_DAEMON=1)");
    }
    println!(
        "bench-scale: {CONNECTS_PER_S} connects/s round-robin over N destinations, {QUERIES_PER_S} queries/s over N/2 names, \
         {secs} s per level, reports every 1 s; figures over the second half of each run"
    );
    // RSS sampled every 250 ms sees observer between closes; its peak (VmHWM, reset at the
    // half) also holds what a close builds and drops.
    println!("| destinations | names | RSS max, sampled (MiB) | RSS peak, second half (MiB) | CPU per interval, mean / max (ms) | close, mean / max (ms) | lost |");
    println!("|---|---|---|---|---|---|---|");
    // BENCH_SCALE_LEVELS=10000 runs one level (to profile observer meanwhile).
    let levels: Vec<u64> = std::env::var("BENCH_SCALE_LEVELS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        // 30k and 50k: where the targets stop being met.
        .unwrap_or_else(|| vec![1_000, 10_000, 30_000, 50_000, 100_000]);
    for n in levels {
        let (pair, _echo) = setup();
        let run = start(&pair);
        let dns = format!("{}:53", pair.server_ip());
        let names = n / 2;
        let c = {
            let cmd = format!("{} connect-spread 10.200.0.0 {n} {CONNECTS_PER_S} {secs}", peer.display());
            let ns = pair.client.name.clone();
            thread::spawn(move || Command::new("ip").args(["netns", "exec", &ns, "bash", "-c", &cmd]).output())
        };
        let d = {
            let cmd = format!("{} dns-names {dns} {names} {QUERIES_PER_S} {secs}", peer.display());
            let ns = pair.client.name.clone();
            thread::spawn(move || Command::new("ip").args(["netns", "exec", &ns, "bash", "-c", &cmd]).output())
        };
        let started = Instant::now();
        let mut rss_max = 0;
        let mut half = 0;
        while started.elapsed() < Duration::from_secs(secs) {
            thread::sleep(Duration::from_millis(250));
            rss_max = rss_max.max(rss_kib(run.pid));
            if half == 0 && started.elapsed() >= Duration::from_secs(secs / 2) {
                half = run.lines.lock().unwrap().len();
                if let Err(e) = reset_peak_rss(run.pid) {
                    println!("  (cannot reset the peak RSS: {e})");
                }
            }
        }
        let peak = peak_rss_kib(run.pid);
        let made = c.join().ok().and_then(|o| o.ok()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
        let _ = d.join();
        let lines = run.lines.lock().unwrap().clone();
        let ((cpu_mean, cpu_max), (close_mean, close_max), lost) = figures(&lines[half.min(lines.len())..]);
        if std::env::var_os("BENCH_SCALE_SERIES").is_some_and(|v| v == "1") {
            // Each interval's CPU and close (ms), to tell a periodic cost from noise.
            let series: Vec<String> = lines
                .iter()
                .filter_map(|l| l.get("observer"))
                .map(|o| format!("{:.0}/{:.0}", o["previous_interval_cpu_ms"].as_f64().unwrap_or(0.0), o["previous_close_ms"].as_f64().unwrap_or(0.0)))
                .collect();
            println!("  per interval, CPU/close ms: {}", series.join(" "));
        }
        let dests = lines.last().and_then(|l| l["tcp"]["destinations_omitted"].as_u64()).unwrap_or(0);
        println!(
            "| {n} | {names} | {:.1} | {:.1} | {cpu_mean:.0} / {cpu_max:.0} | {close_mean:.0} / {close_max:.0} | {lost} |",
            rss_max as f64 / 1024.0,
            peak as f64 / 1024.0
        );
        println!("  (connects made, refused, other: {made}; destinations beyond --top: {dests})");
        if n == 100_000 && soak_min > 0 {
            println!("  soak: the 100k load for {soak_min} min more");
            let first = rss_kib(run.pid);
            let cmd = format!("{} connect-spread 10.200.0.0 {n} {CONNECTS_PER_S} {}", peer.display(), soak_min * 60);
            pair.client.spawn(&cmd);
            pair.client.spawn(&format!("{} dns-names {dns} {names} {QUERIES_PER_S} {}", peer.display(), soak_min * 60));
            for minute in 1..=soak_min {
                thread::sleep(Duration::from_secs(60));
                println!("  minute {minute}: RSS {:.1} MiB (at the start {:.1})", rss_kib(run.pid) as f64 / 1024.0, first as f64 / 1024.0);
            }
        }
        stop(run);
    }
}
