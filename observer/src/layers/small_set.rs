//! A sorted set of a few elements: one held inline, more in one exact-size allocation.
//! Per-key state (a destination's processes, a name's answers and resolvers) holds one or
//! two elements, and a `BTreeSet` spends a whole node (about 300 bytes) on its first: at
//! 100,000 keys that was a quarter of observer's memory. Most keys hold one, which then
//! costs no allocation at all (at least 32 bytes with malloc's header). Inserting is linear
//! and reallocates, which a set that rarely grows can afford.

use smallvec::SmallVec;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SmallSet<T>(SmallVec<[T; 1]>);

impl<T> Default for SmallSet<T> {
    fn default() -> Self {
        SmallSet(SmallVec::new())
    }
}

impl<T: Ord> SmallSet<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns whether `value` was new.
    pub fn insert(&mut self, value: T) -> bool {
        match self.0.binary_search(&value) {
            Ok(_) => false,
            Err(at) => {
                // Exactly one more, not the doubling an insert would ask for.
                self.0.reserve_exact(1);
                self.0.insert(at, value);
                true
            }
        }
    }

    /// Insert `value` into a set of at most `max`: when full, it takes the last place.
    /// Returns whether `value` was new.
    pub fn insert_bounded(&mut self, value: T, max: usize) -> bool {
        if self.contains(&value) {
            return false;
        }
        while self.0.len() >= max.max(1) {
            self.0.pop();
        }
        self.insert(value)
    }

    pub fn contains(&self, value: &T) -> bool {
        self.0.binary_search(value).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// In order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub fn first(&self) -> Option<&T> {
        self.0.first()
    }

    /// No element in common (both are sorted: one merge pass).
    pub fn is_disjoint(&self, other: &SmallSet<T>) -> bool {
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            match x.cmp(y) {
                std::cmp::Ordering::Less => {
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    b.next();
                }
                std::cmp::Ordering::Equal => return false,
            }
        }
        true
    }
}

impl<T: Ord> FromIterator<T> for SmallSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut v: Vec<T> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        let mut s = SmallVec::from_vec(v);
        s.shrink_to_fit();
        SmallSet(s)
    }
}

impl<'a, T> IntoIterator for &'a SmallSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_its_elements_sorted_once_each_in_an_exact_allocation() {
        let mut s = SmallSet::new();
        assert!(s.is_empty());
        for v in [5, 1, 3, 1, 5] {
            s.insert(v);
        }
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [1, 3, 5]);
        assert!(s.contains(&3) && !s.contains(&2));
        assert!(!s.insert(3), "a second insert is not new");
        assert_eq!((s.len(), s.first()), (3, Some(&1)));
        assert_eq!(s.0.capacity(), 3, "no spare capacity");
        let c: SmallSet<i32> = [4, 2, 4].into_iter().collect();
        assert_eq!(c.iter().copied().collect::<Vec<_>>(), [2, 4]);
        assert!(c.is_disjoint(&s), "{{1, 3, 5}} and {{2, 4}}");
        let d: SmallSet<i32> = [0, 5].into_iter().collect();
        assert!(!d.is_disjoint(&s));
        assert_eq!(d.0.capacity(), 2, "collected: no spare capacity");
        let mut bounded = c.clone();
        assert!(bounded.insert_bounded(3, 2), "full: 3 takes the last place");
        assert_eq!(bounded.iter().copied().collect::<Vec<_>>(), [2, 3]);
        assert!(!bounded.insert_bounded(2, 2));
        let one: SmallSet<i32> = [7, 7].into_iter().collect();
        assert!(!one.0.spilled(), "one element is held inline");
    }
}
