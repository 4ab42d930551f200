//! Parsed messages kept by their bytes after the id. A host's queries repeat (the same
//! stub asks for the same names, with only the id changing), and so do the answers to them
//! while their TTL stands still: a repeat costs a hash of its bytes instead of a parse and
//! a dozen small allocations, which under a flood was most of observer's CPU.

use std::sync::Arc;

use super::parse::{Parsed, parse};
use crate::layers::Map;

/// Messages kept, at most; when full the cache starts over (cheaper than tracking age, and
/// a host's repeats come back within one round).
pub const CAPACITY: usize = 256;
/// A round with fewer hits than this (a host asking for many names once each) turns the
/// cache off for [`BYPASS_FOR`] messages: there, keeping each message only costs.
const WORTH_IT: u32 = CAPACITY as u32 / 4;
const BYPASS_FOR: u32 = 16 * CAPACITY as u32;

#[derive(Debug, Default)]
pub struct ParseCache {
    by_bytes: Map<Box<[u8]>, Arc<Parsed>>,
    /// Hits since the cache last started over.
    hits: u32,
    /// Messages still to parse without the cache.
    bypass: u32,
}

impl ParseCache {
    /// The message parsed, from the cache when its bytes after the id were seen.
    pub fn parse(&mut self, bytes: &[u8]) -> Result<Arc<Parsed>, simple_dns::SimpleDnsError> {
        let Some(rest) = bytes.get(2..).filter(|_| self.bypass == 0) else {
            self.bypass = self.bypass.saturating_sub(1);
            return parse(bytes).map(Arc::new);
        };
        if let Some(p) = self.by_bytes.get(rest) {
            self.hits += 1;
            return Ok(p.clone());
        }
        // Errors are not kept: a malformed message is parsed (and counted) every time.
        let p = Arc::new(parse(bytes)?);
        if self.by_bytes.len() >= CAPACITY {
            if self.hits < WORTH_IT {
                self.bypass = BYPASS_FOR;
            }
            self.by_bytes.clear();
            self.hits = 0;
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
    fn it_never_holds_more_than_its_capacity_and_steps_aside_while_nothing_repeats() {
        let mut c = ParseCache::default();
        for i in 0..=CAPACITY {
            let p = c.parse(&query(0, &format!("n{i}.test"))).unwrap();
            assert_eq!(p.qname.as_ref().map(|q| q.0.to_string()), Some(format!("n{i}.test")));
            assert!(c.len() <= CAPACITY);
        }
        // A round without repeats: the next messages are parsed without it, and still right.
        assert_eq!(c.bypass, BYPASS_FOR);
        let (a, b) = (c.parse(&query(1, "x.test")).unwrap(), c.parse(&query(2, "x.test")).unwrap());
        assert!(!Arc::ptr_eq(&a, &b) && a.qname == b.qname);
        // After it, repeats are kept again.
        let mut i = 0;
        while c.bypass > 0 {
            c.parse(&query(0, &format!("m{i}.test"))).unwrap();
            i += 1;
        }
        assert_eq!(i, BYPASS_FOR - 2);
        let (a, b) = (c.parse(&query(1, "y.test")).unwrap(), c.parse(&query(2, "y.test")).unwrap());
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn a_round_with_repeats_keeps_the_cache_on() {
        let mut c = ParseCache::default();
        for i in 0..2 * CAPACITY {
            // Every name twice in a row: half of the lookups hit.
            c.parse(&query(0, &format!("n{}.test", i / 2))).unwrap();
        }
        for i in 0..CAPACITY {
            c.parse(&query(0, &format!("m{i}.test"))).unwrap();
        }
        assert_eq!(c.bypass, 0);
    }
}
