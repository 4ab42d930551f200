//! Whole scenarios through a scripted source with a simulated clock: no kernel, no
//! privileges. Each asserts the verdict timeline (onset, detection, recovery).

use std::time::Duration;

use observer_common::{dns::dns_counter as kc, tcp::dest_counter as dc};
use simple_dns::{CLASS, Name, Packet, Question, ResourceRecord, TYPE, rdata::{A, RData}};

use super::*;
use crate::{
    events::{ConnectRecord, Counters, DnsMessage, DnsSnapshot, Outcome, TcpSnapshot},
    source::{Scripted, Source},
    verdict::{Layer, State},
};

const API: &str = "10.1.2.3:443";
const RESOLVER: &str = "10.0.0.2:53";
const CLIENT: &str = "10.0.0.10:41000";
const SEC: u64 = 1_000_000_000;

fn connect(at_ns: u64, outcome: Outcome) -> Event {
    Event::Connect(ConnectRecord {
        at: Mono(at_ns),
        dest: API.parse().unwrap(),
        outcome,
        latency: Duration::from_micros(300),
        error: if outcome == Outcome::Refused { 111 } else { 0 },
        syn_retransmits: 0,
        pid: 42,
        comm: "api-client".into(),
        local_port: 0,
    })
}

fn dns(at_ns: u64, id: u16, response: bool) -> Event {
    let name = "api.example.com";
    let mut p = if response { Packet::new_reply(id) } else { Packet::new_query(id) };
    p.questions.push(Question::new(Name::new_unchecked(name), TYPE::A.into(), CLASS::IN.into(), false));
    if response {
        p.answers.push(ResourceRecord::new(Name::new_unchecked(name), CLASS::IN, 60, RData::A(A { address: u32::from_be_bytes([10, 1, 2, 3]) })));
    }
    let bytes = p.build_bytes_vec().unwrap();
    Event::Dns(DnsMessage {
        at: Mono(at_ns),
        client: CLIENT.parse().unwrap(),
        resolver: RESOLVER.parse().unwrap(),
        answerer: None,
        is_response: response,
        ifindex: 2,
        fragmented: false,
        dns_len: bytes.len(),
        ttl: None,
        bytes: bytes.into(),
    })
}

/// The kernel's since-start counters, kept as the script goes.
#[derive(Default)]
struct Kernel {
    tcp: [u64; dc::COUNT],
    dns: [u64; kc::COUNT],
}

impl Kernel {
    fn counters(&self) -> Counters {
        Counters {
            tcp: TcpSnapshot { gone: None, held: 0, dests: vec![(API.parse().unwrap(), self.tcp)], ports: vec![] },
            dns: DnsSnapshot { resolvers: vec![(RESOLVER.parse().unwrap(), self.dns)], per_interface: vec![], names: vec![(2, "eth0".into())] },
            drops: vec![],
        }
    }
}

/// (second, layer, from, to)
type Changes = Vec<(u64, Layer, State, State)>;
/// (second, the layer named as the cause, its onset)
type Causes = Vec<(u64, Option<Layer>, Option<String>)>;

/// Run a script to its end: every verdict change, and the cause at each second.
fn run(script: Vec<Input>) -> (Changes, Causes) {
    let mut source = Scripted::new(script);
    let mut pipeline = Pipeline::new(Options::for_tests(), Config::default(), "test", Mono(0));
    let mut changes = Vec::new();
    let mut causes = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        while let Some(input) = source.next().await.unwrap() {
            let second = match &input {
                Input::Tick(t) => t.at.0 / SEC,
                Input::Events(_) => 0,
            };
            if let Some((report, ch)) = pipeline.on_input(input, false) {
                changes.extend(ch.into_iter().map(|c| (second, c.layer, c.from, c.to)));
                causes.push((second, report.cause.as_ref().map(|c| c.layer), report.cause.and_then(|c| c.since)));
            }
        }
    });
    (changes, causes)
}

#[test]
fn refused_connects_are_detected_in_the_interval_they_start_and_recovery_follows_the_window() {
    // Every second: one lookup (answered in 2 ms) and one connect. From second 6 to 8 the
    // connects are refused; from 9 on they succeed again.
    let mut k = Kernel::default();
    let mut script = Vec::new();
    for s in 1..=25u64 {
        let t = (s - 1) * SEC + SEC / 2;
        let refused = (6..=8).contains(&s);
        let outcome = if refused { Outcome::Refused } else { Outcome::Established };
        script.push(Input::Events(vec![dns(t, s as u16, false), dns(t + 2_000_000, s as u16, true), connect(t, outcome)]));
        k.dns[kc::QUERIES] += 1;
        k.dns[kc::RESPONSES] += 1;
        k.dns[kc::NOERROR] += 1;
        k.tcp[dc::ATTEMPTS] += 1;
        k.tcp[if refused { dc::REFUSED } else { dc::ESTABLISHED }] += 1;
        script.push(Input::Tick(Scripted::tick(s as f64, k.counters(), vec![])));
    }
    let (changes, causes) = run(script);
    assert_eq!(
        changes,
        [
            (1, Layer::Dns, State::NoSignal, State::Healthy),
            (1, Layer::TcpTls, State::NoSignal, State::Healthy),
            (6, Layer::TcpTls, State::Healthy, State::Suspect),
            // The last refusal (second 8) leaves the 10 s window at second 18: the rules last
            // fire at 17, and the layer clears after 5 s quiet (verdict.clear_after_s).
            (22, Layer::TcpTls, State::Suspect, State::Healthy),
        ]
    );
    let named: Vec<u64> = causes.iter().filter(|(_, c, _)| *c == Some(Layer::TcpTls)).map(|(s, _, _)| *s).collect();
    assert_eq!(named, (6..=21).collect::<Vec<u64>>(), "TCP/TLS is the cause while the refusals are in the window, and held 5 s");
    // The onset stays the tick that turned the layer suspect (second 6 of the script).
    let onsets: Vec<&str> = causes.iter().filter_map(|(_, _, since)| since.as_deref()).collect();
    assert_eq!(onsets, vec!["2026-11-25T17:00:06.000Z"; 16]);
}

#[test]
fn an_unanswered_lookup_is_judged_on_the_sources_clock() {
    // Lookups every second, all answered but two, at 2.5 s and 5.5 s (answers in between:
    // not a silent resolver). The timeout is 5 s: the second is unanswered at the reading of
    // second 11, not earlier, whatever the wall clock says (it takes two:
    // dns.min_unanswered).
    let mut k = Kernel::default();
    let mut script = Vec::new();
    for s in 1..=25u64 {
        let t = (s - 1) * SEC + SEC / 2;
        let lost = s == 3 || s == 6;
        let mut events = vec![dns(t, s as u16, false)];
        k.dns[kc::QUERIES] += 1;
        if !lost {
            events.push(dns(t + 1_000_000, s as u16, true));
            k.dns[kc::RESPONSES] += 1;
            k.dns[kc::NOERROR] += 1;
        }
        script.push(Input::Events(events));
        script.push(Input::Tick(Scripted::tick(s as f64, k.counters(), vec![])));
    }
    let (changes, causes) = run(script);
    let dns: Vec<(u64, State)> = changes.iter().filter(|c| c.1 == Layer::Dns).map(|c| (c.0, c.3)).collect();
    // The first (unanswered at 8) leaves the window at 18: the rule last fires at 17, and
    // the layer is held 5 s from there.
    assert_eq!(dns, [(1, State::Healthy), (11, State::Suspect), (22, State::Healthy)]);
    assert!(causes.iter().all(|(s, c, _)| (*c == Some(Layer::Dns)) == (11..22).contains(s)), "{causes:?}");
}

#[test]
fn only_the_last_tick_left_at_exit_is_final() {
    let tick = |secs| Input::Tick(Scripted::tick(secs, Counters::default(), vec![]));
    let flags: Vec<bool> = crate::source::with_final(vec![tick(1.0), Input::Events(vec![]), tick(2.0), Input::Events(vec![])]).map(|(_, f)| f).collect();
    assert_eq!(flags, [false, false, true, false]);
    assert_eq!(crate::source::with_final(vec![Input::Events(vec![])]).map(|(_, f)| f).collect::<Vec<_>>(), [false]);
}

#[test]
fn the_scripted_source_ends_with_a_final_tick() {
    let mut source = Scripted::new(vec![Input::Tick(Scripted::tick(1.0, Counters::default(), vec![]))]);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert!(rt.block_on(source.next()).unwrap().is_some());
    assert!(rt.block_on(source.next()).unwrap().is_none());
    let rest = source.finish();
    assert!(matches!(rest.as_slice(), [Input::Tick(t)] if t.at == Mono(SEC)));
}

#[test]
fn failures_grown_are_what_each_interval_added_per_destination_and_resolver() {
    let mut pipeline = Pipeline::new(Options::for_tests(), Config::default(), "test", Mono(0));
    let mut k = Kernel::default();
    let mut tick = |s: u64, k: &Kernel| {
        pipeline.on_input(Input::Tick(Scripted::tick(s as f64, k.counters(), vec![])), false).expect("a report");
        let mut g: Vec<String> = pipeline.failures_grown().into_iter().map(|(series, tag, n)| format!("{series} {tag} {n}")).collect();
        g.sort();
        g
    };
    k.tcp[dc::REFUSED] = 2;
    k.dns[kc::SERVFAIL] = 1;
    assert_eq!(tick(1, &k), [format!("dns_lookup {RESOLVER} 1"), format!("tcp_connect {API} 2")]);
    // The connects grow (from the layer's own reading), the resolver does not (its totals,
    // diffed by the pipeline).
    k.tcp[dc::REFUSED] = 5;
    assert_eq!(tick(2, &k), [format!("tcp_connect {API} 3")]);
    k.dns[kc::SERVFAIL] = 3;
    assert_eq!(tick(3, &k), [format!("dns_lookup {RESOLVER} 2")]);
    assert!(tick(4, &k).is_empty(), "nothing new");
}
