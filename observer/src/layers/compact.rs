//! A since-start latency histogram that costs bytes, not kilobytes. Every destination, name
//! and TLS or HTTP target keeps one; an HdrHistogram over 1 µs to 1 h at 3 significant
//! digits is 188 KiB even when empty, so 50,000 names took gigabytes. This one is sparse and
//! log-linear: 64 sub-buckets per power of two (within 1.6 %), values under 64 µs exact, and
//! only the buckets that were hit are stored: a key whose latency stays put holds a few.

use super::latency::{BUCKET_BOUNDS_US, LatencySummary};

/// The highest value kept apart; larger ones are counted here (an hour).
const TOP_US: u64 = 3_600_000_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactHistogram {
    /// (bucket index, count), sorted by index, in an exact allocation (a new bucket is rare
    /// once a key's latency has settled).
    buckets: Box<[(u16, u64)]>,
    count: u64,
    max: u64,
}

/// Bucket of `v` (µs, at least 1): exact under 64, then 64 per power of two.
fn index(v: u64) -> u16 {
    if v < 64 {
        return v as u16;
    }
    let e = 63 - u64::from(v.leading_zeros()); // 6 or more
    let sub = (v >> (e - 6)) - 64; // 0..64
    (64 + (e - 6) * 64 + sub) as u16
}

/// The lowest and the highest value of bucket `i`.
fn bounds(i: u16) -> (u64, u64) {
    let i = u64::from(i);
    if i < 64 {
        return (i, i);
    }
    let (e, sub) = ((i - 64) / 64 + 6, (i - 64) % 64);
    let low = (64 + sub) << (e - 6);
    (low, low + (1 << (e - 6)) - 1)
}

impl CompactHistogram {
    pub fn record(&mut self, us: u64) {
        let us = us.clamp(1, TOP_US);
        let i = index(us);
        match self.buckets.binary_search_by_key(&i, |b| b.0) {
            Ok(at) => self.buckets[at].1 += 1,
            Err(at) => super::exact::insert(&mut self.buckets, at, (i, 1)),
        }
        self.count += 1;
        self.max = self.max.max(us);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// As HdrHistogram reports them: a percentile is the highest value of the bucket that
    /// holds the ceil(q × count)-th sample (never above the largest sample).
    pub fn summary(&self) -> LatencySummary {
        if self.count == 0 {
            return LatencySummary::default();
        }
        let at = |q: f64| {
            let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
            let mut seen = 0;
            for &(i, n) in self.buckets.iter() {
                seen += n;
                if seen >= rank {
                    return bounds(i).1.min(self.max);
                }
            }
            self.max
        };
        let mut histogram = [0u64; 8];
        for &(i, n) in self.buckets.iter() {
            let low = bounds(i).0;
            histogram[BUCKET_BOUNDS_US.iter().position(|b| low <= *b).unwrap_or(7)] += n;
        }
        LatencySummary { count: self.count, p50: at(0.50), p95: at(0.95), p99: at(0.99), max: self.max, histogram }
    }

    /// Heap bytes held (for the scale benchmark's arithmetic).
    pub fn heap_bytes(&self) -> usize {
        self.buckets.len() * size_of::<(u16, u64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_and_hold_their_values() {
        let mut last_high = 0;
        for i in 0..index(TOP_US) {
            let (low, high) = bounds(i);
            if i > 0 {
                assert_eq!(low, last_high + 1, "bucket {i} follows the one before");
            }
            assert_eq!((index(low), index(high)), (i, i));
            // Within 1.6 % (1/64) of any value it holds.
            assert!((high - low) as f64 <= low as f64 / 64.0 + 1.0, "{i}: {low}..{high}");
            last_high = high;
        }
    }

    #[test]
    fn percentiles_agree_with_the_exact_ones_within_the_bucket_width() {
        let mut h = CompactHistogram::default();
        for ms in 1..=100u64 {
            h.record(ms * 1000);
        }
        let s = h.summary();
        assert_eq!((s.count, s.max), (100, 100_000));
        for (got, exact) in [(s.p50, 50_000u64), (s.p95, 95_000), (s.p99, 99_000)] {
            assert!(got >= exact && got - exact <= exact / 64, "{got} vs {exact}");
        }
        assert_eq!(s.histogram[..4], [1, 4, 5, 40]);
        assert!(h.heap_bytes() <= 128 * 16, "only the buckets hit (100, in a Vec): {}", h.heap_bytes());
        // A steady latency holds one or two buckets, whatever the count.
        let mut steady = CompactHistogram::default();
        for _ in 0..100_000 {
            steady.record(2_345);
        }
        assert_eq!(steady.buckets.len(), 1);
        assert_eq!(steady.summary().p99, 2_345);
        assert_eq!(CompactHistogram::default().summary(), LatencySummary::default());
    }
}
