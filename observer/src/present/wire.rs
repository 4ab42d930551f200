//! One interval as the daemon sends it to attached clients and keeps it in its flight
//! recorder: the JSON report, what each panel shows (so that a client draws the TUI without
//! the layers), the verdict changes, and what a recording needs (histograms, failures).

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use base64::Engine as _;
use hdrhistogram::{
    Histogram,
    serialization::{Deserializer as HistogramDeserializer, Serializer as _, V2DeflateSerializer},
};
use serde::{Deserialize, Deserializer, Serialize};

use super::{
    Detail, Panel, Shown, Table,
    report::{Cost, Report, Sections},
};
use crate::{
    events::Disabled,
    layers::IntervalSamples,
    verdict::{Cause, Change, Layer, Verdicts},
};

/// One interval on the wire (a JSON line) and in the flight recorder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Frame {
    /// The report exactly as `--format json` prints it, kept as its text: a `Value` tree of
    /// it was several times its size, held while the frame was serialised.
    pub report: Box<serde_json::value::RawValue>,
    pub panels: Vec<PanelData>,
    pub changes: Vec<Change>,
    /// (series, tag, histogram in V2-deflate, base64): each latency series' interval.
    pub histograms: Vec<(String, String, String)>,
    /// (series, tag, failures in this interval). The series is one of a few static names:
    /// borrowed, not copied 10,000 times an interval at 100k destinations.
    pub failures: Vec<(Cow<'static, str>, String, u64)>,
}

/// What one section's panel shows, computed where the layers run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PanelData {
    pub key: String,
    pub layer: Layer,
    pub table: Table,
    pub activity: Vec<(String, u64)>,
    pub activity_label: String,
    /// The drill-down of each row in the table.
    pub details: Vec<(String, Detail)>,
    pub text: Vec<String>,
}

impl Frame {
    pub fn of(report: &Report, changes: &[Change], samples: &[IntervalSamples<'_>], failures: Vec<(Cow<'static, str>, String, u64)>) -> anyhow::Result<Frame> {
        let panels = report
            .sections
            .0
            .iter()
            .map(|s| {
                let table = s.table();
                let details = table.rows.iter().filter_map(|(row, _)| Some((row.clone(), s.detail(row)?))).collect();
                PanelData {
                    key: s.key().to_owned(),
                    layer: s.triage_layer(),
                    activity: s.activity(),
                    activity_label: s.activity_label().to_owned(),
                    details,
                    text: s.text(),
                    table,
                }
            })
            .collect();
        let mut serializer = V2DeflateSerializer::new();
        let mut histograms = Vec::with_capacity(samples.len());
        for s in samples {
            let mut bytes = Vec::new();
            serializer.serialize(&s.histogram(), &mut bytes).map_err(|e| anyhow::anyhow!("cannot encode a histogram: {e:?}"))?;
            histograms.push((s.series.to_owned(), s.tag.clone(), base64::engine::general_purpose::STANDARD.encode(bytes)));
        }
        Ok(Frame { report: serde_json::value::to_raw_value(report)?, panels, changes: changes.to_vec(), histograms, failures })
    }

    /// The report back, drawable by every output format, and the interval's changes.
    pub fn into_report(self) -> anyhow::Result<(Report, Vec<Change>)> {
        let mut wire: WireReport = serde_json::from_str(self.report.get()).context("a report from the daemon is malformed")?;
        let sections = self
            .panels
            .into_iter()
            .map(|p| {
                let json = wire.sections.remove(&p.key).unwrap_or(serde_json::Value::Null);
                Arc::new(Received { key: intern(p.key.clone()), layer: p.layer, json, activity_label: intern(p.activity_label.clone()), data: p }) as Arc<dyn Shown>
            })
            .collect();
        let report = Report {
            schema: wire.schema,
            ts: wire.ts,
            host: wire.host,
            uptime_s: wire.uptime_s,
            interval_s: wire.interval_s,
            window_s: wire.window_s,
            is_final: wire.is_final,
            lost: wire.lost.into_iter().map(|(k, v)| (intern(k), v)).collect(),
            disabled: wire.disabled,
            cost: wire.cost,
            verdicts: wire.verdicts,
            cause: wire.cause,
            sections: Sections(sections),
        };
        Ok((report, self.changes))
    }

    /// The interval's histograms, decoded: (series, tag, histogram).
    pub fn decode_histograms(&self) -> anyhow::Result<Vec<(&'static str, String, Histogram<u64>)>> {
        let mut d = HistogramDeserializer::new();
        self.histograms
            .iter()
            .map(|(series, tag, b64)| {
                let bytes = base64::engine::general_purpose::STANDARD.decode(b64).context("a histogram is not base64")?;
                let h: Histogram<u64> = d.deserialize(&mut bytes.as_slice()).map_err(|e| anyhow::anyhow!("a histogram does not decode: {e:?}"))?;
                Ok((intern(series.clone()), tag.clone(), h))
            })
            .collect()
    }
}

/// The report's fields; the sections stay JSON until their panels join them.
#[derive(Deserialize)]
struct WireReport {
    schema: u32,
    ts: String,
    host: String,
    uptime_s: f64,
    interval_s: f64,
    window_s: f64,
    #[serde(rename = "final")]
    is_final: bool,
    lost: BTreeMap<String, u64>,
    disabled: Vec<Disabled>,
    #[serde(rename = "observer", default)]
    cost: Option<Cost>,
    verdicts: Verdicts,
    cause: Option<Cause>,
    #[serde(flatten)]
    sections: serde_json::Map<String, serde_json::Value>,
}

/// A section received from a daemon: shown as the daemon's layers built it.
#[derive(Debug)]
pub struct Received {
    key: &'static str,
    layer: Layer,
    json: serde_json::Value,
    activity_label: &'static str,
    data: PanelData,
}

impl Panel for Received {
    fn key(&self) -> &'static str {
        self.key
    }
    fn json(&self) -> serde_json::Value {
        self.json.clone()
    }
    fn table(&self) -> Table {
        self.data.table.clone()
    }
    fn activity(&self) -> Vec<(String, u64)> {
        self.data.activity.clone()
    }
    fn activity_label(&self) -> &'static str {
        self.activity_label
    }
    fn detail(&self, row: &str) -> Option<Detail> {
        self.data.details.iter().find(|(r, _)| r == row).map(|(_, d)| d.clone())
    }
    fn text(&self) -> Vec<String> {
        self.data.text.clone()
    }
    /// The daemon cut it to size before sending it.
    fn limit(&mut self) {}
}

impl Shown for Received {
    fn triage_layer(&self) -> Layer {
        self.layer
    }
}

/// A name the report holds as `&'static str`. An alias, so that serde does not take it for
/// a string borrowed from the input (it is interned instead).
pub type Name = &'static str;

/// Names the report holds as `&'static str` (rule names, section keys, loss causes) come
/// from a small fixed set; each distinct one is kept once. A peer that sends more distinct
/// names than any observer has gets them folded into one.
const MAX_INTERNED: usize = 4096;

struct Interner {
    seen: HashSet<&'static str>,
    cap: usize,
}

impl Interner {
    fn get(&mut self, s: String) -> &'static str {
        if let Some(known) = self.seen.get(s.as_str()) {
            return known;
        }
        if self.seen.len() >= self.cap {
            return "(too many names)";
        }
        let leaked: &'static str = Box::leak(s.into_boxed_str());
        self.seen.insert(leaked);
        leaked
    }
}

fn intern(s: String) -> &'static str {
    static NAMES: Mutex<Option<Interner>> = Mutex::new(None);
    let mut guard = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    guard.get_or_insert_with(|| Interner { seen: HashSet::new(), cap: MAX_INTERNED }).get(s)
}

pub fn interned<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    String::deserialize(d).map(intern)
}

pub fn interned_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'static str>, D::Error> {
    Option::<String>::deserialize(d).map(|o| o.map(intern))
}

pub fn interned_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<&'static str>, D::Error> {
    Vec::<String>::deserialize(d).map(|v| v.into_iter().map(intern).collect())
}

pub fn interned_triples<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(&'static str, u64, u64)>, D::Error> {
    Vec::<(String, u64, u64)>::deserialize(d).map(|v| v.into_iter().map(|(s, a, b)| (intern(s), a, b)).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_name_is_kept_once_and_a_flood_of_names_is_folded() {
        let mut names = super::Interner { seen: Default::default(), cap: 3 };
        let a = names.get("tcp.refused".to_owned());
        assert!(std::ptr::eq(a, names.get("tcp.refused".to_owned())));
        for i in 0..10 {
            let _ = names.get(format!("flood-{i}"));
        }
        assert_eq!(names.get("one more".to_owned()), "(too many names)");
        // Names seen before the flood still resolve to themselves.
        assert_eq!(names.get("tcp.refused".to_owned()), "tcp.refused");
        assert_eq!(names.seen.len(), 3);
    }
}
