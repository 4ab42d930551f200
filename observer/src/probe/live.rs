//! The live source: the kernel's ring buffers and counter maps, read on an interval.

use std::{collections::VecDeque, time::SystemTime};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{
        Interest,
        unix::{AsyncFd, AsyncFdReadyMutGuard},
    },
    time::{Interval, MissedTickBehavior, interval_at},
};

use super::{Probe, Rings, dns_rings::DnsRings, monotonic_ns, tables, route::DropReasons, routes::Routes, sockets::HttpResolver};
use crate::{
    events::{Counters, Event, Input, Mono, Tick, decode_connect, decode_http, decode_icmp, decode_route, decode_tls},
    source::Source,
};

/// How often the rings that wake userspace in batches are drained without a wakeup: a bound
/// on how late an event is.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

pub struct LiveSource {
    // Declared before `probe`: the ring buffers go before the programs that fill them.
    connect: AsyncFd<RingBuf<MapData>>,
    dns: DnsRings,
    tls: AsyncFd<RingBuf<MapData>>,
    http: AsyncFd<RingBuf<MapData>>,
    icmp: AsyncFd<RingBuf<MapData>>,
    route: AsyncFd<RingBuf<MapData>>,
    pub probe: Probe,
    /// Fills in the layer 3 records: interfaces, drop reason names, the far end of a drop.
    routes: RouteFill,
    /// Fills in what the HTTP records leave to userspace (local addresses, OpenSSL sockets).
    resolver: HttpResolver,
    ticks: Interval,
    /// The connect, DNS, TLS and HTTP programs wake userspace only once a share of their ring
    /// fills up; this drains them meanwhile.
    drains: Interval,
    /// Inputs ready to hand out (a tick waits behind the events drained before it).
    ready: VecDeque<Input>,
    /// Ring-buffer records too short or of an unknown kind.
    undecodable: u64,
    read_time: std::time::Duration,
}

fn poll(ring: RingBuf<MapData>, what: &str) -> anyhow::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until the AsyncFd
    // (which owns the RingBuf) is dropped.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .with_context(|| format!("cannot poll the {what} ring buffer"))
}

/// Records decoded into one batch of events, at most. Under a flood a ring holds tens of
/// thousands of records per drain: one vector of them all grew by reallocation (copying
/// and faulting in megabytes), by a flood's profile about a sixth of observer's CPU;
/// batches of this size are allocated once each and stay in cache.
pub(super) const BATCH: usize = 1024;

/// Up to [`BATCH`] records of a ring buffer, decoded, and whether more are waiting; what
/// cannot be decoded is counted. `wrap` makes the event, and completes it where the record
/// leaves that to userspace.
fn drain<T>(
    ring: &mut RingBuf<MapData>,
    decode: impl Fn(&[u8]) -> Option<T>,
    mut wrap: impl FnMut(T) -> Event,
    bad: &mut u64,
) -> (Vec<Event>, bool) {
    let mut out = Vec::with_capacity(64);
    while out.len() < BATCH {
        let Some(item) = ring.next() else { return (out, false) };
        match decode(&item) {
            Some(v) => out.push(wrap(v)),
            None => *bad += 1,
        }
    }
    (out, true)
}

/// A batch from a ring that polled readable. It stays ready while more than a batch waits,
/// so that the next poll comes back at once for the rest.
fn drain_ready<T>(
    mut guard: AsyncFdReadyMutGuard<'_, RingBuf<MapData>>,
    decode: impl Fn(&[u8]) -> Option<T>,
    wrap: impl FnMut(T) -> Event,
    bad: &mut u64,
) -> Vec<Event> {
    let (events, more) = drain(guard.get_inner_mut(), decode, wrap, bad);
    if !more {
        guard.clear_ready();
    }
    events
}

/// Everything in a ring buffer now, in batches queued on `ready`.
fn drain_all_into<T>(
    ring: &mut RingBuf<MapData>,
    decode: impl Fn(&[u8]) -> Option<T>,
    mut wrap: impl FnMut(T) -> Event,
    bad: &mut u64,
    ready: &mut VecDeque<Input>,
) {
    loop {
        let (events, more) = drain(ring, &decode, &mut wrap, bad);
        if !events.is_empty() {
            ready.push_back(Input::Events(events));
        }
        if !more {
            return;
        }
    }
}

/// What the route ring's records leave to userspace.
struct RouteFill {
    routes: Routes,
    reasons: DropReasons,
    /// Intervals until the routing tables are read again.
    reload_in: u32,
}

/// Read the routing tables again once per this many intervals.
const ROUTES_RELOAD_EVERY: u32 = 10;

impl RouteFill {
    fn fill(&mut self, mut e: Event) -> Event {
        match &mut e {
            Event::TcpSample(s) => s.iface = self.routes.iface(s.peer.ip()),
            Event::ConnectFailed(c) => c.iface = self.routes.iface(c.dest.ip()),
            _ => {}
        }
        e
    }

    fn fill_drop(&mut self, d: &mut crate::events::DropRec, resolver: &HttpResolver) {
        d.reason_name = self.reasons.name(d.reason);
        // The far end: the destination of what a local socket sent or of what this host
        // forwards, the source of what arrived for this host.
        d.peer = if !d.has_sk && resolver.is_local(&d.dst.ip()) && !resolver.is_local(&d.src.ip()) { d.src } else { d.dst };
        d.iface = self.routes.iface(d.peer.ip());
    }
}

/// An HTTP record, completed by the resolver (addresses of OpenSSL plaintext, local side).
fn http_event(resolver: &mut HttpResolver, mut c: crate::events::HttpChunk) -> Event {
    resolver.fill(&mut c);
    Event::Http(c)
}

impl LiveSource {
    /// Must run inside the tokio runtime (the ring buffers register with its reactor).
    pub fn new(probe: Probe, rings: Rings, interval: std::time::Duration) -> anyhow::Result<LiveSource> {
        let mut ticks = interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut drains = tokio::time::interval(DRAIN_EVERY);
        drains.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(LiveSource {
            connect: poll(rings.connect, "connect")?,
            dns: {
                let [even, odd] = rings.dns;
                DnsRings::new([poll(even, "DNS")?, poll(odd, "DNS")?])
            },
            tls: poll(rings.tls, "TLS")?,
            http: poll(rings.http, "HTTP")?,
            icmp: poll(rings.icmp, "ICMP")?,
            route: poll(rings.route, "route")?,
            routes: RouteFill { routes: Routes::new("/proc".into()), reasons: probe.drop_reasons.clone(), reload_in: ROUTES_RELOAD_EVERY },
            resolver: HttpResolver::new("/proc".into()),
            probe,
            ticks,
            drains,
            ready: VecDeque::new(),
            undecodable: 0,
            read_time: std::time::Duration::ZERO,
        })
    }

    /// Every ring, emptied in batches onto `ready`.
    fn drain_all(&mut self) {
        let (bad, ready) = (&mut self.undecodable, &mut self.ready);
        drain_all_into(self.connect.get_mut(), decode_connect, Event::Connect, bad, ready);
        self.dns.drain_into(bad, ready);
        drain_all_into(self.tls.get_mut(), decode_tls, Event::Tls, bad, ready);
        drain_all_into(self.http.get_mut(), decode_http, |c| http_event(&mut self.resolver, c), bad, ready);
        drain_all_into(self.icmp.get_mut(), decode_icmp, |e| e, bad, ready);
        drain_all_into(self.route.get_mut(), decode_route, |e| self.routes.fill(e), bad, ready);
    }

    /// Read the counters, then drain the rings, and hand out the events before the tick. In
    /// this order every message the counters include has its event processed first (the
    /// kernel counts a message, then copies it): the layers never judge a count whose event
    /// is still in the ring, such as an NXDOMAIN that a search-list success would explain.
    fn close_interval(&mut self) {
        let started = std::time::Instant::now();
        let notes = self.probe.refresh_interfaces();
        let at = Mono(monotonic_ns());
        // Before the tables are read: see tables::evictions.
        let table_counts = self.probe.table_counts();
        let mut drops = self.probe.drop_snapshot();
        for d in &mut drops {
            self.routes.fill_drop(d, &self.resolver);
        }
        let counters = Counters { tcp: self.probe.snapshot(), dns: self.probe.dns_snapshot(), drops };
        let mut lost = self.probe.lost_counts();
        let live = tables::Live {
            dests: counters.tcp.held,
            ports: counters.tcp.ports.len(),
            resolvers: counters.dns.resolvers.len(),
            ifaces: counters.dns.per_interface.len(),
            drops: counters.drops.len(),
        };
        lost.extend(tables::evictions(&table_counts, &live, &self.probe.table_capacity()));
        self.drain_all();
        lost.push(("undecodable_events", self.undecodable));
        lost.push(("ssl_socket_unresolved", self.resolver.unresolved));
        self.resolver.refresh_local();
        self.routes.reload_in = self.routes.reload_in.saturating_sub(1);
        if self.routes.reload_in == 0 {
            self.routes.routes.reload();
            self.routes.reload_in = ROUTES_RELOAD_EVERY;
        }
        let tick = Tick { at, wall: SystemTime::now(), counters, lost, disabled: self.probe.disabled(), notes };
        self.ready.push_back(Input::Tick(tick));
        self.read_time = started.elapsed();
    }

    /// How long the last interval's reading of the tables and rings took.
    pub fn read_time(&self) -> std::time::Duration {
        self.read_time
    }
}

impl Source for LiveSource {
    async fn next(&mut self) -> anyhow::Result<Option<Input>> {
        if let Some(input) = self.ready.pop_front() {
            return Ok(Some(input));
        }
        let LiveSource { connect, dns, tls, http, icmp, route, routes, resolver, ticks, drains, undecodable, ready, .. } = self;
        let [dns_even, dns_odd] = &mut dns.rings;
        let events = tokio::select! {
            guard = connect.readable_mut() => drain_ready(guard.context("polling the connect ring buffer failed")?, decode_connect, Event::Connect, undecodable),
            // Either DNS ring: both are read, as one stream (see DnsRings). Readiness is
            // cleared first, so that a wakeup during the read is not lost.
            guard = dns_even.readable_mut() => {
                guard.context("polling the DNS ring buffer failed")?.clear_ready();
                dns.drain_into(undecodable, ready);
                Vec::new()
            }
            guard = dns_odd.readable_mut() => {
                guard.context("polling the DNS ring buffer failed")?.clear_ready();
                dns.drain_into(undecodable, ready);
                Vec::new()
            }
            guard = tls.readable_mut() => drain_ready(guard.context("polling the TLS ring buffer failed")?, decode_tls, Event::Tls, undecodable),
            guard = http.readable_mut() => drain_ready(guard.context("polling the HTTP ring buffer failed")?, decode_http, |c| http_event(resolver, c), undecodable),
            guard = icmp.readable_mut() => drain_ready(guard.context("polling the ICMP ring buffer failed")?, decode_icmp, |e| e, undecodable),
            guard = route.readable_mut() => drain_ready(guard.context("polling the route ring buffer failed")?, decode_route, |e| routes.fill(e), undecodable),
            _ = drains.tick() => {
                drain_all_into(connect.get_mut(), decode_connect, Event::Connect, undecodable, ready);
                dns.drain_into(undecodable, ready);
                drain_all_into(tls.get_mut(), decode_tls, Event::Tls, undecodable, ready);
                drain_all_into(http.get_mut(), decode_http, |c| http_event(resolver, c), undecodable, ready);
                Vec::new()
            }
            _ = ticks.tick() => {
                self.close_interval();
                return Ok(self.ready.pop_front());
            }
        };
        if events.is_empty() && let Some(input) = self.ready.pop_front() {
            return Ok(Some(input));
        }
        Ok(Some(Input::Events(events)))
    }

    fn finish(&mut self) -> Vec<Input> {
        self.close_interval();
        self.dns.release_held(&mut self.ready);
        self.ready.drain(..).collect()
    }
}
