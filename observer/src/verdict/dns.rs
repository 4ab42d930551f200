//! Layer 1 rules: error rcodes, unanswered queries, slow lookups (absolute and against the
//! resolver's own baseline), and resolvers that disagree.

use observer_common::dns::dns_counter as kc;

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
};

use super::{Evaluation, Hit, Hits, Layer, Rules, ms, secs};
use crate::{
    config::Config,
    layers::{
        dns::{DnsView, RECENT, name_counter as nc, nxdomains_counted, resolver_counter as rc},
        latency::LatencySummary,
    },
};

impl Rules for DnsView {
    fn layer(&self) -> Layer {
        Layer::Dns
    }

    fn covers(&self) -> &'static str {
        "DNS lookups"
    }

    fn evaluate(&self, window_s: f64, cfg: &Config) -> Evaluation {
        evaluate(self, window_s, cfg)
    }

    /// Troubled resolvers explain failing connects to the addresses they returned (stale or
    /// split answers, answers that came too late), and a divergence explains both sides.
    fn explains(&self, suspect: &[SocketAddr]) -> BTreeSet<IpAddr> {
        let mut addrs = BTreeSet::new();
        for n in self.names.iter().filter(|n| n.resolvers.iter().any(|r| suspect.contains(r))) {
            addrs.extend(n.answers.iter().filter_map(|a| a.parse::<IpAddr>().ok()));
        }
        for (_, rest) in self.rest_names.iter().filter(|(r, _)| suspect.contains(r)) {
            addrs.extend(rest.addresses.iter().copied());
        }
        for d in &self.divergences {
            for a in &d.answers {
                addrs.extend(a.addresses.iter().copied());
            }
        }
        addrs
    }
}

fn evaluate(view: &DnsView, window_s: f64, cfg: &Config) -> Evaluation {
    let t = &cfg.dns;
    let w = secs(window_s);
    let mut hits = Hits::default();
    let mut context = Vec::new();
    let mut had_signal = !view.divergences.is_empty();
    for r in &view.resolvers {
        let win = &r.window;
        let queries = win.kernel.get(kc::QUERIES);
        let responses = win.kernel.get(kc::RESPONSES);
        let unanswered = win.parsed.get(rc::UNANSWERED);
        if queries + responses + unanswered == 0 {
            continue;
        }
        had_signal = true;
        let dest = r.resolver;
        // NXDOMAINs of search-list expansions, and ones too fresh to tell, are not errors.
        // They are subtracted from the NXDOMAINs userspace read, which count in the same
        // intervals as they do: the kernel's count of a response read just after a reading
        // is in the next interval, and when the window's tail passed the excuse before it, a
        // healthy lookup's expansions were errors for a report. What the kernel counted
        // beyond them is added as far as DNS events were lost: only it has those.
        let search = win.parsed.get(rc::SEARCH_NXDOMAIN);
        let nx = nxdomains_counted(win.parsed.get(rc::NXDOMAIN_SEEN), win.kernel.get(kc::NXDOMAIN), view.events_lost)
            .saturating_sub(search + r.nxdomain_in_grace);
        let (sf, rf) = (win.kernel.get(kc::SERVFAIL), win.kernel.get(kc::REFUSED));
        let errors = nx + sf + rf;
        if search > 0 {
            context.push(format!(
                "DNS: {search} NXDOMAIN from {dest} in the last {w} were search-list expansions of names that then resolved (not counted as errors)"
            ));
        }
        if errors >= t.min_errors && responses > 0 && errors as f64 / responses as f64 >= t.error_share {
            let mut kinds = Vec::new();
            for (n, word) in [(sf, "SERVFAIL"), (nx, "NXDOMAIN"), (rf, "REFUSED")] {
                if n > 0 {
                    kinds.push(format!("{n} {word}"));
                }
            }
            let names = troubled_names(view, r.resolver);
            hits.push(Hit { count: 1, margin: 1.0,
                rule: "dns.error_rcodes",
                destination: dest,
                evidence: Some(format!(
                    "DNS: {errors}/{responses} responses from {dest} were errors ({}) in the last {w}{names}",
                    kinds.join(", ")
                )),
            }.strength(errors, errors as f64 / responses as f64, t.error_share));
        }
        // A resolver gone silent, named before its queries time out: queries it has answered
        // nothing since, the oldest waiting longer than its usual p99 many times over.
        // Its usual p99, not the since-start one: an earlier slow episode must not make a
        // later silence wait for the timeout.
        let overdue_ms = t.overdue_floor_ms.max(t.overdue_factor * r.typical_p99_us as f64 / 1000.0);
        if r.silent_queries >= t.min_silent && r.silent_for_ms as f64 >= overdue_ms {
            hits.push(Hit { count: 1, margin: 1.0,
                rule: "dns.silent",
                destination: dest,
                evidence: Some(format!(
                    "DNS: {} queries to {dest} waiting up to {:.1} s, with no response from it since the first of them (silent resolver; they count as unanswered after {})",
                    r.silent_queries,
                    r.silent_for_ms as f64 / 1000.0,
                    secs(view.unanswered_after.as_secs_f64())
                )),
            }.strength(r.silent_queries, r.silent_for_ms as f64, overdue_ms));
        }
        if unanswered >= t.min_unanswered {
            hits.push(Hit { count: 1, margin: 1.0,
                rule: "dns.unanswered",
                destination: dest,
                evidence: Some(format!(
                    "DNS: {unanswered} queries to {dest} unanswered (no response within {}) in the last {w}",
                    secs(view.unanswered_after.as_secs_f64())
                )),
            }.strength(unanswered, unanswered as f64, t.min_unanswered as f64));
        }
        // The window's latency, else the last 2 s': a resolver that just turned slow.
        let recent = secs(RECENT.as_secs_f64());
        let slow = |lat: &LatencySummary| lat.count >= t.min_latency_samples && lat.p95 as f64 / 1000.0 >= t.p95_ms;
        let (lat, w) = if !slow(&win.latency_us) && slow(&r.recent_latency_us) { (&r.recent_latency_us, &recent) } else { (&win.latency_us, &w) };
        let baseline = r.total.latency_us.p50;
        if lat.count >= t.min_latency_samples {
            let p95_ms = lat.p95 as f64 / 1000.0;
            let baseline_text = if baseline > 0 { format!(" (baseline {})", ms(baseline)) } else { String::new() };
            if p95_ms >= t.p95_ms {
                hits.push(Hit { count: 1, margin: 1.0,
                    rule: "dns.slow",
                    destination: dest,
                    evidence: Some(format!(
                        "DNS: p95 lookup {} from {dest} over {} lookups in the last {w}{baseline_text}",
                        ms(lat.p95),
                        lat.count
                    )),
                }.strength(lat.count, p95_ms, t.p95_ms));
            } else if baseline > 0
                && p95_ms >= t.baseline_floor_ms
                && lat.p95 as f64 >= t.baseline_factor * baseline as f64
            {
                hits.push(Hit { count: 1, margin: 1.0,
                    rule: "dns.slower_than_baseline",
                    destination: dest,
                    evidence: Some(format!(
                        "DNS: p95 lookup {} from {dest} in the last {w}, {:.0}x its baseline {}",
                        ms(lat.p95),
                        lat.p95 as f64 / baseline as f64,
                        ms(baseline)
                    )),
                }.strength(lat.count, lat.p95 as f64, t.baseline_factor * baseline as f64));
            }
        }
    }
    if t.divergence {
        for d in &view.divergences {
            let sides: Vec<String> = d
                .answers
                .iter()
                .map(|a| {
                    let addrs: Vec<String> = a.addresses.iter().map(|x| x.to_string()).collect();
                    format!("{} says [{}]", a.resolver, addrs.join(", "))
                })
                .collect();
            let who: Vec<SocketAddr> = d.answers.iter().map(|a| a.resolver).collect();
            let names: Vec<String> = who.iter().map(ToString::to_string).collect();
            let line = format!("DNS answers differ between {} for {} ({}): {}", names.join(" and "), d.qname, d.qtype, sides.join("; "));
            // One evidence line for the pair; every resolver involved is a destination.
            let mut evidence = Some(line);
            for r in who {
                hits.push(Hit { count: 1, margin: 1.0, rule: "dns.divergence", destination: r, evidence: evidence.take() });
            }
        }
    }
    Evaluation { hits, had_signal, quiet_note: "no DNS messages in the window", context, upstreams: vec![] }
}

/// "; names: a.example (3 SERVFAIL)" for the names this resolver answered with errors.
fn troubled_names(view: &DnsView, resolver: SocketAddr) -> String {
    let mut parts = Vec::new();
    let rest = view.rest_names.get(&resolver).map(|r| r.troubled.as_slice()).unwrap_or_default();
    for n in view.names.iter().chain(rest).filter(|n| n.resolvers.contains(&resolver)) {
        let c = &n.window.counts;
        let mut kinds = Vec::new();
        let nx = c.get(nc::NXDOMAIN).saturating_sub(c.get(nc::SEARCH_NXDOMAIN));
        for (n, word) in [(c.get(nc::SERVFAIL), "SERVFAIL"), (nx, "NXDOMAIN"), (c.get(nc::REFUSED), "REFUSED")] {
            if n > 0 {
                kinds.push(format!("{n} {word}"));
            }
        }
        if !kinds.is_empty() {
            parts.push(format!("{} {} ({})", n.qname, n.qtype, kinds.join(", ")));
        }
        if parts.len() == 3 {
            break;
        }
    }
    if parts.is_empty() { String::new() } else { format!("; names: {}", parts.join(", ")) }
}
