//! DNS at TC (TCX links, ingress and egress). Counts every DNS message per resolver in the
//! kernel, exactly, and sends a bounded copy of each to userspace for parsing.
//!
//! Headers are read with bpf_skb_load_bytes (`ctx.load`), which works whether or not the
//! packet is linear and keeps the verifier's job simple.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, helpers::bpf_ktime_get_ns, helpers::generated::bpf_skb_load_bytes, programs::TcContext};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};
use observer_common::{
    dns::{CAPTURE_MAX, DnsEvent, MAX_EXTRA_PORTS, dns_counter as dc},
    lost,
    tcp::{AF_INET, AF_INET6, Endpoint},
};

use crate::maps::{DNS_EVENTS, bump_resolver, count_lost};

/// Extra DNS ports besides 53 (`--dns-port`); 0 marks an unused slot. Set by userspace.
#[unsafe(no_mangle)]
static DNS_EXTRA_PORTS: [u16; MAX_EXTRA_PORTS as usize] = [0; MAX_EXTRA_PORTS as usize];

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const DNS_HEADER_LEN: usize = 12;
/// For TCX: let the next program (or the default action) decide.
pub const TCX_NEXT: i32 = TC_ACT_UNSPEC;

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

struct Flow {
    src: Endpoint,
    dst: Endpoint,
    proto: u8,
    l4_offset: usize,
}

#[inline(always)]
fn parse_ip(ctx: &TcContext) -> Option<Flow> {
    let eth: EthHdr = ctx.load(0).ok()?;
    let mut src = Endpoint { addr: [0; 16], port: 0, family: 0 };
    let mut dst = src;
    if eth.ether_type == EtherType::Ipv4 as u16 {
        let ip: Ipv4Hdr = ctx.load(EthHdr::LEN).ok()?;
        // Only the first fragment carries the UDP header.
        if ip.frag_offset() != 0 {
            return None;
        }
        let ihl = ip.ihl() as usize;
        if ihl < Ipv4Hdr::LEN {
            return None;
        }
        src.family = AF_INET;
        dst.family = AF_INET;
        let (s, d) = (ip.src_addr, ip.dst_addr);
        src.addr = [s[0], s[1], s[2], s[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        dst.addr = [d[0], d[1], d[2], d[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        Some(Flow { src, dst, proto: ip.proto as u8, l4_offset: EthHdr::LEN + ihl })
    } else if eth.ether_type == EtherType::Ipv6 as u16 {
        // Extension headers are not followed: DNS does not use them in practice.
        let ip: Ipv6Hdr = ctx.load(EthHdr::LEN).ok()?;
        src.family = AF_INET6;
        dst.family = AF_INET6;
        src.addr = ip.src_addr;
        dst.addr = ip.dst_addr;
        Some(Flow { src, dst, proto: ip.next_hdr as u8, l4_offset: EthHdr::LEN + Ipv6Hdr::LEN })
    } else {
        None
    }
}

pub fn handle(ctx: &TcContext, direction: u8) -> Option<()> {
    let mut flow = parse_ip(ctx)?;
    let skb_len = ctx.len() as usize;
    if flow.proto == IPPROTO_UDP {
        let udp: UdpHdr = ctx.load(flow.l4_offset).ok()?;
        flow.src.port = udp.src_port();
        flow.dst.port = udp.dst_port();
        let (to_dns, from_dns) = (is_dns_port(flow.dst.port), is_dns_port(flow.src.port));
        if !to_dns && !from_dns {
            return None;
        }
        let payload = flow.l4_offset + UdpHdr::LEN;
        let udp_payload = (udp.len() as usize).saturating_sub(UdpHdr::LEN);
        let len = udp_payload.min(skb_len.saturating_sub(payload));
        if len < DNS_HEADER_LEN {
            let resolver = if to_dns { &flow.dst } else { &flow.src };
            bump_resolver(resolver, dc::SHORT);
            return Some(());
        }
        let flags: [u8; 2] = ctx.load(payload + 2).ok()?;
        let is_response = flags[0] >> 7 == 1;
        // The side on a DNS port is the resolver; when both are, the QR bit decides.
        let resolver_is_dst = if to_dns && from_dns { !is_response } else { to_dns };
        let (client, resolver) = if resolver_is_dst { (flow.src, flow.dst) } else { (flow.dst, flow.src) };
        if is_response {
            bump_resolver(&resolver, dc::RESPONSES);
            let rcode = match flags[1] & 0x0f {
                0 => dc::NOERROR,
                2 => dc::SERVFAIL,
                3 => dc::NXDOMAIN,
                5 => dc::REFUSED,
                _ => dc::OTHER_RCODE,
            };
            bump_resolver(&resolver, rcode);
            if flags[0] & 0x02 != 0 {
                bump_resolver(&resolver, dc::TRUNCATED);
            }
        } else {
            bump_resolver(&resolver, dc::QUERIES);
        }
        emit(ctx, &client, &resolver, payload, len, direction, is_response);
    } else if flow.proto == IPPROTO_TCP {
        let tcp: TcpHdr = ctx.load(flow.l4_offset).ok()?;
        let (sport, dport) = (u16::from_be_bytes(tcp.source), u16::from_be_bytes(tcp.dest));
        let (to_dns, from_dns) = (dport == 53, sport == 53);
        if !to_dns && !from_dns {
            return None;
        }
        let header = tcp.doff() as usize * 4;
        if skb_len > flow.l4_offset + header {
            flow.src.port = sport;
            flow.dst.port = dport;
            bump_resolver(if to_dns { &flow.dst } else { &flow.src }, dc::TCP_SEGMENTS);
        }
    }
    Some(())
}

#[inline(always)]
fn emit(ctx: &TcContext, client: &Endpoint, resolver: &Endpoint, offset: usize, len: usize, direction: u8, is_response: bool) {
    let Some(mut entry) = DNS_EVENTS.reserve::<DnsEvent>(0) else {
        count_lost(lost::DNS_RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    // Bounded for the verifier: 1..=CAPTURE_MAX.
    let n = if len > CAPTURE_MAX { CAPTURE_MAX } else { len };
    if n == 0 {
        entry.discard(0);
        return;
    }
    unsafe {
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).client = *client;
        (*ev).resolver = *resolver;
        (*ev).ifindex = (*ctx.skb.skb).ifindex;
        (*ev).dns_len = len as u16;
        (*ev).captured = n as u16;
        (*ev).direction = direction;
        (*ev).is_response = is_response as u8;
        (*ev)._pad = [0; 6];
        let dst = (&raw mut (*ev).data).cast::<core::ffi::c_void>();
        if bpf_skb_load_bytes(ctx.skb.skb.cast(), offset as u32, dst, n as u32) != 0 {
            count_lost(lost::DNS_COPY_FAILED);
            entry.discard(0);
            return;
        }
    }
    entry.submit(0);
}
