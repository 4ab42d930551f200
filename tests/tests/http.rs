//! The HTTP layer (L7) on real traffic: nginx as a reverse proxy with real upstreams, curl as
//! the client, observer on the proxy host. It sees the requests it serves (server role), the
//! requests it sends upstream (client role), and HTTPS through the OpenSSL uprobes.

use std::time::Duration;

use observer_tests::{Observer, Report, http::Proxy, peers::peer_bin, require_root};
use serde_json::Value;

fn target<'a>(r: &'a Report, role: &str, server: &str, host: &str) -> Option<&'a Value> {
    r.0["http"]["targets"].as_array()?.iter().find(|t| t["role"] == role && t["server"] == server && t["host"] == host)
}

fn total(r: &Report, role: &str, server: &str, host: &str, counter: &str) -> u64 {
    target(r, role, server, host).and_then(|t| t["total"][counter].as_u64()).unwrap_or(0)
}

fn verdict<'a>(r: &'a Report, layer: &str) -> &'a Value {
    &r.0["verdicts"][layer]
}

fn dump(obs: &Observer) -> String {
    obs.reports().last().map(|r| format!("{:#}\nlost: {}", r.0["http"], r.0["lost"])).unwrap_or_default()
}

#[test]
fn a_dead_upstream_gives_502s_that_the_verdict_blames_on_tcp_with_l7_as_its_consequence() {
    require_root();
    let p = Proxy::start("http-dead");
    let obs = Observer::start(&p.pair.server, &[]);
    let codes = p.curl("/dead/x?token=secret", "api.internal", 6);
    assert!(codes.iter().all(|c| c == "502"), "nginx must answer 502: {codes:?}");
    let proxy = p.proxy(8080);
    let upstream = format!("{}:9000", p.upstream_ip());
    let r = obs
        .wait_for(Duration::from_secs(5), |r| total(r, "server", &proxy, "api.internal", "502") == 6 && verdict(r, "l7")["verdict"] == "suspect")
        .unwrap_or_else(|| panic!("six 502s served on {proxy} never showed: {}", dump(&obs)));
    let t = target(&r, "server", &proxy, "api.internal").unwrap();
    assert_eq!(t["total"]["requests"], 6);
    assert_eq!(t["total"]["5xx"], 6);
    assert_eq!(t["slowest"][0]["path"], "/dead/x", "the query string is dropped: {t:#}");
    assert_eq!(t["slowest"][0]["method"], "GET");
    let l7 = verdict(&r, "l7");
    let evidence = l7["evidence"].to_string();
    assert!(evidence.contains(&format!("6/6 responses served on {proxy} (Host api.internal) were 502")), "{evidence}");
    assert!(evidence.contains(&format!("upstream connects to {upstream} refused")), "{evidence}");
    assert_eq!(r.0["cause"]["layer"], "tcp_tls", "the refused upstream connects are the cause: {:#}", r.0["cause"]);
    assert_eq!(l7["consequence_of"], "tcp_tls", "{l7:#}");
    assert_eq!(l7["upstreams"][0]["upstreams"][0], upstream.as_str());
    obs.stop();
}

#[test]
fn an_upstream_slower_than_the_proxy_timeout_gives_504s_after_about_a_second_and_l7_is_the_cause() {
    require_root();
    let p = Proxy::start("http-slow");
    let obs = Observer::start(&p.pair.server, &[]);
    let codes = p.curl("/slow/report", "api.internal", 3);
    assert!(codes.iter().all(|c| c == "504"), "nginx must answer 504: {codes:?}");
    let proxy = p.proxy(8080);
    let r = obs
        .wait_for(Duration::from_secs(5), |r| total(r, "server", &proxy, "api.internal", "504") == 3 && verdict(r, "l7")["verdict"] == "suspect")
        .unwrap_or_else(|| panic!("three 504s never showed: {}", dump(&obs)));
    let t = target(&r, "server", &proxy, "api.internal").unwrap();
    let p50 = t["total"]["latency_us"]["p50"].as_u64().unwrap();
    assert!((950_000..1_500_000).contains(&p50), "a 504 after proxy_read_timeout 1s takes about 1 s: p50 {p50} µs");
    // The proxy's own requests upstream are seen too, as a client, still waiting.
    let up = format!("{}:9001", p.upstream_ip());
    assert_eq!(total(&r, "client", &up, &format!("{}:9001", p.upstream_ip()), "requests"), 3, "{}", dump(&obs));
    assert_eq!(r.0["cause"]["layer"], "l7", "connects and DNS are healthy, so L7 is the cause: {:#}", r.0["verdicts"]);
    assert_eq!(verdict(&r, "tcp_tls")["verdict"], "healthy");
    let evidence = verdict(&r, "l7")["evidence"].to_string();
    assert!(evidence.contains("were 504") && evidence.contains("GET /slow/report -> 504"), "{evidence}");
    obs.stop();
}

#[test]
fn an_upstream_503_is_counted_on_both_sides_of_the_proxy() {
    require_root();
    let p = Proxy::start("http-503");
    let obs = Observer::start(&p.pair.server, &[]);
    let codes = p.curl("/busy/", "shop.internal", 4);
    assert!(codes.iter().all(|c| c == "503"), "{codes:?}");
    let proxy = p.proxy(8080);
    let up = format!("{}:9002", p.upstream_ip());
    let r = obs
        .wait_for(Duration::from_secs(5), |r| {
            total(r, "server", &proxy, "shop.internal", "503") == 4 && total(r, "client", &up, &up, "503") == 4
        })
        .unwrap_or_else(|| panic!("503s on both sides never showed: {}", dump(&obs)));
    assert_eq!(total(&r, "server", &proxy, "shop.internal", "no_response"), 0);
    assert_eq!(verdict(&r, "l7")["verdict"], "suspect");
    assert!(verdict(&r, "l7")["rules"].to_string().contains("l7.gateway_errors"));
    obs.stop();
}

#[test]
fn a_healthy_upstream_gives_200s_and_keep_alive_requests_are_matched_in_order() {
    require_root();
    let p = Proxy::start("http-ok");
    let obs = Observer::start(&p.pair.server, &[]);
    let codes = p.curl("/ok/", "api.internal", 5);
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
    // One connection, five requests (curl reuses it for each URL).
    let urls: Vec<String> = (1..=5).map(|i| format!("http://{}/ok/{i}", p.proxy(8080))).collect();
    p.pair.client.run(&format!("curl -s -o /dev/null -H 'Host: keep.internal' {}", urls.join(" ")));
    let proxy = p.proxy(8080);
    let r = obs
        .wait_for(Duration::from_secs(5), |r| total(r, "server", &proxy, "keep.internal", "responses") == 5)
        .unwrap_or_else(|| panic!("five keep-alive responses never matched: {}", dump(&obs)));
    let t = target(&r, "server", &proxy, "keep.internal").unwrap();
    assert_eq!((t["total"]["requests"].as_u64(), t["total"]["2xx"].as_u64()), (Some(5), Some(5)), "{t:#}");
    let paths: Vec<&str> = t["slowest"].as_array().unwrap().iter().filter_map(|s| s["path"].as_str()).collect();
    for i in 1..=5 {
        assert!(paths.contains(&format!("/ok/{i}").as_str()), "each path matched to its own response: {paths:?}");
    }
    assert_eq!(total(&r, "server", &proxy, "api.internal", "2xx"), 5);
    assert_eq!(r.0["http"]["in_flight"], 0);
    assert_eq!(r.0["http"]["unmatched_responses"], 0);
    assert_eq!(verdict(&r, "l7")["verdict"], "healthy", "{:#}", verdict(&r, "l7"));
    let last = obs.stop();
    assert!(last.0["cause"].is_null(), "nothing failed: {:#}", last.0["cause"]);
}

#[test]
fn a_502_over_https_is_seen_through_the_openssl_uprobes_with_its_host_and_process() {
    require_root();
    let p = Proxy::start("http-tls");
    let obs = Observer::start(&p.pair.server, &[]);
    assert!(obs.stderr().contains("OpenSSL uprobes attached"), "{}", obs.stderr());
    for _ in 0..3 {
        assert_eq!(p.curl_tls("/dead/secure"), "502");
    }
    let proxy = p.proxy(8443);
    let r = obs
        .wait_for(Duration::from_secs(5), |r| total(r, "server", &proxy, "good.test:8443", "502") == 3)
        .unwrap_or_else(|| panic!("502s over HTTPS never showed: {}\n{}", dump(&obs), obs.stderr()));
    let t = target(&r, "server", &proxy, "good.test:8443").unwrap();
    assert!(t["process"].as_str().unwrap_or("").starts_with("nginx["), "the serving process: {t:#}");
    assert_eq!(t["slowest"][0]["path"], "/dead/secure");
    // curl, in the client namespace, is seen as the client of the same requests.
    assert_eq!(total(&r, "client", &proxy, "good.test:8443", "502"), 3, "{}", dump(&obs));
    assert!(!r.0["disabled"].to_string().contains("uprobe"), "{}", r.0["disabled"]);
    obs.stop();
}

#[test]
fn garbage_a_header_block_over_the_copy_limit_and_a_split_request_are_unparsed_or_right() {
    require_root();
    let p = Proxy::start("http-bad");
    let obs = Observer::start(&p.pair.server, &[]);
    let proxy = p.proxy(8080);
    let out = p.pair.client.run(&format!("{} http-split {proxy} split.internal", peer_bin().display()));
    assert!(out.contains("HTTP/1.1 404"), "nginx answers the split request: {out}");
    p.pair.client.run(&format!("{} http-garbage {proxy}", peer_bin().display()));
    let r = obs
        .wait_for(Duration::from_secs(5), |r| {
            total(r, "server", &proxy, "split.internal", "responses") == 1 && total(r, "server", &proxy, "", "unparsed") == 2
        })
        .unwrap_or_else(|| panic!("the split request and two unparsed ones never showed: {}", dump(&obs)));
    let t = target(&r, "server", &proxy, "split.internal").unwrap();
    assert_eq!(t["slowest"][0]["path"], "/split/path");
    assert_eq!(t["total"]["4xx"], 1);
    // The unparsed requests still take their place: their responses match them, not others.
    assert_eq!(total(&r, "server", &proxy, "", "4xx"), 2, "{}", dump(&obs));
    assert_eq!(r.0["http"]["unmatched_responses"], 0);
    obs.stop();
}

#[test]
fn a_container_with_its_own_libssl_is_found_through_its_root_and_seen() {
    require_root();
    let p = Proxy::start_with("http-ctr", true);
    let obs = Observer::start(&p.pair.server, &[]);
    let lib = observer_tests::http::libssl_of_nginx();
    let err = obs.stderr();
    // ldd may name it through the /lib symlink; the maps file names the real path.
    let file = lib.rsplit('/').next().unwrap();
    let attached = err.lines().find(|l| l.contains("OpenSSL uprobes attached to /proc/") && l.contains("/root/") && l.ends_with(file));
    assert!(attached.is_some(), "the proxy's own copy of libssl must be attached through /proc/PID/root: {err}");
    assert_eq!(p.curl_tls("/busy/"), "503");
    let proxy = p.proxy(8443);
    let r = obs
        .wait_for(Duration::from_secs(5), |r| total(r, "server", &proxy, "good.test:8443", "503") == 1)
        .unwrap_or_else(|| panic!("the 503 served through the container's libssl never showed: {}", dump(&obs)));
    let t = target(&r, "server", &proxy, "good.test:8443").unwrap();
    assert!(t["process"].as_str().unwrap_or("").starts_with("nginx["), "{t:#}");
    obs.stop();
}

#[test]
fn http2_is_detected_by_alpn_and_preface_and_said_to_be_unparsed() {
    require_root();
    let p = Proxy::start("http-h2");
    let obs = Observer::start(&p.pair.server, &[]);
    assert_eq!(p.curl_tls_port(9443, "/ok/"), "200");
    let proxy = p.proxy(9443);
    let r = obs
        .wait_for(Duration::from_secs(5), |r| {
            // The ServerHello's ALPN (TLS, per destination), and the preface each process
            // wrote or read (OpenSSL plaintext).
            total(r, "client", &proxy, "", "h2_not_parsed") >= 2 && total(r, "server", &proxy, "", "h2_not_parsed") >= 1
        })
        .unwrap_or_else(|| panic!("HTTP/2 never showed: {}", dump(&obs)));
    let note = verdict(&r, "l7")["note"].to_string();
    assert!(note.contains(&format!("HTTP/2 connections with {proxy} (no Host) are not parsed")), "{:#}", verdict(&r, "l7"));
    assert_eq!(total(&r, "client", &proxy, "good.test:9443", "requests"), 0, "nothing is parsed inside HTTP/2");
    obs.stop();
}
