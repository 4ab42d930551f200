//! The DNS layer on screen and in the report.

use observer_common::dns::dns_counter as kc;

use super::{Detail, Panel, Table, ms};
use crate::layers::dns::{DnsView, name_counter as nc, resolver_counter as rc};

impl Panel for DnsView {
    fn redact(&mut self, r: &super::redact::Redactor) {
        let rest = self.rest_names.values_mut().flat_map(|r| r.troubled.iter_mut());
        for n in self.names.iter_mut().chain(rest) {
            r.name(&mut n.qname);
            n.answers.iter_mut().for_each(|a| r.address_or_name(a));
        }
        for d in &mut self.divergences {
            r.name(&mut d.qname);
        }
    }

    fn key(&self) -> &'static str {
        "dns"
    }

    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("the view serialises")
    }

    fn table(&self) -> Table {
        let header = format!(
            "{:<26} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8}",
            "resolver (window)", "query", "nxdom", "srvfl", "refus", "unans", "p95 ms"
        );
        let rows = self
            .resolvers
            .iter()
            .map(|x| {
                let w = &x.window;
                let text = format!(
                    "{:<26} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8}",
                    x.resolver.to_string(),
                    w.kernel.get(kc::QUERIES),
                    w.kernel.get(kc::NXDOMAIN),
                    w.kernel.get(kc::SERVFAIL),
                    w.kernel.get(kc::REFUSED),
                    w.parsed.get(rc::UNANSWERED),
                    ms(w.latency_us.p95)
                );
                (x.resolver.to_string(), text)
            })
            .collect();
        // Names come after the resolvers: shown when the panel has room.
        let mut extra = vec![
            String::new(),
            format!("{:<34} {:>5} {:>6} {:>6} {:>8}  {}", "name (window)", "type", "query", "errors", "p95 ms", "answer"),
        ];
        for n in &self.names {
            let w = &n.window;
            extra.push(format!(
                "{:<34} {:>5} {:>6} {:>6} {:>8}  {}",
                n.qname,
                n.qtype,
                w.counts.get(nc::QUERIES),
                w.trouble(),
                ms(w.latency_us.p95),
                n.answers.join(" ")
            ));
        }
        Table { header, rows, extra, ..Table::default() }
    }

    fn activity(&self) -> Vec<(String, u64)> {
        self.resolvers.iter().map(|x| (x.resolver.to_string(), x.total.kernel.get(kc::QUERIES))).collect()
    }

    fn activity_label(&self) -> &'static str {
        "queries"
    }

    fn detail(&self, row: &str) -> Option<Detail> {
        let x = self.resolvers.iter().find(|x| x.resolver.to_string() == row)?;
        let mut counters: Vec<(&'static str, u64, u64)> =
            kc::NAMES.iter().enumerate().map(|(i, n)| (*n, x.window.kernel.get(i), x.total.kernel.get(i))).collect();
        counters.extend(rc::NAMES.iter().enumerate().map(|(i, n)| (*n, x.window.parsed.get(i), x.total.parsed.get(i))));
        let notes = self
            .names
            .iter()
            .filter(|n| n.resolvers.contains(&x.resolver))
            .take(3)
            .map(|n| format!("{} {}: {}", n.qname, n.qtype, n.answers.join(", ")))
            .collect();
        Some(Detail { counters, window: x.window.latency_us, total: x.total.latency_us, notes })
    }

    fn text(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{:<42} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>9}",
            "DNS resolver (window)", "query", "resp", "nxdom", "srvfl", "refus", "unans", "p95 ms"
        )];
        for x in &self.resolvers {
            let w = &x.window;
            out.push(format!(
                "{:<42} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>9.1}",
                x.resolver.to_string(),
                w.kernel.get(kc::QUERIES),
                w.kernel.get(kc::RESPONSES),
                w.kernel.get(kc::NXDOMAIN),
                w.kernel.get(kc::SERVFAIL),
                w.kernel.get(kc::REFUSED),
                w.parsed.get(rc::UNANSWERED),
                w.latency_us.p95 as f64 / 1000.0
            ));
        }
        out
    }

    fn limit(&mut self) {
        DnsView::limit(self);
    }
}
