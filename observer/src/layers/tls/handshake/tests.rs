//! Handshakes built byte by byte, as the kernel would copy them.

use std::net::SocketAddr;

use super::*;
use crate::events::{Mono, TlsChunk, TlsKind};

pub fn record(content: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![content, 3, 3];
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let n = body.len() as u32;
    let mut h = vec![kind, (n >> 16) as u8, (n >> 8) as u8, n as u8];
    h.extend_from_slice(body);
    h
}

fn ext(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut e = kind.to_be_bytes().to_vec();
    e.extend_from_slice(&(data.len() as u16).to_be_bytes());
    e.extend_from_slice(data);
    e
}

/// A ClientHello record with an SNI, ALPN protocols, supported_versions, and `pad` bytes of
/// padding (a post-quantum key share makes one this long).
pub fn client_hello(sni: &str, alpn: &[&str], versions: &[u16], pad: usize) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[1, 0]);
    let mut exts = Vec::new();
    let mut name = vec![0];
    name.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    name.extend_from_slice(sni.as_bytes());
    let mut list = (name.len() as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&name);
    exts.extend(ext(0x0000, &list));
    let mut protos = Vec::new();
    for p in alpn {
        protos.push(p.len() as u8);
        protos.extend_from_slice(p.as_bytes());
    }
    let mut alpn_list = (protos.len() as u16).to_be_bytes().to_vec();
    alpn_list.extend_from_slice(&protos);
    exts.extend(ext(0x0010, &alpn_list));
    let mut vs = vec![(versions.len() * 2) as u8];
    for v in versions {
        vs.extend_from_slice(&v.to_be_bytes());
    }
    exts.extend(ext(0x002b, &vs));
    exts.extend(ext(0x0015, &vec![0; pad]));
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let hs = handshake(1, &body);
    // Records carry at most 16 KiB; split like a real client would.
    hs.chunks(16384).flat_map(|c| record(22, c)).collect()
}

pub fn server_hello(cipher: u16, tls13: bool) -> Vec<u8> {
    server_hello_alpn(cipher, tls13, None)
}

/// A ServerHello that chose `alpn`.
pub fn server_hello_alpn(cipher: u16, tls13: bool, alpn: Option<&str>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[9; 32]);
    body.push(0);
    body.extend_from_slice(&cipher.to_be_bytes());
    body.push(0);
    let mut exts = if tls13 { ext(0x002b, &[3, 4]) } else { Vec::new() };
    if let Some(p) = alpn {
        let mut list = vec![p.len() as u8];
        list.extend_from_slice(p.as_bytes());
        let mut v = (list.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(&list);
        exts.extend(ext(0x0010, &v));
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    record(22, &handshake(2, &body))
}

pub fn alert(level: u8, description: u8) -> Vec<u8> {
    record(21, &[level, description])
}

pub fn app_data(len: usize) -> Vec<u8> {
    record(23, &vec![0xab; len])
}

pub fn client() -> SocketAddr {
    "10.0.0.1:40000".parse().unwrap()
}

pub fn server() -> SocketAddr {
    "10.0.0.2:443".parse().unwrap()
}

pub fn chunk(ms: u64, from_client: bool, kind: TlsKind, offset: u32, bytes: &[u8]) -> TlsChunk {
    TlsChunk { at: Mono(ms * 1_000_000), client: client(), server: server(), from_client, kind, offset, bytes: bytes.to_vec() }
}

fn data(ms: u64, from_client: bool, offset: u32, bytes: &[u8]) -> TlsChunk {
    chunk(ms, from_client, TlsKind::Data, offset, bytes)
}

const STALL: Duration = Duration::from_secs(10);

#[test]
fn a_tls13_handshake_completes_with_its_sni_versions_alpn_and_cipher() {
    let mut f = Flow::new(client(), server(), Mono(0));
    let ch = client_hello("api.example.com", &["h2", "http/1.1"], &[0x0a0a, 0x0304, 0x0303], 0);
    f.on_chunk(&data(0, true, 0, &ch));
    assert_eq!(f.outcome(Mono(1), STALL), None);
    let mut flight = server_hello(0x1301, true);
    flight.extend(record(20, &[1]));
    flight.extend(app_data(900));
    f.on_chunk(&data(3, false, 0, &flight));
    let mut fin = record(20, &[1]);
    fin.extend(app_data(53));
    f.on_chunk(&data(5, true, ch.len() as u32, &fin));
    assert_eq!(f.outcome(Mono(6_000_000), STALL), Some(Outcome::Completed));
    let h = f.hello.as_ref().unwrap();
    assert_eq!(h.sni.as_deref(), Some("api.example.com"));
    assert_eq!(h.versions, ["TLSv1.3", "TLSv1.2"], "GREASE is left out");
    assert_eq!(h.alpn, ["h2", "http/1.1"]);
    let s = f.server_hello.as_ref().unwrap();
    assert_eq!((s.version, s.cipher.as_str()), ("TLSv1.3", "TLS_AES_128_GCM_SHA256"));
    assert_eq!(f.hello_latency(), Some(Duration::from_millis(3)));
    assert_eq!(f.complete_latency(), Some(Duration::from_millis(5)));
    assert!(f.is_tls13());
}

#[test]
fn a_fatal_alert_in_the_clear_names_its_description_and_sender() {
    let mut f = Flow::new(client(), server(), Mono(0));
    f.on_chunk(&data(0, true, 0, &client_hello("x.test", &[], &[0x0303], 0)));
    f.on_chunk(&data(1, false, 0, &alert(2, 70)));
    assert_eq!(f.outcome(Mono(2), STALL), Some(Outcome::Alert));
    let a = f.alert.as_ref().unwrap();
    assert_eq!((a.description.as_str(), a.fatal, a.from_client), ("protocol_version", true, false));
}

#[test]
fn a_warning_close_notify_is_not_a_failure() {
    let mut f = Flow::new(client(), server(), Mono(0));
    f.on_chunk(&data(0, true, 0, &client_hello("x.test", &[], &[0x0303], 0)));
    f.on_chunk(&data(1, false, 0, &alert(1, 0)));
    assert_eq!(f.outcome(Mono(2), STALL), None);
}

#[test]
fn a_client_hello_over_two_segments_out_of_order_and_duplicated_is_parsed() {
    let ch = client_hello("big.test", &["h2"], &[0x0304], 1800);
    assert!(ch.len() > 1800, "{}", ch.len());
    let (a, b) = ch.split_at(1400);
    let mut f = Flow::new(client(), server(), Mono(0));
    f.on_chunk(&data(0, true, 0, a));
    f.on_chunk(&data(0, true, 0, a));
    f.on_chunk(&data(0, true, 1400, b));
    assert_eq!(f.hello.as_ref().and_then(|h| h.sni.as_deref()), Some("big.test"));
    let mut g = Flow::new(client(), server(), Mono(0));
    g.on_chunk(&data(0, true, 1400, b));
    assert!(g.hello.is_none(), "the second piece waits for the first");
    g.on_chunk(&data(0, true, 0, a));
    assert_eq!(g.hello.as_ref().and_then(|h| h.sni.as_deref()), Some("big.test"));
    assert!(g.malformed.is_none());
}

#[test]
fn an_encrypted_alert_then_a_close_after_server_hello_is_aborted_by_the_client() {
    let mut f = Flow::new(client(), server(), Mono(0));
    let ch = client_hello("good.test", &[], &[0x0304], 0);
    f.on_chunk(&data(0, true, 0, &ch));
    let mut flight = server_hello(0x1302, true);
    flight.extend(app_data(1200));
    f.on_chunk(&data(2, false, 0, &flight));
    // TLS 1.3 encrypts the client's alert: 19 bytes of application data.
    f.on_chunk(&data(3, true, ch.len() as u32, &app_data(19)));
    assert_eq!(f.outcome(Mono(3_000_001), STALL), None, "an encrypted alert is not the client's data");
    f.on_chunk(&chunk(3, true, TlsKind::Fin, 0, &[]));
    assert_eq!(f.outcome(Mono(3_000_002), STALL), Some(Outcome::Aborted));
    let c = f.close.unwrap();
    assert!(c.from_client && !c.rst);
}

#[test]
fn a_tls12_handshake_closed_after_both_finished_messages_is_completed() {
    // A health check: full handshake, then a close, no data.
    let mut f = Flow::new(client(), server(), Mono(0));
    let ch = client_hello("lb.test", &[], &[0x0303], 0);
    f.on_chunk(&data(0, true, 0, &ch));
    let sh = server_hello(0xc02f, false);
    f.on_chunk(&data(2, false, 0, &sh));
    let mut fin = record(22, &[16, 0, 0, 1, 0]);
    fin.extend(record(20, &[1]));
    fin.extend(record(22, &[0x55; 40]));
    f.on_chunk(&data(3, true, ch.len() as u32, &fin));
    assert_eq!(f.outcome(Mono(3_500_000), STALL), None);
    let mut server_fin = record(20, &[1]);
    server_fin.extend(record(22, &[0x66; 40]));
    f.on_chunk(&data(4, false, sh.len() as u32, &server_fin));
    assert_eq!(f.outcome(Mono(4_000_001), STALL), Some(Outcome::Completed));
    assert_eq!(f.complete_latency(), Some(Duration::from_millis(4)));
    assert!(f.malformed.is_none(), "encrypted Finished records are not parsed");
    // The same under TLS 1.3 proves nothing: its ChangeCipherSpec is for middleboxes.
    let mut g = Flow::new(client(), server(), Mono(0));
    g.on_chunk(&data(0, true, 0, &ch));
    let mut sh13 = server_hello(0x1301, true);
    sh13.extend(record(20, &[1]));
    g.on_chunk(&data(2, false, 0, &sh13));
    g.on_chunk(&data(3, true, ch.len() as u32, &record(20, &[1])));
    assert_eq!(g.outcome(Mono(3_000_001), STALL), None);
}

#[test]
fn no_server_hello_within_the_timeout_is_stalled() {
    let mut f = Flow::new(client(), server(), Mono(0));
    f.on_chunk(&data(0, true, 0, &client_hello("slow.test", &[], &[0x0304], 0)));
    assert_eq!(f.outcome(Mono(0).after(STALL - Duration::from_millis(1)), STALL), None);
    assert_eq!(f.outcome(Mono(0).after(STALL), STALL), Some(Outcome::Stalled));
}

#[test]
fn bad_records_are_malformed_and_incomplete_ones_wait() {
    let mut f = Flow::new(client(), server(), Mono(0));
    // A record that claims 16 KiB and stops: it may still come.
    let mut partial = vec![22, 3, 1, 0x40, 0];
    partial.extend_from_slice(&[1, 0, 0x3f, 0xfc, 3, 3]);
    f.on_chunk(&data(0, true, 0, &partial));
    assert_eq!(f.outcome(Mono(1), STALL), None);
    // A length no record may have.
    let mut g = Flow::new(client(), server(), Mono(0));
    g.on_chunk(&data(0, true, 0, &[22, 3, 1, 0xff, 0xff, 1, 0, 0]));
    assert_eq!(g.outcome(Mono(1), STALL), Some(Outcome::Malformed));
    // A handshake record that does not parse.
    let mut h = Flow::new(client(), server(), Mono(0));
    h.on_chunk(&data(0, true, 0, &record(22, &[1, 0, 0, 9, 3, 3, 0, 0, 0])));
    assert_eq!(h.outcome(Mono(1), STALL), Some(Outcome::Malformed));
}

#[test]
fn a_record_that_claims_16_kib_and_stops_at_a_close_is_malformed() {
    let mut f = Flow::new(client(), server(), Mono(0));
    f.on_chunk(&data(0, true, 0, &client_hello("cut.test", &[], &[0x0304], 0)));
    let mut cut = vec![22, 3, 3, 0x40, 0x00];
    cut.extend_from_slice(&[2; 100]);
    f.on_chunk(&data(1, false, 0, &cut));
    assert_eq!(f.outcome(Mono(2), STALL), None, "it may still come");
    f.on_chunk(&chunk(2, false, TlsKind::Fin, 0, &[]));
    assert_eq!(f.outcome(Mono(3), STALL), Some(Outcome::Malformed));
    assert_eq!(f.truncated().as_deref(), Some("a record claims 16384 bytes and stops after 100"));
}

#[test]
fn random_bytes_always_end_in_an_outcome_and_non_records_are_malformed() {
    // A small xorshift: deterministic, no dependency.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let len = (next() % 300) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half of them look like a record header, so that the parsers go deeper.
        if next() % 2 == 0 && bytes.len() > 5 {
            bytes[0] = 20 + (next() % 4) as u8;
            bytes[1] = 3;
            bytes[2] = (next() % 5) as u8;
        }
        let mut f = Flow::new(client(), server(), Mono(0));
        let from_client = next() % 2 == 0;
        f.on_chunk(&data(0, from_client, (next() % 64) as u32, &bytes));
        f.on_chunk(&data(0, !from_client, 0, &bytes));
        // Nothing is left pending for ever: past the stall timeout every flow is decided.
        let outcome = f.outcome(Mono(u64::MAX / 2), STALL);
        assert!(outcome.is_some(), "{bytes:?}");
        // A record of a content type TLS does not have, from either side, is not a handshake.
        if bytes.first().is_some_and(|b| !(20..=24).contains(b)) {
            assert_eq!(outcome, Some(Outcome::Malformed), "{bytes:?}");
        }
    }
}

#[test]
fn alert_names_are_snake_case() {
    assert_eq!(alert_name(tls_parser::TlsAlertDescription(48)), "unknown_ca");
    assert_eq!(alert_name(tls_parser::TlsAlertDescription(42)), "bad_certificate");
    assert_eq!(alert_name(tls_parser::TlsAlertDescription(112)), "unrecognized_name");
    assert_eq!(alert_name(tls_parser::TlsAlertDescription(250)), "alert_250");
}

#[test]
fn the_servers_alpn_is_read_from_its_hello_alone() {
    assert_eq!(super::server_alpn(&server_hello_alpn(0x1301, true, Some("h2"))).as_deref(), Some("h2"));
    assert_eq!(super::server_alpn(&server_hello(0x1301, true)), None);
    assert_eq!(super::server_alpn(&alert(2, 40)), None);
    assert_eq!(super::server_alpn(b"HTTP/1.1 200 OK"), None);
}
