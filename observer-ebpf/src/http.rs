//! The HTTP branch of the TC program. The TLS branch has already read a payload's first bytes
//! (from the linear data, or from pages for a direction not known to be something else); a
//! payload that starts with a method, `HTTP` or the HTTP/2 preface has its first bytes copied
//! to userspace, which parses it and matches responses to requests in order. A request whose
//! header block does not end in its packet also has its next segment copied.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_skb_load_bytes},
    programs::TcContext,
};
use observer_common::{
    http::{HTTP_CAPTURE, HTTP_EVENT_HEADER, HttpEvent, kind},
    lost,
};

use crate::{
    maps::{CONTINUES, HTTP_EVENTS, count_lost, wakeup_flags},
    tc::{Packet, copy_endpoint, endpoints},
};

/// A [`CONTINUES`] slot's mark for an HTTP request's next segment (the low 32 bits: its seq).
pub const CONTINUE_MARK: u64 = 2 << 32;
/// Bytes copied of a response: its status line.
const RESPONSE_CAPTURE: usize = 64;
/// Wake userspace once per this many bytes a CPU wrote to the HTTP ring (set by userspace).
#[unsafe(no_mangle)]
static HTTP_WAKEUP_BYTES: u64 = 32 * 1024;

/// The branch's working values, in the packet's scratch slot. The caller fills in the
/// payload's place before calling [`emit`]: BPF functions take at most five arguments.
#[repr(C)]
pub struct Scratch {
    produced: u64,
    pub seq: u32,
    pub slot: u32,
    pub payload: u32,
    pub plen: u32,
    /// The payload's first four bytes, as loaded.
    pub first: u32,
    pub sport: u16,
    pub dport: u16,
    pub kind: u8,
    _pad: [u8; 3],
    tail: u32,
    event: HttpEvent,
}

/// The first four payload bytes (as loaded, little-endian) start an HTTP/1.x message or the
/// HTTP/2 preface: one compare per method.
#[inline(always)]
pub fn starts(first: u32) -> bool {
    const FIRST: [&[u8; 4]; 10] =
        [b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"PATC", b"OPTI", b"CONN", b"HTTP", b"PRI "];
    let mut i = 0;
    while i < FIRST.len() {
        if first == u32::from_le_bytes(*FIRST[i]) {
            return true;
        }
        i += 1;
    }
    false
}

/// A response's first four bytes.
#[inline(always)]
fn is_response(first: u32) -> bool {
    first == u32::from_le_bytes(*b"HTTP")
}

/// Copy the payload's first bytes (as `pkt.http` describes them) to the HTTP ring. A
/// separate function: inlined, its registers would cost every packet.
#[inline(never)]
pub fn emit(ctx: &TcContext, pkt: &mut Packet) {
    let s = &pkt.http;
    let (payload, plen, first, what, seq, slot) = (s.payload, s.plen, s.first, s.kind, s.seq, s.slot);
    if endpoints(ctx, pkt, pkt.http.sport, pkt.http.dport).is_none() {
        return;
    }
    let response = what == kind::START && is_response(first);
    // A request's header block ends with an empty line; when its packet does not end with
    // one, the next segment is copied too (once: a body is not followed).
    if what == kind::START && !response && plen >= 4 {
        let tail = (&raw mut pkt.http.tail).cast::<core::ffi::c_void>();
        let ok = unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), payload + plen - 4, tail, 4) } == 0;
        if ok && pkt.http.tail != u32::from_le_bytes(*b"\r\n\r\n")
            && let Some(p) = CONTINUES.get_ptr_mut(slot)
        {
            unsafe { *p = CONTINUE_MARK | u64::from(seq.wrapping_add(plen)) };
        }
    }
    let ev = &mut pkt.http.event;
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    copy_endpoint(&mut ev.src, &pkt.src);
    copy_endpoint(&mut ev.dst, &pkt.dst);
    ev.seq_or_ssl = u64::from(seq);
    ev.payload_len = plen;
    ev.ifindex = pkt.ifindex;
    ev.pid = 0;
    ev.fd = -1;
    ev.comm = [0; 16];
    ev.kind = what;
    ev.direction = pkt.direction;
    let cap = if response { RESPONSE_CAPTURE } else { HTTP_CAPTURE };
    let n = (plen as usize).min(cap);
    ev.captured = 0;
    if n > 0 {
        // 1..=HTTP_CAPTURE in a form the verifier keeps.
        let len = ((n as u32 - 1) & (HTTP_CAPTURE as u32 - 1)) + 1;
        let dst = (&raw mut ev.data).cast::<core::ffi::c_void>();
        if unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), payload, dst, len) } != 0 {
            count_lost(lost::HTTP_COPY_FAILED);
            return;
        }
        ev.captured = len as u16;
    }
    output(&mut pkt.http.produced, ev);
}

/// Send `ev` with its captured bytes to the HTTP ring.
#[inline(always)]
pub fn output(produced: &mut u64, ev: &HttpEvent) {
    let n = (ev.captured as usize).min(HTTP_CAPTURE);
    let len = HTTP_EVENT_HEADER + n;
    let record = unsafe { core::slice::from_raw_parts((ev as *const HttpEvent).cast::<u8>(), len) };
    let every = unsafe { core::ptr::read_volatile(&HTTP_WAKEUP_BYTES) };
    let flags = wakeup_flags(produced, len as u64, every);
    if HTTP_EVENTS.output::<[u8]>(record, flags).is_err() {
        count_lost(lost::HTTP_RINGBUF_FULL);
    }
}
