//! Per-key counters over a sliding window and since start, fed by since-start readings of the
//! kernel's counters. Deltas are taken between readings, so the window figures stay exact when
//! the event ring buffer overflows, and since-start figures survive an LRU eviction in the
//! kernel map (the entry comes back from zero).

use std::time::Duration;

use crate::events::Mono;

#[derive(Debug, Clone)]
pub struct WindowedCounts<const N: usize> {
    last_reading: [u64; N],
    /// What earlier incarnations of the key counted (before an eviction): the total is this
    /// plus the last reading. Boxed and rare, so that a key holds one copy of its counters.
    carry: Option<Box<[u64; N]>>,
    /// The readings in the window that grew something, with their deltas, oldest first, in
    /// one exact allocation: on a busy node most keys are idle most intervals, an idle
    /// reading costs nothing, and a key grows by one bucket an interval at most.
    /// An interval's growth fits 32 bits (four billion events a second); saturated if not.
    buckets: Box<[(Mono, [u32; N])]>,
    pub last_change: Option<Mono>,
}

impl<const N: usize> Default for WindowedCounts<N> {
    fn default() -> Self {
        WindowedCounts { last_reading: [0; N], carry: None, buckets: Box::new([]), last_change: None }
    }
}

impl<const N: usize> WindowedCounts<N> {
    /// Record a since-start reading taken at `now`. `None` means the kernel no longer holds the
    /// key (evicted): nothing happened this interval, and a later reading starts from zero.
    ///
    /// Returns true when the reading shows an eviction (the key vanished, or came back with
    /// lower counters): increments made between the last reading and the eviction are lost.
    pub fn observe(&mut self, now: Mono, reading: Option<&[u64; N]>, window: Duration) -> bool {
        let cur = reading.copied().unwrap_or([0; N]);
        // Idle, with nothing leaving the window: most keys on a busy node, most intervals.
        if cur == self.last_reading && self.buckets.first().is_none_or(|(at, _)| now.since(*at) < window) {
            return false;
        }
        // A counter that went down means the entry was evicted (and maybe created again).
        let restarted = cur.iter().zip(&self.last_reading).any(|(c, l)| c < l);
        let mut delta = [0u64; N];
        for i in 0..N {
            delta[i] = if restarted { cur[i] } else { cur[i] - self.last_reading[i] };
        }
        if restarted {
            let carry = self.carry.get_or_insert_with(|| Box::new([0; N]));
            for (c, l) in carry.iter_mut().zip(&self.last_reading) {
                *c += l;
            }
        }
        self.last_reading = cur;
        let expired = self.buckets.iter().take_while(|(at, _)| now.since(*at) >= window).count();
        let grew = delta.iter().any(|&d| d > 0);
        if grew {
            self.last_change = Some(now);
        }
        super::exact::advance(&mut self.buckets, expired, grew.then(|| (now, delta.map(|d| u32::try_from(d).unwrap_or(u32::MAX)))));
        restarted
    }

    /// The since-start reading taken last (zero when the kernel no longer held the key).
    pub fn last_reading(&self) -> [u64; N] {
        self.last_reading
    }

    /// True when the kernel held this key at the last reading.
    pub fn in_kernel(&self) -> bool {
        self.last_reading.iter().any(|&v| v > 0)
    }

    pub fn total(&self) -> [u64; N] {
        let mut t = self.last_reading;
        if let Some(carry) = &self.carry {
            for (t, c) in t.iter_mut().zip(carry.iter()) {
                *t += c;
            }
        }
        t
    }

    /// Readings in the window in which counter `index` grew.
    pub fn grew_in(&self, index: usize) -> usize {
        self.buckets.iter().filter(|(_, d)| d[index] > 0).count()
    }

    pub fn window(&self) -> [u64; N] {
        let mut sum = [0u64; N];
        for (_, d) in self.buckets.iter() {
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
    /// Since start, as of the last close: the window's last reading.
    window: WindowedCounts<N>,
    /// Bumps since the last close.
    pending: [u32; N],
}

impl<const N: usize> Default for Tally<N> {
    fn default() -> Self {
        Tally { window: WindowedCounts::default(), pending: [0; N] }
    }
}

impl<const N: usize> Tally<N> {
    pub fn bump(&mut self, index: usize) {
        self.add(index, 1);
    }

    pub fn add(&mut self, index: usize, n: u64) {
        if let Some(p) = self.pending.get_mut(index) {
            *p = p.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }

    /// Close the current interval at `now` and forget intervals older than `window`.
    pub fn close(&mut self, now: Mono, window: Duration) {
        let total = self.total();
        self.pending = [0; N];
        self.window.observe(now, Some(&total), window);
    }

    pub fn window(&self) -> [u64; N] {
        self.window.window()
    }

    /// See [`WindowedCounts::grew_in`].
    pub fn grew_in(&self, index: usize) -> usize {
        self.window.grew_in(index)
    }

    pub fn total(&self) -> [u64; N] {
        let mut t = self.window.total();
        for (t, p) in t.iter_mut().zip(&self.pending) {
            *t = t.saturating_add(u64::from(*p));
        }
        t
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
