//! Loss and RTT of connections that sock_ops does not sample: those established before
//! observer started (sock_ops can ask for a socket's callbacks only from one of that
//! socket's own callbacks), and any that did not fit in its table. Their retransmits still
//! pass `tcp:tcp_retransmit_skb`. There the socket's own counters are read (offsets from
//! BTF) and sent, at most once per sample period, and once more when the connection closes
//! (`sock:inet_sock_set_state`). A connection that never retransmits sends nothing: what
//! matters is loss, and a clean one costs nothing.

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel};
use observer_common::{
    lost,
    route::{TcpSample, TcpSockLayout, kind, retrans},
    tcp::Endpoint,
};

use crate::{
    maps::{OLD_SOCKS, ROUTE_EVENTS, TCP_SOCKS, count_lost},
    sockops::sample_every,
};

/// Set by userspace from BTF; disabled until then.
#[unsafe(no_mangle)]
static TCP_SOCK_LAYOUT: TcpSockLayout = TcpSockLayout {
    enabled: 0,
    cookie: 0,
    data_segs_out: 0,
    total_retrans: 0,
    srtt_us: 0,
    lost_out: 0,
    icsk_retransmits: 0,
};

/// What is kept per adopted connection (keyed by its socket's address).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OldSock {
    next_sample_ns: u64,
    peer: Endpoint,
    local_port: u16,
    active: u16,
    /// total_retrans at the last retransmit: the segments since then are this one's.
    last_total_retrans: u32,
    retrans: [u32; retrans::COUNT],
}

#[inline(always)]
fn layout() -> TcpSockLayout {
    unsafe { core::ptr::read_volatile(&TCP_SOCK_LAYOUT) }
}

#[inline(always)]
fn read<T>(sk: u64, offset: u32) -> T
where
    T: Default,
{
    unsafe { bpf_probe_read_kernel((sk + u64::from(offset)) as *const T) }.unwrap_or_default()
}

/// A data retransmit on `sk` (not in SYN_SENT).
pub fn on_retransmit(sk: u64, peer: &Endpoint, local_port: u16, active: bool) {
    let l = layout();
    if l.enabled == 0 {
        return;
    }
    let cookie: u64 = read(sk, l.cookie);
    if cookie != 0 && TCP_SOCKS.get_ptr(&cookie).is_some() {
        // sock_ops samples this one.
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let total: u32 = read(sk, l.total_retrans);
    // What drives it, as sock_ops tells it: an RTO not yet recovered from, segments marked
    // lost (fast recovery), else a probe.
    let k = if read::<u8>(sk, l.icsk_retransmits) > 0 {
        retrans::RTO
    } else if read::<u32>(sk, l.lost_out) > 0 {
        retrans::FAST
    } else {
        retrans::PROBE
    };
    match OLD_SOCKS.get_ptr_mut(&sk) {
        Some(s) => {
            let s = unsafe { &mut *s };
            if let Some(c) = s.retrans.get_mut(k) {
                *c += total.wrapping_sub(s.last_total_retrans);
            }
            s.last_total_retrans = total;
            if now >= s.next_sample_ns {
                s.next_sample_ns = now + sample_every();
                emit(sk, s, &l, now, kind::SAMPLE);
            }
        }
        None => {
            // The first sight: a baseline (its counters began before observer did).
            let s = OldSock {
                next_sample_ns: now + sample_every(),
                peer: *peer,
                local_port,
                active: active as u16,
                last_total_retrans: total,
                retrans: [0; retrans::COUNT],
            };
            if !crate::maps::lru_insert(&OLD_SOCKS, observer_common::table::OLD_SOCKS, &sk, &s) {
                return;
            }
            emit(sk, &s, &l, now, kind::SAMPLE);
        }
    }
}

/// `sk` moved to TCP_CLOSE: its last counters, if it was adopted.
pub fn on_close(sk: u64) {
    let l = layout();
    if l.enabled == 0 {
        return;
    }
    let Some(s) = OLD_SOCKS.get_ptr(&sk) else { return };
    let s = unsafe { *s };
    emit(sk, &s, &l, unsafe { bpf_ktime_get_ns() }, kind::CLOSED);
    crate::maps::lru_remove(&OLD_SOCKS, observer_common::table::OLD_SOCKS, &sk);
}

#[inline(always)]
fn emit(sk: u64, s: &OldSock, l: &TcpSockLayout, now: u64, what: u32) {
    let sample = TcpSample {
        ts_ns: now,
        kind: what,
        srtt_us: read::<u32>(sk, l.srtt_us) >> 3,
        // A socket's address is unique while it lives, and never a small cookie.
        cookie: sk,
        peer: s.peer,
        local_port: s.local_port,
        active: s.active as u8,
        adopted: 1,
        data_segs_out: read(sk, l.data_segs_out),
        total_retrans: read(sk, l.total_retrans),
        retrans: s.retrans,
        timeouts: 0,
    };
    if ROUTE_EVENTS.output::<TcpSample>(&sample, 0).is_err() {
        count_lost(lost::ROUTE_RINGBUF_FULL);
    }
}
