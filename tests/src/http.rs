//! A reverse proxy and its upstreams, for the HTTP layer's tests:
//!
//!   client ns (curl) -- veth -- proxy ns (nginx :8080 and :8443 TLS; observer) -- veth -- upstream ns
//!
//! The proxy routes by path: `/dead/` to a port nothing listens on (502), `/slow/` to an
//! upstream that answers after 3 s with `proxy_read_timeout 1s` (504), `/busy/` to an
//! upstream that returns 503, and `/ok/` to one that returns 200. Port 9443 speaks HTTP/2.

use std::fs;

use crate::{
    Netns, Pair, Proc,
    peers::{TempDir, peer_bin, wait_listening},
    sh,
    tls::Certs,
};

pub struct Proxy {
    pub pair: Pair,
    pub upstream: Netns,
    pub certs: Certs,
    _procs: Vec<Proc>,
    _dirs: Vec<TempDir>,
}

const NGINX_COMMON: &str = "user root; worker_processes 1; daemon off;";

impl Proxy {
    pub fn start(tag: &str) -> Proxy {
        Proxy::start_with(tag, false)
    }

    /// `container_libssl`: the proxy runs in a mount namespace of its own with a copy of
    /// libssl bind-mounted over the host's, as a container image brings its own: the same
    /// path, another file.
    pub fn start_with(tag: &str, container_libssl: bool) -> Proxy {
        let pair = Pair::new(tag);
        let upstream = Netns::new(&format!("{tag}-u"));
        let net = pair.net;
        let veth = format!("obu{net}x{}", std::process::id() % 10000);
        let (p, u) = (&pair.server.name, &upstream.name);
        sh(&format!(
            "ip link add {veth}p netns {p} type veth peer name {veth}u netns {u} && \
             ip -n {p} link set {veth}p name up0 && ip -n {u} link set {veth}u name eth0 && \
             ip -n {p} addr add 10.78.{net}.1/24 dev up0 && ip -n {u} addr add 10.78.{net}.2/24 dev eth0 && \
             ip -n {p} link set up0 up && ip -n {u} link set eth0 up"
        ));
        let up = format!("10.78.{net}.2");
        let certs = Certs::new();
        let mut procs = Vec::new();
        let mut dirs = Vec::new();

        // Upstreams: nginx for 503 and 200, a slow peer for the timeout.
        let dir = TempDir::new("upstream");
        let d = dir.0.display();
        let conf = format!(
            "{NGINX_COMMON} pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
               uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen {up}:9002; location /busy/ {{ return 503; }} location /ok/ {{ return 200 ok; }} }} }}\n"
        );
        fs::write(dir.0.join("nginx.conf"), conf).unwrap();
        procs.push(upstream.spawn(&format!("nginx -c {d}/nginx.conf -p {d}")));
        dirs.push(dir);
        procs.push(upstream.spawn(&format!("{} http-slow {up}:9001 3000", peer_bin().display())));
        wait_listening(&upstream, &format!("{up}:9002"));
        wait_listening(&upstream, &format!("{up}:9001"));

        // The proxy, in clear text and over TLS.
        let ip = pair.server_ip();
        let dir = TempDir::new("proxy");
        let d = dir.0.display();
        let routes = format!(
            "location /dead/ {{ proxy_pass http://{up}:9000; }}\n\
             location /slow/ {{ proxy_pass http://{up}:9001; proxy_read_timeout 1s; }}\n\
             location /busy/ {{ proxy_pass http://{up}:9002; }}\n\
             location /ok/ {{ proxy_pass http://{up}:9002; }}\n"
        );
        let (good, key) = (certs.path("good.pem"), certs.path("good.key"));
        let conf = format!(
            "{NGINX_COMMON} pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
               uwsgi_temp_path {d}; scgi_temp_path {d}; proxy_next_upstream off;\n\
               server {{ listen {ip}:8080; {routes} }}\n\
               server {{ listen {ip}:8443 ssl; server_name good.test; ssl_certificate {good}; ssl_certificate_key {key};\n\
                 {routes} }}\n\
               server {{ listen {ip}:9443 ssl http2; server_name good.test; ssl_certificate {good}; ssl_certificate_key {key};\n\
                 {routes} }} }}\n"
        );
        fs::write(dir.0.join("nginx.conf"), conf).unwrap();
        let nginx = format!("nginx -c {d}/nginx.conf -p {d}");
        let cmd = if container_libssl {
            let lib = libssl_of_nginx();
            format!(
                "unshare -m --propagation private bash -c 'cp {lib} {d}/libssl-copy.so && mount --bind {d}/libssl-copy.so {lib} && exec {nginx}'"
            )
        } else {
            nginx
        };
        procs.push(pair.server.spawn(&cmd));
        dirs.push(dir);
        wait_listening(&pair.server, &format!("{ip}:8080"));
        wait_listening(&pair.server, &format!("{ip}:8443"));
        wait_listening(&pair.server, &format!("{ip}:9443"));
        Proxy { pair, upstream, certs, _procs: procs, _dirs: dirs }
    }

    /// The upstream namespace's address.
    pub fn upstream_ip(&self) -> String {
        format!("10.78.{}.2", self.pair.net)
    }

    /// The proxy's address as the client sees it, with a port.
    pub fn proxy(&self, port: u16) -> String {
        format!("{}:{port}", self.pair.server_ip())
    }

    /// curl the proxy in clear text `n` times (in parallel) with Host `host`; the status codes.
    pub fn curl(&self, path: &str, host: &str, n: usize) -> Vec<String> {
        let url = format!("http://{}{path}", self.proxy(8080));
        let cmd = format!(
            "for i in $(seq {n}); do curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 10 -H 'Host: {host}' {url} & done; wait"
        );
        self.pair.client.run(&cmd).lines().map(str::to_owned).collect()
    }

    /// curl the proxy over TLS (good.test, with the test CA); the status code.
    pub fn curl_tls(&self, path: &str) -> String {
        self.curl_tls_port(8443, path)
    }

    pub fn curl_tls_port(&self, port: u16, path: &str) -> String {
        let ip = self.pair.server_ip();
        self.pair.client.run(&format!(
            "curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 --cacert {} --resolve good.test:{port}:{ip} https://good.test:{port}{path}",
            self.certs.path("ca.pem")
        ))
    }
}

/// The libssl that nginx loads on this host.
pub fn libssl_of_nginx() -> String {
    let out = sh("ldd \"$(command -v nginx)\"");
    out.lines()
        .find(|l| l.contains("libssl.so"))
        .and_then(|l| l.split("=>").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("nginx links no libssl: {out}"))
        .to_owned()
}
