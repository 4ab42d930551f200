//! `--redact`: names out of everything observer writes. Query names, SNI (and the names in
//! certificates), HTTP Hosts and paths become `h:` and 12 hex digits: a keyed hash whose key
//! is drawn at start, so one name is one token within a run (and its recording), and the
//! tokens of two runs cannot be joined. Addresses and ports stay: they are the evidence.

use std::hash::{BuildHasher, Hasher};

#[derive(Debug, Default)]
pub struct Redactor {
    /// SipHash with a random key per process.
    key: std::collections::hash_map::RandomState,
}

impl Redactor {
    pub fn hash(&self, s: &str) -> String {
        if s.is_empty() || s.starts_with("h:") {
            return s.to_owned();
        }
        let mut h = self.key.build_hasher();
        h.write(s.as_bytes());
        format!("h:{:012x}", h.finish() >> 16)
    }

    /// In place.
    pub fn name(&self, s: &mut String) {
        *s = self.hash(s);
    }

    /// A histogram's tag (`IP:port|SNI`, `client|IP:port|Host`): its names hashed, the rest
    /// kept.
    pub fn tag(&self, tag: &str) -> String {
        tag.split('|')
            .map(|part| {
                if part.parse::<std::net::SocketAddr>().is_ok() || part == "client" || part == "server" {
                    part.to_owned()
                } else {
                    self.hash(part)
                }
            })
            .collect::<Vec<_>>()
            .join("|")
    }

    /// An address stays; anything else (a CNAME target) is a name.
    pub fn address_or_name(&self, s: &mut String) {
        if s.parse::<std::net::IpAddr>().is_err() {
            self.name(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_stable_tokens_and_addresses_stay() {
        let r = Redactor::default();
        let a = r.hash("api.internal");
        assert!(a.starts_with("h:") && a.len() == 14 && a != "api.internal", "{a}");
        assert_eq!(r.hash("api.internal"), a, "one name, one token");
        assert_ne!(r.hash("api.internal."), a);
        assert_eq!(r.hash(&a), a, "a token is not hashed again");
        assert_eq!(r.tag("10.0.0.2:443|api.internal"), format!("10.0.0.2:443|{a}"));
        assert_eq!(r.tag("client|[fe80::1]:80|api.internal"), format!("client|[fe80::1]:80|{a}"));
        let mut answers = ["10.1.1.1".to_owned(), "edge.cdn.example".to_owned()];
        answers.iter_mut().for_each(|s| r.address_or_name(s));
        assert_eq!(answers[0], "10.1.1.1");
        assert!(answers[1].starts_with("h:"));
        assert_ne!(Redactor::default().hash("api.internal"), a, "another run, another key");
    }
}
