//! Layer 4 rules: 502/503/504 from a gateway, a share of 5xx, requests with no response, and
//! response time against the timeout budget and against the target's own baseline. A proxy's
//! 5xx that come with failing connects from this host name those upstreams, so that the
//! triage order can mark L7 a consequence of TCP.

use super::{Evaluation, Hit, Layer, Rules, ms, secs};
use crate::{
    config::Config,
    layers::http::{HttpView, Role, TargetView, http_counter as hc},
};

impl Rules for HttpView {
    fn layer(&self) -> Layer {
        Layer::L7
    }

    fn covers(&self) -> &'static str {
        "HTTP"
    }

    fn evaluate(&self, window_s: f64, cfg: &Config) -> Evaluation {
        let t = &cfg.l7;
        let w = secs(window_s);
        let mut e = Evaluation { quiet_note: "no HTTP requests in the window", ..Evaluation::default() };
        let upstream_failures: Vec<_> = self.connect_failures.iter().map(|f| f.describe()).collect();
        for target in &self.targets {
            let c = &target.window;
            let requests = c.get(hc::REQUESTS);
            let responses = c.get(hc::RESPONSES);
            let no_response = c.get(hc::NO_RESPONSE);
            if c.get(hc::H2) > 0 {
                e.context.push(format!(
                    "L7: {} HTTP/2 connections with {} are not parsed (their status codes are not seen)",
                    c.get(hc::H2),
                    target.label()
                ));
            }
            if requests + responses + no_response == 0 {
                continue;
            }
            e.had_signal = true;
            if c.get(hc::UNPARSED) > 0 {
                e.context.push(format!("L7: {} requests to {} could not be parsed", c.get(hc::UNPARSED), target.label()));
            }
            let dest = target.server;
            let gateway = c.gateway_errors();
            let five = c.get(hc::S5XX);
            let mut said = false;
            if gateway >= t.min_gateway_errors {
                said = true;
                let mut line =
                    format!("L7: {gateway}/{responses} responses {} were {} in the last {w}", target.responses_label(), codes(target));
                line.push_str(&example(target, |s| matches!(s, Some(502..=504))));
                if target.role == Role::Server && !upstream_failures.is_empty() {
                    line.push_str(&format!("; upstream connects to {}", upstream_failures.join(", ")));
                    e.upstreams.push((dest, self.connect_failures.iter().map(|f| f.dest).collect()));
                }
                line.push_str(&process(target));
                e.hits.push(Hit { count: 1, margin: 1.0, rule: "l7.gateway_errors", destination: dest, evidence: Some(line) }.strength(gateway, gateway as f64, t.min_gateway_errors as f64));
            }
            if five >= t.min_errors && responses > 0 && five as f64 / responses as f64 >= t.error_share {
                let line = (!said).then(|| {
                    format!(
                        "L7: {five}/{responses} responses {} were 5xx in the last {w}{}{}",
                        target.responses_label(),
                        example(target, |s| matches!(s, Some(500..=599))),
                        process(target)
                    )
                });
                said = true;
                e.hits.push(Hit { count: 1, margin: 1.0, rule: "l7.error_share", destination: dest, evidence: line }.strength(five, five as f64 / responses as f64, t.error_share));
            }
            if no_response >= t.min_errors && no_response as f64 / requests.max(no_response) as f64 >= t.error_share {
                e.hits.push(Hit { count: 1, margin: 1.0,
                    rule: "l7.no_response",
                    destination: dest,
                    evidence: Some(format!(
                        "L7: {no_response}/{requests} requests {} got no response in the last {w}{}{}",
                        match target.role {
                            Role::Client => format!("to {}", target.label()),
                            Role::Server => format!("served on {}", target.label()),
                        },
                        example(target, |s| s.is_none()),
                        process(target)
                    )),
                }.strength(no_response, no_response as f64 / requests.max(no_response) as f64, t.error_share));
                said = true;
            }
            let lat = &c.latency_us;
            if lat.count >= t.min_latency_samples {
                let budget_us = (t.timeout_budget_ms * 1000.0) as u64;
                let baseline = target.total.latency_us.p50;
                let floor_us = (t.baseline_floor_ms * 1000.0) as u64;
                if lat.p95 > budget_us {
                    e.hits.push(Hit { count: 1, margin: 1.0,
                        rule: "l7.over_budget",
                        destination: dest,
                        evidence: (!said).then(|| {
                            format!(
                                "L7: response p95 {} {} is {} in the last {w}, over the {} budget{}{}",
                                match target.role {
                                    Role::Client => "from",
                                    Role::Server => "served on",
                                },
                                target.label(),
                                ms(lat.p95),
                                ms(budget_us),
                                example(target, |_| true),
                                process(target)
                            )
                        }),
                    }.strength(lat.count, lat.p95 as f64, budget_us as f64));
                } else if baseline > 0 && lat.p95 >= floor_us && lat.p95 as f64 >= t.baseline_factor * baseline as f64 {
                    e.hits.push(Hit { count: 1, margin: 1.0,
                        rule: "l7.slower_than_baseline",
                        destination: dest,
                        evidence: (!said).then(|| {
                            format!(
                                "L7: response p95 for {} is {} in the last {w}, against a since-start median of {}{}{}",
                                target.label(),
                                ms(lat.p95),
                                ms(baseline),
                                example(target, |_| true),
                                process(target)
                            )
                        }),
                    }.strength(lat.count, lat.p95 as f64, t.baseline_factor * baseline as f64));
                }
            }
        }
        e
    }
}

/// "502" or "502 (8), 504 (4)".
fn codes(t: &TargetView) -> String {
    let parts: Vec<(u16, u64)> =
        [(502, hc::S502), (503, hc::S503), (504, hc::S504)].into_iter().map(|(s, i)| (s, t.window.get(i))).filter(|(_, n)| *n > 0).collect();
    match parts.as_slice() {
        [(s, _)] => s.to_string(),
        many => many.iter().map(|(s, n)| format!("{s} ({n})")).collect::<Vec<_>>().join(", "),
    }
}

/// " (e.g. GET /api/x -> 502 in 3.1 ms)": the slowest matching request of the window.
fn example(t: &TargetView, want: impl Fn(Option<u16>) -> bool) -> String {
    match t.slowest.iter().find(|s| want(s.status)) {
        Some(s) => format!(
            " (e.g. {} {} -> {} after {})",
            s.method,
            s.path,
            s.status.map_or("no response".to_owned(), |c| c.to_string()),
            ms(s.latency_us)
        ),
        None => String::new(),
    }
}

fn process(t: &TargetView) -> String {
    t.process.as_ref().map(|p| format!("; process {p}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        events::{Event, HttpChunk, Mono, Tick},
        layers::{
            Aggregator,
            http::{HttpConfig, HttpLayer},
        },
    };

    /// `n` requests from one client to 10.0.0.5:80 (Host api), answered with `status(i)` after
    /// `latency_ms(i)`; then one reading at 1 s.
    fn view(n: u32, status: impl Fn(u32) -> Option<u16>, latency_ms: impl Fn(u32) -> u64) -> HttpView {
        let mut l = HttpLayer::new(HttpConfig {
            window: Duration::from_secs(10),
            timeout: Duration::from_millis(900),
            max_targets: 10,
            max_connections: 1000,
            top: 10,
        });
        let chunk = |at_ms: u64, src: &str, dst: &str, bytes: Vec<u8>| HttpChunk::at_tc(at_ms, src, dst, &bytes, false);
        for i in 0..n {
            let client = format!("10.0.0.10:{}", 40000 + i);
            let req = format!("GET /r/{i} HTTP/1.1\r\nHost: api\r\n\r\n").into_bytes();
            l.on_event(&Event::Http(chunk(0, &client, "10.0.0.5:80", req)));
            if let Some(s) = status(i) {
                let resp = format!("HTTP/1.1 {s} X\r\n").into_bytes();
                l.on_event(&Event::Http(chunk(latency_ms(i), "10.0.0.5:80", &client, resp)));
            }
        }
        l.on_tick(&Tick {
            at: Mono(1_000_000_000),
            wall: std::time::SystemTime::UNIX_EPOCH,
            counters: Default::default(),
            lost: vec![],
            disabled: vec![],
            notes: vec![],
        });
        l.view()
    }

    fn rules(v: &HttpView, cfg: &Config) -> Vec<&'static str> {
        v.evaluate(10.0, cfg).hits.iter().map(|h| h.rule).collect()
    }

    #[test]
    fn healthy_traffic_fires_nothing_and_is_a_signal() {
        let v = view(40, |_| Some(200), |i| 5 + u64::from(i % 7));
        let e = v.evaluate(10.0, &Config::default());
        assert!(e.hits.is_empty() && e.had_signal);
        // 404s are answers, not failures.
        assert!(rules(&view(40, |_| Some(404), |_| 5), &Config::default()).is_empty());
    }

    #[test]
    fn gateway_errors_a_share_of_5xx_and_missing_responses_each_fire() {
        let cfg = Config::default();
        assert_eq!(rules(&view(40, |i| Some(if i < 3 { 502 } else { 200 }), |_| 5), &cfg), ["l7.gateway_errors", "l7.error_share"]);
        assert_eq!(rules(&view(100, |i| Some(if i < 3 { 504 } else { 200 }), |_| 5), &cfg), ["l7.gateway_errors"]);
        assert!(rules(&view(40, |i| Some(if i < 2 { 502 } else { 200 }), |_| 5), &cfg).is_empty(), "under the minimum");
        assert_eq!(rules(&view(40, |i| Some(if i < 4 { 500 } else { 200 }), |_| 5), &cfg), ["l7.error_share"]);
        assert!(rules(&view(100, |i| Some(if i < 4 { 500 } else { 200 }), |_| 5), &cfg).is_empty(), "4 % is under 5 %");
        let v = view(10, |i| if i < 3 { None } else { Some(200) }, |_| 5);
        assert_eq!(rules(&v, &cfg), ["l7.no_response"]);
        let e = v.evaluate(10.0, &cfg);
        assert!(e.hits[0].evidence.as_deref().unwrap().contains("3/10 requests to 10.0.0.5:80 (Host api) got no response"), "{:?}", e.hits);
    }

    #[test]
    fn response_time_over_the_budget_fires_with_its_figures() {
        let mut cfg = Config::default();
        cfg.l7.timeout_budget_ms = 300.0;
        let v = view(20, |_| Some(200), |i| if i < 5 { 50 } else { 800 });
        assert_eq!(rules(&v, &cfg), ["l7.over_budget"]);
        let line = v.evaluate(10.0, &cfg).hits[0].evidence.clone().unwrap();
        assert!(line.contains("response p95 from 10.0.0.5:80 (Host api) is 800 ms") && line.contains("over the 300 ms budget"), "{line}");
        // Under the default 5 s budget it is not a problem (and the window is its own baseline).
        assert!(rules(&v, &Config::default()).is_empty());
    }
}
