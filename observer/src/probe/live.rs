//! The live source: the kernel's ring buffers and counter maps, read on an interval.

use std::{collections::VecDeque, time::SystemTime};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::{Interval, MissedTickBehavior, interval_at},
};

use super::{Probe, Rings, monotonic_ns, tables, route::DropReasons, routes::Routes, sockets::HttpResolver};
use crate::{
    events::{Counters, Event, Input, Mono, Tick, decode_connect, decode_dns, decode_http, decode_icmp, decode_route, decode_tls},
    source::Source,
};

/// How often the DNS ring is drained without a wakeup: a bound on how late an event is.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

pub struct LiveSource {
    // Declared before `probe`: the ring buffers go before the programs that fill them.
    connect: AsyncFd<RingBuf<MapData>>,
    dns: AsyncFd<RingBuf<MapData>>,
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
    /// The DNS programs wake userspace only when the ring fills up; this drains it meanwhile.
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

/// Everything in a ring buffer now, decoded; what cannot be decoded is counted.
/// `wrap` makes the event, and completes it where the record leaves that to userspace.
fn drain<T>(ring: &mut RingBuf<MapData>, decode: impl Fn(&[u8]) -> Option<T>, mut wrap: impl FnMut(T) -> Event, bad: &mut u64) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        match decode(&item) {
            Some(v) => out.push(wrap(v)),
            None => *bad += 1,
        }
    }
    out
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
            dns: poll(rings.dns, "DNS")?,
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

    fn drain_all(&mut self) -> Vec<Event> {
        let mut events = drain(self.connect.get_mut(), decode_connect, Event::Connect, &mut self.undecodable);
        events.extend(drain(self.dns.get_mut(), decode_dns, Event::Dns, &mut self.undecodable));
        events.extend(drain(self.tls.get_mut(), decode_tls, Event::Tls, &mut self.undecodable));
        events.extend(drain(self.http.get_mut(), decode_http, |c| http_event(&mut self.resolver, c), &mut self.undecodable));
        events.extend(drain(self.icmp.get_mut(), decode_icmp, |e| e, &mut self.undecodable));
        events.extend(drain(self.route.get_mut(), decode_route, |e| self.routes.fill(e), &mut self.undecodable));
        events
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
        let events = self.drain_all();
        if !events.is_empty() {
            self.ready.push_back(Input::Events(events));
        }
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
        let LiveSource { connect, dns, tls, http, icmp, route, routes, resolver, ticks, drains, undecodable, .. } = self;
        let events = tokio::select! {
            guard = connect.readable_mut() => {
                let mut guard = guard.context("polling the connect ring buffer failed")?;
                let events = drain(guard.get_inner_mut(), decode_connect, Event::Connect, undecodable);
                guard.clear_ready();
                events
            }
            guard = dns.readable_mut() => {
                let mut guard = guard.context("polling the DNS ring buffer failed")?;
                let events = drain(guard.get_inner_mut(), decode_dns, Event::Dns, undecodable);
                guard.clear_ready();
                events
            }
            guard = tls.readable_mut() => {
                let mut guard = guard.context("polling the TLS ring buffer failed")?;
                let events = drain(guard.get_inner_mut(), decode_tls, Event::Tls, undecodable);
                guard.clear_ready();
                events
            }
            guard = http.readable_mut() => {
                let mut guard = guard.context("polling the HTTP ring buffer failed")?;
                let events = drain(guard.get_inner_mut(), decode_http, |c| http_event(resolver, c), undecodable);
                guard.clear_ready();
                events
            }
            guard = icmp.readable_mut() => {
                let mut guard = guard.context("polling the ICMP ring buffer failed")?;
                let events = drain(guard.get_inner_mut(), decode_icmp, |e| e, undecodable);
                guard.clear_ready();
                events
            }
            guard = route.readable_mut() => {
                let mut guard = guard.context("polling the route ring buffer failed")?;
                let events = drain(guard.get_inner_mut(), decode_route, |e| routes.fill(e), undecodable);
                guard.clear_ready();
                events
            }
            _ = drains.tick() => {
                let mut events = drain(dns.get_mut(), decode_dns, Event::Dns, undecodable);
                events.extend(drain(tls.get_mut(), decode_tls, Event::Tls, undecodable));
                events.extend(drain(http.get_mut(), decode_http, |c| http_event(resolver, c), undecodable));
                events
            }
            _ = ticks.tick() => {
                self.close_interval();
                return Ok(self.ready.pop_front());
            }
        };
        Ok(Some(Input::Events(events)))
    }

    fn finish(&mut self) -> Vec<Input> {
        self.close_interval();
        self.ready.drain(..).collect()
    }
}
