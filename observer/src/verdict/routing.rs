//! Layer 3 rules (loss and RTT half): retransmits, local drops, RTT jumps against the
//! destination's own baseline, and connects that found no route. Every evidence line ends
//! with the blast radius. ICMP errors are judged by the ICMP half.

use super::{Evaluation, Hit, Layer, Rules, ms, secs};
use crate::{
    config::Config,
    layers::routing::{DestView, RoutingView, lossy_span, no_route, route_counter as rc},
};

/// 41200 -> "41,200".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pct(part: u64, whole: u64) -> String {
    let p = if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 };
    if p < 10.0 { format!("{p:.1} %") } else { format!("{p:.0} %") }
}

/// "(fast 80 %, RTO 20 %)": the kinds of the window's retransmits.
fn kinds(d: &DestView) -> String {
    let w = &d.window;
    let total = w.get(rc::RTO) + w.get(rc::FAST) + w.get(rc::PROBE);
    let parts: Vec<String> = [(rc::FAST, "fast"), (rc::RTO, "RTO"), (rc::PROBE, "probes")]
        .iter()
        .filter(|(i, _)| w.get(*i) > 0)
        .map(|(i, name)| format!("{name} {}", pct(w.get(*i), total)))
        .collect();
    if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) }
}

/// "; RTT p95 1.2 ms (baseline 0.3 ms)".
fn rtt(d: &DestView) -> String {
    if d.rtt.count == 0 {
        return String::new();
    }
    match d.rtt_baseline_us {
        Some(b) => format!("; RTT p95 {} (baseline {})", ms(d.rtt.p95), ms(b)),
        None => format!("; RTT p95 {} (no baseline yet)", ms(d.rtt.p95)),
    }
}

fn reasons(d: &DestView) -> String {
    let v: Vec<String> = d.drop_reasons.iter().filter(|(r, w, _)| *w > 0 && crate::layers::routing::drop_loses_traffic(r)).map(|(r, w, _)| format!("{r} {w}")).collect();
    v.join(", ")
}

impl Rules for RoutingView {
    fn layer(&self) -> Layer {
        Layer::Routing
    }

    fn covers(&self) -> &'static str {
        "loss and RTT"
    }

    fn explains(&self, suspect: &[std::net::SocketAddr]) -> std::collections::BTreeSet<std::net::IpAddr> {
        suspect.iter().map(|d| d.ip()).collect()
    }

    fn evaluate(&self, window_s: f64, cfg: &Config) -> Evaluation {
        let t = &cfg.routing;
        let w = secs(window_s);
        let scope = self.scope.unwrap_or("one destination");
        let mut e = Evaluation { quiet_note: "no established connections sampled, drops or failed connects in the window", ..Evaluation::default() };
        for d in &self.destinations {
            let c = &d.window;
            if c.values.iter().all(|v| *v == 0) && d.rtt.count == 0 {
                continue;
            }
            e.had_signal = true;
            let (segs, retx, dropped) = (c.get(rc::SEGMENTS), c.get(rc::RETRANSMITTED), c.get(rc::DROPPED_HERE));
            // Loss that this host's own drops account for is not the path's.
            let local = d.why.contains(&"local drops");
            let loss_is_local = local && dropped * 2 >= retx;
            if d.why.contains(&"loss") && !loss_is_local
                // The window's figures, or the last seconds' when the loss just started.
                && let Some((segs, retx, span)) = lossy_span(d, t)
            {
                let w = span.map_or(w.clone(), |s| secs(s.as_secs_f64()));
                e.hits.push(Hit { count: 1, margin: 1.0,
                    rule: "routing.retransmits",
                    destination: d.dest,
                    evidence: Some(format!(
                        "Routing: {} of {} segments to {} retransmitted in the last {w}{}, {} dropped on this host{}; {scope}",
                        pct(retx, segs),
                        thousands(segs),
                        d.dest,
                        kinds(d),
                        thousands(dropped),
                        rtt(d)
                    )),
                }.strength(retx, retx as f64 / segs.max(1) as f64, t.retransmit_ratio));
            }
            if local {
                let loss = if segs > 0 { format!("; {} of {} segments retransmitted", pct(retx, segs), thousands(segs)) } else { String::new() };
                e.hits.push(Hit { count: 1, margin: 1.0,
                    rule: "routing.local_drops",
                    destination: d.dest,
                    evidence: Some(format!(
                        "Routing: {} packets to or from {} dropped on this host in the last {w} ({}), not lost on the path{loss}; {scope}",
                        thousands(dropped),
                        d.dest,
                        reasons(d)
                    )),
                }.strength(dropped, dropped as f64, t.min_local_drops as f64));
            }
            if d.why.contains(&"rtt") {
                let base = d.rtt_baseline_us.unwrap_or(1).max(1);
                e.hits.push(Hit { count: 1, margin: 1.0,
                    rule: "routing.rtt_jump",
                    destination: d.dest,
                    evidence: Some(format!(
                        "Routing: RTT to {} p95 {} in the last {w}, {:.0}× its baseline of {}; {scope}",
                        d.dest,
                        ms(d.rtt.p95),
                        d.rtt.p95 as f64 / base as f64,
                        ms(base)
                    )),
                }.strength(d.rtt.count, d.rtt.p95 as f64, t.rtt_jump_factor * base as f64));
            }
            let unrouted = no_route(d);
            if unrouted >= t.min_no_route && unrouted > 0 {
                let names: Vec<String> =
                    d.connect_errors.iter().filter(|(_, e, w, _)| matches!(e, 101 | 113) && *w > 0).map(|(n, _, w, _)| format!("{n} {w}")).collect();
                let by = if d.processes.is_empty() { String::new() } else { format!(", by {}", d.processes.join(", ")) };
                e.hits.push(Hit { count: 1, margin: 1.0,
                    rule: "routing.no_route",
                    destination: d.dest,
                    evidence: Some(format!(
                        "Routing: connect() to {} failed {unrouted} times in the last {w} before sending a SYN ({}: no route){by}; {scope}",
                        d.dest,
                        names.join(", ")
                    )),
                }.strength(unrouted, unrouted as f64, t.min_no_route as f64));
            }
            for (name, errno, win, _) in &d.connect_errors {
                if *win > 0 && !matches!(errno, 101 | 113) {
                    let what = match errno {
                        99 => "no free local port or address",
                        1 | 13 => "refused by a local policy",
                        _ => "failed",
                    };
                    e.context.push(format!("connect() to {} failed {win} times before any SYN: {name} ({what})", d.dest));
                }
            }
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_and_percentages_read_as_in_an_incident_channel() {
        assert_eq!((thousands(41200), thousands(999), thousands(1_000_000)), ("41,200".into(), "999".into(), "1,000,000".into()));
        assert_eq!((pct(31, 1000), pct(80, 100)), ("3.1 %".into(), "80 %".into()));
    }
}
