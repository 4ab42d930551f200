//! Latency percentiles from HdrHistograms, in microseconds.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// 1 µs to 1 hour at 3 significant digits: connect and lookup latencies fit, and a value past
/// the top is clamped rather than lost.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// Percentiles in microseconds (the JSON field name carries the unit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_microseconds() {
        let mut h = new_histogram();
        for ms in 1..=100u64 {
            record(&mut h, Duration::from_millis(ms));
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 100);
        assert!((49_900..=50_100).contains(&s.p50), "{s:?}");
        assert!((94_900..=95_100).contains(&s.p95), "{s:?}");
        assert!((99_900..=100_100).contains(&s.max), "{s:?}");
        assert_eq!(LatencySummary::of(&new_histogram()), LatencySummary::default());
    }
}
