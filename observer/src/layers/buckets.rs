//! A key's window buckets, packed. A bucket is the growth of a key's counters in one
//! interval; most counters of most buckets are zero (a refused connect grows two of eleven).
//! Each bucket is its time (two words), a mask of the counters that grew, and one word per
//! grown counter, held inline while they fit, else in one exact allocation: 20 bytes for that
//! refused connect instead of 52, for each of 100,000 destinations and 50,000 names.

use std::time::Duration;

use smallvec::SmallVec;

use crate::events::Mono;

/// Words held inline: one bucket of up to three grown counters, a refused connect's or a
/// looked-up name's. Most keys hold one bucket in the window, which then costs 16 bytes more
/// in the key's state and no allocation (32 bytes with malloc's header). Past that, the words
/// go to an allocation of their exact size.
const INLINE: usize = 6;

#[derive(Debug, Clone)]
pub struct Buckets<const N: usize>(SmallVec<[u32; INLINE]>);

impl<const N: usize> Default for Buckets<N> {
    fn default() -> Self {
        Buckets(SmallVec::new())
    }
}

/// One bucket as stored: its time, its mask and its grown counters.
struct Bucket<'a> {
    at: Mono,
    mask: u32,
    values: &'a [u32],
}

impl Bucket<'_> {
    /// Each grown counter's index and growth: the values in order, lowest mask bit first.
    fn grown(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let mut mask = self.mask;
        self.values.iter().map(move |v| {
            let i = mask.trailing_zeros() as usize;
            mask &= mask.wrapping_sub(1);
            (i, *v)
        })
    }
}

impl<const N: usize> Buckets<N> {
    const FITS: () = assert!(N <= 32, "a bucket's mask has 32 bits");

    fn iter(&self) -> impl Iterator<Item = (usize, Bucket<'_>)> {
        let w = &self.0;
        let mut i = 0;
        std::iter::from_fn(move || {
            let head = w.get(i..i + 3)?;
            let n = head[2].count_ones() as usize;
            let values = w.get(i + 3..i + 3 + n)?;
            let b = Bucket { at: Mono(u64::from(head[0]) | (u64::from(head[1]) << 32)), mask: head[2], values };
            let start = i;
            i += 3 + n;
            Some((start, b))
        })
    }

    /// The time of the oldest bucket.
    pub fn first_at(&self) -> Option<Mono> {
        self.iter().next().map(|(_, b)| b.at)
    }

    /// Drop the buckets `window` or more before `now`, and add `grew` at `now`, if any.
    pub fn advance(&mut self, now: Mono, window: Duration, grew: Option<&[u32; N]>) {
        let () = Self::FITS;
        let keep_from = self.iter().find(|(_, b)| now.since(b.at) < window).map_or(self.0.len(), |(at, _)| at);
        if keep_from == 0 && grew.is_none() {
            return;
        }
        let mut v: SmallVec<[u32; INLINE]> =
            SmallVec::with_capacity(self.0.len() - keep_from + grew.map_or(0, |g| 3 + g.iter().filter(|&&d| d > 0).count()));
        v.extend_from_slice(&self.0[keep_from..]);
        if let Some(g) = grew {
            let mask = g.iter().enumerate().filter(|(_, d)| **d > 0).fold(0u32, |m, (i, _)| m | (1 << i));
            v.extend([now.0 as u32, (now.0 >> 32) as u32, mask]);
            v.extend(g.iter().copied().filter(|&d| d > 0));
        }
        self.0 = v;
    }

    /// The growth over the buckets held.
    pub fn sum(&self) -> [u64; N] {
        let mut sum = [0u64; N];
        for (_, b) in self.iter() {
            for (i, v) in b.grown() {
                if let Some(s) = sum.get_mut(i) {
                    *s += u64::from(v);
                }
            }
        }
        sum
    }

    /// The growth of the reading at `at`: the newest bucket's, if it is from then.
    pub fn grew_at(&self, at: Mono) -> Option<[u64; N]> {
        let (_, b) = self.iter().last().filter(|(_, b)| b.at == at)?;
        let mut grew = [0u64; N];
        for (i, v) in b.grown() {
            if let Some(g) = grew.get_mut(i) {
                *g = u64::from(v);
            }
        }
        Some(grew)
    }

    /// Buckets in which counter `index` grew.
    pub fn grew_in(&self, index: usize) -> usize {
        self.iter().filter(|(_, b)| index < 32 && b.mask & (1 << index) != 0).count()
    }

    /// Bytes held (for tests of the packing).
    #[cfg(test)]
    fn words(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(3);

    #[test]
    fn buckets_pack_the_grown_counters_and_expire_oldest_first() {
        let t0 = Mono((7 << 32) + 1_000);
        let mut b = Buckets::<11>::default();
        b.advance(t0, W, Some(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(b.words(), 5, "time, mask and two values");
        assert!(!b.0.spilled(), "one small bucket is held inline");
        b.advance(t0.after(Duration::from_secs(1)), W, None);
        b.advance(t0.after(Duration::from_secs(2)), W, Some(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, u32::MAX]));
        assert_eq!(b.sum(), [3, 0, 0, 1, 0, 0, 0, 0, 0, 0, u64::from(u32::MAX)]);
        assert_eq!((b.grew_in(0), b.grew_in(3), b.grew_in(10), b.grew_in(1)), (2, 1, 1, 0));
        assert_eq!(b.first_at(), Some(t0), "times past 32 bits come back whole");
        // 3 s after the first: it leaves the window, the second stays.
        b.advance(t0.after(Duration::from_secs(3)), W, None);
        assert_eq!(b.sum(), [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, u64::from(u32::MAX)]);
        assert_eq!(b.first_at(), Some(t0.after(Duration::from_secs(2))));
        b.advance(t0.after(Duration::from_secs(9)), W, None);
        assert_eq!((b.first_at(), b.sum(), b.words()), (None, [0; 11], 0));
        // Two buckets spill into an allocation of their exact size.
        b.advance(t0.after(Duration::from_secs(10)), W, Some(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]));
        b.advance(t0.after(Duration::from_secs(11)), W, Some(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!((b.words(), b.0.capacity()), (10, 10));
        // All 32 counters of the widest key.
        let mut w = Buckets::<32>::default();
        let all: [u32; 32] = std::array::from_fn(|i| i as u32 + 1);
        w.advance(t0, W, Some(&all));
        assert_eq!(w.sum(), all.map(u64::from));
        assert_eq!(w.grew_in(31), 1);
    }
}
