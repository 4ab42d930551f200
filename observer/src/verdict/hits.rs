//! A layer's rule hits, in order. The first [`HELD`] are kept whole; the rest are folded into
//! what a verdict takes from them (rule names, the strongest hit, evidence lines to count, and
//! one destination per run): 100,000 failing destinations made 200,000 hits of 88 bytes, the
//! largest allocation of an interval.

use std::net::SocketAddr;

use super::Hit;

/// Hits kept whole: past the evidence lines and destinations a verdict lists.
const HELD: usize = 4 * super::MAX_LISTED;

#[derive(Debug, Clone, Default)]
pub(super) struct Hits {
    held: Vec<Hit>,
    /// Rule names of the folded hits, in order of first firing.
    rules: Vec<&'static str>,
    /// The strongest folded hit (the last of equals, as `max_by` picks): count, margin, rule.
    best: Option<(u64, f64, &'static str)>,
    /// Folded hits that carried an evidence line (an empty stand-in past the ones written).
    lines: usize,
    /// The destination of each run of folded hits (consecutive hits for one destination).
    runs: Vec<SocketAddr>,
    folded: usize,
}

impl Hits {
    pub fn push(&mut self, hit: Hit) {
        if self.held.len() < HELD && self.folded == 0 {
            self.held.push(hit);
            return;
        }
        self.folded += 1;
        if !self.rules.contains(&hit.rule) {
            self.rules.push(hit.rule);
        }
        if self.best.is_none_or(|(c, m, _)| (hit.count.min(3), hit.margin) >= (c.min(3), m)) {
            self.best = Some((hit.count, hit.margin, hit.rule));
        }
        self.lines += usize::from(hit.evidence.is_some());
        let last = self.runs.last().copied().or_else(|| self.held.last().map(|h| h.destination));
        if last != Some(hit.destination) {
            self.runs.push(hit.destination);
        }
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
            if !self.rules.contains(&r) {
                self.rules.push(r);
            }
        }
        if let Some((c, m, r)) = other.best
            && self.best.is_none_or(|(bc, bm, _)| (c.min(3), m) >= (bc.min(3), bm))
        {
            self.best = Some((c, m, r));
        }
        self.lines += other.lines;
        let mut runs = other.runs.into_iter();
        if let Some(first) = runs.next() {
            let last = self.runs.last().copied().or_else(|| self.held.last().map(|h| h.destination));
            if last != Some(first) {
                self.runs.push(first);
            }
        }
        self.runs.extend(runs);
        self.folded += other.folded;
    }

    /// Every hit, held or folded.
    pub fn count(&self) -> usize {
        self.held.len() + self.folded
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    pub(super) fn into_parts(self) -> (Vec<Hit>, Folded) {
        (self.held, Folded { rules: self.rules, best: self.best, lines: self.lines, runs: self.runs })
    }
}

/// What the folded hits leave for the verdict.
pub(super) struct Folded {
    pub rules: Vec<&'static str>,
    pub best: Option<(u64, f64, &'static str)>,
    pub lines: usize,
    pub runs: Vec<SocketAddr>,
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
