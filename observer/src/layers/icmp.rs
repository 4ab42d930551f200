//! Layer 3, ICMP errors and path changes: destination unreachable (by kind), time exceeded
//! and fragmentation needed / packet too big, arriving at this host, per destination of the
//! packet they quote, with the routers that sent them; and the hop count to each peer,
//! inferred from the TTL of its SYN-ACKs, with its changes.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::Serialize;

use super::{Aggregator, Map, counts::Counts, make_room, window::Tally};
use crate::events::{Event, HopSample, IcmpMessage, Mono, Tick};

observer_common::counter_set! {
    /// Per quoted destination, counted in userspace.
    pub mod icmp_counter {
        /// Every error.
        ERRORS = "errors",
        /// No route to the network (ICMP net unreachable, ICMPv6 no route).
        NET_UNREACHABLE = "net_unreachable",
        /// The host did not answer ARP/ND on its last hop, or a filter said so.
        HOST_UNREACHABLE = "host_unreachable",
        /// Port or protocol unreachable: the host is there, nothing listens (UDP's refusal).
        PORT_UNREACHABLE = "port_unreachable",
        /// Administratively prohibited: a firewall on the path.
        PROHIBITED = "admin_prohibited",
        /// Fragmentation needed / packet too big: the path's MTU is smaller (see `mtu`).
        FRAG_NEEDED = "frag_needed",
        /// TTL or hop limit exceeded in transit: a loop, or a path longer than the TTL.
        TIME_EXCEEDED = "time_exceeded",
        /// Any other unreachable code.
        OTHER = "other_unreachable",
    }
}
use icmp_counter as ic;

/// Routers kept per destination.
const MAX_REPORTERS: usize = 8;

/// Which counter an error goes to.
pub fn kind(m: &IcmpMessage) -> usize {
    match (m.v6, m.icmp_type, m.code) {
        (false, 3, 0 | 6 | 9 | 11) => ic::NET_UNREACHABLE,
        (false, 3, 1 | 7 | 10 | 12) => ic::HOST_UNREACHABLE,
        (false, 3, 2 | 3) => ic::PORT_UNREACHABLE,
        (false, 3, 4) => ic::FRAG_NEEDED,
        (false, 3, 13..=15) => ic::PROHIBITED,
        (false, 11, _) => ic::TIME_EXCEEDED,
        (true, 1, 0) => ic::NET_UNREACHABLE,
        (true, 1, 1 | 5 | 6) => ic::PROHIBITED,
        (true, 1, 3) => ic::HOST_UNREACHABLE,
        (true, 1, 4) => ic::PORT_UNREACHABLE,
        (true, 2, _) => ic::FRAG_NEEDED,
        (true, 3, _) => ic::TIME_EXCEEDED,
        _ => ic::OTHER,
    }
}

#[derive(Debug, Default)]
struct DestState {
    counts: Tally<{ ic::COUNT }>,
    reporters: BTreeSet<IpAddr>,
    mtu: Option<u32>,
    last_seen: Mono,
}

/// Per peer: [SYN-ACKs sampled, hop-count changes].
const SAMPLES: usize = 0;
const CHANGES: usize = 1;

#[derive(Debug, Default)]
struct PathState {
    counts: Tally<2>,
    hops: u8,
    ttl: u8,
    /// The last change: (hops before, hops after).
    last_change: Option<(u8, u8)>,
    /// A different hop count seen once: a change only if the next SYN-ACK says it again (one
    /// odd packet, or ECMP paths of two lengths alternating, is not a path change).
    candidate: Option<u8>,
    last_seen: Mono,
}

#[derive(Debug)]
pub struct IcmpLayer {
    window: Duration,
    max_dests: usize,
    top: usize,
    dests: Map<SocketAddr, DestState>,
    paths: Map<IpAddr, PathState>,
}

/// Hops from a received TTL: the sender started at 64, 128 or 255 (the common initial
/// values), whichever is the nearest at or above it.
pub fn hops(ttl: u8) -> u8 {
    let initial: u8 = if ttl <= 64 { 64 } else if ttl <= 128 { 128 } else { 255 };
    initial - ttl
}

/// The `icmp` section of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IcmpView {
    /// The most errors in the window first.
    pub destinations: Vec<DestView>,
    pub destinations_omitted: usize,
    /// Hop counts per peer from SYN-ACK TTLs, the most changes in the window first.
    pub paths: Vec<PathView>,
    pub paths_omitted: usize,
    #[serde(skip)]
    pub top: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathView {
    pub peer: IpAddr,
    /// Inferred from the last SYN-ACK's TTL (`ttl`).
    pub hops: u8,
    pub ttl: u8,
    /// SYN-ACKs sampled, and hop-count changes, in the window and since start.
    pub samples_window: u64,
    pub changes_window: u64,
    pub changes_total: u64,
    /// The last change of the hop count.
    pub last_change: Option<PathChange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PathChange {
    pub before: u8,
    pub after: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestView {
    /// The quoted packet's destination (port 0: neither TCP nor UDP).
    pub dest: SocketAddr,
    pub window: Counts<{ ic::COUNT }>,
    pub total: Counts<{ ic::COUNT }>,
    /// The routers or hosts that sent the errors.
    pub reporters: Vec<IpAddr>,
    /// The last next-hop MTU a fragmentation-needed error gave.
    pub mtu: Option<u32>,
}

impl IcmpLayer {
    pub fn new(window: Duration, max_dests: usize, top: usize) -> IcmpLayer {
        IcmpLayer { window, max_dests, top, dests: Map::default(), paths: Map::default() }
    }

    fn on_hops(&mut self, s: &HopSample) {
        make_room(&mut self.paths, &s.peer, self.max_dests, |p| p.last_seen);
        let new = !self.paths.contains_key(&s.peer);
        let p = self.paths.entry(s.peer).or_default();
        let h = hops(s.ttl);
        p.counts.bump(SAMPLES);
        p.last_seen = s.at;
        if new || h == p.hops {
            (p.hops, p.ttl, p.candidate) = (h, s.ttl, None);
        } else if p.candidate == Some(h) {
            p.counts.bump(CHANGES);
            p.last_change = Some((p.hops, h));
            (p.hops, p.ttl, p.candidate) = (h, s.ttl, None);
        } else {
            p.candidate = Some(h);
        }
    }

    fn on_message(&mut self, m: &IcmpMessage) {
        make_room(&mut self.dests, &m.dest, self.max_dests, |d| d.last_seen);
        let d = self.dests.entry(m.dest).or_default();
        d.last_seen = m.at;
        d.counts.bump(ic::ERRORS);
        let k = kind(m);
        d.counts.bump(k);
        if k == ic::FRAG_NEEDED && m.mtu > 0 {
            d.mtu = Some(m.mtu);
        }
        if d.reporters.len() < MAX_REPORTERS {
            d.reporters.insert(m.reporter);
        }
    }
}

impl IcmpView {
    pub fn limit(&mut self) {
        self.destinations_omitted += self.destinations.len().saturating_sub(self.top);
        self.destinations.truncate(self.top);
        self.paths_omitted += self.paths.len().saturating_sub(self.top);
        self.paths.truncate(self.top);
    }
}

impl Aggregator for IcmpLayer {
    type View = IcmpView;

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::Icmp(m) => self.on_message(m),
            Event::Hops(s) => self.on_hops(s),
            // A response's TTL: the hop count to the resolver that sent it.
            Event::Dns(m) if m.is_response => {
                if let Some(ttl) = m.ttl {
                    let peer = m.answerer.unwrap_or(m.resolver).ip();
                    self.on_hops(&HopSample { at: m.at, peer, ttl });
                }
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, tick: &Tick) {
        for d in self.dests.values_mut() {
            d.counts.close(tick.at, self.window);
        }
        for p in self.paths.values_mut() {
            p.counts.close(tick.at, self.window);
        }
    }

    fn lost(&self) -> Vec<(&'static str, u64)> {
        vec![]
    }

    fn view(&self) -> IcmpView {
        let counts = |values| Counts { values, names: &ic::NAMES };
        let mut destinations: Vec<DestView> = self
            .dests
            .iter()
            .map(|(dest, d)| DestView {
                dest: *dest,
                window: counts(d.counts.window()),
                total: counts(d.counts.total()),
                reporters: d.reporters.iter().copied().collect(),
                mtu: d.mtu,
            })
            .collect();
        destinations.sort_by(|a, b| {
            (b.window.get(ic::ERRORS), b.total.get(ic::ERRORS), a.dest).cmp(&(a.window.get(ic::ERRORS), a.total.get(ic::ERRORS), b.dest))
        });
        let mut paths: Vec<PathView> = self
            .paths
            .iter()
            .map(|(peer, p)| {
                let (w, t) = (p.counts.window(), p.counts.total());
                PathView {
                    peer: *peer,
                    hops: p.hops,
                    ttl: p.ttl,
                    samples_window: w[SAMPLES],
                    changes_window: w[CHANGES],
                    changes_total: t[CHANGES],
                    last_change: p.last_change.map(|(before, after)| PathChange { before, after }),
                }
            })
            .collect();
        paths.sort_by(|a, b| (b.changes_window, b.samples_window, a.peer).cmp(&(a.changes_window, a.samples_window, b.peer)));
        IcmpView { destinations, destinations_omitted: 0, paths, paths_omitted: 0, top: self.top }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(v6: bool, icmp_type: u8, code: u8) -> IcmpMessage {
        IcmpMessage {
            at: Mono(1),
            dest: "10.0.0.9:443".parse().unwrap(),
            reporter: "10.0.0.1".parse().unwrap(),
            v6,
            icmp_type,
            code,
            proto: 6,
            mtu: 1400,
        }
    }

    #[test]
    fn icmp_and_icmpv6_codes_map_to_the_same_kinds() {
        for (v6, t, c, k) in [
            (false, 3, 0, ic::NET_UNREACHABLE),
            (false, 3, 1, ic::HOST_UNREACHABLE),
            (false, 3, 3, ic::PORT_UNREACHABLE),
            (false, 3, 4, ic::FRAG_NEEDED),
            (false, 3, 13, ic::PROHIBITED),
            (false, 11, 0, ic::TIME_EXCEEDED),
            (false, 3, 5, ic::OTHER),
            (true, 1, 0, ic::NET_UNREACHABLE),
            (true, 1, 3, ic::HOST_UNREACHABLE),
            (true, 1, 4, ic::PORT_UNREACHABLE),
            (true, 1, 1, ic::PROHIBITED),
            (true, 2, 0, ic::FRAG_NEEDED),
            (true, 3, 0, ic::TIME_EXCEEDED),
        ] {
            assert_eq!(kind(&msg(v6, t, c)), k, "v6 {v6} type {t} code {c}");
        }
    }

    #[test]
    fn errors_count_per_destination_with_their_routers_and_mtu() {
        let mut l = IcmpLayer::new(Duration::from_secs(10), 10, 10);
        l.on_event(&Event::Icmp(msg(false, 3, 1)));
        l.on_event(&Event::Icmp(msg(false, 3, 4)));
        let v = l.view();
        let d = &v.destinations[0];
        assert_eq!((d.total.get(ic::ERRORS), d.total.get(ic::HOST_UNREACHABLE), d.total.get(ic::FRAG_NEEDED)), (2, 1, 1));
        assert_eq!((d.reporters.len(), d.mtu), (1, Some(1400)));
    }

    #[test]
    fn hop_counts_come_from_the_nearest_initial_ttl_and_a_change_is_counted_once() {
        assert_eq!((hops(64), hops(61), hops(128), hops(120), hops(255), hops(250)), (0, 3, 0, 8, 0, 5));
        let mut l = IcmpLayer::new(Duration::from_secs(10), 10, 10);
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        // One odd SYN-ACK, and ECMP paths of two lengths alternating, are not changes.
        for ttl in [62, 62, 61, 62, 61, 62] {
            l.on_event(&Event::Hops(HopSample { at: Mono(1), peer, ttl }));
        }
        assert_eq!(l.view().paths[0].changes_total, 0);
        for ttl in [61, 61] {
            l.on_event(&Event::Hops(HopSample { at: Mono(1), peer, ttl }));
        }
        let v = l.view();
        let p = &v.paths[0];
        assert_eq!((p.hops, p.changes_total, p.last_change), (3, 1, Some(PathChange { before: 2, after: 3 })));
    }
}
