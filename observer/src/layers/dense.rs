//! A map for the layers' largest tables (destinations, DNS names): the values live in one
//! vector and a hash map holds each key with its value's slot. In a hash table every empty
//! bucket reserves a whole value's room (a table grows by doubling and stays up to 7/8 full):
//! at 100,000 destinations, 31,000 empty buckets of 136 bytes. Here an empty bucket costs a
//! key and a slot number, and a close that visits every value walks memory in order.

use std::hash::Hash;

use super::Map;

#[derive(Debug)]
pub struct DenseMap<K, V> {
    index: Map<K, u32>,
    slots: Vec<Option<V>>,
    /// Slots freed by removals, reused first.
    free: Vec<u32>,
}

impl<K, V> Default for DenseMap<K, V> {
    fn default() -> Self {
        DenseMap { index: Map::default(), slots: Vec::new(), free: Vec::new() }
    }
}

/// Below this many slots, freed ones are only reused, never compacted.
const COMPACT_FROM: usize = 1024;

impl<K: Eq + Hash, V> DenseMap<K, V> {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.slots.get(*self.index.get(key)? as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.slots.get_mut(*self.index.get(key)? as usize)?.as_mut()
    }

    /// The value of `key`, made by `new` if there is none.
    pub fn get_or_insert_with(&mut self, key: K, new: impl FnOnce() -> V) -> &mut V {
        let next = self.free.last().copied().unwrap_or(self.slots.len() as u32);
        let slot = *self.index.entry(key).or_insert(next) as usize;
        // A new key took `next`: a freed slot, or one more at the end.
        if slot == next as usize && self.free.pop().is_none() {
            self.slots.push(None);
        }
        self.slots[slot].get_or_insert_with(new)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.index.remove(key)?;
        let value = self.slots.get_mut(slot as usize)?.take();
        self.free.push(slot);
        value
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.index.iter().filter_map(|(k, &slot)| Some((k, self.slots.get(slot as usize)?.as_ref()?)))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().flatten()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots.iter_mut().flatten()
    }

    /// After removals: when most slots are free, move the values together and give the room
    /// back (a burst of 100,000 destinations that were then forgotten).
    pub fn compact(&mut self) {
        if self.slots.len() < COMPACT_FROM || self.free.len() * 2 < self.slots.len() {
            return;
        }
        let mut slots = Vec::with_capacity(self.index.len());
        for slot in self.index.values_mut() {
            if let Some(v) = self.slots.get_mut(*slot as usize).and_then(Option::take) {
                *slot = slots.len() as u32;
                slots.push(Some(v));
            }
        }
        self.slots = slots;
        self.free = Vec::new();
        self.index.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_replaced_and_removed_by_key_and_freed_slots_are_reused() {
        let mut m: DenseMap<u32, String> = DenseMap::default();
        *m.get_or_insert_with(1, || "a".into()) += "!";
        m.get_or_insert_with(2, || "b".into());
        assert_eq!(m.get_or_insert_with(1, || "never".into()), "a!");
        assert_eq!((m.len(), m.get(&2).map(String::as_str)), (2, Some("b")));
        assert_eq!(m.remove(&1).as_deref(), Some("a!"));
        assert_eq!((m.remove(&1), m.get(&1), m.len()), (None, None, 1));
        m.get_or_insert_with(3, || "c".into());
        assert_eq!(m.slots.len(), 2, "the freed slot was reused");
        m.get_mut(&3).unwrap().push('?');
        let mut all: Vec<(u32, String)> = m.iter().map(|(k, v)| (*k, v.clone())).collect();
        all.sort();
        assert_eq!(all, [(2, "b".into()), (3, "c?".into())]);
        assert_eq!(m.values().count(), 2);
        m.values_mut().for_each(|v| v.push('.'));
        assert_eq!(m.get(&2).map(String::as_str), Some("b."));
    }

    #[test]
    fn most_slots_freed_are_given_back_and_every_key_still_finds_its_value() {
        let mut m: DenseMap<u32, u32> = DenseMap::default();
        for k in 0..5000 {
            m.get_or_insert_with(k, || k * 10);
        }
        for k in (0..5000).filter(|k| k % 5 != 0) {
            m.remove(&k);
        }
        m.compact();
        assert_eq!((m.slots.len(), m.free.len(), m.len()), (1000, 0, 1000));
        for k in (0..5000).step_by(5) {
            assert_eq!(m.get(&k), Some(&(k * 10)));
        }
        // New keys after the compaction get new slots; the old ones keep theirs.
        m.get_or_insert_with(7, || 70);
        assert_eq!((m.get(&7), m.get(&5), m.slots.len()), (Some(&70), Some(&50), 1001));
    }
}
