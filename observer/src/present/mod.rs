//! Everything the user sees is drawn from one [`report::Report`] built per interval.
//!
//! A layer appears through its view's [`Panel`] (in `present/<layer>.rs`): the JSON section,
//! the TUI table and drill-down, and the text lines. The report, the TUI and the text format
//! iterate over sections and hold no per-layer code.

pub mod connect;
pub mod dns;
pub mod events;
pub mod http;
pub mod icmp;
pub mod json;
pub mod metrics;
pub mod record;
pub mod redact;
pub mod report;
pub mod routing;
pub mod text;
pub mod tls;
pub mod tui;
pub mod wire;

use std::fmt::Debug;

use crate::{
    layers::latency::LatencySummary,
    verdict::{Layer, Rules},
};

/// How one layer's view is shown.
pub trait Panel {
    /// The key of its section in the JSON report, and the prefix of its row keys.
    fn key(&self) -> &'static str;

    /// The section as JSON (the fields documented in README).
    fn json(&self) -> serde_json::Value;

    /// The TUI table: its rows can be selected and drilled into.
    fn table(&self) -> Table;

    /// Since-start activity per row key (connects, queries), for the per-interval sparkline.
    fn activity(&self) -> Vec<(String, u64)>;

    /// What the sparkline counts, e.g. "connects".
    fn activity_label(&self) -> &'static str;

    /// Everything about one row, for the drill-down; `None` when it left the report.
    fn detail(&self, row: &str) -> Option<Detail>;

    /// Lines for `--format text`.
    fn text(&self) -> Vec<String>;

    /// Cut the section to what a report shows (after the rules have seen all of it).
    fn limit(&mut self);

    /// `--redact`: hash the names it holds (before the rules write them into evidence).
    fn redact(&mut self, _r: &redact::Redactor) {}
}

/// A section as a report holds it: drawn and written under its triage layer. A layer's view
/// is one; so is a section received from a daemon (`wire::Received`), which has no rules.
pub trait Shown: Panel + Debug + Send + Sync {
    fn triage_layer(&self) -> Layer;
}

impl<T: Rules + Panel + Debug + Send + Sync> Shown for T {
    fn triage_layer(&self) -> Layer {
        Rules::layer(self)
    }
}

/// A layer's view as the pipeline holds it: judged by its rules, then shown.
pub trait Section: Rules + Shown {}

impl<T: Rules + Shown> Section for T {}

/// A table in a layer panel.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Table {
    /// Lines before the header, shown even when there are no rows (the blast radius).
    pub lead: Vec<String>,
    pub header: String,
    /// (row key, text); the key is unique within the section.
    pub rows: Vec<(String, String)>,
    /// Lines shown after the rows when there is room; not selectable.
    pub extra: Vec<String>,
}

/// What the drill-down shows for one row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detail {
    /// (counter, window, total)
    #[serde(deserialize_with = "wire::interned_triples")]
    pub counters: Vec<(wire::Name, u64, u64)>,
    pub window: LatencySummary,
    pub total: LatencySummary,
    pub notes: Vec<String>,
}

/// Milliseconds for tables: one decimal below 10 ms, "-" for none.
pub fn ms(us: u64) -> String {
    if us == 0 {
        "-".to_owned()
    } else if us < 10_000 {
        format!("{:.1}", us as f64 / 1000.0)
    } else {
        format!("{:.0}", us as f64 / 1000.0)
    }
}
