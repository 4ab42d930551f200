//! The busy host: a client namespace doing what a healthy production host does all day (the
//! `busy` generator, a bulk transfer with a handful of drops a minute, a port scan arriving),
//! against real servers (nginx, dnsmasq, iperf3, the generator's load balancer). Shared by
//! tests/tests/busy_host.rs and the soak benchmark.

use std::thread;

use crate::{
    Pair, Proc,
    peers::{self, Dnsmasq, Nginx},
};

pub fn busy_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("OBSERVER_BUSY_BIN") {
        return p.into();
    }
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/busy")
}

/// The client port of the one query whose answer is dropped. Outside the ephemeral range
/// (32768-60999): a lookup whose socket drew this port would lose its answers and hold the
/// lookup thread for its 5 s timeout, and the resolver would look silent.
pub const UNANSWERED_PORT: u16 = 20999;

pub struct BusyHost {
    pub pair: Pair,
    _nginx: Nginx,
    _dns: Dnsmasq,
    _servers: Vec<Proc>,
}

impl BusyHost {
    pub fn new(tag: &str) -> BusyHost {
        let pair = Pair::new(tag);
        let s = pair.server_ip();
        let nginx = Nginx::start_with(&pair.server, &format!("{s}:80"), "keepalive_timeout 1s;");
        let dns = Dnsmasq::start(&pair.server, &s, 53, &["--host-record=api.example.com,10.1.1.1", "--local=/example.com/", "--address=/cluster.local/"]);
        let low: u16 = pair.client.run("cat /proc/sys/net/ipv4/ip_local_port_range").split_whitespace().next().and_then(|p| p.parse().ok()).expect("the ephemeral port range");
        assert!(UNANSWERED_PORT < low, "the dropped answers' port {UNANSWERED_PORT} is an ephemeral port (from {low}): a lookup could draw it");
        pair.client.set_resolver_with_search(&s, "ns.svc.cluster.local svc.cluster.local cluster.local", 5);
        let lb = pair.server.spawn(&format!("{} lb {s}:7000", busy_bin().display()));
        peers::wait_listening(&pair.server, &format!("{s}:7000"));
        let iperf = pair.server.spawn(&format!("iperf3 -s -B {s} -p 5201"));
        peers::wait_listening(&pair.server, &format!("{s}:5201"));
        // Where the cancelled connects go; a handful of drops per minute on the transfer; the
        // answer to the one rare query dropped on its way out.
        pair.server.nft_drop_input("tcp dport 8099");
        pair.server.nft_drop_input("tcp dport 5201 tcp flags != syn numgen random mod 100000 lt 1");
        pair.server.run(&format!(
            "nft add chain inet obs out '{{ type filter hook output priority 0; }}' && nft add rule inet obs out udp dport {UNANSWERED_PORT} drop"
        ));
        BusyHost { pair, _nginx: nginx, _dns: dns, _servers: vec![lb, iperf] }
    }

    pub fn server(&self) -> String {
        self.pair.server_ip()
    }

    /// Busy traffic for `secs`: the generator (its summary comes back from the thread), the
    /// bulk transfer and the scan.
    pub fn traffic(&self, secs: u64) -> (thread::JoinHandle<String>, Vec<Proc>) {
        let s = self.server();
        let cmd = format!("{} client {secs} api.example.com {s}:80 {s}:7000 {s}:8099 {s}:53", busy_bin().display());
        let name = self.pair.client.name.clone();
        // The namespace goes away with the test: a generator killed then is not a failure.
        let generator = thread::spawn(move || crate::sh_status(&format!("ip netns exec {name} {cmd}")).1);
        let bulk = self.pair.client.spawn(&format!("iperf3 -c {s} -b 100M -t {secs}"));
        let scan = self.pair.server.spawn(&format!("{} scan {} {secs}", busy_bin().display(), self.pair.client_ip()));
        (generator, vec![bulk, scan])
    }
}

