//! `cargo xtask soak [MINUTES]`: a soak benchmark, not a test. Busy-host traffic for MINUTES
//! (10 by default) with a fault injected for 20 s and removed every 2 minutes, in turn: a
//! refused port, 3 % loss on the bulk transfer, a silent resolver. It prints false suspect
//! intervals, missed or late detections, each fault's time to detect, observer's RSS at the
//! start and the end, and the events it lost.

use std::{
    thread,
    time::{Duration, Instant},
};

use observer_tests::{Observer, Report, busy::BusyHost, require_root, rss_kib, sh_status};

const FAULT_EVERY: Duration = Duration::from_secs(120);
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
}

impl Fault {
    fn layer(self) -> &'static str {
        match self {
            Fault::Refused => "tcp_tls",
            Fault::Loss => "routing",
            Fault::Silent => "dns",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::Refused => "refused port",
            Fault::Loss => "3 % loss",
            Fault::Silent => "silent resolver",
        }
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
    let obs = Observer::start(&host.pair.client, &[]);
    let started = Instant::now();
    let uptime_at_start = obs.reports().last().map(at).unwrap_or(0.0);
    let (_generator, _procs) = host.traffic(total.as_secs() + 5);
    thread::sleep(Duration::from_secs(10));
    let rss_start = rss_kib(obs.pid());
    let s = host.server();
    // (fault, injected at observer's uptime, removed at)
    let mut faults: Vec<(Fault, f64, f64)> = Vec::new();
    let order = [Fault::Refused, Fault::Loss, Fault::Silent];
    let mut next = FAULT_EVERY / 2;
    let mut k = 0;
    while started.elapsed() + FAULT_FOR + CLEARS_WITHIN < total {
        if let Some(wait) = next.checked_sub(started.elapsed()) {
            thread::sleep(wait);
        }
        let fault = order[k % order.len()];
        k += 1;
        let from = uptime_at_start + started.elapsed().as_secs_f64();
        eprintln!("soak: {:>4.0} s: {}", from, fault.name());
        let end = Instant::now() + FAULT_FOR;
        match fault {
            Fault::Refused => {
                while Instant::now() < end {
                    let _ = host.pair.client.try_run(&format!("curl -s --max-time 1 http://{s}:81/"));
                    thread::sleep(Duration::from_millis(500));
                }
            }
            Fault::Loss | Fault::Silent => {
                let rule = match fault {
                    Fault::Loss => "tcp dport 5201 tcp flags != syn numgen random mod 100 lt 3 drop",
                    _ => "udp dport 53 drop",
                };
                host.pair.server.run(&format!(
                    "nft add table inet fault && nft add chain inet fault in '{{ type filter hook input priority -1; }}' && nft add rule inet fault in {rule}"
                ));
                thread::sleep(FAULT_FOR);
                let _ = sh_status(&format!("ip netns exec {} nft delete table inet fault", host.pair.server.name));
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
