//! Packets the kernel drops on this host (`skb:kfree_skb`, with its drop reason since 5.17):
//! a full qdisc, a firewall rule, a socket buffer. What tells loss on this host from loss on
//! the path. Each drop bumps a per-CPU counter keyed by the packet's addresses and the
//! reason: a flood of drops costs a map update each, not a ring record and a wakeup. The
//! addresses come from the skb's network and transport headers (offsets from BTF).

use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::TracePointContext};
use observer_common::{
    route::{DropKey, DropLayout, SKB_BLOCK},
    tcp::{AF_INET, AF_INET6, Endpoint},
};

use crate::maps::bump_drop;

#[unsafe(no_mangle)]
static DROP_LAYOUT: DropLayout = DropLayout {
    enabled: 0,
    tp_skbaddr: 0,
    tp_protocol: 0,
    tp_reason: u32::MAX,
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
    block_th: 0,
    block_nh: 0,
    block_head: 0,
    dev_sk_adjacent: 0,
    routine: [0; 2],
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// An skb header offset that was never set.
const UNSET: u16 = 0xffff;

#[inline(always)]
fn read<T>(at: u64) -> Option<T> {
    unsafe { bpf_probe_read_kernel(at as *const T) }.ok()
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
    let mut e = DropKey {
        reason,
        src: Endpoint { addr: [0; 16], port: 0, family: 0 },
        dst: Endpoint { addr: [0; 16], port: 0, family: 0 },
        proto: 0,
        has_sk: 0,
        _pad: [0; 2],
    };
    // Routine reasons: counted per reason, no packet read (these come in floods: a scan's
    // NO_SOCKET, duplicates of retransmitted data).
    if reason < 128 && (l.routine[(reason / 64) as usize & 1] >> (reason % 64)) & 1 == 1 {
        bump_drop(&e);
        return Some(());
    }
    let skb: u64 = unsafe { ctx.read_at(l.tp_skbaddr as usize) }.ok()?;
    let (dev, sk): (u64, u64) = if l.dev_sk_adjacent == 1 {
        read::<[u64; 2]>(skb + u64::from(l.dev)).map_or((0, 0), |v| (v[0], v[1]))
    } else {
        (read(skb + u64::from(l.dev)).unwrap_or(0), read(skb + u64::from(l.sk)).unwrap_or(0))
    };
    // Only this network namespace's drops: the device's namespace, else the socket's (a
    // packet dropped on its way out may have no device yet).
    let net: u64 = if dev != 0 {
        read(dev + u64::from(l.dev_net)).unwrap_or(0)
    } else if sk != 0 {
        read(sk + u64::from(l.sk_net)).unwrap_or(0)
    } else {
        0
    };
    if net == 0 || read::<u32>(net + u64::from(l.net_inum)) != Some(l.netns_inum) {
        return None;
    }
    let (th, nh, head) = if l.block_len > 0 {
        let b: [u8; SKB_BLOCK as usize] = read(skb + u64::from(l.block_start))?;
        (block_u16(&b, l.block_th), block_u16(&b, l.block_nh), block_u64(&b, l.block_head))
    } else {
        (
            read(skb + u64::from(l.transport_header)).unwrap_or(UNSET),
            read(skb + u64::from(l.network_header))?,
            read(skb + u64::from(l.head))?,
        )
    };
    if head == 0 || nh == UNSET {
        return None;
    }
    e.has_sk = (sk != 0) as u8;
    let ip = head + u64::from(nh);
    if protocol == ETH_P_IP {
        let h: [u8; 20] = read(ip)?;
        if h[0] >> 4 != 4 {
            return None;
        }
        e.proto = h[9];
        e.src.family = AF_INET;
        e.dst.family = AF_INET;
        e.src.addr[..4].copy_from_slice(&h[12..16]);
        e.dst.addr[..4].copy_from_slice(&h[16..20]);
    } else {
        let h: [u8; 40] = read(ip)?;
        if h[0] >> 4 != 6 {
            return None;
        }
        e.proto = h[6];
        e.src.family = AF_INET6;
        e.dst.family = AF_INET6;
        e.src.addr.copy_from_slice(&h[8..24]);
        e.dst.addr.copy_from_slice(&h[24..40]);
    }
    if (e.proto == 6 || e.proto == 17) && th != UNSET && th > nh {
        let ports: [u8; 4] = read(head + u64::from(th)).unwrap_or([0; 4]);
        e.src.port = u16::from_be_bytes([ports[0], ports[1]]);
        e.dst.port = u16::from_be_bytes([ports[2], ports[3]]);
    }
    bump_drop(&e);
    Some(())
}
