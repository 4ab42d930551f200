//! OpenSSL's plaintext, for the HTTP layer: uprobes on `SSL_write`, `SSL_read` and their
//! `_ex` forms in libssl. The entry probe remembers the call's buffer per thread; the return
//! probe copies what was written or read, when it starts an HTTP message. The socket under
//! the call is learned where the call sends or receives: fentry on tcp_sendmsg/tcp_recvmsg
//! where the kernel allows it, else the sock:sock_{send,recv}_length tracepoints (6.3+), else
//! the read/write syscall tracepoints (which put every syscall on the host on a slower path).

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        bpf_probe_read_user_buf, generated::bpf_get_current_task,
    },
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use observer_common::{
    http::{HTTP_CAPTURE, HttpEvent, kind},
    layout::SockLayout,
    lost,
    tcp::{AF_INET, AF_INET6, Endpoint},
};

use crate::{
    http::{output, starts},
    tc::copy_endpoint,
    maps::{SSL_CALLS, SSL_SCRATCH, count_lost},
};

/// Offset of `fd` in the `syscalls:sys_enter_{read,write,sendto,recvfrom}` records; userspace
/// checks that tracefs says the same before it attaches (`probe/ssl.rs`).
const SYS_ENTER_FD_OFFSET: usize = 16;
/// Offsets of `sk` and `protocol` in `sock:sock_{send,recv}_length` (Linux 6.3+), checked the
/// same way.
const SOCK_LENGTH_SK_OFFSET: usize = 8;
const SOCK_LENGTH_PROTOCOL_OFFSET: usize = 18;
const IPPROTO_TCP: u16 = 6;

/// From BTF (set by userspace): the way from a file descriptor to its socket's addresses.
#[unsafe(no_mangle)]
static SOCK_LAYOUT: SockLayout = SockLayout {
    enabled: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_private_data: 0,
    socket_sk: 0,
    family: 0,
    daddr: 0,
    rcv_saddr: 0,
    dport: 0,
    num: 0,
    v6_daddr: 0,
    v6_rcv_saddr: 0,
    sk_protocol: u32::MAX,
};

/// One OpenSSL call in progress on a thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Call {
    ssl: u64,
    buf: u64,
    /// `_ex` forms: where the byte count is written.
    count_at: u64,
    /// The socket under the call, once a send or receive showed it (family 0 until then).
    local: Endpoint,
    remote: Endpoint,
    fd: i32,
    kind: u8,
    ex: u8,
    _pad: [u8; 2],
}

/// Per CPU: the event being built and the bytes written since the last wakeup.
#[repr(C)]
pub struct Scratch {
    produced: u64,
    event: HttpEvent,
}

#[inline(always)]
pub fn enter(ctx: &ProbeContext, what: u8, ex: bool) {
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else { return };
    let count_at = if ex { ctx.arg::<u64>(3).unwrap_or(0) } else { 0 };
    let none = Endpoint { addr: [0; 16], port: 0, family: 0 };
    let call = Call { ssl, buf, count_at, local: none, remote: none, fd: -1, kind: what, ex: ex as u8, _pad: [0; 2] };
    crate::maps::lru_insert(&SSL_CALLS, observer_common::table::SSL_CALLS, &bpf_get_current_pid_tgid(), &call);
}

/// A read or write syscall: if its thread is inside an OpenSSL call, that call's socket.
#[inline(always)]
pub fn syscall(ctx: &TracePointContext) {
    let Some(call) = SSL_CALLS.get_ptr_mut(&bpf_get_current_pid_tgid()) else { return };
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(SYS_ENTER_FD_OFFSET) }) else { return };
    // SAFETY: a map value of this thread's, which only this thread writes.
    let call = unsafe { &mut *call };
    if call.fd == fd as i32 && call.local.family != 0 {
        return;
    }
    call.fd = fd as i32;
    let _ = socket_of(fd, call);
}

/// The thread's TCP socket, seen where the kernel sends or receives on it (fentry on
/// tcp_sendmsg and tcp_recvmsg): if the thread is inside an OpenSSL call, that call's socket.
/// Only TCP sends and receives pay for this, not every syscall.
#[inline(always)]
pub fn tcp_call(sk: u64) {
    let Some(call) = SSL_CALLS.get_ptr_mut(&bpf_get_current_pid_tgid()) else { return };
    // SAFETY: a map value of this thread's, which only this thread writes.
    let call = unsafe { &mut *call };
    if call.local.family == 0 {
        let l = unsafe { core::ptr::read_volatile(&SOCK_LAYOUT) };
        let _ = read_sock(&l, sk, call);
    }
}

/// `sock:sock_{send,recv}_length`: a socket send or receive finished on this thread.
#[inline(always)]
pub fn sock_length(ctx: &TracePointContext) {
    let Ok(protocol) = (unsafe { ctx.read_at::<u16>(SOCK_LENGTH_PROTOCOL_OFFSET) }) else { return };
    if protocol != IPPROTO_TCP {
        return;
    }
    if let Ok(sk) = unsafe { ctx.read_at::<u64>(SOCK_LENGTH_SK_OFFSET) } {
        tcp_call(sk);
    }
}

/// The same as raw tracepoints, `sock_{send,recv}_length(sk, ret, flags)`: no trace record
/// is built for the call, which every send and receive on the host (a UDP flood's too) paid.
#[inline(always)]
pub fn sock_length_raw(sk: u64) {
    // Two fields, not the whole layout: this runs at every send and receive on the host.
    let (enabled, at) = unsafe { (core::ptr::read_volatile(&raw const SOCK_LAYOUT.enabled), core::ptr::read_volatile(&raw const SOCK_LAYOUT.sk_protocol)) };
    if sk == 0 || enabled == 0 || at == u32::MAX {
        return;
    }
    let Ok(protocol) = (unsafe { bpf_probe_read_kernel((sk + u64::from(at)) as *const u16) }) else { return };
    if protocol == IPPROTO_TCP {
        tcp_call(sk);
    }
}

/// Read the addresses of the TCP socket behind this thread's `fd`:
/// task->files->fdt->fd[fd]->private_data (a socket)->sk.
#[inline(always)]
fn socket_of(fd: u64, call: &mut Call) -> Option<()> {
    let l = unsafe { core::ptr::read_volatile(&SOCK_LAYOUT) };
    if l.enabled == 0 {
        return None;
    }
    let at = |base: u64, off: u32| (base + u64::from(off)) as *const u64;
    let read = |p: *const u64| unsafe { bpf_probe_read_kernel(p) }.ok().filter(|v| *v != 0);
    let task = unsafe { bpf_get_current_task() };
    let files = read(at(task, l.task_files))?;
    let fdt = read(at(files, l.files_fdt))?;
    let max = unsafe { bpf_probe_read_kernel((fdt + u64::from(l.fdt_max_fds)) as *const u32) }.ok()?;
    if fd >= u64::from(max) {
        return None;
    }
    let fds = read(at(fdt, l.fdt_fd))?;
    let file = read((fds + fd * 8) as *const u64)?;
    let socket = read(at(file, l.file_private_data))?;
    let sk = read(at(socket, l.socket_sk))?;
    read_sock(&l, sk, call)
}

/// The addresses of `sk` into the call, from struct sock_common.
#[inline(always)]
fn read_sock(l: &SockLayout, sk: u64, call: &mut Call) -> Option<()> {
    if l.enabled == 0 || sk == 0 {
        return None;
    }
    let family = unsafe { bpf_probe_read_kernel((sk + u64::from(l.family)) as *const u16) }.ok()?;
    let dport = u16::from_be(unsafe { bpf_probe_read_kernel((sk + u64::from(l.dport)) as *const u16) }.ok()?);
    let num = unsafe { bpf_probe_read_kernel((sk + u64::from(l.num)) as *const u16) }.ok()?;
    let (local, remote) = (&mut call.local, &mut call.remote);
    if family == AF_INET {
        let d = unsafe { bpf_probe_read_kernel((sk + u64::from(l.daddr)) as *const [u8; 4]) }.ok()?;
        let s = unsafe { bpf_probe_read_kernel((sk + u64::from(l.rcv_saddr)) as *const [u8; 4]) }.ok()?;
        remote.addr = [d[0], d[1], d[2], d[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        local.addr = [s[0], s[1], s[2], s[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    } else if family == AF_INET6 {
        remote.addr = unsafe { bpf_probe_read_kernel((sk + u64::from(l.v6_daddr)) as *const [u8; 16]) }.ok()?;
        local.addr = unsafe { bpf_probe_read_kernel((sk + u64::from(l.v6_rcv_saddr)) as *const [u8; 16]) }.ok()?;
    } else {
        return None;
    }
    (remote.port, local.port) = (dport, num);
    (remote.family, local.family) = (family, family);
    Some(())
}

#[inline(always)]
pub fn exit(ctx: &RetProbeContext) {
    let id = bpf_get_current_pid_tgid();
    let Some(&call) = (unsafe { SSL_CALLS.get(&id) }) else { return };
    crate::maps::lru_remove(&SSL_CALLS, observer_common::table::SSL_CALLS, &id);
    let ret: i64 = ctx.ret();
    let n = if call.ex == 1 {
        if ret != 1 || call.count_at == 0 {
            return;
        }
        match unsafe { bpf_probe_read_user(call.count_at as *const u64) } {
            Ok(n) => n,
            Err(_) => return,
        }
    } else if ret > 0 {
        ret as u64
    } else {
        return;
    };
    // Only the start of a message is worth a record (bodies are not parsed): its first four
    // bytes decide before the rest is copied.
    if n < 4 {
        return;
    }
    match unsafe { bpf_probe_read_user(call.buf as *const [u8; 4]) } {
        Ok(first) if starts(u32::from_le_bytes(first)) => {}
        _ => return,
    }
    let Some(s) = SSL_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's slot; a probe runs to completion on one CPU.
    let s = unsafe { &mut *s };
    let ev = &mut s.event;
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.seq_or_ssl = call.ssl;
    ev.payload_len = n.min(u64::from(u32::MAX)) as u32;
    ev.ifindex = 0;
    ev.pid = (id >> 32) as u32;
    ev.fd = call.fd;
    ev.kind = call.kind;
    ev.direction = 0;
    // The sender first: what this process wrote, or what its peer sent it.
    let (src, dst) = if call.kind == WRITE { (&call.local, &call.remote) } else { (&call.remote, &call.local) };
    copy_endpoint(&mut ev.src, src);
    copy_endpoint(&mut ev.dst, dst);
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    ev.captured = 0;
    // 1..=HTTP_CAPTURE in a form the verifier keeps.
    let len = ((n.min(HTTP_CAPTURE as u64) as usize - 1) & (HTTP_CAPTURE - 1)) + 1;
    if unsafe { bpf_probe_read_user_buf(call.buf as *const u8, &mut ev.data[..len]) }.is_err() {
        count_lost(lost::HTTP_COPY_FAILED);
        return;
    }
    ev.captured = len as u16;
    output(&mut s.produced, ev);
}

pub const WRITE: u8 = kind::SSL_WRITE;
pub const READ: u8 = kind::SSL_READ;
