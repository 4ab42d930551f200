//! Network namespaces, veth pairs and processes that die with their guard.

use std::{
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::sh;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("obs-{role}-{}-{n}", std::process::id());
        sh(&format!("ip netns add {name}"));
        let ns = Netns { name };
        ns.run("ip link set lo up");
        ns
    }

    /// The shell prefix that runs a command in this namespace.
    pub fn prefix(&self) -> String {
        format!("ip netns exec {} ", self.name)
    }

    /// Run to completion; panic on failure.
    pub fn run(&self, cmd: &str) -> String {
        sh(&format!("{}bash -c {}", self.prefix(), quote(cmd)))
    }

    /// Run to completion; return (success, stdout+stderr).
    pub fn try_run(&self, cmd: &str) -> (bool, String) {
        crate::sh_status(&format!("{}bash -c {}", self.prefix(), quote(cmd)))
    }

    /// Drop inbound packets that match an nft expression, e.g. `tcp dport 82`.
    pub fn nft_drop_input(&self, expr: &str) {
        self.run(&format!(
            "nft add table inet obs && nft add chain inet obs in '{{ type filter hook input priority 0; }}' && nft add rule inet obs in \"{expr} drop\""
        ));
    }

    /// Start a long-running process in this namespace; it is killed when the guard drops.
    pub fn spawn(&self, cmd: &str) -> Proc {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, "bash", "-c", &format!("exec {cmd}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{cmd}`: {e}"));
        Proc { child, what: cmd.to_owned() }
    }
}

impl Netns {
    /// Point this namespace's resolver (glibc, getaddrinfo) at `ip`: `ip netns exec` bind-mounts
    /// /etc/netns/<name>/resolv.conf over /etc/resolv.conf.
    pub fn set_resolver(&self, ip: &str) {
        self.write_resolv_conf(&format!("nameserver {ip}\noptions timeout:2 attempts:1\n"));
    }

    /// Like a Kubernetes pod: a search list and `ndots`, so that short names are tried with
    /// each search domain first.
    pub fn set_resolver_with_search(&self, ip: &str, search: &str, ndots: u32) {
        self.write_resolv_conf(&format!("nameserver {ip}\nsearch {search}\noptions ndots:{ndots} timeout:2 attempts:1\n"));
    }

    fn write_resolv_conf(&self, text: &str) {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns dir");
        std::fs::write(format!("{dir}/resolv.conf"), text).expect("write resolv.conf");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
        // Kill whatever is left in it, then delete it.
        let _ = Command::new("bash")
            .arg("-c")
            .arg(format!("ip netns pids {0} | xargs -r kill -9; ip netns del {0}", self.name))
            .status();
    }
}

pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two namespaces joined by a veth pair, each end with an IPv4 and an IPv6 address on a
/// subnet no other test uses.
pub struct Pair {
    pub client: Netns,
    pub server: Netns,
    /// Subnet index: addresses are 10.77.<net>.1 (client) and 10.77.<net>.2 (server).
    pub net: u32,
}

impl Pair {
    pub fn new(test: &str) -> Pair {
        let client = Netns::new(&format!("{test}-c"));
        let server = Netns::new(&format!("{test}-s"));
        // Unique per process and per pair; tests in one binary run one at a time.
        let net = (std::process::id() % 200 + NEXT.fetch_add(1, Ordering::Relaxed)) % 250 + 1;
        let (c, s) = (&client.name, &server.name);
        let veth = format!("obv{net}x{}", std::process::id() % 10000);
        sh(&format!(
            "ip link add {veth}c netns {c} type veth peer name {veth}s netns {s} && \
             ip -n {c} link set {veth}c name eth0 && ip -n {s} link set {veth}s name eth0 && \
             ip -n {c} addr add 10.77.{net}.1/24 dev eth0 && ip -n {s} addr add 10.77.{net}.2/24 dev eth0 && \
             ip -n {c} addr add fd77:{net}::1/64 dev eth0 nodad && ip -n {s} addr add fd77:{net}::2/64 dev eth0 nodad && \
             ip -n {c} link set eth0 up && ip -n {s} link set eth0 up"
        ));
        Pair { client, server, net }
    }

    pub fn server_ip(&self) -> String {
        format!("10.77.{}.2", self.net)
    }

    pub fn server_ip6(&self) -> String {
        format!("fd77:{}::2", self.net)
    }

    /// Give the server another IPv4 address, 10.77.<net>.<last>, and return it.
    pub fn add_server_ip(&self, last: u8) -> String {
        let ip = format!("10.77.{}.{last}", self.net);
        self.server.run(&format!("ip addr add {ip}/24 dev eth0"));
        ip
    }

    pub fn client_ip(&self) -> String {
        format!("10.77.{}.1", self.net)
    }
}

/// Join `a` and `b` with a veth pair named `a_if` / `b_if` inside them, with these /24
/// IPv4 addresses.
pub fn link(a: &Netns, a_if: &str, a_ip: &str, b: &Netns, b_if: &str, b_ip: &str) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = format!("obl{n}x{}", std::process::id() % 10000);
    sh(&format!(
        "ip link add {tmp}a netns {an} type veth peer name {tmp}b netns {bn} && \
         ip -n {an} link set {tmp}a name {a_if} && ip -n {bn} link set {tmp}b name {b_if} && \
         ip -n {an} addr add {a_ip}/24 dev {a_if} && ip -n {bn} addr add {b_ip}/24 dev {b_if} && \
         ip -n {an} link set {a_if} up && ip -n {bn} link set {b_if} up",
        an = a.name,
        bn = b.name
    ));
}

/// client ↔ router ↔ server: the client on 10.90.<net>.0/24 (client .1, router .2), the
/// server on 10.91.<net>.0/24 (router .1, server .2). Each end routes through the router.
pub struct Routed {
    pub client: Netns,
    pub router: Netns,
    pub server: Netns,
    pub net: u32,
}

impl Routed {
    pub fn new(test: &str) -> Routed {
        let client = Netns::new(&format!("{test}-c"));
        let router = Netns::new(&format!("{test}-r"));
        let server = Netns::new(&format!("{test}-s"));
        let net = (std::process::id() % 200 + NEXT.fetch_add(1, Ordering::Relaxed)) % 250 + 1;
        link(&client, "eth0", &format!("10.90.{net}.1"), &router, "eth0", &format!("10.90.{net}.2"));
        link(&router, "eth1", &format!("10.91.{net}.1"), &server, "eth0", &format!("10.91.{net}.2"));
        router.run("sysctl -qw net.ipv4.ip_forward=1");
        client.run(&format!("ip route add default via 10.90.{net}.2"));
        server.run(&format!("ip route add default via 10.91.{net}.1"));
        Routed { client, router, server, net }
    }

    pub fn client_ip(&self) -> String {
        format!("10.90.{}.1", self.net)
    }

    /// The router's address on the client's side.
    pub fn router_ip(&self) -> String {
        format!("10.90.{}.2", self.net)
    }

    pub fn server_ip(&self) -> String {
        format!("10.91.{}.2", self.net)
    }

    /// Give the server another address on its link, 10.91.<net>.<last>, and return it.
    pub fn add_server_ip(&self, last: u8) -> String {
        let ip = format!("10.91.{}.{last}", self.net);
        self.server.run(&format!("ip addr add {ip}/24 dev eth0"));
        ip
    }

    /// A forward-chain nft rule on the router, e.g. `ip daddr 10.91.3.2 numgen random mod 100 lt 3 drop`.
    pub fn router_rule(&self, rule: &str) {
        self.router.run(&format!(
            "nft list table inet obs >/dev/null 2>&1 || {{ nft add table inet obs && nft add chain inet obs through '{{ type filter hook forward priority 0; }}'; }}; nft add rule inet obs through {rule}"
        ));
    }

    /// A second way back from the server: server ↔ router2 ↔ router, one hop more. Returns
    /// router2; `use_second_path` moves the server's route to the client onto it.
    pub fn add_second_path(&self) -> Netns {
        let r2 = Netns::new("r2");
        let n = self.net;
        link(&self.router, "eth2", &format!("10.92.{n}.1"), &r2, "eth0", &format!("10.92.{n}.2"));
        link(&r2, "eth1", &format!("10.93.{n}.1"), &self.server, "eth1", &format!("10.93.{n}.2"));
        r2.run(&format!("sysctl -qw net.ipv4.ip_forward=1 && ip route add 10.90.{n}.0/24 via 10.92.{n}.1"));
        self.router.run(&format!("ip route add 10.93.{n}.0/24 via 10.92.{n}.2"));
        r2
    }

    pub fn use_second_path(&self) {
        let n = self.net;
        self.server.run(&format!("ip route replace 10.90.{n}.0/24 via 10.93.{n}.1"));
    }

    /// Send what the client sends to `dest` through a tun device on the router that holds
    /// each packet `ms` milliseconds (the peer `tun-delay`). Returns the delay element's
    /// process; the delay starts when `delay_on` adds the routing rule.
    pub fn add_delay(&self, ms: u64) -> Proc {
        let p = self.router.spawn(&format!("{} tun-delay dly0 {ms}", crate::peers::peer_bin().display()));
        for _ in 0..100 {
            if self.router.try_run("ip link show dly0").0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Packets come back out of dly0 with the client's source: no reverse-path check.
        self.router.run(
            "ip link set dly0 up && sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.dly0.rp_filter=0 net.ipv4.conf.dly0.accept_local=1",
        );
        p
    }

    /// From now on, packets from the client to `dest` go through the delay element.
    pub fn delay_on(&self, dest: &str) {
        self.router.run(&format!(
            "ip route add {dest}/32 dev dly0 table 100 && ip rule add iif eth0 to {dest}/32 lookup 100"
        ));
    }
}
