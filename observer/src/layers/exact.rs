//! Boxed slices kept at their exact length. Per-key state on a busy node (a name's answer
//! sets, a latency histogram's buckets) holds one or two elements and rarely changes; a `Vec`
//! or a `VecDeque` keeps spare room, and at 100,000 keys that room was much of observer's
//! memory. Each change reallocates once.

/// Insert `value` at `at`, shifting the later elements.
pub fn insert<T>(slice: &mut Box<[T]>, at: usize, value: T) {
    let mut v = std::mem::take(slice).into_vec();
    v.reserve_exact(1);
    v.insert(at, value);
    *slice = v.into_boxed_slice();
}

/// Keep the elements for which `keep` holds.
pub fn retain<T>(slice: &mut Box<[T]>, keep: impl FnMut(&T) -> bool) {
    let mut v = std::mem::take(slice).into_vec();
    v.retain(keep);
    *slice = v.into_boxed_slice();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_leaves_no_spare_room() {
        let mut s: Box<[u32]> = Box::new([1, 3]);
        insert(&mut s, 1, 2);
        assert_eq!(*s, [1, 2, 3]);
        insert(&mut s, 3, 4);
        assert_eq!(*s, [1, 2, 3, 4]);
        retain(&mut s, |v| *v > 3);
        assert_eq!(*s, [4]);
        // A boxed slice's length is its allocation: nothing to compare but the length.
        assert_eq!(s.into_vec().capacity(), 1);
    }
}
