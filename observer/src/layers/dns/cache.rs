//! Parsed messages kept by their bytes after the id. A host's queries repeat (the same
//! stub asks for the same names, with only the id changing), and so do the answers to them
//! while their TTL stands still: a repeat costs a hash of its bytes instead of a parse and
//! a dozen small allocations, which under a flood was most of observer's CPU.

use std::sync::Arc;

use super::parse::{Parsed, parse};
use crate::layers::Map;

/// Messages kept, at most; when full the cache starts over (cheaper than tracking age, and
/// a host's repeats come back within one round).
pub const CAPACITY: usize = 1024;

#[derive(Debug, Default)]
pub struct ParseCache {
    by_bytes: Map<Box<[u8]>, Arc<Parsed>>,
}

impl ParseCache {
    /// The message parsed, from the cache when its bytes after the id were seen. The id of
    /// the result is the first sighting's: read the message's own with `dns_id`.
    pub fn parse(&mut self, bytes: &[u8]) -> Result<Arc<Parsed>, simple_dns::SimpleDnsError> {
        let Some(rest) = bytes.get(2..) else { return parse(bytes).map(Arc::new) };
        if let Some(p) = self.by_bytes.get(rest) {
            return Ok(p.clone());
        }
        // Errors are not kept: a malformed message is parsed (and counted) every time.
        let p = Arc::new(parse(bytes)?);
        if self.by_bytes.len() >= CAPACITY {
            self.by_bytes.clear();
        }
        self.by_bytes.insert(rest.into(), p.clone());
        Ok(p)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use simple_dns::{CLASS, Name, Packet, Question, TYPE};

    use super::*;

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut p = Packet::new_query(id);
        p.questions.push(Question::new(Name::new_unchecked(name), TYPE::A.into(), CLASS::IN.into(), false));
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn a_repeat_with_another_id_is_the_first_parse_and_another_name_is_parsed() {
        let mut c = ParseCache::default();
        let a = c.parse(&query(1, "api.test")).unwrap();
        let b = c.parse(&query(2, "api.test")).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the repeat came from the cache");
        assert_eq!(a.id, 1, "the first sighting's id: callers read their own");
        let other = c.parse(&query(1, "db.test")).unwrap();
        assert_eq!(other.qname.as_ref().map(|q| &*q.0), Some("db.test"));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn malformed_messages_are_errors_every_time_and_not_kept() {
        let mut c = ParseCache::default();
        let mut bad = query(1, "api.test");
        bad.truncate(bad.len() - 3);
        assert!(c.parse(&bad).is_err());
        assert!(c.parse(&bad).is_err());
        assert!(c.parse(&[0x12]).is_err());
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn it_never_holds_more_than_its_capacity() {
        let mut c = ParseCache::default();
        for i in 0..CAPACITY + 10 {
            let p = c.parse(&query(0, &format!("n{i}.test"))).unwrap();
            assert_eq!(p.qname.as_ref().map(|q| q.0.to_string()), Some(format!("n{i}.test")));
            assert!(c.len() <= CAPACITY);
        }
    }
}
