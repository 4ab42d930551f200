//! A layer's rule hits, in order. The first [`HELD`] are kept whole; the rest are folded into
//! what a verdict takes from them (rule names, the strongest hit, evidence lines to count, and
//! one destination per run): 100,000 failing destinations made 200,000 hits of 88 bytes, the
//! largest allocation of an interval.

use std::net::SocketAddr;

use super::Hit;

/// Hits kept whole: past the evidence lines and destinations a verdict lists.
const HELD: usize = 4 * super::MAX_LISTED;

/// A hit's events, margin and rule: what the verdict's confidence is made of (ranked by
/// `keep_stronger`).
pub(super) type Strength = (u64, f64, &'static str);

#[derive(Debug, Clone, Default)]
pub(super) struct Hits {
    pub(super) held: Vec<Hit>,
    /// Rule names of the folded hits, in order of first firing.
    pub(super) rules: Vec<&'static str>,
    /// The strongest folded hit.
    pub(super) best: Option<Strength>,
    /// Folded hits that carried an evidence line (an empty stand-in past the ones written).
    pub(super) lines: usize,
    /// The destination of each run of folded hits (consecutive hits for one destination).
    pub(super) runs: Vec<SocketAddr>,
    folded: usize,
}

/// Keep `candidate` if it is at least as strong as `best`: the last of equals, as `max_by`
/// picks.
pub(super) fn keep_stronger(best: &mut Option<Strength>, candidate: Strength) {
    let rank = |(count, margin, _): Strength| (count.min(3), margin);
    if best.is_none_or(|b| rank(candidate) >= rank(b)) {
        *best = Some(candidate);
    }
}

/// Add `rule` to `rules` unless it is there (a handful of names: a scan is enough).
pub(super) fn add_rule(rules: &mut Vec<&'static str>, rule: &'static str) {
    if !rules.contains(&rule) {
        rules.push(rule);
    }
}

impl Hits {
    pub fn push(&mut self, hit: Hit) {
        if self.held.len() < HELD && self.folded == 0 {
            self.held.push(hit);
            return;
        }
        self.folded += 1;
        add_rule(&mut self.rules, hit.rule);
        keep_stronger(&mut self.best, (hit.count, hit.margin, hit.rule));
        self.lines += usize::from(hit.evidence.is_some());
        self.run(hit.destination);
    }

    /// Another rule set's hits after these, in order.
    pub fn extend(&mut self, other: Hits) {
        if self.count() == 0 {
            *self = other;
            return;
        }
        for h in other.held {
            self.push(h);
        }
        for r in other.rules {
            add_rule(&mut self.rules, r);
        }
        if let Some(b) = other.best {
            keep_stronger(&mut self.best, b);
        }
        self.lines += other.lines;
        // Consecutive runs differ already; only the first may continue this one's last.
        for d in other.runs {
            self.run(d);
        }
        self.folded += other.folded;
    }

    /// A folded hit for `destination`: a new run unless the last hit was for it too.
    fn run(&mut self, destination: SocketAddr) {
        let last = self.runs.last().copied().or_else(|| self.held.last().map(|h| h.destination));
        if last != Some(destination) {
            self.runs.push(destination);
        }
    }

    /// Every hit, held or folded.
    pub fn count(&self) -> usize {
        self.held.len() + self.folded
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }
}

/// The held hits, for the rules' own tests.
impl std::ops::Deref for Hits {
    type Target = [Hit];
    fn deref(&self) -> &[Hit] {
        &self.held
    }
}

#[cfg(test)]
mod tests {
    use super::{super::Verdict, *};

    fn hit(rule: &'static str, dest: u32, count: u64, evidence: bool) -> Hit {
        Hit { count, margin: 1.0, rule, destination: SocketAddr::from((std::net::Ipv4Addr::from(dest), 80)), evidence: evidence.then(String::new) }
            .strength(count, count as f64, 1.0)
    }

    #[test]
    fn folded_hits_give_the_verdict_that_held_ones_would() {
        // Two rule sets over 1,000 destinations each, half of them shared, two hits per
        // destination: far past the hits held whole.
        let mut tcp = Hits::default();
        for d in 0..1000 {
            tcp.push(hit("tcp.refused", d, 1, true));
            tcp.push(hit("tcp.success_ratio", d, 1, false));
        }
        let mut tls = Hits::default();
        for d in 500..1500 {
            tls.push(hit("tls.alerts", d, 1, true));
            // The strongest hit of all comes late, among the folded ones.
            tls.push(hit(if d == 1400 { "tls.expired" } else { "tls.aborted" }, d, if d == 1400 { 9 } else { 1 }, false));
        }
        let mut all = Hits::default();
        all.extend(tcp);
        all.extend(tls);
        assert_eq!(all.count(), 4000);
        let v = Verdict::from_hits(all, true, "");
        assert_eq!(v.rules, ["tcp.refused", "tcp.success_ratio", "tls.alerts", "tls.aborted", "tls.expired"]);
        assert_eq!(v.destinations.len(), MAX_LISTED_FOR_TEST);
        assert_eq!(v.destinations[99], SocketAddr::from((std::net::Ipv4Addr::from(99), 80)), "in order");
        assert_eq!(v.destinations_omitted, 1500 - MAX_LISTED_FOR_TEST, "each destination once, the shared ones too");
        // 2,000 lines; none written (the stand-ins are empty), all counted.
        assert_eq!(v.evidence, ["… and 2000 more lines like these (the sections list every destination)"]);
        assert_eq!(v.confidence_why.as_deref(), Some("tls.expired: 9 events, 9.0× its threshold"));
    }

    const MAX_LISTED_FOR_TEST: usize = super::super::MAX_LISTED;
}
