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
    qtype: String,
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
    pub fn on_nxdomain(&mut self, client: IpAddr, resolver: SocketAddr, qname: &str, qtype: &str, at: Mono) {
        if !self.recent.contains_key(&client) && self.recent.len() >= CLIENTS {
            return;
        }
        let q = self.recent.entry(client).or_default();
        if q.len() >= PER_CLIENT {
            q.pop_front();
        }
        q.push_back(Nx { at, qname: qname.to_owned(), qtype: qtype.to_owned(), resolver });
    }

    /// `qname` resolved for `client`: the NXDOMAINs it explains, as (resolver, qname, qtype),
    /// each once.
    pub fn on_success(&mut self, client: IpAddr, qname: &str, at: Mono) -> Vec<(SocketAddr, String, String)> {
        let Some(q) = self.recent.get_mut(&client) else { return Vec::new() };
        let mut explained = Vec::new();
        q.retain(|nx| {
            let hit = at.since(nx.at) <= EXCUSE_WITHIN && is_expansion(&nx.qname, qname);
            if hit {
                explained.push((nx.resolver, nx.qname.clone(), nx.qtype.clone()));
            }
            !hit
        });
        explained
    }

    /// NXDOMAINs per resolver still within their grace at `now`: not judged yet.
    pub fn awaiting(&self, now: Mono) -> Map<SocketAddr, u64> {
        let mut out = Map::default();
        for nx in self.recent.values().flatten().filter(|nx| now.since(nx.at) < GRACE) {
            *out.entry(nx.resolver).or_default() += 1;
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
        s.on_nxdomain(c1, r, "api.test.ns.svc.cluster.local", "A", Mono(0));
        s.on_nxdomain(c1, r, "api.test.svc.cluster.local", "AAAA", Mono(1_000));
        s.on_nxdomain(c2, r, "api.test.cluster.local", "A", Mono(2_000));
        s.on_nxdomain(c1, r, "gone.test.cluster.local", "A", Mono(3_000));
        assert_eq!(s.awaiting(Mono(500_000_000))[&r], 4, "all within their grace");
        let explained = s.on_success(c1, "api.test", Mono(5_000_000));
        assert_eq!(explained.len(), 2, "{explained:?}");
        assert!(s.on_success(c1, "api.test", Mono(6_000_000)).is_empty(), "each once");
        assert!(s.awaiting(Mono(2_000_000_000)).is_empty(), "past the grace: judged");
        // Too late to explain.
        assert!(s.on_success(c2, "api.test", Mono(20_000_000_000)).is_empty());
        s.expire(Mono(20_000_000_000));
        assert!(s.recent.is_empty());
    }
}
