//! ICMP errors (part of layer 3) on screen and in the report.

use super::{Detail, Panel, Table};
use crate::layers::{
    icmp::{IcmpView, icmp_counter as ic},
    latency::LatencySummary,
};

fn row(d: &crate::layers::icmp::DestView) -> String {
    let w = &d.window;
    format!(
        "{:<26} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        d.dest.to_string(),
        w.get(ic::ERRORS),
        w.get(ic::NET_UNREACHABLE),
        w.get(ic::HOST_UNREACHABLE),
        w.get(ic::PROHIBITED),
        w.get(ic::PORT_UNREACHABLE),
        w.get(ic::FRAG_NEEDED),
        w.get(ic::TIME_EXCEEDED)
    )
}

/// "path to 10.0.0.9: 3 hops, changed from 2 (TTL 61)".
fn path_line(p: &crate::layers::icmp::PathView) -> String {
    match p.last_change {
        Some(c) => format!("path to {}: {} hops, changed from {} (TTL {})", p.peer, p.hops, c.before, p.ttl),
        None => format!("path to {}: {} hops (TTL {})", p.peer, p.hops, p.ttl),
    }
}

const HEADER: [&str; 8] = ["ICMP errors for (window)", "all", "net", "host", "prohib", "port", "frag", "ttl"];

fn header() -> String {
    let h = HEADER;
    format!("{:<26} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}", h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
}

impl Panel for IcmpView {
    fn key(&self) -> &'static str {
        "icmp"
    }

    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("the view serialises")
    }

    fn table(&self) -> Table {
        let extra = self.paths.iter().filter(|p| p.changes_window > 0).map(path_line).collect();
        Table { header: header(), rows: self.destinations.iter().map(|d| (d.dest.to_string(), row(d))).collect(), extra, ..Table::default() }
    }

    fn activity(&self) -> Vec<(String, u64)> {
        self.destinations.iter().map(|d| (d.dest.to_string(), d.total.get(ic::ERRORS))).collect()
    }

    fn activity_label(&self) -> &'static str {
        "ICMP errors"
    }

    fn detail(&self, row: &str) -> Option<Detail> {
        let d = self.destinations.iter().find(|d| d.dest.to_string() == row)?;
        let counters = ic::NAMES.iter().enumerate().map(|(i, n)| (*n, d.window.get(i), d.total.get(i))).collect();
        let mut notes = vec![format!(
            "sent by {}",
            d.reporters.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        )];
        if let Some(m) = d.mtu {
            notes.push(format!("next-hop MTU {m}"));
        }
        Some(Detail { counters, window: LatencySummary::default(), total: LatencySummary::default(), notes })
    }

    fn text(&self) -> Vec<String> {
        let mut out = vec![header()];
        out.extend(self.destinations.iter().map(row));
        out.extend(self.paths.iter().filter(|p| p.changes_window > 0).map(path_line));
        if self.destinations_omitted > 0 {
            out.push(format!("… {} more destinations with ICMP errors", self.destinations_omitted));
        }
        out
    }

    fn limit(&mut self) {
        IcmpView::limit(self);
    }
}
