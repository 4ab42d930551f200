//! `--record DIR`: what a postmortem needs after observer has exited.
//!
//! While observer runs it writes, in DIR:
//! - one HdrHistogram interval log per latency series (`tcp_connect.hlog`, `dns_lookup.hlog`,
//!   `tls_handshake.hlog`, `http_response.hlog`, `tcp_rtt.hlog`): each interval's histogram
//!   per destination, V2-deflate compressed, tagged by the destination (with SNI or Host);
//! - `timeline.jsonl`: every verdict change;
//! - `failures.jsonl`: per interval, what failed per histogram (refused and timed-out
//!   connects, DNS errors and unanswered queries, failed handshakes, 5xx, retransmits);
//! - `reports.jsonl`, with `--record-reports`: the JSON lines themselves;
//! - `meta.json`: host, kernel, start, interval, window and the thresholds in force.
//!
//! At exit it adds `hgrm/SERIES/TAG.hgrm` (each histogram over the whole recording as a
//! percentile distribution table), `final.json` (the last report), and `report.md` with its
//! plots (`plots/*.svg`). A write that fails (a full disk, a directory taken away)
//! stops the recording with one line that says where; observer itself goes on.

pub mod hgrm;
pub mod hlog;
pub mod markdown;
pub mod plot;
pub mod recording;
pub mod summary;

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    config::Config,
    layers::{IntervalSamples, latency::new_histogram},
    present::report::Report,
    verdict::Change,
};

/// What the recording is told at start.
pub struct Meta<'a> {
    /// When the recording starts: now, or the first interval's start for an export.
    pub start: SystemTime,
    pub host: &'a str,
    pub kernel: &'a str,
    pub interval: Duration,
    pub window: Duration,
    pub config: &'a Config,
}

#[derive(Serialize)]
struct MetaFile<'a> {
    observer: &'static str,
    host: &'a str,
    kernel: &'a str,
    start: String,
    interval_s: f64,
    window_s: f64,
    series_unit: &'static str,
    thresholds: &'a Config,
}

pub struct Recorder {
    /// DIR as the user named it, for messages.
    dir: PathBuf,
    /// DIR for the files written later (through `_handle` when it could be held).
    io: PathBuf,
    _handle: Option<File>,
    start: SystemTime,
    logs: BTreeMap<&'static str, hlog::LogFile>,
    timeline: BufWriter<File>,
    failures: BufWriter<File>,
    reports: Option<BufWriter<File>>,
    /// The last report, for final.json and report.md.
    last: Option<Report>,
    /// Each histogram over the whole recording, for the .hgrm tables at exit.
    totals: BTreeMap<(&'static str, String), Histogram<u64>>,
    /// Set once a write failed: the line that says where the recording stopped.
    pub stopped: Option<String>,
}

/// The directory opened once, and a path through that descriptor: observer goes on as
/// another user after attach, who may not be allowed through DIR's parents (`/root`), but
/// is allowed through its own descriptor.
fn held(dir: &Path) -> (Option<File>, PathBuf) {
    use std::os::{fd::AsRawFd, unix::fs::OpenOptionsExt};
    match fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(dir) {
        Ok(f) => {
            let through = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
            if through.is_dir() { (Some(f), through) } else { (None, dir.to_path_buf()) }
        }
        Err(_) => (None, dir.to_path_buf()),
    }
}

impl Recorder {
    /// Create DIR (and its files). An error is one line for the user.
    /// `owner`: whom the files are given to, when observer runs as root and goes on as
    /// that user after attach.
    pub fn create(dir: &Path, meta: &Meta<'_>, reports: bool, owner: Option<(u32, u32)>) -> Result<Recorder, String> {
        let start = meta.start;
        let fail = |what: &Path, e: std::io::Error| format!("cannot record to {}: {}: {e}", dir.display(), what.display());
        fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
        let mut created = vec![dir.to_path_buf()];
        let mut open = |name: &str| -> Result<BufWriter<File>, String> {
            let path = dir.join(name);
            let f = File::create(&path).map_err(|e| fail(&path, e))?;
            created.push(path);
            Ok(BufWriter::new(f))
        };
        let mut meta_file = open("meta.json")?;
        let m = MetaFile {
            observer: env!("CARGO_PKG_VERSION"),
            host: meta.host,
            kernel: meta.kernel,
            start: humantime::format_rfc3339_millis(start).to_string(),
            interval_s: meta.interval.as_secs_f64(),
            window_s: meta.window.as_secs_f64(),
            series_unit: "microseconds",
            thresholds: meta.config,
        };
        serde_json::to_writer_pretty(&mut meta_file, &m).map_err(|e| fail(&dir.join("meta.json"), e.into()))?;
        meta_file.flush().map_err(|e| fail(&dir.join("meta.json"), e))?;
        let timeline = open("timeline.jsonl")?;
        let failures = open("failures.jsonl")?;
        // Created now, while observer may still write in a directory of the user's.
        let _ = open("final.json")?;
        let _ = open("report.md")?;
        let reports = if reports { Some(open("reports.jsonl")?) } else { None };
        let mut logs = BTreeMap::new();
        for series in hlog::SERIES {
            let name = format!("{series}.hlog");
            let path = dir.join(&name);
            let file = open(&name)?;
            let log = hlog::LogFile::begin(file, start, series).map_err(|e| fail(&path, e))?;
            logs.insert(series, log);
        }
        if let Some((uid, gid)) = owner {
            for p in &created {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| fail(p, e))?;
            }
        }
        let (handle, io) = held(dir);
        Ok(Recorder {
            dir: dir.to_path_buf(),
            io,
            _handle: handle,
            start,
            logs,
            timeline,
            failures,
            reports,
            last: None,
            totals: BTreeMap::new(),
            stopped: None,
        })
    }

    /// One interval: its histograms, verdict changes and report. Returns the line to show
    /// when the recording stops here.
    pub fn interval(&mut self, report: &Report, changes: &[Change], data: &Interval<'_>) -> Option<String> {
        if self.stopped.is_some() {
            return None;
        }
        let histograms: Vec<(&'static str, String, Histogram<u64>)> = data.samples.iter().map(|s| (s.series, s.tag.clone(), s.histogram())).collect();
        let failed: Vec<(&'static str, &str, u64)> = data.failures_grown.iter().map(|(series, tag, n)| (*series, tag.as_str(), *n)).collect();
        self.interval_prepared(report, changes, data.length, &histograms, &failed)
    }

    /// One interval whose histograms are built and whose failures are counted already (an
    /// export from the daemon's flight recorder).
    pub fn interval_prepared(&mut self, report: &Report, changes: &[Change], length: Duration, histograms: &[(&'static str, String, Histogram<u64>)], failed: &[(&'static str, &str, u64)]) -> Option<String> {
        if self.stopped.is_some() {
            return None;
        }
        self.last = Some(report.clone());
        match self.write_prepared(report, changes, length, histograms, failed) {
            Ok(()) => None,
            Err(e) => {
                let line = format!("recording to {} stopped at {}: {e}", self.dir.display(), report.ts);
                self.stopped = Some(line.clone());
                Some(line)
            }
        }
    }

    fn write_prepared(&mut self, report: &Report, changes: &[Change], interval: Duration, histograms: &[(&'static str, String, Histogram<u64>)], failed: &[(&'static str, &str, u64)]) -> std::io::Result<()> {
        // The interval's start, as an offset from the recording's start.
        let end = humantime::parse_rfc3339_weak(&report.ts).unwrap_or_else(|_| SystemTime::now());
        let since_start = end.duration_since(self.start).unwrap_or_default();
        let offset = since_start.saturating_sub(interval);
        for (series, tag, h) in histograms {
            if let Some(log) = self.logs.get_mut(series) {
                log.write(h, offset, interval, tag)?;
            }
            self.totals.entry((series, tag.clone())).or_insert_with(new_histogram).add(h).ok();
        }
        for log in self.logs.values_mut() {
            log.flush()?;
        }
        if !failed.is_empty() {
            serde_json::to_writer(&mut self.failures, &FailureLine { at_s: since_start.as_secs_f64(), failures: failed.to_vec() }).map_err(std::io::Error::from)?;
            self.failures.write_all(b"\n")?;
            self.failures.flush()?;
        }
        for c in changes {
            serde_json::to_writer(&mut self.timeline, &TimelineLine { host: &report.host, change: c }).map_err(std::io::Error::from)?;
            self.timeline.write_all(b"\n")?;
        }
        self.timeline.flush()?;
        if let Some(r) = &mut self.reports {
            serde_json::to_writer(&mut *r, report).map_err(std::io::Error::from)?;
            r.write_all(b"\n")?;
            r.flush()?;
        }
        Ok(())
    }

    /// At exit: the .hgrm tables. Returns what to tell the user.
    pub fn finish(mut self) -> String {
        if let Some(line) = self.stopped.take() {
            // Say where it stopped in the recording too, if the disk lets us.
            let _ = fs::write(self.io.join("STOPPED"), format!("{line}\n"));
            return line;
        }
        self.write_outputs()
    }

    /// The tables, final.json and report.md with its plots, as they stand (the recording
    /// goes on): at exit, and on demand from the TUI.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn write_outputs(&mut self) -> String {
        if let Some(line) = &self.stopped {
            return line.clone();
        }
        let tables = self.write_tables();
        let report = self.write_report();
        match (tables, report) {
            (Ok(n), Ok(plots)) => format!("recorded to {}: {n} histograms, report.md with {plots} plots", self.dir.display()),
            (Err(e), _) | (_, Err(e)) => format!("recording to {}: the tables and report could not be written: {e}", self.dir.display()),
        }
    }

    /// final.json, then report.md and its plots, from the files (as `observer report` does).
    fn write_report(&self) -> std::io::Result<usize> {
        if let Some(last) = &self.last {
            let mut f = BufWriter::new(File::create(self.io.join("final.json"))?);
            serde_json::to_writer_pretty(&mut f, last).map_err(std::io::Error::from)?;
            f.flush()?;
        }
        markdown::render(&self.io).map_err(std::io::Error::other)
    }

    fn write_tables(&self) -> std::io::Result<usize> {
        for ((series, tag), h) in &self.totals {
            let dir = self.io.join("hgrm").join(series);
            fs::create_dir_all(&dir)?;
            let path = dir.join(format!("{}.hgrm", hgrm::file_name(tag)));
            let mut f = BufWriter::new(File::create(&path)?);
            hgrm::write(&mut f, h, 1000.0)?;
            f.flush()?;
        }
        Ok(self.totals.len())
    }
}

/// What an interval gives the recording besides its report.
pub struct Interval<'a> {
    pub length: Duration,
    pub samples: &'a [IntervalSamples<'a>],
    /// What failed in the interval, per series and tag.
    pub failures_grown: &'a [(&'static str, String, u64)],
}

#[derive(Serialize)]
struct FailureLine<'a> {
    /// Seconds from the recording's start to the interval's end.
    at_s: f64,
    /// (series, tag, failures in the interval).
    failures: Vec<(&'static str, &'a str, u64)>,
}

#[derive(Serialize)]
struct TimelineLine<'a> {
    host: &'a str,
    #[serde(flatten)]
    change: &'a Change,
}
