//! One module per triage layer. Each turns events and counter readings into per-destination
//! aggregates; none of them knows about the kernel, the clock or the screen.

pub mod buckets;
pub mod compact;
pub mod connect;
pub mod counts;
pub mod dense;
pub mod dns;
pub mod exact;
pub mod http;
pub mod icmp;
pub mod latency;
pub mod packed;
pub mod routing;
pub mod small_set;
pub mod tls;
pub mod window;

use crate::events::{Event, Mono, Tick};

/// The layers' hash map: keys come from packets (names, addresses), so the hash is seeded per
/// run, and it is several times cheaper than std's SipHash on the per-message path.
pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Remove the entry seen least recently: how the layers keep their tables bounded. Returns
/// whether one went.
pub fn evict_idlest<K: Clone + Eq + std::hash::Hash, V>(map: &mut Map<K, V>, last_seen: impl Fn(&V) -> Mono) -> bool {
    let Some(k) = map.iter().min_by_key(|(_, v)| last_seen(v)).map(|(k, _)| k.clone()) else { return false };
    map.remove(&k);
    true
}

/// Make room for `key` in a table of at most `max` entries, evicting the idlest. Returns
/// whether an entry went.
pub fn make_room<K: Clone + Eq + std::hash::Hash, V>(map: &mut Map<K, V>, key: &K, max: usize, last_seen: impl Fn(&V) -> Mono) -> bool {
    !map.contains_key(key) && map.len() >= max && evict_idlest(map, last_seen)
}

/// Put the `first` smallest elements (by `cmp`) first and in order, the others after them in
/// no order: only what a report lists needs an order, and 100,000 keys sorted each interval
/// cost more than selecting them.
pub fn sort_first<T>(v: &mut [T], first: usize, mut cmp: impl FnMut(&T, &T) -> std::cmp::Ordering) {
    if first < v.len() {
        v.select_nth_unstable_by(first, &mut cmp);
        v[..first].sort_unstable_by(cmp);
    } else {
        v.sort_unstable_by(cmp);
    }
}

/// The `first` smallest items (by `cmp`), in order. A buffer of twice as many is cut back to
/// the best `first` each time it fills, so that a close does not rank references to each of
/// 100,000 destinations or 50,000 names (4 MB, 2 MB) to list a hundred.
///
/// After the first cut, the worst kept item is a bar: an item no better than it cannot be
/// among the best, and costs one comparison instead of a place in the buffer.
pub fn best_of<T>(items: impl Iterator<Item = T>, first: usize, mut cmp: impl FnMut(&T, &T) -> std::cmp::Ordering) -> Vec<T> {
    if first == 0 {
        return Vec::new();
    }
    let cap = first.saturating_mul(2);
    let mut best: Vec<T> = Vec::with_capacity(cap.min(items.size_hint().0.max(1)));
    let mut cut = false;
    for item in items {
        // best[first - 1] is the bar from the first cut on (the items after it are newer).
        if cut && cmp(&item, &best[first - 1]) != std::cmp::Ordering::Less {
            continue;
        }
        best.push(item);
        if best.len() == cap {
            best.select_nth_unstable_by(first - 1, &mut cmp);
            best.truncate(first);
            cut = true;
        }
    }
    sort_first(&mut best, first, cmp);
    best.truncate(first);
    best
}

/// Values of a table picked out (by [`best_of`]), told apart by address: one pass over the
/// table then gives the others without a second map of keys.
pub struct Picked<V>(std::collections::HashSet<*const V, foldhash::fast::RandomState>);

impl<V> Picked<V> {
    pub fn of<'a>(values: impl Iterator<Item = &'a V>) -> Picked<V>
    where
        V: 'a,
    {
        Picked(values.map(|v| v as *const V).collect())
    }

    pub fn contains(&self, value: &V) -> bool {
        self.0.contains(&(value as *const V))
    }
}

/// A layer's aggregation: fed by a source, read once per interval as a view.
pub trait Aggregator {
    /// What the verdict rules and the presenters read: built once per interval.
    type View;

    /// An event from the source. Layers ignore the kinds they do not aggregate.
    fn on_event(&mut self, event: &Event);

    /// The end of an interval: the kernel's counters and the source's time.
    fn on_tick(&mut self, tick: &Tick);

    /// Since-start counts of what this layer could not record, by JSON name.
    fn lost(&self) -> Vec<(&'static str, u64)>;

    /// The layer as it stands, every destination included (the presenters cut it).
    fn view(&self) -> Self::View;

    /// The latency samples of the interval that the last tick closed, per histogram: what
    /// `--record` writes to the interval logs. Layers without latencies have none.
    fn interval_samples(&self) -> Vec<IntervalSamples<'_>> {
        Vec::new()
    }

    /// Since-start failures per histogram (series, tag), by what fails at this layer: what
    /// the recording's plots show per interval beside the latency.
    fn failure_totals(&self) -> Vec<(&'static str, String, u64)> {
        Vec::new()
    }

    /// What each key's failures grew by in the interval just closed, for a layer that knows
    /// it without since-start totals (see the pipeline's `failures_grown`); such a layer gives
    /// no `failure_totals`. None: the pipeline diffs `failure_totals` instead.
    fn failures_grown(&self) -> Option<Vec<(&'static str, String, u64)>> {
        None
    }
}

/// One histogram's samples (µs) in one interval: its series (the interval log it goes to:
/// `tcp_connect`, `dns_lookup`, …) and its tag (the destination, with SNI or Host).
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalSamples<'a> {
    pub series: &'static str,
    pub tag: String,
    pub values: &'a [u64],
}

impl IntervalSamples<'_> {
    /// The samples as one histogram (what a recording and a daemon's frame keep).
    pub fn histogram(&self) -> hdrhistogram::Histogram<u64> {
        let mut h = latency::new_histogram();
        for v in self.values {
            h.saturating_record(*v);
        }
        h
    }
}

/// The samples of `latency`'s last interval as `series`/`tag`, when it had any.
pub fn samples_of<'a>(series: &'static str, tag: impl FnOnce() -> String, latency: &'a latency::LatencyWindow) -> Option<IntervalSamples<'a>> {
    let values = latency.last_interval();
    (!values.is_empty()).then(|| IntervalSamples { series, tag: tag(), values })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sort_first_orders_the_first_and_keeps_every_element() {
        let mut v = vec![5, 1, 4, 2, 3, 0];
        super::sort_first(&mut v, 3, |a, b| a.cmp(b));
        assert_eq!(v[..3], [0, 1, 2]);
        let mut rest = v[3..].to_vec();
        rest.sort();
        assert_eq!(rest, [3, 4, 5]);
        super::sort_first(&mut v, 10, |a, b| b.cmp(a));
        assert_eq!(v, [5, 4, 3, 2, 1, 0]);
    }

    #[test]
    fn best_of_gives_the_sorted_prefix_whatever_the_order_and_the_ties() {
        // A scrambled sequence with many equal keys (ranks tie often in an outage).
        let items: Vec<(u32, u32)> = (0..10_000u32).map(|i| ((i * 7919) % 97, (i * 104_729) % 10_007)).collect();
        for first in [0, 1, 2, 5, 100, 9_999, 10_000, 20_000] {
            let mut want = items.clone();
            want.sort();
            want.truncate(first);
            assert_eq!(super::best_of(items.iter().copied(), first, |a, b| a.cmp(b)), want, "first {first}");
        }
        // Ties in the comparison: the right count and every kept key among the best.
        let by_key = |a: &(u32, u32), b: &(u32, u32)| a.0.cmp(&b.0);
        let best = super::best_of(items.iter().copied(), 150, by_key);
        assert_eq!(best.len(), 150);
        assert!(best.windows(2).all(|w| w[0].0 <= w[1].0));
        let mut keys: Vec<u32> = items.iter().map(|i| i.0).collect();
        keys.sort();
        assert_eq!(best.iter().map(|i| i.0).collect::<Vec<_>>(), keys[..150]);
    }
}
