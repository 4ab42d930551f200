//! A recording read back from its directory: what report.md and its plots are drawn from,
//! at exit and offline alike.

use std::{collections::BTreeMap, path::Path, time::SystemTime};

use hdrhistogram::Histogram;
use serde_json::Value;

use super::hlog;
use crate::layers::latency::new_histogram;

/// One histogram's intervals: (seconds from the start to the interval's end, p50 µs, p99 µs,
/// samples), in time order.
pub type Series = Vec<(f64, u64, u64, u64)>;

pub struct Recording {
    pub meta: Value,
    pub start: SystemTime,
    /// The last report (final.json), when observer got to write it.
    pub last: Option<Value>,
    /// Verdict changes, with the seconds from the start at which each happened.
    pub timeline: Vec<(f64, Value)>,
    /// Per (series, tag): the intervals, and the whole recording merged.
    pub histograms: BTreeMap<(String, String), (Series, Histogram<u64>)>,
    /// Per (series, tag): (seconds from the start to the interval's end, failures).
    pub failures: BTreeMap<(String, String), Vec<(f64, u64)>>,
}

impl Recording {
    pub fn load(dir: &Path) -> Result<Recording, String> {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()));
        let meta: Value = serde_json::from_str(&read("meta.json")?).map_err(|e| format!("meta.json: {e}"))?;
        let start = meta["start"].as_str().and_then(|s| humantime::parse_rfc3339_weak(s).ok()).ok_or("meta.json has no start time")?;
        let since = |ts: &str| humantime::parse_rfc3339_weak(ts).ok().and_then(|t| t.duration_since(start).ok()).map_or(0.0, |d| d.as_secs_f64());
        let last = read("final.json").ok().and_then(|t| serde_json::from_str(&t).ok());
        let timeline = read("timeline.jsonl")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| (since(v["ts"].as_str().unwrap_or("")), v))
            .collect();
        let mut histograms: BTreeMap<(String, String), (Series, Histogram<u64>)> = BTreeMap::new();
        for (series, i) in hlog::read_dir(dir)?.unwrap_or_default() {
            let end = (i.start + i.duration).duration_since(start).map_or(0.0, |d| d.as_secs_f64());
            let h = &i.histogram;
            let entry = histograms.entry((series.to_owned(), i.tag.unwrap_or_default())).or_insert_with(|| (Vec::new(), new_histogram()));
            entry.0.push((end, h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.len()));
            entry.1.add(h).ok();
        }
        let mut failures: BTreeMap<(String, String), Vec<(f64, u64)>> = BTreeMap::new();
        for line in read("failures.jsonl").unwrap_or_default().lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
            let at = v["at_s"].as_f64().unwrap_or(0.0);
            for f in v["failures"].as_array().into_iter().flatten() {
                if let (Some(s), Some(t), Some(n)) = (f[0].as_str(), f[1].as_str(), f[2].as_u64()) {
                    failures.entry((s.to_owned(), t.to_owned())).or_default().push((at, n));
                }
            }
        }
        Ok(Recording { meta, start, last, timeline, histograms, failures })
    }

    /// The recording's length in seconds: its last interval.
    pub fn length_s(&self) -> f64 {
        let last_interval = self.histograms.values().filter_map(|(s, _)| s.last().map(|p| p.0));
        let last_failure = self.failures.values().filter_map(|v| v.last().map(|p| p.0));
        last_interval.chain(last_failure).chain(self.timeline.iter().map(|(t, _)| *t)).fold(0.0, f64::max)
    }

    /// Histograms with failures, or named in a suspect verdict's evidence: the worst first.
    pub fn troubled(&self) -> Vec<(String, String)> {
        let named = |tag: &str| {
            let addr = tag.split('|').find(|p| p.contains(':') || p.contains('.')).unwrap_or(tag);
            self.timeline.iter().any(|(_, c)| c["to"] == "suspect" && c["evidence"].to_string().contains(addr))
        };
        let mut v: Vec<((String, String), u64)> = self
            .histograms
            .keys()
            .chain(self.failures.keys())
            .map(|k| (k.clone(), self.failures.get(k).map_or(0, |f| f.iter().map(|(_, n)| n).sum())))
            .filter(|((_, tag), failed)| *failed > 0 || named(tag))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.dedup_by(|a, b| a.0 == b.0);
        v.into_iter().map(|(k, _)| k).collect()
    }
}
