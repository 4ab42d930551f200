//! The TLS layer on screen and in the report.

use super::{Detail, Panel, Table, ms};
use crate::layers::tls::{TlsView, tls_counter as tc};

impl Panel for TlsView {
    fn redact(&mut self, r: &super::redact::Redactor) {
        for t in &mut self.targets {
            r.name(&mut t.sni);
            if let Some(c) = &mut t.certificate {
                r.name(&mut c.subject);
                c.names.iter_mut().for_each(|n| r.name(n));
            }
        }
    }

    fn key(&self) -> &'static str {
        "tls"
    }

    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("the view serialises")
    }

    fn table(&self) -> Table {
        let header = format!(
            "{:<34} {:>5} {:>5} {:>5} {:>5} {:>5} {:>8}",
            "TLS destination, SNI (window)", "hs", "ok", "alert", "abort", "stall", "hello ms"
        );
        let rows = self
            .targets
            .iter()
            .map(|t| {
                let w = &t.window;
                let name = if t.sni.is_empty() { t.dest.to_string() } else { format!("{} {}", t.dest, t.sni) };
                let text = format!(
                    "{:<34} {:>5} {:>5} {:>5} {:>5} {:>5} {:>8}",
                    name,
                    w.get(tc::HANDSHAKES),
                    w.get(tc::COMPLETED),
                    w.get(tc::ALERT),
                    w.get(tc::ABORTED),
                    w.get(tc::STALLED),
                    ms(w.hello_latency_us.p95)
                );
                (t.key(), text)
            })
            .collect();
        Table { header, rows, ..Table::default() }
    }

    fn activity(&self) -> Vec<(String, u64)> {
        self.targets.iter().map(|t| (t.key(), t.total.get(tc::HANDSHAKES))).collect()
    }

    fn activity_label(&self) -> &'static str {
        "handshakes"
    }

    fn detail(&self, row: &str) -> Option<Detail> {
        let t = self.targets.iter().find(|t| t.key() == row)?;
        let counters = tc::NAMES.iter().enumerate().map(|(i, n)| (*n, t.window.get(i), t.total.get(i))).collect();
        let mut notes = vec![t.label()];
        notes.push(format!(
            "offered {} (ALPN {}); negotiated {} {} (ALPN {})",
            if t.offered_versions.is_empty() { "-".to_owned() } else { t.offered_versions.join(", ") },
            if t.offered_alpn.is_empty() { "-".to_owned() } else { t.offered_alpn.join(", ") },
            t.version.unwrap_or("-"),
            t.cipher.as_deref().unwrap_or("-"),
            t.alpn.as_deref().unwrap_or("-")
        ));
        notes.push(format!(
            "ClientHello to application data: p50 {} ms, p95 {} ms (window)",
            ms(t.window.complete_latency_us.p50),
            ms(t.window.complete_latency_us.p95)
        ));
        if let Some(c) = &t.certificate {
            notes.push(format!("certificate: {} (subject {}, names {})", c.fact(&t.sni), c.subject, c.names.join(", ")));
        }
        if let Some(n) = t.certificate_note {
            notes.push(n.to_owned());
        }
        for (alert, n) in &t.alerts {
            notes.push(format!("alert {alert}: {n}"));
        }
        if let Some(f) = &t.last_failure {
            notes.push(format!(
                "last failure: {} from {}{}",
                f.reason,
                f.client,
                f.process.as_ref().map(|p| format!(", {p}")).unwrap_or_default()
            ));
        }
        Some(Detail { counters, window: t.window.hello_latency_us, total: t.total.hello_latency_us, notes })
    }

    fn text(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{:<52} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>9}",
            "TLS destination, SNI (window)", "hs", "ok", "alert", "abort", "stall", "malf", "hello ms"
        )];
        for t in &self.targets {
            let w = &t.window;
            out.push(format!(
                "{:<52} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>9.1}",
                t.label(),
                w.get(tc::HANDSHAKES),
                w.get(tc::COMPLETED),
                w.get(tc::ALERT),
                w.get(tc::ABORTED),
                w.get(tc::STALLED),
                w.get(tc::MALFORMED),
                w.hello_latency_us.p95 as f64 / 1000.0
            ));
        }
        if self.targets_omitted > 0 {
            out.push(format!("… {} more TLS destinations", self.targets_omitted));
        }
        out
    }

    fn limit(&mut self) {
        TlsView::limit(self);
    }
}
