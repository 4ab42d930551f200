//! Layer 4, HTTP/1.x: status and response time per (destination, Host) for requests this host
//! sends, and per (local address and port, Host) for requests it serves. Requests and
//! responses are matched in order on each connection (keep-alive and pipelining); a request
//! with no response within the timeout is `no_response`. The same figures come from packets
//! in clear text and from OpenSSL's plaintext. HTTP/2 is detected, not parsed.

pub mod parse;

use std::{
    collections::VecDeque,
    net::SocketAddr,
    time::Duration,
};

use serde::Serialize;

use super::{
    Aggregator, Map,
    connect::outcome_name,
    counts::Counts,
    latency::{LatencySummary, LatencyWindow},
    window::Tally,
};
use crate::events::{Event, HttpChunk, HttpKind, Mono, Outcome, Tick, TlsKind};
use parse::Message;

observer_common::counter_set! {
    /// Per (role, server, Host), counted in userspace.
    pub mod http_counter {
        REQUESTS = "requests",
        RESPONSES = "responses",
        S1XX = "1xx",
        S2XX = "2xx",
        S3XX = "3xx",
        S4XX = "4xx",
        S5XX = "5xx",
        S500 = "500",
        S502 = "502",
        S503 = "503",
        S504 = "504",
        /// No response within the timeout, and the client sent nothing after it on that
        /// connection: it was waiting.
        NO_RESPONSE = "no_response",
        /// No response seen within the timeout, but the client sent another request after it
        /// on the connection: a client that does not pipeline had its response, and observer
        /// missed it (a response that did not start a segment, or a connection that was
        /// already open mid-response when observer started). Not a failure.
        RESPONSE_NOT_SEEN = "response_not_seen",
        /// A request whose line or header block could not be read (cut before Host, garbage).
        UNPARSED = "unparsed",
        /// Connections that started with the HTTP/2 preface: counted, not parsed.
        H2 = "h2_not_parsed",
    }
}
use http_counter as hc;

/// Requests waiting for a response on one connection, at most; more are counted unparsed.
const MAX_PIPELINE: usize = 64;
/// Requests kept per target for the "slowest recent" list.
const RECENT_KEPT: usize = 64;
const SLOWEST_SHOWN: usize = 5;
/// A connection with nothing pending and no message for this long is forgotten.
const IDLE_CONN: Duration = Duration::from_secs(120);
/// Connect failures kept for the upstream evidence.
const MAX_CONNECT_FAILURES: usize = 1024;
/// Connections whose process is remembered (by 4-tuple, from the connect layer's events).
const MAX_PROCESSES: usize = 4096;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub window: Duration,
    /// A request with no response after this long counts as `no_response`.
    pub timeout: Duration,
    pub max_targets: usize,
    pub max_connections: usize,
    pub top: usize,
}

/// Which side of the request this host is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// This host (or a container on it) sent the request: figures per destination.
    Client,
    /// This host received it: figures per local address and port.
    Server,
}

impl Role {
    pub fn word(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

type TargetKey = (Role, SocketAddr, String);

/// Who saw a connection's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    Packets,
    ClientProcess,
    ServerProcess,
}

#[derive(Debug)]
struct Pending {
    at: Mono,
    target: TargetKey,
    method: String,
    path: String,
    /// A request whose header block goes on in the next segment.
    partial: Option<Vec<u8>>,
    /// The client sent another request after this one on the connection.
    followed: bool,
}

#[derive(Debug, Default)]
struct Conn {
    pending: VecDeque<Pending>,
    /// Sequence numbers of the last messages seen each way (TC): a second sighting of a
    /// packet (another hook, a retransmit) is not a new message.
    seen: [[u32; 4]; 2],
    /// HTTP/2 or an upgrade (101): nothing more to parse.
    opaque: bool,
    /// Requests and responses seen on it.
    requests: u64,
    responses: u64,
    /// A request on it timed out although the client had sent another after it: observer
    /// misses this connection's responses, so its timeouts are not failures.
    blind: bool,
    last: Mono,
    process: Option<String>,
}

impl Conn {
    fn is_repeat(&mut self, from_client: bool, seq: u32) -> bool {
        let seen = &mut self.seen[usize::from(!from_client)];
        if seen.contains(&seq) {
            return true;
        }
        seen.rotate_right(1);
        seen[0] = seq;
        false
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slow {
    pub method: String,
    pub path: String,
    /// None: no response within the timeout.
    pub status: Option<u16>,
    pub latency_us: u64,
    /// The reading that closed the interval it finished in (None until then): the window
    /// is made of readings, as the counts are.
    #[serde(skip)]
    pub closed: Option<Mono>,
}

#[derive(Debug, Default)]
struct TargetState {
    counts: Tally<{ hc::COUNT }>,
    latency: LatencyWindow,
    recent: VecDeque<Slow>,
    process: Option<String>,
    last_seen: Mono,
}

#[derive(Debug)]
pub struct HttpLayer {
    cfg: HttpConfig,
    conns: Map<(SocketAddr, SocketAddr, Side), Conn>,
    targets: Map<TargetKey, TargetState>,
    /// (local port, destination) of connects this host made -> "comm[pid]".
    processes: Map<(u16, SocketAddr), String>,
    /// Recent failed connects from this host: the upstreams behind a proxy's 5xx, with the
    /// reading that closed their interval.
    connect_failures: VecDeque<(Option<Mono>, SocketAddr, Outcome)>,
    unmatched_responses: u64,
    conns_dropped: u64,
    now: Mono,
}

/// The HTTP layer in one interval: the report's `http` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpView {
    /// The most troubled first.
    pub targets: Vec<TargetView>,
    pub targets_omitted: usize,
    /// Requests waiting for their response now.
    pub in_flight: usize,
    /// Responses with no request seen before them (the request came before observer).
    pub unmatched_responses: u64,
    /// Connects from this host that failed in the window, per destination: the upstreams a
    /// proxy's 502s and 504s may come from.
    pub connect_failures: Vec<ConnectFailures>,
    #[serde(skip)]
    pub window_s: f64,
    #[serde(skip)]
    pub top: usize,
}

impl HttpView {
    pub fn limit(&mut self) {
        self.targets_omitted += self.targets.len().saturating_sub(self.top);
        self.targets.truncate(self.top);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectFailures {
    pub dest: SocketAddr,
    /// "refused" -> count, in the window.
    pub outcomes: Vec<(&'static str, u64)>,
}

impl ConnectFailures {
    /// "10.0.0.9:9000 refused" or "10.0.0.9:9000 refused 3, timed_out 1".
    pub fn describe(&self) -> String {
        match self.outcomes.as_slice() {
            [(what, _)] => format!("{} {what}", self.dest),
            many => format!("{} {}", self.dest, many.iter().map(|(w, n)| format!("{w} {n}")).collect::<Vec<_>>().join(", ")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetView {
    pub role: Role,
    /// The destination (client role), or the local address and port (server role).
    pub server: SocketAddr,
    /// Empty when the requests had none, or could not be read.
    pub host: String,
    pub window: Period,
    pub total: Period,
    /// The slowest requests of the window.
    pub slowest: Vec<Slow>,
    pub process: Option<String>,
}

impl TargetView {
    /// "10.0.0.5:8080 (Host api.internal)".
    pub fn label(&self) -> String {
        if self.host.is_empty() { format!("{} (no Host)", self.server) } else { format!("{} (Host {})", self.server, self.host) }
    }

    /// "from 10.0.0.5:8080 (Host api)" for a destination, "served on …" for a local port.
    pub fn responses_label(&self) -> String {
        match self.role {
            Role::Client => format!("from {}", self.label()),
            Role::Server => format!("served on {}", self.label()),
        }
    }

    pub fn key(&self) -> String {
        format!("{} {} {}", self.role.word(), self.server, self.host)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    #[serde(flatten)]
    pub counts: Counts<{ hc::COUNT }>,
    /// Request's first byte to the response's first byte.
    pub latency_us: LatencySummary,
}

impl Period {
    pub fn get(&self, index: usize) -> u64 {
        self.counts.get(index)
    }

    /// 502, 503 and 504: a gateway's own answers about its upstream.
    pub fn gateway_errors(&self) -> u64 {
        self.get(hc::S502) + self.get(hc::S503) + self.get(hc::S504)
    }

    /// 5xx and no response: what the troubled-first order ranks by.
    pub fn failures(&self) -> u64 {
        self.get(hc::S5XX) + self.get(hc::NO_RESPONSE)
    }
}

fn class_index(status: u16) -> usize {
    match status {
        100..200 => hc::S1XX,
        200..300 => hc::S2XX,
        300..400 => hc::S3XX,
        400..500 => hc::S4XX,
        _ => hc::S5XX,
    }
}

impl HttpLayer {
    pub fn new(cfg: HttpConfig) -> HttpLayer {
        HttpLayer {
            cfg,
            conns: Map::default(),
            targets: Map::default(),
            processes: Map::default(),
            connect_failures: VecDeque::new(),
            unmatched_responses: 0,
            conns_dropped: 0,
            now: Mono::default(),
        }
    }

    pub fn on_chunk(&mut self, c: &HttpChunk) {
        let (Some(src), Some(dst)) = (c.src, c.dst) else { return };
        let msg = match c.kind {
            HttpKind::Continues => None,
            _ => Some(parse::parse(&c.bytes, c.bytes.len() < c.payload_len as usize || c.kind != HttpKind::Start)),
        };
        let is_response = matches!(msg, Some(Message::Response { .. }));
        // The connection, as (client, server), and who saw it: packets, or the plaintext of
        // the client's or the server's process (both may be on this host, and each sees every
        // message once).
        let side = match (c.kind, is_response) {
            (HttpKind::SslWrite, false) | (HttpKind::SslRead, true) => Side::ClientProcess,
            (HttpKind::SslRead, false) | (HttpKind::SslWrite, true) => Side::ServerProcess,
            _ => Side::Packets,
        };
        let key = if is_response { (dst, src, side) } else { (src, dst, side) };
        // A request's role. Server: this host received it (a packet to a local address, or a
        // process's read); client otherwise, which includes traffic it forwards. (A response
        // goes to its request's target and needs none.)
        let role = match c.kind {
            HttpKind::SslRead => Role::Server,
            HttpKind::SslWrite => Role::Client,
            _ if c.dst_is_local => Role::Server,
            _ => Role::Client,
        };
        if !self.conns.contains_key(&key) {
            if is_response || msg.is_none() {
                // A response on a connection whose request came before observer started.
                if is_response {
                    self.unmatched_responses += 1;
                }
                return;
            }
            if self.conns.len() >= self.cfg.max_connections {
                self.conns_dropped += 1;
                return;
            }
            // The process that made the call (OpenSSL), or the one that connected (client
            // role: the connect layer's events).
            let process = c.process.clone().or_else(|| (role == Role::Client).then(|| self.processes.get(&(src.port(), dst)).cloned()).flatten());
            self.conns.insert(key, Conn { process, ..Conn::default() });
        }
        let conn = self.conns.get_mut(&key).expect("inserted above");
        if matches!(c.kind, HttpKind::Start | HttpKind::Continues) && conn.is_repeat(!is_response, c.seq) {
            return;
        }
        conn.last = c.at;
        if conn.opaque {
            return;
        }
        let server = key.1;
        let mut done = Vec::new();
        match msg {
            None => {
                // The rest of a request's header block.
                if let Some(p) = conn.pending.back_mut()
                    && let Some(mut bytes) = p.partial.take()
                {
                    bytes.extend_from_slice(&c.bytes);
                    settle(p, parse::parse(&bytes, true), &mut done);
                }
            }
            Some(Message::H2Preface) => {
                conn.opaque = true;
                done.push(Done::H2((role, server, String::new())));
            }
            Some(Message::Response { status }) => {
                settle_partial(conn, &mut done);
                if (100..200).contains(&status) && status != 101 {
                    // Informational: the final response is still to come.
                } else if let Some(p) = conn.pending.pop_front() {
                    conn.responses += 1;
                    if status == 101 {
                        conn.opaque = true;
                    }
                    done.push(Done::Response(p, status, c.at));
                } else {
                    self.unmatched_responses += 1;
                }
            }
            Some(m) => {
                settle_partial(conn, &mut done);
                let target = (role, server, String::new());
                if conn.pending.len() >= MAX_PIPELINE {
                    done.push(Done::Unparsed(target));
                } else {
                    for earlier in conn.pending.iter_mut() {
                        earlier.followed = true;
                    }
                    conn.requests += 1;
                    let mut p = Pending { at: c.at, target, method: String::new(), path: String::new(), partial: None, followed: false };
                    match m {
                        Message::Incomplete => p.partial = Some(c.bytes.clone()),
                        m => settle(&mut p, m, &mut done),
                    }
                    conn.pending.push_back(p);
                }
            }
        }
        let process = conn.process.clone();
        for d in done {
            self.finish(d, process.as_deref());
        }
    }

    fn target(&mut self, key: TargetKey, process: Option<&str>) -> &mut TargetState {
        if !self.targets.contains_key(&key) && self.targets.len() >= self.cfg.max_targets {
            self.evict_idlest();
        }
        let now = self.now;
        let t = self.targets.entry(key).or_default();
        t.last_seen = now;
        if let Some(p) = process {
            t.process = Some(p.to_owned());
        }
        t
    }

    fn finish(&mut self, d: Done, process: Option<&str>) {
        match d {
            Done::Request(key) => self.target(key, process).counts.bump(hc::REQUESTS),
            Done::Unparsed(key) => {
                let t = self.target(key, process);
                t.counts.bump(hc::REQUESTS);
                t.counts.bump(hc::UNPARSED);
            }
            Done::H2(key) => self.target(key, process).counts.bump(hc::H2),
            Done::Response(p, status, at) => {
                let latency = at.since(p.at);
                let t = self.target(p.target, process);
                t.counts.bump(hc::RESPONSES);
                t.counts.bump(class_index(status));
                match status {
                    500 => t.counts.bump(hc::S500),
                    502 => t.counts.bump(hc::S502),
                    503 => t.counts.bump(hc::S503),
                    504 => t.counts.bump(hc::S504),
                    _ => {}
                }
                t.latency.record(latency);
                remember(t, Slow { method: p.method, path: p.path, status: Some(status), latency_us: micros(latency), closed: None });
            }
            Done::NotSeen(p) => self.target(p.target, process).counts.bump(hc::RESPONSE_NOT_SEEN),
            Done::NoResponse(p, waited) => {
                let t = self.target(p.target, process);
                t.counts.bump(hc::NO_RESPONSE);
                remember(t, Slow { method: p.method, path: p.path, status: None, latency_us: micros(waited), closed: None });
            }
        }
    }

    fn evict_idlest(&mut self) {
        super::evict_idlest(&mut self.targets, |t| t.last_seen);
    }

    fn close_interval(&mut self, now: Mono) {
        let timeout = self.cfg.timeout;
        let mut done = Vec::new();
        self.conns.retain(|_, conn| {
            while conn.pending.front().is_some_and(|p| now.since(p.at) >= timeout) {
                let mut p = conn.pending.pop_front().expect("checked");
                if let Some(bytes) = p.partial.take() {
                    // Its header block never finished: it is counted as what it was.
                    let mut sub = Vec::new();
                    settle(&mut p, parse::parse(&bytes, true), &mut sub);
                    done.extend(sub.into_iter().map(|d| (d, conn.process.clone())));
                }
                // A response observer cannot have seen: the client went on after it, or this
                // connection already showed that its responses are invisible (several requests,
                // no response ever).
                conn.blind |= p.followed || (conn.responses == 0 && conn.requests > 1);
                let d = if conn.blind { Done::NotSeen(p) } else { Done::NoResponse(p, timeout) };
                done.push((d, conn.process.clone()));
            }
            !conn.pending.is_empty() || now.since(conn.last) < IDLE_CONN
        });
        for (d, process) in done {
            self.finish(d, process.as_deref());
        }
        let window = self.cfg.window;
        for t in self.targets.values_mut() {
            t.counts.close(now, window);
            t.latency.close(now, window);
            for s in t.recent.iter_mut().rev().take_while(|s| s.closed.is_none()) {
                s.closed = Some(now);
            }
        }
        for f in self.connect_failures.iter_mut().rev().take_while(|f| f.0.is_none()) {
            f.0 = Some(now);
        }
        while self.connect_failures.front().is_some_and(|(at, _, _)| at.is_some_and(|at| now.since(at) >= window)) {
            self.connect_failures.pop_front();
        }
    }

    fn target_view(&self, (role, server, host): &TargetKey, t: &TargetState) -> TargetView {
        let period = |values, latency_us| Period { counts: Counts { values, names: &hc::NAMES }, latency_us };
        let window = self.cfg.window;
        let mut slowest: Vec<Slow> =
            t.recent.iter().filter(|s| s.closed.is_none_or(|at| self.now.since(at) < window)).cloned().collect();
        slowest.sort_by_key(|s| std::cmp::Reverse(s.latency_us));
        slowest.truncate(SLOWEST_SHOWN);
        TargetView {
            role: *role,
            server: *server,
            host: host.clone(),
            window: period(t.counts.window(), t.latency.window()),
            total: period(t.counts.total(), t.latency.total()),
            slowest,
            process: t.process.clone(),
        }
    }

    fn connect_failure_views(&self) -> Vec<ConnectFailures> {
        let mut per: std::collections::BTreeMap<SocketAddr, std::collections::BTreeMap<&'static str, u64>> = Default::default();
        for (_, dest, outcome) in &self.connect_failures {
            *per.entry(*dest).or_default().entry(outcome_name(*outcome)).or_default() += 1;
        }
        per.into_iter().map(|(dest, o)| ConnectFailures { dest, outcomes: o.into_iter().collect() }).collect()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn remember(t: &mut TargetState, s: Slow) {
    if t.recent.len() >= RECENT_KEPT {
        t.recent.pop_front();
    }
    t.recent.push_back(s);
}

/// What a message did to a target, applied once the connection is no longer borrowed.
#[derive(Debug)]
enum Done {
    Request(TargetKey),
    Unparsed(TargetKey),
    H2(TargetKey),
    Response(Pending, u16, Mono),
    NoResponse(Pending, Duration),
    NotSeen(Pending),
}

/// A request's parse result: it becomes a request of its Host, or an unparsed one.
fn settle(p: &mut Pending, m: Message, done: &mut Vec<Done>) {
    match m {
        Message::Request(r) => {
            p.target.2 = r.host;
            p.method = r.method;
            p.path = r.path;
            done.push(Done::Request(p.target.clone()));
        }
        _ => {
            p.method = "?".to_owned();
            done.push(Done::Unparsed(p.target.clone()));
        }
    }
}

/// A request still waiting for the rest of its header block when the next message comes:
/// the rest is not coming.
fn settle_partial(conn: &mut Conn, done: &mut Vec<Done>) {
    if let Some(p) = conn.pending.back_mut()
        && let Some(bytes) = p.partial.take()
    {
        settle(p, parse::parse(&bytes, true), done);
    }
}

impl Aggregator for HttpLayer {
    fn failure_totals(&self) -> Vec<(&'static str, String, u64)> {
        self.targets
            .iter()
            .map(|((role, addr, host), t)| {
                let c = t.counts.total();
                ("http_response", format!("{}|{addr}|{host}", role.word()), c[hc::S5XX] + c[hc::NO_RESPONSE])
            })
            .collect()
    }

    fn interval_samples(&self) -> Vec<super::IntervalSamples<'_>> {
        self.targets
            .iter()
            .filter_map(|((role, addr, host), t)| {
                super::samples_of("http_response", || format!("{}|{addr}|{host}", role.word()), &t.latency)
            })
            .collect()
    }

    type View = HttpView;

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::Http(c) => {
                self.now = self.now.max(c.at);
                self.on_chunk(c);
            }
            Event::Connect(r) => {
                match r.outcome {
                    Outcome::Established => {
                        if r.local_port != 0 && !r.comm.is_empty() {
                            if self.processes.len() >= MAX_PROCESSES {
                                self.processes.clear();
                            }
                            self.processes.insert((r.local_port, r.dest), r.process());
                        }
                    }
                    // An application giving up is not an upstream failure.
                    Outcome::Aborted => {}
                    o => {
                        if self.connect_failures.len() >= MAX_CONNECT_FAILURES {
                            self.connect_failures.pop_front();
                        }
                        self.connect_failures.push_back((None, r.dest, o));
                    }
                }
            }
            // HTTP/2 inside TLS shows in the ServerHello's ALPN: counted, not parsed.
            Event::Tls(t) if t.kind == TlsKind::Data && !t.from_client && t.offset == 0 => {
                if crate::layers::tls::handshake::server_alpn(&t.bytes).as_deref() == Some("h2") {
                    self.now = self.now.max(t.at);
                    self.target((Role::Client, t.server, String::new()), None).counts.bump(hc::H2);
                }
            }
            Event::Dns(_) | Event::Tls(_) | Event::Icmp(_) | Event::Hops(_) | Event::TcpSample(_) | Event::ConnectFailed(_) => {}
        }
    }

    fn on_tick(&mut self, tick: &Tick) {
        self.now = tick.at;
        self.close_interval(tick.at);
    }

    fn lost(&self) -> Vec<(&'static str, u64)> {
        vec![("http_connections_dropped", self.conns_dropped)]
    }

    fn view(&self) -> HttpView {
        let mut targets: Vec<TargetView> = self.targets.iter().map(|(k, t)| self.target_view(k, t)).collect();
        targets.sort_by(|a, b| {
            (b.window.failures(), b.window.get(hc::REQUESTS), a.key()).cmp(&(a.window.failures(), a.window.get(hc::REQUESTS), b.key()))
        });
        HttpView {
            targets,
            targets_omitted: 0,
            in_flight: self.conns.values().map(|c| c.pending.len()).sum(),
            unmatched_responses: self.unmatched_responses,
            connect_failures: self.connect_failure_views(),
            window_s: self.cfg.window.as_secs_f64(),
            top: self.cfg.top,
        }
    }
}

#[cfg(test)]
mod tests;
