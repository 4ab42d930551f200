//! The TCP connect layer on screen and in the report.

use observer_common::tcp::dest_counter as dc;

use super::{Detail, Panel, Table, ms};
use crate::layers::connect::ConnectView;

impl Panel for ConnectView {
    fn key(&self) -> &'static str {
        "tcp"
    }

    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("the view serialises")
    }

    fn table(&self) -> Table {
        let header = format!(
            "{:<26} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8}",
            "destination (window)", "tries", "ok", "refus", "t/out", "synrtx", "rst-in", "p95 ms"
        );
        let rows = self
            .destinations
            .iter()
            .map(|d| {
                let w = &d.window;
                let text = format!(
                    "{:<26} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8}",
                    d.dest.to_string(),
                    w.get(dc::ATTEMPTS),
                    w.get(dc::ESTABLISHED),
                    w.get(dc::REFUSED),
                    w.get(dc::TIMED_OUT) + w.get(dc::UNREACHABLE) + w.get(dc::ABORTED),
                    w.get(dc::SYN_RETRANSMITS),
                    w.get(dc::RESETS_RECEIVED),
                    ms(w.connect_latency_us.p95)
                );
                (d.dest.to_string(), text)
            })
            .collect();
        Table { header, rows, ..Table::default() }
    }

    fn activity(&self) -> Vec<(String, u64)> {
        self.destinations.iter().map(|d| (d.dest.to_string(), d.total.get(dc::ATTEMPTS))).collect()
    }

    fn activity_label(&self) -> &'static str {
        "connects"
    }

    fn detail(&self, row: &str) -> Option<Detail> {
        let d = self.destinations.iter().find(|d| d.dest.to_string() == row)?;
        let counters = dc::NAMES.iter().enumerate().map(|(i, n)| (*n, d.window.get(i), d.total.get(i))).collect();
        let mut notes = Vec::new();
        if let Some(lf) = &d.last_failure {
            notes.push(format!(
                "last failure: {} (errno {}) after {} ms, {} SYN retransmits, {}[{}]",
                lf.outcome,
                lf.errno,
                ms(lf.after_us),
                lf.syn_retransmits,
                lf.comm,
                lf.pid
            ));
        }
        if !d.processes.is_empty() {
            notes.push(format!("processes: {}", d.processes.join(", ")));
        }
        Some(Detail { counters, window: d.window.connect_latency_us, total: d.total.connect_latency_us, notes })
    }

    fn text(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{:<42} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>9}",
            "TCP destination (window)", "tries", "ok", "refus", "t/out", "unrch", "synrtx", "rst-in", "p95 ms"
        )];
        for d in &self.destinations {
            let w = &d.window;
            out.push(format!(
                "{:<42} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>9.1}",
                d.dest.to_string(),
                w.get(dc::ATTEMPTS),
                w.get(dc::ESTABLISHED),
                w.get(dc::REFUSED),
                w.get(dc::TIMED_OUT) + w.get(dc::ABORTED),
                w.get(dc::UNREACHABLE),
                w.get(dc::SYN_RETRANSMITS),
                w.get(dc::RESETS_RECEIVED),
                w.connect_latency_us.p95 as f64 / 1000.0
            ));
        }
        if self.destinations_omitted > 0 {
            out.push(format!("… {} more destinations", self.destinations_omitted));
        }
        out
    }

    fn limit(&mut self) {
        ConnectView::limit(self);
    }
}
