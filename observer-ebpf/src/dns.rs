//! The DNS branch of the TC program. Counts every DNS message per resolver exactly, once
//! however many hooks it crosses, attributes a response to the resolver its query was sent
//! to (NAT may have rewritten it), and sends a bounded copy of each counted message to
//! userspace for parsing.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_ktime_get_ns, generated::bpf_skb_load_bytes},
    programs::TcContext,
};
use network_types::{tcp::TcpHdr, udp::UdpHdr};
use observer_common::{
    dns::{
        CAPTURE_MAX, DNS_EVENT_HEADER, DUPLICATE_WINDOW_NS, DnsEvent, DnsKey, DnsPending, MAX_EXTRA_PORTS, dns_counter as dc,
        iface_counter as ic,
    },
    lost,
    tcp::Endpoint,
};

use crate::{
    maps::{DNS_EVENTS, DNS_PENDING, bump_iface, bump_iface_all, bump_resolver, bump_resolver_all, count_lost},
    tc::{Fragment, MAX_L4_OFFSET, Packet, addresses, clear_endpoint, copy_endpoint, field, ptr_at},
};

/// Extra DNS ports besides 53 (`--dns-port`); 0 marks an unused slot. Set by userspace.
#[unsafe(no_mangle)]
static DNS_EXTRA_PORTS: [u16; MAX_EXTRA_PORTS as usize] = [0; MAX_EXTRA_PORTS as usize];

/// Wake userspace only once this much is waiting in the ring (set by userspace to a quarter
/// of the ring); below it, userspace drains on its own timer. A wakeup per message costs
/// more than the rest of the program.
#[unsafe(no_mangle)]
static DNS_WAKEUP_BYTES: u64 = 256 * 1024;

const DNS_HEADER_LEN: usize = 12;

#[inline(always)]
fn is_dns_port(port: u16) -> bool {
    if port == 53 {
        return true;
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

/// The DNS branch's working values, kept in the packet's scratch slot (see [`Packet`]).
#[repr(C)]
pub struct Scratch {
    key: DnsKey,
    /// The message's client and resolver as the client addressed them, and when.
    msg: DnsPending,
    /// For a response through NAT: who actually answered.
    answerer: Endpoint,
    _pad: u32,
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
    if addresses(ctx, pkt).is_none() {
        return;
    }
    pkt.src.port = sport;
    pkt.dst.port = dport;
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
    s.msg.answered_ns = 0;
    clear_endpoint(&mut s.answerer);
    s.key = DnsKey {
        client_port: s.msg.client.port,
        id: u16::from_be_bytes([header[0], header[1]]),
        qhash: question_fingerprint(ctx, payload + DNS_HEADER_LEN),
    };

    if is_response {
        if let Some(p) = DNS_PENDING.get_ptr_mut(&s.key) {
            // SAFETY: a map value of this map's type.
            unsafe {
                let answered = (*p).answered_ns;
                if answered != 0 && now.wrapping_sub(answered) < DUPLICATE_WINDOW_NS {
                    bump_iface(pkt.ifindex, ic::DNS_DUPLICATES);
                    return;
                }
                // A second answer long after the first is counted where it comes from.
                if answered == 0 {
                    (*p).answered_ns = now;
                    if (*p).resolver != s.msg.resolver {
                        copy_endpoint(&mut s.answerer, &s.msg.resolver);
                    }
                    copy_endpoint(&mut s.msg.client, &(*p).client);
                    copy_endpoint(&mut s.msg.resolver, &(*p).resolver);
                }
            }
        }
    } else {
        if let Some(p) = unsafe { DNS_PENDING.get(&s.key) }
            && p.answered_ns == 0
            && now.wrapping_sub(p.query_ns) < DUPLICATE_WINDOW_NS
        {
            bump_iface(pkt.ifindex, ic::DNS_DUPLICATES);
            return;
        }
        // A full table evicts the oldest entry (LRU): its response is then counted where
        // it comes from, which is the same resolver unless NAT rewrote it.
        let _ = DNS_PENDING.insert(&s.key, &s.msg, 0);
    }

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
    let fragment = if fragmented { ic::DNS_FRAGMENTED } else { usize::MAX };
    bump_iface_all(pkt.ifindex, &[ic::DNS_MESSAGES, fragment]);
    emit(ctx, pkt, payload, len, udp_payload, is_response, fragmented);
}

/// DNS over TCP is counted per resolver, not parsed.
#[inline(always)]
pub fn on_tcp(ctx: &TcContext, pkt: &mut Packet) {
    let l4 = pkt.l4;
    if l4 > MAX_L4_OFFSET {
        return;
    }
    let Some(tcp) = ptr_at::<TcpHdr>(ctx, l4) else { return };
    let (sport, dport) = (u16::from_be(field(tcp, 0)), u16::from_be(field(tcp, 2)));
    let (to_dns, from_dns) = (dport == 53, sport == 53);
    if !to_dns && !from_dns {
        return;
    }
    // Data offset: the high nibble of byte 12, in 32-bit words.
    let header = (field::<_, u8>(tcp, 12) >> 4) as usize * 4;
    if addresses(ctx, pkt).is_none() {
        return;
    }
    if ctx.len() as usize > l4 + header {
        let mut resolver = if to_dns { pkt.dst } else { pkt.src };
        resolver.port = 53;
        bump_resolver(&resolver, dc::TCP_SEGMENTS);
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
    ev._pad = [0; 1];
    let dst = (&raw mut ev.data).cast::<core::ffi::c_void>();
    if unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), offset as u32, dst, n as u32) } != 0 {
        count_lost(lost::DNS_COPY_FAILED);
        return;
    }
    // Only the header and the bytes captured go into the ring: a fixed-size record would
    // move ten cache lines to the reader for a 40-byte query.
    let record = unsafe { core::slice::from_raw_parts((ev as *const DnsEvent).cast::<u8>(), DNS_EVENT_HEADER + n) };
    let wakeup = unsafe { core::ptr::read_volatile(&DNS_WAKEUP_BYTES) };
    let flags = if DNS_EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= wakeup { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    if DNS_EVENTS.output::<[u8]>(record, flags as u64).is_err() {
        count_lost(lost::DNS_RINGBUF_FULL);
    }
}

