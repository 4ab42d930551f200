//! Counters with their names, serialised as a JSON object in index order.

use serde::Serialize;

/// Counters that serialise as a JSON object in the kernel's index order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts<const N: usize> {
    pub values: [u64; N],
    pub names: &'static [&'static str; N],
}

impl<const N: usize> Counts<N> {
    pub fn get(&self, index: usize) -> u64 {
        self.values[index]
    }
}

impl<const N: usize> Serialize for Counts<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(N))?;
        for (name, v) in self.names.iter().zip(self.values) {
            m.serialize_entry(name, &v)?;
        }
        m.end()
    }
}

/// Since-start totals read once per interval, turned into what each grew by. Each reading
/// holds every key its source still keeps; a key it no longer gives was forgotten there, so
/// it is forgotten here too (this stays as bounded as the source), and if it comes back, its
/// total counts from zero. A total that went down is the same thing: all of it is new.
#[derive(Debug)]
pub struct Growth<K> {
    /// Each key's last total, and the parity of the reading that last gave it.
    last: std::collections::HashMap<K, (u64, bool), foldhash::fast::RandomState>,
    parity: bool,
}

impl<K> Default for Growth<K> {
    fn default() -> Self {
        Growth { last: std::collections::HashMap::default(), parity: false }
    }
}

impl<K: Eq + std::hash::Hash + Clone> Growth<K> {
    /// This reading's totals; the keys that grew, with how much. Updated in place: at 100,000
    /// keys a new map each reading was a tenth of the daemon's CPU.
    pub fn step(&mut self, totals: impl IntoIterator<Item = (K, u64)>) -> Vec<(K, u64)> {
        self.parity = !self.parity;
        let parity = self.parity;
        let mut grew = Vec::new();
        for (key, total) in totals {
            match self.last.get_mut(&key) {
                Some((last, seen)) => {
                    let delta = if total >= *last { total - *last } else { total };
                    (*last, *seen) = (total, parity);
                    if delta > 0 {
                        grew.push((key, delta));
                    }
                }
                None => {
                    if total > 0 {
                        grew.push((key.clone(), total));
                    }
                    self.last.insert(key, (total, parity));
                }
            }
        }
        // Keys this reading did not give were forgotten by the source.
        self.last.retain(|_, (_, seen)| *seen == parity);
        grew
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_counts_what_grew_and_forgets_what_its_source_forgot() {
        let mut g = Growth::default();
        assert_eq!(g.step([("a", 3), ("b", 0)]), [("a", 3)]);
        assert_eq!(g.step([("a", 5), ("b", 0)]), [("a", 2)]);
        // b is gone from the source, a restarted from zero.
        assert_eq!(g.step([("a", 1)]), [("a", 1)]);
        assert_eq!(g.step([("a", 1), ("b", 4)]), [("b", 4)]);
    }
}
