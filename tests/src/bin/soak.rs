//! `cargo xtask soak [MINUTES]`: a soak benchmark, not a test. Busy-host traffic for MINUTES
//! (10 by default) with a fault injected for 20 s and removed every minute, in turn: a
//! refused port, 3 % loss on the bulk transfer, a silent resolver, a slow resolver (400 ms),
//! TLS handshakes rejected (unknown SNI), gateway 503s. It prints false suspect
//! intervals, missed or late detections, each fault's time to detect, observer's RSS at the
//! start and the end, and the events it lost.

use std::{
    thread,
    time::{Duration, Instant},
};

use observer_tests::{
    Observer, Report,
    busy::BusyHost,
    peers::{self, Nginx},
    require_root, rss_kib, sh_status,
    tls::{Certs, NginxTls},
};

const FAULT_EVERY: Duration = Duration::from_secs(60);
const FAULT_FOR: Duration = Duration::from_secs(20);
/// After a fault is removed, its layer may stay suspect while its evidence is in the window
/// (10 s) and for the hold (5 s); a silent resolver's last queries become unanswered only
/// after the DNS timeout (5 s): 22 s with a report's margin.
const CLEARS_WITHIN: Duration = Duration::from_secs(22);
/// Named within 2 s, plus one report.
const DETECT_WITHIN: Duration = Duration::from_millis(2_500);

#[derive(Clone, Copy)]
enum Fault {
    Refused,
    Loss,
    Silent,
    Slow,
    TlsRejected,
    Gateway503,
}

impl Fault {
    fn layer(self) -> &'static str {
        match self {
            Fault::Refused | Fault::TlsRejected => "tcp_tls",
            Fault::Loss => "routing",
            Fault::Silent | Fault::Slow => "dns",
            Fault::Gateway503 => "l7",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::Refused => "refused port",
            Fault::Loss => "3 % loss",
            Fault::Silent => "silent resolver",
            Fault::Slow => "slow resolver",
            Fault::TlsRejected => "TLS rejected",
            Fault::Gateway503 => "gateway 503s",
        }
    }
}

/// An nft table on the server for the fault's time.
fn server_rules(host: &BusyHost, table: &str, hook: &str, rule: &str) {
    host.pair.server.run(&format!(
        "nft add table {table} && nft add chain {table} f '{{ {hook}; }}' && nft add rule {table} f {rule}"
    ));
    thread::sleep(FAULT_FOR);
    let _ = sh_status(&format!("ip netns exec {} nft delete table {table}", host.pair.server.name));
}

/// `cmd` from the client every 500 ms for the fault's time.
fn client_every_500ms(host: &BusyHost, cmd: &str) {
    let end = Instant::now() + FAULT_FOR;
    while Instant::now() < end {
        let _ = host.pair.client.try_run(cmd);
        thread::sleep(Duration::from_millis(500));
    }
}

fn suspect(r: &Report) -> Vec<String> {
    ["dns", "tcp_tls", "routing", "l7"].iter().filter(|l| r.0["verdicts"][**l]["verdict"] == "suspect").map(|l| (*l).to_owned()).collect()
}

/// Seconds since observer started, from the report.
fn at(r: &Report) -> f64 {
    r.0["uptime_s"].as_f64().unwrap_or(0.0)
}

fn main() {
    require_root();
    let minutes: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let total = Duration::from_secs(minutes * 60);
    let host = BusyHost::new("soak");
    let s = host.server();
    // The faults' servers, started before observer: a forwarder that holds each query
    // 400 ms, a TLS server that rejects unknown names, a gateway with no upstream.
    let _delay = host.pair.server.spawn(&format!("{} dns-delay {s}:5353 {s}:53 400", peers::peer_bin().display()));
    peers::wait_udp(&host.pair.server, 5353);
    let certs = Certs::new();
    let _tls = NginxTls::start(&host.pair.server, &s, &certs);
    let _gateway = Nginx::start_with(&host.pair.server, &format!("{s}:8081"), &format!("server {{ listen {s}:8082; location / {{ return 503; }} }}"));
    let obs = Observer::start(&host.pair.client, &[]);
    // Observer's uptime against this clock: taken as a report arrives (polled every 10 ms),
    // so that the time to detect counts from the fault, not from observer's attach.
    let seen = obs.reports().len();
    while obs.reports().len() == seen {
        thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let uptime_at_start = obs.reports().last().map(at).unwrap_or(0.0);
    let (_generator, _procs) = host.traffic(total.as_secs() + 5);
    thread::sleep(Duration::from_secs(10));
    let rss_start = rss_kib(obs.pid());
    // (fault, injected at observer's uptime, removed at)
    let mut faults: Vec<(Fault, f64, f64)> = Vec::new();
    let order = [Fault::Refused, Fault::Loss, Fault::Silent, Fault::Slow, Fault::TlsRejected, Fault::Gateway503];
    let mut next = FAULT_EVERY / 2;
    let mut k = 0;
    while next + FAULT_FOR + CLEARS_WITHIN < total {
        if let Some(wait) = next.checked_sub(started.elapsed()) {
            thread::sleep(wait);
        }
        let fault = order[k % order.len()];
        k += 1;
        let from = uptime_at_start + started.elapsed().as_secs_f64();
        eprintln!("soak: {:>4.0} s: {}", from, fault.name());
        match fault {
            Fault::Refused => client_every_500ms(&host, &format!("curl -s --max-time 1 http://{s}:81/")),
            Fault::Loss => server_rules(
                &host,
                "inet fault",
                "type filter hook input priority -1",
                "tcp dport 5201 tcp flags != syn numgen random mod 100 lt 3 drop",
            ),
            Fault::Silent => server_rules(&host, "inet fault", "type filter hook input priority -1", "udp dport 53 drop"),
            Fault::Slow => server_rules(&host, "ip fault", "type nat hook prerouting priority -100", "udp dport 53 redirect to :5353"),
            Fault::TlsRejected => client_every_500ms(
                &host,
                &format!("curl -s -k -o /dev/null --max-time 1 --resolve other.test:443:{s} https://other.test/"),
            ),
            Fault::Gateway503 => {
                client_every_500ms(&host, &format!("curl -s -o /dev/null --max-time 1 -H 'Host: api.internal' http://{s}:8082/orders"))
            }
        }
        faults.push((fault, from, uptime_at_start + started.elapsed().as_secs_f64()));
        next += FAULT_EVERY;
    }
    if let Some(rest) = total.checked_sub(started.elapsed()) {
        thread::sleep(rest);
    }
    let rss_end = rss_kib(obs.pid());
    let reports = obs.reports();
    let last = obs.stop();

    // A suspect layer is expected from a fault's start until it has had time to clear.
    let expected = |t: f64, layer: &str| faults.iter().any(|(f, from, to)| f.layer() == layer && t >= *from && t <= to + CLEARS_WITHIN.as_secs_f64());
    let mut false_intervals = 0;
    for r in &reports {
        let wrong: Vec<String> = suspect(r).into_iter().filter(|l| !expected(at(r), l)).collect();
        if !wrong.is_empty() {
            false_intervals += 1;
            eprintln!("soak: false suspect at {:.1} s: {wrong:?}: {}", at(r), r.0["verdicts"]);
        }
    }
    let mut missed = 0;
    let mut late = 0;
    let mut detect = Vec::new();
    for (f, from, to) in &faults {
        let first = reports.iter().find(|r| at(r) >= *from && at(r) <= *to && suspect(r).iter().any(|l| l == f.layer()));
        match first {
            None => missed += 1,
            Some(r) => {
                let took = at(r) - from;
                if took > DETECT_WITHIN.as_secs_f64() {
                    late += 1;
                }
                detect.push(format!("{} {:.1} s", f.name(), took));
            }
        }
    }
    println!("soak: {minutes} min of busy-host traffic, {} faults, {} reports", faults.len(), reports.len());
    println!("false suspect intervals     {false_intervals} (goal 0)");
    println!("missed detections           {missed} (goal 0)");
    println!("late detections (> 2.5 s)   {late} (goal 0)");
    println!("time to detect              {}", detect.join(", "));
    println!("observer RSS                {:.1} MiB at the start, {:.1} MiB at the end", rss_start as f64 / 1024.0, rss_end as f64 / 1024.0);
    println!("events lost                 {}", last.lost_total());
}
