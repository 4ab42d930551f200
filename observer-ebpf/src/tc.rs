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
    lost,
    tcp::{AF_INET, AF_INET6, Endpoint},
};

use crate::{
    dns,
    maps::{SCRATCH, bump_iface, count_lost},
};

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
    /// Source and destination addresses; ports are filled in by the branch that reads L4.
    pub src: Endpoint,
    pub dst: Endpoint,
    pub proto: u8,
    /// Offset of the L4 header from the start of the packet data.
    pub l4: usize,
    pub fragment: Fragment,
    /// The branches' own scratch space.
    pub dns: dns::Scratch,
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

/// A copy of a header at `off`, from the linear data (the headers were pulled in).
#[inline(always)]
pub fn read<T: Copy>(ctx: &TcContext, off: usize) -> Option<T> {
    // SAFETY: in bounds of the linear data, checked by ptr_at; unaligned on purpose.
    ptr_at::<T>(ctx, off).map(|p| unsafe { core::ptr::read_unaligned(p) })
}

#[inline(always)]
fn v4(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// `L2`: the interface has an Ethernet header (false for tun, WireGuard, ipip).
pub fn handle<const L2: bool>(ctx: &TcContext, direction: u8) {
    // The headers are usually linear; when they are not, pull them in once.
    let linear = ctx.data_end() - ctx.data();
    if linear < PULL_BYTES as usize && ctx.len() as usize > linear && ctx.pull_data(ctx.len().min(PULL_BYTES)).is_err() {
        count_lost(lost::PULL_FAILED);
        return;
    }
    let Some(pkt) = SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's slot; a TC program runs to completion on one CPU without reentry.
    let pkt = unsafe { &mut *pkt };
    pkt.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    pkt.direction = direction;
    if parse::<L2>(ctx, pkt).is_none() {
        return;
    }
    match pkt.proto {
        IPPROTO_UDP => dns::on_udp(ctx, pkt),
        IPPROTO_TCP => dns::on_tcp(ctx, pkt),
        _ => {}
    }
}

#[inline(always)]
fn parse<const L2: bool>(ctx: &TcContext, pkt: &mut Packet) -> Option<()> {
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
    pkt.src = Endpoint { addr: [0; 16], port: 0, family: 0 };
    pkt.dst = pkt.src;
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
        pkt.src.family = AF_INET;
        pkt.dst.family = AF_INET;
        pkt.src.addr = v4(ip.src_addr);
        pkt.dst.addr = v4(ip.dst_addr);
        pkt.proto = ip.proto;
        pkt.l4 = off + ihl;
        pkt.fragment = fragment;
        Some(())
    } else if ethertype == ETH_P_IPV6 {
        let ip: Ipv6Hdr = read(ctx, off)?;
        pkt.src.family = AF_INET6;
        pkt.dst.family = AF_INET6;
        pkt.src.addr = ip.src_addr;
        pkt.dst.addr = ip.dst_addr;
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
