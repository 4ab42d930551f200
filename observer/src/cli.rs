//! Command line. Every flag can also come from an `OBSERVER_*` environment variable; the
//! flag wins.

use std::{path::PathBuf, time::Duration};

use crate::{present::record::summary::ReportArgs, probe::tc_attach::TcAttach};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The TUI on a terminal, `json` otherwise.
    Auto,
    /// One JSON object per interval, one per line.
    Json,
    /// A plain table per interval.
    Text,
    /// One JSON object per verdict change, one per line.
    Events,
    /// The live terminal view (the default on a terminal).
    Tui,
}

/// Passive network triage: which layer is failing (DNS, TCP/TLS, routing, L7), per
/// destination, from real traffic. Needs root (or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN).
///
/// The TUI starts on a terminal; elsewhere it prints JSON lines. Keys in the TUI: Tab or 1-4
/// choose a layer, Up/Down a destination, Enter drills down, Esc goes back, p pauses,
/// c copies the evidence (to a file, and to the clipboard through OSC 52), r starts or stops
/// a recording (as --record, beside the evidence copies), w writes its report now, q quits.
#[derive(Debug, Parser)]
#[command(name = "observer", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Auto, env = "OBSERVER_FORMAT")]
    pub format: Format,

    /// Verdict thresholds from this TOML file (see --print-config).
    #[arg(long, global = true, env = "OBSERVER_CONFIG")]
    pub config: Option<PathBuf>,

    /// Override one threshold, e.g. `--set dns.p95_ms=300` (repeatable; beats --config).
    #[arg(long = "set", global = true, value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,

    /// Print the verdict thresholds (the defaults, or the result of --config and --set) as
    /// TOML, and exit.
    #[arg(long, global = true)]
    pub print_config: bool,

    /// Seconds between reports.
    #[arg(long, global = true, default_value_t = 1.0, value_parser = positive_seconds, env = "OBSERVER_INTERVAL")]
    pub interval: f64,

    /// Seconds of the sliding window that `window` figures cover.
    #[arg(long, global = true, default_value_t = 10.0, value_parser = positive_seconds, env = "OBSERVER_WINDOW")]
    pub window: f64,

    /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long, global = true, value_parser = positive_seconds, env = "OBSERVER_DURATION")]
    pub duration: Option<f64>,

    /// Size of the kernel's per-destination table (LRU: the least recently used goes first).
    #[arg(long, global = true, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..=1_048_576), env = "OBSERVER_MAX_DESTINATIONS")]
    pub max_destinations: u32,

    /// Size of the kernel's table of connections this host opens, each held from connect()
    /// until it closes (LRU: the least recently used goes first, counted in
    /// lost.conn_evicted). Twice this sizes the table of established connections sampled for
    /// loss and RTT.
    #[arg(long, global = true, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(16..=4_194_304), env = "OBSERVER_MAX_CONNECTIONS")]
    pub max_connections: u32,

    /// Size of the kernel's per-local-port table (server role).
    #[arg(long, global = true, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=65_536), env = "OBSERVER_MAX_PORTS")]
    pub max_ports: u32,

    /// Connect-event ring buffer size in KiB (a power of two, at least 4).
    #[arg(long, global = true, default_value_t = 256, value_parser = ringbuf_kib, env = "OBSERVER_RINGBUF_KIB")]
    pub ringbuf_kib: u32,

    /// At most this many destinations per report (the most troubled first); the rest are
    /// counted in `destinations_omitted`.
    #[arg(long, global = true, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..), env = "OBSERVER_TOP")]
    pub top: u32,

    /// Watch DNS only on these interfaces (repeat the flag or separate with commas). Default:
    /// every interface that is up, including ones that come up later.
    #[arg(long = "interface", global = true, value_delimiter = ',', value_parser = interface_name, env = "OBSERVER_INTERFACES")]
    pub interfaces: Vec<String>,

    /// Another UDP port that carries DNS, besides 53 (repeatable, up to 8).
    #[arg(long = "dns-port", global = true, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..), env = "OBSERVER_DNS_PORTS")]
    pub dns_ports: Vec<u16>,

    /// Seconds after which a DNS query with no response counts as unanswered.
    #[arg(long, global = true, default_value_t = 5.0, value_parser = positive_seconds, env = "OBSERVER_DNS_TIMEOUT")]
    pub dns_timeout: f64,

    /// At most this many (qname, qtype) entries per report, the most troubled first.
    #[arg(long, global = true, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..), env = "OBSERVER_DNS_TOP_NAMES")]
    pub dns_top_names: u32,

    /// Names kept in memory (the least recently seen go first).
    #[arg(long, global = true, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(16..), env = "OBSERVER_MAX_DNS_NAMES")]
    pub max_dns_names: u32,

    /// Size of the kernel's per-resolver table (LRU).
    #[arg(long, global = true, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=65_536), env = "OBSERVER_MAX_RESOLVERS")]
    pub max_resolvers: u32,

    /// Size of each of the two DNS message ring buffers (one for the even CPUs, one for the
    /// odd) in KiB, a power of two, at least 4.
    #[arg(long, global = true, default_value_t = 512, value_parser = ringbuf_kib, env = "OBSERVER_DNS_RINGBUF_KIB")]
    pub dns_ringbuf_kib: u32,

    /// Size of the kernel's table of TLS handshakes in progress (LRU).
    #[arg(long, global = true, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(64..=1_048_576), env = "OBSERVER_MAX_TLS_FLOWS")]
    pub max_tls_flows: u32,

    /// TLS handshake ring buffer size in KiB (a power of two, at least 4).
    #[arg(long, global = true, default_value_t = 512, value_parser = ringbuf_kib, env = "OBSERVER_TLS_RINGBUF_KIB")]
    pub tls_ringbuf_kib: u32,

    /// An HTTP request with no response after this many seconds counts as `no_response`.
    #[arg(long, global = true, default_value_t = 30.0, value_parser = positive_seconds, env = "OBSERVER_HTTP_TIMEOUT")]
    pub http_timeout: f64,

    /// HTTP ring buffer size in KiB (a power of two, at least 4): request heads, status
    /// lines and OpenSSL plaintext heads.
    #[arg(long, global = true, default_value_t = 512, value_parser = ringbuf_kib, env = "OBSERVER_HTTP_RINGBUF_KIB")]
    pub http_ringbuf_kib: u32,

    /// Record for the postmortem into DIR: HdrHistogram interval logs per latency series
    /// (tagged by destination), failures per interval and the verdict timeline; at exit a
    /// percentile table per histogram (hgrm/) and report.md with plots. Read it back with
    /// `observer report DIR`.
    #[arg(long, global = true, value_name = "DIR", env = "OBSERVER_RECORD")]
    pub record: Option<PathBuf>,

    /// With --record, also write the JSON lines (reports.jsonl).
    #[arg(long, global = true, requires = "record", env = "OBSERVER_RECORD_REPORTS")]
    pub record_reports: bool,

    /// Hash query names, SNI, certificate names, HTTP Hosts and paths (a keyed hash, its key
    /// drawn at start) in everything observer writes: JSON lines, the TUI and its evidence
    /// copy, recordings, metrics. Addresses stay.
    #[arg(long, global = true, env = "OBSERVER_REDACT")]
    pub redact: bool,

    /// Serve OpenMetrics (Prometheus) on ADDR, e.g. 127.0.0.1:9464: per-destination failures
    /// and latency histograms, each layer's verdict, lost events.
    #[arg(long, global = true, value_name = "ADDR", env = "OBSERVER_PROMETHEUS")]
    pub prometheus: Option<std::net::SocketAddr>,

    /// With --prometheus: the first N destinations seen get their own series; the rest count
    /// under dest="other".
    #[arg(long, global = true, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000), env = "OBSERVER_PROMETHEUS_TOP")]
    pub prometheus_top: u32,

    /// Do not attach uprobes to OpenSSL (HTTPS is then seen only as TLS handshakes).
    #[arg(long, global = true, env = "OBSERVER_NO_SSL_UPROBES")]
    pub no_ssl_uprobes: bool,

    /// How to attach the TC program: `tcx` links (Linux 6.6+, first in the chain), `classic`
    /// clsact filters (any kernel; created and removed by observer), or `auto`: TCX where the
    /// kernel has it.
    #[arg(long, global = true, value_enum, default_value_t = TcAttach::Auto, env = "OBSERVER_TC_ATTACH")]
    pub tc_attach: TcAttach,

    /// Also attach an empty TC program beside the DNS ones: the baseline for
    /// `cargo xtask bench`.
    #[arg(long, global = true, hide = true)]
    pub tc_baseline: bool,

    /// Attach only the empty TC program, instead of observer's: the "empty program" column
    /// of `cargo xtask bench`.
    #[arg(long, global = true, hide = true)]
    pub tc_empty_only: bool,

    /// The daemon's Unix socket: `observer daemon` listens on it, and observer attaches to it
    /// when a daemon runs.
    #[arg(long, global = true, value_name = "PATH", default_value = "/run/observer/observer.sock", env = "OBSERVER_SOCKET")]
    pub socket: PathBuf,

    /// Attach to the running daemon (history included); an error when none runs. Without
    /// --attach or --standalone, observer attaches when a daemon runs and starts its own
    /// probe otherwise (always with --record, --prometheus or --redact, which need one).
    #[arg(long, conflicts_with_all = ["standalone", "record", "prometheus", "redact"])]
    pub attach: bool,

    /// Start a probe of its own, even when a daemon runs.
    #[arg(long)]
    pub standalone: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Percentiles from recordings made with --record, for any time range and destination,
    /// and report.md re-rendered; offline, no privileges needed.
    Report(ReportArgs),
    /// Run the probe and the layers continuously, keep a flight recorder of the last
    /// minutes, and serve it to observer clients on --socket.
    Daemon(DaemonArgs),
    /// Write a recording (as --record makes) of a span the daemon's flight recorder holds;
    /// `observer report DIR` reads it.
    Export(ExportArgs),
    /// Print the man page (man) or a shell completion script (bash, zsh, fish): what the
    /// package installs.
    #[command(hide = true)]
    Generate {
        #[arg(value_parser = ["man", "bash", "zsh", "fish"])]
        what: String,
    },
}

/// The man page or a completion script for `what` (see [`Command::Generate`]).
pub fn generate(what: &str, out: &mut impl std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    match what {
        "man" => clap_mangen::Man::new(cmd).render(out),
        shell => {
            let shell = match shell {
                "zsh" => clap_complete::Shell::Zsh,
                "fish" => clap_complete::Shell::Fish,
                _ => clap_complete::Shell::Bash,
            };
            clap_complete::generate(shell, &mut cmd, "observer", out);
            Ok(())
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Minutes of history the flight recorder keeps.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=10_080), env = "OBSERVER_HISTORY_MINUTES")]
    pub history_minutes: u32,

    /// The flight recorder's memory cap in MiB (compressed intervals); the oldest go first.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536), env = "OBSERVER_MEMORY_MB")]
    pub memory_mb: u32,

    /// Also write every interval to DIR, for exports older than memory holds.
    #[arg(long, value_name = "DIR", env = "OBSERVER_SPILL")]
    pub spill: Option<PathBuf>,

    /// The spill directory's cap in MiB: past it (or on a full disk) the oldest file goes.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), env = "OBSERVER_SPILL_MAX_MB")]
    pub spill_max_mb: u32,

    /// The group that may use the socket (created by the install steps).
    #[arg(long, default_value = "observer", env = "OBSERVER_SOCKET_GROUP")]
    pub socket_group: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The span that ends now, e.g. 15m, 90s, 1h.
    #[arg(long, value_name = "DURATION", conflicts_with_all = ["from", "to"], required_unless_present = "from")]
    pub last: Option<humantime::Duration>,

    /// The span's start: RFC 3339 (2026-11-26T14:02:00Z).
    #[arg(long, value_name = "T")]
    pub from: Option<String>,

    /// The span's end (default: now).
    #[arg(long, value_name = "T", requires = "from")]
    pub to: Option<String>,

    /// Where to write the recording (created; must be new or empty).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

impl Cli {
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval)
    }
    pub fn window(&self) -> Duration {
        Duration::from_secs_f64(self.window.max(self.interval))
    }
    pub fn duration(&self) -> Option<Duration> {
        self.duration.map(Duration::from_secs_f64)
    }

    /// Checks clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.dns_ports.len() > observer_common::dns::MAX_EXTRA_PORTS as usize {
            return Err(format!(
                "--dns-port: at most {} extra ports, got {}",
                observer_common::dns::MAX_EXTRA_PORTS,
                self.dns_ports.len()
            ));
        }
        Ok(())
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v <= 31_536_000.0 {
        Ok(v)
    } else {
        Err(format!("`{s}` must be more than 0 and at most a year"))
    }
}

/// A Linux interface name: 1 to 15 bytes, no '/', ':' or whitespace (it is also a path
/// under /sys/class/net).
fn interface_name(s: &str) -> Result<String, String> {
    let bad = s.is_empty() || s.len() > 15 || s == "." || s == ".." || s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(format!("`{s}` is not an interface name (1 to 15 bytes, without '/', ':' or spaces)"));
    }
    Ok(s.to_owned())
}

fn ringbuf_kib(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|_| format!("`{s}` is not a whole number of KiB"))?;
    if v >= 4 && v.is_power_of_two() && v <= 1 << 20 {
        Ok(v)
    } else {
        Err(format!("`{s}` must be a power of two from 4 to 1048576"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_values_with_a_message() {
        let err = Cli::try_parse_from(["observer", "--interval", "0"]).unwrap_err();
        assert!(err.to_string().contains("must be more than 0"), "{err}");
        let err = Cli::try_parse_from(["observer", "--ringbuf-kib", "100"]).unwrap_err();
        assert!(err.to_string().contains("power of two"), "{err}");
        let err = Cli::try_parse_from(["observer", "--max-destinations", "1"]).unwrap_err();
        assert!(err.to_string().contains("16"), "{err}");
        let err = Cli::try_parse_from(["observer", "--tls-ringbuf-kib", "3"]).unwrap_err();
        assert!(err.to_string().contains("power of two"), "{err}");
        let err = Cli::try_parse_from(["observer", "--max-tls-flows", "10"]).unwrap_err();
        assert!(err.to_string().contains("64"), "{err}");
    }

    #[test]
    fn dns_ports_and_interfaces_take_lists() {
        let cli = Cli::try_parse_from(["observer", "--dns-port", "5353,5354", "--interface", "lo", "--interface", "eth0"]).unwrap();
        assert_eq!(cli.dns_ports, [5353, 5354]);
        assert_eq!(cli.interfaces, ["lo", "eth0"]);
        assert!(cli.validate().is_ok());
        let cli = Cli::try_parse_from(["observer", "--dns-port", "1,2,3,4,5,6,7,8,9"]).unwrap();
        assert!(cli.validate().unwrap_err().contains("at most 8"));
        assert!(Cli::try_parse_from(["observer", "--dns-port", "0"]).is_err());
        for bad in ["../../etc", "a-name-that-is-too-long", "", "eth0:1", "et h0"] {
            let e = Cli::try_parse_from(["observer", "--interface", bad]).unwrap_err().to_string();
            assert!(e.contains("is not an interface name"), "{bad}: {e}");
        }
    }

    #[test]
    fn attach_refuses_what_needs_a_probe_of_its_own() {
        for extra in [&["--record", "/tmp/x"][..], &["--prometheus", "127.0.0.1:9464"], &["--redact"], &["--standalone"]] {
            let mut argv = vec!["observer", "--attach"];
            argv.extend_from_slice(extra);
            let err = Cli::try_parse_from(&argv).unwrap_err().to_string();
            assert!(err.contains("cannot be used with"), "{extra:?}: {err}");
        }
        assert!(Cli::try_parse_from(["observer", "--attach", "--format", "json"]).is_ok());
    }

    #[test]
    fn help_text() {
        use clap::CommandFactory;
        insta::assert_snapshot!(Cli::command().term_width(100).render_long_help().to_string());
    }

    #[test]
    fn window_is_never_shorter_than_the_interval() {
        let cli = Cli::try_parse_from(["observer", "--interval", "5", "--window", "2"]).unwrap();
        assert_eq!(cli.window(), Duration::from_secs(5));
    }
}
