//! The kernel's ring-buffer records, as userspace decodes them: the first byte picks the
//! ring, the rest is the record. A record the kernel could not have written must come back
//! as None, never as a panic or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::events::{decode_connect, decode_dns, decode_http, decode_icmp, decode_route, decode_tls};

fuzz_target!(|data: &[u8]| {
    let Some((&which, raw)) = data.split_first() else { return };
    match which % 6 {
        0 => {
            let _ = decode_connect(raw);
        }
        1 => {
            if let Some(m) = decode_dns(raw) {
                // Only the captured bytes are copied, and they came from the record.
                assert!(m.bytes.len() <= raw.len());
            }
        }
        2 => {
            if let Some(c) = decode_tls(raw) {
                assert!(c.bytes.len() <= raw.len());
            }
        }
        3 => {
            if let Some(c) = decode_http(raw) {
                assert!(c.bytes.len() <= raw.len());
            }
        }
        4 => {
            let _ = decode_icmp(raw);
        }
        _ => {
            let _ = decode_route(raw);
        }
    }
});
