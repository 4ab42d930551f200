//! `cargo xtask bench`: what observer's packet path costs, side by side in one run. A benchmark
//! that prints figures, not a test: the targets are in README, next to the figures.
//!
//! 1. Flood throughput: one thread sends DNS queries as fast as it can from a client
//!    namespace to an echoing resolver over veth, with nothing attached (bare), with an empty
//!    TC program on the client's eth0, with `tcpdump -w` (filter `udp port 53`), and with
//!    observer. The modes alternate, round after round, and the median of each is printed.
//! 2. Per-packet cost, from the kernel's own bpf_stats: observer's TC program next to an
//!    empty program on the same hooks in the same run, on DNS at 100k messages/s and on a bulk
//!    TCP transfer (iperf3), where every packet is not DNS.
//! 3. Userspace: observer's CPU and memory at 50k responses/s, whether the kernel's counts are
//!    exact, and what the ring buffer dropped.
//! 4. HTTP and the OpenSSL probes: requests per second on one keep-alive connection (client
//!    namespace to an upstream in the server namespace), and `write(2)` calls per second on
//!    the host (every one passes the syscall tracepoint that the OpenSSL probes add), bare,
//!    with observer and `--no-ssl-uprobes`, and with observer as it runs by default.
//! 5. Loss and RTT: bulk TCP throughput (iperf3) bare and with observer (its sock_ops
//!    program runs on the ACKs of every established connection, beside the TC program), and
//!    the sock_ops program's cost per callback from bpf_stats.
//! 6. The daemon on an idle host: CPU (as a share of one core) and memory of `observer
//!    daemon` at the default 1 s interval, beside a standalone observer in the same
//!    namespace, then with a client attached.

use std::{
    fs, thread,
    time::{Duration, Instant},
};

use observer_tests::{Netns, Observer, Pair, Proc, peers, require_root, rss_kib, sh};

#[derive(Default, Clone, Copy)]
struct ProgStats {
    run_ns: u64,
    runs: u64,
}

impl ProgStats {
    fn since(self, before: ProgStats) -> f64 {
        (self.run_ns - before.run_ns) as f64 / (self.runs - before.runs).max(1) as f64
    }
}

/// observer's TC programs (the kernel keeps 15 characters of a name): not its sock_ops one.
const TC: &str = "observer_ingres|observer_egres";

/// Sum of run_time_ns and run_cnt over the programs whose name starts with `prefix` (or one
/// of the `|`-separated prefixes).
fn prog_stats(prefix: &str) -> ProgStats {
    let json: serde_json::Value = serde_json::from_str(&sh("bpftool -j prog show")).expect("bpftool JSON");
    let mut s = ProgStats::default();
    for p in json.as_array().into_iter().flatten().filter(|p| p["name"].as_str().is_some_and(|n| prefix.split('|').any(|x| n.starts_with(x)))) {
        s.run_ns += p["run_time_ns"].as_u64().unwrap_or(0);
        s.runs += p["run_cnt"].as_u64().unwrap_or(0);
    }
    s
}

/// (user, system) clock ticks of a process.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("observer's /proc stat");
    // Fields after the command name: utime is the 14th field, stime the 15th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<u64>().unwrap_or(0), f[12].parse::<u64>().unwrap_or(0))
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Bare,
    Empty,
    Tcpdump,
    Observer,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Bare => "bare",
            Mode::Empty => "empty TC program",
            Mode::Tcpdump => "tcpdump -w",
            Mode::Observer => "observer",
        }
    }
}

/// Whatever a mode keeps running while the flood goes: held only to be dropped (stopped)
/// after it.
#[allow(dead_code)]
enum Running {
    Nothing,
    Observer(Observer),
    Tcpdump(Proc, peers::TempDir),
}

fn start(mode: Mode, client: &Netns) -> Running {
    match mode {
        Mode::Bare => Running::Nothing,
        Mode::Empty => Running::Observer(Observer::start(client, &["--tc-empty-only", "--interface", "eth0"])),
        Mode::Observer => Running::Observer(Observer::start(client, &["--interface", "eth0"])),
        Mode::Tcpdump => {
            let dir = peers::TempDir::new("pcap");
            let p = client.spawn(&format!("tcpdump -q -i eth0 -w {}/dns.pcap udp port 53", dir.0.display()));
            // tcpdump has no "ready" line on stdout; give it time to open the socket.
            thread::sleep(Duration::from_millis(1500));
            Running::Tcpdump(p, dir)
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn throughput(pair: &Pair, resolver: &str, secs: u64, rounds: usize) {
    let modes = [Mode::Bare, Mode::Empty, Mode::Tcpdump, Mode::Observer];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        for (i, mode) in modes.iter().enumerate() {
            let running = start(*mode, &pair.client);
            let out = pair.client.run(&format!("{} dns-blast {resolver} {secs}", peers::peer_bin().display()));
            let rate: f64 = out.trim().parse().expect("queries per second");
            drop(running);
            eprintln!("bench: round {} {:<17} {rate:>9.0} queries/s", round + 1, mode.name());
            rates[i].push(rate);
        }
    }
    let bare = median(&mut rates[0].clone());
    println!("\n1. DNS flood, one sending thread, {secs} s per run, median of {rounds} alternating rounds");
    println!("{:<18} {:>12} {:>9} {:>21}", "mode", "queries/s", "of bare", "range");
    for (i, mode) in modes.iter().enumerate() {
        let m = median(&mut rates[i]);
        let (lo, hi) = (rates[i][0], rates[i][rates[i].len() - 1]);
        println!("{:<18} {:>12.0} {:>8.0} % {:>10.0} – {:>8.0}", mode.name(), m, m * 100.0 / bare, lo, hi);
    }
}

fn per_packet(pair: &Pair, resolver: &str, secs: u64) {
    let obs = Observer::start(&pair.client, &["--tc-baseline", "--interface", "eth0"]);
    println!("\n2. Per-packet cost on the client's eth0 (bpf_stats, both hooks, same run)");
    println!("{:<36} {:>14} {:>14} {:>8}", "traffic", "observer ns/pkt", "empty ns/pkt", "ratio");
    let peer = peers::peer_bin();
    let (o0, e0) = (prog_stats(TC), prog_stats("tc_empty"));
    pair.client.run(&format!("{} dns-flood {resolver} 50000 {secs}", peer.display()));
    let (o1, e1) = (prog_stats(TC), prog_stats("tc_empty"));
    let (o, e) = (o1.since(o0), e1.since(e0));
    println!("{:<36} {:>14.0} {:>14.0} {:>7.1}x", "DNS, 100k messages/s (50k q/s)", o, e, o / e);
    let _server = pair.server.spawn("iperf3 -s -1");
    peers::wait_listening(&pair.server, &format!("{}:5201", pair.server_ip()));
    let (o0, e0) = (prog_stats(TC), prog_stats("tc_empty"));
    pair.client.run(&format!("iperf3 -c {} -t {secs} >/dev/null", pair.server_ip()));
    let (o1, e1) = (prog_stats(TC), prog_stats("tc_empty"));
    let (o, e) = (o1.since(o0), e1.since(e0));
    println!("{:<36} {:>14.0} {:>14.0} {:>7.1}x", "bulk TCP (iperf3), not DNS", o, e, o / e);
    drop(obs);
}

fn userspace(pair: &Pair, resolver: &str, secs: u64) {
    let obs = Observer::start(&pair.client, &["--interface", "eth0"]);
    let pid = obs.pid();
    println!("\n3. observer's userspace at a steady DNS rate ({secs} s each)");
    println!(
        "{:>12} {:>9} {:>11} {:>11} {:>6} {:>9} {:>9} {:>7} {:>7} {:>8}",
        "responses/s", "sent/s", "sent", "counted", "exact", "parsed", "rb drops", "user %", "sys %", "rss MiB"
    );
    let mut counted_before = 0;
    let mut drops_before = 0;
    let mut parsed_before = 0;
    for rate in [10_000u64, 50_000] {
        let cpu0 = cpu_ticks(pid);
        let t0 = Instant::now();
        let out = pair.client.run(&format!("{} dns-flood {resolver} {rate} {secs}", peers::peer_bin().display()));
        let mut it = out.split_whitespace();
        let sent: u64 = it.next().and_then(|s| s.parse().ok()).expect("sent count");
        let took: f64 = it.nth(1).and_then(|s| s.parse().ok()).unwrap_or(secs as f64);
        // One more reading after the last packet.
        thread::sleep(Duration::from_millis(1500));
        let cpu1 = cpu_ticks(pid);
        let pct = |ticks: u64| ticks as f64 / 100.0 / t0.elapsed().as_secs_f64() * 100.0;
        let (user, system) = (pct(cpu1.0 - cpu0.0), pct(cpu1.1 - cpu0.1));
        let report = obs.reports().pop().expect("a report");
        let counted = report.resolver_total(resolver, "responses");
        let drops = report.0["lost"]["dns_ringbuf_full"].as_u64().unwrap_or(0);
        // Responses matched to their queries in userspace: every one was copied and parsed.
        let parsed = report.resolver(resolver).and_then(|r| r["total"]["latency_us"]["count"].as_u64()).unwrap_or(0);
        println!(
            "{:>12} {:>9.0} {:>11} {:>11} {:>6} {:>9} {:>9} {:>7.1} {:>7.1} {:>8.1}",
            rate,
            sent as f64 / took,
            sent,
            counted - counted_before,
            if counted - counted_before == sent { "yes" } else { "NO" },
            parsed - parsed_before,
            drops - drops_before,
            user,
            system,
            rss_kib(pid) as f64 / 1024.0
        );
        counted_before = counted;
        drops_before = drops;
        parsed_before = parsed;
    }
    drop(obs);
}

fn http_and_ssl(pair: &Pair, secs: u64, rounds: usize) {
    let peer = peers::peer_bin();
    let upstream = format!("{}:8080", pair.server_ip());
    let _server = pair.server.spawn(&format!("{} http-slow {upstream} 0", peer.display()));
    peers::wait_listening(&pair.server, &upstream);
    let modes: [(&str, Option<&[&str]>); 3] =
        [("bare", None), ("observer --no-ssl-uprobes", Some(&["--interface", "eth0", "--no-ssl-uprobes"])), ("observer", Some(&["--interface", "eth0"]))];
    let mut http = vec![Vec::new(); modes.len()];
    let mut writes = vec![Vec::new(); modes.len()];
    let mut parsed = vec![0u64; modes.len()];
    for round in 0..rounds {
        for (i, (name, args)) in modes.iter().enumerate() {
            let obs = args.map(|a| Observer::start(&pair.client, a));
            let r: f64 = pair.client.run(&format!("{} http-load {upstream} {secs}", peer.display())).trim().parse().expect("requests/s");
            let w: f64 = pair.client.run(&format!("{} write-loop {secs}", peer.display())).trim().parse().expect("writes/s");
            if let Some(o) = obs {
                thread::sleep(Duration::from_millis(1200));
                let report = o.reports().pop().expect("a report");
                let t = report.0["http"]["targets"].as_array().and_then(|ts| ts.iter().find(|t| t["host"] == "load.test")).cloned();
                parsed[i] = t.and_then(|t| t["total"]["responses"].as_u64()).unwrap_or(0);
            }
            eprintln!("bench: round {} {name:<26} {r:>8.0} requests/s {w:>10.0} writes/s", round + 1);
            http[i].push(r);
            writes[i].push(w);
        }
    }
    println!("\n4. HTTP on one keep-alive connection, and write(2) on the host ({secs} s each, median of {rounds} rounds)");
    println!("{:<27} {:>11} {:>8} {:>14} {:>10} {:>8}", "mode", "requests/s", "of bare", "matched (last)", "writes/s", "of bare");
    let (hb, wb) = (median(&mut http[0].clone()), median(&mut writes[0].clone()));
    for (i, (name, _)) in modes.iter().enumerate() {
        let (h, w) = (median(&mut http[i]), median(&mut writes[i]));
        let matched = if i == 0 { "-".to_owned() } else { parsed[i].to_string() };
        println!("{name:<27} {h:>11.0} {:>6.0} % {matched:>14} {w:>10.0} {:>6.0} %", h * 100.0 / hb, w * 100.0 / wb);
    }
}

/// Bulk TCP in Gbit/s, one iperf3 run of `secs` from the client to the server.
fn iperf_gbits(pair: &Pair, secs: u64) -> f64 {
    let out = pair.client.run(&format!("iperf3 -c {} -t {secs} -J", pair.server_ip()));
    let json: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
    json["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9
}

fn loss_and_rtt(pair: &Pair, secs: u64, rounds: usize) {
    let _server = pair.server.spawn("iperf3 -s");
    peers::wait_listening(&pair.server, &format!("{}:5201", pair.server_ip()));
    let mut bare = Vec::new();
    let mut with = Vec::new();
    let mut per_callback = Vec::new();
    let mut callbacks_per_s = Vec::new();
    for round in 0..rounds {
        let b = iperf_gbits(pair, secs);
        let obs = Observer::start(&pair.client, &[]);
        let before = prog_stats("observer_sockop");
        let o = iperf_gbits(pair, secs);
        let after = prog_stats("observer_sockop");
        obs.stop();
        per_callback.push(after.since(before));
        callbacks_per_s.push((after.runs - before.runs) as f64 / secs as f64);
        eprintln!("bench: round {} bare {b:.2} Gbit/s, observer {o:.2} Gbit/s", round + 1);
        bare.push(b);
        with.push(o);
    }
    let (b, o) = (median(&mut bare), median(&mut with));
    println!("\n5. Bulk TCP with the loss and RTT sampling (iperf3, {secs} s each, median of {rounds} rounds)");
    println!("{:<36} {:>10} {:>10}", "mode", "Gbit/s", "of bare");
    println!("{:<36} {b:>10.2} {:>8.0} %", "bare", 100.0);
    println!("{:<36} {o:>10.2} {:>8.0} %", "observer (sock_ops + TC)", o * 100.0 / b);
    println!(
        "sock_ops program: {:.0} ns per callback, {:.0} callbacks/s (about one per ACK)",
        median(&mut per_callback),
        median(&mut callbacks_per_s)
    );
}

/// observer with exactly these arguments in `ns`, once it has attached: its process, and its
/// stderr kept on a thread.
fn spawn_observer(ns: &Netns, args: &[&str]) -> std::process::Child {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(observer_tests::observer::binary())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn observer");
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().expect("stderr");
    thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("observer: attached") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("observer attached");
    child
}

fn daemon_idle(pair: &Pair, secs: u64) {
    let secs = (secs * 6).max(30);
    println!("\n6. The daemon on an idle host ({secs} s each, 1 s interval; CPU as a share of one core)");
    println!("{:<44} {:>7} {:>7} {:>8}", "", "user %", "sys %", "rss MiB");
    let measure = |label: &str, pid: u32| {
        // Past the start and the first intervals.
        thread::sleep(Duration::from_secs(3));
        let (cpu0, t0) = (cpu_ticks(pid), Instant::now());
        thread::sleep(Duration::from_secs(secs));
        let cpu1 = cpu_ticks(pid);
        let pct = |ticks: u64| ticks as f64 / 100.0 / t0.elapsed().as_secs_f64() * 100.0;
        println!("{label:<44} {:>7.2} {:>7.2} {:>8.1}", pct(cpu1.0 - cpu0.0), pct(cpu1.1 - cpu0.1), rss_kib(pid) as f64 / 1024.0);
    };
    let mut standalone = spawn_observer(&pair.client, &["--format", "json", "--interval", "1"]);
    measure("observer (standalone, JSON to /dev/null)", standalone.id());
    let _ = standalone.kill();
    let _ = standalone.wait();
    let dir = peers::TempDir::new("bench-daemon");
    let socket = dir.0.join("observer.sock");
    let socket = socket.to_str().expect("a UTF-8 path");
    let mut daemon = spawn_observer(&pair.client, &["--interval", "1", "daemon", "--socket", socket]);
    measure("observer daemon, nobody attached", daemon.id());
    let mut client = std::process::Command::new(observer_tests::observer::binary())
        .args(["--attach", "--socket", socket, "--format", "json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn a client");
    measure("observer daemon, one client attached", daemon.id());
    let client_pid = client.id();
    let (c0, t0) = (cpu_ticks(client_pid), Instant::now());
    thread::sleep(Duration::from_secs(secs.min(10)));
    let c1 = cpu_ticks(client_pid);
    let pct = |ticks: u64| ticks as f64 / 100.0 / t0.elapsed().as_secs_f64() * 100.0;
    println!("{:<44} {:>7.2} {:>7.2} {:>8.1}", "  the attached client itself", pct(c1.0 - c0.0), pct(c1.1 - c0.1), rss_kib(client_pid) as f64 / 1024.0);
    let _ = client.kill();
    let _ = client.wait();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}

fn main() {
    require_root();
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let secs = args.first().copied().unwrap_or(5);
    let rounds = args.get(1).copied().unwrap_or(3) as usize;
    // Which sections to run (1 to 6), all by default: `bench 5 3 2` runs the second only.
    let only: Vec<u64> = args.get(2..).map(<[u64]>::to_vec).unwrap_or_default();
    let run = |n: u64| only.is_empty() || only.contains(&n);
    let pair = Pair::new("bench");
    let resolver = format!("{}:53", pair.server_ip());
    let _echo = pair.server.spawn(&format!("{} dns-echo {resolver}", peers::peer_bin().display()));
    peers::wait_udp(&pair.server, 53);
    println!("observer benchmark: {} CPUs, kernel {}", sh("nproc").trim(), sh("uname -r").trim());
    if run(1) {
        throughput(&pair, &resolver, secs, rounds);
    }
    if run(2) {
        let _stats = BpfStats::on();
        per_packet(&pair, &resolver, secs);
    }
    if run(3) {
        userspace(&pair, &resolver, secs);
    }
    if run(4) {
        http_and_ssl(&pair, secs, rounds);
    }
    if run(5) {
        let _stats = BpfStats::on();
        loss_and_rtt(&pair, secs, rounds);
    }
    if run(6) {
        daemon_idle(&pair, secs);
    }
}

/// The kernel's per-program run statistics, on only while a section reads them: each run of
/// every BPF program then reads the clock twice (a paravirtual clock read in a guest), which
/// a host that runs observer does not pay, and which would weigh on the throughput sections.
struct BpfStats {
    previous: String,
}

impl BpfStats {
    fn on() -> BpfStats {
        let previous = fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_else(|_| "0".into());
        sh("sysctl -qw kernel.bpf_stats_enabled=1");
        BpfStats { previous: previous.trim().to_owned() }
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        sh(&format!("sysctl -qw kernel.bpf_stats_enabled={}", self.previous));
    }
}
