//! Layer 3, ICMP errors: destination unreachable (by kind), time exceeded and fragmentation
//! needed / packet too big, arriving at this host, per destination of the packet they quote,
//! with the routers that sent them.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::Serialize;

use super::{Aggregator, Map, counts::Counts, window::Tally};
use crate::events::{Event, IcmpMessage, Mono, Tick};

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

#[derive(Debug)]
pub struct IcmpLayer {
    window: Duration,
    max_dests: usize,
    top: usize,
    dests: Map<SocketAddr, DestState>,
}

/// The `icmp` section of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IcmpView {
    /// The most errors in the window first.
    pub destinations: Vec<DestView>,
    pub destinations_omitted: usize,
    #[serde(skip)]
    pub top: usize,
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
        IcmpLayer { window, max_dests, top, dests: Map::default() }
    }

    fn on_message(&mut self, m: &IcmpMessage) {
        if !self.dests.contains_key(&m.dest)
            && self.dests.len() >= self.max_dests
            && let Some(k) = self.dests.iter().min_by_key(|(_, d)| d.last_seen).map(|(k, _)| *k)
        {
            self.dests.remove(&k);
        }
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
    }
}

impl Aggregator for IcmpLayer {
    type View = IcmpView;

    fn on_event(&mut self, event: &Event) {
        if let Event::Icmp(m) = event {
            self.on_message(m);
        }
    }

    fn on_tick(&mut self, tick: &Tick) {
        for d in self.dests.values_mut() {
            d.counts.close(tick.at, self.window);
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
        IcmpView { destinations, destinations_omitted: 0, top: self.top }
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
}
