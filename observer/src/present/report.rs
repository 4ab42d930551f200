//! The per-interval report: a snapshot of every layer, built once and then written as JSON or
//! drawn as text. Documented in README ("JSON lines").

use std::{collections::BTreeMap, time::SystemTime};

use serde::Serialize;

use crate::{
    layers::{
        connect::{ConnectLayer, DestView, PortView},
        dns::{Divergence, DnsLayer, NameView, ResolverView},
    },
    probe::Disabled,
    verdict::{Cause, Verdicts},
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
    /// Per layer: healthy, suspect or no-signal, with rules, evidence and destinations.
    pub verdicts: Verdicts,
    /// The first suspect layer in triage order, or null when none is suspect.
    pub cause: Option<Cause>,
    pub tcp: TcpSection,
    pub dns: DnsSection,
}

#[derive(Debug, Clone, Serialize)]
pub struct DnsSection {
    /// Interfaces the DNS programs are attached to.
    pub interfaces: Vec<String>,
    pub resolvers: Vec<ResolverView>,
    pub names: Vec<NameView>,
    pub names_omitted: usize,
    pub divergences: Vec<Divergence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TcpSection {
    pub destinations: Vec<DestView>,
    pub destinations_omitted: usize,
    pub local_ports: Vec<PortView>,
}

/// Inputs to a report that do not come from a layer.
pub struct Meta<'a> {
    pub now: SystemTime,
    pub host: &'a str,
    pub uptime_s: f64,
    pub interval_s: f64,
    pub window_s: f64,
    pub is_final: bool,
    pub kernel_lost: &'a [(&'static str, u64)],
    pub disabled: &'a [Disabled],
    pub top: usize,
    pub dns_top_names: usize,
    pub dns_interfaces: Vec<String>,
}

/// The layers a report is built from.
pub struct Layers<'a> {
    pub connect: &'a ConnectLayer,
    pub dns: &'a DnsLayer,
}

/// Everything a report holds, before verdicts: built once per interval.
pub struct Views {
    pub destinations: Vec<DestView>,
    pub resolvers: Vec<ResolverView>,
    pub names: Vec<NameView>,
    pub divergences: Vec<Divergence>,
}

impl Views {
    pub fn of(layers: &Layers<'_>) -> Views {
        Views {
            destinations: layers.connect.destinations(),
            resolvers: layers.dns.resolvers(),
            names: layers.dns.names(),
            divergences: layers.dns.divergences(),
        }
    }
}

pub fn build(
    meta: &Meta<'_>,
    views: Views,
    local_ports: Vec<PortView>,
    verdicts: (Verdicts, Option<Cause>),
    userspace_lost: &[(&'static str, u64)],
) -> Report {
    let mut lost: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (k, v) in meta.kernel_lost.iter().chain(userspace_lost) {
        *lost.entry(k).or_default() += v;
    }
    let total = lost.values().sum();
    lost.insert("total", total);
    let mut destinations = views.destinations;
    let omitted = destinations.len().saturating_sub(meta.top);
    destinations.truncate(meta.top);
    let mut names = views.names;
    let names_omitted = names.len().saturating_sub(meta.dns_top_names);
    names.truncate(meta.dns_top_names);
    Report {
        schema: SCHEMA_VERSION,
        ts: humantime::format_rfc3339_millis(meta.now).to_string(),
        host: meta.host.to_owned(),
        uptime_s: round3(meta.uptime_s),
        interval_s: meta.interval_s,
        window_s: meta.window_s,
        is_final: meta.is_final,
        lost,
        disabled: meta.disabled.to_vec(),
        verdicts: verdicts.0,
        cause: verdicts.1,
        tcp: TcpSection { destinations, destinations_omitted: omitted, local_ports },
        dns: DnsSection {
            interfaces: meta.dns_interfaces.clone(),
            resolvers: views.resolvers,
            names,
            names_omitted,
            divergences: views.divergences,
        },
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
