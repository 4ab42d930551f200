//! Layer 3 on real traffic, as far as observer sees it today: ICMP errors from the path,
//! attributed to the destination of the packet they quote. Loss, RTT and path changes are
//! not collected yet (the routing verdict's note says so).

use std::time::Duration;

use observer_tests::{Observer, Pair, Report, require_root};
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
    assert!(routing["note"].to_string().contains("loss or RTT"), "what it does not cover: {routing:#}");
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

#[test]
fn a_change_of_the_hop_count_in_syn_acks_is_a_path_change() {
    require_root();
    let pair = Pair::new("rt-path");
    let listen = format!("{}:8085", pair.server_ip());
    let _server = pair.server.spawn(&format!("{} tcp-hold {listen}", observer_tests::peers::peer_bin().display()));
    observer_tests::peers::wait_listening(&pair.server, &listen);
    let obs = Observer::start(&pair.client, &[]);
    let connect = || pair.client.run(&format!("exec 3<>/dev/tcp/{}/8085; exec 3>&-", pair.server_ip()));
    for _ in 0..3 {
        connect();
    }
    let peer = pair.server_ip();
    let path = |r: &Report| r.0["icmp"]["paths"].as_array().and_then(|ps| ps.iter().find(|p| p["peer"] == peer.as_str())).cloned();
    let r = obs.wait_for(Duration::from_secs(5), |r| path(r).is_some_and(|p| p["samples_window"] == 3)).expect("three SYN-ACKs sampled");
    assert_eq!(path(&r).unwrap()["hops"], 0, "a directly connected server: {:#}", r.0["icmp"]);
    assert_eq!(r.0["verdicts"]["routing"]["verdict"], "healthy", "{:#}", r.0["verdicts"]["routing"]);
    // The server's SYN-ACKs now start at TTL 60 and look 4 hops further away: what a route
    // through four more routers looks like from here. (A real second route needs router
    // namespaces; the inference is the same.)
    pair.server.run("sysctl -qw net.ipv4.ip_default_ttl=60");
    // One SYN-ACK is not enough: the second one confirms the change.
    connect();
    std::thread::sleep(Duration::from_millis(1200));
    assert_ne!(obs.reports().last().unwrap().0["verdicts"]["routing"]["verdict"], "suspect", "one SYN-ACK is not a path change");
    connect();
    let r = obs
        .wait_for(Duration::from_secs(5), |r| r.0["verdicts"]["routing"]["verdict"] == "suspect")
        .unwrap_or_else(|| panic!("no path change: {:#}", obs.reports().last().map(|r| r.0["icmp"].clone()).unwrap_or_default()));
    let p = path(&r).unwrap();
    assert_eq!((p["hops"].as_u64(), p["last_change"]["before"].as_u64(), p["last_change"]["after"].as_u64()), (Some(4), Some(0), Some(4)));
    let evidence = r.0["verdicts"]["routing"]["evidence"].to_string();
    assert!(evidence.contains(&format!("the path to {peer} changed from 0 to 4 hops")), "{evidence}");
    assert_eq!(r.0["cause"]["layer"], "routing");
    obs.stop();
}
