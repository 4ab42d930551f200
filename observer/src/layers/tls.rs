//! Layer 2, TLS: the outcome of each handshake, without decryption, per (destination, SNI):
//! outcome counts, alerts, hello and completion latency, the negotiated version, and what a
//! TLS 1.2 certificate says. Flows are rebuilt from the kernel's copies of their first bytes.

pub mod cert;
pub mod handshake;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use super::{
    Aggregator, Map,
    counts::Counts,
    latency::{LatencySummary, LatencyWindow},
    window::Tally,
};
use crate::events::{Event, Mono, Tick, TlsChunk, TlsKind};
use cert::CertFacts;
use handshake::{Flow, Outcome};

observer_common::counter_set! {
    /// Per (destination, SNI), counted in userspace.
    pub mod tls_counter {
        /// Handshakes that ended, whatever the outcome.
        HANDSHAKES = "handshakes",
        COMPLETED = "completed",
        ALERT = "alert",
        ABORTED = "aborted",
        STALLED = "stalled",
        MALFORMED = "malformed",
    }
}
use tls_counter as tc;

/// Flows between ClientHello and outcome; more are counted and dropped.
const MAX_FLOWS: usize = 16_384;
/// A flow with no outcome this long after its ClientHello is dropped (counted as expired).
const FLOW_MAX_AGE: Duration = Duration::from_secs(120);
/// Connections whose process is remembered (by 4-tuple, from the connect layer's events).
const MAX_PROCESSES: usize = 4096;

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub window: Duration,
    pub stall_after: Duration,
    pub max_targets: usize,
    pub top: usize,
}

#[derive(Debug, Default)]
struct TargetState {
    counts: Tally<{ tc::COUNT }>,
    hello_latency: LatencyWindow,
    complete_latency: LatencyWindow,
    /// "unknown_ca by the client" -> since-start count.
    alerts: BTreeMap<String, u64>,
    offered: Vec<&'static str>,
    alpn_offered: Vec<String>,
    version: Option<&'static str>,
    cipher: Option<String>,
    alpn: Option<String>,
    cert: Option<CertFacts>,
    /// A TLS 1.3 handshake was seen: its certificate is encrypted.
    cert_hidden: bool,
    last_failure: Option<FailureView>,
    last_seen: Mono,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureView {
    pub outcome: &'static str,
    /// What happened, for the evidence line: "alert unknown_ca sent by the client".
    pub reason: String,
    pub client: SocketAddr,
    pub process: Option<String>,
}

#[derive(Debug)]
pub struct TlsLayer {
    cfg: TlsConfig,
    flows: Map<(SocketAddr, SocketAddr), Flow>,
    targets: Map<(SocketAddr, String), TargetState>,
    /// (local port, destination) of connects this host made -> "comm[pid]": the connect
    /// layer's events, joined to a TLS flow by its 4-tuple (the local address is the flow's
    /// client).
    processes: Map<(u16, SocketAddr), String>,
    wall: Option<SystemTime>,
    flows_dropped: u64,
    flows_expired: u64,
}

/// The TLS layer in one interval: the report's `tls` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsView {
    /// The most troubled first.
    pub targets: Vec<TargetView>,
    pub targets_omitted: usize,
    /// Handshakes with no outcome yet.
    pub in_progress: usize,
    /// Handshakes dropped with no outcome after two minutes (no close seen).
    pub expired: u64,
    #[serde(skip)]
    pub top: usize,
}

impl TlsView {
    pub fn limit(&mut self) {
        self.targets_omitted += self.targets.len().saturating_sub(self.top);
        self.targets.truncate(self.top);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetView {
    pub dest: SocketAddr,
    /// Empty when the ClientHello had none.
    pub sni: String,
    pub window: Period,
    pub total: Period,
    pub alerts: BTreeMap<String, u64>,
    pub offered_versions: Vec<&'static str>,
    pub offered_alpn: Vec<String>,
    pub version: Option<&'static str>,
    pub cipher: Option<String>,
    pub alpn: Option<String>,
    pub certificate: Option<CertView>,
    /// What cannot be known about the certificate, and why.
    pub certificate_note: Option<&'static str>,
    pub last_failure: Option<FailureView>,
}

impl TargetView {
    /// "10.1.2.3:443 (SNI api.example.com)".
    pub fn label(&self) -> String {
        if self.sni.is_empty() { format!("{} (no SNI)", self.dest) } else { format!("{} (SNI {})", self.dest, self.sni) }
    }

    /// The row key: unique per (destination, SNI).
    pub fn key(&self) -> String {
        format!("{} {}", self.dest, self.sni)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    #[serde(flatten)]
    pub counts: Counts<{ tc::COUNT }>,
    /// ClientHello to ServerHello.
    pub hello_latency_us: LatencySummary,
    /// ClientHello to application data in both directions.
    pub complete_latency_us: LatencySummary,
}

impl Period {
    pub fn get(&self, index: usize) -> u64 {
        self.counts.get(index)
    }

    /// Alerts, aborts and stalls: handshakes that did not complete.
    pub fn failures(&self) -> u64 {
        self.get(tc::ALERT) + self.get(tc::ABORTED) + self.get(tc::STALLED)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertView {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    pub names: Vec<String>,
    pub self_signed: bool,
    pub expired: bool,
    pub not_yet_valid: bool,
    /// The names cover the SNI (true when there is no SNI to check).
    pub covers_sni: bool,
    pub chain_len: usize,
    pub error: Option<String>,
}

impl CertView {
    /// The one fact an evidence line should carry: a problem if there is one.
    pub fn fact(&self, sni: &str) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        let mut problems = Vec::new();
        if self.expired {
            problems.push(format!("certificate expired {}", self.not_after));
        }
        if self.not_yet_valid {
            problems.push(format!("certificate not valid before {}", self.not_before));
        }
        if !self.covers_sni {
            problems.push(format!("certificate names {} do not cover {sni}", self.names.join(", ")));
        }
        if self.self_signed {
            problems.push("self-signed certificate".to_owned());
        }
        if problems.is_empty() {
            format!("certificate issued by {}, valid until {}", self.issuer, self.not_after)
        } else {
            problems.join("; ")
        }
    }
}

fn side(from_client: bool) -> &'static str {
    if from_client { "client" } else { "server" }
}

/// What happened to a failed handshake, in words.
fn reason(f: &Flow, outcome: Outcome, stall_after: Duration) -> String {
    match outcome {
        Outcome::Alert => match &f.alert {
            Some(a) => format!("alert {} sent by the {}", a.description, side(a.from_client)),
            None => "alert".to_owned(),
        },
        Outcome::Aborted => {
            let c = f.close.expect("aborted flows have a close");
            let how = if c.rst { "reset" } else { "closed" };
            let when = if f.server_hello.is_some() { "after ServerHello, before application data" } else { "before ServerHello" };
            format!("{how} by the {} {when}", side(c.from_client))
        }
        Outcome::Stalled => format!("no ServerHello within {} s", stall_after.as_secs_f64()),
        Outcome::Malformed => f.malformed.clone().or_else(|| f.truncated()).unwrap_or_default(),
        Outcome::Completed => "completed".to_owned(),
    }
}

impl TlsLayer {
    pub fn new(cfg: TlsConfig) -> TlsLayer {
        TlsLayer {
            cfg,
            flows: Map::default(),
            targets: Map::default(),
            processes: Map::default(),
            wall: None,
            flows_dropped: 0,
            flows_expired: 0,
        }
    }

    pub fn on_chunk(&mut self, c: &TlsChunk) {
        let key = (c.client, c.server);
        if !self.flows.contains_key(&key) {
            // A flow starts at the client's first record, or with bytes that are not TLS.
            let starts = (c.kind == TlsKind::Data && c.from_client && c.offset == 0) || c.kind == TlsKind::NotTls;
            if !starts {
                return;
            }
            if self.flows.len() >= MAX_FLOWS {
                self.flows_dropped += 1;
                return;
            }
            self.flows.insert(key, Flow::new(c.client, c.server, c.at));
        }
        let stall_after = self.cfg.stall_after;
        let flow = self.flows.get_mut(&key).expect("inserted above");
        flow.on_chunk(c);
        if let Some(outcome) = flow.outcome(c.at, stall_after) {
            let flow = self.flows.remove(&key).expect("present");
            self.finish(&flow, outcome, c.at);
        }
    }

    fn finish(&mut self, f: &Flow, outcome: Outcome, now: Mono) {
        let process = self.processes.remove(&(f.client.port(), f.server));
        let stall_after = self.cfg.stall_after;
        let key = (f.server, f.sni().to_owned());
        if !self.targets.contains_key(&key) && self.targets.len() >= self.cfg.max_targets {
            self.evict_idlest();
        }
        let t = self.targets.entry(key).or_default();
        t.last_seen = now;
        t.counts.bump(tc::HANDSHAKES);
        t.counts.bump(match outcome {
            Outcome::Completed => tc::COMPLETED,
            Outcome::Alert => tc::ALERT,
            Outcome::Aborted => tc::ABORTED,
            Outcome::Stalled => tc::STALLED,
            Outcome::Malformed => tc::MALFORMED,
        });
        if let Some(d) = f.hello_latency() {
            t.hello_latency.record(d);
        }
        if outcome == Outcome::Completed
            && let Some(d) = f.complete_latency()
        {
            t.complete_latency.record(d);
        }
        if let Some(h) = &f.hello {
            t.offered = h.versions.clone();
            t.alpn_offered = h.alpn.clone();
        }
        if let Some(s) = &f.server_hello {
            t.version = Some(s.version);
            t.cipher = Some(s.cipher.clone());
            t.alpn = s.alpn.clone();
        }
        if f.is_tls13() {
            t.cert_hidden = true;
        }
        if let Some(c) = &f.cert {
            t.cert = Some(c.clone());
        }
        if let Some(a) = &f.alert {
            *t.alerts.entry(format!("{} by the {}", a.description, side(a.from_client))).or_default() += 1;
        }
        if outcome != Outcome::Completed {
            t.last_failure =
                Some(FailureView { outcome: outcome.name(), reason: reason(f, outcome, stall_after), client: f.client, process });
        }
    }

    fn evict_idlest(&mut self) {
        super::evict_idlest(&mut self.targets, |t| t.last_seen);
    }

    fn close_interval(&mut self, now: Mono) {
        let stall_after = self.cfg.stall_after;
        let done: Vec<_> = self
            .flows
            .iter()
            .filter_map(|(k, f)| match f.outcome(now, stall_after) {
                Some(o) => Some((*k, Some(o))),
                None if now.since(f.started) >= FLOW_MAX_AGE => Some((*k, None)),
                None => None,
            })
            .collect();
        for (k, outcome) in done {
            let f = self.flows.remove(&k).expect("present");
            match outcome {
                Some(o) => self.finish(&f, o, now),
                None => self.flows_expired += 1,
            }
        }
        let window = self.cfg.window;
        for t in self.targets.values_mut() {
            t.counts.close(now, window);
            t.hello_latency.close(now, window);
            t.complete_latency.close(now, window);
        }
    }

    fn now_unix(&self) -> i64 {
        self.wall.and_then(|w| w.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs() as i64)
    }

    fn target_view(&self, (dest, sni): &(SocketAddr, String), t: &TargetState) -> TargetView {
        let now = self.now_unix();
        let certificate = t.cert.as_ref().map(|c| CertView {
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            not_before: cert::date(c.not_before),
            not_after: cert::date(c.not_after),
            names: c.names.clone(),
            self_signed: c.self_signed,
            expired: c.error.is_none() && now > c.not_after,
            not_yet_valid: c.error.is_none() && now > 0 && now < c.not_before,
            covers_sni: c.error.is_some() || sni.is_empty() || cert::covers(&c.names, sni),
            chain_len: c.chain_len,
            error: c.error.clone(),
        });
        let certificate_note = (certificate.is_none() && t.cert_hidden)
            .then_some("TLS 1.3 encrypts the certificate: observer cannot see it and does not guess");
        let period = |counts: [u64; tc::COUNT], hello: LatencySummary, complete: LatencySummary| Period {
            counts: Counts { values: counts, names: &tc::NAMES },
            hello_latency_us: hello,
            complete_latency_us: complete,
        };
        TargetView {
            dest: *dest,
            sni: sni.clone(),
            window: period(t.counts.window(), t.hello_latency.window(), t.complete_latency.window()),
            total: period(t.counts.total(), t.hello_latency.total(), t.complete_latency.total()),
            alerts: t.alerts.clone(),
            offered_versions: t.offered.clone(),
            offered_alpn: t.alpn_offered.clone(),
            version: t.version,
            cipher: t.cipher.clone(),
            alpn: t.alpn.clone(),
            certificate,
            certificate_note,
            last_failure: t.last_failure.clone(),
        }
    }
}

impl Aggregator for TlsLayer {
    fn failure_totals(&self) -> Vec<(&'static str, String, u64)> {
        self.targets
            .iter()
            .map(|((d, sni), t)| {
                let c = t.counts.total();
                ("tls_handshake", format!("{d}|{sni}"), c[tc::ALERT] + c[tc::ABORTED] + c[tc::STALLED])
            })
            .collect()
    }

    fn interval_samples(&self) -> Vec<super::IntervalSamples<'_>> {
        self.targets
            .iter()
            .filter_map(|((d, sni), t)| super::samples_of("tls_handshake", || format!("{d}|{sni}"), &t.complete_latency))
            .collect()
    }

    type View = TlsView;

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::Tls(c) => self.on_chunk(c),
            Event::Connect(r) => {
                if r.local_port == 0 || r.comm.is_empty() {
                    return;
                }
                if self.processes.len() >= MAX_PROCESSES {
                    // Connections that never spoke TLS: forget them all rather than grow.
                    self.processes.clear();
                }
                self.processes.insert((r.local_port, r.dest), r.process());
            }
            Event::Dns(_) | Event::Http(_) | Event::Icmp(_) | Event::Hops(_) | Event::TcpSample(_) | Event::ConnectFailed(_) => {}
        }
    }

    fn on_tick(&mut self, tick: &Tick) {
        self.wall = Some(tick.wall);
        self.close_interval(tick.at);
    }

    fn lost(&self) -> Vec<(&'static str, u64)> {
        vec![("tls_flows_dropped", self.flows_dropped)]
    }

    fn view(&self) -> TlsView {
        let mut targets: Vec<TargetView> = self.targets.iter().map(|(k, t)| self.target_view(k, t)).collect();
        targets.sort_by(|a, b| {
            (b.window.failures(), b.window.get(tc::HANDSHAKES), a.key()).cmp(&(a.window.failures(), a.window.get(tc::HANDSHAKES), b.key()))
        });
        TlsView { targets, targets_omitted: 0, in_progress: self.flows.len(), expired: self.flows_expired, top: self.cfg.top }
    }
}

#[cfg(test)]
mod tests;
