//! Loss and RTT of established TCP connections, from a sock_ops program on the root cgroup.
//!
//! At ESTABLISHED the program asks the kernel for the RTT, retransmit, RTO and state
//! callbacks of that socket. The RTT callback comes with ACKs; it costs one lookup in the
//! socket table, and a record goes to userspace at most once per sample period per
//! connection (and at close), with the socket's own cumulative counters. So a long-lived
//! connection is seen while it lives, and no map is written per packet.
//!
//! Sockets established before observer started have no callbacks: sock_ops can only ask for
//! them from one of that socket's own callbacks. `older.rs` samples them from their
//! retransmits.

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_RETRANS_CB,
        BPF_SOCK_OPS_RETRANS_CB_FLAG, BPF_SOCK_OPS_RTO_CB, BPF_SOCK_OPS_RTO_CB_FLAG, BPF_SOCK_OPS_RTT_CB,
        BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
    },
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns},
    programs::SockOpsContext,
};
use observer_common::{
    lost,
    route::{TcpSample, kind, retrans},
    tcp::{AF_INET, AF_INET6, Endpoint},
};

use crate::maps::{ROUTE_EVENTS, TCP_SOCKS, count_lost};

/// Nanoseconds between two samples of one connection; set by userspace (its interval).
#[unsafe(no_mangle)]
static SAMPLE_EVERY_NS: u64 = 1_000_000_000;

const TCP_CLOSE: u32 = 7;

#[inline(always)]
pub fn sample_every() -> u64 {
    unsafe { core::ptr::read_volatile(&SAMPLE_EVERY_NS) }
}

/// What the program keeps per connection.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockState {
    next_sample_ns: u64,
    /// snd_nxt when the last RTO fired: retransmits before it is acknowledged are RTO-driven
    /// (the kernel leaves its Loss state at the same point).
    loss_until: u32,
    in_loss: u32,
    retrans: [u32; retrans::COUNT],
    timeouts: u32,
    active: u32,
    _pad: u32,
}

#[inline(always)]
fn ops(ctx: &SockOpsContext) -> &aya_ebpf::bindings::bpf_sock_ops {
    unsafe { &*ctx.ops }
}

pub fn on_sock_ops(ctx: &SockOpsContext) {
    let op = ctx.op();
    if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB || op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        established(ctx, op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB);
        return;
    }
    if op != BPF_SOCK_OPS_RTT_CB && op != BPF_SOCK_OPS_RETRANS_CB && op != BPF_SOCK_OPS_RTO_CB && op != BPF_SOCK_OPS_STATE_CB {
        return;
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    let Some(s) = TCP_SOCKS.get_ptr_mut(&cookie) else { return };
    let s = unsafe { &mut *s };
    let now = unsafe { bpf_ktime_get_ns() };
    let o = ops(ctx);
    if op == BPF_SOCK_OPS_STATE_CB {
        if ctx.arg(1) == TCP_CLOSE {
            emit(ctx, s, cookie, now, kind::CLOSED);
            crate::maps::lru_remove(&TCP_SOCKS, observer_common::table::TCP_SOCKS, &cookie);
        }
        return;
    }
    if op == BPF_SOCK_OPS_RTO_CB {
        s.timeouts += 1;
        s.in_loss = 1;
        s.loss_until = o.snd_nxt;
    } else if op == BPF_SOCK_OPS_RETRANS_CB {
        // args: the segment's sequence, its segment count, the transmit's error.
        let segs = ctx.arg(1).max(1);
        if s.in_loss != 0 && (o.snd_una.wrapping_sub(s.loss_until) as i32) >= 0 {
            s.in_loss = 0;
        }
        let k = if s.in_loss != 0 {
            retrans::RTO
        } else if o.lost_out > 0 {
            retrans::FAST
        } else {
            retrans::PROBE
        };
        if let Some(c) = s.retrans.get_mut(k) {
            *c += segs;
        }
    }
    if now >= s.next_sample_ns {
        s.next_sample_ns = now + sample_every();
        emit(ctx, s, cookie, now, kind::SAMPLE);
    }
}

fn established(ctx: &SockOpsContext, active: bool) {
    let flags = BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG;
    // Keep what another program on the cgroup asked for.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | flags) as i32);
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    let s = SockState {
        next_sample_ns: unsafe { bpf_ktime_get_ns() } + sample_every(),
        loss_until: 0,
        in_loss: 0,
        retrans: [0; retrans::COUNT],
        timeouts: 0,
        active: active as u32,
        _pad: 0,
    };
    crate::maps::lru_insert(&TCP_SOCKS, observer_common::table::TCP_SOCKS, &cookie, &s);
}

#[inline(always)]
fn peer(ctx: &SockOpsContext) -> Option<Endpoint> {
    let mut ep = Endpoint { addr: [0; 16], port: 0, family: 0 };
    // remote_port: network byte order in the upper 16 bits on old kernels, the lower on new
    // ones; one of the halves is zero.
    let rp = ctx.remote_port();
    let port = if rp > 0xffff { rp >> 16 } else { rp };
    ep.port = u16::from_be(port as u16);
    let family = ctx.family();
    if family == AF_INET as u32 {
        ep.family = AF_INET;
        ep.addr[..4].copy_from_slice(&ctx.remote_ip4().to_ne_bytes());
    } else if family == AF_INET6 as u32 {
        let a = ctx.remote_ip6();
        if a[0] == 0 && a[1] == 0 && a[2] == u32::from_be(0xffff) {
            // IPv4-mapped: one destination, one key.
            ep.family = AF_INET;
            ep.addr[..4].copy_from_slice(&a[3].to_ne_bytes());
        } else {
            ep.family = AF_INET6;
            for (i, w) in a.iter().enumerate() {
                ep.addr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
        }
    } else {
        return None;
    }
    Some(ep)
}

fn emit(ctx: &SockOpsContext, s: &SockState, cookie: u64, now: u64, what: u32) {
    let Some(peer) = peer(ctx) else { return };
    let o = ops(ctx);
    let sample = TcpSample {
        ts_ns: now,
        kind: what,
        srtt_us: o.srtt_us >> 3,
        cookie,
        peer,
        local_port: ctx.local_port() as u16,
        active: s.active as u8,
        adopted: 0,
        data_segs_out: o.data_segs_out,
        total_retrans: o.total_retrans,
        retrans: s.retrans,
        timeouts: s.timeouts,
    };
    if ROUTE_EVENTS.output::<TcpSample>(&sample, 0).is_err() {
        count_lost(lost::ROUTE_RINGBUF_FULL);
    }
}
