//! Latency percentiles from HdrHistograms, in microseconds.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::events::Mono;
use serde::Serialize;

/// 1 µs to 1 hour at 3 significant digits: connect and lookup latencies fit, and a value past
/// the top is clamped rather than lost.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// Upper bounds (µs) of the histogram buckets; the last bucket holds everything above.
pub const BUCKET_BOUNDS_US: [u64; 7] = [1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000];

/// Percentiles in microseconds (the JSON field name carries the unit), and a coarse histogram:
/// samples up to 1, 5, 10, 50, 100, 500 and 1000 ms, then above.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
    pub histogram: [u64; 8],
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let mut histogram = [0u64; 8];
        for v in h.iter_recorded() {
            // Compare the bucket's lowest equivalent value: 5 ms recorded is "up to 5 ms".
            let value = h.lowest_equivalent(v.value_iterated_to());
            let at = BUCKET_BOUNDS_US.iter().position(|b| value <= *b).unwrap_or(7);
            histogram[at] += v.count_at_value();
        }
        LatencySummary {
            histogram,
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

/// Up to this many samples, a summary sorts them (exact percentiles, no 188 KiB histogram);
/// beyond, it fills a histogram (3 significant digits).
const SORT_AT_MOST: usize = 4096;

impl LatencySummary {
    /// The summary of raw samples (µs). None costs nothing: most destinations on a busy host
    /// have no latency samples in a window (a refused connect has none).
    pub fn of_samples<'a>(samples: impl Iterator<Item = &'a u64> + Clone) -> LatencySummary {
        let n = samples.clone().take(SORT_AT_MOST + 1).count();
        if n == 0 {
            return LatencySummary::default();
        }
        if n > SORT_AT_MOST {
            let mut h = new_histogram();
            for us in samples {
                h.saturating_record(*us);
            }
            return LatencySummary::of(&h);
        }
        let mut v: Vec<u64> = samples.copied().collect();
        v.sort_unstable();
        // As HdrHistogram: the smallest value with at least ceil(q × n) samples at or under it.
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        let mut histogram = [0u64; 8];
        for us in &v {
            histogram[BUCKET_BOUNDS_US.iter().position(|b| us <= b).unwrap_or(7)] += 1;
        }
        LatencySummary { count: v.len() as u64, p50: at(0.50), p95: at(0.95), p99: at(0.99), max: v[v.len() - 1], histogram }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_samples_are_sorted_many_go_through_a_histogram_and_both_agree() {
        let few: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let s = LatencySummary::of_samples(few.iter());
        assert_eq!((s.count, s.p50, s.p95, s.p99, s.max), (100, 50_000, 95_000, 99_000, 100_000));
        assert_eq!(s.histogram[..4], [1, 4, 5, 40]);
        assert_eq!(LatencySummary::of_samples([].iter()), LatencySummary::default());
        // 10,000 samples: the histogram path, within its 3 significant digits of the exact one.
        let many: Vec<u64> = (1..=10_000).map(|i| i * 10).collect();
        let h = LatencySummary::of_samples(many.iter());
        assert_eq!(h.count, 10_000);
        for (got, exact) in [(h.p50, 50_000u64), (h.p95, 95_000), (h.p99, 99_000), (h.max, 100_000)] {
            assert!(got.abs_diff(exact) <= exact / 500, "{got} vs {exact}");
        }
    }

    #[test]
    fn percentiles_in_microseconds() {
        let mut h = new_histogram();
        for ms in 1..=100u64 {
            h.saturating_record(ms * 1000);
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 100);
        assert!((49_900..=50_100).contains(&s.p50), "{s:?}");
        assert!((94_900..=95_100).contains(&s.p95), "{s:?}");
        assert!((99_900..=100_100).contains(&s.max), "{s:?}");
        // 1 ms | 2-5 ms | 6-10 ms | 11-50 ms.
        assert_eq!(s.histogram[..4], [1, 4, 5, 40]);
        assert_eq!(s.histogram.iter().sum::<u64>(), 100);
        assert_eq!(LatencySummary::of(&new_histogram()), LatencySummary::default());
    }
}

/// Latency over the sliding window and since start. Samples of the current interval are kept
/// raw (µs) and closed into a bucket at each reading; the window's percentiles come from the
/// buckets still inside it, the since-start ones from one histogram.
///
/// Allocated on the first sample: most keys on a busy node never have one (a refused connect
/// has no latency), and then a key's latency costs 8 bytes.
#[derive(Debug, Default)]
pub struct LatencyWindow(Option<Box<Samples>>);

impl LatencyWindow {
    pub fn record(&mut self, d: Duration) {
        self.0.get_or_insert_default().record(d);
    }

    /// Close the current interval at `now` and forget intervals older than `window`.
    pub fn close(&mut self, now: Mono, window: Duration) {
        if let Some(s) = &mut self.0 {
            s.close(now, window);
        }
    }

    pub fn window(&self) -> LatencySummary {
        self.0.as_ref().map(|s| s.window()).unwrap_or_default()
    }

    /// The samples (µs) of the interval closed last.
    pub fn last_interval(&self) -> &[u64] {
        self.0.as_ref().map_or(&[], |s| s.last_interval())
    }

    /// The p99 of the interval closed last, when it had samples.
    pub fn last_interval_p99(&self) -> Option<u64> {
        self.0.as_ref()?.last_interval_p99()
    }

    /// The intervals closed in the last `span` before `now`: a change that the window would
    /// dilute.
    pub fn recent(&self, now: Mono, span: Duration) -> LatencySummary {
        self.0.as_ref().map(|s| s.recent(now, span)).unwrap_or_default()
    }

    pub fn total(&self) -> LatencySummary {
        self.0.as_ref().map(|s| s.total()).unwrap_or_default()
    }

    /// Samples not kept for the window because one interval had more than the cap.
    pub fn dropped(&self) -> u64 {
        self.0.as_ref().map_or(0, |s| s.dropped)
    }
}

#[derive(Debug, Default)]
struct Samples {
    open: Vec<u64>,
    /// The window's intervals that had samples (most keys on a busy node have none: a
    /// refused connect has no latency), oldest first, each in an exact allocation (a name
    /// looked up now and then holds one sample, not a growable deque of vectors); and when
    /// the last interval closed.
    buckets: Box<[(Mono, Box<[u64]>)]>,
    last_close: Option<Mono>,
    total: super::compact::CompactHistogram,
    /// Samples not kept for the window because one interval had more than the cap (the
    /// since-start histogram still has them).
    dropped: u64,
}

/// Samples kept per key per interval; more are counted in `dropped`.
const MAX_SAMPLES_PER_INTERVAL: usize = 65_536;

impl Samples {
    fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        if self.open.len() < MAX_SAMPLES_PER_INTERVAL {
            self.open.push(us);
        } else {
            self.dropped += 1;
        }
        self.total.record(us);
    }

    /// Close the current interval at `now` and forget intervals older than `window`.
    fn close(&mut self, now: Mono, window: Duration) {
        let expired = self.buckets.iter().take_while(|(at, _)| now.since(*at) >= window).count();
        let closed = (!self.open.is_empty()).then(|| (now, std::mem::take(&mut self.open).into_boxed_slice()));
        super::exact::advance(&mut self.buckets, expired, closed);
        self.last_close = Some(now);
    }

    /// The samples of the interval closed last, when it had any.
    fn closed_last(&self) -> Option<&[u64]> {
        self.buckets.last().filter(|(at, _)| Some(*at) == self.last_close).map(|(_, v)| &**v)
    }

    fn window(&self) -> LatencySummary {
        LatencySummary::of_samples(self.buckets.iter().flat_map(|(_, v)| v.iter()))
    }

    /// The samples (µs) of the interval closed last.
    fn last_interval(&self) -> &[u64] {
        self.closed_last().unwrap_or_default()
    }

    /// The p99 of the interval closed last, when it had samples.
    fn last_interval_p99(&self) -> Option<u64> {
        let mut v = self.closed_last()?.to_vec();
        if v.is_empty() {
            return None;
        }
        let at = (v.len() * 99).div_ceil(100) - 1;
        Some(*v.select_nth_unstable(at).1)
    }

    /// The intervals closed in the last `span` before `now`: a change that the window would
    /// dilute.
    fn recent(&self, now: Mono, span: Duration) -> LatencySummary {
        LatencySummary::of_samples(self.buckets.iter().filter(move |(at, _)| now.since(*at) < span).flat_map(|(_, v)| v.iter()))
    }

    fn total(&self) -> LatencySummary {
        self.total.summary()
    }
}
