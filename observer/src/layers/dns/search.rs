//! Search-list expansion. With `ndots:5` and three search domains (a Kubernetes pod), a
//! healthy lookup of `api.example.com` first asks `api.example.com.ns.svc.cluster.local` and
//! two more names, gets NXDOMAIN for each, then asks `api.example.com` and succeeds. Those
//! NXDOMAINs are the resolver library at work, not errors: an NXDOMAIN is expected when the
//! same client's lookup of a name it expands then succeeds.

use std::{
    collections::VecDeque,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::parse::QType;
use crate::{events::Mono, layers::Map};

/// How long after an NXDOMAIN the success that explains it may come.
const EXCUSE_WITHIN: Duration = Duration::from_secs(10);
/// A fresh NXDOMAIN is not judged for this long: the rest of the search list follows within
/// milliseconds, and a reading that falls in between must not make DNS suspect.
pub const GRACE: Duration = Duration::from_secs(1);
/// NXDOMAINs remembered per client, and clients remembered; past them, an NXDOMAIN simply
/// counts as an error (the conservative side).
const PER_CLIENT: usize = 64;
const CLIENTS: usize = 4096;

#[derive(Debug, Clone)]
struct Nx {
    at: Mono,
    qname: String,
    qtype: QType,
    resolver: SocketAddr,
}

#[derive(Debug, Default)]
pub struct SearchList {
    recent: Map<IpAddr, VecDeque<Nx>>,
}

/// Is `nx` a search-list expansion of `ok`? Both share their leading labels (at least one),
/// `nx` has a suffix beyond them, and `ok` has either nothing beyond them (the name as the
/// application wrote it) or a suffix that ends `nx`'s (a later, shorter search domain).
pub fn is_expansion(nx: &str, ok: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (nx.split('.').collect(), ok.split('.').collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == 0 || common == a.len() {
        return false;
    }
    let (nx_suffix, ok_suffix) = (&a[common..], &b[common..]);
    ok_suffix.is_empty() || (ok_suffix.len() < nx_suffix.len() && nx_suffix.ends_with(ok_suffix))
}

impl SearchList {
    pub fn on_nxdomain(&mut self, client: IpAddr, resolver: SocketAddr, qname: &str, qtype: QType, at: Mono) {
        if !self.recent.contains_key(&client) && self.recent.len() >= CLIENTS {
            return;
        }
        let q = self.recent.entry(client).or_default();
        if q.len() >= PER_CLIENT {
            q.pop_front();
        }
        q.push_back(Nx { at, qname: qname.to_owned(), qtype, resolver });
    }

    /// `qname` resolved for `client`: the NXDOMAINs it explains, as (resolver, qname, qtype),
    /// each once.
    pub fn on_success(&mut self, client: IpAddr, qname: &str, at: Mono) -> Vec<(SocketAddr, String, QType)> {
        let Some(q) = self.recent.get_mut(&client) else { return Vec::new() };
        let mut explained = Vec::new();
        q.retain(|nx| {
            let hit = at.since(nx.at) <= EXCUSE_WITHIN && is_expansion(&nx.qname, qname);
            if hit {
                explained.push((nx.resolver, nx.qname.clone(), nx.qtype));
            }
            !hit
        });
        explained
    }

    /// Whether any NXDOMAIN is past its grace but could still be explained: only then does
    /// [`SearchList::awaiting`] ask about follow-up queries.
    pub fn has_unexplained_past_grace(&self, now: Mono) -> bool {
        self.recent.values().flatten().any(|nx| now.since(nx.at) >= GRACE)
    }

    /// NXDOMAINs per resolver not judged yet at `now`: within their grace, or followed by a
    /// query of the same client for a related name (a later search domain, or the name as
    /// written) that is still unanswered. That is a lookup in the middle of its search list
    /// whose next answer is slow or was lost and is being retried; when it resolves, it
    /// explains them. `pending_after(client, at, qname)` says whether such a query exists.
    pub fn awaiting(&self, now: Mono, pending_after: impl Fn(IpAddr, Mono, &str) -> bool) -> Map<SocketAddr, u64> {
        let mut out = Map::default();
        for (client, q) in &self.recent {
            for nx in q {
                if now.since(nx.at) < GRACE || pending_after(*client, nx.at, &nx.qname) {
                    *out.entry(nx.resolver).or_default() += 1;
                }
            }
        }
        out
    }

    /// Forget NXDOMAINs too old to be explained.
    pub fn expire(&mut self, now: Mono) {
        for q in self.recent.values_mut() {
            q.retain(|nx| now.since(nx.at) <= EXCUSE_WITHIN);
        }
        self.recent.retain(|_, q| !q.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansions_are_told_from_other_names() {
        // ndots: the name as written succeeds after the search domains.
        assert!(is_expansion("api.example.com.ns.svc.cluster.local", "api.example.com"));
        assert!(is_expansion("api.example.com.cluster.local", "api.example.com"));
        // A later, shorter search domain succeeds (a service in another namespace).
        assert!(is_expansion("db.other.ns.svc.cluster.local", "db.other.svc.cluster.local"));
        // Not expansions: a sibling name, the same name, a longer success, no shared label.
        assert!(!is_expansion("api.broken.com", "api.example.com"));
        assert!(!is_expansion("api.example.com", "api.example.com"));
        assert!(!is_expansion("db.svc.cluster.local", "db.other.ns.svc.cluster.local"));
        assert!(!is_expansion("a.test.cluster.local", "b.test"));
    }

    #[test]
    fn a_success_explains_recent_expansions_of_its_own_client_only() {
        let r: SocketAddr = "10.96.0.10:53".parse().unwrap();
        let (c1, c2): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut s = SearchList::default();
        s.on_nxdomain(c1, r, "api.test.ns.svc.cluster.local", QType::new("A"), Mono(0));
        s.on_nxdomain(c1, r, "api.test.svc.cluster.local", QType::new("AAAA"), Mono(1_000));
        s.on_nxdomain(c2, r, "api.test.cluster.local", QType::new("A"), Mono(2_000));
        s.on_nxdomain(c1, r, "gone.test.cluster.local", QType::new("A"), Mono(3_000));
        let none = |_: IpAddr, _: Mono, _: &str| false;
        assert_eq!(s.awaiting(Mono(500_000_000), none)[&r], 4, "all within their grace");
        let explained = s.on_success(c1, "api.test", Mono(5_000_000));
        assert_eq!(explained.len(), 2, "{explained:?}");
        assert!(s.on_success(c1, "api.test", Mono(6_000_000)).is_empty(), "each once");
        assert!(s.awaiting(Mono(2_000_000_000), none).is_empty(), "past the grace: judged");
        // Too late to explain.
        assert!(s.on_success(c2, "api.test", Mono(20_000_000_000)).is_empty());
        s.expire(Mono(20_000_000_000));
        assert!(s.recent.is_empty());
    }

    #[test]
    fn an_expansion_waits_past_its_grace_while_the_lookup_goes_on() {
        let r: SocketAddr = "10.96.0.10:53".parse().unwrap();
        let c: IpAddr = "10.0.0.1".parse().unwrap();
        let mut s = SearchList::default();
        s.on_nxdomain(c, r, "api.test.ns.svc.cluster.local", QType::new("A"), Mono(0));
        let later = Mono(3_000_000_000);
        assert!(s.has_unexplained_past_grace(later));
        // The next search domain was asked 1 ms later and is still unanswered (a lost
        // response the resolver library retries): not judged yet.
        let next = |client: IpAddr, at: Mono, qname: &str| client == c && at <= Mono(1_000_000) && is_expansion(qname, "api.test.svc.cluster.local");
        assert_eq!(s.awaiting(later, next)[&r], 1);
        // A query of another client, or one for an unrelated name, does not hold it.
        let other = |client: IpAddr, _: Mono, qname: &str| client != c && is_expansion(qname, "api.test.svc.cluster.local");
        assert!(s.awaiting(later, other).is_empty());
        let unrelated = |_: IpAddr, _: Mono, qname: &str| is_expansion(qname, "db.test");
        assert!(s.awaiting(later, unrelated).is_empty());
        // The success explains it.
        assert_eq!(s.on_success(c, "api.test", Mono(3_500_000_000)).len(), 1);
        assert!(!s.has_unexplained_past_grace(later));
    }
}
