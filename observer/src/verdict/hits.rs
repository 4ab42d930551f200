//! A layer's rule hits, in order. The first [`HELD`] are kept whole; the rest are folded into
//! what a verdict takes from them (rule names, the strongest hit, evidence lines to count).
//! The destinations are kept as the verdict lists them: the first [`MAX_LISTED`] in order,
//! and a 64-bit key per run of hits to count the others. 100,000 failing destinations made
//! 200,000 hits of 88 bytes, then runs of 32-byte addresses and a set of them to count the
//! distinct ones: the largest allocations of an interval's close.

use std::{
    hash::{Hash, Hasher},
    net::SocketAddr,
};

use super::{Hit, MAX_LISTED};

/// Hits kept whole: past the evidence lines and destinations a verdict lists.
const HELD: usize = 4 * MAX_LISTED;

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
    /// The first [`MAX_LISTED`] distinct destinations of all hits, in order of first hit.
    pub(super) listed: Vec<SocketAddr>,
    /// One key per run of hits (consecutive hits for one destination), held or folded:
    /// sorted and deduplicated, they count the distinct destinations.
    pub(super) keys: Vec<u64>,
    folded: usize,
    /// The destination of the last folded hit.
    last: Option<SocketAddr>,
}

/// A destination as 64 bits: an IPv4 one exactly (address and port), an IPv6 one hashed with
/// the top bit set (two of 100,000 collide with odds of about 1 in 10^9, and then one
/// destination goes uncounted in `destinations_omitted`).
pub(super) fn key(d: &SocketAddr) -> u64 {
    match d {
        SocketAddr::V4(a) => (u64::from(a.ip().to_bits()) << 16) | u64::from(a.port()),
        SocketAddr::V6(a) => {
            // Fixed keys: the same destination gets the same key in every rule set.
            let mut h = std::hash::DefaultHasher::new();
            (a.ip(), a.port()).hash(&mut h);
            h.finish() | (1 << 63)
        }
    }
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
        let destination = hit.destination;
        let new_run = self.last_destination() != Some(destination);
        if new_run {
            self.list(destination);
            self.keys.push(key(&destination));
        }
        self.place(hit);
    }

    /// Hold the hit whole while there is room and nothing was folded yet; fold it otherwise.
    fn place(&mut self, hit: Hit) {
        if self.held.len() < HELD && self.folded == 0 {
            self.held.push(hit);
            return;
        }
        self.folded += 1;
        add_rule(&mut self.rules, hit.rule);
        keep_stronger(&mut self.best, (hit.count, hit.margin, hit.rule));
        self.lines += usize::from(hit.evidence.is_some());
        self.last = Some(hit.destination);
    }

    /// Another rule set's hits after these, in order.
    pub fn extend(&mut self, other: Hits) {
        if self.count() == 0 {
            *self = other;
            return;
        }
        let Hits { held, rules, best, lines, listed, keys, folded, last } = other;
        // Its keys and its listed destinations cover its held hits too.
        let other_last = last.or_else(|| held.last().map(|h| h.destination));
        for h in held {
            self.place(h);
        }
        for r in rules {
            add_rule(&mut self.rules, r);
        }
        if let Some(b) = best {
            keep_stronger(&mut self.best, b);
        }
        self.lines += lines;
        // Its first distinct destinations include every one that is among the first of
        // both: a destination's rank in `other` alone is at most its rank after these.
        for d in listed {
            self.list(d);
        }
        self.keys.extend(keys);
        self.folded += folded;
        if other_last.is_some() {
            self.last = other_last;
        }
    }

    /// The destination of the last hit pushed.
    fn last_destination(&self) -> Option<SocketAddr> {
        if self.folded > 0 { self.last } else { self.held.last().map(|h| h.destination) }
    }

    /// List `destination` if it is new and there is room (a scan of at most MAX_LISTED).
    fn list(&mut self, destination: SocketAddr) {
        if self.listed.len() < MAX_LISTED && !self.listed.contains(&destination) {
            self.listed.push(destination);
        }
    }

    /// Every hit, held or folded.
    pub fn count(&self) -> usize {
        self.held.len() + self.folded
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The listed destinations, and how many distinct others the hits name.
    pub fn destinations(listed: Vec<SocketAddr>, mut keys: Vec<u64>) -> (Vec<SocketAddr>, usize) {
        keys.sort_unstable();
        keys.dedup();
        let omitted = keys.len().saturating_sub(listed.len());
        (listed, omitted)
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

    #[test]
    fn destinations_past_the_held_hits_are_listed_and_counted_once() {
        // Five hits a destination: the held hits cover 80 destinations, so the last 20 listed
        // come from folded hits. A second rule set repeats half of them, in IPv6 too.
        let v6 = |d: u32| SocketAddr::from((std::net::Ipv6Addr::from(u128::from(d) << 64), 443));
        let mut tcp = Hits::default();
        for d in 0..300 {
            for rule in ["a", "b", "c", "d", "e"] {
                tcp.push(hit(rule, d, 1, false));
            }
        }
        let mut tls = Hits::default();
        for d in 150..450 {
            tls.push(hit("tls.alerts", d, 1, false));
            let mut h = hit("tls.alerts", 0, 1, false);
            h.destination = v6(d);
            tls.push(h);
        }
        let mut all = Hits::default();
        all.extend(tcp);
        all.extend(tls);
        let v = Verdict::from_hits(all, true, "");
        let expected: Vec<SocketAddr> = (0..100).map(|d| SocketAddr::from((std::net::Ipv4Addr::from(d), 80))).collect();
        assert_eq!(v.destinations, expected, "the first 100, in order, 20 of them from folded hits");
        // 450 IPv4 destinations and 300 IPv6 ones, each once.
        assert_eq!(v.destinations_omitted, 450 + 300 - 100);
    }

    #[test]
    fn keys_tell_destinations_apart() {
        let a = |s: &str| key(&s.parse().unwrap());
        assert_ne!(a("10.0.0.1:80"), a("10.0.0.1:81"));
        assert_ne!(a("10.0.0.1:80"), a("10.0.0.2:80"));
        assert_ne!(a("[::1]:80"), a("[::2]:80"));
        assert_eq!(a("[2001:db8::1]:443"), a("[2001:db8::1]:443"));
        // An IPv6 key never equals an IPv4 one.
        assert_ne!(a("[::ffff:10.0.0.1]:80") >> 63, a("10.0.0.1:80") >> 63);
    }

    const MAX_LISTED_FOR_TEST: usize = super::super::MAX_LISTED;
}
