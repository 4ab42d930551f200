//! The TLS layer and its rules, fed handshakes built byte by byte.

use std::time::{Duration, SystemTime};

use super::*;
use crate::{
    config::Config,
    events::{Counters, Mono, Tick, TlsKind},
    layers::tls::handshake::tests::{alert, app_data, chunk, client_hello, server_hello},
    verdict::Rules,
};

fn layer() -> TlsLayer {
    TlsLayer::new(TlsConfig { window: Duration::from_secs(10), stall_after: Duration::from_secs(10), max_targets: 100, top: 100 })
}

fn tick(l: &mut TlsLayer, ms: u64) {
    l.on_tick(&Tick {
        at: Mono(ms * 1_000_000),
        wall: SystemTime::now(),
        counters: Counters::default(),
        lost: vec![],
        disabled: vec![],
        notes: vec![],
    });
}

/// One handshake from `port`: completed, or failed with the server's alert `desc`.
fn handshake(l: &mut TlsLayer, port: u16, ms: u64, fail: Option<u8>) {
    let mut c = |from_client, kind, offset, bytes: &[u8]| {
        let mut x = chunk(ms, from_client, kind, offset, bytes);
        x.client.set_port(port);
        l.on_chunk(&x);
    };
    let ch = client_hello("api.example.com", &["h2"], &[0x0304, 0x0303], 0);
    c(true, TlsKind::Data, 0, &ch);
    match fail {
        Some(desc) => c(false, TlsKind::Data, 0, &alert(2, desc)),
        None => {
            let mut flight = server_hello(0x1301, true);
            flight.extend(app_data(500));
            c(false, TlsKind::Data, 0, &flight);
            c(true, TlsKind::Data, ch.len() as u32, &app_data(53));
        }
    }
}

#[test]
fn outcomes_are_counted_per_destination_and_sni_and_failures_name_the_alert() {
    let mut l = layer();
    for i in 0..3 {
        handshake(&mut l, 40000 + i, 100, None);
    }
    for i in 0..2 {
        handshake(&mut l, 41000 + i, 200, Some(112));
    }
    tick(&mut l, 1000);
    let v = l.view();
    assert_eq!(v.targets.len(), 1);
    let t = &v.targets[0];
    assert_eq!((t.dest.to_string().as_str(), t.sni.as_str()), ("10.0.0.2:443", "api.example.com"));
    assert_eq!(t.window.get(tc::HANDSHAKES), 5);
    assert_eq!(t.window.get(tc::COMPLETED), 3);
    assert_eq!(t.window.get(tc::ALERT), 2);
    assert_eq!(t.window.hello_latency_us.count, 3, "only ServerHellos give a hello latency");
    assert_eq!(t.alerts.get("unrecognized_name by the server"), Some(&2));
    assert_eq!(t.version, Some("TLSv1.3"));
    let e = v.evaluate(10.0, &Config::default());
    let ev = format!("{e:?}");
    assert!(ev.contains("TLS: 2/5 handshakes with 10.0.0.2:443 (SNI api.example.com) failed in the last 10 s: alert unrecognized_name sent by the server"), "{ev}");
    // The window moves on: nothing left to judge.
    tick(&mut l, 12_000);
    let v = l.view();
    assert_eq!(v.targets[0].window.get(tc::HANDSHAKES), 0);
    assert_eq!(v.targets[0].total.get(tc::HANDSHAKES), 5);
    assert!(!format!("{:?}", v.evaluate(10.0, &Config::default())).contains("tls.handshake_failures"));
}

#[test]
fn one_failure_among_many_completions_is_below_the_share_and_one_alone_is_not() {
    let mut l = layer();
    for i in 0..9 {
        handshake(&mut l, 40000 + i, 100, None);
    }
    handshake(&mut l, 41000, 100, Some(40));
    tick(&mut l, 1000);
    let quiet = format!("{:?}", l.view().evaluate(10.0, &Config::default()));
    assert!(!quiet.contains("tls.handshake_failures"), "1/10 is under the 20 % share: {quiet}");
    let mut l = layer();
    handshake(&mut l, 41000, 100, Some(40));
    tick(&mut l, 1000);
    let loud = format!("{:?}", l.view().evaluate(10.0, &Config::default()));
    assert!(loud.contains("tls.handshake_failures") && loud.contains("handshake_failure sent by the server"), "{loud}");
}

#[test]
fn a_client_hello_with_no_answer_is_stalled_at_the_tick_after_the_timeout() {
    let mut l = layer();
    l.on_chunk(&chunk(0, true, TlsKind::Data, 0, &client_hello("slow.test", &[], &[0x0304], 0)));
    tick(&mut l, 9_000);
    assert_eq!(l.view().in_progress, 1);
    tick(&mut l, 10_000);
    let v = l.view();
    assert_eq!((v.in_progress, v.targets[0].window.get(tc::STALLED)), (0, 1));
    assert_eq!(v.targets[0].last_failure.as_ref().unwrap().reason, "no ServerHello within 10 s");
}

#[test]
fn bytes_for_a_flow_that_never_started_are_ignored_and_not_tls_is_malformed() {
    let mut l = layer();
    l.on_chunk(&chunk(0, false, TlsKind::Data, 0, &alert(2, 40)));
    l.on_chunk(&chunk(0, true, TlsKind::Fin, 0, &[]));
    tick(&mut l, 1000);
    assert!(l.view().targets.is_empty());
    l.on_chunk(&chunk(1000, true, TlsKind::NotTls, 0, b"GET / HTTP/1.1\r\n"));
    tick(&mut l, 2000);
    let v = l.view();
    assert_eq!(v.targets[0].window.get(tc::MALFORMED), 1);
    let e = format!("{:?}", v.evaluate(10.0, &Config::default()));
    assert!(!e.contains("tls.handshake_failures") && e.contains("1 malformed handshakes"), "{e}");
}
