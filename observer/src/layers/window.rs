//! Per-key counters over a sliding window and since start, fed by since-start readings of the
//! kernel's counters. Deltas are taken between readings, so the window figures stay exact when
//! the event ring buffer overflows, and since-start figures survive an LRU eviction in the
//! kernel map (the entry comes back from zero).

use std::time::Duration;

use super::buckets::Buckets;
use crate::events::Mono;

#[derive(Debug, Clone)]
pub struct WindowedCounts<const N: usize> {
    /// The low 32 bits of the last since-start reading: a key holds 4 bytes a counter, not 8
    /// (100,000 destinations and 50,000 names each keep one reading).
    low: [u32; N],
    /// The reading's high bits and what earlier incarnations of the key counted (before an
    /// eviction): the total is the last reading plus the carry. Boxed and rare: a counter
    /// past four billion, or a key the kernel evicted.
    wide: Option<Box<Wide<N>>>,
    /// The readings in the window that grew something, with their deltas, oldest first,
    /// packed (see [`Buckets`]): on a busy node most keys are idle most intervals, an idle
    /// reading costs nothing, and a key grows by one bucket an interval at most.
    /// An interval's growth fits 32 bits (four billion events a second); saturated if not.
    buckets: Buckets<N>,
    /// The second (of the monotonic clock) in which a reading last grew something, plus one
    /// (0: never): in 4 bytes, which fill the room the 32-bit readings leave. Only the
    /// idlest keys are told apart by it, and seconds do that for 136 years of uptime.
    changed: u32,
}

#[derive(Debug, Clone)]
struct Wide<const N: usize> {
    /// The last reading minus its low 32 bits.
    high: [u64; N],
    carry: [u64; N],
}

impl<const N: usize> Default for WindowedCounts<N> {
    fn default() -> Self {
        WindowedCounts { low: [0; N], wide: None, buckets: Buckets::default(), changed: 0 }
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
        let last = self.last_reading();
        // Idle, with nothing leaving the window: most keys on a busy node, most intervals.
        if cur == last && self.buckets.first_at().is_none_or(|at| now.since(at) < window) {
            return false;
        }
        // A counter that went down means the entry was evicted (and maybe created again).
        let restarted = cur.iter().zip(&last).any(|(c, l)| c < l);
        let mut delta = [0u64; N];
        for i in 0..N {
            delta[i] = if restarted { cur[i] } else { cur[i] - last[i] };
        }
        if restarted {
            let wide = self.wide.get_or_insert_with(|| Box::new(Wide { high: [0; N], carry: [0; N] }));
            for (c, l) in wide.carry.iter_mut().zip(&last) {
                *c += l;
            }
        }
        self.set_last(&cur);
        let grew = delta.iter().any(|&d| d > 0);
        if grew {
            self.changed = u32::try_from(now.0 / 1_000_000_000).unwrap_or(u32::MAX - 1) + 1;
        }
        self.buckets.advance(now, window, grew.then(|| delta.map(|d| u32::try_from(d).unwrap_or(u32::MAX))).as_ref());
        restarted
    }

    /// A reading equal to the last one, without building it: only the window moves.
    pub fn unchanged(&mut self, now: Mono, window: Duration) {
        if self.buckets.first_at().is_some_and(|at| now.since(at) >= window) {
            self.buckets.advance(now, window, None);
        }
    }

    fn set_last(&mut self, cur: &[u64; N]) {
        for (l, c) in self.low.iter_mut().zip(cur) {
            *l = *c as u32;
        }
        let wide = cur.iter().any(|&c| c > u64::from(u32::MAX));
        if wide || self.wide.is_some() {
            let w = self.wide.get_or_insert_with(|| Box::new(Wide { high: [0; N], carry: [0; N] }));
            for (h, c) in w.high.iter_mut().zip(cur) {
                *h = c & !u64::from(u32::MAX);
            }
        }
    }

    /// The since-start reading taken last (zero when the kernel no longer held the key).
    pub fn last_reading(&self) -> [u64; N] {
        let mut r = self.low.map(u64::from);
        if let Some(w) = &self.wide {
            for (r, h) in r.iter_mut().zip(&w.high) {
                *r += h;
            }
        }
        r
    }

    /// When a reading last grew something, to the second.
    pub fn last_change(&self) -> Option<Mono> {
        self.changed.checked_sub(1).map(|s| Mono(u64::from(s) * 1_000_000_000))
    }

    /// True when the kernel held this key at the last reading.
    pub fn in_kernel(&self) -> bool {
        self.last_reading().iter().any(|&v| v > 0)
    }

    pub fn total(&self) -> [u64; N] {
        let mut t = self.last_reading();
        if let Some(w) = &self.wide {
            for (t, c) in t.iter_mut().zip(&w.carry) {
                *t += c;
            }
        }
        t
    }

    /// Readings in the window in which counter `index` grew.
    pub fn grew_in(&self, index: usize) -> usize {
        self.buckets.grew_in(index)
    }

    pub fn window(&self) -> [u64; N] {
        self.buckets.sum()
    }

    /// What the reading at `at` grew by (none if it grew nothing, or was not taken then).
    pub fn grew_at(&self, at: Mono) -> Option<[u64; N]> {
        self.buckets.grew_at(at)
    }
}

/// Counts kept in userspace (from events), over the window and since start: bumped as
/// things happen, and closed into the window at each reading.
#[derive(Debug, Clone, Default)]
pub struct Tally<const N: usize> {
    /// Since start, as of the last close: the window's last reading.
    window: WindowedCounts<N>,
    /// Bumps since the last close; boxed while there are any (50,000 names, most of them
    /// not bumped in a given interval, each held 40 bytes of zeros).
    pending: Option<Box<[u32; N]>>,
}

impl<const N: usize> Tally<N> {
    pub fn bump(&mut self, index: usize) {
        self.add(index, 1);
    }

    pub fn add(&mut self, index: usize, n: u64) {
        if index < N {
            let p = &mut self.pending.get_or_insert_with(|| Box::new([0; N]))[index];
            *p = p.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }

    /// Close the current interval at `now` and forget intervals older than `window`.
    pub fn close(&mut self, now: Mono, window: Duration) {
        // Nothing bumped: only the window moves (most keys, most intervals).
        if self.pending.is_none() {
            self.window.unchanged(now, window);
            return;
        }
        let total = self.total();
        self.pending = None;
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
        if let Some(pending) = &self.pending {
            for (t, p) in t.iter_mut().zip(pending.iter()) {
                *t = t.saturating_add(u64::from(*p));
            }
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
        assert_eq!(w.last_change(), Some(Mono(1_000_000_000)), "to the second");
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

    #[test]
    fn an_unchanged_reading_only_moves_the_window() {
        let t0 = Mono(1_000);
        let (mut a, mut b) = (WindowedCounts::<2>::default(), WindowedCounts::<2>::default());
        for w in [&mut a, &mut b] {
            w.observe(t0, Some(&[5, 1]), W);
            w.observe(t0.after(Duration::from_secs(2)), Some(&[6, 1]), W);
        }
        for secs in [3, 4, 5, 9] {
            let at = t0.after(Duration::from_secs(secs));
            a.observe(at, Some(&[6, 1]), W);
            b.unchanged(at, W);
            assert_eq!((a.window(), a.total(), a.last_change()), (b.window(), b.total(), b.last_change()), "at {secs} s");
        }
        assert_eq!(b.window(), [0, 0]);
        let mut t = Tally::<1>::default();
        t.bump(0);
        t.close(t0, W);
        t.close(t0.after(Duration::from_secs(1)), W);
        assert_eq!((t.window(), t.total()), ([1], [1]));
        t.close(t0.after(Duration::from_secs(3)), W);
        assert_eq!((t.window(), t.total()), ([0], [1]), "the bump left the window");
    }

    #[test]
    fn counters_past_32_bits_keep_their_deltas_and_totals() {
        let t0 = Mono(1_000);
        let big = u64::from(u32::MAX) - 1;
        let mut w = WindowedCounts::<2>::default();
        assert_eq!(w.last_change(), None);
        w.observe(t0, Some(&[big, 3]), W);
        assert!(w.wide.is_none(), "still 32 bits: nothing boxed");
        assert!(!w.observe(t0.after(Duration::from_secs(1)), Some(&[big + 5, 4]), W), "past 32 bits is growth, not a restart");
        assert_eq!(w.window(), [big + 5, 4], "two deltas of 32 bits each");
        assert_eq!(w.last_reading(), [big + 5, 4]);
        w.observe(t0.after(Duration::from_secs(5)), Some(&[(1 << 40) + 7, 4]), W);
        assert_eq!(w.total(), [(1 << 40) + 7, 4]);
        // Evicted and back: the carry holds the big reading.
        assert!(w.observe(t0.after(Duration::from_secs(6)), Some(&[2, 0]), W));
        assert_eq!(w.total(), [(1 << 40) + 9, 4]);
        assert_eq!(w.last_reading(), [2, 0]);
    }
}
