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

pub fn build(meta: &Meta<'_>, layers: &Layers<'_>, userspace_lost: &[(&'static str, u64)]) -> Report {
    let connect = layers.connect;
    let mut lost: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (k, v) in meta.kernel_lost.iter().chain(userspace_lost) {
        *lost.entry(k).or_default() += v;
    }
    let total = lost.values().sum();
    lost.insert("total", total);
    let mut destinations = connect.destinations();
    let omitted = destinations.len().saturating_sub(meta.top);
    destinations.truncate(meta.top);
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
        tcp: TcpSection { destinations, destinations_omitted: omitted, local_ports: connect.local_ports() },
        dns: dns_section(meta, layers.dns),
    }
}

fn dns_section(meta: &Meta<'_>, dns: &DnsLayer) -> DnsSection {
    let mut names = dns.names();
    let names_omitted = names.len().saturating_sub(meta.dns_top_names);
    names.truncate(meta.dns_top_names);
    DnsSection {
        interfaces: meta.dns_interfaces.clone(),
        resolvers: dns.resolvers(),
        names,
        names_omitted,
        divergences: dns.divergences(),
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
