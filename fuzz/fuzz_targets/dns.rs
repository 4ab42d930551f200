//! DNS messages: the parser alone, then the layer that matches responses to queries, fed up
//! to eight messages cut from the input (one length byte, then that many bytes).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use observer::{
    events::{DnsMessage, DnsSnapshot, Mono},
    layers::{
        Aggregator as _,
        dns::{DnsConfig, DnsLayer, parse::parse},
    },
};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = parse(data) {
        // A name in a message is at most 255 bytes; its text at most 4 × that (\DDD escapes).
        if let Some((name, _)) = &p.qname {
            assert!(name.len() <= 4 * 255, "{}", name.len());
        }
    }
    let mut layer = DnsLayer::new(DnsConfig {
        window: Duration::from_secs(10),
        unanswered_after: Duration::from_secs(5),
        max_names: 64,
        max_pending: 64,
        top_names: 8,
    });
    let mut rest = data;
    let mut i = 0u64;
    while let Some((&len, tail)) = rest.split_first()
        && i < 8
    {
        let len = usize::from(len).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        rest = after;
        i += 1;
        layer.on_message(&DnsMessage {
            at: Mono(i * 1_000_000),
            client: "10.0.0.1:40000".parse().unwrap(),
            resolver: "10.0.0.53:53".parse().unwrap(),
            answerer: None,
            is_response: i % 2 == 0,
            ifindex: 2,
            fragmented: false,
            // Every third message claims to be longer than its copy (over 512 bytes).
            dns_len: if i % 3 == 0 { 600 } else { bytes.len() },
            ttl: Some(64),
            bytes: bytes.to_vec(),
        });
    }
    layer.on_snapshot(Mono((i + 1) * 1_000_000_000), &DnsSnapshot::default());
    let _ = (layer.resolvers(), layer.names(), layer.view());
});
