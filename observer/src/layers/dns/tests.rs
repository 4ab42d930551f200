use simple_dns::{CLASS, Name, Packet, Question, RCODE, ResourceRecord, TYPE, rdata::{A, RData}};

use super::*;
use parse::parse;

const CLIENT: &str = "10.0.0.1:40000";
const R1: &str = "10.0.0.53:53";
const R2: &str = "10.0.0.54:53";
const MS: u64 = 1_000_000;

fn cfg() -> DnsConfig {
    DnsConfig {
        window: Duration::from_secs(10),
        unanswered_after: Duration::from_secs(5),
        max_names: 100,
        max_pending: 1000,
        top_names: 20,
    }
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut p = Packet::new_query(id);
    p.questions.push(Question::new(Name::new_unchecked(name), TYPE::A.into(), CLASS::IN.into(), false));
    p.build_bytes_vec().unwrap()
}

fn reply(id: u16, name: &str, rcode: RCODE, addrs: &[[u8; 4]]) -> Vec<u8> {
    let mut p = Packet::new_reply(id);
    p.questions.push(Question::new(Name::new_unchecked(name), TYPE::A.into(), CLASS::IN.into(), false));
    *p.rcode_mut() = rcode;
    for a in addrs {
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked(name),
            CLASS::IN,
            60,
            RData::A(A { address: u32::from_be_bytes(*a) }),
        ));
    }
    p.build_bytes_vec().unwrap()
}

fn msg(ts_ms: u64, resolver: &str, is_response: bool, bytes: Vec<u8>) -> DnsMessage {
    DnsMessage {
        at: Mono(ts_ms * MS),
        client: CLIENT.parse().unwrap(),
        resolver: resolver.parse().unwrap(),
        answerer: None,
        is_response,
        ifindex: 2,
        fragmented: false,
        dns_len: bytes.len(),
        ttl: None,
        bytes: bytes.into(),
    }
}

fn resolver<'a>(views: &'a [ResolverView], addr: &str) -> &'a ResolverView {
    views.iter().find(|r| r.resolver == addr.parse::<SocketAddr>().unwrap()).expect("resolver present")
}

#[test]
fn matches_responses_to_queries_and_measures_latency() {
    let mut l = DnsLayer::new(cfg());
    l.on_message(&msg(0, R1, false, query(7, "api.test")));
    // 0x20 case randomisation: the response echoes another case.
    l.on_message(&msg(12, R1, true, reply(7, "API.test", RCODE::NoError, &[[10, 1, 1, 1]])));
    l.on_message(&msg(20, R1, false, query(8, "gone.test")));
    l.on_message(&msg(25, R1, true, reply(8, "gone.test", RCODE::NameError, &[])));
    l.on_snapshot(Mono(100 * MS), &DnsSnapshot::default());
    let r = resolver(&l.resolvers(), R1).clone();
    assert_eq!(r.window.latency_us.count, 2);
    assert!((11_900..=12_100).contains(&r.window.latency_us.max), "{:?}", r.window.latency_us);
    assert_eq!(r.total.parsed.get(rc::UNMATCHED_RESPONSES), 0);
    let names = l.names();
    assert_eq!(names[0].qname, "gone.test", "NXDOMAIN sorts first");
    assert_eq!(names[0].total.counts.get(nc::NXDOMAIN), 1);
    let api = names.iter().find(|n| n.qname == "api.test").unwrap();
    assert_eq!(api.answers, vec!["10.1.1.1".to_owned()]);
    assert_eq!((api.qtype.as_str(), api.total.counts.get(nc::NOERROR), api.total.counts.get(nc::QUERIES)), ("A", 1, 1));
}

#[test]
fn a_query_without_response_is_unanswered_after_the_timeout_and_not_before() {
    let mut l = DnsLayer::new(cfg());
    l.on_message(&msg(1_000, R1, false, query(1, "slow.test")));
    l.on_snapshot(Mono(5_999 * MS), &DnsSnapshot::default());
    assert_eq!(resolver(&l.resolvers(), R1).total.parsed.get(rc::UNANSWERED), 0);
    l.on_snapshot(Mono(6_000 * MS), &DnsSnapshot::default());
    assert_eq!(resolver(&l.resolvers(), R1).total.parsed.get(rc::UNANSWERED), 1);
    assert_eq!(l.names()[0].total.counts.get(nc::UNANSWERED), 1);
    // A late response is then unmatched, not a second outcome.
    l.on_message(&msg(7_000, R1, true, reply(1, "slow.test", RCODE::NoError, &[[1, 2, 3, 4]])));
    l.on_snapshot(Mono(7_000 * MS), &DnsSnapshot::default());
    assert_eq!(resolver(&l.resolvers(), R1).total.parsed.get(rc::UNMATCHED_RESPONSES), 1);
}

#[test]
fn empty_noerror_is_nodata() {
    let mut l = DnsLayer::new(cfg());
    l.on_message(&msg(0, R1, false, query(3, "v6only.test")));
    l.on_message(&msg(1, R1, true, reply(3, "v6only.test", RCODE::NoError, &[])));
    l.on_snapshot(Mono(2 * MS), &DnsSnapshot::default());
    assert_eq!(resolver(&l.resolvers(), R1).total.parsed.get(rc::NODATA), 1);
    assert_eq!(l.names()[0].total.counts.get(nc::NODATA), 1);
}

#[test]
fn disjoint_answers_from_two_resolvers_diverge_and_overlapping_ones_do_not() {
    let mut l = DnsLayer::new(cfg());
    l.on_snapshot(Mono(0), &DnsSnapshot::default());
    for (id, r, a) in [(1, R1, [10, 0, 0, 101]), (2, R2, [10, 0, 0, 102])] {
        l.on_message(&msg(0, r, false, query(id, "split.test")));
        l.on_message(&msg(1, r, true, reply(id, "split.test", RCODE::NoError, &[a])));
    }
    for (id, r, a) in [(3, R1, [[10, 0, 0, 1], [10, 0, 0, 2]]), (4, R2, [[10, 0, 0, 2], [10, 0, 0, 3]])] {
        l.on_message(&msg(0, r, false, query(id, "same.test")));
        l.on_message(&msg(1, r, true, reply(id, "same.test", RCODE::NoError, &a)));
    }
    let d = l.divergences();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].qname, "split.test");
    let shown: Vec<String> = d[0].answers.iter().map(|a| format!("{} {:?}", a.resolver, a.addresses)).collect();
    assert_eq!(shown, ["10.0.0.53:53 [10.0.0.101]", "10.0.0.54:53 [10.0.0.102]"]);
}

#[test]
fn divergence_ages_out_with_the_window() {
    let mut l = DnsLayer::new(cfg());
    l.on_snapshot(Mono(0), &DnsSnapshot::default());
    for (id, r, a) in [(1, R1, [10, 0, 0, 101]), (2, R2, [10, 0, 0, 102])] {
        l.on_message(&msg(0, r, false, query(id, "split.test")));
        l.on_message(&msg(1, r, true, reply(id, "split.test", RCODE::NoError, &[a])));
    }
    l.on_snapshot(Mono(9_000 * MS), &DnsSnapshot::default());
    assert_eq!(l.divergences().len(), 1);
    l.on_snapshot(Mono(10_000 * MS), &DnsSnapshot::default());
    assert!(l.divergences().is_empty());
}

/// Hostile messages: each must be an error (counted as malformed), never a panic.
#[test]
fn hostile_messages_are_malformed_not_crashes() {
    let header = [0x12u8, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let with = |tail: &[u8]| [&header[..], tail].concat();
    let mut long_name = Vec::new();
    for _ in 0..5 {
        long_name.push(63);
        long_name.extend([b'a'; 63]);
    }
    long_name.extend([0, 0, 1, 0, 1]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("compression loop", with(&[0xc0, 12, 0, 1, 0, 1])),
        ("loop through a label", with(&[1, b'a', 0xc0, 12, 0, 1, 0, 1])),
        ("pointer past the end", with(&[0xc0, 200, 0, 1, 0, 1])),
        ("name over 255 bytes", with(&long_name)),
        ("label length past the end", with(&[70, b'a', b'b', 0, 0, 1, 0, 1])),
        ("truncated header", header[..7].to_vec()),
        ("header only, question missing", header.to_vec()),
    ];
    let mut l = DnsLayer::new(cfg());
    for (what, bytes) in &cases {
        assert!(parse(bytes).is_err(), "{what} must not parse");
        l.on_message(&msg(0, R1, false, bytes.clone()));
    }
    l.on_snapshot(Mono(MS), &DnsSnapshot::default());
    assert_eq!(resolver(&l.resolvers(), R1).total.parsed.get(rc::MALFORMED), cases.len() as u64);
}

#[test]
fn random_and_mutated_messages_are_each_counted_once_and_malformed_exactly_when_they_do_not_parse() {
    // Deterministic: xorshift bytes of every length up to 600, and valid replies with one
    // byte changed (those get past the header). cargo xtask fuzz goes much further.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut l = DnsLayer::new(cfg());
    let mut messages = Vec::new();
    for len in 0..600 {
        messages.push((0..len).map(|_| next() as u8).collect::<Vec<u8>>());
        let mut good = reply(len as u16, "mutated.test", RCODE::NoError, &[[10, 0, 0, 1]]);
        let at = next() as usize % good.len();
        good[at] = next() as u8;
        messages.push(good);
    }
    let mut malformed = 0;
    for (i, bytes) in messages.iter().enumerate() {
        malformed += u64::from(parse(bytes).is_err());
        l.on_message(&msg(0, R1, i % 3 != 0, bytes.clone()));
    }
    let snap = DnsSnapshot { names: vec![(2, "eth0".into())], ..DnsSnapshot::default() };
    l.on_snapshot(Mono(MS), &snap);
    assert!(malformed > 0 && malformed < messages.len() as u64, "both kinds are exercised: {malformed}");
    assert_eq!(resolver(&l.resolvers(), R1).total.parsed.get(rc::MALFORMED), malformed);
    let v = l.view();
    let eth0 = v.per_interface.iter().find(|i| i.interface == "eth0").expect("eth0");
    assert_eq!(eth0.total.get(ivc::DNS_MESSAGES), messages.len() as u64, "every message counted once");
}

#[test]
fn oversize_responses_match_by_id_and_are_not_malformed() {
    let mut l = DnsLayer::new(cfg());
    l.on_message(&msg(0, R1, false, query(9, "big.test")));
    let full = reply(9, "big.test", RCODE::NoError, &[[1, 1, 1, 1]; 40]);
    let mut m = msg(3, R1, true, full[..40].to_vec());
    m.dns_len = full.len();
    l.on_message(&m);
    l.on_snapshot(Mono(4 * MS), &DnsSnapshot::default());
    let r = resolver(&l.resolvers(), R1).total.clone();
    assert_eq!((r.parsed.get(rc::OVERSIZE), r.parsed.get(rc::MALFORMED), r.latency_us.count), (1, 0, 1));
}

#[test]
fn kernel_counts_are_windowed_per_resolver() {
    let mut l = DnsLayer::new(cfg());
    let mut c = [0u64; kc::COUNT];
    c[kc::QUERIES] = 40;
    c[kc::SERVFAIL] = 12;
    let snap = DnsSnapshot { resolvers: vec![(R1.parse().unwrap(), c)], per_interface: vec![], names: vec![] };
    l.on_snapshot(Mono(0), &snap);
    l.on_snapshot(Mono(11_000 * MS), &snap);
    let r = resolver(&l.resolvers(), R1).clone();
    assert_eq!((r.total.kernel.get(kc::QUERIES), r.total.kernel.get(kc::SERVFAIL)), (40, 12));
    assert_eq!(r.window.kernel.get(kc::QUERIES), 0, "older than the window");
}

#[test]
fn pending_queries_are_bounded_and_the_excess_counted() {
    let mut l = DnsLayer::new(DnsConfig { max_pending: 2, ..cfg() });
    for id in 0..5 {
        l.on_message(&msg(0, R1, false, query(id, "many.test")));
    }
    assert_eq!(l.pending_dropped, 3);
}

#[test]
fn json_shape_of_a_resolver() {
    let mut l = DnsLayer::new(cfg());
    l.on_message(&msg(0, R1, false, query(1, "a.test")));
    l.on_snapshot(Mono(0), &DnsSnapshot::default());
    let v = serde_json::to_value(&l.resolvers()[0]).unwrap();
    for k in ["queries", "responses", "servfail", "unanswered", "malformed", "nodata", "latency_us"] {
        assert!(v["window"].get(k).is_some(), "missing {k}: {v}");
    }
}

#[test]
fn per_interface_figures_join_the_events_counts_and_the_kernels() {
    let mut l = DnsLayer::new(cfg());
    l.on_message(&msg(0, R1, false, query(1, "a.test")));
    let mut m = msg(1, R1, true, reply(1, "a.test", RCODE::NoError, &[[10, 0, 0, 1]]));
    m.fragmented = true;
    l.on_message(&m);
    let mut k = [0u64; ic::COUNT];
    k[ic::DNS_DUPLICATES] = 3;
    let snap = DnsSnapshot {
        per_interface: vec![(2, k)],
        names: vec![(2, "eth0".into())],
        ..DnsSnapshot::default()
    };
    l.on_snapshot(Mono(MS), &snap);
    let v = l.view();
    assert_eq!(v.interfaces, ["eth0"], "named from the index map");
    let eth0 = v.per_interface.iter().find(|i| i.interface == "eth0").expect("eth0");
    assert_eq!(eth0.total.get(ivc::DNS_MESSAGES), 2, "both messages carried ifindex 2");
    assert_eq!(eth0.total.get(ivc::DNS_FRAGMENTED), 1);
    assert_eq!(eth0.total.get(ivc::DNS_DUPLICATES), 3, "from the kernel");
    let json = serde_json::to_string(&eth0.total).unwrap();
    assert!(json.starts_with(r#"{"dns_messages":2,"dns_duplicates":3,"dns_fragmented":1,"#), "{json}");
}

#[test]
fn queries_a_resolver_answered_nothing_since_are_silent_and_a_later_answer_clears_them() {
    let mut l = DnsLayer::new(cfg());
    let snap = DnsSnapshot::default();
    l.on_message(&msg(0, R1, false, query(1, "a.test")));
    l.on_message(&msg(2, R1, true, reply(1, "a.test", RCODE::NoError, &[[10, 0, 0, 1]])));
    // Two queries it never answers, and one to another resolver that answers.
    l.on_message(&msg(100, R1, false, query(2, "b.test")));
    l.on_message(&msg(600, R1, false, query(3, "c.test")));
    l.on_message(&msg(100, R2, false, query(4, "d.test")));
    l.on_message(&msg(103, R2, true, reply(4, "d.test", RCODE::NoError, &[[10, 0, 0, 2]])));
    l.on_snapshot(Mono(1600 * MS), &snap);
    let v = l.resolvers();
    assert_eq!((resolver(&v, R1).silent_queries, resolver(&v, R1).silent_for_ms), (2, 1500));
    assert_eq!(resolver(&v, R2).silent_queries, 0);
    // An answer to anything clears it: the resolver is slow or lossy, not silent.
    l.on_message(&msg(1700, R1, false, query(5, "e.test")));
    l.on_message(&msg(1701, R1, true, reply(5, "e.test", RCODE::NoError, &[[10, 0, 0, 3]])));
    l.on_snapshot(Mono(2600 * MS), &snap);
    assert_eq!(resolver(&l.resolvers(), R1).silent_queries, 0);
}

#[test]
fn the_usual_p99_is_the_median_of_per_interval_p99s_so_an_earlier_slow_episode_does_not_move_it() {
    let mut l = DnsLayer::new(cfg());
    // 100 one-second intervals at 2 ms, then 20 at 400 ms (a slow resolver, since fixed).
    let mut id = 0u16;
    for s in 0..120u64 {
        let took = if s < 100 { 2 } else { 400 };
        for k in 0..4 {
            id = id.wrapping_add(1);
            let at = s * 1000 + k * 100;
            l.on_message(&msg(at, R1, false, query(id, "api.test")));
            l.on_message(&msg(at + took, R1, true, reply(id, "api.test", RCODE::NoError, &[[10, 1, 1, 1]])));
        }
        l.on_snapshot(Mono((s * 1000 + 999) * MS), &DnsSnapshot::default());
    }
    let r = resolver(&l.resolvers(), R1).clone();
    assert!(r.total.latency_us.p99 >= 399_000, "the since-start p99 remembers the episode: {:?}", r.total.latency_us);
    assert!((1_900..=2_100).contains(&r.typical_p99_us), "usual p99: {}", r.typical_p99_us);
}

#[test]
fn the_listed_names_and_each_resolvers_first_troubled_ones_follow_a_full_ranking() {
    // 300 names (more than the selection's buffer holds), one in three failing a varying
    // number of times, on two resolvers.
    let mut l = DnsLayer::new(DnsConfig { top_names: 10, max_names: 1000, ..cfg() });
    let mut id = 0u16;
    for i in 0..300u32 {
        let (name, r) = (format!("n{i}.test"), if i.is_multiple_of(2) { R1 } else { R2 });
        for _ in 0..=(i % 4) {
            id += 1;
            let rcode = if i.is_multiple_of(3) { RCODE::ServerFailure } else { RCODE::NoError };
            l.on_message(&msg(u64::from(id), r, false, query(id, &name)));
            l.on_message(&msg(u64::from(id) + 1, r, true, reply(id, &name, rcode, &[])));
        }
    }
    l.on_snapshot(Mono(100_000 * MS), &DnsSnapshot::default());
    let all: Vec<String> = l.names().into_iter().map(|n| n.qname).collect();
    let (listed, rest, omitted) = l.split_names(10);
    assert_eq!(listed.iter().map(|n| n.qname.clone()).collect::<Vec<_>>(), all[..10]);
    assert_eq!(omitted, 290);
    for r in [R1, R2] {
        let addr: SocketAddr = r.parse().unwrap();
        let expected: Vec<&String> = all[10..].iter().filter(|n| {
            let i: u32 = n.trim_start_matches('n').trim_end_matches(".test").parse().unwrap();
            i.is_multiple_of(3) && (if i.is_multiple_of(2) { R1 } else { R2 }) == r
        }).take(3).collect();
        let got: Vec<&String> = rest[&addr].troubled.iter().map(|n| &n.qname).collect();
        assert_eq!(got, expected, "{r}: its first three troubled names past the listed ones");
    }
}

#[test]
fn past_the_top_names_the_rules_still_get_each_resolvers_addresses_and_troubled_names() {
    let mut l = DnsLayer::new(DnsConfig { top_names: 1, ..cfg() });
    // R1 answers two names (10.1.1.1 and 10.1.1.2); R2 fails one name and answers another.
    l.on_message(&msg(0, R1, false, query(1, "a.test")));
    l.on_message(&msg(1, R1, true, reply(1, "a.test", RCODE::NoError, &[[10, 1, 1, 1]])));
    l.on_message(&msg(2, R1, false, query(2, "b.test")));
    l.on_message(&msg(3, R1, true, reply(2, "b.test", RCODE::NoError, &[[10, 1, 1, 2]])));
    for id in 3..6 {
        l.on_message(&msg(4, R2, false, query(id, "broken.test")));
        l.on_message(&msg(5, R2, true, reply(id, "broken.test", RCODE::ServerFailure, &[])));
    }
    l.on_message(&msg(6, R2, false, query(9, "ok.test")));
    l.on_message(&msg(7, R2, true, reply(9, "ok.test", RCODE::NoError, &[[10, 2, 2, 2]])));
    l.on_snapshot(Mono(100 * MS), &DnsSnapshot::default());
    let v = l.view();
    assert_eq!(v.names.iter().map(|n| n.qname.as_str()).collect::<Vec<_>>(), ["broken.test"], "the top one, whole");
    assert_eq!(v.names_omitted, 3);
    let r1 = &v.rest_names[&R1.parse().unwrap()];
    assert_eq!(r1.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.1.1.1", "10.1.1.2"]);
    assert!(r1.troubled.is_empty(), "R1's names are healthy");
    let r2 = &v.rest_names[&R2.parse().unwrap()];
    assert_eq!(r2.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.2.2.2"]);
    // With no names whole, a troubled one is still there for its resolver's evidence.
    let (_, rest, omitted) = l.split_names(0);
    assert_eq!(omitted, 4);
    assert_eq!(rest[&R2.parse().unwrap()].troubled.iter().map(|n| n.qname.as_str()).collect::<Vec<_>>(), ["broken.test"]);
    // A suspect resolver explains failing connects to every address it gave, top or not.
    use crate::verdict::Rules as _;
    let explained = v.explains(&[R1.parse().unwrap()]);
    assert_eq!(explained.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.1.1.1", "10.1.1.2"]);
}

#[test]
fn resolvers_that_disagree_are_found_in_the_names_own_answers_until_the_window_passes() {
    let mut l = DnsLayer::new(cfg());
    l.on_message(&msg(0, R1, false, query(1, "split.test")));
    l.on_message(&msg(1, R1, true, reply(1, "split.test", RCODE::NoError, &[[10, 1, 1, 1]])));
    l.on_message(&msg(2, R2, false, query(2, "split.test")));
    l.on_message(&msg(3, R2, true, reply(2, "split.test", RCODE::NoError, &[[10, 9, 9, 9]])));
    l.on_snapshot(Mono(100 * MS), &DnsSnapshot::default());
    let d = l.divergences();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].answers.iter().map(|a| a.resolver.to_string()).collect::<Vec<_>>(), [R1, R2]);
    // The same answer from both: no divergence; and past the window, none either.
    l.on_message(&msg(200, R2, false, query(3, "split.test")));
    l.on_message(&msg(201, R2, true, reply(3, "split.test", RCODE::NoError, &[[10, 1, 1, 1]])));
    assert!(l.divergences().is_empty());
    l.on_snapshot(Mono(20_000 * MS), &DnsSnapshot::default());
    assert!(l.names.values().all(|n| n.answer_sets.is_empty()), "answers older than the window are gone");
}

/// A search-list lookup whose next query's answer is slow (or lost and retried): its first
/// NXDOMAIN waits past the 1 s grace while that query is pending, and is explained when the
/// name resolves. A name that resolves nowhere is judged after the grace as before.
#[test]
fn an_nxdomain_waits_while_its_lookup_goes_on_and_is_judged_once_it_has_ended() {
    let mut l = DnsLayer::new(cfg());
    l.on_message(&msg(0, R1, false, query(1, "api.test.ns.svc.cluster.local")));
    l.on_message(&msg(2, R1, true, reply(1, "api.test.ns.svc.cluster.local", RCODE::NameError, &[])));
    l.on_message(&msg(3, R1, false, query(2, "api.test.svc.cluster.local")));
    l.on_snapshot(Mono(2_500 * MS), &DnsSnapshot::default());
    assert_eq!(resolver(&l.resolvers(), R1).nxdomain_in_grace, 1, "its next search domain is still pending");
    l.on_message(&msg(2_600, R1, true, reply(2, "api.test.svc.cluster.local", RCODE::NameError, &[])));
    l.on_message(&msg(2_601, R1, false, query(3, "api.test")));
    l.on_message(&msg(2_603, R1, true, reply(3, "api.test", RCODE::NoError, &[[10, 1, 1, 1]])));
    l.on_snapshot(Mono(3_000 * MS), &DnsSnapshot::default());
    let r = resolver(&l.resolvers(), R1).clone();
    assert_eq!((r.nxdomain_in_grace, r.window.parsed.get(rc::SEARCH_NXDOMAIN)), (0, 2), "both explained");

    // A name that resolves nowhere: every query answered NXDOMAIN, nothing pending.
    l.on_message(&msg(4_000, R1, false, query(4, "gone.test.ns.svc.cluster.local")));
    l.on_message(&msg(4_002, R1, true, reply(4, "gone.test.ns.svc.cluster.local", RCODE::NameError, &[])));
    l.on_message(&msg(4_003, R1, false, query(5, "gone.test")));
    l.on_message(&msg(4_005, R1, true, reply(5, "gone.test", RCODE::NameError, &[])));
    l.on_snapshot(Mono(4_500 * MS), &DnsSnapshot::default());
    assert_eq!(resolver(&l.resolvers(), R1).nxdomain_in_grace, 2, "within the grace");
    l.on_snapshot(Mono(5_100 * MS), &DnsSnapshot::default());
    assert_eq!(resolver(&l.resolvers(), R1).nxdomain_in_grace, 0, "judged: errors");
}

#[test]
fn repeated_messages_from_the_cache_match_by_their_own_id_and_carry_their_own_answers() {
    let mut l = DnsLayer::new(cfg());
    // The same question twice with two ids, answered in reverse order: the second response
    // repeats the bytes of neither query, and the first repeats an earlier response's.
    l.on_message(&msg(0, R1, true, reply(1, "api.test", RCODE::NoError, &[[10, 1, 1, 1]])));
    l.on_message(&msg(10, R1, false, query(2, "api.test")));
    l.on_message(&msg(20, R1, false, query(3, "api.test")));
    l.on_message(&msg(25, R1, true, reply(3, "api.test", RCODE::NoError, &[[10, 1, 1, 1]])));
    l.on_message(&msg(40, R1, true, reply(2, "api.test", RCODE::NoError, &[[10, 2, 2, 2]])));
    l.on_snapshot(Mono(100 * MS), &DnsSnapshot::default());
    let r = resolver(&l.resolvers(), R1).clone();
    assert_eq!(r.window.parsed.values[rc::UNMATCHED_RESPONSES], 1, "the response before any query");
    assert_eq!(r.window.latency_us.count, 2);
    // 5 ms for id 3, 30 ms for id 2: each matched to its own query.
    assert_eq!((r.window.latency_us.p50 / 1000, r.window.latency_us.max / 1000), (5, 30));
    let names = l.names();
    assert_eq!(names[0].window.counts.values[nc::QUERIES], 2);
    assert_eq!(names[0].answers, ["10.2.2.2"], "the last answer, not a cached one");
}

/// Every NXDOMAIN response read is counted from its header, as the kernel counts it: matched
/// or not, parsed or not. The DNS events the kernel could not hand over are counted over the
/// window, from the reading's lost counters.
#[test]
fn nxdomains_read_are_counted_from_the_header_and_lost_events_over_the_window() {
    let mut l = DnsLayer::new(cfg());
    l.on_message(&msg(0, R1, false, query(1, "gone.test")));
    l.on_message(&msg(1, R1, true, reply(1, "gone.test", RCODE::NameError, &[])));
    l.on_message(&msg(2, R1, true, reply(9, "no-query.test", RCODE::NameError, &[])));
    let mut cut = reply(3, "cut.test", RCODE::NameError, &[]);
    cut.truncate(14);
    l.on_message(&msg(3, R1, true, cut));
    l.on_message(&msg(4, R1, false, query(4, "api.test")));
    l.on_message(&msg(5, R1, true, reply(4, "api.test", RCODE::NoError, &[[10, 1, 1, 1]])));
    let mut tick = Tick::for_tests();
    tick.at = Mono(100 * MS);
    tick.lost = vec![("dns_ringbuf_full", 2), ("dns_copy_failed", 1), ("http_ringbuf_full", 50)];
    l.on_tick(&tick);
    let r = resolver(&l.resolvers(), R1).clone();
    assert_eq!(r.window.parsed.get(rc::NXDOMAIN_SEEN), 3, "{:?}", r.window.parsed);
    assert_eq!((r.window.parsed.get(rc::MALFORMED), r.window.parsed.get(rc::UNMATCHED_RESPONSES)), (1, 1));
    assert_eq!(l.view().events_lost, 3, "the DNS ones only");
    // Nothing lost since: past the window, none.
    tick.at = Mono(20_000 * MS);
    l.on_tick(&tick);
    assert_eq!(l.view().events_lost, 0);
    assert_eq!(resolver(&l.resolvers(), R1).total.parsed.get(rc::NXDOMAIN_SEEN), 3);
}

/// The recording's per-interval failures are the growth of these totals: an NXDOMAIN counts
/// once judged, and a search-list one never, so that no total dips and grows back.
#[test]
fn the_failure_total_counts_an_nxdomain_once_judged_and_never_a_search_list_one() {
    let mut l = DnsLayer::new(cfg());
    let total = |l: &DnsLayer| l.failure_totals().iter().find(|(_, r, _)| r == R1).map_or(0, |(_, _, n)| *n);
    l.on_message(&msg(0, R1, false, query(1, "api.test.ns.svc.cluster.local")));
    l.on_message(&msg(1, R1, true, reply(1, "api.test.ns.svc.cluster.local", RCODE::NameError, &[])));
    l.on_snapshot(Mono(100 * MS), &DnsSnapshot::default());
    assert_eq!(total(&l), 0, "within its grace");
    l.on_message(&msg(150, R1, false, query(2, "api.test")));
    l.on_message(&msg(151, R1, true, reply(2, "api.test", RCODE::NoError, &[[10, 1, 1, 1]])));
    l.on_snapshot(Mono(200 * MS), &DnsSnapshot::default());
    assert_eq!(total(&l), 0, "explained");
    l.on_message(&msg(300, R1, false, query(3, "gone.test")));
    l.on_message(&msg(301, R1, true, reply(3, "gone.test", RCODE::NameError, &[])));
    l.on_snapshot(Mono(400 * MS), &DnsSnapshot::default());
    assert_eq!(total(&l), 0, "within its grace");
    l.on_snapshot(Mono(1_500 * MS), &DnsSnapshot::default());
    assert_eq!(total(&l), 1, "judged");
}
