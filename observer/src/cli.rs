//! Command line. Every flag can also come from an `OBSERVER_*` environment variable; the
//! flag wins.

use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `text` on a terminal, `json` otherwise.
    Auto,
    /// One JSON object per interval, one per line.
    Json,
    /// A plain table per interval, for a terminal.
    Text,
}

/// Passive network triage: which layer is failing (DNS, TCP/TLS, routing, L7), per
/// destination, from real traffic. Needs root (or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN).
#[derive(Debug, Parser)]
#[command(name = "observer", version, about, long_about = None)]
pub struct Cli {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Auto, env = "OBSERVER_FORMAT")]
    pub format: Format,

    /// Seconds between reports.
    #[arg(long, default_value_t = 1.0, value_parser = positive_seconds, env = "OBSERVER_INTERVAL")]
    pub interval: f64,

    /// Seconds of the sliding window that `window` figures cover.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds, env = "OBSERVER_WINDOW")]
    pub window: f64,

    /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_parser = positive_seconds, env = "OBSERVER_DURATION")]
    pub duration: Option<f64>,

    /// Size of the kernel's per-destination table (LRU: the least recently used goes first).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..=1_048_576), env = "OBSERVER_MAX_DESTINATIONS")]
    pub max_destinations: u32,

    /// Size of the kernel's table of in-flight outgoing connections.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(16..=4_194_304), env = "OBSERVER_MAX_CONNECTIONS")]
    pub max_connections: u32,

    /// Size of the kernel's per-local-port table (server role).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=65_536), env = "OBSERVER_MAX_PORTS")]
    pub max_ports: u32,

    /// Connect-event ring buffer size in KiB (a power of two, at least 4).
    #[arg(long, default_value_t = 256, value_parser = ringbuf_kib, env = "OBSERVER_RINGBUF_KIB")]
    pub ringbuf_kib: u32,

    /// At most this many destinations per report (the most troubled first); the rest are
    /// counted in `destinations_omitted`.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..), env = "OBSERVER_TOP")]
    pub top: u32,
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
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v <= 31_536_000.0 {
        Ok(v)
    } else {
        Err(format!("`{s}` must be more than 0 and at most a year"))
    }
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
    }

    #[test]
    fn window_is_never_shorter_than_the_interval() {
        let cli = Cli::try_parse_from(["observer", "--interval", "5", "--window", "2"]).unwrap();
        assert_eq!(cli.window(), Duration::from_secs(5));
    }
}
