//! Evictions from the kernel's LRU tables. An LRU never refuses an entry: it evicts the least
//! recently used one, and what that entry held since observer last read it is lost. The
//! programs count the entries they create (and those they remove); this turns those counts,
//! and the entries still found, into evictions for the `lost` section.

use observer_common::table;

/// Since-start created and removed counts per table, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounts {
    pub created: [u64; table::COUNT],
    pub removed: [u64; table::COUNT],
}

impl TableCounts {
    /// From the `TABLES` array's slots (2 × table: created, then removed).
    pub fn from_slots(slot: impl Fn(usize) -> u64) -> TableCounts {
        let mut c = TableCounts::default();
        for t in 0..table::COUNT {
            c.created[t] = slot(2 * t);
            c.removed[t] = slot(2 * t + 1);
        }
        c
    }
}

/// The entries userspace found in the tables it reads whole every interval.
#[derive(Clone, Copy, Debug, Default)]
pub struct Live {
    pub dests: usize,
    pub ports: usize,
    pub resolvers: usize,
    pub ifaces: usize,
    pub drops: usize,
}

/// Capacities of the tables userspace does not read whole.
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    pub conns: u32,
    pub tcp_socks: u32,
    pub old_socks: u32,
    pub ssl_calls: u32,
    pub connect_calls: u32,
}

/// Evictions per table, by its `lost` name. `counts` must be read before the tables were
/// iterated, so that an entry created in between cannot pass for an eviction.
///
/// - Tables read whole (nothing removes their entries): exactly created minus found.
/// - Tables the programs empty themselves: at least created minus removed minus capacity;
///   an entry that was evicted while idle, or whose removal was missed, counts too.
pub fn evictions(counts: &TableCounts, live: &Live, cap: &Capacity) -> Vec<(&'static str, u64)> {
    let read_whole = [
        (table::DESTS, live.dests),
        (table::PORTS, live.ports),
        (table::RESOLVERS, live.resolvers),
        (table::IFACES, live.ifaces),
        (table::DROPS, live.drops),
    ];
    let self_emptied = [
        (table::CONNS, cap.conns),
        (table::TCP_SOCKS, cap.tcp_socks),
        (table::OLD_SOCKS, cap.old_socks),
        (table::SSL_CALLS, cap.ssl_calls),
        (table::CONNECT_CALLS, cap.connect_calls),
    ];
    let mut out: Vec<(&'static str, u64)> = read_whole
        .iter()
        .map(|&(t, found)| (table::NAMES[t], counts.created[t].saturating_sub(found as u64)))
        .collect();
    out.extend(self_emptied.iter().map(|&(t, capacity)| {
        let held = counts.created[t].saturating_sub(counts.removed[t]);
        (table::NAMES[t], held.saturating_sub(u64::from(capacity)))
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Capacity = Capacity { conns: 100, tcp_socks: 200, old_socks: 100, ssl_calls: 10, connect_calls: 10 };

    fn get(v: &[(&'static str, u64)], name: &str) -> u64 {
        v.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no {name}")).1
    }

    #[test]
    fn a_table_read_whole_evicted_what_was_created_and_is_not_found() {
        let mut c = TableCounts::default();
        c.created[table::DESTS] = 120;
        c.created[table::RESOLVERS] = 3;
        let live = Live { dests: 100, resolvers: 3, ..Live::default() };
        let e = evictions(&c, &live, &CAP);
        assert_eq!(get(&e, "dest_evicted"), 20);
        assert_eq!(get(&e, "resolver_evicted"), 0);
        // Found more than counted (created after the counts were read): not negative.
        let live = Live { dests: 130, ..Live::default() };
        assert_eq!(get(&evictions(&c, &live, &CAP), "dest_evicted"), 0);
    }

    #[test]
    fn a_self_emptied_table_evicted_at_least_what_it_could_not_hold() {
        let mut c = TableCounts::default();
        // 1,000 connects, 850 ended: 150 held at most, in room for 100.
        c.created[table::CONNS] = 1000;
        c.removed[table::CONNS] = 850;
        c.created[table::SSL_CALLS] = 50;
        c.removed[table::SSL_CALLS] = 50;
        let e = evictions(&c, &Live::default(), &CAP);
        assert_eq!(get(&e, "conn_evicted"), 50);
        assert_eq!(get(&e, "ssl_call_evicted"), 0);
        assert_eq!(e.len(), table::COUNT, "every table has its line");
    }

    #[test]
    fn slots_alternate_created_and_removed() {
        let c = TableCounts::from_slots(|i| i as u64);
        assert_eq!((c.created[0], c.removed[0]), (0, 1));
        assert_eq!((c.created[table::CONNS], c.removed[table::CONNS]), (2 * table::CONNS as u64, 2 * table::CONNS as u64 + 1));
    }
}
