//! The HTTP layer (L7) on screen and in the report.

use super::{Detail, Panel, Table, ms};
use crate::layers::http::{HttpView, Role, TargetView, http_counter as hc};

fn name(t: &TargetView) -> String {
    let side = match t.role {
        Role::Client => "",
        Role::Server => "local ",
    };
    if t.host.is_empty() { format!("{side}{}", t.server) } else { format!("{side}{} {}", t.server, t.host) }
}

fn status_line(t: &TargetView) -> String {
    let w = &t.window;
    format!(
        "{:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>8} {:>8}",
        w.get(hc::REQUESTS),
        w.get(hc::S2XX) + w.get(hc::S3XX),
        w.get(hc::S4XX),
        w.get(hc::S502),
        w.get(hc::S503),
        w.get(hc::S504),
        w.get(hc::NO_RESPONSE),
        ms(w.latency_us.p50),
        ms(w.latency_us.p95)
    )
}

const COLUMNS: &str = "  req 2/3xx   4xx   502   503   504 noresp   p50 ms   p95 ms";

/// The TUI's narrower row: 502, 503 and 504 together as gateway errors.
fn compact_line(t: &TargetView) -> String {
    let w = &t.window;
    format!(
        "{:>5} {:>5} {:>4} {:>4} {:>4} {:>5} {:>7}",
        w.get(hc::REQUESTS),
        w.get(hc::S2XX) + w.get(hc::S3XX),
        w.get(hc::S4XX),
        w.get(hc::S5XX),
        w.gateway_errors(),
        w.get(hc::NO_RESPONSE),
        ms(w.latency_us.p95)
    )
}

/// `gw`: 502, 503 and 504 together.
const COMPACT_COLUMNS: &str = "  req 2/3xx  4xx  5xx   gw nores  p95 ms";

impl Panel for HttpView {
    fn redact(&mut self, r: &super::redact::Redactor) {
        for t in &mut self.targets {
            r.name(&mut t.host);
            t.slowest.iter_mut().for_each(|s| r.name(&mut s.path));
        }
    }

    fn key(&self) -> &'static str {
        "http"
    }

    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("the view serialises")
    }

    fn table(&self) -> Table {
        let header = format!("{:<34} {COMPACT_COLUMNS}", "HTTP destination, Host (window)");
        let rows = self.targets.iter().map(|t| (t.key(), format!("{:<34} {}", name(t), compact_line(t)))).collect();
        let extra = self.connect_failures.iter().map(|f| format!("connects failing: {}", f.describe())).collect();
        Table { header, rows, extra, ..Table::default() }
    }

    fn activity(&self) -> Vec<(String, u64)> {
        self.targets.iter().map(|t| (t.key(), t.total.get(hc::REQUESTS))).collect()
    }

    fn activity_label(&self) -> &'static str {
        "requests"
    }

    fn detail(&self, row: &str) -> Option<Detail> {
        let t = self.targets.iter().find(|t| t.key() == row)?;
        let counters = hc::NAMES.iter().enumerate().map(|(i, n)| (*n, t.window.get(i), t.total.get(i))).collect();
        let mut notes = vec![format!(
            "{} ({}){}",
            t.label(),
            match t.role {
                Role::Client => "requests this host sent",
                Role::Server => "requests this host served",
            },
            t.process.as_ref().map(|p| format!(", {p}")).unwrap_or_default()
        )];
        if t.slowest.is_empty() {
            notes.push("no requests finished in the window".to_owned());
        } else {
            notes.push("slowest in the window:".to_owned());
        }
        for s in &t.slowest {
            let status = s.status.map_or("no response".to_owned(), |s| s.to_string());
            notes.push(format!("  {} {} -> {status} in {} ms", s.method, s.path, ms(s.latency_us)));
        }
        Some(Detail { counters, window: t.window.latency_us, total: t.total.latency_us, notes })
    }

    fn text(&self) -> Vec<String> {
        let mut out = vec![format!("{:<52} {COLUMNS}", "HTTP destination, Host (window)")];
        for t in &self.targets {
            out.push(format!("{:<52} {}", name(t), status_line(t)));
        }
        for f in &self.connect_failures {
            out.push(format!("connects failing: {}", f.describe()));
        }
        if self.targets_omitted > 0 {
            out.push(format!("… {} more HTTP destinations", self.targets_omitted));
        }
        out
    }

    fn limit(&mut self) {
        HttpView::limit(self);
    }
}
