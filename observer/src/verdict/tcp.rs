//! Layer 2 rules (TCP half): refused and timed-out connects, SYN retries, connect success
//! below the ratio, and resets on established connections.

use observer_common::tcp::dest_counter as dc;

use super::{Evaluation, Hit, Hits, Layer, Rules, line, secs};
use crate::{
    config::Config,
    layers::connect::{ConnectView, Counts, DestView},
};

fn process(d: &DestView) -> String {
    match d.processes.first() {
        Some(p) => format!("; process {p}"),
        None => String::new(),
    }
}

impl Rules for ConnectView {
    fn layer(&self) -> Layer {
        Layer::TcpTls
    }

    fn covers(&self) -> &'static str {
        "TCP connects"
    }

    fn evaluate(&self, window_s: f64, cfg: &Config) -> Evaluation {
        evaluate(self, window_s, cfg)
    }

    /// Failing connects explain later trouble with the same addresses.
    fn explains(&self, suspect: &[std::net::SocketAddr]) -> std::collections::BTreeSet<std::net::IpAddr> {
        suspect.iter().map(|d| d.ip()).collect()
    }
}

fn evaluate(view: &ConnectView, window_s: f64, cfg: &Config) -> Evaluation {
    let t = &cfg.tcp;
    let w = secs(window_s);
    let mut hits = Hits::default();
    let mut had_signal = false;
    // The top destinations with their process; the rest by their counts alone.
    let full = view.destinations.iter().map(|d| (d.dest, d.window.counts, process(d)));
    let rest = view.rest.iter().map(|(a, c)| (a, Counts { values: c.map(u64::from), names: &dc::NAMES }, String::new()));
    for (dest, c, process) in full.chain(rest) {
        let attempts = c.get(dc::ATTEMPTS);
        if c.values.iter().all(|&v| v == 0) {
            continue;
        }
        had_signal = true;
        let refused = c.get(dc::REFUSED);
        let timed_out = c.get(dc::TIMED_OUT) + c.get(dc::UNREACHABLE);
        let syn = c.get(dc::SYN_RETRANSMITS);
        let established = c.get(dc::ESTABLISHED);
        let mut said = false;
        if refused >= t.min_refused {
            said = true;
            hits.push(Hit { count: 1, margin: 1.0,
                rule: "tcp.refused",
                destination: dest,
                evidence: Some(line(&hits, || format!(
                    "TCP: {refused}/{attempts} connects to {dest} refused in the last {w} (RST answered the SYN: no listener, wrong port, or stale DNS){}",
                    process
                ))),
            }.strength(refused, refused as f64, t.min_refused as f64));
        }
        if timed_out >= t.min_timed_out {
            said = true;
            let unreachable = c.get(dc::UNREACHABLE);
            let how = if unreachable > 0 { format!(", {unreachable} host/network unreachable") } else { String::new() };
            hits.push(Hit { count: 1, margin: 1.0,
                rule: "tcp.timed_out",
                destination: dest,
                evidence: Some(line(&hits, || format!(
                    "TCP: {timed_out}/{attempts} connects to {dest} timed out in the last {w} after {syn} SYN retransmits{how} (path or filtering){}",
                    process
                ))),
            }.strength(timed_out, timed_out as f64, t.min_timed_out as f64));
        }
        if syn >= t.min_syn_retransmits {
            hits.push(Hit { count: 1, margin: 1.0,
                rule: "tcp.syn_retries",
                destination: dest,
                evidence: (!said).then(|| line(&hits, || {
                    format!(
                        "TCP: {syn} SYN retransmits to {dest} in the last {w} ({attempts} connects started, {established} established): SYNs or SYN-ACKs are lost{}",
                        process
                    )
                })),
            }.strength(syn, syn as f64, t.min_syn_retransmits as f64));
            said = true;
        }
        // An abort after a SYN retransmit is an application that gave up waiting: a failed
        // connect. One within the first RTO is a cancellation and does not count.
        let finished = established + refused + timed_out + c.get(dc::OTHER_ERROR) + c.get(dc::GAVE_UP);
        if finished >= t.min_attempts && finished > 0 && (established as f64 / finished as f64) < t.success_ratio {
            hits.push(Hit { count: 1, margin: 1.0,
                rule: "tcp.success_ratio",
                destination: dest,
                evidence: (!said).then(|| line(&hits, || {
                    format!(
                        "TCP: connect success to {dest} is {:.1} % ({established}/{finished}) in the last {w}, below {:.1} %{}",
                        established as f64 * 100.0 / finished as f64,
                        t.success_ratio * 100.0,
                        process
                    )
                })),
            }.strength(finished - established, 1.0 - established as f64 / finished as f64, 1.0 - t.success_ratio));
        }
        let resets = c.get(dc::RESETS_RECEIVED);
        if resets >= t.min_resets && resets as f64 >= t.reset_share * established.max(1) as f64 {
            hits.push(Hit { count: 1, margin: 1.0,
                rule: "tcp.resets",
                destination: dest,
                evidence: Some(line(&hits, || format!(
                    "TCP: {resets} resets received from {dest} on established connections in the last {w} ({established} connects established){}",
                    process
                ))),
            }.strength(resets, resets as f64 / established.max(1) as f64, t.reset_share));
        }
    }
    Evaluation { hits, had_signal, quiet_note: "no TCP connects or TCP events in the window", context: vec![], upstreams: vec![] }
}
