//! Real servers from Debian packages, configured for one test.

use std::{fs, path::PathBuf};

use crate::{Netns, Proc};

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("observer-test-{tag}-{}-{n}", std::process::id()));
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// nginx serving a small page on `addr:port` inside `ns`.
pub struct Nginx {
    _proc: Proc,
    _dir: TempDir,
}

impl Nginx {
    pub fn start(ns: &Netns, listen: &str) -> Nginx {
        Nginx::start_with(ns, listen, "")
    }

    /// With extra `http` directives, e.g. `keepalive_timeout 1s;`.
    pub fn start_with(ns: &Netns, listen: &str, http: &str) -> Nginx {
        let dir = TempDir::new("nginx");
        let d = dir.0.display();
        fs::write(dir.0.join("index.html"), "observer test page\n").unwrap();
        let conf = format!(
            "user root; worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
               uwsgi_temp_path {d}; scgi_temp_path {d}; {http}\n\
               server {{ listen {listen}; root {d}; }} }}\n"
        );
        fs::write(dir.0.join("nginx.conf"), conf).unwrap();
        let proc = ns.spawn(&format!("nginx -c {d}/nginx.conf -p {d}"));
        wait_listening(ns, listen);
        Nginx { _proc: proc, _dir: dir }
    }
}

/// Wait (up to 10 s) until something in `ns` listens on the TCP `addr:port`.
pub fn wait_listening(ns: &Netns, listen: &str) {
    let port = listen.rsplit(':').next().unwrap_or(listen);
    wait_socket(ns, "-Htln", port, &format!("TCP {listen}"));
}

/// Wait (up to 10 s) until `ss FLAGS 'sport = :PORT'` in `ns` lists a socket.
fn wait_socket(ns: &Netns, flags: &str, port: &str, what: &str) {
    for _ in 0..100 {
        let (_, out) = ns.try_run(&format!("ss {flags} 'sport = :{port}'"));
        if !out.trim().is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("nothing listens on {what} in {} after 10 s", ns.name);
}

/// The `peer` helper binary of this crate (servers Debian has no package for).
pub fn peer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OBSERVER_PEER_BIN") {
        return PathBuf::from(p);
    }
    // Built beside the tests: `cargo test -p observer-tests` builds this crate's binaries first.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/peer")
}

/// dnsmasq answering on `ip:port` inside `ns`, with no upstream unless `args` give one.
pub struct Dnsmasq {
    _proc: Proc,
    _dir: TempDir,
    pub addr: String,
}

/// The root zone's trust anchor (KSK-2017): a validating dnsmasq in front of an unsigned
/// upstream cannot build a chain of trust and answers SERVFAIL, as a real resolver would.
pub const ROOT_TRUST_ANCHOR: &str =
    "--trust-anchor=.,20326,8,2,E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D";

impl Dnsmasq {
    pub fn start(ns: &Netns, ip: &str, port: u16, args: &[&str]) -> Dnsmasq {
        let dir = TempDir::new("dnsmasq");
        let d = dir.0.display();
        let cmd = format!(
            "dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address={ip} \
             --port {port} --pid-file={d}/pid --log-facility={d}/log {} {}",
            // No cache, so every query reaches the resolver's logic; DNSSEC validation needs one.
            if args.contains(&"--dnssec") { "" } else { "--cache-size=0" },
            args.join(" ")
        );
        let proc = ns.spawn(&cmd);
        let addr = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
        wait_udp(ns, port);
        Dnsmasq { _proc: proc, _dir: dir, addr }
    }
}

/// Wait (up to 10 s) until something in `ns` has a UDP socket on `port`.
pub fn wait_udp(ns: &Netns, port: u16) {
    wait_socket(ns, "-Huln", &port.to_string(), &format!("UDP port {port}"));
}

/// `dig` one query, one try, and return its status word (NOERROR, NXDOMAIN, …) or "" when
/// no answer came.
pub fn dig_status(ns: &Netns, server: &str, port: u16, name: &str, extra: &str) -> String {
    let (_, out) = ns.try_run(&format!("dig +tries=1 +retry=0 +timeout=2 -p {port} @{server} {name} {extra}"));
    out.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("").to_owned()
}
