//! The TLS handshake layer on real traffic: nginx and a test CA in the server namespace,
//! curl and a hand-made ClientHello in the client namespace, observer beside the clients.

use std::time::{Duration, Instant};

use observer_tests::{
    Observer, Pair, Report, peers,
    require_root,
    tls::{Certs, NginxTls},
};
use serde_json::Value;

fn target<'a>(r: &'a Report, dest: &str, sni: &str) -> Option<&'a Value> {
    r.0["tls"]["targets"].as_array()?.iter().find(|t| t["dest"] == dest && t["sni"] == sni)
}

fn total(r: &Report, dest: &str, sni: &str, counter: &str) -> u64 {
    target(r, dest, sni).and_then(|t| t["total"][counter].as_u64()).unwrap_or(0)
}

fn tcp_tls(r: &Report) -> &Value {
    &r.0["verdicts"]["tcp_tls"]
}

struct Setup {
    pair: Pair,
    certs: Certs,
    _nginx: NginxTls,
}

fn setup(tag: &str) -> Setup {
    let pair = Pair::new(tag);
    let certs = Certs::new();
    let nginx = NginxTls::start(&pair.server, &pair.server_ip(), &certs);
    Setup { pair, certs, _nginx: nginx }
}

impl Setup {
    /// curl https://NAME:PORT/ resolved to the server; returns curl's success.
    fn curl(&self, name: &str, port: u16, args: &str) -> bool {
        let ip = self.pair.server_ip();
        let (ok, _) = self.pair.client.try_run(&format!(
            "curl -s -o /dev/null --max-time 5 --resolve {name}:{port}:{ip} {args} https://{name}:{port}/"
        ));
        ok
    }

    fn dest(&self, port: u16) -> String {
        format!("{}:{port}", self.pair.server_ip())
    }

    fn with_ca(&self) -> String {
        format!("--cacert {}", self.certs.path("ca.pem"))
    }
}

/// Wait for tcp_tls to turn suspect within 2 s of `start` (plus the 100 ms poll), with the
/// TLS rule among its rules and `must_mention` in its evidence.
fn assert_tls_suspect(obs: &Observer, start: Instant, must_mention: &[&str]) -> Report {
    let r = obs
        .wait_for(Duration::from_secs(5), |r| tcp_tls(r)["rules"].to_string().contains("tls.handshake_failures"))
        .unwrap_or_else(|| panic!("tcp_tls never named TLS: {:#}", obs.reports().last().map(|r| r.0.clone()).unwrap_or_default()));
    assert!(start.elapsed() <= Duration::from_millis(2_100), "TLS suspect only after {:?}", start.elapsed());
    assert_eq!(tcp_tls(&r)["verdict"], "suspect");
    let evidence = tcp_tls(&r)["evidence"].to_string();
    for m in must_mention {
        assert!(evidence.contains(m), "evidence must name {m}: {evidence}");
    }
    r
}

#[test]
fn healthy_handshakes_complete_with_sni_version_and_latency_and_stay_healthy() {
    require_root();
    let s = setup("tls-ok");
    let obs = Observer::start(&s.pair.client, &[]);
    for _ in 0..5 {
        assert!(s.curl("good.test", 443, &s.with_ca()), "curl with the CA must succeed");
    }
    let dest = s.dest(443);
    let r = obs
        .wait_for(Duration::from_secs(5), |r| total(r, &dest, "good.test", "completed") == 5)
        .unwrap_or_else(|| panic!("not 5 completed: {:#}", obs.reports().last().map(|r| r.0["tls"].clone()).unwrap_or_default()));
    let t = target(&r, &dest, "good.test").unwrap();
    assert_eq!(t["total"]["handshakes"], 5, "{t:#}");
    assert_eq!(t["total"]["hello_latency_us"]["count"], 5);
    assert_eq!(t["total"]["complete_latency_us"]["count"], 5);
    assert_eq!(t["version"], "TLSv1.3");
    assert!(t["offered_alpn"].to_string().contains("http/1.1"), "{t:#}");
    assert_eq!(t["certificate_note"].as_str().map(|n| n.contains("TLS 1.3")), Some(true));
    // TLS 1.2 completes too, and its certificate is in the clear: issued by the test CA,
    // valid, covering the SNI.
    assert!(s.curl("good.test", 443, &format!("{} --tls-max 1.2", s.with_ca())));
    let r = obs
        .wait_for(Duration::from_secs(5), |r| total(r, &dest, "good.test", "completed") == 6)
        .expect("the TLS 1.2 handshake completes");
    let c = &target(&r, &dest, "good.test").unwrap()["certificate"];
    assert_eq!((c["issuer"].as_str(), c["covers_sni"].as_bool(), c["expired"].as_bool()), (Some("CN=observer test CA"), Some(true), Some(false)), "{c:#}");
    // A health check: a TLS 1.2 handshake, then a close with no data (openssl s_client with
    // nothing to send). Both Finished messages went by: completed, not aborted.
    s.pair.client.run(&format!(
        "openssl s_client -connect {dest} -servername good.test -tls1_2 -CAfile {} </dev/null >/dev/null 2>&1",
        s.certs.path("ca.pem")
    ));
    let r = obs
        .wait_for(Duration::from_secs(5), |r| total(r, &dest, "good.test", "completed") == 7)
        .unwrap_or_else(|| panic!("the health check did not complete: {:#}", obs.reports().last().map(|r| r.0["tls"].clone()).unwrap_or_default()));
    assert_eq!(total(&r, &dest, "good.test", "aborted"), 0);
    // A client that skips verification (-k) completes with a name the certificate does not
    // cover: the facts say so, and a completed handshake is not a failure.
    assert!(s.curl("other.test", 9443, "-k --tls-max 1.2"));
    let mismatch = s.dest(9443);
    let r = obs
        .wait_for(Duration::from_secs(5), |r| total(r, &mismatch, "other.test", "completed") == 1)
        .expect("the -k handshake completes");
    let c = &target(&r, &mismatch, "other.test").unwrap()["certificate"];
    assert_eq!((c["covers_sni"].as_bool(), c["expired"].as_bool()), (Some(false), Some(true)), "{c:#}");
    let all = obs.reports();
    obs.stop();
    for rep in &all {
        assert_ne!(tcp_tls(rep)["verdict"], "suspect", "healthy TLS made tcp_tls suspect: {:#}", tcp_tls(rep));
    }
}

#[test]
fn a_client_without_the_ca_is_an_alert_under_tls12_with_the_certificates_facts() {
    require_root();
    let s = setup("tls-noca");
    let obs = Observer::start(&s.pair.client, &[]);
    let start = Instant::now();
    assert!(!s.curl("good.test", 443, "--tls-max 1.2"), "curl without the CA must fail");
    let dest = s.dest(443);
    let r = assert_tls_suspect(&obs, start, &[&dest, "good.test", "unknown_ca sent by the client", "issued by CN=observer test CA", "; process curl["]);
    let t = target(&r, &dest, "good.test").unwrap();
    assert_eq!(t["total"]["alert"], 1, "{t:#}");
    assert_eq!(t["version"], "TLSv1.2");
    let c = &t["certificate"];
    assert_eq!((c["issuer"].as_str(), c["self_signed"].as_bool(), c["expired"].as_bool()), (Some("CN=observer test CA"), Some(false), Some(false)));
    assert_eq!(c["names"][0], "good.test");
    assert_eq!(c["covers_sni"], true);
    assert_eq!(r.0["verdicts"]["dns"]["verdict"], "no-signal");
    // Under TLS 1.3 the certificate is encrypted: the failure is still classified, by the
    // client, without guessing at the certificate. (OpenSSL's client sends its alert before
    // its handshake keys are in use, so the alert is readable; others close or encrypt it.)
    assert!(!s.curl("good.test", 8443, ""));
    let dest13 = s.dest(8443);
    let r = obs
        .wait_for(Duration::from_secs(5), |r| target(r, &dest13, "good.test").is_some())
        .expect("the TLS 1.3 handshake is reported");
    let t = target(&r, &dest13, "good.test").unwrap();
    let failure = t["last_failure"]["reason"].as_str().unwrap_or("");
    assert!(
        failure == "alert unknown_ca sent by the client" || failure == "closed by the client after ServerHello, before application data",
        "{t:#}"
    );
    assert_eq!(t["version"], "TLSv1.3");
    assert!(t["certificate"].is_null(), "TLS 1.3 certificates are not guessed: {t:#}");
    obs.stop();
}

#[test]
fn an_unknown_sni_is_rejected_with_unrecognized_name() {
    require_root();
    let s = setup("tls-sni");
    let obs = Observer::start(&s.pair.client, &[]);
    let start = Instant::now();
    assert!(!s.curl("other.test", 443, "-k"));
    assert_tls_suspect(&obs, start, &["SNI other.test", "alert unrecognized_name sent by the server"]);
    obs.stop();
}

#[test]
fn a_tls13_only_server_rejects_a_tls12_client_with_protocol_version() {
    require_root();
    let s = setup("tls-ver");
    let obs = Observer::start(&s.pair.client, &[]);
    let start = Instant::now();
    assert!(!s.curl("good.test", 8443, "-k --tls-max 1.2"));
    let r = assert_tls_suspect(&obs, start, &[&s.dest(8443), "alert protocol_version sent by the server"]);
    let t = target(&r, &s.dest(8443), "good.test").unwrap();
    assert_eq!(t["offered_versions"].to_string(), r#"["TLSv1.2"]"#, "{t:#}");
    obs.stop();
}

#[test]
fn an_expired_certificate_is_reported_as_expired() {
    require_root();
    let s = setup("tls-exp");
    let obs = Observer::start(&s.pair.client, &[]);
    let start = Instant::now();
    assert!(!s.curl("good.test", 9443, &format!("{} --tls-max 1.2", s.with_ca())));
    let r = assert_tls_suspect(&obs, start, &["certificate_expired sent by the client", "certificate expired 2025-11-01"]);
    let c = &target(&r, &s.dest(9443), "good.test").unwrap()["certificate"];
    assert_eq!((c["expired"].as_bool(), c["not_after"].as_str()), (Some(true), Some("2025-11-01")));
    obs.stop();
}

#[test]
fn a_server_that_never_answers_the_client_hello_is_stalled() {
    require_root();
    let pair = Pair::new("tls-stall");
    let dest = format!("{}:10443", pair.server_ip());
    let _hold = pair.server.spawn(&format!("{} tcp-hold {dest}", peers::peer_bin().display()));
    peers::wait_listening(&pair.server, &dest);
    let obs = Observer::start(&pair.client, &["--set", "tls.stall_after_s=2"]);
    let client = pair.client.spawn(&format!("curl -sk --max-time 8 --resolve slow.test:10443:{} https://slow.test:10443/", pair.server_ip()));
    let start = Instant::now();
    let r = obs
        .wait_for(Duration::from_secs(6), |r| total(r, &dest, "slow.test", "stalled") == 1)
        .unwrap_or_else(|| panic!("not stalled: {:#}", obs.reports().last().map(|r| r.0["tls"].clone()).unwrap_or_default()));
    // Judged at the first tick after the 2 s timeout.
    assert!(start.elapsed() < Duration::from_millis(4_100), "stalled only after {:?}", start.elapsed());
    assert!(tcp_tls(&r)["evidence"].to_string().contains("no ServerHello within 2 s"), "{:#}", tcp_tls(&r));
    drop(client);
    obs.stop();
}

#[test]
fn a_client_hello_over_two_segments_is_parsed() {
    require_root();
    let s = setup("tls-big");
    // Segments as small as they come: no offload merges the two writes.
    s.pair.client.run("ethtool -K eth0 tso off gso off >/dev/null");
    let obs = Observer::start(&s.pair.client, &[]);
    let dest = s.dest(443);
    let out = s.pair.client.run(&format!("{} tls-big-hello {dest} big.test", peers::peer_bin().display()));
    assert!(out.contains("bytes sent"), "{out}");
    let r = obs
        .wait_for(Duration::from_secs(5), |r| total(r, &dest, "big.test", "handshakes") == 1)
        .unwrap_or_else(|| panic!("the big ClientHello was not parsed: {:#}", obs.reports().last().map(|r| r.0["tls"].clone()).unwrap_or_default()));
    let t = target(&r, &dest, "big.test").unwrap();
    assert_eq!(t["offered_versions"].to_string(), r#"["TLSv1.3"]"#, "{t:#}");
    assert_eq!(t["total"]["malformed"], 0, "{t:#}");
    obs.stop();
}

#[test]
fn a_record_that_claims_16_kib_and_stops_is_malformed() {
    require_root();
    let pair = Pair::new("tls-cut");
    let dest = format!("{}:11443", pair.server_ip());
    let _server = pair.server.spawn(&format!("{} tls-truncated {dest}", peers::peer_bin().display()));
    peers::wait_listening(&pair.server, &dest);
    let obs = Observer::start(&pair.client, &[]);
    let (ok, _) = pair.client.try_run(&format!("curl -sk --max-time 3 --resolve cut.test:11443:{} https://cut.test:11443/", pair.server_ip()));
    assert!(!ok);
    let r = obs
        .wait_for(Duration::from_secs(5), |r| total(r, &dest, "cut.test", "malformed") == 1)
        .unwrap_or_else(|| panic!("not malformed: {:#}", obs.reports().last().map(|r| r.0["tls"].clone()).unwrap_or_default()));
    let t = target(&r, &dest, "cut.test").unwrap();
    assert_eq!(t["last_failure"]["reason"], "a record claims 16384 bytes and stops after 100", "{t:#}");
    obs.stop();
}

#[test]
fn plain_http_to_the_tls_port_is_counted_as_malformed_and_nothing_stalls() {
    require_root();
    let s = setup("tls-junk");
    let obs = Observer::start(&s.pair.client, &[]);
    let dest = s.dest(443);
    let (_, out) = s.pair.client.try_run(&format!("curl -s --max-time 3 http://{dest}/"));
    assert!(out.contains("400") || out.contains("plain HTTP"), "nginx answers plain HTTP on its TLS port: {out}");
    let r = obs
        .wait_for(Duration::from_secs(5), |r| total(r, &dest, "", "malformed") == 1)
        .unwrap_or_else(|| panic!("not counted as malformed: {:#}", obs.reports().last().map(|r| r.0["tls"].clone()).unwrap_or_default()));
    assert_ne!(tcp_tls(&r)["verdict"], "suspect", "{:#}", tcp_tls(&r));
    // And TLS still works afterwards.
    assert!(s.curl("good.test", 443, &s.with_ca()));
    assert!(obs.wait_for(Duration::from_secs(5), |r| total(r, &dest, "good.test", "completed") == 1).is_some());
    obs.stop();
}
