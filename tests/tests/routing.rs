//! Layer 3 on real traffic: ICMP errors from the path, attributed to the destination of the
//! packet they quote; loss, RTT steps and path changes through router namespaces; connects
//! with no route; drops on this host.

use std::time::{Duration, Instant};

use observer_tests::{Netns, Observer, Pair, Proc, Report, Routed, require_root};
use serde_json::Value;

fn icmp<'a>(r: &'a Report, dest: &str) -> Option<&'a Value> {
    r.0["icmp"]["destinations"].as_array()?.iter().find(|d| d["dest"] == dest)
}

fn reject(pair: &Pair, rule: &str) {
    pair.server.run(&format!(
        "nft add table inet obs && nft add chain inet obs in '{{ type filter hook input priority 0; }}' && nft add rule inet obs in {rule}"
    ));
}

#[test]
fn icmp_host_unreachable_for_syns_is_routing_evidence_explained_by_the_failing_connects() {
    require_root();
    let pair = Pair::new("rt-host");
    reject(&pair, "tcp dport 84 reject with icmp type host-unreachable");
    let dest = format!("{}:84", pair.server_ip());
    let obs = Observer::start(&pair.client, &[]);
    for _ in 0..3 {
        let (ok, _) = pair.client.try_run(&format!("curl -s --max-time 3 http://{dest}/"));
        assert!(!ok);
    }
    let r = obs
        .wait_for(Duration::from_secs(5), |r| icmp(r, &dest).is_some_and(|d| d["total"]["host_unreachable"] == 3))
        .unwrap_or_else(|| panic!("three host unreachables never showed: {:#}", obs.reports().last().map(|r| r.0["icmp"].clone()).unwrap_or_default()));
    let d = icmp(&r, &dest).unwrap();
    assert_eq!(d["reporters"][0], pair.server_ip().as_str(), "{d:#}");
    let routing = &r.0["verdicts"]["routing"];
    assert_eq!(routing["verdict"], "suspect", "{routing:#}");
    assert!(routing["evidence"].to_string().contains(&format!("ICMP 3 host unreachable for {dest}")), "{routing:#}");
    // The connects to the same destination fail first in the triage order.
    assert_eq!(r.0["cause"]["layer"], "tcp_tls");
    assert_eq!(routing["consequence_of"], "tcp_tls", "{routing:#}");
    obs.stop();
}

#[test]
fn a_firewall_that_rejects_udp_makes_routing_the_cause() {
    require_root();
    let pair = Pair::new("rt-udp");
    reject(&pair, "udp dport 9999 reject with icmp type admin-prohibited");
    let dest = format!("{}:9999", pair.server_ip());
    let obs = Observer::start(&pair.client, &[]);
    for _ in 0..2 {
        pair.client.run(&format!("echo probe > /dev/udp/{}/9999; sleep 0.2", pair.server_ip()));
    }
    let r = obs
        .wait_for(Duration::from_secs(5), |r| r.0["verdicts"]["routing"]["verdict"] == "suspect")
        .unwrap_or_else(|| panic!("routing never turned suspect: {:#}", obs.reports().last().map(|r| r.0["icmp"].clone()).unwrap_or_default()));
    assert_eq!(icmp(&r, &dest).unwrap()["total"]["admin_prohibited"], 2);
    assert_eq!(r.0["cause"]["layer"], "routing", "nothing earlier fails: {:#}", r.0["verdicts"]);
    assert!(r.0["verdicts"]["routing"]["rules"].to_string().contains("routing.icmp_unreachable"));
    obs.stop();
}

/// The `routing` section's entry for `dest` (IP:port).
fn route<'a>(r: &'a Report, dest: &str) -> Option<&'a Value> {
    r.0["routing"]["destinations"].as_array()?.iter().find(|d| d["dest"] == dest)
}

fn rules(r: &Report) -> String {
    r.0["verdicts"]["routing"]["rules"].to_string()
}

/// The last report's routing section and verdict, for a failure message.
fn last_routing(obs: &Observer) -> String {
    obs.reports().last().map(|r| format!("{:#}\n{:#}", r.0["routing"], r.0["verdicts"])).unwrap_or_default()
}

fn iperf_server(ns: &Netns, ip: &str) -> Proc {
    let p = ns.spawn(&format!("iperf3 -s -B {ip} -p 5201"));
    observer_tests::peers::wait_listening(ns, &format!("{ip}:5201"));
    p
}

/// Data segments and retransmits to `dest` since start, from the report.
fn loss(r: &Report, dest: &str) -> (u64, u64) {
    let d = route(r, dest).unwrap_or_else(|| panic!("{dest} not in {:#}", r.0["routing"]));
    (d["total"]["segments"].as_u64().unwrap(), d["total"]["retransmitted"].as_u64().unwrap())
}

/// Random loss (5 % of the data segments, SYNs spared so that the connects stay clean) on
/// the router, for one server of two behind it. Lost GSO packets make the retransmits come in
/// bursts of tens of segments; at 3 % a Poisson model of the bursts put 0.3 % of runs past
/// the bound below, at 5 % fewer than 1 in 100,000 (see `loss_on_a_busy_host_is_routing`).
#[test]
fn random_loss_on_the_router_is_routing_for_that_destination_only() {
    require_root();
    let net = Routed::new("rt-loss");
    let (lossy, clean) = (net.server_ip(), net.add_server_ip(3));
    let _s1 = iperf_server(&net.server, &lossy);
    let _s2 = iperf_server(&net.server, &clean);
    let obs = Observer::start(&net.client, &[]);
    let mut a = net.client.spawn(&format!("iperf3 -c {lossy} -t 6 -b 200M"));
    let mut b = net.client.spawn(&format!("iperf3 -c {clean} -t 6 -b 200M"));
    let (l, c) = (format!("{lossy}:5201"), format!("{clean}:5201"));
    // A second of clean traffic first: nothing to say about it.
    obs.wait_for(Duration::from_secs(3), |r| route(r, &l).is_some_and(|d| d["window"]["segments"].as_u64().unwrap_or(0) > 500))
        .unwrap_or_else(|| panic!("no segments sampled: {}", last_routing(&obs)));
    std::thread::sleep(Duration::from_millis(500));
    assert_ne!(obs.reports().last().unwrap().0["verdicts"]["routing"]["verdict"], "suspect", "{}", last_routing(&obs));
    net.router_rule(&format!("ip daddr {lossy} tcp flags != syn numgen random mod 100 lt 5 drop"));
    let started = Instant::now();
    let r = obs
        .wait_for(Duration::from_secs(5), |r| rules(r).contains("routing.retransmits"))
        .unwrap_or_else(|| panic!("no loss verdict: {}", last_routing(&obs)));
    let took = started.elapsed();
    eprintln!("routing named {took:?} after the loss started");
    for rep in obs.reports().iter().rev().take(8).rev() {
        if let Some(d) = route(rep, &l) {
            eprintln!(
                "  {} window {}/{} recent {}/{} in {} intervals",
                rep.0["ts"], d["window"]["retransmitted"], d["window"]["segments"], d["recent_retransmitted"], d["recent_segments"], d["recent_loss_intervals"]
            );
        }
    }
    // Named within 2 s of the loss starting, give or take one report (0.5 s). At 200 Mbit/s;
    // an application-limited 20 Mbit/s stream retransmits late under 3 % loss (RTO backoff
    // with a small window), and was named 1.9 to 4.0 s after.
    assert!(took <= Duration::from_millis(2500), "routing named after {took:?}");
    let routing = &r.0["verdicts"]["routing"];
    assert_eq!(r.0["cause"]["layer"], "routing", "{:#}", r.0["verdicts"]);
    let evidence = routing["evidence"].to_string();
    assert!(evidence.contains(&format!("segments to {l} retransmitted")) && evidence.contains("one destination"), "{evidence}");
    assert_eq!(r.0["routing"]["scope"], "one destination");
    assert!(!evidence.contains(&c), "the clean server is not blamed: {evidence}");
    let _ = (a.child.wait(), b.child.wait());
    std::thread::sleep(Duration::from_millis(1200));
    let r = obs.stop();
    let ((ls, lr), (cs, cr)) = (loss(&r, &l), loss(&r, &c));
    let (lossy_ratio, clean_ratio) = (lr as f64 / ls as f64, cr as f64 / cs as f64);
    // Over the whole run: the first second was clean.
    eprintln!("lossy: {lr} of {ls} retransmitted ({:.2} %); clean: {cr} of {cs}", lossy_ratio * 100.0);
    assert!(ls > 2000 && cs > 2000, "both streams ran: {ls} and {cs} segments");
    assert!((0.02..=0.12).contains(&lossy_ratio), "5 % dropped gives {lossy_ratio}");
    assert!(clean_ratio < 0.005, "the clean server: {clean_ratio}");
    let d = route(&r, &l).unwrap();
    let kinds = ["rto", "fast", "probe"].iter().map(|k| d["total"][k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(kinds, lr, "every retransmit has a kind: {d:#}");
    assert!(d["rtt"]["count"].as_u64().unwrap() > 0 && d["iface"] == "eth0", "{d:#}");
}

#[test]
fn icmp_host_unreachable_from_a_router_is_attributed_to_the_destination_it_quotes() {
    require_root();
    let net = Routed::new("rt-unr");
    let server = net.server_ip();
    net.router_rule(&format!("ip daddr {server} tcp dport 84 reject with icmp type host-unreachable"));
    let dest = format!("{server}:84");
    let obs = Observer::start(&net.client, &[]);
    for _ in 0..3 {
        assert!(!net.client.try_run(&format!("curl -s --max-time 3 http://{dest}/")).0);
    }
    let r = obs
        .wait_for(Duration::from_secs(5), |r| route(r, &dest).is_some_and(|d| d["total"]["icmp_unreachable"] == 3))
        .unwrap_or_else(|| panic!("no unreachables for {dest}: {}", last_routing(&obs)));
    let d = icmp(&r, &dest).unwrap();
    assert_eq!(d["reporters"][0], net.router_ip().as_str(), "sent by the router: {d:#}");
    assert_eq!(r.0["routing"]["scope"], "one destination");
    assert!(rules(&r).contains("routing.icmp_unreachable"));
    // The connects fail first in the triage order: TCP stays the cause.
    assert_eq!(r.0["cause"]["layer"], "tcp_tls");
    obs.stop();
}

#[test]
fn an_rtt_step_for_one_destination_is_a_jump_against_its_own_baseline() {
    require_root();
    let net = Routed::new("rt-rtt");
    let (slow, steady) = (net.server_ip(), net.add_server_ip(3));
    let _s1 = iperf_server(&net.server, &slow);
    let _s2 = iperf_server(&net.server, &steady);
    let _delay = net.add_delay(100);
    // A 2 s window: the baseline is what came before it.
    let obs = Observer::start(&net.client, &["--window", "2"]);
    let _a = net.client.spawn(&format!("iperf3 -c {slow} -t 12 -b 2M"));
    let _b = net.client.spawn(&format!("iperf3 -c {steady} -t 12 -b 2M"));
    let (sl, st) = (format!("{slow}:5201"), format!("{steady}:5201"));
    obs.wait_for(Duration::from_secs(8), |r| route(r, &sl).is_some_and(|d| !d["rtt_baseline_us"].is_null()))
        .unwrap_or_else(|| panic!("no baseline: {}", last_routing(&obs)));
    assert!(!rules(obs.reports().last().unwrap()).contains("rtt_jump"), "{}", last_routing(&obs));
    net.delay_on(&slow);
    // The rule may fire while the kernel's smoothed RTT is still climbing to the 100 ms step
    // (a CI run read a p95 of 89.4 ms in the first report that had the jump): the figures
    // below are read from a report that has both.
    let stepped = |r: &Report| route(r, &sl).is_some_and(|d| d["rtt"]["p95"].as_u64() >= Some(90_000));
    let r = obs
        .wait_for(Duration::from_secs(5), |r| rules(r).contains("routing.rtt_jump") && stepped(r))
        .unwrap_or_else(|| panic!("no RTT jump with a p95 of 90 ms or more: {}", last_routing(&obs)));
    let d = route(&r, &sl).unwrap();
    let (p95, base) = (d["rtt"]["p95"].as_u64().unwrap(), d["rtt_baseline_us"].as_u64().unwrap());
    eprintln!("RTT p95 {p95} µs against a baseline of {base} µs");
    assert!(p95 >= 90_000 && base < 20_000, "{d:#}");
    let evidence = r.0["verdicts"]["routing"]["evidence"].to_string();
    assert!(evidence.contains(&format!("RTT to {sl} p95")) && evidence.contains("one destination"), "{evidence}");
    assert!(!evidence.contains(&st), "the steady server is not blamed: {evidence}");
    let steady_why = route(&r, &st).map(|d| d["why"].to_string()).unwrap_or_default();
    assert!(!steady_why.contains("rtt"), "{steady_why}");
    obs.stop();
}

#[test]
fn a_route_through_a_second_router_is_a_path_change_of_one_hop() {
    require_root();
    let net = Routed::new("rt-path");
    let _r2 = net.add_second_path();
    let listen = format!("{}:8085", net.server_ip());
    let _server = net.server.spawn(&format!("{} tcp-hold {listen}", observer_tests::peers::peer_bin().display()));
    observer_tests::peers::wait_listening(&net.server, &listen);
    let obs = Observer::start(&net.client, &[]);
    let connect = || net.client.run(&format!("exec 3<>/dev/tcp/{}/8085; exec 3>&-", net.server_ip()));
    for _ in 0..3 {
        connect();
    }
    let peer = net.server_ip();
    let path = |r: &Report| r.0["icmp"]["paths"].as_array().and_then(|ps| ps.iter().find(|p| p["peer"] == peer.as_str())).cloned();
    let r = obs.wait_for(Duration::from_secs(5), |r| path(r).is_some_and(|p| p["samples_window"] == 3)).expect("three SYN-ACKs sampled");
    assert_eq!(path(&r).unwrap()["hops"], 1, "one router: {:#}", r.0["icmp"]);
    assert_eq!(r.0["verdicts"]["routing"]["verdict"], "healthy", "{:#}", r.0["verdicts"]["routing"]);
    // The server's replies now go through router2 first.
    net.use_second_path();
    connect();
    std::thread::sleep(Duration::from_millis(1200));
    assert_ne!(obs.reports().last().unwrap().0["verdicts"]["routing"]["verdict"], "suspect", "one SYN-ACK is not a path change");
    connect();
    let r = obs
        .wait_for(Duration::from_secs(5), |r| r.0["verdicts"]["routing"]["verdict"] == "suspect")
        .unwrap_or_else(|| panic!("no path change: {:#}", obs.reports().last().map(|r| r.0["icmp"].clone()).unwrap_or_default()));
    let p = path(&r).unwrap();
    assert_eq!((p["hops"].as_u64(), p["last_change"]["before"].as_u64(), p["last_change"]["after"].as_u64()), (Some(2), Some(1), Some(2)));
    let evidence = r.0["verdicts"]["routing"]["evidence"].to_string();
    assert!(evidence.contains(&format!("the path to {peer} changed from 1 to 2 hops")), "{evidence}");
    assert_eq!(r.0["cause"]["layer"], "routing");
    obs.stop();
}

#[test]
fn dns_responses_sample_the_hop_count_to_the_resolver() {
    require_root();
    let net = Routed::new("rt-dnsttl");
    let resolver = net.server_ip();
    let _dns = observer_tests::peers::Dnsmasq::start(&net.server, &resolver, 53, &["--address=/hops.test/10.1.1.1"]);
    let obs = Observer::start(&net.client, &[]);
    for _ in 0..3 {
        observer_tests::peers::dig_status(&net.client, &resolver, 53, "hops.test", "");
    }
    let path = |r: &Report| r.0["icmp"]["paths"].as_array().and_then(|ps| ps.iter().find(|p| p["peer"] == resolver.as_str())).cloned();
    let r = obs
        .wait_for(Duration::from_secs(5), |r| path(r).is_some_and(|p| p["samples_window"] == 3))
        .unwrap_or_else(|| panic!("no samples from the responses: {:#}", obs.reports().last().map(|r| r.0["icmp"].clone()).unwrap_or_default()));
    assert_eq!(path(&r).unwrap()["hops"], 1, "one router between: {:#}", r.0["icmp"]);
    obs.stop();
}

#[test]
fn a_connect_without_a_route_is_counted_with_its_errno_although_no_syn_left() {
    require_root();
    // The pair has no default route: 10.99.x is unreachable from the client.
    let pair = Pair::new("rt-noroute");
    let dest = "10.99.7.1:8080";
    let obs = Observer::start(&pair.client, &[]);
    for _ in 0..3 {
        let (ok, out) = pair.client.try_run(&format!("curl -sS --max-time 2 http://{dest}/"));
        assert!(!ok, "{out}");
    }
    let r = obs
        .wait_for(Duration::from_secs(5), |r| route(r, dest).is_some_and(|d| d["total"]["connect_failed"] == 3))
        .unwrap_or_else(|| panic!("no failed connects: {}", last_routing(&obs)));
    let d = route(&r, dest).unwrap();
    assert_eq!(d["connect_errors"][0][0], "ENETUNREACH", "{d:#}");
    assert!(d["processes"][0].as_str().unwrap().starts_with("curl["), "{d:#}");
    let routing = &r.0["verdicts"]["routing"];
    assert!(rules(&r).contains("routing.no_route"), "{routing:#}");
    assert!(routing["evidence"].to_string().contains(&format!("connect() to {dest} failed 3 times")), "{routing:#}");
    assert!(r.dest(dest).is_none(), "no SYN was sent, so the TCP layer saw no attempt: {:#}", r.0["tcp"]);
    obs.stop();
}

#[test]
fn a_drop_on_this_host_is_local_loss_with_its_reason_not_path_loss() {
    require_root();
    let pair = Pair::new("rt-local");
    let server = pair.server_ip();
    let _s = iperf_server(&pair.server, &server);
    pair.client.run(&format!(
        "nft add table inet obs && nft add chain inet obs out '{{ type filter hook output priority 0; }}' && \
         nft add rule inet obs out ip daddr {server} tcp flags != syn numgen random mod 100 lt 10 drop"
    ));
    let obs = Observer::start(&pair.client, &[]);
    let dest = format!("{server}:5201");
    pair.client.run(&format!("iperf3 -c {server} -t 3 -b 20M >/dev/null"));
    let r = obs
        .wait_for(Duration::from_secs(5), |r| rules(r).contains("routing.local_drops"))
        .unwrap_or_else(|| panic!("no local drops: {}", last_routing(&obs)));
    let d = route(&r, &dest).unwrap();
    assert_eq!(d["drop_reasons"][0][0], "NETFILTER_DROP", "{d:#}");
    // A packet dropped on its way out is sent again as if for the first time: TCP does not
    // count it as a retransmit, and the path is not blamed for it.
    assert!(d["total"]["dropped_here"].as_u64().unwrap() >= 5, "{d:#}");
    assert!(!rules(&r).contains("routing.retransmits"), "the loss is this host's: {:#}", r.0["verdicts"]["routing"]);
    let evidence = r.0["verdicts"]["routing"]["evidence"].to_string();
    assert!(evidence.contains("dropped on this host") && evidence.contains("NETFILTER_DROP") && evidence.contains("not lost on the path"), "{evidence}");
    obs.stop();
}

/// A kernel whose kfree_skb passes no drop reason (before 5.17, as Ubuntu 22.04's 5.15): the
/// raw tracepoint program, which reads the reason argument, cannot attach there, and the
/// classic tracepoint counts the drops, as "unknown". This kernel's format files, with the
/// reason field taken out of kfree_skb's as 5.15 has it, make observer take that path.
#[test]
fn without_a_drop_reason_the_classic_tracepoint_counts_the_drops_as_unknown() {
    require_root();
    let pair = Pair::new("rt-noreason");
    let server = pair.server_ip();
    let dir = observer_tests::peers::TempDir::new("formats");
    for tp in ["sock/inet_sock_set_state", "tcp/tcp_retransmit_skb", "tcp/tcp_receive_reset", "tcp/tcp_send_reset", "tcp/tcp_retransmit_synack", "skb/kfree_skb"] {
        let to = dir.0.join("events").join(tp);
        std::fs::create_dir_all(&to).unwrap();
        let mut text = pair.client.run(&format!("mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing; cat /sys/kernel/tracing/events/{tp}/format"));
        if tp == "skb/kfree_skb" {
            assert!(text.contains("reason;"), "this kernel passes a reason: {text}");
            text = text
                .lines()
                .filter(|l| !l.contains("reason;") && !l.contains("rx_sk;"))
                .map(|l| if l.starts_with("print fmt:") { r#"print fmt: "skbaddr=%p protocol=%u location=%p", REC->skbaddr, REC->protocol, REC->location"# } else { l })
                .collect::<Vec<_>>()
                .join("\n");
        }
        std::fs::write(to.join("format"), text).unwrap();
    }
    pair.client.run(&format!(
        "nft add table inet obs && nft add chain inet obs out '{{ type filter hook output priority 0; }}' && \
         nft add rule inet obs out ip daddr {server} udp dport 9 drop"
    ));
    let obs = Observer::start_with_env(&pair.client, &[], &[("OBSERVER_TRACEFS_FORMATS", dir.0.to_str().unwrap())]);
    let attached = obs.stderr();
    assert!(attached.contains("skb:kfree_skb") && !attached.contains("raw_tp:kfree_skb"), "{attached}");
    for _ in 0..20 {
        // The write fails (EPERM) where nft dropped it.
        let _ = pair.client.try_run(&format!("echo x > /dev/udp/{server}/9"));
    }
    let dest = format!("{server}:9");
    let r = obs
        .wait_for(Duration::from_secs(5), |r| route(r, &dest).is_some_and(|d| d["total"]["dropped_routine"].as_u64() >= Some(20)))
        .unwrap_or_else(|| panic!("20 drops not counted: {}", last_routing(&obs)));
    let d = route(&r, &dest).unwrap();
    assert_eq!(d["drop_reasons"][0][0], "unknown", "{d:#}");
    assert_eq!(d["total"]["dropped_here"], 0, "a drop without its reason is shown, not judged: {d:#}");
    obs.stop();
}

/// A transfer that began before observer started: sock_ops never sees it, and its
/// retransmits are what sample it. Its segments count from observer's start, not its own.
#[test]
fn loss_on_a_connection_older_than_observer_is_seen_from_its_retransmits() {
    require_root();
    let net = Routed::new("rt-old");
    let server = net.server_ip();
    let _s = iperf_server(&net.server, &server);
    let mut transfer = net.client.spawn(&format!("iperf3 -c {server} -t 10 -b 100M"));
    let dest = format!("{server}:5201");
    // Four seconds at 100 Mbit/s (about 35,000 segments) before observer starts.
    std::thread::sleep(Duration::from_secs(4));
    let obs = Observer::start(&net.client, &[]);
    let attached = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    assert!(route(obs.reports().last().unwrap(), &dest).is_none(), "a clean older connection sends nothing: {}", last_routing(&obs));
    net.router_rule(&format!("ip daddr {server} tcp flags != syn numgen random mod 100 lt 5 drop"));
    let started = Instant::now();
    let r = obs
        .wait_for(Duration::from_secs(5), |r| rules(r).contains("routing.retransmits"))
        .unwrap_or_else(|| panic!("no loss verdict for the older connection: {}", last_routing(&obs)));
    eprintln!("routing named {:?} after the loss started", started.elapsed());
    assert!(started.elapsed() <= Duration::from_millis(3000), "named after {:?}", started.elapsed());
    assert!(r.0["verdicts"]["routing"]["evidence"].to_string().contains(&format!("segments to {dest} retransmitted")), "{:#}", r.0["verdicts"]);
    let _ = transfer.child.wait();
    std::thread::sleep(Duration::from_millis(800));
    let r = obs.stop();
    let (segs, retx) = loss(&r, &dest);
    let ratio = retx as f64 / segs as f64;
    let since_start = attached.elapsed().as_secs_f64();
    eprintln!("older connection: {retx} of {segs} retransmitted ({:.2} %) in {since_start:.1} s of observer", ratio * 100.0);
    // Counted from its first retransmit on: at most 100 Mbit/s (8,700 segments a second)
    // over observer's run, none of the 35,000 from before.
    assert!(segs > 2000 && (segs as f64) < 8700.0 * since_start, "{segs} segments in {since_start:.1} s");
    assert!((0.02..=0.12).contains(&ratio), "5 % dropped gives {ratio}");
    let d = route(&r, &dest).unwrap();
    let kinds = ["rto", "fast", "probe"].iter().map(|k| d["total"][k].as_u64().unwrap()).sum::<u64>();
    assert!(kinds <= retx && kinds * 10 >= retx * 9, "nearly every retransmit has a kind: {kinds} of {retx}: {d:#}");
    assert!(d["rtt"]["count"].as_u64().unwrap() > 0, "{d:#}");
}

/// A server on this host whose sockets close with data still queued (Python's http.server
/// closes each connection with the client's last bytes unread): the kernel drops those with
/// QUEUE_PURGE, which is routine, not loss.
#[test]
fn a_local_server_closing_sockets_with_data_queued_is_not_routing() {
    require_root();
    let pair = Pair::new("rt-purge");
    let local = pair.client_ip();
    let _server = pair.client.spawn(&format!("python3 -m http.server 8765 --bind {local}"));
    observer_tests::peers::wait_listening(&pair.client, &format!("{local}:8765"));
    let obs = Observer::start(&pair.client, &[]);
    for _ in 0..30 {
        pair.server.run(&format!("curl -s -o /dev/null http://{local}:8765/"));
    }
    std::thread::sleep(Duration::from_millis(1200));
    let all = obs.reports();
    let r = obs.stop();
    assert!(r.0["routing"]["routine_drops"].as_u64().unwrap_or(0) >= 10, "the purged queues are counted: {:#}", r.0["routing"]);
    for rep in all.iter().chain(std::iter::once(&r)) {
        assert_ne!(rep.0["verdicts"]["routing"]["verdict"], "suspect", "{:#}", rep.0["verdicts"]["routing"]);
    }
}
