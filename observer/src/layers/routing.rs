//! Layer 3, loss and RTT: per destination, the data segments sent and retransmitted (by
//! kind) on established connections, their smoothed RTT against the destination's own
//! baseline, the packets this host dropped itself (by the kernel's reason), and connects
//! that failed before any SYN. Rolled up per prefix, per interface and host-wide, so that
//! the view says how far the trouble reaches (the blast radius).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use observer_common::route::retrans;
use serde::Serialize;

use super::{
    Aggregator, Map, make_room,
    counts::Counts,
    icmp::{icmp_counter as ic, kind as icmp_kind},
    latency::{LatencySummary, LatencyWindow},
    window::Tally,
};
use crate::{
    config::RoutingThresholds,
    events::{ConnectFailRec, DropRec, Event, Mono, TcpSampleRec, Tick},
};

observer_common::counter_set! {
    /// Per destination, counted in userspace from the route ring's records.
    pub mod route_counter {
        /// Data segments sent, retransmits included.
        SEGMENTS = "segments",
        /// Segments retransmitted.
        RETRANSMITTED = "retransmitted",
        /// ... of which after a retransmission timeout,
        RTO = "rto",
        /// ... in fast recovery,
        FAST = "fast",
        /// ... as probes with nothing marked lost (tail-loss probes).
        PROBE = "probe",
        /// Retransmission timeouts that fired.
        TIMEOUTS = "timeouts",
        /// Packets this host dropped, for reasons that lose traffic.
        DROPPED_HERE = "dropped_here",
        /// Packets this host dropped as TCP and IP do normally (old duplicates, no socket).
        DROPPED_ROUTINE = "dropped_routine",
        /// ICMP unreachables (network, host, prohibited) about packets to it.
        ICMP_UNREACHABLE = "icmp_unreachable",
        /// connect() failed before any SYN.
        CONNECT_FAILED = "connect_failed",
    }
}
use route_counter as rc;

/// Drop reasons that are TCP and IP doing their normal work, not traffic lost: duplicates
/// of data already received, segments for sockets that are gone, PAWS; and NOT_SPECIFIED,
/// which many paths still give for anything. Counted, not judged.
const ROUTINE_DROPS: [&str; 24] = [
    "NOT_SPECIFIED",
    "NO_SOCKET",
    "SOCKET_CLOSE",
    "TCP_CLOSE",
    "TCP_OLD_DATA",
    "TCP_OFOMERGE",
    "TCP_OLD_SEQUENCE",
    "TCP_OLD_ACK",
    "TCP_TOO_OLD_ACK",
    "TCP_ACK_UNSENT_DATA",
    "TCP_RFC7323_PAWS",
    "TCP_RFC7323_PAWS_ACK",
    "TCP_RFC7323_TW_PAWS",
    "TCP_INVALID_SEQUENCE",
    "TCP_RESET",
    "DUP_FRAG",
    "OTHERHOST",
    "UNICAST_IN_L2_MULTICAST",
    // A socket closed with data still queued (its queue purged), and data arriving for one
    // the application has closed: a client that hangs up early, every minute of a busy day
    // (an HTTP server on loopback made 5 in 6 s).
    "QUEUE_PURGE",
    "TCP_ABORT_ON_DATA",
    "TCP_INVALID_END_SEQUENCE",
    "TCP_INVALID_ACK_SEQUENCE",
    "UNIX_DISCONNECT",
    "UNIX_SKIP_OOB",
];

/// A drop that loses traffic: a named reason that is not routine. Kernels before 5.17 do
/// not name their reasons ("unknown"); those drops are shown, not judged.
pub fn drop_loses_traffic(reason: &str) -> bool {
    reason != "unknown" && !reason.starts_with("reason ") && !ROUTINE_DROPS.contains(&reason)
}

/// errno names for connect failures.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        1 => "EPERM",
        13 => "EACCES",
        97 => "EAFNOSUPPORT",
        99 => "EADDRNOTAVAIL",
        101 => "ENETUNREACH",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        _ => "other",
    }
}

#[derive(Debug, Clone)]
pub struct RoutingConfig {
    pub window: Duration,
    pub max_destinations: usize,
    pub max_connections: usize,
    pub top: usize,
    /// Judging a destination "affected" for the blast radius uses the verdict's thresholds.
    pub thresholds: RoutingThresholds,
}

/// Per-interval RTT medians kept for the baseline.
const BASELINE_SPAN: Duration = Duration::from_secs(300);

/// Loss is also judged over this much recent time: a burst of loss after minutes of clean
/// traffic is named at once, not when it has grown to a share of the whole window.
pub const RECENT: Duration = Duration::from_secs(2);

/// ... and over the last second, at twice the minimum of segments: loss that starts mid-flow
/// ramps the 2 s ratio up over 2 s, and the kernel retransmits in bursts (one lost GSO packet
/// on a veth is 45 segments, about 6 such losses a second at 100 Mbit/s under 3 % loss).
pub const LAST_SECOND: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct DestState {
    counts: Tally<{ rc::COUNT }>,
    /// Segments and retransmits over [`RECENT`].
    recent: Tally<2>,
    last_second: Tally<2>,
    rtt: LatencyWindow,
    /// The current interval's RTT samples (µs), and the medians of earlier intervals.
    open_rtt: Vec<u64>,
    history: VecDeque<(Mono, u64)>,
    drop_reasons: BTreeMap<String, Tally<1>>,
    /// connect() errnos, and the processes that got them.
    connect_errors: BTreeMap<i32, Tally<1>>,
    processes: super::small_set::SmallSet<String>,
    iface: Option<String>,
    last_seen: Mono,
}

/// What the last sample of one connection said, to take deltas from.
#[derive(Debug, Clone, Copy)]
struct SockLast {
    data_segs_out: u64,
    total_retrans: u64,
    retrans: [u64; retrans::COUNT],
    timeouts: u64,
    last_seen: Mono,
}

#[derive(Debug)]
pub struct RoutingLayer {
    cfg: RoutingConfig,
    dests: Map<SocketAddr, DestState>,
    socks: Map<u64, SockLast>,
    /// The last reading of each drop counter, to take deltas from.
    drops_last: Map<DropKeyU, u64>,
    /// Routine drops, counted by the kernel per reason only (every namespace on the kernel).
    routine_unattributed: Tally<1>,
    /// Connection samples whose connection was forgotten for room (their deltas restart).
    pub socks_dropped: u64,
    now: Mono,
    /// The readings within [`RECENT`]: the intervals a destination's recent loss spreads over.
    recent_ticks: VecDeque<Mono>,
}

/// A drop counter's key in userspace: addresses, protocol, reason.
type DropKeyU = (SocketAddr, SocketAddr, u8, bool, u32);

/// Drop counters remembered; past this, the oldest readings are forgotten (their next
/// reading counts from zero again, an overcount bounded by one reading).
const MAX_DROP_KEYS: usize = 65_536;

/// Processes kept per destination.
const MAX_PROCESSES: usize = 8;
/// Drop reasons and errnos kept per destination.
const MAX_KINDS: usize = 16;

/// The key a connection's figures go under: the far end's address and port when this host
/// connected; when it accepted, the client's address with port 0 (one key per client, not
/// one per ephemeral port).
fn dest_key(s: &TcpSampleRec) -> SocketAddr {
    if s.active { s.peer } else { SocketAddr::new(s.peer.ip(), 0) }
}

impl RoutingLayer {
    pub fn new(cfg: RoutingConfig) -> RoutingLayer {
        RoutingLayer {
            cfg,
            dests: Map::default(),
            socks: Map::default(),
            drops_last: Map::default(),
            routine_unattributed: Tally::default(),
            socks_dropped: 0,
            now: Mono(0),
            recent_ticks: VecDeque::new(),
        }
    }

    fn dest(&mut self, key: SocketAddr, at: Mono) -> &mut DestState {
        make_room(&mut self.dests, &key, self.cfg.max_destinations, |d| d.last_seen);
        let d = self.dests.entry(key).or_default();
        d.last_seen = d.last_seen.max(at);
        d
    }

    fn on_sample(&mut self, s: &TcpSampleRec) {
        let last = self.socks.get(&s.cookie).copied();
        let (segs, retx, kinds, timeouts) = match last {
            // Counters only grow on one socket; saturate against a reused cookie.
            Some(l) => (
                s.data_segs_out.saturating_sub(l.data_segs_out),
                s.total_retrans.saturating_sub(l.total_retrans),
                std::array::from_fn::<u64, { retrans::COUNT }, _>(|i| s.retrans[i].saturating_sub(l.retrans[i])),
                s.timeouts.saturating_sub(l.timeouts),
            ),
            // Older than observer: its counters began before observer did.
            None if s.adopted => (0, 0, [0; retrans::COUNT], 0),
            None => (s.data_segs_out, s.total_retrans, s.retrans, s.timeouts),
        };
        if s.closed {
            self.socks.remove(&s.cookie);
        } else {
            // Forget the connection sampled least recently: its next sample counts from its
            // establishment again, so it is counted in `socks_dropped`.
            if make_room(&mut self.socks, &s.cookie, self.cfg.max_connections, |l| l.last_seen) {
                self.socks_dropped += 1;
            }
            let entry = SockLast { data_segs_out: s.data_segs_out, total_retrans: s.total_retrans, retrans: s.retrans, timeouts: s.timeouts, last_seen: s.at };
            self.socks.insert(s.cookie, entry);
        }
        let d = self.dest(dest_key(s), s.at);
        if s.iface.is_some() {
            d.iface.clone_from(&s.iface);
        }
        d.counts.add(rc::SEGMENTS, segs);
        d.counts.add(rc::RETRANSMITTED, retx);
        for t in [&mut d.recent, &mut d.last_second] {
            t.add(0, segs);
            t.add(1, retx);
        }
        d.counts.add(rc::RTO, kinds[retrans::RTO]);
        d.counts.add(rc::FAST, kinds[retrans::FAST]);
        d.counts.add(rc::PROBE, kinds[retrans::PROBE]);
        d.counts.add(rc::TIMEOUTS, timeouts);
        if s.srtt_us > 0 {
            d.rtt.record(Duration::from_micros(s.srtt_us));
            d.open_rtt.push(s.srtt_us);
        }
    }

    /// A drop counter's reading: what it grew by since the last one goes to its far end.
    fn on_drop_reading(&mut self, r: &DropRec, at: Mono) {
        let key = (r.src, r.dst, r.proto, r.has_sk, r.reason);
        let last = self.drops_last.get(&key).copied();
        // A count that went down: the kernel's LRU evicted the key and it came back.
        let delta = match last {
            Some(l) if r.count >= l => r.count - l,
            _ => r.count,
        };
        if last.is_none() && self.drops_last.len() >= MAX_DROP_KEYS {
            self.drops_last.clear();
        }
        self.drops_last.insert(key, r.count);
        // Routine drops come without addresses (the kernel counts those per reason only).
        let ip = r.peer.ip();
        if delta > 0 && ip.is_unspecified() {
            self.routine_unattributed.add(0, delta);
        }
        // Multicast and broadcast (neighbour discovery, MLD) have no destination to judge.
        if delta == 0 || ip.is_multicast() || ip.is_unspecified() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return;
        }
        let d = self.dest(r.peer, at);
        if d.iface.is_none() {
            d.iface.clone_from(&r.iface);
        }
        d.counts.add(if drop_loses_traffic(&r.reason_name) { rc::DROPPED_HERE } else { rc::DROPPED_ROUTINE }, delta);
        if d.drop_reasons.len() < MAX_KINDS || d.drop_reasons.contains_key(&r.reason_name) {
            d.drop_reasons.entry(r.reason_name.clone()).or_default().add(0, delta);
        }
    }

    fn on_connect_failed(&mut self, c: &ConnectFailRec) {
        let d = self.dest(c.dest, c.at);
        if d.iface.is_none() {
            d.iface.clone_from(&c.iface);
        }
        d.counts.bump(rc::CONNECT_FAILED);
        if d.connect_errors.len() < MAX_KINDS || d.connect_errors.contains_key(&c.errno) {
            d.connect_errors.entry(c.errno).or_default().bump(0);
        }
        if d.processes.len() < MAX_PROCESSES {
            d.processes.insert(c.process.clone());
        }
    }
}

/// The `routing` section of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutingView {
    /// How far the trouble reaches: "one destination", "one prefix", "one interface",
    /// "everywhere"; `None` when no destination is affected.
    pub scope: Option<&'static str>,
    /// The affected destinations' addresses.
    pub affected: Vec<IpAddr>,
    /// Affected first, then by segments in the window.
    pub destinations: Vec<DestView>,
    pub destinations_omitted: usize,
    pub prefixes: Vec<RollUp>,
    pub interfaces: Vec<RollUp>,
    pub host: RollUp,
    /// Established connections being sampled now.
    pub connections: usize,
    /// Routine drops (TCP and IP at their normal work) in the window, on every namespace of
    /// this kernel: counted per reason, not per destination, and never judged.
    pub routine_drops: u64,
    #[serde(skip)]
    pub top: usize,
}

/// One destination over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestView {
    /// IP:port this host connected to, or a client's IP with port 0.
    pub dest: SocketAddr,
    pub iface: Option<String>,
    pub window: Counts<{ rc::COUNT }>,
    pub total: Counts<{ rc::COUNT }>,
    /// Retransmitted over segments in the window; 0 without segments.
    pub retransmit_ratio: f64,
    /// Segments and retransmitted segments over the last 2 s (loss that just started), and
    /// in how many of its intervals (of how many) there were retransmits.
    pub recent_segments: u64,
    pub recent_retransmitted: u64,
    pub recent_loss_intervals: (usize, usize),
    /// Segments and retransmitted segments over the last second.
    pub last_second_segments: u64,
    pub last_second_retransmitted: u64,
    /// Smoothed RTT samples in the window (µs).
    pub rtt: LatencySummary,
    /// The median smoothed RTT before the window (µs), when there was traffic then.
    pub rtt_baseline_us: Option<u64>,
    /// (reason, window, total).
    pub drop_reasons: Vec<(String, u64, u64)>,
    /// (errno name, errno, window, total).
    pub connect_errors: Vec<(&'static str, i32, u64, u64)>,
    pub processes: Vec<String>,
    /// What makes it affected: "loss", "local drops", "rtt", "icmp", "no route".
    pub why: Vec<&'static str>,
}

/// Figures rolled up over a set of destinations (a prefix, an interface, the host).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RollUp {
    pub key: String,
    pub destinations: usize,
    pub affected: usize,
    pub segments: u64,
    pub retransmitted: u64,
    pub retransmit_ratio: f64,
    pub dropped_here: u64,
    pub icmp_unreachable: u64,
    pub connect_failed: u64,
    /// The largest destination RTT p95 among them (µs).
    pub rtt_p95_us: u64,
}

impl RollUp {
    fn add(&mut self, d: &DestView) {
        let w = &d.window;
        self.destinations += 1;
        self.affected += usize::from(!d.why.is_empty());
        self.segments += w.get(rc::SEGMENTS);
        self.retransmitted += w.get(rc::RETRANSMITTED);
        self.dropped_here += w.get(rc::DROPPED_HERE);
        self.icmp_unreachable += w.get(rc::ICMP_UNREACHABLE);
        self.connect_failed += w.get(rc::CONNECT_FAILED);
        self.rtt_p95_us = self.rtt_p95_us.max(d.rtt.p95);
        self.retransmit_ratio = ratio(self.retransmitted, self.segments);
    }
}

pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// The network of `ip` under a prefix of `bits` (clamped to the family's length).
pub fn network(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(bits.min(32));
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let bits = u32::from(bits.min(128));
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// The /N prefix an address is in, as "10.0.3.0/24".
pub fn prefix_of(ip: IpAddr, v4: u8, v6: u8) -> String {
    let bits = if ip.is_ipv4() { v4.min(32) } else { v6.min(128) };
    format!("{}/{bits}", network(ip, bits))
}

/// Why a destination is affected, by the verdict's thresholds.
pub fn why(d: &DestView, t: &RoutingThresholds) -> Vec<&'static str> {
    let w = &d.window;
    let mut out = Vec::new();
    if lossy_span(d, t).is_some() {
        out.push("loss");
    }
    if w.get(rc::DROPPED_HERE) >= t.min_local_drops {
        out.push("local drops");
    }
    if rtt_jumped(d, t) {
        out.push("rtt");
    }
    if w.get(rc::ICMP_UNREACHABLE) >= t.min_unreachable {
        out.push("icmp");
    }
    if no_route(d) >= t.min_no_route {
        out.push("no route");
    }
    out
}

pub fn lossy_window(d: &DestView, t: &RoutingThresholds) -> bool {
    d.window.get(rc::SEGMENTS) >= t.min_segments && d.retransmit_ratio >= t.retransmit_ratio
}

/// The segments, retransmits and span (None: the whole window) that make a destination
/// lossy: the window, else the last [`RECENT`] seconds, else the [`LAST_SECOND`]. The recent
/// spans have their own threshold, higher than the window's, since one loss episode can
/// retransmit a burst (44 of 3,685 segments, 1.2 %, in one interval on a healthy busy host).
/// Retransmits under random loss come in bursts too (RTO backoff), so how many intervals had
/// them does not tell the two apart; it is reported, not judged.
pub fn lossy_span(d: &DestView, t: &RoutingThresholds) -> Option<(u64, u64, Option<Duration>)> {
    let recent = |segs, retx, min| segs >= min && ratio(retx, segs) >= t.recent_retransmit_ratio;
    if lossy_window(d, t) {
        Some((d.window.get(rc::SEGMENTS), d.window.get(rc::RETRANSMITTED), None))
    } else if recent(d.recent_segments, d.recent_retransmitted, t.min_segments) {
        Some((d.recent_segments, d.recent_retransmitted, Some(RECENT)))
    } else if recent(d.last_second_segments, d.last_second_retransmitted, 2 * t.min_segments) {
        Some((d.last_second_segments, d.last_second_retransmitted, Some(LAST_SECOND)))
    } else {
        None
    }
}

pub fn rtt_jumped(d: &DestView, t: &RoutingThresholds) -> bool {
    let Some(base) = d.rtt_baseline_us else { return false };
    let p95 = d.rtt.p95 as f64;
    d.rtt.count >= t.min_rtt_samples && p95 >= t.rtt_jump_factor * base as f64 && p95 - base as f64 >= t.rtt_jump_min_ms * 1000.0
}

/// Connect failures for want of a route (ENETUNREACH, EHOSTUNREACH) in the window.
pub fn no_route(d: &DestView) -> u64 {
    d.connect_errors.iter().filter(|(_, e, _, _)| matches!(e, 101 | 113)).map(|(_, _, w, _)| w).sum()
}

/// The blast radius of the affected destinations among all of them.
pub fn scope(all: &[DestView], v4: u8, v6: u8) -> Option<&'static str> {
    let affected: Vec<&DestView> = all.iter().filter(|d| !d.why.is_empty()).collect();
    let ips: BTreeSet<IpAddr> = affected.iter().map(|d| d.dest.ip()).collect();
    if ips.is_empty() {
        return None;
    }
    if ips.len() == 1 {
        return Some("one destination");
    }
    let prefixes: BTreeSet<String> = ips.iter().map(|ip| prefix_of(*ip, v4, v6)).collect();
    if prefixes.len() == 1 {
        return Some("one prefix");
    }
    let ifaces: BTreeSet<Option<&str>> = affected.iter().map(|d| d.iface.as_deref()).collect();
    let elsewhere_clean = all.iter().any(|d| d.why.is_empty() && d.window.get(rc::SEGMENTS) > 0 && !ifaces.contains(&d.iface.as_deref()));
    if ifaces.len() == 1 && !ifaces.contains(&None) && elsewhere_clean {
        return Some("one interface");
    }
    Some("everywhere")
}

impl RoutingView {
    pub fn limit(&mut self) {
        self.destinations_omitted += self.destinations.len().saturating_sub(self.top);
        self.destinations.truncate(self.top);
        self.prefixes.truncate(self.top);
        self.interfaces.truncate(self.top);
    }
}

fn median(v: &mut [u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

impl Aggregator for RoutingLayer {
    fn failure_totals(&self) -> Vec<(&'static str, String, u64)> {
        self.dests.iter().map(|(d, s)| ("tcp_rtt", d.to_string(), s.counts.total()[rc::RETRANSMITTED])).collect()
    }

    fn interval_samples(&self) -> Vec<super::IntervalSamples<'_>> {
        self.dests.iter().filter_map(|(d, s)| super::samples_of("tcp_rtt", || d.to_string(), &s.rtt)).collect()
    }

    type View = RoutingView;

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::TcpSample(s) => self.on_sample(s),
            Event::ConnectFailed(c) => self.on_connect_failed(c),
            Event::Icmp(m) => {
                let k = icmp_kind(m);
                if matches!(k, ic::NET_UNREACHABLE | ic::HOST_UNREACHABLE | ic::PROHIBITED | ic::OTHER) {
                    self.dest(m.dest, m.at).counts.bump(rc::ICMP_UNREACHABLE);
                }
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, tick: &Tick) {
        self.now = tick.at;
        self.recent_ticks.push_back(tick.at);
        let recent = RECENT.min(self.cfg.window);
        self.recent_ticks.retain(|at| tick.at.since(*at) < recent);
        for r in &tick.counters.drops {
            self.on_drop_reading(r, tick.at);
        }
        let window = self.cfg.window;
        for d in self.dests.values_mut() {
            d.counts.close(tick.at, window);
            d.recent.close(tick.at, RECENT.min(window));
            d.last_second.close(tick.at, LAST_SECOND.min(window));
            d.rtt.close(tick.at, window);
            for t in d.drop_reasons.values_mut().chain(d.connect_errors.values_mut()) {
                t.close(tick.at, window);
            }
            if let Some(m) = median(&mut d.open_rtt) {
                d.history.push_back((tick.at, m));
            }
            d.open_rtt.clear();
            while d.history.front().is_some_and(|(at, _)| tick.at.since(*at) > BASELINE_SPAN) {
                d.history.pop_front();
            }
        }
        self.routine_unattributed.close(tick.at, window);
    }

    fn lost(&self) -> Vec<(&'static str, u64)> {
        vec![("tcp_samples_restarted", self.socks_dropped)]
    }

    fn view(&self) -> RoutingView {
        let t = &self.cfg.thresholds;
        let counts = |values| Counts { values, names: &rc::NAMES };
        let mut destinations: Vec<DestView> = self
            .dests
            .iter()
            .map(|(dest, d)| {
                let (w, recent, last_second) = (d.counts.window(), d.recent.window(), d.last_second.window());
                // The baseline is what came before the window.
                let mut before: Vec<u64> =
                    d.history.iter().filter(|(at, _)| self.now.since(*at) >= self.cfg.window).map(|(_, m)| *m).collect();
                let mut v = DestView {
                    dest: *dest,
                    iface: d.iface.clone(),
                    window: counts(w),
                    total: counts(d.counts.total()),
                    retransmit_ratio: ratio(w[rc::RETRANSMITTED], w[rc::SEGMENTS]),
                    recent_segments: recent[0],
                    recent_retransmitted: recent[1],
                    recent_loss_intervals: (d.recent.grew_in(1), self.recent_ticks.len()),
                    last_second_segments: last_second[0],
                    last_second_retransmitted: last_second[1],
                    rtt: d.rtt.window(),
                    rtt_baseline_us: median(&mut before),
                    drop_reasons: d.drop_reasons.iter().map(|(r, c)| (r.clone(), c.window()[0], c.total()[0])).collect(),
                    connect_errors: d.connect_errors.iter().map(|(e, c)| (errno_name(*e), *e, c.window()[0], c.total()[0])).collect(),
                    processes: d.processes.iter().cloned().collect(),
                    why: Vec::new(),
                };
                v.why = why(&v, t);
                v
            })
            .collect();
        destinations.sort_by(|a, b| {
            (!b.why.is_empty(), b.window.get(rc::SEGMENTS), a.dest).cmp(&(!a.why.is_empty(), a.window.get(rc::SEGMENTS), b.dest))
        });
        let scope = scope(&destinations, t.prefix_v4, t.prefix_v6);
        let affected: BTreeSet<IpAddr> = destinations.iter().filter(|d| !d.why.is_empty()).map(|d| d.dest.ip()).collect();
        let mut prefixes: BTreeMap<String, RollUp> = BTreeMap::new();
        let mut interfaces: BTreeMap<String, RollUp> = BTreeMap::new();
        let mut host = RollUp { key: "host".to_owned(), ..RollUp::default() };
        // Only destinations with something in the window count in the roll-ups.
        for d in destinations.iter().filter(|d| d.window.values.iter().any(|v| *v > 0)) {
            let p = prefix_of(d.dest.ip(), t.prefix_v4, t.prefix_v6);
            prefixes.entry(p.clone()).or_insert_with(|| RollUp { key: p, ..RollUp::default() }).add(d);
            let i = d.iface.clone().unwrap_or_else(|| "?".to_owned());
            interfaces.entry(i.clone()).or_insert_with(|| RollUp { key: i, ..RollUp::default() }).add(d);
            host.add(d);
        }
        let order = |v: BTreeMap<String, RollUp>| {
            let mut v: Vec<RollUp> = v.into_values().collect();
            v.sort_by_key(|r| std::cmp::Reverse((r.affected, r.segments)));
            v
        };
        RoutingView {
            scope,
            affected: affected.into_iter().collect(),
            destinations,
            destinations_omitted: 0,
            prefixes: order(prefixes),
            interfaces: order(interfaces),
            host,
            connections: self.socks.len(),
            routine_drops: self.routine_unattributed.window()[0],
            top: self.cfg.top,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> RoutingLayer {
        RoutingLayer::new(RoutingConfig {
            window: Duration::from_secs(10),
            max_destinations: 100,
            max_connections: 100,
            top: 100,
            thresholds: RoutingThresholds::default(),
        })
    }

    fn sample(cookie: u64, peer: &str, segs: u64, retx: u64, srtt_us: u64, at: u64) -> Event {
        Event::TcpSample(TcpSampleRec {
            at: Mono(at),
            cookie,
            peer: peer.parse().unwrap(),
            local_port: 40000,
            active: true,
            closed: false,
            adopted: false,
            data_segs_out: segs,
            total_retrans: retx,
            retrans: [0, retx, 0],
            timeouts: 0,
            srtt_us,
            iface: Some("eth0".into()),
        })
    }

    fn tick(l: &mut RoutingLayer, s: u64) {
        l.on_tick(&Tick { at: Mono(s * 1_000_000_000), ..Tick::for_tests() });
    }

    #[test]
    fn deltas_per_connection_add_up_per_destination_and_a_lossy_one_is_one_destination() {
        let mut l = layer();
        l.on_event(&sample(1, "10.0.0.2:5201", 1000, 10, 300, 1));
        l.on_event(&sample(1, "10.0.0.2:5201", 4000, 124, 310, 2));
        // A clean server in the same prefix.
        l.on_event(&sample(2, "10.0.0.3:5201", 4000, 0, 300, 2));
        tick(&mut l, 1);
        let v = l.view();
        let d = &v.destinations[0];
        assert_eq!((d.dest.to_string().as_str(), d.window.get(rc::SEGMENTS), d.window.get(rc::RETRANSMITTED)), ("10.0.0.2:5201", 4000, 124));
        assert_eq!(d.why, vec!["loss"]);
        assert!(v.destinations[1].why.is_empty());
        assert_eq!((v.scope, v.affected.len()), (Some("one destination"), 1));
        assert_eq!((v.host.segments, v.host.retransmitted, v.prefixes.len()), (8000, 124, 1));
        // The close gives the last counters, and the connection is forgotten.
        let Event::TcpSample(mut last) = sample(1, "10.0.0.2:5201", 4100, 124, 310, 3) else { unreachable!() };
        last.closed = true;
        l.on_event(&Event::TcpSample(last));
        assert_eq!(l.socks.len(), 1);
    }

    /// 4,000 segments a second, clean for 8 s, then 3 % of them retransmitted for `lossy`
    /// half-seconds, read at half-second ticks as observer does.
    fn loss_starting_mid_flow(lossy: u64) -> DestView {
        flow(16 + lossy, |half| if half > 16 { 60 } else { 0 })
    }

    /// 2,000 segments each half-second, `retx(half)` of them retransmitted.
    fn flow(halves: u64, retx_in: impl Fn(u64) -> u64) -> DestView {
        let mut l = layer();
        let (mut segs, mut retx) = (0, 0);
        for half in 1..=halves {
            segs += 2000;
            retx += retx_in(half);
            l.on_event(&sample(1, "10.0.0.2:5201", segs, retx, 300, half * 500_000_000));
            l.on_tick(&Tick { at: Mono(half * 500_000_000), ..Tick::for_tests() });
        }
        l.view().destinations.remove(0)
    }

    #[test]
    fn loss_that_starts_mid_flow_is_seen_in_the_last_second_before_the_last_2_s_or_the_window_show_it() {
        let t = RoutingThresholds::default();
        assert_eq!(lossy_span(&loss_starting_mid_flow(0), &t), None);
        // Half a second in: 1.5 % of the last second, 0.75 % of the last 2 s.
        let d = loss_starting_mid_flow(1);
        assert_eq!((d.last_second_segments, d.last_second_retransmitted), (4000, 60));
        assert_eq!(lossy_span(&d, &t), Some((4000, 60, Some(LAST_SECOND))));
        assert_eq!(d.why, vec!["loss"]);
        // A second in, the last 2 s show it too, and speak for it.
        assert_eq!(lossy_span(&loss_starting_mid_flow(2), &t), Some((8000, 120, Some(RECENT))));
        // One burst of 44 retransmits (one lost GSO packet) in a second of 4,000 is not loss.
        assert_eq!(lossy_span(&flow(17, |half| if half == 17 { 44 } else { 0 }), &t), None);
    }

    #[test]
    fn a_connection_older_than_observer_counts_from_its_first_sample_not_from_its_start() {
        let mut l = layer();
        let adopted = |segs, retx, at| {
            let Event::TcpSample(mut s) = sample(0xffff_8880_1234_0000, "10.0.0.2:5201", segs, retx, 300, at) else { unreachable!() };
            s.adopted = true;
            Event::TcpSample(s)
        };
        // 35,000 segments before observer started: a baseline, not traffic.
        l.on_event(&adopted(35_000, 10, 1));
        l.on_event(&adopted(39_000, 130, 2));
        tick(&mut l, 1);
        let d = &l.view().destinations[0];
        assert_eq!((d.window.get(rc::SEGMENTS), d.window.get(rc::RETRANSMITTED)), (4000, 120));
        assert_eq!(d.why, vec!["loss"]);
    }

    #[test]
    fn the_rtt_baseline_is_the_median_before_the_window_and_a_jump_is_judged_against_it() {
        let mut l = layer();
        for s in 1..=12 {
            l.on_event(&sample(1, "10.0.0.2:80", s * 10, 0, 300, s * 1_000_000_000));
            tick(&mut l, s);
        }
        assert_eq!(l.view().destinations[0].rtt_baseline_us, Some(300));
        assert!(l.view().destinations[0].why.is_empty());
        for s in 13..=16 {
            l.on_event(&sample(1, "10.0.0.2:80", s * 10, 0, 100_300, s * 1_000_000_000));
            tick(&mut l, s);
        }
        let v = l.view();
        assert_eq!((v.destinations[0].why.clone(), v.destinations[0].rtt_baseline_us), (vec!["rtt"], Some(300)));
    }

    #[test]
    fn drops_by_reason_and_early_connect_failures_count_for_their_destination() {
        let mut l = layer();
        let peer: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let reading = |reason: &str, number: u32, count: u64| DropRec {
            count,
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: peer,
            proto: 6,
            has_sk: true,
            reason: number,
            peer,
            reason_name: reason.into(),
            iface: None,
        };
        for _ in 0..2 {
            l.on_event(&Event::ConnectFailed(ConnectFailRec { at: Mono(1), dest: peer, errno: 101, process: "curl[9]".into(), iface: None }));
        }
        // Since-start readings: deltas between them are what happened.
        let mut t = Tick { at: Mono(1_000_000_000), ..Tick::for_tests() };
        t.counters.drops = vec![reading("NETFILTER_DROP", 12, 1), reading("TCP_OLD_DATA", 33, 1)];
        l.on_tick(&t);
        t.at = Mono(2_000_000_000);
        t.counters.drops = vec![reading("NETFILTER_DROP", 12, 2), reading("TCP_OLD_DATA", 33, 1)];
        l.on_tick(&t);
        let v = l.view();
        let d = &v.destinations[0];
        assert_eq!((d.window.get(rc::DROPPED_HERE), d.window.get(rc::DROPPED_ROUTINE)), (2, 1));
        assert_eq!(d.connect_errors, vec![("ENETUNREACH", 101, 2, 2)]);
        assert_eq!((no_route(d), d.processes.clone()), (2, vec!["curl[9]".to_owned()]));
        assert_eq!(d.why, vec!["no route"], "2 drops are under the 5 the default asks for");
        assert!(!drop_loses_traffic("unknown") && !drop_loses_traffic("NO_SOCKET") && drop_loses_traffic("QDISC_DROP"));
    }

    #[test]
    fn the_blast_radius_names_the_smallest_scope_that_holds_every_affected_destination() {
        let d = |ip: &str, iface: &str, affected: bool| DestView {
            dest: SocketAddr::new(ip.parse().unwrap(), 80),
            iface: Some(iface.into()),
            window: Counts { values: [100, 0, 0, 0, 0, 0, 0, 0, 0, 0], names: &rc::NAMES },
            total: Counts { values: [0; rc::COUNT], names: &rc::NAMES },
            retransmit_ratio: 0.0,
            recent_segments: 0,
            recent_retransmitted: 0,
            recent_loss_intervals: (0, 0),
            last_second_segments: 0,
            last_second_retransmitted: 0,
            rtt: LatencySummary::default(),
            rtt_baseline_us: None,
            drop_reasons: vec![],
            connect_errors: vec![],
            processes: vec![],
            why: if affected { vec!["loss"] } else { vec![] },
        };
        assert_eq!(scope(&[d("10.0.0.2", "a", false)], 24, 64), None);
        assert_eq!(scope(&[d("10.0.0.2", "a", true), d("10.0.0.3", "a", false)], 24, 64), Some("one destination"));
        assert_eq!(scope(&[d("10.0.0.2", "a", true), d("10.0.0.3", "a", true)], 24, 64), Some("one prefix"));
        let two_nets = [d("10.0.0.2", "a", true), d("10.0.1.3", "a", true), d("10.9.0.1", "b", false)];
        assert_eq!(scope(&two_nets, 24, 64), Some("one interface"));
        assert_eq!(scope(&two_nets, 8, 64), Some("one prefix"), "the prefix length is a setting");
        assert_eq!(scope(&two_nets[..2], 24, 64), Some("everywhere"), "no clean interface to compare with");
        assert_eq!(scope(&[d("10.0.0.2", "a", true), d("10.0.1.3", "b", true)], 24, 64), Some("everywhere"));
        assert_eq!(prefix_of("fd77:1:2:3:4::9".parse().unwrap(), 24, 64), "fd77:1:2:3::/64");
    }
}
