//! The one TC program per hook: it parses a packet's headers once, with direct packet access,
//! and hands the parsed packet to each layer's branch (DNS today; TLS, HTTP, ICMP and TTL
//! add theirs here, not another program or link). It never changes a packet's fate.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, programs::TcContext};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};
use observer_common::{
    dns::iface_counter as ic,
    tcp::{AF_INET, AF_INET6, Endpoint},
};

use crate::{dns, maps::bump_iface};

/// For TCX and for classic TC in direct-action mode: let the next program (or the default
/// action) decide.
pub const TC_NEXT: i32 = TC_ACT_UNSPEC;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Headers never reach past this: it bounds every offset for the verifier.
const MAX_L4_OFFSET: usize = 256;
/// Bytes made linear when the headers are not (GRO'd or paged packets).
const PULL_BYTES: u32 = 256;
/// IPv6 extension headers followed, at most.
const MAX_EXT_HEADERS: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    Whole,
    /// The first fragment: it has the L4 header but not all of the payload.
    First,
    /// A later fragment: no L4 header at all.
    Later,
}

/// A packet's network and transport headers, parsed once.
pub struct Packet {
    pub ifindex: u32,
    pub direction: u8,
    /// Source and destination addresses; ports are filled in by the branch that reads L4.
    pub src: Endpoint,
    pub dst: Endpoint,
    pub proto: u8,
    /// Offset of the L4 header from the start of the packet data.
    pub l4: usize,
    pub fragment: Fragment,
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

/// A copy of a header at `off`: direct access when it is linear, the helper otherwise.
#[inline(always)]
pub fn read<T: Copy>(ctx: &TcContext, off: usize) -> Option<T> {
    match ptr_at::<T>(ctx, off) {
        // SAFETY: in bounds of the linear data, checked above; unaligned on purpose.
        Some(p) => Some(unsafe { core::ptr::read_unaligned(p) }),
        None => ctx.load(off).ok(),
    }
}

#[inline(always)]
fn v4(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// `L2`: the interface has an Ethernet header (false for tun, WireGuard, ipip).
pub fn handle<const L2: bool>(ctx: &TcContext, direction: u8) {
    // The headers are usually linear; when they are not, pull them in once.
    let linear = ctx.data_end() - ctx.data();
    if linear < PULL_BYTES as usize && ctx.len() as usize > linear {
        let _ = ctx.pull_data(ctx.len().min(PULL_BYTES));
    }
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(pkt) = parse::<L2>(ctx, ifindex, direction) else { return };
    match pkt.proto {
        IPPROTO_UDP => dns::on_udp(ctx, pkt),
        IPPROTO_TCP => dns::on_tcp(ctx, pkt),
        _ => {}
    }
}

#[inline(always)]
fn parse<const L2: bool>(ctx: &TcContext, ifindex: u32, direction: u8) -> Option<Packet> {
    let (mut ethertype, mut off) = if L2 {
        let eth: EthHdr = read(ctx, 0)?;
        (u16::from_be(eth.ether_type), EthHdr::LEN)
    } else {
        // No link header: the kernel's protocol field says what the packet is.
        (u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16), 0)
    };
    // 802.1Q / 802.1ad tags inline in the frame (QinQ: two).
    let mut tags = 0;
    while tags < 2 && (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
        let tag: [u8; 4] = read(ctx, off)?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        off += 4;
        tags += 1;
    }
    let mut src = Endpoint { addr: [0; 16], port: 0, family: 0 };
    let mut dst = src;
    if ethertype == ETH_P_IP {
        let ip: Ipv4Hdr = read(ctx, off)?;
        let ihl = ip.ihl() as usize;
        if ihl < Ipv4Hdr::LEN {
            return None;
        }
        let frags = u16::from_be_bytes(ip.frags);
        let fragment = if frags & 0x1fff != 0 {
            Fragment::Later
        } else if frags & 0x2000 != 0 {
            Fragment::First
        } else {
            Fragment::Whole
        };
        src.family = AF_INET;
        dst.family = AF_INET;
        src.addr = v4(ip.src_addr);
        dst.addr = v4(ip.dst_addr);
        Some(Packet { ifindex, direction, src, dst, proto: ip.proto, l4: off + ihl, fragment })
    } else if ethertype == ETH_P_IPV6 {
        let ip: Ipv6Hdr = read(ctx, off)?;
        src.family = AF_INET6;
        dst.family = AF_INET6;
        src.addr = ip.src_addr;
        dst.addr = ip.dst_addr;
        let mut next = ip.next_hdr;
        let mut l4 = off + Ipv6Hdr::LEN;
        let mut fragment = Fragment::Whole;
        let mut i = 0;
        while i < MAX_EXT_HEADERS {
            let h: [u8; 4] = match next {
                // Hop-by-hop, routing, destination options, fragment, AH.
                0 | 43 | 60 | 44 | 51 => read(ctx, l4)?,
                _ => break,
            };
            let len = match next {
                44 => {
                    let offset = u16::from_be_bytes([h[2], h[3]]);
                    fragment = if offset & 0xfff8 != 0 {
                        Fragment::Later
                    } else if offset & 1 != 0 {
                        Fragment::First
                    } else {
                        fragment
                    };
                    8
                }
                51 => (h[1] as usize + 2) * 4,
                _ => (h[1] as usize + 1) * 8,
            };
            next = h[0];
            l4 += len;
            if l4 > MAX_L4_OFFSET {
                return None;
            }
            i += 1;
        }
        if matches!(next, 0 | 43 | 60 | 44 | 51) {
            bump_iface(ifindex, ic::EXT_HEADERS_TOO_DEEP);
            return None;
        }
        Some(Packet { ifindex, direction, src, dst, proto: next, l4, fragment })
    } else {
        None
    }
}
