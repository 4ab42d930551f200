//! Certificates made with openssl for one test, and nginx serving TLS with them.

use std::fs;

use crate::{
    Netns, Proc,
    peers::{TempDir, wait_listening},
    sh,
};

/// A test CA, a certificate it signed for good.test, and one for good.test that expired on
/// 2025-11-01 (signed by the same CA).
pub struct Certs {
    pub dir: TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = TempDir::new("certs");
        let d = dir.0.display();
        let cnf = format!(
            "[ca]\\ndefault_ca = test_ca\\n[test_ca]\\n\
             dir = {d}\\ndatabase = {d}/index.txt\\nnew_certs_dir = {d}\\nserial = {d}/serial\\n\
             default_md = sha256\\npolicy = any\\ncopy_extensions = copy\\nunique_subject = no\\n\
             [any]\\ncommonName = supplied\\n"
        );
        fs::write(dir.0.join("ca.cnf"), cnf.replace("\\n", "\n")).unwrap();
        fs::write(dir.0.join("index.txt"), "").unwrap();
        fs::write(dir.0.join("serial"), "1000\n").unwrap();
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        sh(&format!(
            "cd {d} && \
             openssl req -x509 {key} -keyout ca.key -out ca.pem -days 30 -subj '/CN=observer test CA' 2>/dev/null && \
             openssl req {key} -keyout good.key -out good.csr -subj '/CN=good.test' -addext 'subjectAltName=DNS:good.test' 2>/dev/null && \
             openssl x509 -req -in good.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -copy_extensions copy -out good.pem 2>/dev/null && \
             openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in good.csr -out expired.pem \
               -startdate 20250101000000Z -enddate 20251101000000Z -notext 2>/dev/null"
        ));
        Certs { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.0.join(name).display().to_string()
    }
}

impl Default for Certs {
    fn default() -> Self {
        Certs::new()
    }
}

/// nginx with TLS on `ip`:
/// - 443: good.test (TLS 1.2 and 1.3); any other name is rejected (`ssl_reject_handshake`);
/// - 8443: good.test, TLS 1.3 only;
/// - 9443: good.test with the expired certificate.
pub struct NginxTls {
    _proc: Proc,
    _dir: TempDir,
}

impl NginxTls {
    pub fn start(ns: &Netns, ip: &str, certs: &Certs) -> NginxTls {
        let dir = TempDir::new("nginx-tls");
        let d = dir.0.display();
        fs::write(dir.0.join("index.html"), "observer TLS test page\n").unwrap();
        let (good, key, expired) = (certs.path("good.pem"), certs.path("good.key"), certs.path("expired.pem"));
        let conf = format!(
            "user root; worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
               uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               # nginx 1.22 leaves TLS 1.3 out by default, and the default server decides.\n\
               ssl_protocols TLSv1.2 TLSv1.3;\n\
               server {{ listen {ip}:443 ssl default_server; ssl_reject_handshake on; }}\n\
               server {{ listen {ip}:443 ssl; server_name good.test; root {d};\n\
                 ssl_certificate {good}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3; }}\n\
               server {{ listen {ip}:8443 ssl; server_name good.test; root {d};\n\
                 ssl_certificate {good}; ssl_certificate_key {key}; ssl_protocols TLSv1.3; }}\n\
               server {{ listen {ip}:9443 ssl; server_name good.test; root {d};\n\
                 ssl_certificate {expired}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3; }}\n\
             }}\n"
        );
        fs::write(dir.0.join("nginx.conf"), conf).unwrap();
        let proc = ns.spawn(&format!("nginx -c {d}/nginx.conf -p {d}"));
        for port in [443, 8443, 9443] {
            wait_listening(ns, &format!("{ip}:{port}"));
        }
        NginxTls { _proc: proc, _dir: dir }
    }
}
