//! The per-interval report: a snapshot of every layer, built once and then written as JSON or
//! drawn. Documented in README ("JSON lines").

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use serde::{Serialize, ser::SerializeMap};

use super::Shown;
use crate::{
    events::Disabled,
    verdict::{Cause, Layer, Verdicts},
};

/// Bumped when a field changes meaning or goes away; new fields do not bump it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    /// RFC 3339, UTC, milliseconds.
    pub ts: String,
    pub host: String,
    pub uptime_s: f64,
    pub interval_s: f64,
    pub window_s: f64,
    /// True on the last line, printed at exit (Ctrl-C, SIGTERM or --duration).
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Events that could not be recorded, by cause, and their total. Non-zero means the
    /// figures that come from events (latency, last failure) undercount; counters do not.
    pub lost: BTreeMap<&'static str, u64>,
    /// Signals this kernel cannot give, with the reason.
    pub disabled: Vec<Disabled>,
    /// What observer itself costs (set by the runtime; absent in replays and tests).
    #[serde(rename = "observer", skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// Per layer: healthy, suspect or no-signal, with rules, evidence and destinations.
    pub verdicts: Verdicts,
    /// The first suspect layer in triage order, or null when none is suspect.
    pub cause: Option<Cause>,
    /// One section per aggregation layer (`tcp`, `dns`, …), each under its own key.
    #[serde(flatten)]
    pub sections: Sections,
}

/// The layers' sections, in registry order; shared, so that keeping a report is cheap.
#[derive(Debug, Clone, Default)]
pub struct Sections(pub Vec<Arc<dyn Shown>>);

impl Serialize for Sections {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for section in &self.0 {
            m.serialize_entry(section.key(), &section.json())?;
        }
        m.end()
    }
}

impl Report {
    /// The sections shown in one triage layer's panel.
    pub fn sections_of(&self, layer: Layer) -> impl Iterator<Item = &dyn Shown> {
        self.sections.0.iter().map(|s| &**s).filter(move |s| s.triage_layer() == layer)
    }

    pub fn section(&self, key: &str) -> Option<&dyn Shown> {
        self.sections.0.iter().map(|s| &**s).find(|s| s.key() == key)
    }
}

/// observer's own cost, for the previous interval (this report's is not over yet): the CPU
/// the whole process used, and the work of closing the interval (reading the kernel's tables
/// and rings, aggregating, judging, writing the report).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Cost {
    pub previous_interval_cpu_ms: f64,
    pub previous_close_ms: f64,
    pub rss_mib: f64,
}

/// Inputs to a report that do not come from a layer.
pub struct Meta<'a> {
    pub now: SystemTime,
    pub host: &'a str,
    pub uptime_s: f64,
    pub interval_s: f64,
    pub window_s: f64,
    pub is_final: bool,
    pub disabled: &'a [Disabled],
}

/// The losses that `lost` adds up to. A name with a colon breaks down another one
/// (`recursion_misses:PROGRAM` is part of `bpf_recursion_misses`) and is not counted again.
pub fn lost_total(lost: &[(&'static str, u64)]) -> u64 {
    lost.iter().filter(|(k, _)| !k.contains(':')).map(|(_, v)| v).sum()
}

/// Put a report together. `lost` lists every loss by name; equal names add up.
pub fn build(meta: &Meta<'_>, sections: Sections, verdicts: (Verdicts, Option<Cause>), lost: &[(&'static str, u64)]) -> Report {
    let mut by_name: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (k, v) in lost {
        *by_name.entry(k).or_default() += v;
    }
    let total = lost_total(lost);
    by_name.insert("total", total);
    Report {
        schema: SCHEMA_VERSION,
        ts: humantime::format_rfc3339_millis(meta.now).to_string(),
        host: meta.host.to_owned(),
        uptime_s: round3(meta.uptime_s),
        interval_s: meta.interval_s,
        window_s: meta.window_s,
        is_final: meta.is_final,
        lost: by_name,
        disabled: meta.disabled.to_vec(),
        cost: None,
        verdicts: verdicts.0,
        cause: verdicts.1,
        sections,
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_breakdown_of_a_loss_is_not_counted_twice() {
        let lost = [("bpf_recursion_misses", 3), ("recursion_misses:kfree_skb", 2), ("recursion_misses:tc", 1), ("dns_ringbuf_full", 4)];
        assert_eq!(super::lost_total(&lost), 7);
    }
}
