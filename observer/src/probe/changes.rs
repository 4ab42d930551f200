//! Which table entries changed since the last reading. On a busy node most of 100,000
//! destinations are idle in any one interval: handing every reading to the layers built a
//! vector of 100,000 entries (12 to 24 MiB) each interval and a lookup per entry. A 64-bit
//! fingerprint of each entry's counters tells the changed ones; the others stay as they were.

use std::{
    collections::{HashMap, hash_map::Entry},
    hash::{BuildHasher as _, Hash},
};

/// Per key: the fingerprint of its counters at its last reading, and that reading's number.
pub struct Changes<K> {
    seen: HashMap<K, (u64, u32), foldhash::fast::RandomState>,
    reading: u32,
}

impl<K: Hash + Eq + Copy> Default for Changes<K> {
    fn default() -> Self {
        Changes { seen: HashMap::default(), reading: 0 }
    }
}

impl<K: Hash + Eq + Copy> Changes<K> {
    /// Start a reading of the whole table.
    pub fn begin(&mut self) {
        self.reading = self.reading.wrapping_add(1);
    }

    /// Whether `key`, read with `counts`, differs from its last reading (or is new). A key
    /// seen twice in one reading (a read retried after an error) is new only the first time.
    pub fn changed(&mut self, key: K, counts: &[u64]) -> bool {
        let fp = foldhash::fast::FixedState::with_seed(0x6f62_7365_7276_6572).hash_one(counts);
        match self.seen.entry(key) {
            Entry::Occupied(mut e) => {
                let (old, at) = *e.get();
                *e.get_mut() = (fp, self.reading);
                at != self.reading && old != fp
            }
            Entry::Vacant(e) => {
                e.insert((fp, self.reading));
                true
            }
        }
    }

    /// End a reading: the keys it did not see (gone from the kernel's table), forgotten.
    pub fn finish(&mut self) -> Vec<K> {
        let reading = self.reading;
        let mut gone = Vec::new();
        self.seen.retain(|k, (_, at)| {
            let kept = *at == reading;
            if !kept {
                gone.push(*k);
            }
            kept
        });
        gone
    }

    /// Keys held (as of the last reading).
    pub fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_and_changed_entries_are_changed_and_missing_ones_are_gone() {
        let mut c = Changes::<u32>::default();
        c.begin();
        assert!(c.changed(1, &[1, 0]) && c.changed(2, &[5, 5]));
        assert_eq!(c.finish(), Vec::<u32>::new());
        c.begin();
        assert!(!c.changed(1, &[1, 0]), "unchanged");
        assert!(c.changed(2, &[5, 6]), "grew");
        assert!(!c.changed(2, &[5, 7]), "seen twice in one reading: the first stands");
        assert!(c.changed(3, &[0, 1]), "new");
        assert_eq!((c.finish(), c.len()), (vec![], 3));
        c.begin();
        assert!(c.changed(1, &[0, 1]), "the same sum in other counters is a change");
        assert!(!c.changed(3, &[0, 1]));
        assert_eq!(c.finish(), vec![2], "2 was not read: gone");
        c.begin();
        assert!(c.changed(2, &[5, 7]), "back after it was gone: new");
    }
}
