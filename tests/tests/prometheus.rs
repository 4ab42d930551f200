//! `--prometheus ADDR` on real traffic: the endpoint answers OpenMetrics text, and 1,000
//! failing destinations stay within the label cap.

use std::{collections::BTreeSet, thread, time::Duration};

use observer_tests::{
    Observer, Pair,
    peers::{Dnsmasq, Nginx, dig_status},
    require_root,
    tls::{Certs, NginxTls},
};

/// A sample's labels, in order.
type Labels = Vec<(String, String)>;

/// One sample line of the OpenMetrics text format: name, labels, value.
fn sample(line: &str) -> Option<(String, Labels, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return None;
    }
    let mut pairs = Vec::new();
    for kv in labels.split("\",").filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once("=\"")?;
        pairs.push((k.to_owned(), v.trim_end_matches('"').to_owned()));
    }
    Some((name.to_owned(), pairs, value))
}

#[test]
fn the_endpoint_serves_openmetrics_and_a_thousand_failing_destinations_stay_under_the_cap() {
    require_root();
    let pair = Pair::new("prom");
    let s = pair.server_ip();
    let _web = Nginx::start(&pair.server, &format!("{s}:80"));
    let _dns = Dnsmasq::start(&pair.server, &s, 53, &["--host-record=api.test,10.1.1.1"]);
    let certs = Certs::new();
    let _tls = NginxTls::start(&pair.server, &s, &certs);
    let obs = Observer::start(&pair.client, &["--prometheus", "127.0.0.1:9464", "--prometheus-top", "20"]);
    // Every series gets samples (a family without any is not served): connects, RTT and
    // HTTP responses, lookups, TLS handshakes.
    for _ in 0..10 {
        pair.client.run(&format!("curl -s -o /dev/null http://{s}:80/"));
    }
    for _ in 0..3 {
        assert_eq!(dig_status(&pair.client, &s, 53, "api.test", ""), "NOERROR");
        let _ = pair.client.try_run(&format!("curl -s -k -o /dev/null --resolve good.test:443:{s} https://good.test/"));
    }
    // 1,000 destinations (ports nothing listens on), each refused once.
    pair.client.run(&format!(
        "python3 -c 'import socket\nfor p in range(20000, 21000):\n s = socket.socket(); s.connect_ex((\"{s}\", p)); s.close()'"
    ));
    thread::sleep(Duration::from_millis(1500));
    let (ok, out) = pair.client.try_run("curl -s -i http://127.0.0.1:9464/metrics");
    obs.stop();
    assert!(ok, "{out}");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("Content-Type: application/openmetrics-text; version=1.0.0"), "{head}");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    let mut failures_by_dest = Vec::new();
    for line in body.lines() {
        if line.starts_with('#') {
            assert!(["# HELP ", "# TYPE ", "# UNIT ", "# EOF"].iter().any(|p| line.starts_with(p)), "{line}");
            continue;
        }
        let (name, labels, value) = sample(line).unwrap_or_else(|| panic!("not an OpenMetrics sample: {line}"));
        if name == "observer_failures_total" && labels.contains(&("series".to_owned(), "tcp_connect".to_owned())) {
            let dest = labels.iter().find(|(k, _)| k == "dest").map(|(_, v)| v.clone()).unwrap();
            failures_by_dest.push((dest, value));
        }
    }
    let dests: BTreeSet<&str> = failures_by_dest.iter().map(|(d, _)| d.as_str()).collect();
    assert!(dests.len() <= 21 && dests.contains("other"), "20 destinations and `other`: {dests:?}");
    let total: f64 = failures_by_dest.iter().map(|(_, v)| v).sum();
    assert_eq!(total, 1000.0, "every refused connect counted once: {failures_by_dest:?}");
    assert!(body.contains(&format!("observer_tcp_connect_seconds_count{{dest=\"{s}:80\"}} 10")), "{body}");
    assert!(body.contains("observer_verdict{layer=\"tcp_tls\",verdict=\"suspect\"} 1"), "{body}");
    // Every metric the Grafana dashboard queries is one the endpoint serves.
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../observer/grafana/observer-dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut queried = BTreeSet::new();
    for (i, _) in dashboard.match_indices("observer_") {
        let name: String = dashboard[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        queried.insert(name);
    }
    assert!(queried.len() >= 7, "{queried:?}");
    for name in &queried {
        // Its family's declaration: `# TYPE observer_failures counter`.
        let base = ["_bucket", "_total", "_count", "_sum"].iter().find_map(|x| name.strip_suffix(x)).unwrap_or(name);
        assert!(body.contains(&format!("# TYPE {base} ")), "the dashboard queries {name}, which the endpoint does not serve");
    }
}
