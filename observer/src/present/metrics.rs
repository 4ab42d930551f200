//! `--prometheus ADDR`: an OpenMetrics endpoint (prometheus-client) for a fleet's Prometheus.
//!
//! Per destination, failures and latency histograms; per layer, the verdict; per cause, lost
//! events. Label cardinality is bounded: the first `--prometheus-top` destinations seen keep
//! a series of their own, and every later one counts under `dest="other"` (a set chosen anew
//! each scrape would make counters jump between series).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::{
    layers::{IntervalSamples, counts::Growth},
    present::report::Report,
    verdict::{Layer, State},
};

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Buckets (seconds) per latency series, fitted to what each measures.
fn buckets(series: &str) -> Vec<f64> {
    match series {
        // A connect on a LAN is 0.1 ms; across a continent 100 ms; SYN retries 1 s and 3 s.
        "tcp_connect" => vec![0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0],
        // Lookups: cached under 1 ms, recursive tens of ms, 200-300 ms is the red flag.
        "dns_lookup" => vec![0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0],
        "tls_handshake" => vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
        // Responses against timeout budgets: 1 s, 5 s, 30 s and 60 s are common ones.
        "http_response" => vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
        // Smoothed RTT: loopback 20 µs, LAN 0.2 ms, WAN 10-200 ms.
        _ => vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5],
    }
}

fn histogram_for(series: &'static str) -> fn() -> Histogram {
    match series {
        "tcp_connect" => || Histogram::new(buckets("tcp_connect")),
        "dns_lookup" => || Histogram::new(buckets("dns_lookup")),
        "tls_handshake" => || Histogram::new(buckets("tls_handshake")),
        "http_response" => || Histogram::new(buckets("http_response")),
        _ => || Histogram::new(buckets("tcp_rtt")),
    }
}

pub struct Metrics {
    top: usize,
    /// Destinations (tags) that have a series of their own.
    admitted: BTreeSet<String>,
    latency: BTreeMap<&'static str, Histograms>,
    failures: Family<Labels, Counter>,
    verdict: Family<Labels, Gauge>,
    lost: Family<Labels, Counter>,
    lost_growth: Growth<&'static str>,
}

impl Metrics {
    /// The metrics and the registry that serves them.
    pub fn new(top: usize) -> (Metrics, Arc<Registry>) {
        let mut registry = Registry::with_prefix("observer");
        let mut latency = BTreeMap::new();
        for series in crate::present::record::hlog::SERIES {
            let family: Histograms = Family::new_with_constructor(histogram_for(series));
            registry.register(format!("{series}_seconds"), format!("{series} latency per destination, in seconds"), family.clone());
            latency.insert(series, family);
        }
        let failures = Family::<Labels, Counter>::default();
        registry.register(
            "failures",
            "Failures per destination: refused, timed-out and unreachable connects (tcp_connect), DNS errors and unanswered queries (dns_lookup), failed TLS handshakes, HTTP 5xx and no response, retransmitted segments (tcp_rtt)",
            failures.clone(),
        );
        let verdict = Family::<Labels, Gauge>::default();
        registry.register("verdict", "1 for each layer's current verdict (healthy, suspect, no-signal), 0 for the others", verdict.clone());
        let lost = Family::<Labels, Counter>::default();
        registry.register("lost_events", "Events observer could not record, by cause", lost.clone());
        let m = Metrics {
            top,
            admitted: BTreeSet::new(),
            latency,
            failures,
            verdict,
            lost,
            lost_growth: Growth::default(),
        };
        (m, Arc::new(registry))
    }

    /// The label a destination is counted under.
    fn dest(&mut self, tag: &str) -> String {
        if self.admitted.contains(tag) {
            return tag.to_owned();
        }
        if self.admitted.len() < self.top {
            self.admitted.insert(tag.to_owned());
            return tag.to_owned();
        }
        "other".to_owned()
    }

    /// One interval: its report, latency samples and what failed in it (per series and tag).
    pub fn update(&mut self, report: &Report, samples: &[IntervalSamples<'_>], failures_grown: &[(&'static str, String, u64)]) {
        for s in samples {
            let dest = self.dest(&s.tag);
            if let Some(family) = self.latency.get(s.series) {
                let h = family.get_or_create(&vec![("dest", dest)]);
                for us in s.values {
                    h.observe(*us as f64 / 1e6);
                }
            }
        }
        for (series, tag, n) in failures_grown {
            let dest = self.dest(tag);
            self.failures.get_or_create(&vec![("series", (*series).to_owned()), ("dest", dest)]).inc_by(*n);
        }
        for layer in Layer::ALL {
            let current = report.verdicts.get(layer).verdict;
            for state in [State::Healthy, State::Suspect, State::NoSignal] {
                let labels = vec![("layer", layer.key().to_owned()), ("verdict", state.word().to_owned())];
                self.verdict.get_or_create(&labels).set(i64::from(current == state));
            }
        }
        // Not the total, nor a breakdown of another cause (`recursion_misses:PROGRAM`): a sum
        // over the causes counts each loss once.
        let causes = report.lost.iter().filter(|(cause, _)| **cause != "total" && !cause.contains(':'));
        let grew: BTreeMap<&str, u64> = self.lost_growth.step(causes.clone().map(|(cause, total)| (*cause, *total))).into_iter().collect();
        // Every cause is served, at zero until it loses something.
        for (cause, _) in causes {
            self.lost.get_or_create(&vec![("cause", (*cause).to_owned())]).inc_by(grew.get(cause).copied().unwrap_or(0));
        }
    }
}

/// `--prometheus ADDR`: bind it (before the privileges go: a port under 1024 needs them) and
/// serve the registry on a task of its own; `who` says it ("observer", "observer daemon").
pub async fn start(addr: Option<SocketAddr>, top: usize, who: &str) -> anyhow::Result<Option<Metrics>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = bind(addr).await?;
    let (m, registry) = Metrics::new(top);
    tokio::spawn(serve(listener, registry));
    eprintln!("{who}: OpenMetrics on http://{addr}/metrics");
    Ok(Some(m))
}

/// Bind ADDR.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("--prometheus {addr}: cannot listen: {e}"))
}

/// Answer every request on the listener with the registry, OpenMetrics text.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { continue };
        let registry = registry.clone();
        tokio::spawn(async move {
            // The request head, up to 8 KiB; anything but GET is refused.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let response = if head.starts_with(b"GET ") {
                let mut body = String::new();
                let _ = encode(&mut body, &registry);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
            };
            let _ = sock.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_past_the_cap_count_as_other_and_the_text_is_openmetrics() {
        let (mut m, registry) = Metrics::new(2);
        let values = [1500u64, 90_000];
        let samples: Vec<IntervalSamples<'_>> = (1..=4)
            .map(|i| IntervalSamples { series: "tcp_connect", tag: format!("10.0.0.{i}:80"), values: &values })
            .collect();
        let failures = vec![("tcp_connect", "10.0.0.1:80".to_owned(), 3), ("tcp_connect", "10.0.0.9:80".to_owned(), 5)];
        let meta = crate::present::report::Meta {
            now: std::time::SystemTime::now(),
            host: "h",
            uptime_s: 1.0,
            interval_s: 1.0,
            window_s: 10.0,
            is_final: false,
            disabled: &[],
        };
        let verdicts = crate::verdict::evaluate(&[], 10.0, 0, &crate::config::Config::default());
        let report = crate::present::report::build(&meta, Default::default(), verdicts, &[("dns_ringbuf_full", 2)]);
        m.update(&report, &samples, &failures);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("observer_tcp_connect_seconds_count{dest=\"10.0.0.1:80\"} 2"), "{text}");
        assert!(text.contains("observer_tcp_connect_seconds_count{dest=\"other\"} 4"), "two destinations past the cap: {text}");
        assert!(!text.contains("10.0.0.3:80"), "{text}");
        assert!(text.contains("observer_failures_total{series=\"tcp_connect\",dest=\"10.0.0.1:80\"} 3"), "{text}");
        assert!(text.contains("observer_failures_total{series=\"tcp_connect\",dest=\"other\"} 5"), "{text}");
        // The next interval's failures are added.
        m.update(&report, &[], &[("tcp_connect", "10.0.0.1:80".to_owned(), 1)]);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("observer_failures_total{series=\"tcp_connect\",dest=\"10.0.0.1:80\"} 4"), "{text}");
        assert!(text.contains("observer_tcp_connect_seconds_bucket{le=\"0.0025\",dest=\"10.0.0.1:80\"} 1"), "buckets fitted to connects: {text}");
        assert!(text.contains("observer_verdict{layer=\"dns\",verdict=\"no-signal\"} 1"), "{text}");
        assert!(text.contains("observer_lost_events_total{cause=\"dns_ringbuf_full\"} 2"), "{text}");
    }
}
