//! The one TC program per hook: it parses a packet's headers once, with direct packet access,
//! and hands the parsed packet to each layer's branch (DNS today; TLS, HTTP, ICMP and TTL
//! add theirs here, not another program or link). It never changes a packet's fate.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, programs::TcContext};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
};
use observer_common::{
    dns::iface_counter as ic,
    lost,
    tcp::{AF_INET, AF_INET6, Endpoint},
};

use crate::{
    dns, http, icmp, tls,
    maps::{SCRATCH, bump_iface, count_lost},
};

/// For TCX and for classic TC in direct-action mode: let the next program (or the default
/// action) decide.
pub const TC_NEXT: i32 = TC_ACT_UNSPEC;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Headers never reach past this: it bounds every offset for the verifier.
pub const MAX_L4_OFFSET: usize = 256;
/// Bytes made linear when the headers are not (GRO'd or paged packets): the L4 header and a
/// DNS header fit in them whatever the offset.
const PULL_BYTES: u32 = 320;
/// IPv6 extension headers followed, at most.
const MAX_EXT_HEADERS: usize = 4;

#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    Whole,
    /// The first fragment: it has the L4 header but not all of the payload.
    First,
    /// A later fragment: no L4 header at all.
    Later,
}

/// A packet's network and transport headers, parsed once. It lives in a per-CPU scratch
/// slot, not on the stack: the BPF stack is 512 bytes for all calls together, and values read
/// back from map memory give the verifier one state to follow instead of one per header
/// layout (VLAN depth, IPv4 options, IPv6 extension chain).
#[repr(C)]
pub struct Packet {
    pub ifindex: u32,
    pub direction: u8,
    /// Source and destination endpoints, filled in by a branch that wants them (`endpoints`).
    pub src: Endpoint,
    pub dst: Endpoint,
    pub proto: u8,
    /// Offset of the IP header, and its family: the addresses are read from there only by
    /// a branch that wants the packet (most packets need no more than their ports).
    pub l3: usize,
    pub family: u16,
    /// Offset of the L4 header from the start of the packet data.
    pub l4: usize,
    pub fragment: Fragment,
    /// The branches' own scratch space.
    pub dns: dns::Scratch,
    pub tls: tls::Scratch,
    pub http: http::Scratch,
}

/// The TCP header's fields that the branches use, read once for all of them.
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub flags: u8,
    /// Offset of the payload from the start of the packet data.
    pub payload: usize,
}

#[inline(always)]
fn tcp_header(ctx: &TcContext, pkt: &Packet) -> Option<Tcp> {
    let l4 = pkt.l4;
    if l4 > MAX_L4_OFFSET {
        return None;
    }
    let tcp = ptr_at::<TcpHdr>(ctx, l4)?;
    Some(Tcp {
        sport: u16::from_be(field(tcp, 0)),
        dport: u16::from_be(field(tcp, 2)),
        seq: u32::from_be(field(tcp, 4)),
        flags: field(tcp, 13),
        // Data offset: the high nibble of byte 12, in 32-bit words.
        payload: l4 + (field::<_, u8>(tcp, 12) >> 4) as usize * 4,
    })
}

/// A bounds-checked pointer into the packet's linear data.
#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if off > MAX_L4_OFFSET + 64 || start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

/// A field of a header whose bounds were checked with [`ptr_at`], loaded as one word (as it
/// is on the wire, network byte order).
///
/// Headers sit at any alignment. x86-64 and arm64 load unaligned words natively and the
/// verifier allows it there, as every C BPF program does; copying a header struct with
/// `read_unaligned` instead costs one load per byte.
#[inline(always)]
pub fn field<H, T: Copy>(header: *const H, offset: usize) -> T {
    // SAFETY: the caller checked that the whole header is in the packet's linear data.
    unsafe { core::ptr::read_volatile(header.cast::<u8>().add(offset).cast::<T>()) }
}

/// Copy an endpoint as five words: a struct copy becomes a call to memmove here.
#[inline(always)]
pub fn copy_endpoint(dst: &mut Endpoint, src: &Endpoint) {
    let (d, s) = ((dst as *mut Endpoint).cast::<u32>(), (src as *const Endpoint).cast::<u32>());
    // SAFETY: Endpoint is 20 bytes, 4-byte aligned.
    unsafe {
        for i in 0..5 {
            core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i)));
        }
    }
}

/// Zero an endpoint as five word stores.
#[inline(always)]
pub fn clear_endpoint(dst: &mut Endpoint) {
    let d = (dst as *mut Endpoint).cast::<u32>();
    // SAFETY: as above.
    unsafe {
        for i in 0..5 {
            core::ptr::write_volatile(d.add(i), 0);
        }
    }
}

/// Write an address (network order words) and a port into an endpoint.
#[inline(always)]
fn set_addr(ep: &mut Endpoint, words: [u32; 4], port: u16, family: u16) {
    // SAFETY: Endpoint is 4-byte aligned and `addr` is its first field.
    let w = ep.addr.as_mut_ptr().cast::<u32>();
    unsafe {
        w.write(words[0]);
        w.add(1).write(words[1]);
        w.add(2).write(words[2]);
        w.add(3).write(words[3]);
    }
    ep.port = port;
    ep.family = family;
}

/// `L2`: the interface has an Ethernet header (false for tun, WireGuard, ipip).
pub fn handle<const L2: bool>(ctx: &TcContext, direction: u8) {
    // The headers are usually linear; when they are not, pull them in once.
    let Some(pkt) = SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's slot; a TC program runs to completion on one CPU without reentry.
    let pkt = unsafe { &mut *pkt };
    if L2 && tls::nothing_to_do(ctx, pkt) {
        return;
    }
    pkt.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    pkt.direction = direction;
    if parse::<L2>(ctx, pkt).is_none() {
        // The headers are almost always linear (GSO keeps them so). Pull them in only when
        // they were not: pulling every packet costs more than the rest of the program.
        let linear = ctx.data_end() - ctx.data();
        if ctx.len() as usize <= linear || linear >= PULL_BYTES as usize {
            return;
        }
        if ctx.pull_data(ctx.len().min(PULL_BYTES)).is_err() {
            count_lost(lost::PULL_FAILED);
            return;
        }
        if parse::<L2>(ctx, pkt).is_none() {
            return;
        }
    }
    match pkt.proto {
        IPPROTO_UDP => dns::on_udp(ctx, pkt),
        icmp::IPPROTO_ICMP | icmp::IPPROTO_ICMPV6 => icmp::on_icmp(ctx, pkt),
        IPPROTO_TCP => {
            if let Some(t) = tcp_header(ctx, pkt) {
                dns::on_tcp(ctx, pkt, &t);
                // SYN and ACK set, RST clear.
                if t.flags & 0x16 == 0x12 {
                    let _ = icmp::on_synack(ctx, pkt, (u32::from(t.sport) << 16) | u32::from(t.dport));
                }
                tls::on_tcp(ctx, pkt, &t);
            }
        }
        _ => {}
    }
}

/// Offsets of the fields read, from network-types' header layouts.
pub mod at {
    use core::mem::offset_of;

    use network_types::{
        eth::EthHdr,
        ip::{Ipv4Hdr, Ipv6Hdr},
    };
    pub const ETHERTYPE: usize = offset_of!(EthHdr, ether_type);
    pub const V4_VIHL: usize = offset_of!(Ipv4Hdr, vihl);
    pub const V4_FRAGS: usize = offset_of!(Ipv4Hdr, frags);
    pub const V4_PROTO: usize = offset_of!(Ipv4Hdr, proto);
    pub const V4_SRC: usize = offset_of!(Ipv4Hdr, src_addr);
    pub const V4_DST: usize = offset_of!(Ipv4Hdr, dst_addr);
    pub const V6_NEXT: usize = offset_of!(Ipv6Hdr, next_hdr);
    pub const V6_SRC: usize = offset_of!(Ipv6Hdr, src_addr);
    pub const V6_DST: usize = offset_of!(Ipv6Hdr, dst_addr);
}

/// An IPv6 address at `offset` of a checked header: four words as on the wire.
#[inline(always)]
fn v6_words<H>(header: *const H, offset: usize) -> [u32; 4] {
    [field(header, offset), field(header, offset + 4), field(header, offset + 8), field(header, offset + 12)]
}

/// Fill in the packet's source and destination endpoints: the addresses from the IP header,
/// and the ports the calling branch read from its L4 header.
#[inline(always)]
pub fn endpoints(ctx: &TcContext, pkt: &mut Packet, sport: u16, dport: u16) -> Option<()> {
    let l3 = pkt.l3;
    if l3 > MAX_L4_OFFSET {
        return None;
    }
    if pkt.family == AF_INET {
        let ip = ptr_at::<Ipv4Hdr>(ctx, l3)?;
        set_addr(&mut pkt.src, [field(ip, at::V4_SRC), 0, 0, 0], sport, AF_INET);
        set_addr(&mut pkt.dst, [field(ip, at::V4_DST), 0, 0, 0], dport, AF_INET);
    } else {
        let ip = ptr_at::<Ipv6Hdr>(ctx, l3)?;
        set_addr(&mut pkt.src, v6_words(ip, at::V6_SRC), sport, AF_INET6);
        set_addr(&mut pkt.dst, v6_words(ip, at::V6_DST), dport, AF_INET6);
    }
    Some(())
}

#[inline(always)]
fn parse<const L2: bool>(ctx: &TcContext, pkt: &mut Packet) -> Option<()> {
    let (mut ethertype, mut off) = if L2 {
        let eth = ptr_at::<EthHdr>(ctx, 0)?;
        (u16::from_be(field(eth, at::ETHERTYPE)), EthHdr::LEN)
    } else {
        // No link header: the kernel's protocol field says what the packet is.
        (u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16), 0)
    };
    // 802.1Q / 802.1ad tags inline in the frame (QinQ: two): TCI, then the next type.
    let mut tags = 0;
    while tags < 2 && (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
        let tag = ptr_at::<[u16; 2]>(ctx, off)?;
        ethertype = u16::from_be(field(tag, 2));
        off += 4;
        tags += 1;
    }
    if ethertype == ETH_P_IP {
        let ip = ptr_at::<Ipv4Hdr>(ctx, off)?;
        let ihl = ((field::<_, u8>(ip, at::V4_VIHL) & 0x0f) as usize) * 4;
        if ihl < Ipv4Hdr::LEN {
            return None;
        }
        let frags = u16::from_be(field(ip, at::V4_FRAGS));
        pkt.fragment = if frags & 0x1fff != 0 {
            Fragment::Later
        } else if frags & 0x2000 != 0 {
            Fragment::First
        } else {
            Fragment::Whole
        };
        pkt.proto = field(ip, at::V4_PROTO);
        pkt.family = AF_INET;
        pkt.l3 = off;
        pkt.l4 = off + ihl;
        Some(())
    } else if ethertype == ETH_P_IPV6 {
        let ip = ptr_at::<Ipv6Hdr>(ctx, off)?;
        pkt.family = AF_INET6;
        pkt.l3 = off;
        let mut next: u8 = field(ip, at::V6_NEXT);
        let mut l4 = off + Ipv6Hdr::LEN;
        let mut fragment = Fragment::Whole;
        let mut i = 0;
        while i < MAX_EXT_HEADERS {
            // Hop-by-hop, routing, destination options, fragment, AH: each starts with the
            // next header and a length, and is at least 8 bytes long.
            if !matches!(next, 0 | 43 | 60 | 44 | 51) {
                break;
            }
            let ext = ptr_at::<[u8; 8]>(ctx, l4)?;
            let this = next;
            next = field(ext, 0);
            let hdr_len: u8 = field(ext, 1);
            let len = match this {
                44 => {
                    let offset = u16::from_be(field(ext, 2));
                    if offset & 0xfff8 != 0 {
                        fragment = Fragment::Later;
                    } else if offset & 1 != 0 {
                        fragment = Fragment::First;
                    }
                    8
                }
                51 => (hdr_len as usize + 2) * 4,
                _ => (hdr_len as usize + 1) * 8,
            };
            l4 += len;
            if l4 > MAX_L4_OFFSET {
                return None;
            }
            i += 1;
        }
        if matches!(next, 0 | 43 | 60 | 44 | 51) {
            bump_iface(pkt.ifindex, ic::EXT_HEADERS_TOO_DEEP);
            return None;
        }
        pkt.proto = next;
        pkt.l4 = l4;
        pkt.fragment = fragment;
        Some(())
    } else {
        None
    }
}
