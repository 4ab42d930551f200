//! Layer 3 rules (ICMP half): unreachables and time exceeded for a destination. Port
//! unreachable (nothing listens) and fragmentation needed are said as context, not judged.

use super::{Evaluation, Hit, Layer, Rules, secs};
use crate::{
    config::Config,
    layers::icmp::{DestView, IcmpView, icmp_counter as ic},
};

fn reporters(d: &DestView) -> String {
    let v: Vec<String> = d.reporters.iter().map(ToString::to_string).collect();
    if v.is_empty() { String::new() } else { format!(", sent by {}", v.join(", ")) }
}

impl Rules for IcmpView {
    fn layer(&self) -> Layer {
        Layer::Routing
    }

    fn covers(&self) -> &'static str {
        "ICMP errors and path changes"
    }

    fn evaluate(&self, window_s: f64, cfg: &Config) -> Evaluation {
        let t = &cfg.routing;
        let w = secs(window_s);
        let mut e = Evaluation { quiet_note: "no ICMP errors or SYN-ACKs in the window", ..Evaluation::default() };
        for p in &self.paths {
            if p.samples_window == 0 && p.changes_window == 0 {
                continue;
            }
            e.had_signal = true;
            if p.changes_window >= t.min_path_changes
                && let Some(c) = p.last_change
            {
                e.hits.push(Hit { count: 1, margin: 1.0,
                    rule: "routing.path_change",
                    destination: std::net::SocketAddr::new(p.peer, 0),
                    evidence: Some(format!(
                        "Routing: the path to {} changed from {} to {} hops in the last {w} (its SYN-ACKs now arrive with TTL {})",
                        p.peer, c.before, c.after, p.ttl
                    )),
                }.strength(p.changes_window, p.changes_window as f64, t.min_path_changes as f64));
            }
        }
        for d in &self.destinations {
            let c = &d.window;
            if c.get(ic::ERRORS) == 0 {
                continue;
            }
            e.had_signal = true;
            let kinds = [
                (ic::NET_UNREACHABLE, "network unreachable"),
                (ic::HOST_UNREACHABLE, "host unreachable"),
                (ic::PROHIBITED, "administratively prohibited"),
                (ic::OTHER, "other unreachable"),
            ];
            let unreachable: u64 = kinds.iter().map(|(i, _)| c.get(*i)).sum();
            if unreachable >= t.min_unreachable {
                let what: Vec<String> =
                    kinds.iter().filter(|(i, _)| c.get(*i) > 0).map(|(i, name)| format!("{} {name}", c.get(*i))).collect();
                e.hits.push(Hit { count: 1, margin: 1.0,
                    rule: "routing.icmp_unreachable",
                    destination: d.dest,
                    evidence: Some(format!("Routing: ICMP {} for {} in the last {w}{}", what.join(", "), d.dest, reporters(d))),
                }.strength(unreachable, unreachable as f64, t.min_unreachable as f64));
            }
            let exceeded = c.get(ic::TIME_EXCEEDED);
            if exceeded >= t.min_time_exceeded {
                e.hits.push(Hit { count: 1, margin: 1.0,
                    rule: "routing.time_exceeded",
                    destination: d.dest,
                    evidence: Some(format!(
                        "Routing: {exceeded} ICMP time exceeded for {} in the last {w}{} (a routing loop, or a TTL too low)",
                        d.dest,
                        reporters(d)
                    )),
                }.strength(exceeded, exceeded as f64, t.min_time_exceeded as f64));
            }
            if c.get(ic::PORT_UNREACHABLE) > 0 {
                e.context.push(format!("Routing: {} ICMP port unreachable for {} (nothing listens there)", c.get(ic::PORT_UNREACHABLE), d.dest));
            }
            if c.get(ic::FRAG_NEEDED) > 0 {
                let mtu = d.mtu.map(|m| format!(", next-hop MTU {m}")).unwrap_or_default();
                e.context.push(format!("Routing: {} ICMP fragmentation needed for {}{mtu}", c.get(ic::FRAG_NEEDED), d.dest));
            }
        }
        e
    }
}
