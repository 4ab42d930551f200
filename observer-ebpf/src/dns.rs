//! The DNS branch of the TC program. Counts every DNS message per resolver exactly, once
//! however many hooks it crosses, attributes a response to the resolver its query was sent
//! to (NAT may have rewritten it), and sends a bounded copy of each counted message to
//! userspace for parsing.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, generated::bpf_skb_load_bytes},
    programs::TcContext,
};
use network_types::udp::UdpHdr;
use observer_common::{
    dns::{
        CAPTURE_MAX, DNS_EVENT_HEADER, DUPLICATE_WINDOW_NS, DnsEvent, DnsKey, DnsPending, MAX_EXTRA_PORTS, dns_counter as dc,
        DIRECTION_INGRESS, iface_counter as ic,
    },
    lost,
    tcp::{AF_INET6, Endpoint},
};

use crate::{
    maps::{DNS_EVENTS, DNS_EVENTS_1, DNS_PENDING, DNS_RECENT, bump_iface, bump_resolver, bump_resolver_all, count_lost},
    tc::{Fragment, MAX_L4_OFFSET, Packet, Tcp, clear_endpoint, copy_endpoint, endpoints, field, ptr_at},
};

/// Extra DNS ports besides 53 (`--dns-port`); 0 marks an unused slot. Set by userspace.
#[unsafe(no_mangle)]
static DNS_EXTRA_PORTS: [u16; MAX_EXTRA_PORTS as usize] = [0; MAX_EXTRA_PORTS as usize];

/// Wake userspace once per this many bytes a CPU wrote to the ring (set by userspace to a
/// quarter of the ring divided by the CPUs); in between, userspace drains on its own timer.
/// A wakeup is an IPI (a VM exit in a guest): one per message, or one per message once the
/// ring is a quarter full, costs more than the rest of the program.
#[unsafe(no_mangle)]
static DNS_WAKEUP_BYTES: u64 = 256 * 1024;

const DNS_HEADER_LEN: usize = 12;

/// How many of `DNS_EXTRA_PORTS` are set: the loop is skipped without any.
#[unsafe(no_mangle)]
static DNS_EXTRA_PORT_COUNT: u32 = 0;

/// When NAT was last seen rewriting a query (kernel ns): until then, and long after, a
/// response need not look for its query in the shared table.
#[unsafe(no_mangle)]
static mut DNS_NAT_SEEN_NS: u64 = 0;
/// NAT is looked for this long after it was last seen.
const NAT_RECENT_NS: u64 = 60_000_000_000;

#[inline(always)]
fn is_dns_port(port: u16) -> bool {
    if port == 53 {
        return true;
    }
    if unsafe { core::ptr::read_volatile(&DNS_EXTRA_PORT_COUNT) } == 0 {
        return false;
    }
    let extra = unsafe { core::ptr::read_volatile(&DNS_EXTRA_PORTS) };
    let mut i = 0;
    while i < MAX_EXTRA_PORTS as usize {
        if extra[i] != 0 && extra[i] == port {
            return true;
        }
        i += 1;
    }
    false
}

/// The first four bytes of the question (a label length and three characters, or the
/// root name and its type): every question has them, and query and response carry the same.
/// Bit 0x20 is set in each byte, which folds ASCII case (resolvers may echo 0x20-randomised
/// case) and changes nothing else that differs between the two.
#[inline(always)]
fn question_fingerprint(ctx: &TcContext, off: usize) -> u32 {
    match ptr_at::<u32>(ctx, off) {
        Some(q) => field::<_, u32>(q, 0) | 0x2020_2020,
        None => 0,
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// Slots per CPU for the messages counted last (see [`Recent`]).
pub const RECENT_SLOTS: u32 = 1024;

/// What this CPU counted last in one slot: a message's identity, when, which way, and where
/// its client sent it.
#[repr(C)]
pub struct Recent {
    key: DnsKey,
    at: u64,
    is_response: u32,
    /// 1 once NAT was seen on this query and it went into the shared table.
    nat_noted: u32,
    msg: DnsPending,
}

/// The DNS branch's working values, kept in the packet's scratch slot (see [`Packet`]).
#[repr(C)]
pub struct Scratch {
    key: DnsKey,
    /// The message's client and resolver as the client addressed them, and when.
    msg: DnsPending,
    /// For a response through NAT: who actually answered.
    answerer: Endpoint,
    _pad: u32,
    /// Bytes this CPU wrote to the ring since it last woke the reader.
    produced: u64,
    /// The record for userspace is built here, then only its used part is copied to the ring.
    event: DnsEvent,
}

#[inline(always)]
pub fn on_udp(ctx: &TcContext, pkt: &mut Packet) {
    if pkt.fragment == Fragment::Later {
        // No UDP header: it may be the rest of a large DNS answer. Counted, not guessed at.
        bump_iface(pkt.ifindex, ic::UDP_FRAGMENTS);
        return;
    }
    let l4 = pkt.l4;
    if l4 > MAX_L4_OFFSET {
        return;
    }
    let Some(udp) = ptr_at::<UdpHdr>(ctx, l4) else { return };
    let (sport, dport, udp_len): (u16, u16, u16) = (field(udp, 0), field(udp, 2), field(udp, 4));
    let (sport, dport) = (u16::from_be(sport), u16::from_be(dport));
    let (to_dns, from_dns) = (is_dns_port(dport), is_dns_port(sport));
    if !to_dns && !from_dns {
        return;
    }
    if endpoints(ctx, pkt, sport, dport).is_none() {
        return;
    }
    let payload = l4 + UdpHdr::LEN;
    let udp_payload = (u16::from_be(udp_len) as usize).saturating_sub(UdpHdr::LEN);
    let len = udp_payload.min((ctx.len() as usize).saturating_sub(payload));
    if len < DNS_HEADER_LEN {
        bump_resolver(if to_dns { &pkt.dst } else { &pkt.src }, dc::SHORT);
        return;
    }
    // The id and the flags: [id hi, id lo, QR|opcode|AA|TC|RD, RA|Z|rcode].
    let Some(dns) = ptr_at::<[u8; DNS_HEADER_LEN]>(ctx, payload) else { return };
    let header = field::<_, u32>(dns, 0).to_ne_bytes();
    let is_response = header[2] >> 7 == 1;
    // The side on a DNS port is the resolver; when both are, the QR bit decides.
    let resolver_is_dst = if to_dns && from_dns { !is_response } else { to_dns };
    let now = now_ns();
    let s = &mut pkt.dns;
    if resolver_is_dst {
        copy_endpoint(&mut s.msg.client, &pkt.src);
        copy_endpoint(&mut s.msg.resolver, &pkt.dst);
    } else {
        copy_endpoint(&mut s.msg.client, &pkt.dst);
        copy_endpoint(&mut s.msg.resolver, &pkt.src);
    }
    s.msg.query_ns = now;
    clear_endpoint(&mut s.answerer);
    s.key = DnsKey {
        client_port: s.msg.client.port,
        id: u16::from_be_bytes([header[0], header[1]]),
        qhash: question_fingerprint(ctx, payload + DNS_HEADER_LEN),
    };

    // The sightings of one packet on several hooks (veth, bridge, uplink) happen on one CPU
    // within microseconds: a per-CPU slot recognises them without a lock. Only when a later
    // sighting shows that NAT rewrote the query does it go into the shared table, for its
    // response; that insert costs more than the rest of the program.
    let k = &s.key;
    let index = (u32::from(k.id) ^ u32::from(k.client_port) ^ k.qhash ^ (k.qhash >> 13)) % RECENT_SLOTS;
    let Some(slot) = DNS_RECENT.get_ptr_mut(index) else { return };
    // SAFETY: this CPU's slot; a TC program runs to completion on one CPU without reentry.
    let slot = unsafe { &mut *slot };
    if slot.key == s.key && slot.is_response == u32::from(is_response) && now.wrapping_sub(slot.at) < DUPLICATE_WINDOW_NS {
        if !is_response && slot.nat_noted == 0 && slot.msg.resolver != s.msg.resolver {
            // A full table evicts the oldest entry (LRU): that response is then counted
            // where it comes from.
            let _ = DNS_PENDING.insert(&s.key, &slot.msg, 0);
            slot.nat_noted = 1;
            // A plain store: racing CPUs write nearly the same time.
            unsafe { core::ptr::write_volatile(&raw mut DNS_NAT_SEEN_NS, now) };
        }
        bump_iface(pkt.ifindex, ic::DNS_DUPLICATES);
        return;
    }
    let nat_seen = unsafe { core::ptr::read_volatile(&raw const DNS_NAT_SEEN_NS) };
    let nat_recent = nat_seen != 0 && now.wrapping_sub(nat_seen) < NAT_RECENT_NS;
    if is_response && nat_recent && let Some(p) = unsafe { DNS_PENDING.get(&s.key) } {
        // The query went through NAT: the response belongs to where the client sent it.
        if p.resolver != s.msg.resolver {
            copy_endpoint(&mut s.answerer, &s.msg.resolver);
        }
        copy_endpoint(&mut s.msg.client, &p.client);
        copy_endpoint(&mut s.msg.resolver, &p.resolver);
        let _ = DNS_PENDING.remove(&s.key);
    }
    slot.key = s.key;
    slot.at = now;
    slot.is_response = u32::from(is_response);
    slot.nat_noted = 0;
    copy_endpoint(&mut slot.msg.client, &s.msg.client);
    copy_endpoint(&mut slot.msg.resolver, &s.msg.resolver);
    slot.msg.query_ns = now;

    if is_response {
        let rcode = match header[3] & 0x0f {
            0 => dc::NOERROR,
            2 => dc::SERVFAIL,
            3 => dc::NXDOMAIN,
            5 => dc::REFUSED,
            _ => dc::OTHER_RCODE,
        };
        // An index past the counters is skipped: no second branch for the TC bit.
        let truncated = if header[2] & 0x02 != 0 { dc::TRUNCATED } else { usize::MAX };
        bump_resolver_all(&s.msg.resolver, &[dc::RESPONSES, rcode, truncated]);
    } else {
        bump_resolver(&s.msg.resolver, dc::QUERIES);
    }
    let fragmented = pkt.fragment == Fragment::First;
    emit(ctx, pkt, payload, len, udp_payload, is_response, fragmented);
}

/// DNS over TCP is counted per resolver, not parsed.
#[inline(always)]
pub fn on_tcp(ctx: &TcContext, pkt: &mut Packet, t: &Tcp) {
    let (to_dns, from_dns) = (t.dport == 53, t.sport == 53);
    if !to_dns && !from_dns {
        return;
    }
    if endpoints(ctx, pkt, t.sport, t.dport).is_none() {
        return;
    }
    if ctx.len() as usize > t.payload {
        bump_resolver(if to_dns { &pkt.dst } else { &pkt.src }, dc::TCP_SEGMENTS);
    }
}

/// A copy of the message for userspace: `len` bytes of it are in this packet at `offset`,
/// of `full_len` in all (more for a first fragment).
#[inline(always)]
fn emit(ctx: &TcContext, pkt: &mut Packet, offset: usize, len: usize, full_len: usize, is_response: bool, fragmented: bool) {
    // Bounded for the verifier: 1..=CAPTURE_MAX.
    let n = if len > CAPTURE_MAX { CAPTURE_MAX } else { len };
    if n == 0 {
        return;
    }
    let s = &mut pkt.dns;
    let ev = &mut s.event;
    ev.ts_ns = s.msg.query_ns;
    copy_endpoint(&mut ev.client, &s.msg.client);
    copy_endpoint(&mut ev.resolver, &s.msg.resolver);
    copy_endpoint(&mut ev.answerer, &s.answerer);
    ev.ifindex = pkt.ifindex;
    ev.dns_len = full_len as u16;
    ev.captured = n as u16;
    ev.direction = pkt.direction;
    ev.is_response = is_response as u8;
    ev.fragmented = fragmented as u8;
    // A response arriving: its TTL says how many hops away the resolver is (a path change
    // sample that costs one load per response).
    ev.ttl = 0;
    if is_response && pkt.direction == DIRECTION_INGRESS && pkt.l3 <= MAX_L4_OFFSET {
        if let Some(ip) = ptr_at::<[u8; 9]>(ctx, pkt.l3) {
            ev.ttl = if pkt.family == AF_INET6 { field(ip, 7) } else { field(ip, 8) };
        }
    }
    let dst = (&raw mut ev.data).cast::<core::ffi::c_void>();
    if unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), offset as u32, dst, n as u32) } != 0 {
        count_lost(lost::DNS_COPY_FAILED);
        return;
    }
    // Only the header and the bytes captured go into the ring: a fixed-size record would
    // move ten cache lines to the reader for a 40-byte query.
    let record = unsafe { core::slice::from_raw_parts((ev as *const DnsEvent).cast::<u8>(), DNS_EVENT_HEADER + n) };
    let wakeup = unsafe { core::ptr::read_volatile(&DNS_WAKEUP_BYTES) };
    let flags = crate::maps::wakeup_flags(&mut s.produced, record.len() as u64, wakeup);
    // This CPU's ring (see DNS_EVENTS_1).
    let sent = if unsafe { bpf_get_smp_processor_id() } & 1 == 0 {
        DNS_EVENTS.output::<[u8]>(record, flags)
    } else {
        DNS_EVENTS_1.output::<[u8]>(record, flags)
    };
    if sent.is_err() {
        count_lost(lost::DNS_RINGBUF_FULL);
    }
}

