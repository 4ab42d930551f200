//! TLS: a flow fed chunks cut from the input (a control byte: direction, kind and a small
//! offset; a length byte; the bytes), then asked for its outcome and facts; the ServerHello
//! ALPN reader; and the certificate reader on the whole input.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use observer::{
    events::{Mono, TlsChunk, TlsKind},
    layers::tls::{cert, handshake::{Flow, server_alpn}},
};

fuzz_target!(|data: &[u8]| {
    let _ = server_alpn(data);
    let _ = cert::facts(data, 1);
    let client = "10.0.0.1:40000".parse().unwrap();
    let server = "10.0.0.2:443".parse().unwrap();
    let mut flow = Flow::new(client, server, Mono(0));
    let mut offsets = [0u32; 2];
    let mut rest = data;
    let mut at = 0u64;
    while let [control, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        rest = after;
        at += 1_000_000;
        let from_client = control & 1 == 0;
        let kind = match (control >> 1) & 7 {
            0..=3 => TlsKind::Data,
            4 => TlsKind::App,
            5 => TlsKind::Fin,
            6 => TlsKind::Rst,
            _ => TlsKind::NotTls,
        };
        let d = usize::from(!from_client);
        // Mostly in order; sometimes a retransmit or a gap (the top bits).
        let offset = offsets[d].wrapping_add(u32::from(control >> 4)).wrapping_sub(8);
        if kind == TlsKind::Data {
            offsets[d] = offset.wrapping_add(len as u32);
        }
        flow.on_chunk(&TlsChunk { at: Mono(at), client, server, from_client, kind, offset, bytes: bytes.to_vec() });
        let _ = flow.outcome(Mono(at), Duration::from_secs(10));
    }
    // Past the stall timeout every flow is decided.
    assert!(flow.outcome(Mono(at + 20_000_000_000), Duration::from_secs(10)).is_some());
    let _ = (flow.sni(), flow.truncated(), flow.hello_latency(), flow.complete_latency(), flow.is_tls13());
});
