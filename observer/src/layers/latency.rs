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
    fn a_window_keeps_its_intervals_samples_until_they_age_out() {
        let (sec, window) = (1_000_000_000, Duration::from_secs(3));
        let ms = |n: u64| Duration::from_millis(n);
        let mut w = LatencyWindow::default();
        assert_eq!((w.window().count, w.last_interval(), w.last_interval_p99()), (0, &[][..], None));
        w.record(ms(10));
        w.record(ms(30));
        w.close(Mono(sec), window);
        w.close(Mono(2 * sec), window); // no samples
        assert_eq!(w.last_interval(), &[] as &[u64], "the interval closed last had none");
        w.record(ms(20));
        w.close(Mono(3 * sec), window);
        assert_eq!(w.last_interval(), &[20_000]);
        assert_eq!(w.last_interval_p99(), Some(20_000));
        assert_eq!((w.window().count, w.window().max), (3, 30_000));
        assert_eq!(w.recent(Mono(3 * sec), Duration::from_millis(1500)).count, 1, "only the last interval");
        // At 4 s the first interval (closed at 1 s) is 3 s old: out of the window.
        w.close(Mono(4 * sec), window);
        assert_eq!((w.window().count, w.window().max), (1, 20_000));
        w.close(Mono(7 * sec), window);
        assert_eq!(w.window().count, 0);
        assert_eq!(w.total().count, 3, "since start keeps them all");
    }

    #[test]
    fn a_busy_key_keeps_its_room_between_intervals_and_a_quiet_one_gives_it_back() {
        let (sec, window) = (1_000_000_000, Duration::from_secs(10));
        let room = |w: &LatencyWindow| w.0.as_ref().map_or(0, |s| s.open.capacity());
        let mut busy = LatencyWindow::default();
        for _ in 0..2000 {
            busy.record(Duration::from_millis(1));
        }
        busy.close(Mono(sec), window);
        assert!(room(&busy) >= 2000, "room kept: {}", room(&busy));
        assert_eq!(busy.last_interval().len(), 2000);
        for _ in 0..10 {
            busy.record(Duration::from_millis(2));
        }
        busy.close(Mono(2 * sec), window);
        assert_eq!(busy.last_interval(), &[2000; 10], "the kept room starts empty");
        assert_eq!((busy.window().count, busy.total().count), (2010, 2010));
        assert_eq!(room(&busy), 0, "an interval of 10 samples gives the room back");
        let mut quiet = LatencyWindow::default();
        quiet.record(Duration::from_millis(1));
        quiet.close(Mono(sec), window);
        assert_eq!(room(&quiet), 0);
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
    /// refused connect has no latency), oldest first, packed in one exact allocation: each is
    /// its close time, its number of samples, then the samples. A name looked up now and then
    /// holds three words, where a slice of boxed intervals took two allocations.
    closed: Box<[u64]>,
    /// When the last interval closed, plus one (0: never).
    last_close: u64,
    total: super::compact::CompactHistogram,
    /// Samples not kept for the window because one interval had more than the cap (the
    /// since-start histogram still has them).
    dropped: u64,
}

/// Samples kept per key per interval; more are counted in `dropped`.
const MAX_SAMPLES_PER_INTERVAL: usize = 65_536;
/// A key with this many samples in an interval keeps their room for the next.
const KEEP_ROOM_FROM: usize = 1024;

/// The closed intervals of a packed slice: (where it starts, when it closed, its samples).
fn intervals(closed: &[u64]) -> impl Iterator<Item = (usize, Mono, &[u64])> + Clone {
    let mut i = 0;
    std::iter::from_fn(move || {
        let (&at, &n) = (closed.get(i)?, closed.get(i + 1)?);
        let start = i;
        let samples = closed.get(i + 2..i + 2 + usize::try_from(n).ok()?)?;
        i += 2 + samples.len();
        Some((start, Mono(at), samples))
    })
}

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
        let keep_from = intervals(&self.closed).find(|(_, at, _)| now.since(*at) < window).map_or(self.closed.len(), |(i, _, _)| i);
        if keep_from > 0 || !self.open.is_empty() {
            let busy = self.open.len() >= KEEP_ROOM_FROM;
            let extra = if self.open.is_empty() { 0 } else { 2 + self.open.len() };
            // In place: the intervals kept move to the front, and the new one takes the room
            // of those that aged out. A busy key's window is megabytes, and a copy of it at
            // each close (a fresh mapping, faulted in page by page) stalled the ring reads.
            let mut v = std::mem::take(&mut self.closed).into_vec();
            v.drain(..keep_from);
            if extra > 0 {
                v.reserve_exact(extra);
                v.extend([now.0, self.open.len() as u64]);
                v.append(&mut self.open);
            }
            // Still one exact allocation (shrunk in place when less came in than went).
            self.closed = v.into_boxed_slice();
            // Most keys have no sample in most intervals: their room goes. A busy key keeps
            // it, or it grows the vector again by doubling (copying and faulting in pages)
            // through every interval.
            if !busy {
                self.open = Vec::new();
            }
        }
        self.last_close = now.0.saturating_add(1);
    }

    /// The samples of the interval closed last, when it had any.
    fn closed_last(&self) -> Option<&[u64]> {
        let last_close = Mono(self.last_close.checked_sub(1)?);
        intervals(&self.closed).last().filter(|(_, at, _)| *at == last_close).map(|(_, _, v)| v)
    }

    fn window(&self) -> LatencySummary {
        LatencySummary::of_samples(intervals(&self.closed).flat_map(|(_, _, v)| v.iter()))
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
        LatencySummary::of_samples(intervals(&self.closed).filter(move |(_, at, _)| now.since(*at) < span).flat_map(|(_, _, v)| v.iter()))
    }

    fn total(&self) -> LatencySummary {
        self.total.summary()
    }
}
