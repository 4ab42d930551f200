//! observer's kernel programs: entry points only. The logic lives in the modules.
#![no_std]
#![no_main]

mod conn;
mod connect_calls;
mod dns;
mod drops;
mod http;
mod icmp;
mod maps;
mod older;
mod sockops;
mod ssl;
mod tc;
mod tls;
mod tracepoints;

use aya_ebpf::{
    macros::{classifier, fentry, raw_tracepoint, sock_ops, tracepoint, uprobe, uretprobe},
    programs::{FEntryContext, ProbeContext, RawTracePointContext, RetProbeContext, SockOpsContext, TcContext, TracePointContext},
};
use observer_common::dns::{DIRECTION_EGRESS, DIRECTION_INGRESS};

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = tracepoints::inet_sock_set_state(&ctx);
    0
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let _ = tracepoints::tcp_retransmit_skb(&ctx);
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let _ = tracepoints::tcp_receive_reset(&ctx);
    0
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let _ = tracepoints::tcp_send_reset(&ctx);
    0
}

/// Raw, for its `struct sock *`: the record has only the 4-tuple and `sk_err`, which is 0
/// for a soft error.
#[raw_tracepoint(tracepoint = "inet_sk_error_report")]
pub fn inet_sk_error_report(ctx: RawTracePointContext) -> i32 {
    tracepoints::error_report(ctx.arg(0));
    0
}

#[tracepoint]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let _ = tracepoints::tcp_retransmit_synack(&ctx);
    0
}

/// Loss and RTT of established connections (root cgroup).
#[sock_ops]
pub fn observer_sockops(ctx: SockOpsContext) -> u32 {
    sockops::on_sock_ops(&ctx);
    1
}

/// Packets dropped on this host, with the reason.
#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    let _ = drops::kfree_skb(&ctx);
    0
}

/// The same as a raw tracepoint, where kfree_skb has its reason argument (5.17+).
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn kfree_skb_raw(ctx: RawTracePointContext) -> i32 {
    let _ = drops::kfree_skb_raw(&ctx);
    0
}

/// connect() calls that fail before any SYN: entry and exit.
#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = connect_calls::enter(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = connect_calls::exit(&ctx);
    0
}

// OpenSSL: the entry probes remember the call, the return probes copy its plaintext.
#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    ssl::enter(&ctx, ssl::WRITE, false);
    0
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    ssl::enter(&ctx, ssl::WRITE, true);
    0
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    ssl::enter(&ctx, ssl::READ, false);
    0
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    ssl::enter(&ctx, ssl::READ, true);
    0
}

#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    ssl::exit(&ctx);
    0
}

/// The socket under an OpenSSL call, where TCP sends and receives on it.
#[fentry(function = "tcp_sendmsg")]
pub fn ssl_tcp_sendmsg(ctx: FEntryContext) -> u32 {
    ssl::tcp_call(ctx.arg(0));
    0
}

#[fentry(function = "tcp_recvmsg")]
pub fn ssl_tcp_recvmsg(ctx: FEntryContext) -> u32 {
    ssl::tcp_call(ctx.arg(0));
    0
}

/// Where fentry is not allowed: `sock:sock_send_length` and `sock:sock_recv_length` (6.3+).
#[tracepoint]
pub fn ssl_sock_length(ctx: TracePointContext) -> u32 {
    ssl::sock_length(&ctx);
    0
}

/// The same as raw tracepoints, where BTF gave sock.sk_protocol: cheaper per call.
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn ssl_sock_length_raw(ctx: RawTracePointContext) -> i32 {
    ssl::sock_length_raw(ctx.arg(0));
    0
}

/// Where neither is: `syscalls:sys_enter_{read,write,sendto,recvfrom}`.
#[tracepoint]
pub fn ssl_syscall(ctx: TracePointContext) -> u32 {
    ssl::syscall(&ctx);
    0
}

// One TC program per hook; the `_l3` pair is for interfaces without an Ethernet header.
#[classifier]
pub fn observer_ingress(ctx: TcContext) -> i32 {
    tc::handle::<true>(&ctx, DIRECTION_INGRESS);
    tc::TC_NEXT
}

#[classifier]
pub fn observer_egress(ctx: TcContext) -> i32 {
    tc::handle::<true>(&ctx, DIRECTION_EGRESS);
    tc::TC_NEXT
}

#[classifier]
pub fn observer_ingress_l3(ctx: TcContext) -> i32 {
    tc::handle::<false>(&ctx, DIRECTION_INGRESS);
    tc::TC_NEXT
}

#[classifier]
pub fn observer_egress_l3(ctx: TcContext) -> i32 {
    tc::handle::<false>(&ctx, DIRECTION_EGRESS);
    tc::TC_NEXT
}

/// Does nothing: the baseline for the per-packet cost benchmark (same hook, same run).
#[classifier]
pub fn tc_empty(_ctx: TcContext) -> i32 {
    tc::TC_NEXT
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
