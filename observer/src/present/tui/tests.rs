//! TUI frames from fixed reports, drawn on ratatui's TestBackend and compared with insta
//! snapshots (`observer/src/present/tui/snapshots/`). The reports come from the real layers
//! and the real verdict engine, fed with synthetic events.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use crossterm::event::{KeyCode, KeyModifiers};
use observer_common::{dns::dns_counter as kc, tcp::dest_counter as dc};
use ratatui::{Terminal, backend::TestBackend};
use simple_dns::{CLASS, Name, Packet, Question, RCODE, ResourceRecord, TYPE, rdata::{A, RData}};

use super::{app::evidence_text, *};
use crate::{
    config::Config,
    events::{ConnectRecord, Counters, Disabled, DnsMessage, DnsSnapshot, Event, Input, Mono, Outcome, TcpSnapshot, Tick},
    pipeline::{Options, Pipeline},
    present::report::Report,
    verdict,
};

#[derive(Clone, Copy)]
enum Scenario {
    Healthy,
    DnsFailing,
    ConnectFailing,
    BothFailing,
    /// TCP connects to the API are fine, and 2 of its 5 TLS handshakes end in the client's
    /// unknown_ca alert.
    TlsFailing,
    /// This host is a proxy on 10.0.0.5:8080: 12 of the 40 requests it serves for
    /// api.internal get a 502, and its connects to the upstream 10.0.0.9:9000 are refused.
    ProxyFailing,
    /// Connects are fine; 3.1 % of the segments to the database are retransmitted, none of
    /// those to the API.
    LossFailing,
}

const RESOLVER: &str = "10.0.0.2:53";
const CLIENT: &str = "10.0.0.10:41000";
const API: &str = "10.0.0.5:443";
const DB: &str = "10.1.2.3:5432";
const PROXY: &str = "10.0.0.5:8080";
const UPSTREAM: &str = "10.0.0.9:9000";

/// 40 requests to the proxy from clients, each answered 4 to 6 ms later: three in ten (the
/// orders endpoint) with a 502.
fn proxy_requests() -> Vec<Event> {
    use crate::events::HttpChunk;
    let mut out = Vec::new();
    for i in 0..40u16 {
        let client = SocketAddr::new(CLIENT.parse::<SocketAddr>().unwrap().ip(), 43000 + i);
        let proxy: SocketAddr = PROXY.parse().unwrap();
        let at = 600 + u64::from(i) * 10;
        let chunk = |ms: u64, src: SocketAddr, dst: SocketAddr, bytes: &[u8]| {
            HttpChunk::at_tc(ms, &src.to_string(), &dst.to_string(), bytes, dst == proxy)
        };
        let path = if i % 10 < 3 { "/v1/orders" } else { "/v1/items" };
        let req = format!("GET {path}?page=2 HTTP/1.1\r\nHost: api.internal\r\n\r\n");
        out.push(Event::Http(chunk(at, client, proxy, req.as_bytes())));
        let status: &[u8] = if i % 10 < 3 { b"HTTP/1.1 502 Bad Gateway\r\n" } else { b"HTTP/1.1 200 OK\r\n" };
        out.push(Event::Http(chunk(at + 4 + u64::from(i % 3), proxy, client, status)));
    }
    out
}

fn dns_msg(ts_ms: u64, id: u16, response: Option<RCODE>) -> DnsMessage {
    let name = "api.example.com";
    let mut p = if response.is_some() { Packet::new_reply(id) } else { Packet::new_query(id) };
    p.questions.push(Question::new(Name::new_unchecked(name), TYPE::A.into(), CLASS::IN.into(), false));
    if let Some(rcode) = response {
        *p.rcode_mut() = rcode;
        if rcode == RCODE::NoError {
            p.answers.push(ResourceRecord::new(Name::new_unchecked(name), CLASS::IN, 60, RData::A(A { address: u32::from_be_bytes([10, 0, 0, 5]) })));
        }
    }
    let bytes = p.build_bytes_vec().unwrap();
    DnsMessage {
        at: Mono(ts_ms * 1_000_000),
        client: CLIENT.parse().unwrap(),
        resolver: RESOLVER.parse().unwrap(),
        answerer: None,
        is_response: response.is_some(),
        ifindex: 2,
        fragmented: false,
        dns_len: bytes.len(),
        ttl: None,
        bytes: bytes.into(),
    }
}

fn connect(dest: &str, outcome: Outcome, latency_us: u64) -> ConnectRecord {
    ConnectRecord {
        at: Mono(0),
        dest: dest.parse().unwrap(),
        outcome,
        latency: Duration::from_micros(latency_us),
        error: if outcome == Outcome::Refused { 111 } else { 0 },
        syn_retransmits: 0,
        pid: 4121,
        comm: "api-client".into(),
        local_port: 0,
    }
}

fn counts<const N: usize>(pairs: &[(usize, u64)]) -> [u64; N] {
    let mut v = [0; N];
    for &(i, n) in pairs {
        v[i] = n;
    }
    v
}

/// The report at the end of a scenario, with the verdict changes that led to it: synthetic
/// events and one tick through the real pipeline (layers, verdicts, report).
fn build(s: Scenario) -> (Report, Vec<verdict::Change>) {
    build_with(s, vec![])
}

fn build_with(s: Scenario, disabled: Vec<Disabled>) -> (Report, Vec<verdict::Change>) {
    let mut pipeline = Pipeline::new(Options::for_tests(), Config::default(), "web-3", Mono(0));
    let dns_failing = matches!(s, Scenario::DnsFailing | Scenario::BothFailing);
    let tcp_failing = matches!(s, Scenario::ConnectFailing | Scenario::BothFailing);

    // 40 lookups, 12 of them SERVFAIL when DNS fails; 3 ms each.
    let mut events = Vec::new();
    for i in 0..40u16 {
        let rcode = if dns_failing && i % 10 < 3 { RCODE::ServerFailure } else { RCODE::NoError };
        events.push(Event::Dns(dns_msg(u64::from(i) * 10, i, None)));
        events.push(Event::Dns(dns_msg(u64::from(i) * 10 + 3, i, Some(rcode))));
    }
    let servfail = if dns_failing { 12 } else { 0 };
    let dns = DnsSnapshot {
        resolvers: vec![(
            RESOLVER.parse().unwrap(),
            counts(&[(kc::QUERIES, 40), (kc::RESPONSES, 40), (kc::NOERROR, 40 - servfail), (kc::SERVFAIL, servfail)]),
        )],
        per_interface: vec![],
        names: vec![(2, "eth0".into()), (1, "lo".into())],
    };
    for i in 0..20u64 {
        events.push(Event::Connect(connect(API, Outcome::Established, 800 + i * 20)));
    }
    let mut tcp = TcpSnapshot { gone: None, held: 0, dests: vec![(API.parse().unwrap(), counts(&[(dc::ATTEMPTS, 20), (dc::ESTABLISHED, 20)]))], ports: vec![] };
    if tcp_failing {
        for _ in 0..5 {
            events.push(Event::Connect(connect(DB, Outcome::Refused, 250)));
        }
        tcp.dests.push((DB.parse::<SocketAddr>().unwrap(), counts(&[(dc::ATTEMPTS, 5), (dc::REFUSED, 5)])));
    }
    if matches!(s, Scenario::TlsFailing) {
        events.extend(tls_handshakes());
    }
    if matches!(s, Scenario::ProxyFailing) {
        events.extend(proxy_requests());
        for _ in 0..12 {
            events.push(Event::Connect(connect(UPSTREAM, Outcome::Refused, 150)));
        }
        tcp.dests.push((UPSTREAM.parse::<SocketAddr>().unwrap(), counts(&[(dc::ATTEMPTS, 12), (dc::REFUSED, 12)])));
    }
    if matches!(s, Scenario::LossFailing) {
        for (cookie, dest, segs, retx) in [(1, DB, 4000, 124), (2, API, 5200, 0)] {
            events.push(Event::TcpSample(crate::events::TcpSampleRec {
                at: Mono(700_000_000),
                cookie,
                peer: dest.parse().unwrap(),
                local_port: 40000,
                active: true,
                closed: false,
                adopted: false,
                data_segs_out: segs,
                total_retrans: retx,
                retrans: [retx / 5, retx - retx / 5, 0],
                timeouts: 2,
                srtt_us: 1200,
                iface: Some("eth0".into()),
            }));
        }
    }
    pipeline.on_input(Input::Events(events), false);
    let tick = Tick {
        at: Mono(83_000_000_000),
        wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_540_931),
        counters: Counters { tcp, dns, drops: vec![] },
        lost: vec![("connect_ringbuf_full", 0)],
        disabled,
        notes: vec![],
    };
    pipeline.on_tick(tick, false)
}

/// Five TLS 1.3 handshakes with the API: three complete, two end in unknown_ca.
fn tls_handshakes() -> Vec<Event> {
    use crate::{
        events::TlsKind,
        layers::tls::handshake::tests::{alert, app_data, chunk, client_hello, server_hello},
    };
    let mut out = Vec::new();
    for i in 0..5u16 {
        let ms = 500 + u64::from(i) * 20;
        let mut c = |ms_after: u64, from_client, bytes: &[u8], offset: u32| {
            let mut x = chunk(ms + ms_after, from_client, TlsKind::Data, offset, bytes);
            x.client = SocketAddr::new(CLIENT.parse::<SocketAddr>().unwrap().ip(), 42000 + i);
            x.server = API.parse().unwrap();
            out.push(Event::Tls(x));
        };
        let ch = client_hello("api.example.com", &["h2", "http/1.1"], &[0x0304, 0x0303], 0);
        c(0, true, &ch, 0);
        let mut flight = server_hello(0x1301, true);
        flight.extend(app_data(800));
        c(2, false, &flight, 0);
        if i < 3 {
            c(4, true, &app_data(53), ch.len() as u32);
        } else {
            c(3, true, &alert(2, 48), ch.len() as u32);
        }
    }
    out
}

fn app(s: Scenario) -> App {
    let (r, changes) = build(s);
    let mut app = App::new();
    app.update(r, changes);
    app
}

fn frame(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| render::draw(f, app)).unwrap();
    t.backend().to_string()
}

#[test]
fn healthy_80x24() {
    insta::assert_snapshot!(frame(&app(Scenario::Healthy), 80, 24));
}

#[test]
fn dns_failing_80x24() {
    insta::assert_snapshot!(frame(&app(Scenario::DnsFailing), 80, 24));
}

#[test]
fn connect_failing_80x24() {
    insta::assert_snapshot!(frame(&app(Scenario::ConnectFailing), 80, 24));
}

#[test]
fn both_failing_80x24() {
    insta::assert_snapshot!(frame(&app(Scenario::BothFailing), 80, 24));
}

#[test]
fn both_failing_uses_a_large_terminal() {
    insta::assert_snapshot!(frame(&app(Scenario::BothFailing), 140, 40));
}

#[test]
fn a_signal_that_cannot_be_collected_shows_in_the_header_and_first_in_the_bottom_panel() {
    let disabled = vec![Disabled {
        source: "tc:eth1 ingress".into(),
        signals: "DNS and TLS on this interface",
        reason: "cannot add a clsact qdisc: Operation not supported".into(),
    }];
    let (r, changes) = build_with(Scenario::Healthy, disabled);
    let mut a = App::new();
    a.update(r, changes);
    let screen = frame(&a, 80, 24);
    assert!(screen.contains("disabled 1"), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn tls_failing_80x24() {
    insta::assert_snapshot!(frame(&app(Scenario::TlsFailing), 80, 24));
}

#[test]
fn drill_down_into_a_failing_tls_destination() {
    let mut a = app(Scenario::TlsFailing);
    a.handle(Action::Panel(1));
    // The TCP rows come first in the panel; the TLS row follows.
    a.handle(Action::Down);
    assert_eq!(a.handle(Action::Enter), Effect::None);
    assert_eq!(a.drill.as_deref(), Some("tls 10.0.0.5:443 api.example.com"));
    insta::assert_snapshot!(frame(&a, 100, 30));
}

#[test]
fn drill_down_into_the_refused_destination() {
    let mut a = app(Scenario::ConnectFailing);
    a.handle(Action::Panel(1));
    // Destinations sort the failing one first.
    assert_eq!(a.handle(Action::Enter), Effect::None);
    assert_eq!(a.drill.as_deref(), Some("tcp 10.1.2.3:5432"));
    insta::assert_snapshot!(frame(&a, 80, 24));
    a.handle(Action::Back);
    assert!(a.drill.is_none());
}

#[test]
fn loss_failing_80x24_shows_the_blast_radius_first() {
    let f = frame(&app(Scenario::LossFailing), 80, 24);
    assert!(f.contains("Blast radius: one destination (10.1.2.3)"), "{f}");
    insta::assert_snapshot!(f);
}

#[test]
fn proxy_failing_80x24() {
    insta::assert_snapshot!(frame(&app(Scenario::ProxyFailing), 80, 24));
}

#[test]
fn a_proxys_502s_are_a_consequence_of_its_refused_upstream_and_drill_down_shows_the_slowest() {
    let (r, _) = build(Scenario::ProxyFailing);
    let cause = r.cause.as_ref().expect("a cause");
    assert_eq!(cause.layer, crate::verdict::Layer::TcpTls);
    assert_eq!(cause.consequences, [crate::verdict::Layer::L7], "{:#?}", r.verdicts.l7);
    let l7 = &r.verdicts.l7;
    assert_eq!(
        l7.evidence,
        ["L7: 12/40 responses served on 10.0.0.5:8080 (Host api.internal) were 502 in the last 10 s (e.g. GET /v1/orders -> 502 after 6.0 ms); upstream connects to 10.0.0.9:9000 refused"]
    );
    let mut a = app(Scenario::ProxyFailing);
    a.handle(Action::Panel(3));
    assert_eq!(a.handle(Action::Enter), Effect::None);
    assert_eq!(a.drill.as_deref(), Some("http server 10.0.0.5:8080 api.internal"));
    insta::assert_snapshot!(frame(&a, 100, 30));
}

#[test]
fn verdicts_drive_the_panels_in_triage_order() {
    let (r, _) = build(Scenario::BothFailing);
    let cause = r.cause.as_ref().expect("a cause");
    assert_eq!(cause.layer, crate::verdict::Layer::Dns, "DNS comes first in triage order");
    assert_eq!(cause.also_suspect, [crate::verdict::Layer::TcpTls], "the refused DB is not explained by DNS");
}

#[test]
fn keys_map_to_actions() {
    let none = KeyModifiers::NONE;
    assert_eq!(key_action(KeyCode::Char('q'), none), Some(Action::Quit));
    assert_eq!(key_action(KeyCode::Char('c'), KeyModifiers::CONTROL), Some(Action::Quit));
    assert_eq!(key_action(KeyCode::Char('c'), none), Some(Action::Copy));
    assert_eq!(key_action(KeyCode::Char('3'), none), Some(Action::Panel(2)));
    assert_eq!(key_action(KeyCode::Tab, none), Some(Action::NextPanel));
    assert_eq!(key_action(KeyCode::Esc, none), Some(Action::Back));
    assert_eq!(key_action(KeyCode::Char('r'), none), Some(Action::Record));
    assert_eq!(key_action(KeyCode::Char('w'), none), Some(Action::WriteReport));
    assert_eq!(key_action(KeyCode::Char('x'), none), None);
}

#[test]
fn r_asks_the_runner_for_a_recording_and_w_only_while_one_runs() {
    let mut a = App::new();
    assert_eq!(a.handle(Action::Record), Effect::ToggleRecording);
    assert_eq!(a.handle(Action::WriteReport), Effect::None);
    assert_eq!(a.status.as_deref(), Some("no recording to write (r starts one)"));
    a.recording = Some("/tmp/rec".into());
    assert_eq!(a.handle(Action::WriteReport), Effect::WriteReport);
}

#[test]
fn pause_freezes_the_view_and_resume_shows_the_newest() {
    let mut a = app(Scenario::Healthy);
    a.handle(Action::Pause);
    let (failing, changes) = build(Scenario::ConnectFailing);
    a.update(failing, changes);
    assert!(a.report.as_ref().unwrap().cause.is_none(), "paused: still the healthy report");
    assert_eq!(a.timeline.len(), 4, "the timeline keeps recording while paused");
    a.handle(Action::Pause);
    assert!(a.report.as_ref().unwrap().cause.is_some());
}

#[test]
fn copied_evidence_is_stamped_and_complete() {
    let mut a = app(Scenario::BothFailing);
    let Effect::Copy(text) = a.handle(Action::Copy) else { panic!("copy expected") };
    let stamp = format!("[{} web-3]", a.report.as_ref().unwrap().ts);
    assert!(text.lines().all(|l| l.starts_with(&stamp)), "{text}");
    assert!(text.contains(&format!("likely cause: DNS (confidence high); suspect since {}; also suspect: TCP/TLS", a.report.as_ref().unwrap().ts)), "{text}");
    assert!(text.contains("DNS: 12/40 responses from 10.0.0.2:53 were errors (12 SERVFAIL)"), "{text}");
    assert!(text.contains("TCP: 5/5 connects to 10.1.2.3:5432 refused"), "{text}");
    assert_eq!(evidence_text(a.report.as_ref().unwrap()), text);
}

/// A daemon's client draws from frames: every scenario, sent as a JSON line and read back,
/// must draw, print and copy exactly as the report it came from.
#[test]
fn a_report_sent_by_a_daemon_shows_exactly_as_the_report_it_came_from() {
    use crate::present::{text, wire::Frame};
    for s in [Scenario::Healthy, Scenario::DnsFailing, Scenario::BothFailing, Scenario::TlsFailing, Scenario::ProxyFailing, Scenario::LossFailing] {
        let (r, changes) = build(s);
        let line = serde_json::to_string(&Frame::of(&r, &changes, &[], vec![]).unwrap()).unwrap();
        let (back, back_changes) = serde_json::from_str::<Frame>(&line).unwrap().into_report().unwrap();
        assert_eq!(back_changes, changes);
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&r).unwrap());
        assert_eq!(evidence_text(&back), evidence_text(&r));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        text::write(&mut a, &r).unwrap();
        text::write(&mut b, &back).unwrap();
        assert_eq!(String::from_utf8(b).unwrap(), String::from_utf8(a).unwrap());
        let (mut original, mut received) = (App::new(), App::new());
        original.update(r, changes.clone());
        received.update(back, back_changes);
        for layer in 0..4 {
            for app in [&mut original, &mut received] {
                app.handle(app::Action::Panel(layer));
                app.handle(app::Action::Enter);
            }
            assert_eq!(frame(&received, 120, 40), frame(&original, 120, 40), "{layer}");
            for app in [&mut original, &mut received] {
                app.handle(app::Action::Back);
            }
            assert_eq!(frame(&received, 120, 40), frame(&original, 120, 40), "{layer}");
        }
    }
}

/// An attached client's history: each interval the daemon held goes through `update`, so the
/// sparklines and the timeline reach back before the attach.
#[test]
fn history_from_a_daemon_fills_the_sparklines_and_the_timeline() {
    use crate::present::wire::Frame;
    let mut app = App::new();
    for s in [Scenario::Healthy, Scenario::ConnectFailing, Scenario::ConnectFailing] {
        let (r, changes) = build(s);
        let line = serde_json::to_string(&Frame::of(&r, &changes, &[], vec![]).unwrap()).unwrap();
        let (r, changes) = serde_json::from_str::<Frame>(&line).unwrap().into_report().unwrap();
        app.update(r, changes);
    }
    assert_eq!(app.history[&format!("tcp {API}")].len(), 3, "{:?}", app.history.keys());
    assert_eq!(app.history[&format!("tcp {DB}")].len(), 2, "the refused destination from its first interval on");
    assert!(app.timeline.iter().any(|c| c.layer == verdict::Layer::TcpTls && c.to == verdict::State::Suspect), "{:?}", app.timeline);
}
