//! Which destinations to read in an interval. The programs mark every destination whose
//! counters they change (DEST_DIRTY); userspace takes the marks and reads only those entries
//! of TCP_DESTS. Reading all 100,000 entries every interval was a third of observer's work
//! on a busy node, where most destinations are idle in any one interval.
//!
//! The whole table is read (a sweep) when the marks may be incomplete or the table may have
//! evicted idle entries: at the first reading, after a mark did not fit, and while the table
//! is near full. Between sweeps no entry can leave the table (TCP_DESTS is an LRU that
//! nothing else empties), so the table's size is what it was plus what the programs created.

/// The state that decides between a sweep and the marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    swept: bool,
    /// False once the kernel refused to hand the marks over: every reading sweeps.
    pub marks_work: bool,
    /// Marks that did not fit (DEST_DIRTY_FULL), as of the last reading.
    full_marks: u64,
    /// Entries the table holds: counted at a sweep, then created minus evicted.
    pub held: usize,
    /// Entries the table evicted, as far as the readings tell.
    evicted: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan { swept: false, marks_work: true, full_marks: 0, held: 0, evicted: 0 }
    }
}

/// How near full a table may get before it can evict. An LRU refills a CPU's free list 128
/// entries at a time and evicts when the shared list runs short (kernel/bpf/bpf_lru_list.c,
/// LOCAL_FREE_TARGET), while the other CPUs' lists hold theirs: well before the last entry.
pub fn slack(capacity: usize, cpus: usize) -> usize {
    capacity / 8 + 256 * cpus.max(1)
}

impl Plan {
    /// Whether this reading must read the whole table, given the marks that did not fit so far.
    pub fn must_sweep(&self, full_marks: u64, capacity: usize, cpus: usize) -> bool {
        !self.swept || !self.marks_work || full_marks != self.full_marks || self.held + slack(capacity, cpus) >= capacity
    }

    /// After a sweep that found `found` entries, with `created` entries created since start
    /// (read before the sweep).
    pub fn swept(&mut self, found: usize, created: u64, full_marks: u64) {
        self.swept = true;
        self.full_marks = full_marks;
        self.held = found;
        self.evicted = created.saturating_sub(found as u64);
    }

    /// A marked entry could not be read: the next reading sweeps.
    pub fn missed(&mut self) {
        self.swept = false;
    }

    /// After a reading of the marked entries, `gone` of which the table no longer held (each
    /// evicted since it was marked).
    pub fn marked(&mut self, gone: usize, created: u64, full_marks: u64) {
        self.full_marks = full_marks;
        self.evicted += gone as u64;
        self.held = usize::try_from(created.saturating_sub(self.evicted)).unwrap_or(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_first_after_a_lost_mark_and_near_full_else_reads_the_marks() {
        let (cap, cpus) = (10_000, 2);
        let mut p = Plan::default();
        assert!(p.must_sweep(0, cap, cpus), "the first reading");
        p.swept(1_000, 1_000, 0);
        assert!(!p.must_sweep(0, cap, cpus));
        assert!(p.must_sweep(3, cap, cpus), "a mark did not fit");
        p.swept(1_000, 1_000, 3);
        assert!(!p.must_sweep(3, cap, cpus), "the same count: nothing new was lost");
        // 6,000 entries created since: held grows with them, and nothing was evicted.
        p.marked(0, 7_000, 3);
        assert_eq!(p.held, 7_000);
        assert!(!p.must_sweep(3, cap, cpus));
        // Within the slack of the capacity (1,250 + 512): the LRU may evict idle entries.
        p.marked(0, 8_300, 3);
        assert!(p.must_sweep(3, cap, cpus));
        let mut old = Plan { marks_work: false, ..Plan::default() };
        old.swept(10, 10, 0);
        assert!(old.must_sweep(0, cap, cpus), "marks refused: every reading sweeps");
        p.swept(1_000, 1_000, 3);
        p.missed();
        assert!(p.must_sweep(3, cap, cpus), "a marked entry could not be read");
    }

    #[test]
    fn marked_entries_gone_are_evictions_and_a_sweep_recounts() {
        let mut p = Plan::default();
        p.swept(100, 120, 0);
        assert_eq!((p.held, p.evicted), (100, 20));
        p.marked(2, 150, 0);
        assert_eq!((p.held, p.evicted), (128, 22), "30 created, 2 of the marked gone");
        // A sweep finds what is there, whatever the arithmetic said.
        p.swept(125, 150, 0);
        assert_eq!((p.held, p.evicted), (125, 25));
    }
}
