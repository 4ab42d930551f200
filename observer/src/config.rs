//! Verdict thresholds: defaults < TOML file (`--config`, `OBSERVER_CONFIG`) < `--set key=value`.
//! Unknown keys are errors, so a typo never silently keeps a default.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The defaults, with the reason for each. `observer --print-config` prints this; a unit test
/// keeps it equal to `Config::default()`.
pub const DEFAULT_TOML: &str = r#"# observer verdict thresholds. Every value here is the default; see ../shared/TRIAGE.md.
# All figures are over the sliding window (--window, 10 s by default).

[verdict]
# A suspect layer turns healthy again only after its rules have stayed quiet this long:
# a fault is named at once, but a rule hovering at its threshold does not flap.
clear_after_s = 5.0

[dns]
# Error rcodes (NXDOMAIN, SERVFAIL, REFUSED) make a resolver suspect when they are at least
# this share of its responses ...
error_share = 0.05
# ... and at least this many.
min_errors = 1
# Queries with no response within --dns-timeout: one in thousands is UDP being UDP (a
# silent resolver is dns.silent's, below).
min_unanswered = 2
# Queries (waiting 250 ms or more) for a resolver that has answered nothing since the
# oldest was sent: two, since one lost query while its client pauses is not a silent
# resolver (clients retry within a second or two).
min_silent = 2
# A resolver is silent when it has answered nothing since a query that has waited at least
# this many times its own since-start p99 ...
overdue_factor = 10.0
# ... and at least this long: named within about 2 s instead of after the timeout.
overdue_floor_ms = 1000.0
# Lookup p95 at or above this, in the window or in the last 2 s (a resolver that just turned
# slow), is a red flag (a healthy baseline is under 100-200 ms).
p95_ms = 200.0
# Lookup p95 at or above this many times the resolver's own since-start median ...
baseline_factor = 5.0
# ... counts only when the p95 is also at least this (microsecond noise is not a regression).
baseline_floor_ms = 20.0
# Latency rules need at least this many lookups in the window (or in the last 2 s).
min_latency_samples = 3
# Two resolvers giving disjoint address sets for one name.
divergence = true

[tcp]
# Connects answered by RST.
min_refused = 1
# Connects that timed out (SYN retries exhausted) or got host/network unreachable.
min_timed_out = 1
# SYN retransmits: the first sign of a blackhole, long before the kernel gives up.
min_syn_retransmits = 1
# Connect success (established / finished) below this ratio ...
success_ratio = 0.999
# ... over at least this many finished connects.
min_attempts = 1
# Resets received on established connections ...
min_resets = 1
# ... that are at least this share of the connections established to it in the window
# (counted as at least one): a load balancer that resets a connection now and then while
# hundreds succeed is not a fault, a server that resets them all is.
reset_share = 0.2

[tls]
# Failed handshakes (a fatal alert, a close or reset before completion, or no ServerHello in
# time) make a destination and SNI suspect when there are at least this many ...
min_failures = 1
# ... and they are at least this share of its finished handshakes: on a busy destination a
# few cancelled handshakes are normal.
failure_share = 0.2
# A ClientHello with no ServerHello after this many seconds is stalled.
stall_after_s = 10.0

[routing]
# ICMP destination unreachable (network, host, administratively prohibited) for one
# destination: this many in the window. Port unreachable (nothing listens) and
# fragmentation needed are said in the note, not judged.
min_unreachable = 1
# ICMP time exceeded for one destination (a routing loop, or a TTL too low).
min_time_exceeded = 1
# Changes of the hop count to a peer (from its SYN-ACKs' TTL) in the window.
min_path_changes = 1
# Retransmitted segments over data segments sent to one destination, in the window: loss
# (1 to 2 % already hurts real-time traffic and makes retries pile up) ...
retransmit_ratio = 0.01
# ... over at least this many data segments.
min_segments = 200
# The same over the last 2 s, and over the last second with twice min_segments, so that
# loss that just started is named before it is a share of the whole window: a higher share,
# since one loss episode can retransmit a burst (44 of 3,685 segments, 1.2 %, on a healthy
# busy host: one lost GSO packet).
recent_retransmit_ratio = 0.015
# Smoothed RTT p95 in the window at or above this many times the destination's own
# baseline (the median before the window) ...
rtt_jump_factor = 3.0
# ... and at least this much above it ...
rtt_jump_min_ms = 20.0
# ... from at least this many samples.
min_rtt_samples = 3
# Packets to or from one destination that this host dropped itself (a firewall rule, a
# full queue or socket buffer), for reasons that lose traffic, in the window.
min_local_drops = 5
# connect() failing with ENETUNREACH or EHOSTUNREACH before any SYN (no route).
min_no_route = 1
# The blast radius rolls destinations up into prefixes of these lengths.
prefix_v4 = 24
prefix_v6 = 64

[l7]
# 502, 503 and 504 (a gateway's answers about its upstream) for one destination or local
# port and Host: at least this many in the window.
min_gateway_errors = 3
# Any 5xx, and requests with no response (--http-timeout), make a target suspect when they
# are at least this share of its requests ...
error_share = 0.05
# ... and at least this many.
min_errors = 3
# Response time p95 above the timeout budget of the hop in front (a CDN or proxy timeout).
timeout_budget_ms = 5000.0
# Response time p95 at or above this many times the target's own since-start median ...
baseline_factor = 4.0
# ... counts only when the p95 is also at least this.
baseline_floor_ms = 100.0
# Latency rules need at least this many responses in the window.
min_latency_samples = 5
"#;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub verdict: VerdictSettings,
    pub dns: DnsThresholds,
    pub tcp: TcpThresholds,
    pub tls: TlsThresholds,
    pub routing: RoutingThresholds,
    pub l7: L7Thresholds,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerdictSettings {
    pub clear_after_s: f64,
}

impl Default for VerdictSettings {
    fn default() -> Self {
        VerdictSettings { clear_after_s: 5.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingThresholds {
    pub min_unreachable: u64,
    pub min_time_exceeded: u64,
    pub min_path_changes: u64,
    pub retransmit_ratio: f64,
    pub min_segments: u64,
    pub recent_retransmit_ratio: f64,
    pub rtt_jump_factor: f64,
    pub rtt_jump_min_ms: f64,
    pub min_rtt_samples: u64,
    pub min_local_drops: u64,
    pub min_no_route: u64,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
}

impl Default for RoutingThresholds {
    fn default() -> Self {
        RoutingThresholds {
            min_unreachable: 1,
            min_time_exceeded: 1,
            min_path_changes: 1,
            retransmit_ratio: 0.01,
            min_segments: 200,
            recent_retransmit_ratio: 0.015,
            rtt_jump_factor: 3.0,
            rtt_jump_min_ms: 20.0,
            min_rtt_samples: 3,
            min_local_drops: 5,
            min_no_route: 1,
            prefix_v4: 24,
            prefix_v6: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L7Thresholds {
    pub min_gateway_errors: u64,
    pub error_share: f64,
    pub min_errors: u64,
    pub timeout_budget_ms: f64,
    pub baseline_factor: f64,
    pub baseline_floor_ms: f64,
    pub min_latency_samples: u64,
}

impl Default for L7Thresholds {
    fn default() -> Self {
        L7Thresholds {
            min_gateway_errors: 3,
            error_share: 0.05,
            min_errors: 3,
            timeout_budget_ms: 5000.0,
            baseline_factor: 4.0,
            baseline_floor_ms: 100.0,
            min_latency_samples: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsThresholds {
    pub error_share: f64,
    pub min_errors: u64,
    pub min_unanswered: u64,
    pub min_silent: u64,
    pub overdue_factor: f64,
    pub overdue_floor_ms: f64,
    pub p95_ms: f64,
    pub baseline_factor: f64,
    pub baseline_floor_ms: f64,
    pub min_latency_samples: u64,
    pub divergence: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpThresholds {
    pub min_refused: u64,
    pub min_timed_out: u64,
    pub min_syn_retransmits: u64,
    pub success_ratio: f64,
    pub min_attempts: u64,
    pub min_resets: u64,
    pub reset_share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsThresholds {
    pub min_failures: u64,
    pub failure_share: f64,
    pub stall_after_s: f64,
}

impl Default for TlsThresholds {
    fn default() -> Self {
        TlsThresholds { min_failures: 1, failure_share: 0.2, stall_after_s: 10.0 }
    }
}

impl Default for DnsThresholds {
    fn default() -> Self {
        DnsThresholds {
            error_share: 0.05,
            min_errors: 1,
            min_unanswered: 2,
            min_silent: 2,
            overdue_factor: 10.0,
            overdue_floor_ms: 1000.0,
            p95_ms: 200.0,
            baseline_factor: 5.0,
            baseline_floor_ms: 20.0,
            min_latency_samples: 3,
            divergence: true,
        }
    }
}

impl Default for TcpThresholds {
    fn default() -> Self {
        TcpThresholds {
            min_refused: 1,
            min_timed_out: 1,
            min_syn_retransmits: 1,
            success_ratio: 0.999,
            min_attempts: 1,
            min_resets: 1,
            reset_share: 0.2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("--set {0}: expected SECTION.KEY=VALUE, for example dns.p95_ms=300")]
    SetSyntax(String),
    #[error("--set {setting}: {message}")]
    Set { setting: String, message: String },
}

/// A config file is a few KiB; anything past this is not one (a log, /dev/zero).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The file's text: a regular file (a FIFO would block, a directory cannot be read), at most
/// MAX_CONFIG_BYTES, UTF-8 as TOML requires.
fn read_text(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    // Before opening: opening a FIFO waits for a writer.
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if meta.is_dir() {
        return Err("is a directory; --config takes a TOML file (observer --print-config writes one)".to_owned());
    }
    if !meta.is_file() {
        return Err("is not a regular file; --config takes a TOML file".to_owned());
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!("is {} bytes; a config file is at most {MAX_CONFIG_BYTES} bytes", meta.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut bytes = Vec::new();
    // The size can change after the check: read one byte past the cap at most.
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!("is over {MAX_CONFIG_BYTES} bytes; a config file is at most that"));
    }
    String::from_utf8(bytes).map_err(|e| format!("is not UTF-8 (the first bad byte is at offset {}); TOML files are UTF-8", e.utf8_error().valid_up_to()))
}

/// Load the file (if any), apply `--set` overrides, and check every key and type.
pub fn load(file: Option<&Path>, sets: &[String]) -> Result<Config, ConfigError> {
    let (mut table, origin) = match file {
        Some(path) => {
            let p = path.display().to_string();
            let text = read_text(path).map_err(|message| ConfigError::Parse { path: p.clone(), message })?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| ConfigError::Parse { path: p.clone(), message: e.to_string() })?;
            (table, p)
        }
        None => (toml::Table::new(), "defaults".to_owned()),
    };
    for setting in sets {
        let (key, value) = setting.split_once('=').ok_or_else(|| ConfigError::SetSyntax(setting.clone()))?;
        let (section, field) = key.trim().split_once('.').ok_or_else(|| ConfigError::SetSyntax(setting.clone()))?;
        // Parse the value as TOML so that numbers, booleans and strings keep their types.
        let parsed: toml::Table = toml::from_str(&format!("v = {}", value.trim()))
            .map_err(|e| ConfigError::Set { setting: setting.clone(), message: e.to_string() })?;
        let entry = table.entry(section.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section_table) = entry.as_table_mut() else {
            return Err(ConfigError::Set { setting: setting.clone(), message: format!("`{section}` is not a section") });
        };
        section_table.insert(field.to_owned(), parsed["v"].clone());
    }
    let merged = toml::to_string(&table).map_err(|e| ConfigError::Parse { path: origin.clone(), message: e.to_string() })?;
    let cfg: Config = toml::from_str(&merged).map_err(|e| {
        if sets.is_empty() {
            ConfigError::Parse { path: origin.clone(), message: e.to_string() }
        } else {
            ConfigError::Set { setting: sets.join(" "), message: format!("{e} (after applying {origin})") }
        }
    })?;
    if cfg.routing.prefix_v4 > 32 || cfg.routing.prefix_v6 > 128 {
        return Err(ConfigError::Parse {
            path: origin,
            message: format!("routing.prefix_v4 must be at most 32 and routing.prefix_v6 at most 128 (got {} and {})", cfg.routing.prefix_v4, cfg.routing.prefix_v6),
        });
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_defaults_are_the_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn file_then_set_overrides_in_that_order() {
        let dir = std::env::temp_dir().join(format!("observer-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "[dns]\np95_ms = 300.0\nmin_errors = 4\n").unwrap();
        let cfg = load(Some(&f), &["dns.min_errors=7".into(), "tcp.success_ratio=0.99".into()]).unwrap();
        assert_eq!(cfg.dns.p95_ms, 300.0);
        assert_eq!(cfg.dns.min_errors, 7);
        assert_eq!(cfg.tcp.success_ratio, 0.99);
        assert_eq!(cfg.tcp.min_refused, 1, "untouched keys keep their defaults");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_name_them() {
        let e = load(None, &["dns.p95ms=3".into()]).unwrap_err().to_string();
        assert!(e.contains("p95ms"), "{e}");
        let e = load(None, &["dns.p95_ms=fast".into()]).unwrap_err().to_string();
        assert!(e.contains("--set dns.p95_ms=fast"), "{e}");
        let e = load(None, &["p95_ms=3".into()]).unwrap_err().to_string();
        assert!(e.contains("SECTION.KEY=VALUE"), "{e}");
        let dir = std::env::temp_dir().join(format!("observer-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.toml");
        std::fs::write(&f, "[tcp]\nmin_refused = \"one\"\n").unwrap();
        let e = load(Some(&f), &[]).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("min_refused"), "{e}");
        let e = load(Some(&dir.join("missing.toml")), &[]).unwrap_err().to_string();
        assert!(e.contains("missing.toml: cannot read it: No such file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_a_huge_file_a_device_and_non_utf8_are_one_line_errors() {
        let dir = std::env::temp_dir().join(format!("observer-config-edges-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = load(Some(&dir), &[]).unwrap_err().to_string();
        assert_eq!(e, format!("config file {}: is a directory; --config takes a TOML file (observer --print-config writes one)", dir.display()));
        let huge = dir.join("huge.toml");
        let f = std::fs::File::create(&huge).unwrap();
        // Sparse: the size is what is checked, nothing is read.
        f.set_len(5 * 1024 * 1024 * 1024).unwrap();
        let e = load(Some(&huge), &[]).unwrap_err().to_string();
        assert!(e.ends_with("huge.toml: is 5368709120 bytes; a config file is at most 1048576 bytes"), "{e}");
        let e = load(Some(Path::new("/dev/zero")), &[]).unwrap_err().to_string();
        assert_eq!(e, "config file /dev/zero: is not a regular file; --config takes a TOML file");
        let latin1 = dir.join("latin1.toml");
        std::fs::write(&latin1, b"[dns]\n# caf\xe9\np95_ms = 300.0\n").unwrap();
        let e = load(Some(&latin1), &[]).unwrap_err().to_string();
        assert!(e.ends_with("latin1.toml: is not UTF-8 (the first bad byte is at offset 11); TOML files are UTF-8"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
