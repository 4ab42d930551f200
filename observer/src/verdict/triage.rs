//! The triage order: the first suspect layer is the likely cause; a later suspect layer whose
//! destinations the cause explains is a consequence of it, not a separate cause.

use std::{
    collections::{BTreeSet, VecDeque},
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use super::{Layer, Rules, State, Verdicts};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    pub layer: Layer,
    pub evidence: Vec<String>,
    pub destinations: Vec<SocketAddr>,
    /// Later suspect layers this cause explains.
    pub consequences: Vec<Layer>,
    /// Later suspect layers it does not explain: look at them too.
    pub also_suspect: Vec<Layer>,
    /// "high", or "reduced" when events were lost in the window.
    #[serde(deserialize_with = "crate::present::wire::interned")]
    pub confidence: crate::present::wire::Name,
    pub confidence_note: Option<String>,
    /// The onset: when this layer last turned suspect (RFC 3339), as far back as observer
    /// (or the daemon it is attached to) has watched.
    #[serde(default)]
    pub since: Option<String>,
}

pub fn order(v: &mut Verdicts, rules: &[&dyn Rules], lost_in_window: u64) -> Option<Cause> {
    let first = Layer::ALL.into_iter().find(|l| v.get(*l).verdict == State::Suspect)?;
    // What the cause accounts for, asked of each of its layer's rules.
    let explained: BTreeSet<IpAddr> = rules
        .iter()
        .filter(|r| r.layer() == first)
        .flat_map(|r| r.explains(&v.get(first).destinations))
        .collect();
    let mut consequences = Vec::new();
    let mut also_suspect = Vec::new();
    for later in Layer::ALL.into_iter().filter(|l| *l > first) {
        if v.get(later).verdict != State::Suspect {
            continue;
        }
        // A destination is explained by its own address, or (a proxy's listening address)
        // by the upstreams it failed to reach.
        let l = v.get(later);
        let is_explained = |d: &SocketAddr| {
            explained.contains(&d.ip())
                || l.upstreams.iter().any(|u| {
                    u.destination == *d && !u.upstreams.is_empty() && u.upstreams.iter().all(|x| explained.contains(&x.ip()))
                })
        };
        let dests = &l.destinations;
        if !dests.is_empty() && dests.iter().all(is_explained) {
            v.get_mut(later).consequence_of = Some(first);
            consequences.push(later);
        } else {
            also_suspect.push(later);
        }
    }
    let (confidence, confidence_note) = if lost_in_window > 0 {
        (
            "reduced",
            Some(format!(
                "{lost_in_window} events lost in the window: latency, parsed DNS figures and last failures undercount (counters do not)"
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
        since: None,
    })
}

/// A layer's verdict changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Per layer, when it turned suspect (while it is).
    suspect_since: [Option<String>; 4],
    pub timeline: VecDeque<Change>,
    keep: usize,
}

impl Tracker {
    pub fn new(keep: usize) -> Tracker {
        Tracker { last: [State::NoSignal; 4], suspect_since: Default::default(), timeline: VecDeque::new(), keep }
    }

    /// When `layer` turned suspect, while it is.
    pub fn onset(&self, layer: Layer) -> Option<String> {
        let i = Layer::ALL.iter().position(|l| *l == layer)?;
        self.suspect_since[i].clone()
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
                self.suspect_since[i] = (now.verdict == State::Suspect).then(|| ts.to_owned());
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
