//! HTTP/1.x: the first-bytes parser, whole and cut, on requests and responses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::layers::http::parse::{Message, parse};

fuzz_target!(|data: &[u8]| {
    for cut in [false, true] {
        match parse(data, cut) {
            Message::Request(r) => {
                // Bounded, whatever the input: the path is cut to 80 bytes.
                assert!(r.path.len() <= 80 * 4, "{}", r.path.len());
                assert!(data.len() >= 14, "a request line needs a method, a target and a version");
            }
            Message::Response { status } => assert!((100..=999).contains(&status), "{status}"),
            _ => {}
        }
    }
});
