//! The packet path on real topologies: a container behind a bridge asking a DNAT'd service
//! address, classic TC after a SIGKILL, inline VLAN tags, IPv6 extension headers, and an
//! interface without an Ethernet header, and a CNI's program already on TC.

use std::time::Duration;

use observer_tests::{
    Netns, Observer, Pair,
    peers::{self, Dnsmasq, dig_status},
    require_root, sh,
};

fn flood(ns: &Netns, dest: &str, mode: &str, qps: u64, secs: u64) -> u64 {
    let out = ns.run(&format!("{} {mode} {dest} {qps} {secs}", peers::peer_bin().display()));
    out.split_whitespace().next().and_then(|s| s.parse().ok()).expect("sent count")
}

/// A Kubernetes-like node: the pod's veth on a bridge, a service address DNAT'd to a
/// resolver in another namespace, and masquerade on the way out. observer runs on the node.
struct Node {
    node: Netns,
    pod: Netns,
    resolver_ns: Netns,
    /// The service address the pod asks, and the resolver that really answers.
    service: String,
    resolver: String,
    _dnsmasq: Dnsmasq,
}

impl Node {
    fn new(tag: &str, net: u32) -> Node {
        let node = Netns::new(&format!("{tag}-node"));
        let pod = Netns::new(&format!("{tag}-pod"));
        let resolver_ns = Netns::new(&format!("{tag}-dns"));
        let (n, p, r) = (&node.name, &pod.name, &resolver_ns.name);
        let id = std::process::id() % 10000;
        sh(&format!(
            "ip -n {n} link add br0 type bridge && ip -n {n} addr add 10.88.{net}.1/24 dev br0 && ip -n {n} link set br0 up && \
             ip link add pv{id}h netns {n} type veth peer name pv{id}p netns {p} && \
             ip -n {n} link set pv{id}h master br0 && ip -n {n} link set pv{id}h up && \
             ip -n {p} link set pv{id}p name eth0 && ip -n {p} addr add 10.88.{net}.2/24 dev eth0 && ip -n {p} link set eth0 up && \
             ip -n {p} route add default via 10.88.{net}.1 && \
             ip link add rv{id}h netns {n} type veth peer name rv{id}r netns {r} && \
             ip -n {n} addr add 10.89.{net}.1/24 dev rv{id}h && ip -n {n} link set rv{id}h up && \
             ip -n {r} link set rv{id}r name eth0 && ip -n {r} addr add 10.89.{net}.2/24 dev eth0 && ip -n {r} link set eth0 up && \
             ip -n {r} route add default via 10.89.{net}.1 && \
             ip netns exec {n} sysctl -qw net.ipv4.ip_forward=1"
        ));
        let service = format!("10.96.{net}.10");
        let resolver = format!("10.89.{net}.2");
        node.run(&format!(
            "nft add table ip kube && \
             nft 'add chain ip kube pre {{ type nat hook prerouting priority -100; }}' && \
             nft 'add chain ip kube post {{ type nat hook postrouting priority 100; }}' && \
             nft add rule ip kube pre ip daddr {service} udp dport 53 dnat to {resolver}:53 && \
             nft add rule ip kube post oifname rv{id}h masquerade"
        ));
        let dnsmasq = Dnsmasq::start(&resolver_ns, &resolver, 53, &["--address=/svc.test/10.1.1.1"]);
        Node { node, pod, resolver_ns, service, resolver, _dnsmasq: dnsmasq }
    }
}

#[test]
fn a_pod_asking_a_dnat_service_address_through_a_bridge_is_counted_once_and_answered() {
    require_root();
    let k = Node::new("k8s", 61);
    // The pod really gets answers through the service address.
    assert_eq!(dig_status(&k.pod, &k.service, 53, "svc.test", ""), "NOERROR");
    let obs = Observer::start(&k.node, &[]);
    for _ in 0..10 {
        assert_eq!(dig_status(&k.pod, &k.service, 53, "svc.test", ""), "NOERROR");
    }
    std::thread::sleep(Duration::from_millis(1200));
    let rep = obs.stop();
    let service = format!("{}:53", k.service);
    let real = format!("{}:53", k.resolver);
    let dns = &rep.0["dns"];
    assert_eq!(rep.resolver_total(&service, "queries"), 10, "each query once, however many hooks: {dns:#}");
    assert_eq!(rep.resolver_total(&service, "responses"), 10, "{dns:#}");
    assert_eq!(rep.resolver_total(&service, "noerror"), 10);
    assert_eq!(rep.resolver_total(&service, "unanswered"), 0, "every query was answered: {dns:#}");
    assert_eq!(rep.resolver(&service).unwrap()["total"]["latency_us"]["count"], 10);
    assert_eq!(rep.resolver(&service).unwrap()["answered_by"], serde_json::json!([real]), "the address behind the NAT");
    assert_eq!(rep.resolver_total(&real, "queries"), 0, "not counted a second time under its real address");
    assert_eq!(rep.resolver_total(&real, "responses"), 0);
    // Each message crossed more than one hook: the other sightings are counted as such.
    let dups: u64 = dns["per_interface"].as_array().unwrap().iter().map(|i| i["total"]["dns_duplicates"].as_u64().unwrap()).sum();
    let counted: u64 = dns["per_interface"].as_array().unwrap().iter().map(|i| i["total"]["dns_messages"].as_u64().unwrap()).sum();
    assert_eq!(counted, 20, "10 queries and 10 responses: {dns:#}");
    assert!(dups >= 20, "{dns:#}");
    assert_eq!(rep.0["verdicts"]["dns"]["verdict"], "healthy", "{:#}", rep.0["verdicts"]);
    assert!(rep.0["cause"].is_null());
    drop(k.resolver_ns);
}

/// observer's filters and clsact qdisc on an interface, as `tc` lists them.
fn tc_state(ns: &Netns) -> (usize, bool) {
    let filters = ["ingress", "egress"]
        .iter()
        .map(|hook| ns.run(&format!("tc filter show dev eth0 {hook}")).lines().filter(|l| l.contains(" observer_")).count())
        .sum();
    let qdisc = ns.run("tc qdisc show dev eth0").contains("clsact");
    (filters, qdisc)
}

#[test]
fn classic_tc_filters_left_by_a_killed_observer_are_replaced_and_a_clean_exit_leaves_nothing() {
    require_root();
    let pair = Pair::new("classic");
    let resolver = format!("{}:53", pair.server_ip());
    let _echo = pair.server.spawn(&format!("{} dns-echo {resolver}", peers::peer_bin().display()));
    peers::wait_udp(&pair.server, 53);
    let run_dir = peers::TempDir::new("run");
    let env = [("OBSERVER_RUN_DIR", run_dir.0.to_str().unwrap())];
    assert_eq!(tc_state(&pair.client), (0, false), "a fresh veth has neither");

    let obs = Observer::start_with_env(&pair.client, &["--tc-attach", "classic", "--interface", "eth0"], &env);
    assert!(obs.stderr().contains("tc(classic):observer on eth0"), "{}", obs.stderr());
    assert_eq!(tc_state(&pair.client), (2, true), "one filter per hook, on a clsact qdisc observer created");
    let sent = flood(&pair.client, &resolver, "dns-flood", 100, 1);
    assert!(obs.wait_for(Duration::from_secs(5), |r| r.resolver_total(&resolver, "responses") == sent).is_some());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(obs.pid() as i32, libc::SIGKILL) };
    drop(obs);
    assert_eq!(tc_state(&pair.client), (2, true), "classic filters outlive a killed process");

    let obs = Observer::start_with_env(&pair.client, &["--tc-attach", "classic", "--interface", "eth0"], &env);
    let stderr = obs.stderr();
    assert_eq!(stderr.matches("replaced a TC filter").count(), 2, "{stderr}");
    assert_eq!(tc_state(&pair.client), (2, true), "replaced, not added beside");
    let sent = flood(&pair.client, &resolver, "dns-flood", 100, 1);
    std::thread::sleep(Duration::from_millis(1200));
    let rep = obs.stop();
    assert_eq!(rep.resolver_total(&resolver, "queries"), sent, "{:#}", rep.0["dns"]);
    assert_eq!(rep.resolver_total(&resolver, "responses"), sent);
    assert_eq!(tc_state(&pair.client), (0, false), "no filter and no qdisc of observer's after a clean exit");
}

#[test]
fn classic_tc_leaves_a_clsact_qdisc_it_did_not_create() {
    require_root();
    let pair = Pair::new("clsown");
    pair.client.run("tc qdisc add dev eth0 clsact");
    let run_dir = peers::TempDir::new("run");
    let env = [("OBSERVER_RUN_DIR", run_dir.0.to_str().unwrap())];
    let obs = Observer::start_with_env(&pair.client, &["--tc-attach", "classic", "--interface", "eth0"], &env);
    assert_eq!(tc_state(&pair.client), (2, true));
    obs.stop();
    assert_eq!(tc_state(&pair.client), (0, true), "someone else's qdisc stays; only observer's filters go");
}

#[test]
fn inline_vlan_tags_are_parsed() {
    require_root();
    let pair = Pair::new("vlan");
    let obs = Observer::start(&pair.client, &["--interface", "eth0"]);
    // Frames written with the tags inline (a VM's or a raw socket's), one and two tags deep.
    let peer = peers::peer_bin();
    pair.client.run(&format!("{} dns-raw-vlan eth0 10.78.1.1 10.78.1.2 1 20", peer.display()));
    pair.client.run(&format!("{} dns-raw-vlan eth0 10.78.2.1 10.78.2.2 2 30", peer.display()));
    let rep = obs.wait_for(Duration::from_secs(5), |r| r.resolver_total("10.78.2.2:53", "queries") == 30);
    let rep = rep.unwrap_or_else(|| panic!("QinQ queries not counted: {:#}", obs.reports().pop().map(|r| r.0).unwrap_or_default()));
    assert_eq!(rep.resolver_total("10.78.1.2:53", "queries"), 20, "{:#}", rep.0["dns"]);
    drop(obs);
}

#[test]
fn ipv6_with_a_hop_by_hop_header_is_parsed() {
    require_root();
    let pair = Pair::new("hbh");
    let resolver = format!("[{}]:53", pair.server_ip6());
    let _echo = pair.server.spawn(&format!("{} dns-echo {resolver}", peers::peer_bin().display()));
    peers::wait_udp(&pair.server, 53);
    let obs = Observer::start(&pair.client, &["--interface", "eth0"]);
    let sent = flood(&pair.client, &resolver, "dns-flood-hbh", 50, 1);
    let rep = obs.wait_for(Duration::from_secs(5), |r| r.resolver_total(&resolver, "responses") == sent);
    let rep = rep.unwrap_or_else(|| panic!("not all counted: {:#}", obs.reports().pop().map(|r| r.0).unwrap_or_default()));
    assert_eq!(rep.resolver_total(&resolver, "queries"), sent, "queries carry the extension header: {:#}", rep.0["dns"]);
    assert_eq!(rep.resolver_total(&resolver, "unanswered"), 0);
}

#[test]
fn an_interface_without_an_ethernet_header_is_parsed_from_l3() {
    require_root();
    let pair = Pair::new("tun");
    // A tun device with nobody reading it: packets routed to it cross its egress hook.
    pair.client.run("ip tuntap add tun0 mode tun && ip addr add 10.80.1.1/24 dev tun0 && ip link set tun0 up");
    let obs = Observer::start(&pair.client, &["--interface", "tun0"]);
    assert!(obs.stderr().contains("observer on tun0"), "{}", obs.stderr());
    let sent = flood(&pair.client, "10.80.1.2:53", "dns-flood", 40, 1);
    let rep = obs.wait_for(Duration::from_secs(5), |r| r.resolver_total("10.80.1.2:53", "queries") == sent);
    assert!(rep.is_some(), "{:#}", obs.reports().pop().map(|r| r.0).unwrap_or_default());
}

/// A CNI's TCX program (Cilium, Calico eBPF) that is already on a hook and drops or redirects
/// packets must not hide them: observer attaches first in the chain. Here the stand-in
/// drops everything, on egress (the queries) or on ingress (the answers).
#[test]
fn a_cni_program_already_on_tc_does_not_hide_packets() {
    require_root();
    for hook in ["egress", "ingress"] {
        let pair = Pair::new(&format!("cni-{hook}"));
        let resolver = format!("{}:53", pair.server_ip());
        let _echo = pair.server.spawn(&format!("{} dns-echo {resolver}", peers::peer_bin().display()));
        peers::wait_udp(&pair.server, 53);
        // ARP would be dropped too, and unresolved packets never reach the device at all.
        // Both ends get permanent neighbour entries.
        for (ns, peer, peer_ip) in [(&pair.client, &pair.server, pair.server_ip()), (&pair.server, &pair.client, pair.client_ip())] {
            let mac = peer.run("cat /sys/class/net/eth0/address");
            ns.run(&format!("ip neigh replace {peer_ip} lladdr {} dev eth0 nud permanent", mac.trim()));
        }
        let _cni = pair.client.spawn(&format!("{} tc-drop eth0 {hook}", peers::peer_bin().display()));
        // The stand-in is in place once the client's queries go unanswered.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !dig_status(&pair.client, &pair.server_ip(), 53, "probe.test", "+timeout=1").is_empty() {
            assert!(std::time::Instant::now() < deadline, "the CNI stand-in did not attach on {hook}");
        }
        let obs = Observer::start(&pair.client, &["--interface", "eth0"]);
        let sent = flood(&pair.client, &resolver, "dns-flood", 40, 1);
        let want = |r: &observer_tests::Report| {
            r.resolver_total(&resolver, "queries") == sent && (hook == "egress" || r.resolver_total(&resolver, "responses") == sent)
        };
        let rep = obs.wait_for(Duration::from_secs(5), want);
        let rep = rep.unwrap_or_else(|| panic!("{hook}: packets hidden by the CNI: {:#}", obs.reports().pop().map(|r| r.0["dns"].clone()).unwrap_or_default()));
        if hook == "egress" {
            // Dropped before the wire: nothing came back.
            assert_eq!(rep.resolver_total(&resolver, "responses"), 0, "{:#}", rep.0["dns"]);
        }
    }
}
