//! Verdicts: for each triage layer and window, healthy / suspect / no-signal, with the rules
//! that fired, the destinations involved and evidence lines a person can paste. A new layer
//! adds a module with an `evaluate` function and an arm in [`evaluate`]; the triage order and
//! the presenters do not change.

mod dns;
mod tcp;
mod triage;

use serde::Serialize;

pub use triage::{Cause, Change, Tracker};

use crate::{
    config::Config,
    layers::{
        connect::DestView,
        dns::{Divergence, NameView, ResolverView},
    },
};

/// The triage layers, in triage order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Dns,
    TcpTls,
    Routing,
    L7,
}

impl Layer {
    pub const ALL: [Layer; 4] = [Layer::Dns, Layer::TcpTls, Layer::Routing, Layer::L7];

    pub fn key(self) -> &'static str {
        match self {
            Layer::Dns => "dns",
            Layer::TcpTls => "tcp_tls",
            Layer::Routing => "routing",
            Layer::L7 => "l7",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Layer::Dns => "DNS",
            Layer::TcpTls => "TCP/TLS",
            Layer::Routing => "Routing",
            Layer::L7 => "L7",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum State {
    #[serde(rename = "healthy")]
    Healthy,
    #[serde(rename = "suspect")]
    Suspect,
    /// No evidence of this kind in the window: never reported as healthy.
    #[serde(rename = "no-signal")]
    NoSignal,
}

impl State {
    pub fn word(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Suspect => "suspect",
            State::NoSignal => "no-signal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub verdict: State,
    /// Rule names that fired, e.g. `dns.error_rcodes`.
    pub rules: Vec<&'static str>,
    pub evidence: Vec<String>,
    /// Destinations (resolvers, IP:port) the rules fired for.
    pub destinations: Vec<String>,
    /// Set when an earlier suspect layer explains this one.
    pub consequence_of: Option<Layer>,
    /// Why there is no signal, or what limits the verdict.
    pub note: Option<String>,
}

impl Verdict {
    fn empty(verdict: State) -> Verdict {
        Verdict { verdict, rules: vec![], evidence: vec![], destinations: vec![], consequence_of: None, note: None }
    }

    pub fn no_signal(note: &str) -> Verdict {
        Verdict { note: Some(note.to_owned()), ..Verdict::empty(State::NoSignal) }
    }

    /// From the rule hits of one layer: suspect when any fired, else healthy or no-signal.
    fn from_hits(hits: Vec<Hit>, had_signal: bool, quiet_note: &str) -> Verdict {
        if hits.is_empty() {
            return if had_signal { Verdict::empty(State::Healthy) } else { Verdict::no_signal(quiet_note) };
        }
        let mut v = Verdict::empty(State::Suspect);
        for h in hits {
            if !v.rules.contains(&h.rule) {
                v.rules.push(h.rule);
            }
            if !v.destinations.contains(&h.destination) {
                v.destinations.push(h.destination);
            }
            if let Some(line) = h.evidence {
                v.evidence.push(line);
            }
        }
        v
    }
}

/// One rule firing for one destination.
#[derive(Debug, Clone)]
struct Hit {
    rule: &'static str,
    destination: String,
    /// None when another hit for the same destination already says it.
    evidence: Option<String>,
}

/// The four verdicts, serialised as an object keyed by layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdicts {
    pub dns: Verdict,
    pub tcp_tls: Verdict,
    pub routing: Verdict,
    pub l7: Verdict,
}

impl Verdicts {
    pub fn get(&self, layer: Layer) -> &Verdict {
        match layer {
            Layer::Dns => &self.dns,
            Layer::TcpTls => &self.tcp_tls,
            Layer::Routing => &self.routing,
            Layer::L7 => &self.l7,
        }
    }

    fn get_mut(&mut self, layer: Layer) -> &mut Verdict {
        match layer {
            Layer::Dns => &mut self.dns,
            Layer::TcpTls => &mut self.tcp_tls,
            Layer::Routing => &mut self.routing,
            Layer::L7 => &mut self.l7,
        }
    }
}

/// What the rules look at: the layers' views over the window.
pub struct Inputs<'a> {
    pub window_s: f64,
    pub dns_timeout_s: f64,
    pub resolvers: &'a [ResolverView],
    pub names: &'a [NameView],
    pub divergences: &'a [Divergence],
    pub destinations: &'a [DestView],
    /// Events lost within the window (lowers confidence).
    pub lost_in_window: u64,
}

/// Evaluate every layer, then apply the triage order.
pub fn evaluate(inputs: &Inputs<'_>, cfg: &Config) -> (Verdicts, Option<Cause>) {
    let mut verdicts = Verdicts {
        dns: dns::evaluate(inputs, &cfg.dns),
        tcp_tls: tcp::evaluate(inputs, &cfg.tcp),
        routing: Verdict::no_signal("observer does not collect routing evidence yet (loss, RTT, ICMP, path changes)"),
        l7: Verdict::no_signal("observer does not parse HTTP yet"),
    };
    if verdicts.tcp_tls.verdict != State::NoSignal {
        verdicts.tcp_tls.note = Some("TLS handshakes are not observed yet: this verdict covers TCP connects".to_owned());
    }
    let cause = triage::order(&mut verdicts, inputs);
    (verdicts, cause)
}

/// Milliseconds with one decimal below 10 ms, whole above.
fn ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 { format!("{ms:.1} ms") } else { format!("{ms:.0} ms") }
}

fn secs(s: f64) -> String {
    if s.fract() == 0.0 { format!("{s:.0} s") } else { format!("{s} s") }
}

#[cfg(test)]
mod tests;
