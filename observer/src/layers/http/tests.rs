use std::{net::SocketAddr, time::Duration};

use super::*;
use crate::events::{ConnectRecord, HttpChunk, HttpKind, Mono, Outcome, Tick};

const CLIENT: &str = "10.0.0.10:41000";
const SERVER: &str = "10.0.0.5:80";

fn cfg() -> HttpConfig {
    HttpConfig { window: Duration::from_secs(10), timeout: Duration::from_secs(30), max_targets: 100, max_connections: 100, top: 100 }
}

fn ms(v: u64) -> Mono {
    Mono(v * 1_000_000)
}

/// A TC chunk from `src` to `dst`; `dst_is_local` makes a request to it served here.
fn chunk(at: u64, src: &str, dst: &str, seq: u32, bytes: &[u8], local: bool) -> HttpChunk {
    HttpChunk { seq, ..HttpChunk::at_tc(at, src, dst, bytes, local) }
}

fn req(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

fn resp(status: u16) -> Vec<u8> {
    format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

fn tick(layer: &mut HttpLayer, at_ms: u64) {
    layer.on_tick(&Tick {
        at: ms(at_ms),
        wall: std::time::SystemTime::UNIX_EPOCH,
        counters: Default::default(),
        lost: vec![],
        disabled: vec![],
        notes: vec![],
    });
}

fn target<'a>(v: &'a HttpView, role: Role, server: &str, host: &str) -> &'a TargetView {
    let server: SocketAddr = server.parse().unwrap();
    v.targets.iter().find(|t| t.role == role && t.server == server && t.host == host).unwrap_or_else(|| panic!("no target: {v:#?}"))
}

#[test]
fn pipelined_requests_are_matched_in_order_with_their_latency() {
    let mut l = HttpLayer::new(cfg());
    // Three requests on one connection before the first response (pipelining).
    for (i, path) in ["/a", "/b", "/c"].iter().enumerate() {
        l.on_chunk(&chunk(i as u64, CLIENT, SERVER, 100 + i as u32, &req(path, "api"), false));
    }
    for (i, status) in [200, 503, 404].iter().enumerate() {
        l.on_chunk(&chunk(10 + 10 * i as u64, SERVER, CLIENT, 500 + i as u32, &resp(*status), false));
    }
    tick(&mut l, 1000);
    let v = l.view();
    let t = target(&v, Role::Client, SERVER, "api");
    let w = &t.window;
    assert_eq!((w.get(hc::REQUESTS), w.get(hc::RESPONSES), w.get(hc::S2XX), w.get(hc::S4XX), w.get(hc::S503)), (3, 3, 1, 1, 1));
    // /a at 0 ms answered at 10 ms, /b at 1 ms at 20 ms, /c at 2 ms at 30 ms.
    let by_path: Vec<(String, Option<u16>, u64)> = {
        let mut s: Vec<_> = t.slowest.iter().map(|s| (s.path.clone(), s.status, s.latency_us)).collect();
        s.sort();
        s
    };
    assert_eq!(by_path, [("/a".into(), Some(200), 10_000), ("/b".into(), Some(503), 19_000), ("/c".into(), Some(404), 28_000)]);
    assert_eq!(v.in_flight, 0);
}

#[test]
fn a_second_sighting_of_a_segment_is_not_a_second_message() {
    let mut l = HttpLayer::new(cfg());
    let r = chunk(0, CLIENT, SERVER, 7, &req("/", "api"), false);
    l.on_chunk(&r);
    l.on_chunk(&r); // the bridge, then the uplink; or a retransmit
    let s = chunk(5, SERVER, CLIENT, 9, &resp(200), false);
    l.on_chunk(&s);
    l.on_chunk(&s);
    tick(&mut l, 1000);
    let v = l.view();
    let w = &target(&v, Role::Client, SERVER, "api").window;
    assert_eq!((w.get(hc::REQUESTS), w.get(hc::RESPONSES)), (1, 1));
    assert_eq!(v.unmatched_responses, 0);
}

#[test]
fn requests_to_a_local_address_are_served_here_and_the_role_follows_the_request() {
    let mut l = HttpLayer::new(cfg());
    l.on_chunk(&chunk(0, CLIENT, SERVER, 1, &req("/x", "shop"), true));
    l.on_chunk(&chunk(3, SERVER, CLIENT, 2, &resp(502), false));
    tick(&mut l, 1000);
    let v = l.view();
    let t = target(&v, Role::Server, SERVER, "shop");
    assert_eq!(t.window.get(hc::S502), 1);
    assert_eq!(t.responses_label(), "served on 10.0.0.5:80 (Host shop)");
}

#[test]
fn a_request_without_a_response_counts_as_no_response_after_the_timeout() {
    let mut l = HttpLayer::new(cfg());
    l.on_chunk(&chunk(0, CLIENT, SERVER, 1, &req("/hang", "api"), false));
    tick(&mut l, 29_000);
    assert_eq!(l.view().in_flight, 1);
    tick(&mut l, 30_000);
    let v = l.view();
    let t = target(&v, Role::Client, SERVER, "api");
    assert_eq!(t.window.get(hc::NO_RESPONSE), 1);
    assert_eq!(t.slowest[0].status, None);
    assert_eq!(t.slowest[0].latency_us, 30_000_000);
    assert_eq!(v.in_flight, 0);
}

#[test]
fn an_unparsed_request_keeps_its_place_and_interim_responses_do_not_match() {
    let mut l = HttpLayer::new(cfg());
    l.on_chunk(&chunk(0, CLIENT, SERVER, 1, b"GET \x00\xff\r\n\r\n", false));
    l.on_chunk(&chunk(1, CLIENT, SERVER, 2, &req("/ok", "api"), false));
    l.on_chunk(&chunk(2, SERVER, CLIENT, 3, &resp(400), false));
    l.on_chunk(&chunk(3, SERVER, CLIENT, 4, &resp(100), false));
    l.on_chunk(&chunk(4, SERVER, CLIENT, 5, &resp(200), false));
    tick(&mut l, 1000);
    let v = l.view();
    let unparsed = &target(&v, Role::Client, SERVER, "").window;
    assert_eq!((unparsed.get(hc::UNPARSED), unparsed.get(hc::S4XX)), (1, 1));
    let ok = &target(&v, Role::Client, SERVER, "api").window;
    assert_eq!((ok.get(hc::S2XX), ok.get(hc::S1XX)), (1, 0));
}

#[test]
fn a_header_block_split_across_segments_is_joined() {
    let mut l = HttpLayer::new(cfg());
    let first = b"GET /split HTTP/1.1\r\nUser-Agent: t\r\n";
    l.on_chunk(&chunk(0, CLIENT, SERVER, 1000, first, false));
    let mut rest = chunk(1, CLIENT, SERVER, 1000 + first.len() as u32, b"Host: split.test\r\n\r\n", false);
    rest.kind = HttpKind::Continues;
    l.on_chunk(&rest);
    l.on_chunk(&chunk(5, SERVER, CLIENT, 1, &resp(204), false));
    tick(&mut l, 1000);
    let v = l.view();
    assert_eq!(target(&v, Role::Client, SERVER, "split.test").window.get(hc::S2XX), 1);
}

#[test]
fn h2_is_counted_not_parsed_and_responses_without_requests_are_unmatched() {
    let mut l = HttpLayer::new(cfg());
    l.on_chunk(&chunk(0, CLIENT, SERVER, 1, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false));
    l.on_chunk(&chunk(1, CLIENT, SERVER, 2, &req("/after", "api"), false));
    l.on_chunk(&chunk(2, SERVER, "10.0.0.11:5000", 2, &resp(200), false));
    tick(&mut l, 1000);
    let v = l.view();
    assert_eq!(target(&v, Role::Client, SERVER, "").window.get(hc::H2), 1);
    assert_eq!(v.targets.len(), 1, "nothing parsed after the preface: {v:#?}");
    assert_eq!(v.unmatched_responses, 1);
}

#[test]
fn failed_connects_are_kept_for_the_window_and_name_the_process_of_a_client() {
    let mut l = HttpLayer::new(cfg());
    let up: SocketAddr = "10.0.0.9:9000".parse().unwrap();
    let rec = |outcome, local_port| ConnectRecord {
        at: ms(0),
        dest: up,
        outcome,
        latency: Duration::from_micros(100),
        error: 111,
        syn_retransmits: 0,
        pid: 42,
        comm: "nginx".into(),
        local_port,
    };
    l.on_event(&Event::Connect(rec(Outcome::Refused, 0)));
    l.on_event(&Event::Connect(rec(Outcome::Aborted, 0)));
    l.on_event(&Event::Connect(rec(Outcome::Established, 50000)));
    l.on_chunk(&chunk(1, "10.0.0.5:50000", "10.0.0.9:9000", 1, &req("/", "up"), false));
    tick(&mut l, 1000);
    let v = l.view();
    assert_eq!(v.connect_failures.len(), 1);
    assert_eq!(v.connect_failures[0].describe(), "10.0.0.9:9000 refused");
    assert_eq!(target(&v, Role::Client, "10.0.0.9:9000", "up").process.as_deref(), Some("nginx[42]"));
    tick(&mut l, 12_000);
    assert!(l.view().connect_failures.is_empty(), "out of the window");
}

#[test]
fn http2_chosen_in_a_tls_handshake_is_counted_per_destination() {
    use crate::{events::TlsKind, layers::tls::handshake::tests::{chunk as tls_chunk, server_hello_alpn}};
    let mut l = HttpLayer::new(cfg());
    let h2 = tls_chunk(1, false, TlsKind::Data, 0, &server_hello_alpn(0x1301, true, Some("h2")));
    let h1 = tls_chunk(2, false, TlsKind::Data, 0, &server_hello_alpn(0x1301, true, Some("http/1.1")));
    l.on_event(&Event::Tls(h2.clone()));
    l.on_event(&Event::Tls(h1));
    tick(&mut l, 1000);
    let v = l.view();
    assert_eq!(v.targets.len(), 1);
    assert_eq!((v.targets[0].server, v.targets[0].window.get(hc::H2)), (h2.server, 1));
}

#[test]
fn a_request_followed_by_another_had_a_response_observer_missed_and_is_not_a_failure() {
    let mut l = HttpLayer::new(cfg());
    // A keep-alive connection whose responses observer cannot see: the client sends each
    // request after the previous response, so only the last one may really be waiting.
    for i in 0..4u32 {
        l.on_chunk(&chunk(u64::from(i) * 100, CLIENT, SERVER, 10 + i, &req(&format!("/r{i}"), "api"), false));
    }
    tick(&mut l, 31_000);
    let v = l.view();
    let w = &target(&v, Role::Client, SERVER, "api").window;
    assert_eq!((w.get(hc::RESPONSE_NOT_SEEN), w.get(hc::NO_RESPONSE)), (4, 0), "the last one too: the connection is blind");
    // A connection that showed its responses, then one request that hangs: a failure.
    l.on_chunk(&chunk(40_000, "10.0.0.10:41001", SERVER, 1, &req("/a", "api"), false));
    l.on_chunk(&chunk(40_010, SERVER, "10.0.0.10:41001", 1, &resp(200), false));
    l.on_chunk(&chunk(40_020, "10.0.0.10:41001", SERVER, 2, &req("/hang", "api"), false));
    tick(&mut l, 71_000);
    let v = l.view();
    let w = &target(&v, Role::Client, SERVER, "api").window;
    assert_eq!(w.get(hc::NO_RESPONSE), 1);
}
