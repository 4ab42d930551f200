//! Layer 2, TCP connect: per-destination outcomes, retransmits, resets and connect latency,
//! over the sliding window and since start; server-role counters per local port.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use observer_common::tcp::{dest_counter as dc, port_counter};
use serde::Serialize;

pub use super::counts::Counts;
use super::{
    Aggregator, Map,
    dense::DenseMap,
    latency::{LatencySummary, LatencyWindow},
    packed::PackedCounts,
    small_set::SmallSet,
    window::WindowedCounts,
};
use crate::events::{ConnectRecord, DestCounts, Event, Mono, Outcome, PortCounts, TcpSnapshot, Tick};

/// Processes remembered per destination.
const MAX_PROCESSES: usize = 4;

#[derive(Debug)]
struct DestState {
    counts: WindowedCounts<{ dc::COUNT }>,
    latency: LatencyWindow,
    /// Who connected and how the last failure went, inline: almost every destination has a
    /// process, and boxed they took 64 bytes of malloc beside 8 in the table (an outage has
    /// 100,000 destinations).
    details: Details,
    /// When its counters were last read (see `on_snapshot`); zero before the first.
    read_at: Mono,
}

impl DestState {
    fn new() -> DestState {
        DestState {
            counts: WindowedCounts::default(),
            latency: LatencyWindow::default(),
            details: Details::default(),
            read_at: Mono(0),
        }
    }

    /// Its reading at `now` (None: gone from the kernel's table). Returns whether the reading
    /// shows an eviction.
    fn read(&mut self, now: Mono, reading: Option<&DestCounts>, window: Duration) -> bool {
        self.read_at = now;
        self.latency.close(now, window);
        self.counts.observe(now, reading, window)
    }
}

#[derive(Debug, Default)]
struct Details {
    processes: SmallSet<Process>,
    last_failure: Option<LastFailure>,
}

/// What a destination's last failed connect said: the record's fields that a report shows,
/// in 12 bytes (errnos are under 4,096, SYN retries under 256, and the time to fail is
/// saturated at 71 minutes). Its process is named by pid among the destination's processes,
/// where the failing one is always kept: a copy of it took 20 bytes more a destination.
#[derive(Debug)]
struct LastFailure {
    outcome: Outcome,
    syn_retransmits: u8,
    errno: i16,
    after_us: u32,
    pid: u32,
}

/// A process as the kernel names it (comm, at most 15 bytes, and pid), held inline: a
/// destination's processes cost 20 bytes each instead of two allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Process {
    comm: [u8; 16],
    pid: u32,
}

impl Process {
    fn of(comm: &str, pid: u32) -> Process {
        let mut c = [0u8; 16];
        // At a character boundary, so that the bytes kept are still text.
        let mut n = comm.len().min(16);
        while !comm.is_char_boundary(n) {
            n -= 1;
        }
        c[..n].copy_from_slice(&comm.as_bytes()[..n]);
        Process { comm: c, pid }
    }

    fn comm(&self) -> &str {
        let n = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        std::str::from_utf8(&self.comm[..n]).unwrap_or_default()
    }
}

/// "comm[pid]", as processes are named in reports and evidence.
impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.comm(), self.pid)
    }
}

#[derive(Debug)]
pub struct ConnectLayer {
    window: Duration,
    max_dests: usize,
    /// Destinations per report, the most troubled first.
    top: usize,
    dests: DenseMap<DestKey, DestState>,
    ports: Map<u16, WindowedCounts<{ port_counter::COUNT }>>,
    /// Kernel table entries seen evicted (LRU): their last increments are lost.
    pub evictions: u64,
    /// When the last reading was taken: the failures it grew are what the interval added.
    read_at: Option<Mono>,
}

/// The connect layer in one interval: the report's `tcp` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectView {
    /// The most troubled first.
    pub destinations: Vec<DestView>,
    pub destinations_omitted: usize,
    /// The window counts of the destinations past the `top` ones, for the rules (which judge
    /// every destination): building whole views for 100,000 took most of an interval's work.
    #[serde(skip)]
    pub rest: PackedCounts<{ dc::COUNT }>,
    pub local_ports: Vec<PortView>,
    #[serde(skip)]
    pub top: usize,
}

impl ConnectView {
    /// Keep the `top` most troubled destinations (after the rules have seen them all).
    pub fn limit(&mut self) {
        self.destinations_omitted += self.destinations.len().saturating_sub(self.top) + self.rest.len();
        self.destinations.truncate(self.top);
        self.rest = PackedCounts::default();
    }
}

/// One destination as the presenters and verdicts see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestView {
    pub dest: SocketAddr,
    pub window: Period,
    pub total: Period,
    pub last_failure: Option<FailureView>,
    pub processes: Vec<String>,
}

/// Counters and connect latency over one period (the window, or since start).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    #[serde(flatten)]
    pub counts: Counts<{ dc::COUNT }>,
    pub connect_latency_us: LatencySummary,
}

impl Period {
    pub fn get(&self, index: usize) -> u64 {
        self.counts.get(index)
    }
    pub fn failures(&self) -> u64 {
        failures(&self.counts.values)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureView {
    pub outcome: &'static str,
    pub errno: i32,
    pub syn_retransmits: u32,
    pub after_us: u64,
    pub pid: u32,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortView {
    pub port: u16,
    pub window: Counts<{ port_counter::COUNT }>,
    pub total: Counts<{ port_counter::COUNT }>,
}

pub fn failures(c: &DestCounts) -> u64 {
    c[dc::REFUSED] + c[dc::TIMED_OUT] + c[dc::UNREACHABLE] + c[dc::OTHER_ERROR] + c[dc::ABORTED]
}

pub fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Established => "established",
        Outcome::Refused => "refused",
        Outcome::TimedOut => "timed_out",
        Outcome::Unreachable => "unreachable",
        Outcome::OtherError => "other_error",
        Outcome::Aborted => "aborted",
    }
}

impl ConnectLayer {
    pub fn new(window: Duration, max_dests: usize, top: usize) -> ConnectLayer {
        ConnectLayer { window, max_dests, top, dests: DenseMap::default(), ports: Map::default(), evictions: 0, read_at: None }
    }

    /// A finished connect.
    pub fn on_connect(&mut self, rec: &ConnectRecord) {
        let state = self.dests.get_or_insert_with(DestKey::of(rec.dest), DestState::new);
        if rec.outcome == Outcome::Established {
            state.latency.record(rec.latency);
        }
        let failed = rec.outcome != Outcome::Established;
        if rec.comm.is_empty() && !failed {
            return;
        }
        let details = &mut state.details;
        if !rec.comm.is_empty() {
            let p = Process::of(&rec.comm, rec.pid);
            if details.processes.len() < MAX_PROCESSES {
                details.processes.insert(p);
            } else if failed {
                // Full: the failing process takes the last place, so that its name is kept.
                details.processes.insert_bounded(p, MAX_PROCESSES);
            }
        }
        if failed {
            details.last_failure = Some(LastFailure {
                outcome: rec.outcome,
                syn_retransmits: u8::try_from(rec.syn_retransmits).unwrap_or(u8::MAX),
                errno: i16::try_from(rec.error).unwrap_or(i16::MAX),
                after_us: u32::try_from(rec.latency.as_micros()).unwrap_or(u32::MAX),
                pid: rec.pid,
            });
        }
    }

    /// A reading of the kernel's since-start counters: closes the current interval.
    pub fn on_snapshot(&mut self, now: Mono, snap: &TcpSnapshot) {
        let window = self.window;
        self.read_at = Some(now);
        // The destinations in the reading, then the others (gone from the kernel's table),
        // told apart by the time of their last reading: no second map of 100,000 entries.
        for (addr, counts) in &snap.dests {
            let state = self.dests.get_or_insert_with(DestKey::of(*addr), DestState::new);
            // Listed twice: the first reading stands.
            if state.read_at != now && state.read(now, Some(counts), window) {
                self.evictions += 1;
            }
        }
        if let Some(gone) = &snap.gone {
            for addr in gone {
                if let Some(state) = self.dests.get_mut(&DestKey::of(*addr))
                    && state.read_at != now
                    && state.read(now, None, window)
                {
                    self.evictions += 1;
                }
            }
        }
        // The others: gone from the kernel's table when the reading lists every destination
        // the table holds, else unchanged (read as they were).
        let complete = snap.gone.is_none();
        for state in self.dests.values_mut().filter(|s| s.read_at != now) {
            if complete {
                if state.read(now, None, window) {
                    self.evictions += 1;
                }
            } else {
                state.read_at = now;
                state.latency.close(now, window);
                state.counts.unchanged(now, window);
            }
        }
        let ports: HashMap<u16, &PortCounts> = snap.ports.iter().map(|(p, c)| (*p, c)).collect();
        for p in ports.keys() {
            self.ports.entry(*p).or_default();
        }
        for (p, counts) in self.ports.iter_mut() {
            if counts.observe(now, ports.get(p).copied(), window) {
                self.evictions += 1;
            }
        }
        self.forget_idle(now);
    }

    /// Keep userspace bounded like the kernel table: drop the destinations idle the longest,
    /// among those the kernel no longer holds. (Forgetting one it still holds would count its
    /// since-start value a second time when it shows up again.)
    fn forget_idle(&mut self, now: Mono) {
        if self.dests.len() <= self.max_dests {
            return;
        }
        let mut by_idle: Vec<(Duration, DestKey)> = self
            .dests
            .iter()
            .filter(|(_, s)| !s.counts.in_kernel())
            .map(|(a, s)| (s.counts.last_change().map_or(Duration::MAX, |t| now.since(t)), *a))
            .collect();
        by_idle.sort_by(|a, b| b.cmp(a));
        let excess = self.dests.len() - self.max_dests;
        for (_, addr) in by_idle.into_iter().take(excess) {
            self.dests.remove(&addr);
        }
        self.dests.compact();
    }

    /// Latency samples left out of window percentiles (over the per-interval cap).
    pub fn samples_dropped(&self) -> u64 {
        self.dests.values().map(|d| d.latency.dropped()).sum()
    }

    /// Destinations, the most troubled first: window failures, then since-start failures,
    /// then window attempts.
    pub fn destinations(&self) -> Vec<DestView> {
        self.ordered().into_iter().map(|(_, a, s)| view(a, s)).collect()
    }

    /// Every destination by a small key, the most troubled first: sorting views of half a
    /// kilobyte each moved more memory than anything else observer did.
    fn ordered(&self) -> Vec<Ranked<'_>> {
        let mut order: Vec<Ranked<'_>> = self.ranked().collect();
        order.sort_unstable_by(by_trouble);
        order
    }

    /// Every destination with its rank, in the table's order.
    fn ranked(&self) -> impl Iterator<Item = Ranked<'_>> {
        self.dests.iter().map(|(a, s)| (rank(s), a.addr(), s))
    }

    pub fn local_ports(&self) -> Vec<PortView> {
        let mut v: Vec<PortView> = self
            .ports
            .iter()
            .map(|(p, c)| PortView {
                port: *p,
                window: Counts { values: c.window(), names: &port_counter::NAMES },
                total: Counts { values: c.total(), names: &port_counter::NAMES },
            })
            .collect();
        v.sort_by_key(|p| p.port);
        v
    }
}

impl Aggregator for ConnectLayer {
    /// From the last reading's growth, kept per destination anyway: since-start totals of
    /// 100,000 destinations, named and diffed by each consumer every interval, were a fifth
    /// of the daemon's work and a map of 100,000 strings.
    fn failures_grown(&self) -> Option<Vec<(&'static str, String, u64)>> {
        let failed = [dc::REFUSED, dc::TIMED_OUT, dc::UNREACHABLE, dc::OTHER_ERROR, dc::GAVE_UP];
        let Some(at) = self.read_at else { return Some(Vec::new()) };
        Some(
            self.dests
                .iter()
                .filter_map(|(d, s)| {
                    let g = s.counts.grew_at(at)?;
                    let n: u64 = failed.iter().map(|i| g[*i]).sum();
                    (n > 0).then(|| ("tcp_connect", d.addr().to_string(), n))
                })
                .collect(),
        )
    }

    fn interval_samples(&self) -> Vec<super::IntervalSamples<'_>> {
        self.dests.iter().filter_map(|(d, s)| super::samples_of("tcp_connect", || d.addr().to_string(), &s.latency)).collect()
    }

    type View = ConnectView;

    fn on_event(&mut self, event: &Event) {
        if let Event::Connect(rec) = event {
            self.on_connect(rec);
        }
    }

    fn on_tick(&mut self, tick: &Tick) {
        self.on_snapshot(tick.at, &tick.counters.tcp);
    }

    fn lost(&self) -> Vec<(&'static str, u64)> {
        vec![("tcp_latency_samples_dropped", self.samples_dropped())]
    }

    fn view(&self) -> ConnectView {
        // The verdict lists the first destinations its rules fire for: those in order too.
        let best = super::best_of(self.ranked(), self.top.max(crate::verdict::MAX_LISTED), by_trouble);
        let top = self.top.min(best.len());
        let chosen = super::Picked::of(best.iter().map(|(_, _, s)| *s));
        let mut rest = PackedCounts::with_capacity(self.dests.len() - top);
        for (_, a, s) in &best[top..] {
            rest.push(*a, &s.counts.window());
        }
        for (a, s) in self.dests.iter().filter(|(_, s)| !chosen.contains(s)) {
            rest.push(a.addr(), &s.counts.window());
        }
        ConnectView {
            destinations: best[..top].iter().map(|(_, a, s)| view(*a, s)).collect(),
            destinations_omitted: 0,
            rest,
            local_ports: self.local_ports(),
            top: self.top,
        }
    }
}

/// A destination with its rank: window failures, since-start failures, window attempts.
type Ranked<'a> = ((u64, u64, u64), SocketAddr, &'a DestState);

fn rank(s: &DestState) -> (u64, u64, u64) {
    let w = s.counts.window();
    (failures(&w), failures(&s.counts.total()), w[dc::ATTEMPTS])
}

/// The most troubled first; ties by address.
fn by_trouble(a: &Ranked<'_>, b: &Ranked<'_>) -> std::cmp::Ordering {
    b.0.cmp(&a.0).then_with(|| addr_cmp(&a.1, &b.1))
}

/// A destination as the table keys it: 19 bytes where a `SocketAddr` takes 32 (its IPv6
/// flow label and scope id, always zero for a connect's destination, are not kept). The
/// table's index holds one per bucket, 131,072 buckets at 100,000 destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct DestKey {
    ip: [u8; 16],
    port: [u8; 2],
    v6: bool,
}

impl DestKey {
    fn of(a: SocketAddr) -> DestKey {
        let (ip, v6) = match a.ip() {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), false),
            IpAddr::V6(v6) => (v6.octets(), true),
        };
        DestKey { ip, port: a.port().to_ne_bytes(), v6 }
    }

    fn addr(&self) -> SocketAddr {
        let v6 = Ipv6Addr::from(self.ip);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) if !self.v6 => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        };
        SocketAddr::new(ip, u16::from_ne_bytes(self.port))
    }
}

/// `SocketAddr`'s order, with IPv4 compared as integers: when many destinations tie (an
/// outage fails them all alike), the derived order's byte-array compares were most of the
/// sort.
fn addr_cmp(a: &SocketAddr, b: &SocketAddr) -> std::cmp::Ordering {
    match (a, b) {
        (SocketAddr::V4(a), SocketAddr::V4(b)) => (a.ip().to_bits(), a.port()).cmp(&(b.ip().to_bits(), b.port())),
        _ => a.cmp(b),
    }
}

fn view(dest: SocketAddr, s: &DestState) -> DestView {
    DestView {
        dest,
        window: Period {
            counts: Counts { values: s.counts.window(), names: &dc::NAMES },
            connect_latency_us: s.latency.window(),
        },
        total: Period {
            counts: Counts { values: s.counts.total(), names: &dc::NAMES },
            connect_latency_us: s.latency.total(),
        },
        last_failure: s.details.last_failure.as_ref().map(|r| FailureView {
            outcome: outcome_name(r.outcome),
            errno: i32::from(r.errno),
            syn_retransmits: u32::from(r.syn_retransmits),
            after_us: u64::from(r.after_us),
            pid: r.pid,
            comm: s.details.processes.iter().find(|p| p.pid == r.pid).map(|p| p.comm().to_owned()).unwrap_or_default(),
        }),
        processes: s.details.processes.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(dest: &str, outcome: Outcome, ms: u64) -> ConnectRecord {
        ConnectRecord {
            at: Mono(0),
            dest: dest.parse().unwrap(),
            outcome,
            latency: Duration::from_millis(ms),
            error: if outcome == Outcome::Refused { 111 } else { 0 },
            syn_retransmits: 0,
            pid: 7,
            comm: "curl".into(),
            local_port: 0,
        }
    }

    fn counts(pairs: &[(usize, u64)]) -> DestCounts {
        let mut c = [0; dc::COUNT];
        for &(i, v) in pairs {
            c[i] = v;
        }
        c
    }

    /// A whole reading of the kernel's table (no ports).
    fn full_reading(dests: Vec<(SocketAddr, DestCounts)>) -> TcpSnapshot {
        TcpSnapshot { gone: None, held: 0, dests, ports: vec![] }
    }

    #[test]
    fn past_the_top_the_rules_still_see_every_destination_and_the_report_counts_them() {
        let mut layer = ConnectLayer::new(Duration::from_secs(10), 100, 2);
        let dests: Vec<SocketAddr> = (1..=5).map(|i| format!("10.0.0.{i}:81").parse().unwrap()).collect();
        // 10.0.0.1 is refused 5 times, 10.0.0.2 four times, and so on.
        let snap = full_reading(dests.iter().enumerate().map(|(i, d)| (*d, counts(&[(dc::ATTEMPTS, 5 - i as u64), (dc::REFUSED, 5 - i as u64)]))).collect());
        layer.on_snapshot(Mono(1_000_000_000), &snap);
        let mut v = layer.view();
        assert_eq!(v.destinations.iter().map(|d| d.dest).collect::<Vec<_>>(), dests[..2], "the two most refused, whole");
        assert_eq!(v.rest.len(), 3);
        let (verdicts, _) = crate::verdict::evaluate(&[&v], 10.0, 0, &crate::config::Config::default());
        assert_eq!(verdicts.tcp_tls.destinations.len(), 5, "every refused destination is judged: {:?}", verdicts.tcp_tls);
        v.limit();
        assert_eq!((v.destinations.len(), v.destinations_omitted, v.rest.len()), (2, 3, 0));
    }

    #[test]
    fn the_last_failure_names_its_process_even_past_the_processes_kept() {
        let mut layer = ConnectLayer::new(Duration::from_secs(10), 100, 10);
        for (i, comm) in ["a", "b", "c", "d"].iter().enumerate() {
            layer.on_connect(&ConnectRecord { comm: (*comm).into(), pid: i as u32 + 1, ..rec("10.0.0.9:443", Outcome::Established, 1) });
        }
        let late = ConnectRecord {
            comm: "late".into(),
            pid: 99,
            error: 110,
            syn_retransmits: 300,
            latency: Duration::from_secs(2 * 3600),
            ..rec("10.0.0.9:443", Outcome::TimedOut, 0)
        };
        layer.on_connect(&late);
        let v = &layer.destinations()[0];
        let f = v.last_failure.as_ref().unwrap();
        assert_eq!((f.comm.as_str(), f.pid, f.errno), ("late", 99, 110));
        assert_eq!((f.syn_retransmits, f.after_us), (255, u64::from(u32::MAX)), "saturated, not wrapped");
        assert_eq!(v.processes.len(), MAX_PROCESSES);
        assert!(v.processes.contains(&"late[99]".to_owned()), "{:?}", v.processes);
    }

    #[test]
    fn a_destination_key_gives_back_its_address() {
        for a in ["10.0.0.1:80", "0.0.0.0:0", "[2001:db8::1]:443", "[::ffff:10.0.0.1]:80", "[::]:65535"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(DestKey::of(a).addr(), a);
        }
        // IPv4 and the same address mapped into IPv6 are two destinations.
        assert_ne!(DestKey::of("10.0.0.1:80".parse().unwrap()), DestKey::of("[::ffff:10.0.0.1]:80".parse().unwrap()));
        assert_eq!(size_of::<DestKey>(), 19);
        assert_eq!(size_of::<Details>(), 48, "inline in each destination's state");
    }

    #[test]
    fn the_view_keeps_the_order_of_a_full_sort_for_the_listed_and_every_other_destination() {
        // 3,000 destinations with many ties, more than the selection's buffer holds.
        let mut layer = ConnectLayer::new(Duration::from_secs(10), 10_000, 10);
        let snap = full_reading(
            (0..3000u32)
                .map(|i| {
                    let d = SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i * 7919 % 3001), 80));
                    (d, counts(&[(dc::ATTEMPTS, u64::from(i % 13) + 1), (dc::REFUSED, u64::from(i % 5)), (dc::TIMED_OUT, u64::from(i % 3 == 0))]))
                })
                .collect(),
        );
        layer.on_snapshot(Mono(1_000_000_000), &snap);
        let sorted: Vec<SocketAddr> = layer.destinations().iter().map(|d| d.dest).collect();
        let v = layer.view();
        assert_eq!(v.destinations.iter().map(|d| d.dest).collect::<Vec<_>>(), sorted[..10]);
        let rest: Vec<SocketAddr> = v.rest.iter().map(|(a, _)| a).collect();
        assert_eq!(rest[..90], sorted[10..100], "the ones the verdict lists, in order");
        let mut others = rest[90..].to_vec();
        others.sort();
        let mut expected = sorted[100..].to_vec();
        expected.sort();
        assert_eq!(others, expected, "every other destination once");
    }

    #[test]
    fn a_verdict_over_thousands_of_failing_destinations_lists_the_first_and_counts_the_rest() {
        let mut layer = ConnectLayer::new(Duration::from_secs(10), 10_000, 100);
        let snap = full_reading(
            (0..3000u32)
                .map(|i| (SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i), 80)), counts(&[(dc::ATTEMPTS, 1), (dc::REFUSED, 1)])))
                .collect(),
        );
        layer.on_snapshot(Mono(1_000_000_000), &snap);
        let v = layer.view();
        let (verdicts, _) = crate::verdict::evaluate(&[&v], 10.0, 0, &crate::config::Config::default());
        let t = &verdicts.tcp_tls;
        assert_eq!((t.destinations.len(), t.destinations_omitted), (100, 2900));
        assert_eq!(t.evidence.len(), 21, "20 lines and what was left out");
        assert_eq!(t.evidence[20], "… and 2980 more lines like these (the sections list every destination)");
    }

    #[test]
    fn window_and_totals_follow_kernel_readings_and_latency_follows_events() {
        let t0 = Mono(1_000);
        let mut layer = ConnectLayer::new(Duration::from_secs(2), 100, 100);
        let ok: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let bad: SocketAddr = "10.0.0.3:81".parse().unwrap();
        for ms in [1, 2, 3] {
            layer.on_connect(&rec("10.0.0.2:80", Outcome::Established, ms));
        }
        layer.on_connect(&rec("10.0.0.3:81", Outcome::Refused, 0));
        let snap = TcpSnapshot {
            gone: None,
            held: 0,
            dests: vec![
                (ok, counts(&[(dc::ATTEMPTS, 3), (dc::ESTABLISHED, 3)])),
                (bad, counts(&[(dc::ATTEMPTS, 1), (dc::REFUSED, 1)])),
            ],
            ports: vec![(80, [1, 0, 0, 0])],
        };
        layer.on_snapshot(t0, &snap);
        let v = layer.destinations();
        assert_eq!(v[0].dest, bad, "failing destination sorts first");
        assert_eq!(v[0].window.get(dc::REFUSED), 1);
        assert_eq!(v[0].last_failure.as_ref().unwrap().outcome, "refused");
        assert_eq!(v[1].window.connect_latency_us.count, 3);
        assert_eq!(v[1].total.connect_latency_us.count, 3);
        assert!((1_990..=2_010).contains(&v[1].window.connect_latency_us.p50), "{:?}", v[1].window.connect_latency_us);
        assert_eq!(layer.local_ports()[0].total.get(port_counter::SYNACK_RETRANSMITS), 1);

        // Two quiet seconds later the window is empty, the totals are not.
        layer.on_snapshot(t0.after(Duration::from_secs(1)), &snap);
        layer.on_snapshot(t0.after(Duration::from_secs(2)), &snap);
        let v = layer.destinations();
        let okv = v.iter().find(|d| d.dest == ok).unwrap();
        assert_eq!(okv.window.get(dc::ATTEMPTS), 0);
        assert_eq!(okv.window.connect_latency_us.count, 0);
        assert_eq!(okv.total.get(dc::ESTABLISHED), 3);
        assert_eq!(okv.total.connect_latency_us.count, 3);
        assert_eq!(okv.processes, vec!["curl[7]".to_owned()]);
    }

    #[test]
    fn a_process_is_held_inline_and_named_as_the_reports_name_it() {
        assert_eq!(Process::of("curl", 7).to_string(), "curl[7]");
        // A comm of 16 bytes or more keeps what fits, cut at a character boundary.
        assert_eq!(Process::of("0123456789abcdefXYZ", 1).to_string(), "0123456789abcdef[1]");
        assert_eq!(Process::of("0123456789abcdeé", 2).comm(), "0123456789abcde", "é straddles byte 16");
        assert_eq!(Process::of("", 3).to_string(), "[3]");
    }

    #[test]
    fn counts_serialise_in_kernel_order() {
        let c = Counts { values: counts(&[(dc::REFUSED, 2)]), names: &dc::NAMES };
        let s = serde_json::to_string(&c).unwrap();
        assert!(s.starts_with(r#"{"attempts":0,"established":0,"refused":2,"#), "{s}");
    }

    #[test]
    fn a_reading_of_the_changes_only_leaves_the_others_as_they_read() {
        let t0 = Mono(1_000);
        let mut layer = ConnectLayer::new(Duration::from_secs(2), 100, 100);
        let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) = ("10.0.0.1:80".parse().unwrap(), "10.0.0.2:80".parse().unwrap(), "10.0.0.3:80".parse().unwrap());
        let refused = |n| counts(&[(dc::ATTEMPTS, n), (dc::REFUSED, n)]);
        layer.on_snapshot(t0, &TcpSnapshot { gone: Some(vec![]), held: 3, dests: vec![(a, refused(1)), (b, refused(2)), (c, refused(3))], ports: vec![] });
        // One second later only b changed, and c is gone from the kernel's table.
        let snap = TcpSnapshot { gone: Some(vec![c]), held: 2, dests: vec![(b, refused(5))], ports: vec![] };
        layer.on_snapshot(t0.after(Duration::from_secs(1)), &snap);
        let by = |layer: &ConnectLayer, d: SocketAddr| layer.destinations().into_iter().find(|v| v.dest == d).unwrap();
        assert_eq!((by(&layer, a).window.get(dc::REFUSED), by(&layer, a).total.get(dc::REFUSED)), (1, 1), "a: unchanged, not gone");
        assert_eq!((by(&layer, b).window.get(dc::REFUSED), by(&layer, b).total.get(dc::REFUSED)), (5, 5));
        assert_eq!(by(&layer, c).total.get(dc::REFUSED), 3, "c's count outlives its entry");
        assert_eq!(layer.evictions, 1, "c's eviction, and only it");
        // The window still moves for what did not change: a's refusals leave it after 2 s.
        layer.on_snapshot(t0.after(Duration::from_secs(2)), &TcpSnapshot { gone: Some(vec![]), held: 2, dests: vec![], ports: vec![] });
        assert_eq!((by(&layer, a).window.get(dc::REFUSED), by(&layer, a).total.get(dc::REFUSED)), (0, 1));
        assert_eq!(by(&layer, b).window.get(dc::REFUSED), 3, "b's first 2 left the window, its last 3 stay");
        assert_eq!(layer.evictions, 1);
    }

    #[test]
    fn failures_grown_are_each_readings_new_failures_per_destination() {
        let t0 = Mono(1_000);
        let mut layer = ConnectLayer::new(Duration::from_secs(2), 100, 100);
        let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) = ("10.0.0.1:80".parse().unwrap(), "10.0.0.2:80".parse().unwrap(), "10.0.0.3:80".parse().unwrap());
        let grown = |layer: &ConnectLayer| {
            let mut g = layer.failures_grown().unwrap();
            g.sort();
            g.into_iter().map(|(series, tag, n)| format!("{series} {tag} {n}")).collect::<Vec<_>>()
        };
        assert!(grown(&layer).is_empty(), "nothing read yet");
        let c_counts = |established, timed_out| counts(&[(dc::ATTEMPTS, established + timed_out), (dc::ESTABLISHED, established), (dc::TIMED_OUT, timed_out)]);
        let refused = |n| counts(&[(dc::ATTEMPTS, n), (dc::REFUSED, n)]);
        layer.on_snapshot(t0, &TcpSnapshot { gone: Some(vec![]), held: 3, dests: vec![(a, refused(2)), (b, refused(1)), (c, c_counts(4, 0))], ports: vec![] });
        assert_eq!(grown(&layer), ["tcp_connect 10.0.0.1:80 2", "tcp_connect 10.0.0.2:80 1"], "c only succeeded");
        // A second later: a refused 3 more, b nothing (not in the reading), c timed out once.
        let t1 = t0.after(Duration::from_secs(1));
        layer.on_snapshot(t1, &TcpSnapshot { gone: Some(vec![]), held: 3, dests: vec![(a, refused(5)), (c, c_counts(6, 1))], ports: vec![] });
        assert_eq!(grown(&layer), ["tcp_connect 10.0.0.1:80 3", "tcp_connect 10.0.0.3:80 1"]);
        // Nothing changed: nothing grew, though the window still holds failures.
        layer.on_snapshot(t1.after(Duration::from_secs(1)), &TcpSnapshot { gone: Some(vec![]), held: 3, dests: vec![], ports: vec![] });
        assert!(grown(&layer).is_empty());
        // a's kernel entry was evicted and came back with 2: all of it is new.
        layer.on_snapshot(t1.after(Duration::from_secs(2)), &TcpSnapshot { gone: Some(vec![]), held: 3, dests: vec![(a, refused(2))], ports: vec![] });
        assert_eq!(grown(&layer), ["tcp_connect 10.0.0.1:80 2"]);
    }

    #[test]
    fn addresses_order_as_socket_addrs_do() {
        let addrs: Vec<SocketAddr> = ["10.0.0.2:80", "10.0.0.10:80", "10.0.0.2:443", "9.255.255.255:1", "[::1]:80", "[::1]:79", "10.0.0.2:79"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        for a in &addrs {
            for b in &addrs {
                assert_eq!(addr_cmp(a, b), a.cmp(b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn userspace_forgets_only_what_the_kernel_evicted_and_counts_evictions() {
        let t0 = Mono(1_000);
        let mut layer = ConnectLayer::new(Duration::from_secs(10), 2, 100);
        let snap = |ids: &[u8]| full_reading(ids.iter().map(|i| (SocketAddr::from(([10, 0, 0, *i], 80)), counts(&[(dc::ATTEMPTS, 1)]))).collect());
        layer.on_snapshot(t0, &snap(&[1, 2, 3]));
        assert_eq!(layer.destinations().len(), 3, "all three are still in the kernel");
        // The kernel evicted 10.0.0.2: userspace may now forget it, and counts the eviction.
        layer.on_snapshot(t0.after(Duration::from_secs(1)), &snap(&[1, 3]));
        let kept: Vec<SocketAddr> = layer.destinations().iter().map(|d| d.dest).collect();
        assert_eq!(kept.len(), 2);
        assert!(!kept.contains(&"10.0.0.2:80".parse().unwrap()), "{kept:?}");
        assert_eq!(layer.evictions, 1);
        // Nothing is counted twice: 10.0.0.1 and 10.0.0.3 still total 1 attempt each.
        assert!(layer.destinations().iter().all(|d| d.total.get(dc::ATTEMPTS) == 1));
    }
}
