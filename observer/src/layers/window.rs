//! Per-key counters over a sliding window and since start, fed by since-start readings of the
//! kernel's counters. Deltas are taken between readings, so the window figures stay exact when
//! the event ring buffer overflows, and since-start figures survive an LRU eviction in the
//! kernel map (the entry comes back from zero).

use std::{collections::VecDeque, time::Duration};

use crate::events::Mono;

#[derive(Debug, Clone)]
pub struct WindowedCounts<const N: usize> {
    last_reading: [u64; N],
    total: [u64; N],
    /// One per reading in the window; the deltas only when something grew. On a busy node
    /// most keys are idle most intervals: a zero bucket costs 16 bytes, not 8 × (N + 1).
    /// An interval's growth fits 32 bits (four billion events a second); saturated if not.
    buckets: VecDeque<(Mono, Option<Box<[u32; N]>>)>,
    pub last_change: Option<Mono>,
}

impl<const N: usize> Default for WindowedCounts<N> {
    fn default() -> Self {
        WindowedCounts { last_reading: [0; N], total: [0; N], buckets: VecDeque::new(), last_change: None }
    }
}

impl<const N: usize> WindowedCounts<N> {
    /// Record a since-start reading taken at `now`. `None` means the kernel no longer holds the
    /// key (evicted): nothing happened this interval, and a later reading starts from zero.
    ///
    /// Returns true when the reading shows an eviction (the key vanished, or came back with
    /// lower counters): increments made between the last reading and the eviction are lost.
    pub fn observe(&mut self, now: Mono, reading: Option<&[u64; N]>, window: Duration) -> bool {
        let mut delta = [0u64; N];
        let evicted = match reading {
            Some(cur) => {
                // A counter that went down means the entry was evicted and created again.
                let restarted = cur.iter().zip(&self.last_reading).any(|(c, l)| c < l);
                for i in 0..N {
                    delta[i] = if restarted { cur[i] } else { cur[i] - self.last_reading[i] };
                }
                self.last_reading = *cur;
                restarted
            }
            None => {
                let had = self.last_reading.iter().any(|&v| v > 0);
                self.last_reading = [0; N];
                had
            }
        };
        if delta.iter().any(|&d| d > 0) {
            self.last_change = Some(now);
        }
        for (t, d) in self.total.iter_mut().zip(delta) {
            *t += d;
        }
        self.buckets.push_back((now, delta.iter().any(|&d| d > 0).then(|| Box::new(delta.map(|d| u32::try_from(d).unwrap_or(u32::MAX))))));
        while let Some(&(at, _)) = self.buckets.front() {
            if now.since(at) >= window {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
        evicted
    }

    /// True when the kernel held this key at the last reading.
    pub fn in_kernel(&self) -> bool {
        self.last_reading.iter().any(|&v| v > 0)
    }

    pub fn total(&self) -> [u64; N] {
        self.total
    }

    /// Intervals in the window in which counter `index` grew, and intervals in the window.
    pub fn spread(&self, index: usize) -> (usize, usize) {
        (self.buckets.iter().filter(|(_, d)| d.as_ref().is_some_and(|d| d[index] > 0)).count(), self.buckets.len())
    }

    pub fn window(&self) -> [u64; N] {
        let mut sum = [0u64; N];
        for d in self.buckets.iter().filter_map(|(_, d)| d.as_deref()) {
            for (s, v) in sum.iter_mut().zip(d) {
                *s += u64::from(*v);
            }
        }
        sum
    }
}

/// Counts kept in userspace (from events), over the window and since start: bumped as
/// things happen, and closed into the window at each reading.
#[derive(Debug, Clone)]
pub struct Tally<const N: usize> {
    total: [u64; N],
    window: WindowedCounts<N>,
}

impl<const N: usize> Default for Tally<N> {
    fn default() -> Self {
        Tally { total: [0; N], window: WindowedCounts::default() }
    }
}

impl<const N: usize> Tally<N> {
    pub fn bump(&mut self, index: usize) {
        self.total[index] += 1;
    }

    pub fn add(&mut self, index: usize, n: u64) {
        self.total[index] = self.total[index].saturating_add(n);
    }

    /// Close the current interval at `now` and forget intervals older than `window`.
    pub fn close(&mut self, now: Mono, window: Duration) {
        self.window.observe(now, Some(&self.total), window);
    }

    pub fn window(&self) -> [u64; N] {
        self.window.window()
    }

    /// See [`WindowedCounts::spread`].
    pub fn spread(&self, index: usize) -> (usize, usize) {
        self.window.spread(index)
    }

    pub fn total(&self) -> [u64; N] {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(3);

    #[test]
    fn window_holds_only_recent_deltas_and_total_holds_all() {
        let t0 = Mono(1_000);
        let mut w = WindowedCounts::<2>::default();
        w.observe(t0, Some(&[5, 1]), W);
        w.observe(t0.after(Duration::from_secs(1)), Some(&[7, 1]), W);
        assert_eq!(w.window(), [7, 1]);
        w.observe(t0.after(Duration::from_secs(3)), Some(&[7, 1]), W);
        // The first reading (5, 1) is now 3 s old and out of the window.
        assert_eq!(w.window(), [2, 0]);
        assert_eq!(w.total(), [7, 1]);
        assert_eq!(w.last_change, Some(t0.after(Duration::from_secs(1))));
    }

    #[test]
    fn a_tally_counts_since_start_and_over_the_window() {
        let t0 = Mono(1_000);
        let mut t = Tally::<2>::default();
        t.bump(0);
        t.bump(0);
        t.close(t0, W);
        t.bump(1);
        t.close(t0.after(Duration::from_secs(3)), W);
        assert_eq!((t.window(), t.total()), ([0, 1], [2, 1]));
    }

    #[test]
    fn eviction_and_recreation_do_not_lose_or_double_count() {
        let t0 = Mono(1_000);
        let mut w = WindowedCounts::<1>::default();
        assert!(!w.observe(t0, Some(&[10]), W));
        assert!(w.observe(t0.after(Duration::from_secs(1)), None, W), "vanished: an eviction");
        assert!(!w.observe(t0.after(Duration::from_secs(2)), None, W), "still gone: not a second one");
        assert!(!w.observe(t0.after(Duration::from_secs(2)), Some(&[4]), W));
        assert_eq!(w.total(), [14]);
        // Recreated between readings without a gap: the lower value gives it away.
        assert!(w.observe(t0.after(Duration::from_secs(3)), Some(&[1]), W));
        assert_eq!(w.total(), [15]);
    }
}
