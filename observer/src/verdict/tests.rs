//! Each rule fires at its threshold and not below it, on synthetic aggregates.

use std::net::SocketAddr;

use observer_common::{dns::dns_counter as kc, tcp::dest_counter as dc};

use super::*;
use crate::layers::{
    connect::{ConnectView, Counts, DestView, Period},
    dns::{Divergence, DnsPeriod, DnsView, NamePeriod, NameView, ResolverAnswer, ResolverView, name_counter as nc, nxdomains_counted, resolver_counter as rc},
    latency::LatencySummary,
};

const R: &str = "10.0.0.2:53";
const D: &str = "10.1.2.3:443";

fn set<const N: usize>(pairs: &[(usize, u64)]) -> [u64; N] {
    let mut v = [0; N];
    for &(i, n) in pairs {
        v[i] = n;
    }
    v
}

fn lat(count: u64, p95_us: u64, p50_us: u64) -> LatencySummary {
    LatencySummary { count, p50: p50_us, p95: p95_us, p99: p95_us, max: p95_us, histogram: [0; 8] }
}

/// A resolver's counters; userspace read every NXDOMAIN the kernel counted unless `parsed`
/// says how many it read.
fn resolver(kernel: &[(usize, u64)], parsed: &[(usize, u64)], window_lat: LatencySummary, baseline_p50_us: u64) -> ResolverView {
    let period = |k: &[(usize, u64)], p: &[(usize, u64)], l| {
        let mut parsed = set(p);
        if !p.iter().any(|(i, _)| *i == rc::NXDOMAIN_SEEN) {
            parsed[rc::NXDOMAIN_SEEN] = k.iter().filter(|(i, _)| *i == kc::NXDOMAIN).map(|(_, n)| n).sum();
        }
        DnsPeriod { kernel: Counts { values: set(k), names: &kc::NAMES }, parsed: Counts { values: parsed, names: &rc::NAMES }, latency_us: l }
    };
    ResolverView {
        resolver: R.parse().unwrap(),
        answered_by: vec![],
        nxdomain_in_grace: 0,
        silent_queries: 0,
        silent_for_ms: 0,
        typical_p99_us: baseline_p50_us * 2,
        recent_latency_us: LatencySummary::default(),
        window: period(kernel, parsed, window_lat),
        total: period(kernel, parsed, lat(100, baseline_p50_us * 2, baseline_p50_us)),
    }
}

fn dest(addr: &str, window: &[(usize, u64)]) -> DestView {
    let period = |c: &[(usize, u64)]| Period { counts: Counts { values: set(c), names: &dc::NAMES }, connect_latency_us: LatencySummary::default() };
    DestView {
        dest: addr.parse().unwrap(),
        window: period(window),
        total: period(window),
        last_failure: None,
        processes: vec!["curl[7]".into()],
    }
}

fn name(qname: &str, answers: &[&str], window: &[(usize, u64)]) -> NameView {
    let p = NamePeriod { counts: Counts { values: set(window), names: &nc::NAMES }, latency_us: LatencySummary::default() };
    NameView {
        qname: qname.into(),
        qtype: "A".into(),
        window: p.clone(),
        total: p,
        answers: answers.iter().map(|s| s.to_string()).collect(),
        resolvers: vec![R.parse().unwrap()],
    }
}

struct Case {
    resolvers: Vec<ResolverView>,
    names: Vec<NameView>,
    divergences: Vec<Divergence>,
    dests: Vec<DestView>,
    lost: u64,
    dns_events_lost: u64,
}

impl Case {
    fn new() -> Case {
        Case { resolvers: vec![], names: vec![], divergences: vec![], dests: vec![], lost: 0, dns_events_lost: 0 }
    }
    fn run(&self, cfg: &Config) -> (Verdicts, Option<Cause>) {
        let dns = DnsView {
            interfaces: vec![],
            per_interface: vec![],
            resolvers: self.resolvers.clone(),
            names: self.names.clone(),
            names_omitted: 0,
            rest_names: Default::default(),
            divergences: self.divergences.clone(),
            unanswered_after: std::time::Duration::from_secs(5),
            top_names: 20,
            events_lost: self.dns_events_lost,
        };
        let tcp = ConnectView { destinations: self.dests.clone(), destinations_omitted: 0, rest: Default::default(), local_ports: vec![], top: 100 };
        evaluate(&[&tcp, &dns], 10.0, self.lost, cfg)
    }
    fn dns(&self, cfg: &Config) -> Verdict {
        self.run(cfg).0.dns
    }
    fn tcp(&self, cfg: &Config) -> Verdict {
        self.run(cfg).0.tcp_tls
    }
}

fn dns_with(kernel: &[(usize, u64)], parsed: &[(usize, u64)], l: LatencySummary, baseline: u64) -> Case {
    let mut c = Case::new();
    c.resolvers.push(resolver(kernel, parsed, l, baseline));
    c
}

fn fired(v: &Verdict) -> Vec<&'static str> {
    v.rules.clone()
}

#[test]
fn no_evidence_is_no_signal_never_healthy() {
    let cfg = Config::default();
    let (v, cause) = Case::new().run(&cfg);
    for l in Layer::ALL {
        assert_eq!(v.get(l).verdict, State::NoSignal, "{l:?}");
        assert!(v.get(l).note.is_some());
    }
    assert!(cause.is_none());
    // A resolver with nothing in the window is no signal too.
    assert_eq!(dns_with(&[], &[], LatencySummary::default(), 0).dns(&cfg).verdict, State::NoSignal);
}

#[test]
fn dns_error_rcodes_fire_at_the_share_and_count_thresholds() {
    let cfg = Config::default();
    // 1 of 20 = 5 %: at the threshold.
    let v = dns_with(&[(kc::QUERIES, 20), (kc::RESPONSES, 20), (kc::SERVFAIL, 1)], &[], LatencySummary::default(), 0).dns(&cfg);
    assert_eq!((v.verdict, fired(&v)), (State::Suspect, vec!["dns.error_rcodes"]));
    assert_eq!(v.evidence, ["DNS: 1/20 responses from 10.0.0.2:53 were errors (1 SERVFAIL) in the last 10 s"]);
    // 1 of 21 is below 5 %.
    let v = dns_with(&[(kc::QUERIES, 21), (kc::RESPONSES, 21), (kc::NXDOMAIN, 1)], &[], LatencySummary::default(), 0).dns(&cfg);
    assert_eq!(v.verdict, State::Healthy);
    // Count threshold.
    let mut strict = cfg.clone();
    strict.dns.min_errors = 2;
    let v = dns_with(&[(kc::RESPONSES, 2), (kc::REFUSED, 1)], &[], LatencySummary::default(), 0).dns(&strict);
    assert_eq!(v.verdict, State::Healthy);
    let v = dns_with(&[(kc::RESPONSES, 2), (kc::REFUSED, 2)], &[], LatencySummary::default(), 0).dns(&strict);
    assert_eq!(fired(&v), ["dns.error_rcodes"]);
}

#[test]
fn dns_error_evidence_names_the_failing_names() {
    let mut c = dns_with(&[(kc::RESPONSES, 4), (kc::SERVFAIL, 3)], &[], LatencySummary::default(), 0);
    c.names.push(name("api.example.com", &[], &[(nc::QUERIES, 3), (nc::SERVFAIL, 3)]));
    let v = c.dns(&Config::default());
    assert!(v.evidence[0].ends_with("; names: api.example.com A (3 SERVFAIL)"), "{:?}", v.evidence);
}

#[test]
fn dns_unanswered_fires_at_two_not_one() {
    let cfg = Config::default();
    let v = dns_with(&[(kc::QUERIES, 3)], &[(rc::UNANSWERED, 1)], LatencySummary::default(), 0).dns(&cfg);
    assert_eq!(v.verdict, State::Healthy, "one unanswered query in thousands is UDP being UDP");
    let v = dns_with(&[(kc::QUERIES, 3)], &[(rc::UNANSWERED, 2)], LatencySummary::default(), 0).dns(&cfg);
    assert_eq!(fired(&v), ["dns.unanswered"]);
    assert_eq!(v.evidence, ["DNS: 2 queries to 10.0.0.2:53 unanswered (no response within 5 s) in the last 10 s"]);
    let v = dns_with(&[(kc::QUERIES, 3), (kc::RESPONSES, 3)], &[], LatencySummary::default(), 0).dns(&cfg);
    assert_eq!(v.verdict, State::Healthy);
}

#[test]
fn dns_silent_fires_at_the_floor_or_ten_times_the_resolvers_p99() {
    let cfg = Config::default();
    let silent = |queries: u64, for_ms: u64, baseline_p50_us: u64| {
        let mut d = dns_with(&[(kc::QUERIES, 3)], &[], LatencySummary::default(), baseline_p50_us);
        d.resolvers[0].silent_queries = queries;
        d.resolvers[0].silent_for_ms = for_ms;
        d.dns(&cfg)
    };
    assert_eq!(silent(2, 999, 0).verdict, State::Healthy);
    let v = silent(2, 1000, 0);
    assert_eq!(fired(&v), ["dns.silent"]);
    assert_eq!(
        v.evidence,
        ["DNS: 2 queries to 10.0.0.2:53 waiting up to 1.0 s, with no response from it since the first of them (silent resolver; they count as unanswered after 5 s)"]
    );
    // A resolver whose p99 is 200 ms (the helper sets p99 to twice the p50) gets 2 s.
    assert_eq!(silent(2, 1999, 100_000).verdict, State::Healthy);
    assert_eq!(fired(&silent(2, 2000, 100_000)), ["dns.silent"]);
    assert_eq!(silent(1, 5000, 0).verdict, State::Healthy, "one lost query is not a silent resolver (dns.min_silent)");
    assert_eq!(silent(0, 5000, 0).verdict, State::Healthy, "nothing waiting, nothing silent");
}

#[test]
fn dns_slow_fires_at_200_ms_with_enough_samples() {
    let cfg = Config::default();
    let busy = [(kc::QUERIES, 10), (kc::RESPONSES, 10)];
    let v = dns_with(&busy, &[], lat(3, 200_000, 0), 0).dns(&cfg);
    assert_eq!(fired(&v), ["dns.slow"]);
    assert_eq!(v.evidence, ["DNS: p95 lookup 200 ms from 10.0.0.2:53 over 3 lookups in the last 10 s"]);
    assert_eq!(dns_with(&busy, &[], lat(3, 199_999, 0), 0).dns(&cfg).verdict, State::Healthy);
    assert_eq!(dns_with(&busy, &[], lat(2, 400_000, 0), 0).dns(&cfg).verdict, State::Healthy, "too few samples");
    // A resolver that just turned slow: 3 lookups of 400 ms in the last 2 s, diluted under
    // the window's p95 by the fast ones before.
    let mut c = dns_with(&busy, &[], lat(100, 2_000, 0), 0);
    c.resolvers[0].recent_latency_us = lat(3, 400_000, 0);
    let v = c.dns(&cfg);
    assert_eq!(fired(&v), ["dns.slow"]);
    assert_eq!(v.evidence, ["DNS: p95 lookup 400 ms from 10.0.0.2:53 over 3 lookups in the last 2 s"]);
    c.resolvers[0].recent_latency_us = lat(2, 400_000, 0);
    assert_eq!(c.dns(&cfg).verdict, State::Healthy, "too few recent samples");
}

#[test]
fn dns_baseline_fires_at_the_factor_and_only_above_the_floor() {
    let cfg = Config::default();
    let busy = [(kc::QUERIES, 10), (kc::RESPONSES, 10)];
    // Baseline 10 ms, factor 5: 50 ms fires, 49.9 ms does not.
    let v = dns_with(&busy, &[], lat(5, 50_000, 0), 10_000).dns(&cfg);
    assert_eq!(fired(&v), ["dns.slower_than_baseline"]);
    assert_eq!(v.evidence, ["DNS: p95 lookup 50 ms from 10.0.0.2:53 in the last 10 s, 5x its baseline 10 ms"]);
    assert_eq!(dns_with(&busy, &[], lat(5, 49_900, 0), 10_000).dns(&cfg).verdict, State::Healthy);
    // 5x a 2 ms baseline is 10 ms: under the 20 ms floor.
    assert_eq!(dns_with(&busy, &[], lat(5, 10_000, 0), 2_000).dns(&cfg).verdict, State::Healthy);
}

#[test]
fn dns_divergence_fires_and_can_be_turned_off() {
    let mut c = Case::new();
    c.divergences.push(Divergence {
        qname: "api.example.com".into(),
        qtype: "A".into(),
        answers: vec![
            ResolverAnswer { resolver: "10.0.0.2:53".parse().unwrap(), addresses: vec!["10.1.2.3".parse().unwrap()] },
            ResolverAnswer { resolver: "10.0.0.3:53".parse().unwrap(), addresses: vec!["10.9.9.9".parse().unwrap()] },
        ],
    });
    let v = c.dns(&Config::default());
    assert_eq!(fired(&v), ["dns.divergence"]);
    assert_eq!(v.destinations, ["10.0.0.2:53".parse::<SocketAddr>().unwrap(), "10.0.0.3:53".parse().unwrap()]);
    assert_eq!(
        v.evidence,
        ["DNS answers differ between 10.0.0.2:53 and 10.0.0.3:53 for api.example.com (A): 10.0.0.2:53 says [10.1.2.3]; 10.0.0.3:53 says [10.9.9.9]"]
    );
    let mut off = Config::default();
    off.dns.divergence = false;
    assert_eq!(c.dns(&off).verdict, State::Healthy);
}

fn tcp_case(window: &[(usize, u64)]) -> Case {
    let mut c = Case::new();
    c.dests.push(dest(D, window));
    c
}

#[test]
fn tcp_refused_fires_at_its_threshold() {
    let cfg = Config::default();
    let v = tcp_case(&[(dc::ATTEMPTS, 5), (dc::REFUSED, 5)]).tcp(&cfg);
    assert_eq!(fired(&v), ["tcp.refused", "tcp.success_ratio"]);
    assert_eq!(
        v.evidence,
        ["TCP: 5/5 connects to 10.1.2.3:443 refused in the last 10 s (RST answered the SYN: no listener, wrong port, or stale DNS); process curl[7]"]
    );
    let mut strict = cfg.clone();
    strict.tcp.min_refused = 6;
    strict.tcp.success_ratio = 0.0;
    assert_eq!(tcp_case(&[(dc::ATTEMPTS, 5), (dc::REFUSED, 5)]).tcp(&strict).verdict, State::Healthy);
}

#[test]
fn a_suspect_verdict_says_how_sure_it_is_and_why() {
    let cfg = Config::default();
    // Five refusals, five times the threshold of one: high.
    let v = tcp_case(&[(dc::ATTEMPTS, 5), (dc::REFUSED, 5)]).tcp(&cfg);
    assert_eq!(v.confidence, Some("high"), "{:?}", v.confidence_why);
    assert!(v.confidence_why.as_deref().unwrap_or("").contains("5 events"), "{:?}", v.confidence_why);
    // One reset among five connects, exactly at tcp.reset_share: low.
    let v = tcp_case(&[(dc::ATTEMPTS, 5), (dc::ESTABLISHED, 5), (dc::RESETS_RECEIVED, 1)]).tcp(&cfg);
    assert_eq!((v.confidence, v.rules.clone()), (Some("low"), vec!["tcp.resets"]), "{:?}", v.confidence_why);
    // One refusal in 20: one event, but the success ratio is 50 times past its threshold.
    let v = tcp_case(&[(dc::ATTEMPTS, 20), (dc::ESTABLISHED, 19), (dc::REFUSED, 1)]).tcp(&cfg);
    assert_eq!(v.confidence, Some("medium"), "{:?}", v.confidence_why);
    assert!(v.confidence_why.as_deref().unwrap_or("").starts_with("tcp.success_ratio: 1 event, 50.0×"), "{:?}", v.confidence_why);
    // Healthy verdicts carry none.
    assert_eq!(tcp_case(&[(dc::ATTEMPTS, 5), (dc::ESTABLISHED, 5)]).tcp(&cfg).confidence, None);
}

#[test]
fn tcp_timed_out_counts_timeouts_and_unreachables() {
    let cfg = Config::default();
    let v = tcp_case(&[(dc::ATTEMPTS, 1), (dc::TIMED_OUT, 1), (dc::SYN_RETRANSMITS, 2)]).tcp(&cfg);
    assert_eq!(fired(&v), ["tcp.timed_out", "tcp.syn_retries", "tcp.success_ratio"]);
    assert_eq!(v.evidence.len(), 1, "one line per destination: {:?}", v.evidence);
    let v = tcp_case(&[(dc::ATTEMPTS, 1), (dc::UNREACHABLE, 1)]).tcp(&cfg);
    assert!(fired(&v).contains(&"tcp.timed_out"));
    assert!(v.evidence[0].contains("1 host/network unreachable"), "{:?}", v.evidence);
}

#[test]
fn tcp_syn_retries_fire_at_one_retransmit_before_any_timeout() {
    let cfg = Config::default();
    let v = tcp_case(&[(dc::ATTEMPTS, 1), (dc::SYN_RETRANSMITS, 1)]).tcp(&cfg);
    assert_eq!(fired(&v), ["tcp.syn_retries"]);
    assert_eq!(
        v.evidence,
        ["TCP: 1 SYN retransmits to 10.1.2.3:443 in the last 10 s (1 connects started, 0 established): SYNs or SYN-ACKs are lost; process curl[7]"]
    );
    let mut strict = cfg.clone();
    strict.tcp.min_syn_retransmits = 2;
    assert_eq!(tcp_case(&[(dc::ATTEMPTS, 1), (dc::SYN_RETRANSMITS, 1)]).tcp(&strict).verdict, State::Healthy);
}

#[test]
fn tcp_success_ratio_fires_below_the_ratio_and_not_at_it() {
    let cfg = Config::default();
    // 999/1000 = 99.9 %: at the threshold, not below.
    let v = tcp_case(&[(dc::ATTEMPTS, 1000), (dc::ESTABLISHED, 999), (dc::OTHER_ERROR, 1)]).tcp(&cfg);
    assert_eq!(v.verdict, State::Healthy);
    let v = tcp_case(&[(dc::ATTEMPTS, 1000), (dc::ESTABLISHED, 998), (dc::OTHER_ERROR, 2)]).tcp(&cfg);
    assert_eq!(fired(&v), ["tcp.success_ratio"]);
    assert_eq!(v.evidence, ["TCP: connect success to 10.1.2.3:443 is 99.8 % (998/1000) in the last 10 s, below 99.9 %; process curl[7]"]);
    let mut few = cfg.clone();
    few.tcp.min_attempts = 1001;
    let v = tcp_case(&[(dc::ATTEMPTS, 1000), (dc::ESTABLISHED, 998), (dc::OTHER_ERROR, 2)]).tcp(&few);
    assert_eq!(v.verdict, State::Healthy);
}

#[test]
fn tcp_resets_fire_at_one() {
    let cfg = Config::default();
    let v = tcp_case(&[(dc::ATTEMPTS, 1), (dc::ESTABLISHED, 1), (dc::RESETS_RECEIVED, 1)]).tcp(&cfg);
    assert_eq!(fired(&v), ["tcp.resets"]);
    let v = tcp_case(&[(dc::ATTEMPTS, 1), (dc::ESTABLISHED, 1)]).tcp(&cfg);
    assert_eq!((v.verdict, v.note.as_deref()), (State::Healthy, Some("TLS handshakes are not observed yet: this verdict covers TCP connects")));
}

#[test]
fn the_first_suspect_layer_is_the_cause_and_explains_connects_to_its_answers() {
    let cfg = Config::default();
    let mut c = dns_with(&[(kc::QUERIES, 4), (kc::RESPONSES, 4)], &[], lat(4, 2_000_000, 0), 0);
    c.names.push(name("api.example.com", &["10.1.2.3"], &[(nc::QUERIES, 4), (nc::NOERROR, 4)]));
    c.dests.push(dest(D, &[(dc::ATTEMPTS, 1), (dc::TIMED_OUT, 1)]));
    let (v, cause) = c.run(&cfg);
    let cause = cause.unwrap();
    assert_eq!(cause.layer, Layer::Dns);
    assert_eq!(cause.consequences, [Layer::TcpTls]);
    assert!(cause.also_suspect.is_empty());
    assert_eq!(v.tcp_tls.consequence_of, Some(Layer::Dns));
    assert_eq!(cause.confidence, "high");

    // A failing connect elsewhere is not explained by DNS: it is a suspect of its own.
    c.dests.push(dest("10.7.7.7:80", &[(dc::ATTEMPTS, 1), (dc::REFUSED, 1)]));
    let (v, cause) = c.run(&cfg);
    let cause = cause.unwrap();
    assert_eq!((cause.layer, cause.also_suspect.clone(), v.tcp_tls.consequence_of), (Layer::Dns, vec![Layer::TcpTls], None));
}

#[test]
fn lost_events_lower_the_confidence() {
    let mut c = tcp_case(&[(dc::ATTEMPTS, 1), (dc::REFUSED, 1)]);
    c.lost = 12;
    let cause = c.run(&Config::default()).1.unwrap();
    assert_eq!(cause.layer, Layer::TcpTls);
    assert_eq!(cause.confidence, "reduced");
    assert!(cause.confidence_note.unwrap().starts_with("12 events lost"));
}

#[test]
fn the_tracker_reports_each_change_once() {
    let cfg = Config::default();
    let mut t = Tracker::new(10);
    let failing = tcp_case(&[(dc::ATTEMPTS, 1), (dc::REFUSED, 1)]).run(&cfg).0;
    let healthy = tcp_case(&[(dc::ATTEMPTS, 1), (dc::ESTABLISHED, 1)]).run(&cfg).0;
    let ch = t.update("t1", &failing);
    assert_eq!(ch.len(), 1);
    assert_eq!((ch[0].layer, ch[0].from, ch[0].to), (Layer::TcpTls, State::NoSignal, State::Suspect));
    assert!(t.update("t2", &failing).is_empty());
    let ch = t.update("t3", &healthy);
    assert_eq!((ch[0].from, ch[0].to), (State::Suspect, State::Healthy));
    assert_eq!(t.timeline.len(), 2);
}

#[test]
fn json_has_the_four_layers_by_key() {
    let (v, _) = tcp_case(&[(dc::ATTEMPTS, 1), (dc::REFUSED, 1)]).run(&Config::default());
    let j = serde_json::to_value(&v).unwrap();
    for k in ["dns", "tcp_tls", "routing", "l7"] {
        assert!(j[k]["verdict"].is_string(), "{k}: {j}");
    }
    assert_eq!(j["tcp_tls"]["verdict"], "suspect");
    assert_eq!(j["routing"]["verdict"], "no-signal");
    let _: SocketAddr = j["tcp_tls"]["destinations"][0].as_str().unwrap().parse().unwrap();
}

#[test]
fn search_list_nxdomains_are_context_not_errors_and_the_rest_still_are() {
    let cfg = Config::default();
    // 6 of 8 responses NXDOMAIN, every one a search-list expansion of a name that resolved.
    let k = [(kc::QUERIES, 8), (kc::RESPONSES, 8), (kc::NXDOMAIN, 6), (kc::NOERROR, 2)];
    let v = dns_with(&k, &[(rc::SEARCH_NXDOMAIN, 6)], LatencySummary::default(), 0).dns(&cfg);
    assert_eq!(v.verdict, State::Healthy);
    assert_eq!(
        v.note.as_deref(),
        Some("DNS: 6 NXDOMAIN from 10.0.0.2:53 in the last 10 s were search-list expansions of names that then resolved (not counted as errors)")
    );
    // One more NXDOMAIN that nothing explained is an error again, and only it is named.
    let k = [(kc::QUERIES, 9), (kc::RESPONSES, 9), (kc::NXDOMAIN, 7), (kc::NOERROR, 2)];
    let v = dns_with(&k, &[(rc::SEARCH_NXDOMAIN, 6)], LatencySummary::default(), 0).dns(&cfg);
    assert_eq!(fired(&v), ["dns.error_rcodes"]);
    assert!(v.evidence[0].starts_with("DNS: 1/9 responses from 10.0.0.2:53 were errors (1 NXDOMAIN)"), "{:?}", v.evidence);
    // NXDOMAINs still within their grace are not judged yet.
    let mut c = dns_with(&k, &[(rc::SEARCH_NXDOMAIN, 6)], LatencySummary::default(), 0);
    c.resolvers[0].nxdomain_in_grace = 1;
    assert_eq!(c.dns(&cfg).verdict, State::Healthy);
}

/// The kernel counts an NXDOMAIN at its reading, userspace when it reads the event: a
/// lookup's expansions read just after a reading are excused in one interval and counted by
/// the kernel in the next, and when the window's tail passes the excuse first the kernel's
/// window has 6 more than were excused. What userspace read is judged, unless events were
/// lost: then only the kernel has them all.
#[test]
fn search_list_nxdomains_counted_by_the_kernel_an_interval_late_are_not_errors() {
    let cfg = Config::default();
    let k = [(kc::QUERIES, 56), (kc::RESPONSES, 56), (kc::NXDOMAIN, 42), (kc::NOERROR, 14)];
    let read = [(rc::NXDOMAIN_SEEN, 36), (rc::SEARCH_NXDOMAIN, 36)];
    assert_eq!(dns_with(&k, &read, LatencySummary::default(), 0).dns(&cfg).verdict, State::Healthy);
    // NXDOMAINs that were read and that nothing explains are still errors.
    let unexplained = [(rc::NXDOMAIN_SEEN, 42), (rc::SEARCH_NXDOMAIN, 36)];
    let v = dns_with(&k, &unexplained, LatencySummary::default(), 0).dns(&cfg);
    assert_eq!(fired(&v), ["dns.error_rcodes"]);
    assert!(v.evidence[0].starts_with("DNS: 6/56 responses from 10.0.0.2:53 were errors (6 NXDOMAIN)"), "{:?}", v.evidence);
    // Events lost: the NXDOMAINs userspace never read are counted from the kernel's count,
    // as many as were lost.
    let mut c = dns_with(&k, &[(rc::NXDOMAIN_SEEN, 0)], LatencySummary::default(), 0);
    assert_eq!(c.dns(&cfg).verdict, State::Healthy, "nothing read, nothing lost: nothing to judge");
    c.dns_events_lost = 100;
    let v = c.dns(&cfg);
    assert_eq!(fired(&v), ["dns.error_rcodes"]);
    assert!(v.evidence[0].starts_with("DNS: 42/56 responses from 10.0.0.2:53 were errors (42 NXDOMAIN)"), "{:?}", v.evidence);
    // Two lost while a lookup's expansions were counted an interval apart: two may be
    // errors, not six.
    let mut c = dns_with(&k, &read, LatencySummary::default(), 0);
    c.dns_events_lost = 2;
    let v = c.dns(&cfg);
    assert_eq!(v.verdict, State::Healthy, "2/56 is under the error share: {:?}", v.evidence);
    assert_eq!((nxdomains_counted(36, 42, 2), nxdomains_counted(36, 42, 9), nxdomains_counted(42, 36, 9)), (38, 42, 42));
}
