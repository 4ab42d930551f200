//! DNS layer on real traffic: dnsmasq resolvers in the server namespace, dig and getaddrinfo
//! clients in the client namespace, observer beside the clients.

use std::time::Duration;

use observer_tests::{
    Observer, Pair,
    observer::PACKET_PROGRAMS,
    peers::{self, Dnsmasq, ROOT_TRUST_ANCHOR, dig_status},
    require_root,
};

/// A resolver with a local record, an NXDOMAIN zone, and REFUSED for everything else; a
/// second, validating one in front of it answers SERVFAIL.
struct Resolvers {
    main: Dnsmasq,
    validating: Dnsmasq,
    validating_ip: String,
}

fn resolvers(pair: &Pair) -> Resolvers {
    let main = Dnsmasq::start(&pair.server, &pair.server_ip(), 53, &["--address=/healthy.test/10.1.1.1", "--address=/nx.test/"]);
    let vip = pair.add_server_ip(3);
    let validating = Dnsmasq::start(&pair.server, &vip, 53, &[&format!("--server={}", pair.server_ip()), "--dnssec", ROOT_TRUST_ANCHOR]);
    // Each rcode really comes back from the real resolver before observer is asked about it.
    let c = &pair.client;
    assert_eq!(dig_status(c, &pair.server_ip(), 53, "healthy.test", ""), "NOERROR");
    assert_eq!(dig_status(c, &pair.server_ip(), 53, "nx.test", ""), "NXDOMAIN");
    assert_eq!(dig_status(c, &pair.server_ip(), 53, "other.test", ""), "REFUSED");
    assert_eq!(dig_status(c, &vip, 53, "healthy.test", ""), "SERVFAIL");
    Resolvers { main, validating, validating_ip: vip }
}

#[test]
fn rcodes_from_real_resolvers_are_counted_exactly_per_resolver_and_per_name() {
    require_root();
    let pair = Pair::new("dns-rcodes");
    let r = resolvers(&pair);
    pair.client.set_resolver(&pair.server_ip());
    let obs = Observer::start(&pair.client, &[]);
    let c = &pair.client;
    for _ in 0..3 {
        assert_eq!(dig_status(c, &pair.server_ip(), 53, "healthy.test", ""), "NOERROR");
        assert_eq!(dig_status(c, &pair.server_ip(), 53, "nx.test", ""), "NXDOMAIN");
        assert_eq!(dig_status(c, &pair.server_ip(), 53, "other.test", ""), "REFUSED");
        assert_eq!(dig_status(c, &r.validating_ip, 53, "healthy.test", ""), "SERVFAIL");
    }
    // getaddrinfo through glibc, with the namespace's resolv.conf.
    let out = c.run("getent ahostsv4 healthy.test");
    assert!(out.contains("10.1.1.1"), "{out}");
    let rep = obs.stop();
    let main = &r.main.addr;
    assert_eq!(rep.resolver_total(main, "queries"), 10, "{:#}", rep.0["dns"]);
    assert_eq!(rep.resolver_total(main, "responses"), 10);
    assert_eq!(rep.resolver_total(main, "noerror"), 4);
    assert_eq!(rep.resolver_total(main, "nxdomain"), 3);
    assert_eq!(rep.resolver_total(main, "refused"), 3);
    assert_eq!(rep.resolver_total(main, "servfail"), 0);
    assert_eq!(rep.resolver_total(main, "unanswered"), 0);
    assert_eq!(rep.resolver(main).unwrap()["total"]["latency_us"]["count"], 10);
    let v = &r.validating.addr;
    // The validating resolver also asks the main one for DNSSEC records (from the server
    // namespace, not seen here): only what the client sent counts for it.
    assert_eq!(rep.resolver_total(v, "queries"), 3, "{:#}", rep.0["dns"]);
    assert_eq!(rep.resolver_total(v, "servfail"), 3);
    let healthy = rep.name("healthy.test", "A").expect("healthy.test A");
    assert_eq!(healthy["total"]["queries"], 7);
    assert_eq!(healthy["total"]["noerror"], 4);
    assert_eq!(healthy["total"]["servfail"], 3);
    assert_eq!(healthy["answers"], serde_json::json!(["10.1.1.1"]));
    assert_eq!(rep.name("nx.test", "A").unwrap()["total"]["nxdomain"], 3);
    assert_eq!(rep.lost_affecting(PACKET_PROGRAMS), 0, "{:#}", rep.0["lost"]);
}

#[test]
fn a_silent_resolver_leaves_its_queries_unanswered() {
    require_root();
    let pair = Pair::new("dns-silent");
    let _dns = Dnsmasq::start(&pair.server, &pair.server_ip(), 53, &["--address=/healthy.test/10.1.1.1"]);
    pair.server.nft_drop_input("udp dport 53");
    let obs = Observer::start(&pair.client, &["--dns-timeout", "1"]);
    for _ in 0..3 {
        assert_eq!(dig_status(&pair.client, &pair.server_ip(), 53, "healthy.test", ""), "");
    }
    let resolver = format!("{}:53", pair.server_ip());
    let seen = obs.wait_for(Duration::from_secs(5), |r| r.resolver_total(&resolver, "unanswered") == 3);
    let rep = obs.stop();
    assert!(seen.is_some(), "3 unanswered queries expected: {:#}", rep.0["dns"]);
    assert_eq!(rep.resolver_total(&resolver, "queries"), 3);
    assert_eq!(rep.resolver_total(&resolver, "responses"), 0);
    assert_eq!(rep.name("healthy.test", "A").unwrap()["total"]["unanswered"], 3);
}

#[test]
fn two_resolvers_with_disjoint_answers_are_reported_as_diverging() {
    require_root();
    let pair = Pair::new("dns-split");
    let b_ip = pair.add_server_ip(4);
    let a = Dnsmasq::start(&pair.server, &pair.server_ip(), 53, &["--address=/split.test/10.0.0.101", "--address=/same.test/10.0.0.7"]);
    let b = Dnsmasq::start(&pair.server, &b_ip, 53, &["--address=/split.test/10.0.0.102", "--address=/same.test/10.0.0.7"]);
    let obs = Observer::start(&pair.client, &[]);
    for ip in [pair.server_ip(), b_ip.clone()] {
        assert_eq!(dig_status(&pair.client, &ip, 53, "split.test", ""), "NOERROR");
        assert_eq!(dig_status(&pair.client, &ip, 53, "same.test", ""), "NOERROR");
    }
    let rep = obs.stop();
    let d = rep.0["dns"]["divergences"].as_array().expect("divergences");
    assert_eq!(d.len(), 1, "only split.test diverges: {d:?}");
    assert_eq!(d[0]["qname"], "split.test");
    assert_eq!(d[0]["qtype"], "A");
    let shown: Vec<String> = d[0]["answers"].as_array().unwrap().iter().map(|x| format!("{} {}", x["resolver"], x["addresses"])).collect();
    assert_eq!(shown, [format!("\"{}\" [\"10.0.0.101\"]", a.addr), format!("\"{}\" [\"10.0.0.102\"]", b.addr)]);
}

#[test]
fn a_resolver_that_answers_in_400_ms_has_a_p95_of_400_ms_and_the_healthy_one_does_not() {
    require_root();
    let pair = Pair::new("dns-slow");
    let real = Dnsmasq::start(&pair.server, &pair.server_ip(), 53, &["--address=/healthy.test/10.1.1.1"]);
    let slow_ip = pair.add_server_ip(5);
    let _slow = pair.server.spawn(&format!("{} dns-delay {slow_ip}:53 {} 400", peers::peer_bin().display(), real.addr));
    peers::wait_udp(&pair.server, 53);
    let obs = Observer::start(&pair.client, &[]);
    for _ in 0..5 {
        assert_eq!(dig_status(&pair.client, &slow_ip, 53, "healthy.test", ""), "NOERROR");
        assert_eq!(dig_status(&pair.client, &pair.server_ip(), 53, "healthy.test", ""), "NOERROR");
    }
    let rep = obs.stop();
    let slow = &rep.resolver(&format!("{slow_ip}:53")).unwrap()["total"]["latency_us"];
    let fast = &rep.resolver(&real.addr).unwrap()["total"]["latency_us"];
    assert_eq!(slow["count"], 5, "{slow}");
    assert!(slow["p95"].as_u64().unwrap() >= 400_000, "{slow}");
    assert!(fast["p95"].as_u64().unwrap() < 100_000, "{fast}");
}

#[test]
fn a_burst_of_malformed_messages_is_counted_and_observer_stays_up() {
    require_root();
    let pair = Pair::new("dns-junk");
    // Nothing listens there: no resolver answers the junk, so every message is ours to count.
    let target = format!("{}:53", pair.server_ip());
    let obs = Observer::start(&pair.client, &[]);
    pair.client.run(&format!("{} dns-junk {target} 200", peers::peer_bin().display()));
    let seen = obs.wait_for(Duration::from_secs(5), |r| r.resolver_total(&target, "malformed") == 200);
    let rep = obs.stop();
    assert!(seen.is_some(), "200 malformed expected: {:#}", rep.0["dns"]);
    assert_eq!(rep.resolver_total(&target, "malformed"), 200);
    // The kernel counts the well-formed headers as queries; none of them parse into a name.
    assert_eq!(rep.resolver_total(&target, "queries"), 200);
    assert!(rep.0["dns"]["names"].as_array().unwrap().is_empty());
}

#[test]
fn dns_over_tcp_is_counted() {
    require_root();
    let pair = Pair::new("dns-tcp");
    let dns = Dnsmasq::start(&pair.server, &pair.server_ip(), 53, &["--address=/healthy.test/10.1.1.1"]);
    let obs = Observer::start(&pair.client, &[]);
    assert_eq!(dig_status(&pair.client, &pair.server_ip(), 53, "healthy.test", "+tcp"), "NOERROR");
    let rep = obs.stop();
    assert!(rep.resolver_total(&dns.addr, "tcp_segments") >= 2, "{:#}", rep.0["dns"]);
    assert_eq!(rep.resolver_total(&dns.addr, "queries"), 0, "UDP counters stay UDP");
}

#[test]
fn an_extra_dns_port_and_ipv6_are_watched() {
    require_root();
    let pair = Pair::new("dns-port");
    let dns = Dnsmasq::start(&pair.server, &pair.server_ip6(), 5353, &["--address=/healthy.test/10.1.1.1"]);
    let obs = Observer::start(&pair.client, &["--dns-port", "5353"]);
    assert_eq!(dig_status(&pair.client, &pair.server_ip6(), 5353, "healthy.test", ""), "NOERROR");
    let rep = obs.stop();
    assert_eq!(dns.addr, format!("[{}]:5353", pair.server_ip6()));
    assert_eq!(rep.resolver_total(&dns.addr, "noerror"), 1, "{:#}", rep.0["dns"]);
}

#[test]
fn an_interface_that_comes_up_later_is_watched_too() {
    require_root();
    let pair = Pair::new("dns-late");
    let obs = Observer::start(&pair.client, &[]);
    let net = pair.net;
    // A second link, created after observer attached.
    let (c, s) = (&pair.client.name, &pair.server.name);
    observer_tests::sh(&format!(
        "ip link add late{net} netns {c} type veth peer name latep{net} netns {s} && \
         ip -n {c} addr add 10.78.{net}.1/24 dev late{net} && ip -n {s} addr add 10.78.{net}.2/24 dev latep{net} && \
         ip -n {c} link set late{net} up && ip -n {s} link set latep{net} up"
    ));
    let _dns = Dnsmasq::start(&pair.server, &format!("10.78.{net}.2"), 53, &["--address=/healthy.test/10.1.1.1"]);
    let iface = format!("late{net}");
    let attached = obs.wait_for(Duration::from_secs(5), |r| {
        r.0["dns"]["interfaces"].as_array().is_some_and(|a| a.iter().any(|i| i == iface.as_str()))
    });
    assert!(attached.is_some(), "{iface} must be picked up");
    assert_eq!(dig_status(&pair.client, &format!("10.78.{net}.2"), 53, "healthy.test", ""), "NOERROR");
    let rep = obs.stop();
    assert_eq!(rep.resolver_total(&format!("10.78.{net}.2:53"), "noerror"), 1, "{:#}", rep.0["dns"]);
}

#[test]
fn the_interface_flag_restricts_what_is_watched() {
    require_root();
    let pair = Pair::new("dns-only-lo");
    let dns = Dnsmasq::start(&pair.server, &pair.server_ip(), 53, &["--address=/healthy.test/10.1.1.1"]);
    let obs = Observer::start(&pair.client, &["--interface", "lo"]);
    assert_eq!(dig_status(&pair.client, &pair.server_ip(), 53, "healthy.test", ""), "NOERROR");
    let rep = obs.stop();
    assert_eq!(rep.0["dns"]["interfaces"], serde_json::json!(["lo"]));
    assert!(rep.resolver(&dns.addr).is_none(), "eth0 is not watched: {:#}", rep.0["dns"]);
}

#[test]
fn kernel_counts_stay_exact_when_the_ring_buffer_overflows() {
    require_root();
    let pair = Pair::new("dns-overflow");
    let target = format!("{}:53", pair.server_ip());
    // A 4 KiB ring holds about seven messages: a burst must overflow it.
    let obs = Observer::start(&pair.client, &["--dns-ringbuf-kib", "4"]);
    let out = pair.client.run(&format!("{} dns-flood {target} 20000 1", peers::peer_bin().display()));
    let sent: u64 = out.split_whitespace().next().and_then(|s| s.parse().ok()).expect("sent count");
    let failed: u64 = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("failed count");
    assert_eq!(failed, 0, "every send went out: {out}");
    let seen = obs.wait_for(Duration::from_secs(5), |r| r.resolver_total(&target, "queries") == sent);
    let rep = obs.stop();
    assert!(seen.is_some(), "kernel must count all {sent} queries: {:#}", rep.0["dns"]["resolvers"]);
    let dropped = rep.0["lost"]["dns_ringbuf_full"].as_u64().unwrap();
    assert!(dropped > 0, "the tiny ring must have overflowed: {:#}", rep.0["lost"]);
    assert_eq!(rep.resolver_total(&target, "queries"), sent);
    // Every message either reached userspace or was counted as lost.
    let parsed = rep.name("bench.test", "A").unwrap()["total"]["queries"].as_u64().unwrap();
    assert_eq!(parsed + dropped, sent, "parsed {parsed} + dropped {dropped} != sent {sent}");
}

#[test]
fn search_list_nxdomains_of_a_healthy_pod_are_context_and_a_name_that_never_resolves_is_an_error() {
    require_root();
    let pair = Pair::new("dns-search");
    // Names under cluster.local do not exist (NXDOMAIN); healthy.test does.
    // healthy.test has A and AAAA (a name with only A would get REFUSED for AAAA here).
    let r = Dnsmasq::start(
        &pair.server,
        &pair.server_ip(),
        53,
        &["--address=/healthy.test/10.1.1.1", "--address=/healthy.test/fd01::1", "--address=/cluster.local/", "--address=/nx.test/"],
    );
    pair.client.set_resolver_with_search(&pair.server_ip(), "ns.svc.cluster.local svc.cluster.local cluster.local", 5);
    let obs = Observer::start(&pair.client, &[]);
    for _ in 0..5 {
        let out = pair.client.run("getent ahosts healthy.test");
        assert!(out.contains("10.1.1.1"), "{out}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let reports = obs.reports();
    let last = reports.last().expect("a report");
    let resolver = last.resolver(&r.addr).expect("the resolver").clone();
    let nx = resolver["total"]["nxdomain"].as_u64().unwrap();
    assert!(nx >= 30, "3 search domains x (A + AAAA) x 5 lookups: {:#}", last.0["dns"]);
    assert_eq!(resolver["total"]["search_nxdomain"].as_u64().unwrap(), nx, "each one explained: {resolver:#}");
    assert!(
        reports.iter().all(|r| r.0["verdicts"]["dns"]["verdict"] != "suspect"),
        "a healthy pod's search list never makes DNS suspect, at any interval: {:#}",
        reports.iter().find(|r| r.0["verdicts"]["dns"]["verdict"] == "suspect").map(|r| r.0["verdicts"]["dns"].clone()).unwrap_or_default()
    );
    assert!(last.0["verdicts"]["dns"]["note"].as_str().unwrap_or("").contains("search-list expansions"), "{:#}", last.0["verdicts"]);

    // A name that does not resolve with any search domain, nor as written: an error.
    let (ok, _) = pair.client.try_run("getent ahosts gone.nx.test");
    assert!(!ok);
    let suspect = obs.wait_for(Duration::from_secs(3), |r| r.0["verdicts"]["dns"]["rules"].as_array().is_some_and(|a| a.iter().any(|x| x == "dns.error_rcodes")));
    let rep = suspect.unwrap_or_else(|| panic!("a real NXDOMAIN was not reported: {:#}", obs.reports().pop().unwrap().0["verdicts"]));
    assert!(rep.0["verdicts"]["dns"]["evidence"][0].as_str().unwrap().contains("NXDOMAIN"), "{:#}", rep.0["verdicts"]);
    drop(obs);
}

#[test]
fn queries_and_answers_written_by_different_cpus_are_all_matched() {
    require_root();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: one CPU, so one DNS ring is written");
        return;
    }
    let pair = Pair::new("dns-cpus");
    let target = format!("{}:53", pair.server_ip());
    let peer = peers::peer_bin();
    // The client sends on CPU 0 and the resolver answers on CPU 1: each query goes into the
    // even CPUs' ring and each answer into the odd ones', and userspace reads one ring after
    // the other while both are written.
    let _echo = pair.server.spawn(&format!("taskset -c 1 {} dns-echo {target}", peer.display()));
    peers::wait_udp(&pair.server, 53);
    let obs = Observer::start(&pair.client, &["--interface", "eth0"]);
    let out = pair.client.run(&format!("taskset -c 0 {} dns-flood {target} 50000 2", peer.display()));
    let sent: u64 = out.split_whitespace().next().and_then(|s| s.parse().ok()).expect("sent count");
    let seen = obs.wait_for(Duration::from_secs(5), |r| r.resolver_total(&target, "queries") == sent);
    // The last answers are in flight for a moment after the last query.
    std::thread::sleep(Duration::from_secs(1));
    let rep = obs.stop();
    assert!(seen.is_some(), "every query counted ({sent}): {:#}", rep.0["dns"]["resolvers"]);
    assert_eq!(rep.0["lost"]["dns_ringbuf_full"], 0, "nothing lost, so every answer's query was read");
    let r = rep.resolver(&target).expect("the resolver");
    let answered = r["total"]["responses"].as_u64().expect("responses");
    assert!(answered > sent * 9 / 10, "the resolver kept up: {answered} of {sent}");
    // An answer read before its query would be unmatched, and its query later unanswered.
    assert_eq!(r["total"]["unmatched_responses"], 0, "{:#}", r["total"]);
    assert_eq!(r["total"]["latency_us"]["count"], answered, "{:#}", r["total"]);
}
