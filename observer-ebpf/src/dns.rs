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
        CAPTURE_MAX, DUPLICATE_WINDOW_NS, DnsEvent, DnsKey, DnsPending, MAX_EXTRA_PORTS, dns_counter as dc,
        iface_counter as ic,
    },
    lost,
    tcp::Endpoint,
};

use crate::{
    maps::{DNS_EVENTS, DNS_PENDING, bump_iface, bump_resolver, count_lost},
    tc::{Fragment, Packet, read},
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
    match read::<[u8; 4]>(ctx, off) {
        Some(b) => u32::from_ne_bytes(b) | 0x2020_2020,
        None => 0,
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn on_udp(ctx: &TcContext, mut pkt: Packet) {
    if pkt.fragment == Fragment::Later {
        // No UDP header: it may be the rest of a large DNS answer. Counted, not guessed at.
        bump_iface(pkt.ifindex, ic::UDP_FRAGMENTS);
        return;
    }
    let Some(udp) = read::<UdpHdr>(ctx, pkt.l4) else { return };
    pkt.src.port = u16::from_be_bytes(udp.src);
    pkt.dst.port = u16::from_be_bytes(udp.dst);
    let (to_dns, from_dns) = (is_dns_port(pkt.dst.port), is_dns_port(pkt.src.port));
    if !to_dns && !from_dns {
        return;
    }
    let payload = pkt.l4 + UdpHdr::LEN;
    let udp_payload = (u16::from_be_bytes(udp.len) as usize).saturating_sub(UdpHdr::LEN);
    let len = udp_payload.min((ctx.len() as usize).saturating_sub(payload));
    if len < DNS_HEADER_LEN {
        bump_resolver(if to_dns { &pkt.dst } else { &pkt.src }, dc::SHORT);
        return;
    }
    let Some(header) = read::<[u8; 4]>(ctx, payload) else { return };
    let id = u16::from_be_bytes([header[0], header[1]]);
    let is_response = header[2] >> 7 == 1;
    // The side on a DNS port is the resolver; when both are, the QR bit decides.
    let resolver_is_dst = if to_dns && from_dns { !is_response } else { to_dns };
    let (client, resolver) = if resolver_is_dst { (pkt.src, pkt.dst) } else { (pkt.dst, pkt.src) };
    let key = DnsKey { client_port: client.port, id, qhash: question_fingerprint(ctx, payload + DNS_HEADER_LEN) };
    let now = now_ns();

    let zero = Endpoint { addr: [0; 16], port: 0, family: 0 };
    let (client, resolver, answerer) = if is_response {
        match DNS_PENDING.get_ptr_mut(&key) {
            Some(p) => unsafe {
                let answered = (*p).answered_ns;
                if answered != 0 && now.wrapping_sub(answered) < DUPLICATE_WINDOW_NS {
                    bump_iface(pkt.ifindex, ic::DNS_DUPLICATES);
                    return;
                }
                if answered == 0 {
                    (*p).answered_ns = now;
                    let answerer = if (*p).resolver != resolver { resolver } else { zero };
                    ((*p).client, (*p).resolver, answerer)
                } else {
                    // A second answer long after the first: counted where it comes from.
                    (client, resolver, zero)
                }
            },
            None => (client, resolver, zero),
        }
    } else {
        if let Some(p) = unsafe { DNS_PENDING.get(&key) }
            && p.answered_ns == 0
            && now.wrapping_sub(p.query_ns) < DUPLICATE_WINDOW_NS
        {
            bump_iface(pkt.ifindex, ic::DNS_DUPLICATES);
            return;
        }
        let pending = DnsPending { client, resolver, query_ns: now, answered_ns: 0 };
        // A full table evicts the oldest entry (LRU): its response is then counted where
        // it comes from, which is the same resolver unless NAT rewrote it.
        let _ = DNS_PENDING.insert(&key, &pending, 0);
        (client, resolver, zero)
    };

    if is_response {
        bump_resolver(&resolver, dc::RESPONSES);
        let rcode = match header[3] & 0x0f {
            0 => dc::NOERROR,
            2 => dc::SERVFAIL,
            3 => dc::NXDOMAIN,
            5 => dc::REFUSED,
            _ => dc::OTHER_RCODE,
        };
        bump_resolver(&resolver, rcode);
        if header[2] & 0x02 != 0 {
            bump_resolver(&resolver, dc::TRUNCATED);
        }
    } else {
        bump_resolver(&resolver, dc::QUERIES);
    }
    bump_iface(pkt.ifindex, ic::DNS_MESSAGES);
    let fragmented = pkt.fragment == Fragment::First;
    if fragmented {
        bump_iface(pkt.ifindex, ic::DNS_FRAGMENTED);
    }
    let msg = Message { client, resolver, answerer, offset: payload, len, full_len: udp_payload, is_response, fragmented, now };
    emit(ctx, &pkt, &msg);
}

/// DNS over TCP is counted per resolver, not parsed.
#[inline(always)]
pub fn on_tcp(ctx: &TcContext, pkt: Packet) {
    let Some(tcp) = read::<TcpHdr>(ctx, pkt.l4) else { return };
    let (sport, dport) = (u16::from_be_bytes(tcp.source), u16::from_be_bytes(tcp.dest));
    let (to_dns, from_dns) = (dport == 53, sport == 53);
    if !to_dns && !from_dns {
        return;
    }
    let header = tcp.doff() as usize * 4;
    if ctx.len() as usize > pkt.l4 + header {
        let mut resolver = if to_dns { pkt.dst } else { pkt.src };
        resolver.port = 53;
        bump_resolver(&resolver, dc::TCP_SEGMENTS);
    }
}

struct Message {
    client: Endpoint,
    resolver: Endpoint,
    answerer: Endpoint,
    offset: usize,
    /// Bytes of the message in this packet.
    len: usize,
    /// The message's length per the UDP header (more than `len` for a first fragment).
    full_len: usize,
    is_response: bool,
    fragmented: bool,
    now: u64,
}

#[inline(always)]
fn emit(ctx: &TcContext, pkt: &Packet, m: &Message) {
    let Some(mut entry) = DNS_EVENTS.reserve::<DnsEvent>(0) else {
        count_lost(lost::DNS_RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    // Bounded for the verifier: 1..=CAPTURE_MAX.
    let n = if m.len > CAPTURE_MAX { CAPTURE_MAX } else { m.len };
    if n == 0 {
        entry.discard(0);
        return;
    }
    unsafe {
        (*ev).ts_ns = m.now;
        (*ev).client = m.client;
        (*ev).resolver = m.resolver;
        (*ev).answerer = m.answerer;
        (*ev).ifindex = pkt.ifindex;
        (*ev).dns_len = m.full_len as u16;
        (*ev).captured = n as u16;
        (*ev).direction = pkt.direction;
        (*ev).is_response = m.is_response as u8;
        (*ev).fragmented = m.fragmented as u8;
        (*ev)._pad = [0; 1];
        let dst = (&raw mut (*ev).data).cast::<core::ffi::c_void>();
        if bpf_skb_load_bytes(ctx.skb.skb.cast(), m.offset as u32, dst, n as u32) != 0 {
            count_lost(lost::DNS_COPY_FAILED);
            entry.discard(0);
            return;
        }
    }
    let wakeup = unsafe { core::ptr::read_volatile(&DNS_WAKEUP_BYTES) };
    let flags = if DNS_EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= wakeup { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    entry.submit(flags as u64);
}

