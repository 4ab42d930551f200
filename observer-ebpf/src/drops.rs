//! Packets the kernel drops on this host (`skb:kfree_skb`, with its drop reason since 5.17):
//! a full qdisc, a firewall rule, a socket buffer. What tells loss on this host from loss on
//! the path. Each drop bumps a per-CPU counter keyed by the packet's addresses and the
//! reason: a flood of drops costs a map update each, not a ring record and a wakeup. The
//! addresses come from the skb's network and transport headers (offsets from BTF).

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    programs::{RawTracePointContext, TracePointContext},
};
use observer_common::{
    route::{DropKey, DropLayout, SKB_BLOCK},
    tcp::{AF_INET, AF_INET6, Endpoint},
};

use crate::{
    maps::bump_drop,
    tc::{ETH_P_IP, ETH_P_IPV6},
};

#[unsafe(no_mangle)]
static DROP_LAYOUT: DropLayout = DropLayout {
    enabled: 0,
    tp_skbaddr: 0,
    tp_protocol: 0,
    tp_reason: u32::MAX,
    protocol: 0,
    head: 0,
    network_header: 0,
    transport_header: 0,
    sk: 0,
    dev: 0,
    dev_net: 0,
    sk_net: 0,
    net_inum: 0,
    netns_inum: 0,
    block_start: 0,
    block_len: 0,
    block_protocol: 0,
    block_th: 0,
    block_nh: 0,
    block_head: 0,
    dev_sk_adjacent: 0,
    routine: [0; 2],
};

/// An skb header offset that was never set.
const UNSET: u16 = 0xffff;

#[inline(always)]
fn read<T>(at: u64) -> Option<T> {
    unsafe { bpf_probe_read_kernel(at as *const T) }.ok()
}

/// `dst.len()` bytes at `at` into `dst`; false when the read failed.
#[inline(always)]
fn read_buf(at: u64, dst: &mut [u8]) -> bool {
    unsafe { bpf_probe_read_kernel_buf(at as *const u8, dst) }.is_ok()
}

/// A little-endian field of `T` bytes at `at` in the block (bounds checked).
#[inline(always)]
fn block_u16(b: &[u8; SKB_BLOCK as usize], at: u32) -> u16 {
    let i = (at & (SKB_BLOCK - 1)) as usize;
    if i + 2 > b.len() {
        return UNSET;
    }
    u16::from_ne_bytes([b[i], b[i + 1]])
}

#[inline(always)]
fn block_u64(b: &[u8; SKB_BLOCK as usize], at: u32) -> u64 {
    let i = (at & (SKB_BLOCK - 1)) as usize;
    if i + 8 > b.len() {
        return 0;
    }
    u64::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]])
}

/// The classic tracepoint (kernels whose kfree_skb has no reason argument): the record
/// carries the protocol and the reason.
pub fn kfree_skb(ctx: &TracePointContext) -> Option<()> {
    let l = unsafe { core::ptr::read_volatile(&DROP_LAYOUT) };
    if l.enabled == 0 {
        return None;
    }
    let protocol: u16 = unsafe { ctx.read_at(l.tp_protocol as usize) }.ok()?;
    if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
        return None;
    }
    let reason: u32 = if l.tp_reason == u32::MAX { 0 } else { unsafe { ctx.read_at(l.tp_reason as usize) }.unwrap_or(0) };
    if is_routine(&l, reason) {
        bump_drop(&key(reason));
        return Some(());
    }
    let skb: u64 = unsafe { ctx.read_at(l.tp_skbaddr as usize) }.ok()?;
    let sk = own_namespace(&l, skb)?;
    let h = headers(&l, skb, false)?;
    count(protocol, reason, sk, &h)
}

/// The raw tracepoint, `kfree_skb(skb, location, reason)` (5.17+), where the kernel has it:
/// no trace record is built for it, which a flood of drops (a socket whose reader is gone
/// behind, a DNS flood's unread answers) paid per packet. The protocol comes from the skb,
/// in the same read as its header offsets, after the namespace check: a drop in another
/// namespace costs two reads.
pub fn kfree_skb_raw(ctx: &RawTracePointContext) -> Option<()> {
    let l = unsafe { core::ptr::read_volatile(&DROP_LAYOUT) };
    if l.enabled == 0 {
        return None;
    }
    let skb: u64 = ctx.arg(0);
    let reason = ctx.arg::<u64>(2) as u32;
    let routine = is_routine(&l, reason);
    // Routine drops are counted in every namespace.
    let sk = if routine { 0 } else { own_namespace(&l, skb)? };
    let h = headers(&l, skb, true)?;
    if h.protocol != ETH_P_IP && h.protocol != ETH_P_IPV6 {
        return None;
    }
    if routine {
        bump_drop(&key(reason));
        return Some(());
    }
    count(h.protocol, reason, sk, &h)
}

/// Routine reasons: counted per reason only, without reading the packet's addresses (these
/// come in floods: a scan's NO_SOCKET, duplicates of retransmitted data).
#[inline(always)]
fn is_routine(l: &DropLayout, reason: u32) -> bool {
    reason < 128 && (l.routine[(reason / 64) as usize & 1] >> (reason % 64)) & 1 == 1
}

#[inline(always)]
fn key(reason: u32) -> DropKey {
    DropKey {
        reason,
        src: Endpoint { addr: [0; 16], port: 0, family: 0 },
        dst: Endpoint { addr: [0; 16], port: 0, family: 0 },
        proto: 0,
        has_sk: 0,
        _pad: [0; 2],
    }
}

/// The skb's header fields (its protocol only when asked: the classic record has it, in host
/// order; the skb keeps it in network order).
struct Headers {
    protocol: u16,
    th: u16,
    nh: u16,
    head: u64,
}

#[inline(always)]
fn headers(l: &DropLayout, skb: u64, protocol: bool) -> Option<Headers> {
    if l.block_len > 0 {
        let b: [u8; SKB_BLOCK as usize] = read(skb + u64::from(l.block_start))?;
        return Some(Headers {
            protocol: u16::from_be(block_u16(&b, l.block_protocol)),
            th: block_u16(&b, l.block_th),
            nh: block_u16(&b, l.block_nh),
            head: block_u64(&b, l.block_head),
        });
    }
    Some(Headers {
        protocol: if protocol { u16::from_be(read(skb + u64::from(l.protocol))?) } else { 0 },
        th: read(skb + u64::from(l.transport_header)).unwrap_or(UNSET),
        nh: read(skb + u64::from(l.network_header))?,
        head: read(skb + u64::from(l.head))?,
    })
}

/// observer's own network namespace (its `struct net`), once a drop has shown it by its
/// inode: later drops compare one pointer instead of reading the inode. The namespace lives
/// while observer runs in it, so no other namespace can get this address meanwhile.
#[unsafe(no_mangle)]
static mut OWN_NET: u64 = 0;

/// Whether a drop with this device (else socket) happened in observer's namespace.
#[inline(always)]
fn in_own_namespace(l: &DropLayout, dev: u64, sk: u64) -> bool {
    let net: u64 = if dev != 0 {
        read(dev + u64::from(l.dev_net)).unwrap_or(0)
    } else if sk != 0 {
        read(sk + u64::from(l.sk_net)).unwrap_or(0)
    } else {
        0
    };
    if net == 0 {
        return false;
    }
    let own = unsafe { core::ptr::read_volatile(&raw const OWN_NET) };
    if own != 0 {
        return net == own;
    }
    if read::<u32>(net + u64::from(l.net_inum)) != Some(l.netns_inum) {
        return false;
    }
    // A plain store: every CPU that races here writes the same value.
    unsafe { core::ptr::write_volatile(&raw mut OWN_NET, net) };
    true
}

/// The skb's socket (0 for none) when the drop happened in observer's network namespace:
/// the device's namespace, else the socket's (a packet dropped on its way out may have no
/// device yet). None for another namespace's.
#[inline(always)]
fn own_namespace(l: &DropLayout, skb: u64) -> Option<u64> {
    let (dev, sk): (u64, u64) = if l.dev_sk_adjacent == 1 {
        read::<[u64; 2]>(skb + u64::from(l.dev)).map_or((0, 0), |v| (v[0], v[1]))
    } else {
        (read(skb + u64::from(l.dev)).unwrap_or(0), read(skb + u64::from(l.sk)).unwrap_or(0))
    };
    in_own_namespace(l, dev, sk).then_some(sk)
}

/// A drop in this namespace worth its addresses: count it under them.
#[inline(always)]
fn count(protocol: u16, reason: u32, sk: u64, h: &Headers) -> Option<()> {
    let (th, nh, head) = (h.th, h.nh, h.head);
    if head == 0 || nh == UNSET {
        return None;
    }
    let mut e = key(reason);
    e.has_sk = (sk != 0) as u8;
    let ip = head + u64::from(nh);
    // The IP header and, when the transport header follows it directly (no options or
    // extension headers), the ports, in one read; where that read fails (the packet ends
    // there), the header alone. One buffer for both families: the 6.1 verifier limits the
    // stack of the program and its calls to 512 bytes.
    let v4 = protocol == ETH_P_IP;
    let mut h = [0u8; 44];
    let whole = if v4 { read_buf(ip, &mut h[..24]) } else { read_buf(ip, &mut h[..44]) };
    if !whole && !(if v4 { read_buf(ip, &mut h[..20]) } else { read_buf(ip, &mut h[..40]) }) {
        return None;
    }
    // Where the ports are in `h` (0: not there).
    let mut ports_at = 0;
    if v4 {
        if h[0] >> 4 != 4 {
            return None;
        }
        e.proto = h[9];
        e.src.family = AF_INET;
        e.dst.family = AF_INET;
        e.src.addr[..4].copy_from_slice(&h[12..16]);
        e.dst.addr[..4].copy_from_slice(&h[16..20]);
        if whole && th == nh.wrapping_add(20) && h[0] & 0x0f == 5 {
            ports_at = 20;
        }
    } else {
        if h[0] >> 4 != 6 {
            return None;
        }
        e.proto = h[6];
        e.src.family = AF_INET6;
        e.dst.family = AF_INET6;
        e.src.addr.copy_from_slice(&h[8..24]);
        e.dst.addr.copy_from_slice(&h[24..40]);
        if whole && th == nh.wrapping_add(40) {
            ports_at = 40;
        }
    }
    if (e.proto == 6 || e.proto == 17) && th != UNSET && th > nh {
        let p = match ports_at {
            20 => [h[20], h[21], h[22], h[23]],
            40 => [h[40], h[41], h[42], h[43]],
            _ => read(head + u64::from(th)).unwrap_or([0; 4]),
        };
        e.src.port = u16::from_be_bytes([p[0], p[1]]);
        e.dst.port = u16::from_be_bytes([p[2], p[3]]);
    }
    bump_drop(&e);
    Some(())
}
