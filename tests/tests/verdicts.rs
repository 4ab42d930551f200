//! Verdicts on real traffic: each fault makes exactly its layer suspect within 2 s of the
//! fault's start, the other layers stay healthy or no-signal, and healthy traffic raises no
//! suspect at all. Plus the real binary's TUI, read back through tmux.

use std::time::{Duration, Instant};

use observer_tests::{
    Observer, Pair, Report,
    peers::{self, Dnsmasq, ROOT_TRUST_ANCHOR, dig_status},
    require_root, sh, sh_status,
};

fn verdict(r: &Report, layer: &str) -> String {
    r.0["verdicts"][layer]["verdict"].as_str().unwrap_or("missing").to_owned()
}

/// Wait for `layer` to turn suspect; assert it did within 2 s of `fault_start` and that
/// every other layer is healthy or no-signal in that report.
fn assert_only_suspect(obs: &Observer, layer: &str, fault_start: Instant, must_mention: &str) -> Report {
    let r = obs
        .wait_for(Duration::from_secs(5), |r| verdict(r, layer) == "suspect")
        .unwrap_or_else(|| panic!("{layer} never turned suspect; last: {:#}", obs.reports().last().map(|r| r.0.clone()).unwrap_or_default()));
    let seen_after = fault_start.elapsed();
    // wait_for polls every 100 ms: allow that on top of the 2 s.
    assert!(seen_after <= Duration::from_millis(2_100), "{layer} suspect only after {seen_after:?}");
    for other in ["dns", "tcp_tls", "routing", "l7"].into_iter().filter(|l| *l != layer) {
        let v = verdict(&r, other);
        assert!(v == "healthy" || v == "no-signal", "{other} is {v} while the fault is in {layer}: {:#}", r.0["verdicts"]);
    }
    assert_eq!(r.0["cause"]["layer"], layer, "{:#}", r.0["cause"]);
    let evidence = r.0["verdicts"][layer]["evidence"].to_string();
    assert!(evidence.contains(must_mention), "evidence must name {must_mention}: {evidence}");
    r
}

#[test]
fn servfail_from_a_real_resolver_makes_dns_suspect() {
    require_root();
    let pair = Pair::new("v-servfail");
    let _upstream = Dnsmasq::start(&pair.server, &pair.server_ip(), 53, &["--address=/api.test/10.1.1.1"]);
    let vip = pair.add_server_ip(3);
    let _validating = Dnsmasq::start(&pair.server, &vip, 53, &[&format!("--server={}", pair.server_ip()), "--dnssec", ROOT_TRUST_ANCHOR]);
    let obs = Observer::start(&pair.client, &[]);
    let start = Instant::now();
    assert_eq!(dig_status(&pair.client, &vip, 53, "api.test", ""), "SERVFAIL");
    let r = assert_only_suspect(&obs, "dns", start, &format!("{vip}:53"));
    assert!(r.0["verdicts"]["dns"]["rules"].to_string().contains("dns.error_rcodes"));
    obs.stop();
}

#[test]
fn an_unanswered_resolver_makes_dns_suspect() {
    require_root();
    let pair = Pair::new("v-silent");
    pair.server.nft_drop_input("udp dport 53");
    let obs = Observer::start(&pair.client, &["--dns-timeout", "1"]);
    let start = Instant::now();
    // Two queries: one unanswered query is not a fault (dns.min_unanswered).
    let clients: Vec<_> = (0..2).map(|i| pair.client.spawn(&format!("dig +tries=1 +retry=0 +timeout=3 @{} api{i}.test", pair.server_ip()))).collect();
    let r = assert_only_suspect(&obs, "dns", start, "unanswered");
    assert!(r.0["verdicts"]["dns"]["rules"].to_string().contains("dns.unanswered"));
    drop(clients);
    obs.stop();
}

/// With the default 5 s timeout, a resolver that has answered nothing since a query is named
/// within 2 s anyway (dns.silent), long before its queries count as unanswered.
#[test]
fn a_silent_resolver_is_named_before_the_timeout() {
    require_root();
    let pair = Pair::new("v-silent5");
    pair.server.nft_drop_input("udp dport 53");
    let obs = Observer::start(&pair.client, &[]);
    let start = Instant::now();
    // dig retries after a second, as clients do: the second query confirms the silence.
    let client = pair.client.spawn(&format!("dig +tries=3 +timeout=1 @{} api.test", pair.server_ip()));
    let r = assert_only_suspect(&obs, "dns", start, "silent resolver");
    assert_eq!(r.0["verdicts"]["dns"]["rules"].to_string(), r#"["dns.silent"]"#, "not yet unanswered");
    drop(client);
    obs.stop();
}

#[test]
fn a_refused_port_makes_tcp_suspect() {
    require_root();
    let pair = Pair::new("v-refused");
    let dest = format!("{}:81", pair.server_ip());
    let obs = Observer::start(&pair.client, &[]);
    let start = Instant::now();
    let (ok, _) = pair.client.try_run(&format!("curl -s --max-time 2 http://{dest}/"));
    assert!(!ok);
    let r = assert_only_suspect(&obs, "tcp_tls", start, &dest);
    assert!(r.0["verdicts"]["tcp_tls"]["rules"].to_string().contains("tcp.refused"));
    assert_eq!(r.0["verdicts"]["tcp_tls"]["destinations"][0], dest);
    obs.stop();
}

#[test]
fn a_syn_blackhole_makes_tcp_suspect_before_the_kernel_gives_up() {
    require_root();
    let pair = Pair::new("v-blackhole");
    let dest = format!("{}:82", pair.server_ip());
    pair.server.nft_drop_input("tcp dport 82");
    let obs = Observer::start(&pair.client, &[]);
    let start = Instant::now();
    let client = pair.client.spawn(&format!("curl -s --connect-timeout 4 http://{dest}/"));
    let r = assert_only_suspect(&obs, "tcp_tls", start, &dest);
    assert!(r.0["verdicts"]["tcp_tls"]["rules"].to_string().contains("tcp.syn_retries"));
    drop(client);
    obs.stop();
}

#[test]
fn healthy_traffic_shows_no_suspect_layer_over_60_s() {
    require_root();
    let pair = Pair::new("v-healthy");
    let web = format!("{}:80", pair.server_ip());
    let _nginx = peers::Nginx::start(&pair.server, &web);
    let _dns = Dnsmasq::start(&pair.server, &pair.server_ip(), 53, &["--address=/web.test/10.1.1.1"]);
    let obs = Observer::start(&pair.client, &[]);
    // Real clients, bounded: one lookup and one fetch every 300 ms for 60 s.
    let end = Instant::now() + Duration::from_secs(60);
    let mut rounds = 0;
    while Instant::now() < end {
        assert_eq!(dig_status(&pair.client, &pair.server_ip(), 53, "web.test", ""), "NOERROR");
        pair.client.run(&format!("curl -sf -o /dev/null http://{web}/"));
        rounds += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    // Every report printed over the 60 s, not just the last one.
    let all = obs.reports();
    let r = obs.stop();
    assert!(all.len() >= 110, "about two reports a second: {}", all.len());
    for rep in all.iter().chain([&r]) {
        for layer in ["dns", "tcp_tls", "routing", "l7"] {
            assert_ne!(verdict(rep, layer), "suspect", "{layer} suspect at {}: {:#}", rep.0["ts"], rep.0["verdicts"][layer]);
        }
        assert!(rep.0["cause"].is_null(), "{:#}", rep.0["cause"]);
    }
    assert_eq!(verdict(&r, "dns"), "healthy");
    assert_eq!(verdict(&r, "tcp_tls"), "healthy");
    assert!(rounds > 50, "{rounds} rounds");
}

/// A tmux session killed on drop.
struct Tmux(String);

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = sh_status(&format!("tmux kill-session -t {}", self.0));
    }
}

fn screen(session: &str) -> String {
    sh(&format!("tmux capture-pane -p -t {session}"))
}

fn wait_screen(session: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let s = screen(session);
        if pred(&s) {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

#[test]
fn the_tui_under_tmux_shows_tcp_suspect_with_the_destination() {
    require_root();
    let pair = Pair::new("v-tui");
    let dest = format!("{}:81", pair.server_ip());
    let session = format!("observer-test-{}", std::process::id());
    let bin = observer_tests::observer::binary();
    // A directory that only the user behind sudo (uid 4321 here) may write: observer runs
    // as that user after attach, and the evidence and the recording are its.
    let evidence = peers::TempDir::new("evidence");
    sh(&format!("chown 4321:4321 {0} && chmod 700 {0}", evidence.0.display()));
    // 100x30, UTF-8 whatever the locale (-u). The session ends 30 s after observer exits.
    sh(&format!(
        "tmux -u new-session -d -s {session} -x 100 -y 30 'SUDO_UID=4321 SUDO_GID=4321 OBSERVER_EVIDENCE_DIR={} {}{}; sleep 30'",
        evidence.0.display(),
        pair.client.prefix(),
        bin.display()
    ));
    let _guard = Tmux(session.clone());
    wait_screen(&session, Duration::from_secs(30), |s| s.contains("1 DNS")).unwrap_or_else(|| panic!("no TUI on screen:\n{}", screen(&session)));
    for _ in 0..3 {
        let _ = pair.client.try_run(&format!("curl -s --max-time 2 http://{dest}/"));
    }
    let s = wait_screen(&session, Duration::from_secs(5), |s| s.contains("2 TCP/TLS  SUSPECT") && s.contains(&dest))
        .unwrap_or_else(|| panic!("tcp_tls not suspect on screen:\n{}", screen(&session)));
    assert!(s.contains("CAUSE: TCP/TLS"), "{s}");
    assert!(s.contains("3/3 connects"), "{s}");
    // Drill down into the destination, then copy the evidence.
    sh(&format!("tmux send-keys -t {session} 2 Enter"));
    let s = wait_screen(&session, Duration::from_secs(3), |s| s.contains(&format!("TCP/TLS › {dest}"))).unwrap_or_else(|| panic!("no drill-down:\n{}", screen(&session)));
    assert!(s.contains("refused"), "{s}");
    sh(&format!("tmux send-keys -t {session} Escape c"));
    wait_screen(&session, Duration::from_secs(3), |s| s.contains("evidence copied")).unwrap_or_else(|| panic!("no copy:\n{}", screen(&session)));
    let saved: Vec<_> = std::fs::read_dir(&evidence.0).unwrap().flatten().collect();
    assert_eq!(saved.len(), 1);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&saved[0].metadata().unwrap()), 4321, "the evidence is not the user's");
    let text = std::fs::read_to_string(saved[0].path()).unwrap();
    assert!(text.contains(&format!("TCP: 3/3 connects to {dest} refused")), "{text}");
    // r starts a recording in the evidence directory; refusals during it are recorded (and
    // the three before it are not); w writes its report; r stops it.
    sh(&format!("tmux send-keys -t {session} r"));
    wait_screen(&session, Duration::from_secs(3), |s| s.contains("● REC")).unwrap_or_else(|| panic!("no recording:\n{}", screen(&session)));
    for _ in 0..2 {
        let _ = pair.client.try_run(&format!("curl -s --max-time 2 http://{dest}/"));
    }
    std::thread::sleep(Duration::from_millis(1500));
    sh(&format!("tmux send-keys -t {session} w"));
    wait_screen(&session, Duration::from_secs(3), |s| s.contains("recorded to")).unwrap_or_else(|| panic!("no report written:\n{}", screen(&session)));
    sh(&format!("tmux send-keys -t {session} r"));
    wait_screen(&session, Duration::from_secs(3), |s| !s.contains("● REC")).unwrap_or_else(|| panic!("the recording did not stop:\n{}", screen(&session)));
    let rec = std::fs::read_dir(&evidence.0).unwrap().flatten().find(|e| e.file_name().to_string_lossy().starts_with("observer-recording-")).expect("a recording directory");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&rec.metadata().unwrap()), 4321, "the recording is not the user's");
    let failures = std::fs::read_to_string(rec.path().join("failures.jsonl")).unwrap();
    let refused: u64 = failures
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|v| v["failures"].as_array().cloned().unwrap_or_default())
        .filter(|f| f[1] == dest.as_str())
        .map(|f| f[2].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(refused, 2, "the refusals during the recording only: {failures}");
    assert!(std::fs::read_to_string(rec.path().join("report.md")).unwrap().contains(&format!("tcp_connect {dest}")), "the report");
    // q restores the terminal and prints the final summary.
    sh(&format!("tmux send-keys -t {session} q"));
    let s = wait_screen(&session, Duration::from_secs(5), |s| s.contains("(final)")).unwrap_or_else(|| panic!("no final summary:\n{}", screen(&session)));
    assert!(!s.contains("1 DNS"), "the alternate screen must be gone:\n{s}");
}
