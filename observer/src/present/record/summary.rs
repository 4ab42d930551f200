//! `observer report DIR... [--from T] [--to T] [--dest D]`: percentiles from recordings,
//! offline and without privileges. Several recordings (two hosts of one incident) merge:
//! the same series and tag add up.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::Context as _;
use hdrhistogram::Histogram;

use super::hlog;
use crate::layers::latency::new_histogram;

/// What to summarise.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Recording directories (made with --record); several are merged.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,

    /// Only intervals that start at or after T: RFC 3339 (2026-11-26T14:02:00Z) or
    /// +SECONDS from the first recording's start.
    #[arg(long, value_name = "T")]
    pub from: Option<String>,

    /// Only intervals that end at or before T (as --from).
    #[arg(long, value_name = "T")]
    pub to: Option<String>,

    /// Only histograms whose tag contains D (an address, an SNI, a Host).
    #[arg(long, value_name = "D")]
    pub dest: Option<String>,
}

/// Histograms per (series, tag).
type Merged = BTreeMap<(String, String), Histogram<u64>>;

/// Every histogram of the recordings, merged per (series, tag), over [from, to]; and how
/// many intervals went in.
pub fn merged(args: &ReportArgs) -> anyhow::Result<(Merged, usize)> {
    let start = args.dirs.iter().filter_map(|d| recording_start(d)).min().unwrap_or(SystemTime::UNIX_EPOCH);
    let from = args.from.as_deref().map(|t| time(t, start)).transpose()?;
    let to = args.to.as_deref().map(|t| time(t, start)).transpose()?;
    let mut out = Merged::new();
    let mut intervals = 0;
    for dir in &args.dirs {
        let log = hlog::read_dir(dir).map_err(anyhow::Error::msg)?;
        let log = log.with_context(|| format!("{}: no interval logs (*.hlog) here; is it a directory made with --record?", dir.display()))?;
        for (series, i) in log {
            let tag = i.tag.unwrap_or_default();
            if from.is_some_and(|f| i.start < f) || to.is_some_and(|t| i.start + i.duration > t) {
                continue;
            }
            if args.dest.as_deref().is_some_and(|d| !tag.contains(d)) {
                continue;
            }
            intervals += 1;
            out.entry((series.to_owned(), tag)).or_insert_with(new_histogram).add(&i.histogram).ok();
        }
    }
    Ok((out, intervals))
}

/// Re-render each recording's report.md (where it can be written), then print the
/// percentiles table.
pub fn run(args: &ReportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let (merged, intervals) = merged(args)?;
    for dir in &args.dirs {
        match super::markdown::render(dir) {
            Ok(plots) => eprintln!("observer report: {} written, {plots} plots", dir.join("report.md").display()),
            Err(e) => eprintln!("observer report: report.md not re-rendered: {e}"),
        }
    }
    writeln!(out, "{intervals} intervals from {} recording(s); latency in ms", args.dirs.len())?;
    writeln!(out, "{:<14} {:<40} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}", "series", "tag", "count", "p50", "p90", "p95", "p99", "max")?;
    for ((series, tag), h) in &merged {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        writeln!(
            out,
            "{series:<14} {tag:<40} {:>8} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            h.len(),
            ms(0.5),
            ms(0.9),
            ms(0.95),
            ms(0.99),
            h.max() as f64 / 1000.0
        )?;
    }
    Ok(())
}

/// The start written in a recording's meta.json.
fn recording_start(dir: &Path) -> Option<SystemTime> {
    let text = std::fs::read_to_string(dir.join("meta.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    humantime::parse_rfc3339_weak(v["start"].as_str()?).ok()
}

fn time(t: &str, start: SystemTime) -> anyhow::Result<SystemTime> {
    if let Some(secs) = t.strip_prefix('+') {
        let s: f64 = secs.parse().ok().filter(|s: &f64| s.is_finite() && *s >= 0.0).with_context(|| format!("`{t}`: +SECONDS wants a number"))?;
        return Ok(start + std::time::Duration::from_secs_f64(s));
    }
    humantime::parse_rfc3339_weak(t).with_context(|| format!("`{t}` is neither RFC 3339 (2026-11-26T14:02:00Z) nor +SECONDS"))
}
