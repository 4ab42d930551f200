//! TCP connect layer from tracepoints (this kernel has no kprobes). Field offsets come from
//! userspace (tracefs `format` files) through the read-only globals below.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    programs::TracePointContext,
};
use observer_common::{
    layout::{ABSENT, TpLayout, addr_style},
    lost, table,
    tcp::{
        AF_INET, AF_INET6, ConnectEvent, Endpoint, classify_connect_error, dest_counter, errno,
        outcome, port_counter,
    },
};

use crate::{
    conn::Conn,
    maps::{CONNECT_EVENTS, CONNECT_PRODUCED, CONNS, bump_dest, bump_port, count_lost, lru_insert, lru_remove},
};

// Set by userspace at load time; DISABLED until then.
#[unsafe(no_mangle)]
static TP_SET_STATE: TpLayout = TpLayout::DISABLED;
#[unsafe(no_mangle)]
static TP_RETRANSMIT: TpLayout = TpLayout::DISABLED;
#[unsafe(no_mangle)]
static TP_RECV_RESET: TpLayout = TpLayout::DISABLED;
#[unsafe(no_mangle)]
static TP_SEND_RESET: TpLayout = TpLayout::DISABLED;
#[unsafe(no_mangle)]
static TP_RETRANS_SYNACK: TpLayout = TpLayout::DISABLED;

/// offsetof(struct sock, sk_err) from BTF; u32::MAX when unknown.
#[unsafe(no_mangle)]
static SOCK_ERR_OFFSET: u32 = u32::MAX;
/// From BTF, the way to the errno of the first error queued on a socket: offsets of
/// sock.sk_error_queue, sk_buff_head.next, sk_buff.cb (a sock_exterr_skb), its `ee`, and
/// `ee.ee_errno`. All u32::MAX when unknown.
#[unsafe(no_mangle)]
static ERR_QUEUE_LAYOUT: [u32; 4] = [u32::MAX; 4];
/// offsetof(struct sock, sk_err_soft) from BTF; u32::MAX when unknown.
#[unsafe(no_mangle)]
static SOCK_ERR_SOFT_OFFSET: u32 = u32::MAX;

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;

#[inline(always)]
fn layout(global: &'static TpLayout) -> TpLayout {
    // Volatile: the compiler must not fold the DISABLED initialiser into the code.
    unsafe { core::ptr::read_volatile(global) }
}

#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u16) -> Option<T> {
    if offset == ABSENT {
        return None;
    }
    match unsafe { ctx.read_at::<T>(offset as usize) } {
        Ok(v) => Some(v),
        Err(_) => {
            count_lost(lost::TRACEPOINT_READ_FAILED);
            None
        }
    }
}

/// The remote endpoint and the local port of the record. IPv4-mapped IPv6 addresses are
/// folded into IPv4 so that one destination has one key.
#[inline(always)]
fn endpoints(ctx: &TracePointContext, l: &TpLayout) -> Option<(Endpoint, u16)> {
    let mut ep = Endpoint { addr: [0; 16], port: 0, family: 0 };
    let local_port;
    if l.addr_style == addr_style::SOCKADDR {
        // struct sockaddr_in{,6}: family, then the port in network byte order.
        ep.family = field::<u16>(ctx, l.daddr)?;
        ep.port = u16::from_be(field::<u16>(ctx, l.daddr + 2)?);
        local_port = u16::from_be(field::<u16>(ctx, l.saddr + 2)?);
        if ep.family == AF_INET {
            let a: [u8; 4] = field(ctx, l.daddr + 4)?;
            ep.addr[0] = a[0];
            ep.addr[1] = a[1];
            ep.addr[2] = a[2];
            ep.addr[3] = a[3];
        } else if ep.family == AF_INET6 {
            ep.addr = field(ctx, l.daddr + 8)?;
        } else {
            return None;
        }
    } else {
        ep.family = field::<u16>(ctx, l.family)?;
        ep.port = field::<u16>(ctx, l.dport)?;
        local_port = field::<u16>(ctx, l.sport)?;
        if ep.family == AF_INET {
            let a: [u8; 4] = field(ctx, l.daddr)?;
            ep.addr[0] = a[0];
            ep.addr[1] = a[1];
            ep.addr[2] = a[2];
            ep.addr[3] = a[3];
        } else if ep.family == AF_INET6 {
            ep.addr = field(ctx, l.daddr_v6)?;
        } else {
            return None;
        }
    }
    if ep.family == AF_INET6 && is_v4_mapped(&ep.addr) {
        ep.family = AF_INET;
        ep.addr = [ep.addr[12], ep.addr[13], ep.addr[14], ep.addr[15], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    }
    Some((ep, local_port))
}

#[inline(always)]
fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0 && a[4] == 0 && a[5] == 0 && a[6] == 0
        && a[7] == 0 && a[8] == 0 && a[9] == 0 && a[10] == 0xff && a[11] == 0xff
}

/// For sockets observer did not see connect (server side, or opened before start): the
/// ephemeral port is the higher one, so the side with the lower port is the service.
#[inline(always)]
fn looks_like_client(remote: &Endpoint, local_port: u16) -> bool {
    remote.port < local_port
}

pub fn inet_sock_set_state(ctx: &TracePointContext) -> Option<()> {
    let l = layout(&TP_SET_STATE);
    if l.enabled == 0 || field::<u16>(ctx, l.protocol)? != IPPROTO_TCP {
        return None;
    }
    let old: i32 = field(ctx, l.oldstate)?;
    let new: i32 = field(ctx, l.newstate)?;
    let sk: u64 = field(ctx, l.skaddr)?;
    if old == TCP_CLOSE && new == TCP_SYN_SENT {
        // connect(): runs in the caller's context, so pid and comm are the caller's.
        let (dest, _) = endpoints(ctx, &l)?;
        let conn = Conn {
            start_ns: unsafe { bpf_ktime_get_ns() },
            dest,
            syn_retransmits: 0,
            established: 0,
            pid: (bpf_get_current_pid_tgid() >> 32) as u32,
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
            rst_seen: 0,
            reported_error: 0,
        };
        crate::connect_calls::reached_syn_sent();
        lru_insert(&CONNS, table::CONNS, &sk, &conn);
        bump_dest(&dest, dest_counter::ATTEMPTS);
    } else if old == TCP_SYN_SENT && new == TCP_ESTABLISHED {
        let Some(conn) = CONNS.get_ptr_mut(&sk) else {
            connect_start_missing();
            return None;
        };
        let conn = unsafe { &mut *conn };
        conn.established = 1;
        bump_dest(&conn.dest, dest_counter::ESTABLISHED);
        // The port is bound by now (not yet at SYN_SENT).
        let local_port = endpoints(ctx, &l).map_or(0, |(_, p)| p);
        emit(conn, outcome::ESTABLISHED, 0, local_port);
    } else if old == TCP_SYN_SENT && new == TCP_CLOSE {
        if let Some(conn) = CONNS.get_ptr(&sk) {
            let conn = unsafe { *conn };
            let mut error = connect_error(sk, &conn);
            if error == 0 {
                // An error the application read (SO_ERROR clears sk_err and sk_err_soft)
                // before closing.
                error = conn.reported_error;
            }
            let (kind, counter) = classify_connect_error(error);
            bump_dest(&conn.dest, counter);
            if kind == outcome::ABORTED && conn.syn_retransmits > 0 {
                bump_dest(&conn.dest, dest_counter::GAVE_UP);
            }
            emit(&conn, kind, error, 0);
        } else {
            connect_start_missing();
        }
        lru_remove(&CONNS, table::CONNS, &sk);
    } else if new == TCP_CLOSE {
        lru_remove(&CONNS, table::CONNS, &sk);
    }
    if new == TCP_CLOSE {
        crate::older::on_close(sk);
    }
    Some(())
}

/// A connect ended that CONNS does not hold: its start was evicted, so its outcome is lost.
/// A connect already in flight when observer loaded looks the same; those end within the
/// first seconds (SYN retries past 3 s are rare), which are left out.
#[inline(always)]
fn connect_start_missing() {
    let loaded = unsafe { core::ptr::read_volatile(&LOADED_NS) };
    if unsafe { bpf_ktime_get_ns() } > loaded.saturating_add(3_000_000_000) {
        count_lost(lost::CONNECT_OUTCOMES_EVICTED);
    }
}

/// When userspace loaded the programs (CLOCK_MONOTONIC, as bpf_ktime_get_ns).
#[unsafe(no_mangle)]
static LOADED_NS: u64 = 0;

/// Wake the reader once per this many bytes of outcomes from a CPU (set by userspace: a
/// quarter of the ring divided by the CPUs); it drains on its own timer in between. A wakeup
/// per outcome made a failing fleet's 10,000 connects a second cost more in context switches
/// than in the rest of userspace's work.
#[unsafe(no_mangle)]
static CONNECT_WAKEUP_BYTES: u64 = 0;

#[inline(always)]
fn emit(conn: &Conn, kind: u32, error: i32, local_port: u16) {
    let now = unsafe { bpf_ktime_get_ns() };
    match CONNECT_EVENTS.reserve::<ConnectEvent>(0) {
        Some(mut entry) => {
            entry.write(ConnectEvent {
                ts_ns: now,
                latency_ns: now.saturating_sub(conn.start_ns),
                dest: conn.dest,
                outcome: kind,
                error,
                syn_retransmits: conn.syn_retransmits,
                pid: conn.pid,
                comm: conn.comm,
                local_port,
                _pad: 0,
            });
            let every = unsafe { core::ptr::read_volatile(&CONNECT_WAKEUP_BYTES) };
            let flags = match CONNECT_PRODUCED.get_ptr_mut(0) {
                // SAFETY: this CPU's slot; a race with a program it interrupted only moves a
                // wakeup.
                Some(p) => crate::maps::wakeup_flags(unsafe { &mut *p }, size_of::<ConnectEvent>() as u64, every),
                None => 0,
            };
            entry.submit(flags);
        }
        None => count_lost(lost::CONNECT_RINGBUF_FULL),
    }
}

/// The errno that ended a connect in SYN_SENT, or 0 when the application closed it.
/// The kernel writes sk->sk_err before tcp_done() on every failure path (RST, SYN retries
/// exhausted, ICMP), so it is set when SYN_SENT -> CLOSE fires. An ICMP error that arrives
/// while the socket is locked (the connect() call still sending its SYN: a reject from the
/// next hop comes back that fast) goes to sk->sk_err_soft instead, and the application that
/// learns of it closes the socket: that close is the ICMP's doing, not the application's
/// choice. Both offsets come from the kernel's BTF.
#[inline(always)]
fn connect_error(sk: u64, conn: &Conn) -> i32 {
    let read = |global: &'static u32| {
        let offset = unsafe { core::ptr::read_volatile(global) };
        if offset == u32::MAX {
            return 0;
        }
        let ptr = (sk as usize + offset as usize) as *const i32;
        unsafe { bpf_probe_read_kernel(ptr) }.unwrap_or(0)
    };
    let mut error = read(&SOCK_ERR_OFFSET);
    if error == 0 {
        error = read(&SOCK_ERR_SOFT_OFFSET);
    }
    if error == 0 && conn.rst_seen != 0 {
        error = errno::ECONNREFUSED;
    }
    error
}

pub fn tcp_retransmit_skb(ctx: &TracePointContext) -> Option<()> {
    let l = layout(&TP_RETRANSMIT);
    if l.enabled == 0 {
        return None;
    }
    let sk: u64 = field(ctx, l.skaddr)?;
    let state: i32 = field(ctx, l.state)?;
    let (remote, local_port) = endpoints(ctx, &l)?;
    if state == TCP_SYN_SENT {
        if let Some(conn) = CONNS.get_ptr_mut(&sk) {
            // The socket lock is held here: a plain add is safe.
            unsafe { (*conn).syn_retransmits += 1 };
        }
        bump_dest(&remote, dest_counter::SYN_RETRANSMITS);
    } else {
        let active = CONNS.get_ptr(&sk).is_some() || looks_like_client(&remote, local_port);
        if active {
            bump_dest(&remote, dest_counter::DATA_RETRANSMITS);
        } else {
            bump_port(local_port, port_counter::DATA_RETRANSMITS);
        }
        crate::older::on_retransmit(sk, &remote, local_port, active);
    }
    Some(())
}

/// `sock:inet_sk_error_report` (raw): an error reported on a socket. For a connect in
/// SYN_SENT, its error is kept, so that the close is classified by it even after the
/// application read and cleared it: an ICMP host-unreachable in SYN_SENT is a soft error
/// (sk_err_soft, sk_err stays 0) and wakes the application, which reads SO_ERROR and closes.
pub fn error_report(sk: u64) {
    let Some(conn) = CONNS.get_ptr_mut(&sk) else { return };
    let conn = unsafe { &mut *conn };
    if conn.established != 0 {
        return;
    }
    let mut error = connect_error(sk, conn);
    if error == 0 {
        // A soft error: TCP sets sk_err_soft only after this report, when the ICMP arrives
        // while connect() still holds the socket. The report is for the error queued on
        // the socket (ip_icmp_error), which carries the errno.
        error = queued_errno(sk).unwrap_or(0);
    }
    if error != 0 {
        conn.reported_error = error;
    }
}

/// The errno of the first error queued on `sk` (struct sock_exterr_skb in the skb's cb).
#[inline(always)]
fn queued_errno(sk: u64) -> Option<i32> {
    let l = unsafe { core::ptr::read_volatile(&ERR_QUEUE_LAYOUT) };
    if l[0] == u32::MAX {
        return None;
    }
    let queue = sk + u64::from(l[0]);
    let skb: u64 = unsafe { bpf_probe_read_kernel((queue + u64::from(l[1])) as *const u64) }.ok()?;
    // An empty queue points at itself.
    if skb == 0 || skb == queue {
        return None;
    }
    let errno: u32 = unsafe { bpf_probe_read_kernel((skb + u64::from(l[2]) + u64::from(l[3])) as *const u32) }.ok()?;
    Some(errno as i32)
}

pub fn tcp_receive_reset(ctx: &TracePointContext) -> Option<()> {
    let l = layout(&TP_RECV_RESET);
    if l.enabled == 0 {
        return None;
    }
    let sk: u64 = field(ctx, l.skaddr)?;
    let (remote, local_port) = endpoints(ctx, &l)?;
    match CONNS.get_ptr_mut(&sk) {
        // An RST answering our SYN is a refusal, counted when the socket closes.
        Some(conn) if unsafe { (*conn).established } == 0 => unsafe { (*conn).rst_seen = 1 },
        Some(_) => bump_dest(&remote, dest_counter::RESETS_RECEIVED),
        None if looks_like_client(&remote, local_port) => {
            bump_dest(&remote, dest_counter::RESETS_RECEIVED)
        }
        None => bump_port(local_port, port_counter::RESETS_RECEIVED),
    }
    Some(())
}

pub fn tcp_send_reset(ctx: &TracePointContext) -> Option<()> {
    let l = layout(&TP_SEND_RESET);
    if l.enabled == 0 {
        return None;
    }
    // skaddr is NULL for an RST answering a segment that matched no socket.
    let sk: u64 = field(ctx, l.skaddr).unwrap_or(0);
    let (remote, local_port) = endpoints(ctx, &l)?;
    let known = sk != 0 && CONNS.get_ptr(&sk).is_some();
    if known || looks_like_client(&remote, local_port) {
        bump_dest(&remote, dest_counter::RESETS_SENT);
    } else {
        bump_port(local_port, port_counter::RESETS_SENT);
    }
    Some(())
}

pub fn tcp_retransmit_synack(ctx: &TracePointContext) -> Option<()> {
    let l = layout(&TP_RETRANS_SYNACK);
    if l.enabled == 0 {
        return None;
    }
    let (_, local_port) = endpoints(ctx, &l)?;
    bump_port(local_port, port_counter::SYNACK_RETRANSMITS);
    Some(())
}
