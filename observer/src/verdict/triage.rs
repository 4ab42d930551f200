//! The triage order: the first suspect layer is the likely cause; a later suspect layer whose
//! destinations the cause explains is a consequence of it, not a separate cause.

use std::{
    collections::{BTreeSet, VecDeque},
    net::IpAddr,
};

use serde::Serialize;

use super::{Inputs, Layer, State, Verdicts};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cause {
    pub layer: Layer,
    pub evidence: Vec<String>,
    pub destinations: Vec<String>,
    /// Later suspect layers this cause explains.
    pub consequences: Vec<Layer>,
    /// Later suspect layers it does not explain: look at them too.
    pub also_suspect: Vec<Layer>,
    /// "high", or "reduced" when events were lost in the window.
    pub confidence: &'static str,
    pub confidence_note: Option<String>,
}

pub fn order(v: &mut Verdicts, inputs: &Inputs<'_>) -> Option<Cause> {
    let first = Layer::ALL.into_iter().find(|l| v.get(*l).verdict == State::Suspect)?;
    let mut consequences = Vec::new();
    let mut also_suspect = Vec::new();
    for later in Layer::ALL.into_iter().filter(|l| *l > first) {
        if v.get(later).verdict != State::Suspect {
            continue;
        }
        if explains(first, later, v, inputs) {
            v.get_mut(later).consequence_of = Some(first);
            consequences.push(later);
        } else {
            also_suspect.push(later);
        }
    }
    let (confidence, confidence_note) = if inputs.lost_in_window > 0 {
        (
            "reduced",
            Some(format!(
                "{} events lost in the window: latency, parsed DNS figures and last failures undercount (counters do not)",
                inputs.lost_in_window
            )),
        )
    } else {
        ("high", None)
    };
    let c = v.get(first);
    Some(Cause {
        layer: first,
        evidence: c.evidence.clone(),
        destinations: c.destinations.clone(),
        consequences,
        also_suspect,
        confidence,
        confidence_note,
    })
}

/// Does the suspect layer `cause` account for every suspect destination of `later`?
fn explains(cause: Layer, later: Layer, v: &Verdicts, inputs: &Inputs<'_>) -> bool {
    match (cause, later) {
        // DNS troubles explain failing connects to the addresses those troubled lookups
        // returned (stale or split answers, answers that came too late).
        (Layer::Dns, Layer::TcpTls) => {
            let suspect_resolvers: BTreeSet<&str> = v.dns.destinations.iter().map(String::as_str).collect();
            let mut addrs: BTreeSet<IpAddr> = BTreeSet::new();
            for n in inputs.names {
                if n.resolvers.iter().any(|r| suspect_resolvers.contains(r.to_string().as_str())) {
                    addrs.extend(n.answers.iter().filter_map(|a| a.parse::<IpAddr>().ok()));
                }
            }
            for d in inputs.divergences {
                for a in &d.answers {
                    addrs.extend(a.addresses.iter().copied());
                }
            }
            let dests = &v.tcp_tls.destinations;
            !dests.is_empty()
                && dests.iter().all(|d| d.parse::<std::net::SocketAddr>().is_ok_and(|s| addrs.contains(&s.ip())))
        }
        _ => false,
    }
}

/// A layer's verdict changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub ts: String,
    pub layer: Layer,
    pub from: State,
    pub to: State,
    pub evidence: Vec<String>,
    pub consequence_of: Option<Layer>,
}

/// Remembers the last verdicts and the recent changes (the timeline).
#[derive(Debug)]
pub struct Tracker {
    last: [State; 4],
    pub timeline: VecDeque<Change>,
    keep: usize,
}

impl Tracker {
    pub fn new(keep: usize) -> Tracker {
        Tracker { last: [State::NoSignal; 4], timeline: VecDeque::new(), keep }
    }

    /// Record this window's verdicts; returns the changes since the last call.
    pub fn update(&mut self, ts: &str, v: &Verdicts) -> Vec<Change> {
        let mut changes = Vec::new();
        for (i, layer) in Layer::ALL.into_iter().enumerate() {
            let now = v.get(layer);
            if now.verdict != self.last[i] {
                changes.push(Change {
                    ts: ts.to_owned(),
                    layer,
                    from: self.last[i],
                    to: now.verdict,
                    evidence: now.evidence.clone(),
                    consequence_of: now.consequence_of,
                });
                self.last[i] = now.verdict;
            }
        }
        for c in &changes {
            self.timeline.push_back(c.clone());
            if self.timeline.len() > self.keep {
                self.timeline.pop_front();
            }
        }
        changes
    }
}
