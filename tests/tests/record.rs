//! `--record DIR` on real traffic: the interval logs read back with the `hdrhistogram`
//! crate's own reader, the percentile tables, `observer report` run as an unprivileged user,
//! and a directory that cannot be written or fills up.

use std::{path::Path, thread, time::Duration};

use hdrhistogram::{
    Histogram,
    serialization::{Deserializer, interval_log::{IntervalLogIterator, LogEntry}},
};
use observer_tests::{
    Observer, Pair,
    observer::binary,
    peers::{Dnsmasq, Nginx, ROOT_TRUST_ANCHOR, TempDir, dig_status},
    require_root, sh, sh_status,
    tls::{Certs, NginxTls},
};

/// Every (tag, histogram) in an interval log, through the crate's reader.
fn read_log(path: &Path) -> Vec<(String, Histogram<u64>)> {
    use base64::Engine as _;
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut d = Deserializer::new();
    IntervalLogIterator::new(&text)
        .filter_map(|e| match e.expect("a well-formed interval log") {
            LogEntry::Interval(i) => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(i.encoded_histogram()).expect("base64");
                let h: Histogram<u64> = d.deserialize(&mut bytes.as_slice()).expect("a V2 histogram");
                Some((i.tag().map(|t| t.as_str().to_owned()).unwrap_or_default(), h))
            }
            _ => None,
        })
        .collect()
}

/// The intervals of `tag` merged, with observer's bounds (1 µs to 1 h, 3 digits).
fn merged(log: &[(String, Histogram<u64>)], tag: &str) -> Histogram<u64> {
    let mut m = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for (_, h) in log.iter().filter(|(t, _)| t == tag) {
        m.add(h).unwrap();
    }
    m
}

#[test]
fn each_connect_and_lookup_is_in_the_interval_logs_and_observer_report_reads_them_unprivileged() {
    require_root();
    let pair = Pair::new("rec-ok");
    let s = pair.server_ip();
    let _web = Nginx::start(&pair.server, &format!("{s}:80"));
    let _dns = Dnsmasq::start(&pair.server, &s, 53, &["--host-record=api.test,10.1.1.1"]);
    let tmp = TempDir::new("record");
    let dir = tmp.0.join("incident");
    let obs = Observer::start(&pair.client, &["--record", dir.to_str().unwrap(), "--record-reports"]);
    for _ in 0..20 {
        pair.client.run(&format!("curl -s -o /dev/null http://{s}:80/"));
    }
    for _ in 0..5 {
        assert_eq!(dig_status(&pair.client, &s, 53, "api.test", ""), "NOERROR");
    }
    thread::sleep(Duration::from_millis(1500));
    obs.stop();

    let connects = read_log(&dir.join("tcp_connect.hlog"));
    let web = merged(&connects, &format!("{s}:80"));
    assert_eq!(web.len(), 20, "one sample per connect: {connects:?}");
    assert!(web.value_at_quantile(0.5) < 50_000, "a connect over veth takes well under 50 ms: {}", web.value_at_quantile(0.5));
    let lookups = merged(&read_log(&dir.join("dns_lookup.hlog")), &format!("{s}:53"));
    assert_eq!(lookups.len(), 5);
    let rtt = read_log(&dir.join("tcp_rtt.hlog"));
    assert!(rtt.iter().any(|(t, _)| t == &format!("{s}:80")), "RTT samples of the connections: {rtt:?}");

    // The percentile table of the whole recording.
    // Its file name is the tag with ':' (and anything else a shell trips on) as '_'.
    let hgrm = std::fs::read_to_string(dir.join(format!("hgrm/tcp_connect/{s}_80.hgrm")))
        .unwrap_or_else(|e| panic!("{e}: {}", sh(&format!("find {}", dir.display()))));
    assert!(hgrm.contains(", Total count    =           20]"), "{hgrm}");
    // The verdict timeline and the JSON lines.
    let timeline = std::fs::read_to_string(dir.join("timeline.jsonl")).unwrap();
    assert!(timeline.lines().count() >= 1 && timeline.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["layer"].is_string())), "{timeline}");
    let reports = std::fs::read_to_string(dir.join("reports.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(reports.lines().last().unwrap()).unwrap();
    assert_eq!(last["final"], true);

    // `observer report`, as nobody, on a copy it can read: the same percentiles.
    sh(&format!("chmod -R a+rX {}", tmp.0.display()));
    let (ok, out) = sh_status(&format!("setpriv --reuid=nobody --regid=nogroup --clear-groups {} report {}", binary().display(), dir.display()));
    assert!(ok, "observer report failed as nobody: {out}");
    let line = out.lines().find(|l| l.starts_with("tcp_connect") && l.contains(&format!("{s}:80"))).unwrap_or_else(|| panic!("{out}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[2], "20", "{line}");
    assert_eq!(fields[3], format!("{:.3}", web.value_at_quantile(0.5) as f64 / 1000.0), "p50: {line}");
    assert_eq!(fields[6], format!("{:.3}", web.value_at_quantile(0.99) as f64 / 1000.0), "p99: {line}");
    // Two recordings merge (here the same one twice, as two hosts' would): counts add up.
    let (_, out) = sh_status(&format!("{0} report {1} {1} --dest {s}:80", binary().display(), dir.display()));
    let line = out.lines().find(|l| l.starts_with("tcp_connect")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(line.split_whitespace().nth(2), Some("40"), "{out}");
    // A time range after the recording holds nothing; a destination filter keeps one.
    let (_, out) = sh_status(&format!("{} report {} --from +3600", binary().display(), dir.display()));
    assert!(out.starts_with("0 intervals"), "{out}");
    let (_, out) = sh_status(&format!("{} report {} --dest {s}:53", binary().display(), dir.display()));
    assert!(out.contains("dns_lookup") && !out.contains("tcp_connect"), "{out}");
    let (ok, out) = sh_status(&format!("{} report {}", binary().display(), tmp.0.display()));
    assert!(!ok && out.contains("no interval logs"), "{out}");
}

#[test]
fn a_directory_that_cannot_be_written_is_one_line_and_observer_runs_on() {
    require_root();
    let pair = Pair::new("rec-bad");
    let obs = Observer::start(&pair.client, &["--record", "/proc/observer-cannot-record"]);
    assert!(obs.wait_for(Duration::from_secs(3), |_| true).is_some(), "reports go on");
    let err = obs.stderr();
    assert!(err.contains("cannot record to /proc/observer-cannot-record") && err.contains("running without a recording"), "{err}");
    obs.stop();
}

#[test]
fn a_disk_that_fills_up_stops_the_recording_with_one_line_and_observer_runs_on() {
    require_root();
    let pair = Pair::new("rec-full");
    let s = pair.server_ip();
    let _web = Nginx::start(&pair.server, &format!("{s}:80"));
    let tmp = TempDir::new("record-full");
    // Ten pages: the headers take six, the JSON lines fill the rest within seconds.
    sh(&format!("mount -t tmpfs -o size=40k observer-test {}", tmp.0.display()));
    let dir = tmp.0.join("rec");
    let obs = Observer::start(&pair.client, &["--record", dir.to_str().unwrap(), "--record-reports"]);
    let mut stopped = false;
    for _ in 0..60 {
        pair.client.run(&format!("curl -s -o /dev/null http://{s}:80/"));
        thread::sleep(Duration::from_millis(200));
        if obs.stderr().contains("stopped at") {
            stopped = true;
            break;
        }
    }
    let err = obs.stderr();
    let reports_then = obs.reports().len();
    thread::sleep(Duration::from_secs(1));
    let reports_after = obs.reports().len();
    if stopped {
        obs.stop();
    }
    let _ = sh_status(&format!("umount {}", tmp.0.display()));
    assert!(stopped, "the recording never stopped: {err}");
    let line = err.lines().find(|l| l.contains("stopped at")).unwrap();
    assert!(line.contains(&format!("recording to {} stopped at 20", dir.display())) && line.contains("No space left on device"), "{line}");
    assert_eq!(err.matches("stopped at").count(), 1, "one line: {err}");
    assert!(reports_after > reports_then, "observer ran on: {reports_then} reports, then {reports_after}");
}

#[test]
fn the_report_of_a_recorded_servfail_names_dns_and_embeds_a_plot_that_parses() {
    require_root();
    let pair = Pair::new("rec-servfail");
    let _main = Dnsmasq::start(&pair.server, &pair.server_ip(), 53, &["--address=/healthy.test/10.1.1.1"]);
    let vip = pair.add_server_ip(3);
    // A validating resolver in front of one that cannot prove its answers: SERVFAIL.
    let _validating = Dnsmasq::start(&pair.server, &vip, 53, &[&format!("--server={}", pair.server_ip()), "--dnssec", ROOT_TRUST_ANCHOR]);
    let tmp = TempDir::new("record-servfail");
    let dir = tmp.0.join("rec");
    let obs = Observer::start(&pair.client, &["--record", dir.to_str().unwrap()]);
    for _ in 0..5 {
        assert_eq!(dig_status(&pair.client, &vip, 53, "healthy.test", ""), "SERVFAIL");
    }
    obs.wait_for(Duration::from_secs(5), |r| r.0["cause"]["layer"] == "dns").expect("DNS named");
    obs.stop();
    let err = obs_line(&dir);
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert!(md.contains("### dns suspect at") && md.contains("SERVFAIL"), "{md}");
    let plot = format!("plots/dns_lookup-{}_53.svg", vip);
    assert!(md.contains(&format!("![dns_lookup {vip}:53]({plot})")), "{md}");
    // The SVG is well-formed XML with the plot's title in it.
    let (ok, out) = sh_status(&format!("python3 -c 'import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]); print(d.documentElement.tagName)' {}", dir.join(&plot).display()));
    assert!(ok && out.trim() == "svg", "{out}");
    let svg = std::fs::read_to_string(dir.join(&plot)).unwrap();
    assert!(svg.contains(&format!("dns_lookup {vip}:53")) && svg.contains("failures per interval"), "the plot's labels");
    // Offline, the same page comes back.
    std::fs::remove_file(dir.join("report.md")).unwrap();
    let (ok, out) = sh_status(&format!("{} report {}", binary().display(), dir.display()));
    assert!(ok, "{out}");
    assert!(std::fs::read_to_string(dir.join("report.md")).unwrap().contains("### dns suspect at"), "{out}");
}

/// What the recording directory holds, for a failure message.
fn obs_line(dir: &Path) -> String {
    sh_status(&format!("ls -lR {}", dir.display())).1
}

#[test]
fn under_sudo_every_file_of_the_recording_belongs_to_the_invoking_user() {
    require_root();
    let pair = Pair::new("rec-owner");
    let s = pair.server_ip();
    let _web = Nginx::start(&pair.server, &format!("{s}:80"));
    let tmp = TempDir::new("record-owner");
    let dir = tmp.0.join("rec");
    // What sudo sets: the user behind it (here nobody, 65534).
    let obs = Observer::start_with_env(&pair.client, &["--record", dir.to_str().unwrap()], &[("SUDO_UID", "65534"), ("SUDO_GID", "65534")]);
    for _ in 0..5 {
        pair.client.run(&format!("curl -s -o /dev/null http://{s}:81/ http://{s}:80/"));
    }
    thread::sleep(Duration::from_millis(800));
    obs.stop();
    // Files written at exit (tables, report, plots) too, after the privileges were dropped.
    let (_, out) = sh_status(&format!("find {} -printf '%u:%g %p\\n'", dir.display()));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().any(|l| l.contains("/hgrm/")) && lines.iter().any(|l| l.contains("/plots/")), "{out}");
    for l in &lines {
        assert!(l.starts_with("nobody:nogroup ") || l.starts_with("65534:65534 "), "not the invoking user's: {l}\n{out}");
    }
}

#[test]
fn with_redact_no_name_appears_in_any_file_line_or_metric() {
    require_root();
    let pair = Pair::new("rec-redact");
    let s = pair.server_ip();
    let _dns = Dnsmasq::start(&pair.server, &s, 53, &["--host-record=api.internal,10.1.1.1"]);
    let _web = Nginx::start(&pair.server, &format!("{s}:80"));
    let certs = Certs::new();
    let _tls = NginxTls::start(&pair.server, &s, &certs);
    let tmp = TempDir::new("record-redact");
    let dir = tmp.0.join("rec");
    let obs = Observer::start(&pair.client, &["--redact", "--record", dir.to_str().unwrap(), "--record-reports", "--prometheus", "127.0.0.1:9465"]);
    for _ in 0..3 {
        dig_status(&pair.client, &s, 53, "secretname.internal", "");
        dig_status(&pair.client, &s, 53, "api.internal", "");
        pair.client.run(&format!("curl -s -o /dev/null -H 'Host: api.internal' http://{s}:80/private/path"));
        // A rejected name (unrecognized_name) and a good one.
        let _ = pair.client.try_run(&format!("curl -s -k -o /dev/null --resolve other.test:443:{s} https://other.test/"));
        let _ = pair.client.try_run(&format!("curl -s -k -o /dev/null --resolve good.test:443:{s} https://good.test/"));
    }
    thread::sleep(Duration::from_millis(1500));
    let (_, metrics) = pair.client.try_run("curl -s http://127.0.0.1:9465/metrics");
    let lines: String = obs.reports().iter().map(|r| r.0.to_string()).collect();
    obs.stop();
    let (_, files) = sh_status(&format!("cat $(find {} -type f)", dir.display()));
    let names = ["secretname", "api.internal", "private/path", "other.test", "good.test"];
    for (what, text) in [("the JSON lines", &lines), ("the recording", &files), ("the metrics", &metrics)] {
        for n in names {
            assert!(!text.contains(n), "{n} is in {what}");
        }
    }
    // What was hashed is still there, as tokens; the addresses are not hashed.
    assert!(lines.contains("\"qname\":\"h:") && lines.contains("\"sni\":\"h:") && lines.contains("\"host\":\"h:"), "{lines}");
    assert!(lines.contains(&format!("{s}:443")) && files.contains(&format!("{s}:53")), "addresses stay");
}
