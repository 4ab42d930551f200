//! DNS load benchmark (not a test): `cargo xtask bench-dns`.
//!
//! Drives well-formed queries from a client namespace to an echoing resolver in a server
//! namespace at rising rates, with observer watching the client side, and prints for each rate:
//! whether the kernel's per-resolver query count equals what was sent, ring-buffer drops,
//! observer's userspace CPU % and RSS, and the per-packet cost of the DNS TC program next to an
//! empty TC program on the same hook in the same run (kernel.bpf_stats_enabled).

use std::{fs, thread, time::{Duration, Instant}};

use observer_tests::{Observer, Pair, peers, require_root, sh};

#[derive(Default, Clone, Copy)]
struct ProgStats {
    run_ns: u64,
    runs: u64,
}

/// Sum of run_time_ns and run_cnt per program name, from bpftool.
fn prog_stats(name: &str) -> ProgStats {
    let json: serde_json::Value = serde_json::from_str(&sh("bpftool -j prog show")).expect("bpftool JSON");
    let mut s = ProgStats::default();
    for p in json.as_array().into_iter().flatten().filter(|p| p["name"] == name) {
        s.run_ns += p["run_time_ns"].as_u64().unwrap_or(0);
        s.runs += p["run_cnt"].as_u64().unwrap_or(0);
    }
    s
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("observer's /proc stat");
    // Fields after the command name: utime is the 14th field, stime the 15th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

fn main() {
    require_root();
    let rates: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rates = if rates.is_empty() { vec![10_000, 50_000, 100_000] } else { rates };
    let secs = 5;
    let previous_stats = fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_else(|_| "0".into());
    sh("sysctl -qw kernel.bpf_stats_enabled=1");

    let pair = Pair::new("bench");
    let resolver = format!("{}:53", pair.server_ip());
    let _echo = pair.server.spawn(&format!("{} dns-echo {resolver}", peers::peer_bin().display()));
    peers::wait_udp(&pair.server, 53);
    let obs = Observer::start(&pair.client, &["--tc-baseline", "--interface", "eth0"]);
    let pid = obs.pid();
    let ticks_per_s = 100.0; // USER_HZ on Linux

    println!("observer DNS benchmark: {secs} s per rate, queries {} -> {resolver}", pair.client_ip());
    println!(
        "{:>9} {:>9} {:>11} {:>11} {:>6} {:>9} {:>7} {:>8} {:>10} {:>10}",
        "target/s", "sent/s", "sent", "counted", "exact", "rb drops", "cpu %", "rss MiB", "dns ns/pkt", "empty ns/pkt"
    );
    let mut counted_before = 0;
    let mut drops_before = 0;
    for rate in rates {
        let dns0 = (prog_stats("dns_egress"), prog_stats("dns_ingress"));
        let empty0 = prog_stats("tc_empty");
        let cpu0 = cpu_ticks(pid);
        let t0 = Instant::now();
        let out = pair.client.run(&format!("{} dns-flood {resolver} {rate} {secs}", peers::peer_bin().display()));
        let mut it = out.split_whitespace();
        let sent: u64 = it.next().and_then(|s| s.parse().ok()).expect("sent count");
        let took: f64 = it.nth(1).and_then(|s| s.parse().ok()).unwrap_or(secs as f64);
        // Let observer read the counters once more after the last packet.
        thread::sleep(Duration::from_millis(2_500));
        let wall = t0.elapsed().as_secs_f64();
        let cpu = (cpu_ticks(pid) - cpu0) as f64 / ticks_per_s / wall * 100.0;
        let dns1 = (prog_stats("dns_egress"), prog_stats("dns_ingress"));
        let empty1 = prog_stats("tc_empty");
        let report = obs.reports().pop().expect("a report");
        let counted = report.resolver_total(&resolver, "queries");
        let drops = report.0["lost"]["dns_ringbuf_full"].as_u64().unwrap_or(0);
        let dns_ns = (dns1.0.run_ns + dns1.1.run_ns - dns0.0.run_ns - dns0.1.run_ns) as f64
            / ((dns1.0.runs + dns1.1.runs - dns0.0.runs - dns0.1.runs).max(1)) as f64;
        let empty_ns = (empty1.run_ns - empty0.run_ns) as f64 / ((empty1.runs - empty0.runs).max(1)) as f64;
        println!(
            "{:>9} {:>9.0} {:>11} {:>11} {:>6} {:>9} {:>7.1} {:>8.1} {:>10.1} {:>10.1}",
            rate,
            sent as f64 / took,
            sent,
            counted - counted_before,
            if counted - counted_before == sent { "yes" } else { "NO" },
            drops - drops_before,
            cpu,
            rss_kib(pid) as f64 / 1024.0,
            dns_ns,
            empty_ns
        );
        counted_before = counted;
        drops_before = drops;
    }
    let _ = obs.stop();
    sh(&format!("sysctl -qw kernel.bpf_stats_enabled={}", previous_stats.trim()));
}
