//! `observer daemon` with real peers: a fault seen before anyone attached, exports after the
//! fact, several clients, a killed daemon, access by group, another version, and the memory
//! cap and a full spill directory under many destinations.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, SystemTime},
};

use observer_tests::{Observer, Pair, observer::binary, peers::{Nginx, TempDir}, require_root, rss_kib, sh, sh_status};
use serde_json::Value;

const GROUP: &str = "observer-test";

struct Daemon {
    obs: Observer,
    socket: PathBuf,
    _dir: TempDir,
}

/// A daemon in `pair.client`'s namespace, on a socket of its own, for the test group.
fn start_daemon(pair: &Pair, tag: &str, extra: &[&str]) -> Daemon {
    sh(&format!("groupadd -f --system {GROUP}"));
    let dir = TempDir::new(tag);
    let socket = dir.0.join("observer.sock");
    let mut args = vec!["daemon", "--socket", socket.to_str().unwrap(), "--socket-group", GROUP];
    args.extend_from_slice(extra);
    let obs = Observer::start(&pair.client, &args);
    Daemon { obs, socket, _dir: dir }
}

/// Run a client (`prefix` may switch user) to its end: exit status, JSON lines, stderr.
fn client(prefix: &str, args: &str) -> (bool, Vec<Value>, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{prefix} timeout 30 {} {args}", binary().display()))
        .output()
        .expect("spawn the client");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a line that is not JSON ({e}): {l}")))
        .collect();
    (out.status.success(), lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339_weak(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap()
}

#[test]
fn a_client_that_attaches_after_a_fault_sees_its_cause_and_onset_and_an_export_holds_it() {
    require_root();
    let pair = Pair::new("daemon-onset");
    let server = pair.server_ip();
    let _nginx = Nginx::start(&pair.server, &format!("{server}:80"));
    let d = start_daemon(&pair, "daemon-onset", &["--prometheus", "127.0.0.1:9464"]);
    let socket = d.socket.display().to_string();
    pair.client.run(&format!("for i in 1 2 3 4 5; do curl -s -o /dev/null http://{server}/; done"));
    // The fault: connects to a port nobody listens on, beside healthy ones, until the end.
    let fault_start = SystemTime::now();
    let _fault = pair.client.spawn(&format!(
        "bash -c 'for i in $(seq 60); do curl -s -m 1 -o /dev/null http://{server}:81/; curl -s -o /dev/null http://{server}/; sleep 0.5; done'"
    ));
    std::thread::sleep(Duration::from_secs(10));
    let attached = SystemTime::now();
    let (ok, reports, err) = client("", &format!("--attach --socket {socket} --format json --duration 1.2"));
    assert!(ok, "{err}");
    assert!(err.contains(&format!("observer: attached to the daemon on {socket}")), "{err}");
    // The first report comes from the history, and already names the cause and its onset.
    let first = &reports[0];
    assert_eq!(first["cause"]["layer"], "tcp_tls", "{:#}", first["cause"]);
    let since = time(&first["cause"]["since"]);
    assert!(since < attached && since + Duration::from_secs(2) >= fault_start, "onset {since:?}, fault {fault_start:?}, attach {attached:?}");
    let dest = format!("{server}:81");
    let refused = first["tcp"]["destinations"].as_array().unwrap().iter().find(|x| x["dest"] == dest.as_str()).map(|x| x["window"]["refused"].clone());
    assert!(refused.is_some_and(|n| n.as_u64() > Some(3)), "{:#}", first["tcp"]);
    assert_eq!(reports.last().unwrap()["final"], true);
    // --prometheus: the daemon serves the metrics (and nothing else listens on the network).
    let body = pair.client.run("curl -s http://127.0.0.1:9464/metrics");
    assert!(body.contains("observer_verdict{layer=\"tcp_tls\",verdict=\"suspect\"} 1"), "{body}");
    assert!(body.contains(&format!("observer_tcp_connect_seconds_count{{dest=\"{server}:80\"}}")), "{body}");
    let listening = pair.client.run("ss -Htlnp");
    assert_eq!(listening.lines().filter(|l| l.contains("observer")).count(), 1, "{listening}");

    // After the fact: the span as a recording, which `observer report` reads.
    let out = TempDir::new("daemon-export");
    let rec = out.0.join("rec");
    let (ok, said) = sh_status(&format!("{} export --socket {socket} --last 1m {}", binary().display(), rec.display()));
    assert!(ok, "{said}");
    assert!(said.contains("recorded to") && said.contains("intervals"), "{said}");
    let read = |f: &str| std::fs::read_to_string(rec.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let timeline = read("timeline.jsonl");
    assert!(timeline.lines().any(|l| l.contains("\"layer\":\"tcp_tls\"") && l.contains("\"to\":\"suspect\"")), "{timeline}");
    assert!(read("tcp_connect.hlog").contains(&format!("Tag={server}:80,")), "the healthy connects' histograms");
    assert!(read("failures.jsonl").contains(&format!("[\"tcp_connect\",\"{dest}\"")), "{}", read("failures.jsonl"));
    assert!(read("reports.jsonl").lines().count() >= 10);
    let (ok, table) = sh_status(&format!("{} report {}", binary().display(), rec.display()));
    assert!(ok && table.contains(&format!("{server}:80")), "{table}");
    // A span the daemon never saw is said, not an empty recording.
    let (ok, said) = sh_status(&format!("{} export --socket {socket} --from 2020-01-01T00:00:00Z --to 2020-01-01T01:00:00Z {}/old", binary().display(), out.0.display()));
    assert!(!ok && said.contains("the daemon holds no interval from 2020-01-01T00:00:00Z"), "{said}");
    assert!(d.obs.terminate().success());
}

#[test]
fn two_clients_at_once_one_killed_the_other_and_the_daemon_carry_on_and_a_killed_daemon_restarts_cleanly() {
    require_root();
    let pair = Pair::new("daemon-clients");
    let server = pair.server_ip();
    let _nginx = Nginx::start(&pair.server, &format!("{server}:80"));
    let d = start_daemon(&pair, "daemon-clients", &[]);
    let socket = d.socket.display().to_string();
    let _traffic = pair.client.spawn(&format!("bash -c 'for i in $(seq 80); do curl -s -o /dev/null http://{server}/; sleep 0.25; done'"));
    let a = Observer::start(&pair.client, &["--attach", "--socket", &socket]);
    let b = Observer::start(&pair.client, &["--attach", "--socket", &socket]);
    for c in [&a, &b] {
        assert!(c.wait_for(Duration::from_secs(5), |r| r.dest(&format!("{server}:80")).is_some()).is_some(), "{}", c.stderr());
    }
    // One client dies without a word; the other and the daemon go on.
    drop(b);
    let next = a.wait_for_next(Duration::from_secs(3), |_| true);
    assert!(next.is_some(), "{}", a.stderr());
    let (ok, reports, err) = client("", &format!("--socket {socket} --format json --duration 1"));
    assert!(ok && !reports.is_empty(), "a third client attaches: {err}");
    let last = a.stop();
    assert!(last.0["tcp"]["destinations"].to_string().contains(&format!("{server}:80")));
    let mut obs = d.obs;
    assert!(obs.is_running());
    assert!(obs.stderr().contains("detached"), "{}", obs.stderr());

    // SIGKILL: the programs go with the process; the socket file stays, and says nothing.
    drop(obs);
    assert!(d.socket.exists());
    let mut left = String::new();
    for _ in 0..20 {
        left = sh("bpftool prog show | grep -c ' name observer_' || true");
        if left.trim() == "0" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(left.trim(), "0", "nothing stays attached after SIGKILL");
    let (ok, _, err) = client("", &format!("--attach --socket {socket} --format json --duration 1"));
    assert!(!ok && err.contains(&format!("--attach: no observer daemon answers on {socket}")), "{err}");
    // A new daemon replaces the stale socket, and clients attach again.
    let obs = Observer::start(&pair.client, &["daemon", "--socket", &socket, "--socket-group", GROUP]);
    let (ok, reports, err) = client("", &format!("--attach --socket {socket} --format json --duration 1.5"));
    assert!(ok && !reports.is_empty(), "{err}");
    assert!(obs.terminate().success());
}

#[test]
fn only_root_and_the_group_may_attach_without_root_and_another_version_is_told_so() {
    require_root();
    let pair = Pair::new("daemon-access");
    let d = start_daemon(&pair, "daemon-access", &[]);
    let socket = d.socket.display().to_string();
    assert_eq!(sh(&format!("stat -c '%a %U %G' {socket}")).trim(), format!("660 root {GROUP}"));
    // Outside the group: refused by the kernel, and told why and what to do.
    for args in [format!("--socket {socket} --format json --duration 1"), format!("export --socket {socket} --last 1m /tmp/observer-never")] {
        let (ok, _, err) = client("setpriv --reuid=nobody --regid=nogroup --clear-groups", &args);
        assert!(!ok, "{err}");
        assert!(err.contains(&format!("permission denied on {socket}: the daemon's socket belongs to root and the group {GROUP}")), "{err}");
        assert!(err.contains(&format!("usermod -aG {GROUP}")), "{err}");
    }
    // In the group: attached, without root and without any capability.
    let gid = sh(&format!("getent group {GROUP} | cut -d: -f3")).trim().to_owned();
    let (ok, reports, err) = client(&format!("setpriv --reuid=nobody --regid=nogroup --groups={gid} --inh-caps=-all"), &format!("--socket {socket} --format json --duration 1.5"));
    assert!(ok && !reports.is_empty(), "{err}");
    assert!(err.contains("attached to the daemon"), "{err}");

    // A client of another protocol version, and something that is not observer at all.
    let talk = |line: &str| {
        sh(&format!(
            "python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode()+b\"\\n\"); print(s.makefile().readline())' {socket} '{line}'"
        ))
    };
    let old = talk(r#"{"observer":"0.0.1","protocol":0,"op":"watch"}"#);
    assert!(old.contains("refused") && old.contains("your client is observer 0.0.1 (protocol 0): use the client that came with the daemon"), "{old}");
    let junk = talk("GET / HTTP/1.0");
    assert!(junk.contains("refused") && junk.contains("cannot read your request"), "{junk}");
    // A daemon of a newer protocol (a stand-in that says hello as one would).
    let newer = d._dir.0.join("newer.sock");
    let fake = std::process::Command::new("python3")
        .args(["-c", "import socket,sys\ns=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)\nc,_=s.accept(); c.makefile().readline()\nc.sendall(b'{\"hello\":{\"observer\":\"9.0.0\",\"protocol\":2,\"something_new\":[]}}\\n'); c.recv(1)", newer.to_str().unwrap()])
        .spawn()
        .expect("python3");
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _fake = Reap(fake);
    for _ in 0..50 {
        if newer.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, _, err) = client("", &format!("--attach --socket {} --format json --duration 1", newer.display()));
    assert!(!ok, "{err}");
    assert!(err.contains(&format!("the daemon is observer 9.0.0 (protocol 2) and this client is observer {} (protocol 1): use the client that came with the daemon", env!("CARGO_PKG_VERSION"))), "{err}");
    // Neither disturbed it.
    let (ok, _, err) = client("", &format!("--attach --socket {socket} --format json --duration 1"));
    assert!(ok, "{err}");
    assert!(d.obs.terminate().success());
}

#[test]
fn the_memory_cap_holds_with_many_destinations_and_a_full_spill_directory_drops_its_oldest() {
    require_root();
    let pair = Pair::new("daemon-cap");
    let server = pair.server_ip();
    // The spill directory on a 1.5 MiB filesystem: it fills before its 2 MiB cap, and holds
    // more than the 1 MiB of memory.
    let spill = TempDir::new("daemon-spill");
    sh(&format!("mount -t tmpfs -o size=1536k observer-test {}", spill.0.display()));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = sh_status(&format!("umount {}", self.0.display()));
        }
    }
    let _unmount = Unmount(spill.0.clone());
    let d = start_daemon(&pair, "daemon-cap", &["--memory-mb", "1", "--spill", spill.0.to_str().unwrap(), "--spill-max-mb", "2"]);
    let socket = d.socket.display().to_string();
    // 3,000 destinations: refused connects round-robin over 3,000 ports, 200 a second, 30 s.
    pair.client.run(&format!(
        "python3 -c 'import socket,time\nend=time.time()+30\np=0\nwhile time.time()<end:\n  for _ in range(20):\n    s=socket.socket()\n    try: s.connect((\"{server}\",2000+p))\n    except OSError: pass\n    s.close(); p=(p+1)%3000\n  time.sleep(0.1)'"
    ));
    let (ok, reports, err) = client("", &format!("--socket {socket} --format json --duration 1"));
    assert!(ok && !reports.is_empty(), "{err}");
    // "… history from T: N intervals in K KiB of its 1 MiB cap, M dropped for the cap"
    let held: Vec<u64> = err
        .split("intervals in ")
        .nth(1)
        .map(|t| t.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).take(3).map(|n| n.parse().unwrap()).collect())
        .unwrap_or_default();
    assert_eq!(held.len(), 3, "{err}");
    let (kib, cap_mib, dropped) = (held[0], held[1], held[2]);
    assert!(kib <= 1024 && cap_mib == 1, "{err}");
    assert!(dropped > 0, "30 s of 3,000 destinations must pass a 1 MiB cap: {err}");
    let daemon_err = d.obs.stderr();
    assert!(daemon_err.contains("the flight recorder reached its memory cap (1 MiB) before its 30 minutes"), "{daemon_err}");
    // The disk filled: the oldest spilled data went, with a line that says so, and spilling went on.
    assert!(daemon_err.contains("writing failed (No space left on device") && daemon_err.contains("dropped its oldest data"), "{daemon_err}");
    assert!(!daemon_err.contains("stopped:"), "spilling never stopped: {daemon_err}");
    let rss = rss_kib(d.obs.pid());
    assert!(rss < 200 * 1024, "daemon RSS {rss} KiB");
    // Exports still work: memory, then what the spill directory still has.
    let out = TempDir::new("daemon-cap-export");
    let (ok, said) = sh_status(&format!("{} export --socket {socket} --last 5m {}/rec", binary().display(), out.0.display()));
    assert!(ok, "{said}");
    let exported: u64 = said.split(" intervals; ").next().and_then(|t| t.rsplit('(').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    let in_memory = err.split("history from ").nth(1).and_then(|t| t.split(": ").nth(1)).and_then(|t| t.split(' ').next()).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    assert!(in_memory > 0 && exported > in_memory, "the spill directory reaches back further than memory: {exported} exported, {in_memory} in memory; {said}");
    eprintln!("daemon RSS {rss} KiB; {err}; {said}");
    let total_kib: u64 = sh(&format!("du -sk {}", spill.0.display())).split_whitespace().next().unwrap().parse().unwrap();
    assert!(total_kib <= 1536, "{total_kib}");
    assert!(d.obs.terminate().success());
}

/// A tmux session killed on drop.
struct Tmux(String);

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = sh_status(&format!("tmux kill-session -t {}", self.0));
    }
}

fn wait_screen(session: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String, String> {
    let end = std::time::Instant::now() + timeout;
    loop {
        let s = sh(&format!("tmux capture-pane -p -t {session}"));
        if pred(&s) {
            return Ok(s);
        }
        if std::time::Instant::now() > end {
            return Err(s);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_tui_attached_after_a_fault_starts_with_its_onset_and_the_change_in_the_timeline() {
    require_root();
    let pair = Pair::new("daemon-tui");
    let dest = format!("{}:81", pair.server_ip());
    let d = start_daemon(&pair, "daemon-tui", &[]);
    for _ in 0..3 {
        let _ = pair.client.try_run(&format!("curl -s --max-time 2 http://{dest}/"));
    }
    // The change is the daemon's before any client exists.
    std::thread::sleep(Duration::from_secs(4));
    let attached = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let session = format!("observer-daemon-test-{}", std::process::id());
    // As nobody in the group: the TUI needs no privilege either.
    let gid = sh(&format!("getent group {GROUP} | cut -d: -f3")).trim().to_owned();
    sh(&format!(
        "tmux -u new-session -d -s {session} -x 120 -y 30 'setpriv --reuid=nobody --regid=nogroup --groups={gid} {} --socket {} ; sleep 30'",
        binary().display(),
        d.socket.display()
    ));
    let _guard = Tmux(session.clone());
    let s = wait_screen(&session, Duration::from_secs(10), |s| s.contains("CAUSE: TCP/TLS since")).unwrap_or_else(|s| panic!("no cause on screen:\n{s}"));
    // HH:MM:SS of the onset, before the attach (both UTC).
    let since = s.split("CAUSE: TCP/TLS since ").nth(1).and_then(|t| t.get(..8)).unwrap_or_default().to_owned();
    assert!(since.len() == 8 && since.as_str() < &attached[11..19], "onset {since}, attached {attached}:\n{s}");
    assert!(s.contains(&format!("{since} tcp_tls  no-signal → suspect")), "the change from before the attach is in the timeline:\n{s}");
    assert!(s.contains("attached to the daemon: history included"), "{s}");
    assert!(s.contains(&dest), "{s}");
    sh(&format!("tmux send-keys -t {session} q"));
    let s = wait_screen(&session, Duration::from_secs(5), |s| s.contains("likely cause: TCP/TLS")).unwrap_or_else(|s| panic!("no final summary after q:\n{s}"));
    assert!(s.contains(&format!("since {}", &attached[..11])), "{s}");
    assert!(d.obs.terminate().success());
}
