//! observer's kernel programs: entry points only. The logic lives in the modules.
#![no_std]
#![no_main]

mod conn;
mod maps;
mod tc;
mod tracepoints;

use aya_ebpf::{
    macros::{classifier, tracepoint},
    programs::{TcContext, TracePointContext},
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

#[tracepoint]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let _ = tracepoints::tcp_retransmit_synack(&ctx);
    0
}

#[classifier]
pub fn dns_ingress(ctx: TcContext) -> i32 {
    let _ = tc::handle(&ctx, DIRECTION_INGRESS);
    tc::TCX_NEXT
}

#[classifier]
pub fn dns_egress(ctx: TcContext) -> i32 {
    let _ = tc::handle(&ctx, DIRECTION_EGRESS);
    tc::TCX_NEXT
}

/// Does nothing: the baseline for the per-packet cost benchmark (same hook, same run).
#[classifier]
pub fn tc_empty(_ctx: TcContext) -> i32 {
    tc::TCX_NEXT
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
