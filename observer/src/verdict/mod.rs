//! Verdicts: for each triage layer and window, healthy / suspect / no-signal, with the rules
//! that fired, the destinations involved and evidence lines a person can paste.
//!
//! Each layer's rules live in a module of their own that implements [`Rules`] for that
//! layer's view; [`evaluate`] merges them per triage layer and applies the triage order. A new
//! layer adds a module here and nothing else in this folder.

mod dns;
mod hits;
mod hold;
mod http;
mod icmp;
mod routing;
mod tcp;
mod tls;
mod triage;

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use hits::Hits;
pub use hold::Hold;
pub use triage::{Cause, Change, Tracker};

use crate::config::Config;

/// One layer's rules, implemented on that layer's view.
pub trait Rules {
    /// The triage layer these rules speak for.
    fn layer(&self) -> Layer;

    /// The part of that triage layer they cover (one of [`Layer::parts`]).
    fn covers(&self) -> &'static str;

    /// Rule hits over the window, and whether there was anything to judge.
    fn evaluate(&self, window_s: f64, cfg: &Config) -> Evaluation;

    /// Addresses whose failures in later layers this layer's trouble accounts for, given the
    /// destinations its rules fired for (consequences in the triage order).
    fn explains(&self, _suspect: &[SocketAddr]) -> BTreeSet<IpAddr> {
        BTreeSet::new()
    }
}

/// What one layer's rules found.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    hits: Hits,
    /// Evidence of this kind was seen in the window (healthy rather than no-signal).
    had_signal: bool,
    /// Said when there was no signal.
    quiet_note: &'static str,
    /// Lines that explain what the rules set aside (for example search-list NXDOMAINs):
    /// shown in the verdict's note, not as evidence.
    context: Vec<String>,
    /// Destinations whose trouble comes with failing connects to these upstreams (a proxy's
    /// 502s): the triage order asks the earlier layers about the upstreams too.
    upstreams: Vec<(SocketAddr, Vec<SocketAddr>)>,
}

/// The triage layers, in triage order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

    /// The parts of the evidence this layer needs, each with what to say while no rules
    /// cover it. [`Rules::covers`] names one of these.
    pub fn parts(self) -> &'static [Part] {
        match self {
            Layer::Dns => &[Part { name: "DNS lookups", missing: "observer does not observe DNS lookups" }],
            Layer::TcpTls => &[
                Part { name: "TCP connects", missing: "TCP connects are not observed" },
                Part { name: "TLS handshakes", missing: "TLS handshakes are not observed yet" },
            ],
            Layer::Routing => &[
                Part { name: "ICMP errors and path changes", missing: "ICMP errors and path changes are not observed" },
                Part { name: "loss and RTT", missing: "observer does not collect loss or RTT yet" },
            ],
            Layer::L7 => &[Part { name: "HTTP", missing: "HTTP is not observed" }],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upstreams {
    pub destination: SocketAddr,
    pub upstreams: Vec<SocketAddr>,
}

/// A part of a triage layer's evidence.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub name: &'static str,
    pub missing: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub verdict: State,
    /// Rule names that fired, e.g. `dns.error_rcodes`.
    #[serde(deserialize_with = "crate::present::wire::interned_vec")]
    pub rules: Vec<crate::present::wire::Name>,
    pub evidence: Vec<String>,
    /// Destinations (resolvers, IP:port) the rules fired for: the first MAX_LISTED, the
    /// most troubled first.
    pub destinations: Vec<SocketAddr>,
    /// Destinations the rules fired for beyond those listed (an outage with thousands).
    #[serde(skip_serializing_if = "is_zero", default)]
    pub destinations_omitted: usize,
    /// Set when an earlier suspect layer explains this one.
    pub consequence_of: Option<Layer>,
    /// Destinations (a proxy's listening address) whose trouble comes with failing connects
    /// from this host to these upstreams.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub upstreams: Vec<Upstreams>,
    /// Why there is no signal, or what limits the verdict.
    pub note: Option<String>,
    /// A suspect verdict's confidence ("high", "medium", "low"), and why.
    #[serde(skip_serializing_if = "Option::is_none", default, deserialize_with = "crate::present::wire::interned_option")]
    pub confidence: Option<crate::present::wire::Name>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub confidence_why: Option<String>,
}

impl Verdict {
    fn empty(verdict: State) -> Verdict {
        Verdict {
            verdict,
            rules: vec![],
            evidence: vec![],
            destinations: vec![],
            destinations_omitted: 0,
            consequence_of: None,
            upstreams: vec![],
            note: None,
            confidence: None,
            confidence_why: None,
        }
    }

    pub fn no_signal(note: &str) -> Verdict {
        Verdict { note: Some(note.to_owned()), ..Verdict::empty(State::NoSignal) }
    }

    /// From the rule hits of one layer: suspect when any fired, else healthy or no-signal.
    fn from_hits(hits: Hits, had_signal: bool, quiet_note: &str) -> Verdict {
        if hits.is_empty() {
            return if had_signal { Verdict::empty(State::Healthy) } else { Verdict::no_signal(quiet_note) };
        }
        let Hits { held, rules, best: folded_best, lines, listed, keys, .. } = hits;
        let mut v = Verdict::empty(State::Suspect);
        // The folded hits come after the held ones.
        let mut best = None;
        for h in &held {
            hits::keep_stronger(&mut best, (h.count, h.margin, h.rule));
        }
        if let Some(f) = folded_best {
            hits::keep_stronger(&mut best, f);
        }
        if let Some((level, why)) = best.map(confidence) {
            (v.confidence, v.confidence_why) = (Some(level), Some(why));
        }
        (v.destinations, v.destinations_omitted) = Hits::destinations(listed, keys);
        let mut more_evidence = lines;
        for h in held {
            hits::add_rule(&mut v.rules, h.rule);
            if let Some(line) = h.evidence {
                // An empty line stands for one not written (see `line`).
                if v.evidence.len() < MAX_EVIDENCE && !line.is_empty() {
                    v.evidence.push(line);
                } else {
                    more_evidence += 1;
                }
            }
        }
        for rule in rules {
            hits::add_rule(&mut v.rules, rule);
        }
        if more_evidence > 0 {
            v.evidence.push(format!("… and {more_evidence} more lines like these (the sections list every destination)"));
        }
        v
    }
}

/// Destinations and evidence lines a verdict lists, the most troubled first: enough to paste,
/// and a report line stays small when thousands of destinations fail at once.
pub const MAX_LISTED: usize = 100;
const MAX_EVIDENCE: usize = 20;

/// An evidence line, written only while it can still be shown: past twice MAX_EVIDENCE hits
/// it is an empty stand-in that is counted, not formatted (100,000 failing destinations made
/// 100,000 lines an interval).
fn line(hits: &Hits, write: impl FnOnce() -> String) -> String {
    if hits.count() < 2 * MAX_EVIDENCE { write() } else { String::new() }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One rule firing for one destination.
#[derive(Debug, Clone)]
struct Hit {
    /// Events behind it, and how far past its threshold (observed / threshold, at least 1):
    /// what the verdict's confidence is made of.
    count: u64,
    margin: f64,
    rule: &'static str,
    destination: SocketAddr,
    /// None when another hit for the same destination already says it.
    evidence: Option<String>,
}

impl Hit {
    /// Set the events behind the hit and how far past its threshold it is.
    fn strength(mut self, count: u64, observed: f64, threshold: f64) -> Hit {
        self.count = count;
        self.margin = if threshold > 0.0 { (observed / threshold).max(1.0) } else { 1.0 };
        self
    }
}

/// How sure a suspect verdict is, from its strongest hit: `high` with at least 3 events at
/// twice the threshold or more, `medium` with 2 events or 1.5× the threshold, else `low`.
fn confidence((count, margin, rule): hits::Strength) -> (&'static str, String) {
    let level = if count >= 3 && margin >= 2.0 {
        "high"
    } else if count >= 2 || margin >= 1.5 {
        "medium"
    } else {
        "low"
    };
    let events = if count == 1 { "1 event".to_owned() } else { format!("{count} events") };
    (level, format!("{rule}: {events}, {margin:.1}× its threshold"))
}

/// The four verdicts, serialised as an object keyed by layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Evaluate every layer's rules, merge them per triage layer, then apply the triage order.
/// `lost_in_window` (events lost recently) lowers the cause's confidence.
#[cfg(test)]
pub fn evaluate(rules: &[&dyn Rules], window_s: f64, lost_in_window: u64, cfg: &Config) -> (Verdicts, Option<Cause>) {
    evaluate_held(rules, window_s, lost_in_window, cfg, None)
}

/// [`evaluate`], with a suspect layer held suspect (`hold`) until its rules have been quiet
/// for `verdict.clear_after_s`, before the triage order is applied.
pub fn evaluate_held(
    rules: &[&dyn Rules],
    window_s: f64,
    lost_in_window: u64,
    cfg: &Config,
    hold: Option<(&mut Hold, crate::events::Mono)>,
) -> (Verdicts, Option<Cause>) {
    let mut verdicts = Verdicts {
        dns: Verdict::empty(State::NoSignal),
        tcp_tls: Verdict::empty(State::NoSignal),
        routing: Verdict::empty(State::NoSignal),
        l7: Verdict::empty(State::NoSignal),
    };
    for layer in Layer::ALL {
        *verdicts.get_mut(layer) = merge(layer, rules.iter().filter(|r| r.layer() == layer), window_s, cfg);
    }
    if let Some((hold, now)) = hold {
        hold.apply(&mut verdicts, now, std::time::Duration::from_secs_f64(cfg.verdict.clear_after_s.max(0.0)));
    }
    let cause = triage::order(&mut verdicts, rules, lost_in_window);
    (verdicts, cause)
}

/// One triage layer's verdict from the rules of every part that covers it. A part that no
/// rules cover is named in the note, so that a partial verdict says what it leaves out.
fn merge<'a>(layer: Layer, rules: impl Iterator<Item = &'a &'a dyn Rules>, window_s: f64, cfg: &Config) -> Verdict {
    let mut hits = Hits::default();
    let mut had_signal = false;
    let mut quiet = Vec::new();
    let mut covered = Vec::new();
    let mut context = Vec::new();
    let mut upstreams = Vec::new();
    for r in rules {
        let e = r.evaluate(window_s, cfg);
        hits.extend(e.hits);
        upstreams.extend(e.upstreams.into_iter().map(|(destination, upstreams)| Upstreams { destination, upstreams }));
        had_signal |= e.had_signal;
        quiet.push(e.quiet_note);
        context.extend(e.context);
        covered.push(r.covers());
    }
    let missing: Vec<&Part> = layer.parts().iter().filter(|p| !covered.contains(&p.name)).collect();
    if covered.is_empty() {
        let notes: Vec<&str> = missing.iter().map(|p| p.missing).collect();
        return Verdict::no_signal(&notes.join("; "));
    }
    let mut v = Verdict::from_hits(hits, had_signal, &quiet.join("; "));
    if v.verdict == State::Suspect {
        v.upstreams = upstreams;
    }
    if v.verdict != State::NoSignal && !missing.is_empty() {
        let notes: Vec<&str> = missing.iter().map(|p| p.missing).collect();
        context.push(format!("{}: this verdict covers {}", notes.join("; "), covered.join(" and ")));
    }
    if v.verdict != State::NoSignal && !context.is_empty() {
        v.note = Some(context.join("; "));
    } else if v.verdict == State::NoSignal {
        // What was seen but cannot be judged (HTTP/2), and what is not looked at: silence is
        // not health.
        context.extend(missing.iter().map(|p| p.missing.to_owned()));
        if !context.is_empty() {
            v.note = Some(format!("{}; {}", v.note.take().unwrap_or_default(), context.join("; ")));
        }
    }
    v
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
