//! connect() calls that fail before the socket reaches SYN_SENT: no route (ENETUNREACH,
//! EHOSTUNREACH), no free local port (EADDRNOTAVAIL), a local policy (EPERM, EACCES).
//! connect() returns these at once and TCP changes no state, so only the syscall shows
//! them. The entry remembers the call's address argument per thread; the SYN_SENT
//! transition marks the call as having reached the wire (then the TCP layer owns it); the
//! exit reads the address only for a failure.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    programs::TracePointContext,
};
use observer_common::{
    lost,
    route::{ConnectFailEvent, ConnectSyscallLayout, kind},
    tcp::{AF_INET, AF_INET6, Endpoint},
};

use crate::maps::{CONNECT_CALLS, ROUTE_EVENTS, count_lost};

#[unsafe(no_mangle)]
static CONNECT_SYSCALL_LAYOUT: ConnectSyscallLayout = ConnectSyscallLayout { enabled: 0, uservaddr: 0, ret: 0 };

const EINPROGRESS: i64 = 115;

/// A connect() in progress on one thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Call {
    uservaddr: u64,
    reached_syn_sent: u32,
    _pad: u32,
}

#[inline(always)]
fn layout() -> ConnectSyscallLayout {
    unsafe { core::ptr::read_volatile(&CONNECT_SYSCALL_LAYOUT) }
}

pub fn enter(ctx: &TracePointContext) -> Option<()> {
    let l = layout();
    if l.enabled == 0 {
        return None;
    }
    let uservaddr: u64 = unsafe { ctx.read_at(l.uservaddr as usize) }.ok()?;
    let tid = bpf_get_current_pid_tgid() as u32;
    crate::maps::lru_insert(&CONNECT_CALLS, observer_common::table::CONNECT_CALLS, &tid, &Call { uservaddr, reached_syn_sent: 0, _pad: 0 });
    Some(())
}

/// From `inet_sock_set_state` CLOSE -> SYN_SENT, which runs in the connecting thread.
#[inline(always)]
pub fn reached_syn_sent() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(c) = CONNECT_CALLS.get_ptr_mut(&tid) {
        unsafe { (*c).reached_syn_sent = 1 };
    }
}

pub fn exit(ctx: &TracePointContext) -> Option<()> {
    let l = layout();
    if l.enabled == 0 {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let call = unsafe { *CONNECT_CALLS.get(&tid)? };
    crate::maps::lru_remove(&CONNECT_CALLS, observer_common::table::CONNECT_CALLS, &tid);
    let ret: i64 = unsafe { ctx.read_at(l.ret as usize) }.ok()?;
    if ret >= 0 || ret == -EINPROGRESS || call.reached_syn_sent != 0 {
        return None;
    }
    let mut dest = Endpoint { addr: [0; 16], port: 0, family: 0 };
    // struct sockaddr_in{,6}: family, port (network order), then the address.
    let head: [u8; 8] = unsafe { bpf_probe_read_user(call.uservaddr as *const [u8; 8]) }.ok()?;
    let family = u16::from_ne_bytes([head[0], head[1]]);
    dest.port = u16::from_be_bytes([head[2], head[3]]);
    if family == AF_INET {
        dest.family = AF_INET;
        dest.addr[..4].copy_from_slice(&head[4..8]);
    } else if family == AF_INET6 {
        let a: [u8; 16] = unsafe { bpf_probe_read_user((call.uservaddr + 8) as *const [u8; 16]) }.ok()?;
        if a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff {
            dest.family = AF_INET;
            dest.addr[..4].copy_from_slice(&a[12..16]);
        } else {
            dest.family = AF_INET6;
            dest.addr = a;
        }
    } else {
        return None;
    }
    let e = ConnectFailEvent {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        kind: kind::CONNECT_FAILED,
        errno: (-ret) as i32,
        dest,
        pid: (pid_tgid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    if ROUTE_EVENTS.output::<ConnectFailEvent>(&e, 0).is_err() {
        count_lost(lost::ROUTE_RINGBUF_FULL);
    }
    Some(())
}
