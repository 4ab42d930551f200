//! Loss and RTT (part of layer 3) on screen and in the report: the blast radius first.

use super::{Detail, Panel, Table, ms};
use crate::layers::routing::{DestView, RollUp, RoutingView, route_counter as rc};

fn pct(r: f64) -> String {
    if r == 0.0 { "-".to_owned() } else { format!("{:.1}", r * 100.0) }
}

fn row(d: &DestView) -> String {
    let w = &d.window;
    format!(
        "{:<24} {:>8} {:>6} {:>5} {:>5} {:>5} {:>6} {:>7} {:>7}  {}",
        d.dest.to_string(),
        w.get(rc::SEGMENTS),
        pct(d.retransmit_ratio),
        w.get(rc::RTO),
        w.get(rc::FAST),
        w.get(rc::PROBE),
        w.get(rc::DROPPED_HERE),
        ms(d.rtt.p95),
        d.rtt_baseline_us.map_or_else(|| "-".to_owned(), ms),
        d.why.join(", ")
    )
}

const HEADER: [&str; 10] = ["loss and RTT (window)", "segs", "retx%", "rto", "fast", "probe", "drops", "rtt p95", "base", "why"];

fn header() -> String {
    let h = HEADER;
    format!("{:<24} {:>8} {:>6} {:>5} {:>5} {:>5} {:>6} {:>7} {:>7}  {}", h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9])
}

fn rollup(r: &RollUp) -> String {
    format!(
        "{}: {} of {} destinations affected, {} % of {} segments retransmitted, {} dropped here, {} ICMP unreachable",
        r.key,
        r.affected,
        r.destinations,
        pct(r.retransmit_ratio),
        r.segments,
        r.dropped_here,
        r.icmp_unreachable
    )
}

/// "Blast radius: one destination (10.0.0.2)"; the host's figures when nothing is affected.
fn blast_radius(v: &RoutingView) -> String {
    match v.scope {
        Some(scope) => {
            let who: Vec<String> = v.affected.iter().take(4).map(ToString::to_string).collect();
            let more = if v.affected.len() > 4 { format!(" and {} more", v.affected.len() - 4) } else { String::new() };
            format!("Blast radius: {scope} ({}{more})", who.join(", "))
        }
        None => format!("Blast radius: nothing affected ({} connections sampled)", v.connections),
    }
}

impl Panel for RoutingView {
    fn key(&self) -> &'static str {
        "routing"
    }

    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("the view serialises")
    }

    fn table(&self) -> Table {
        let mut lead = vec![blast_radius(self)];
        if self.scope.is_some() {
            lead.extend(self.prefixes.iter().filter(|p| p.affected > 0).take(2).map(rollup));
            lead.extend(self.interfaces.iter().filter(|i| i.affected > 0).take(2).map(rollup));
        }
        let rows = self.destinations.iter().map(|d| (d.dest.to_string(), row(d))).collect();
        Table { lead, header: header(), rows, extra: vec![] }
    }

    fn activity(&self) -> Vec<(String, u64)> {
        self.destinations.iter().map(|d| (d.dest.to_string(), d.total.get(rc::SEGMENTS))).collect()
    }

    fn activity_label(&self) -> &'static str {
        "segments"
    }

    fn detail(&self, row: &str) -> Option<Detail> {
        let d = self.destinations.iter().find(|d| d.dest.to_string() == row)?;
        let counters = rc::NAMES.iter().enumerate().map(|(i, n)| (*n, d.window.get(i), d.total.get(i))).collect();
        let mut notes = vec![format!("interface {}", d.iface.as_deref().unwrap_or("unknown"))];
        notes.extend(d.drop_reasons.iter().map(|(r, w, t)| format!("dropped here, {r}: {w} in the window, {t} since start")));
        notes.extend(d.connect_errors.iter().map(|(n, _, w, t)| format!("connect() {n}: {w} in the window, {t} since start")));
        if !d.processes.is_empty() {
            notes.push(format!("processes: {}", d.processes.join(", ")));
        }
        // The latency panel shows smoothed RTT samples here.
        Some(Detail { counters, window: d.rtt, total: d.rtt, notes })
    }

    fn text(&self) -> Vec<String> {
        let mut out = vec![blast_radius(self), header()];
        out.extend(self.destinations.iter().map(row));
        if self.destinations_omitted > 0 {
            out.push(format!("… {} more destinations", self.destinations_omitted));
        }
        out
    }

    fn limit(&mut self) {
        RoutingView::limit(self);
    }
}
