//! What observer's kernel maps cost in memory: the kernel preallocates every entry, and a
//! per-CPU value exists once per possible CPU. Printed at start so that an operator sizes
//! the tables (`--max-destinations`, `--max-resolvers`, …) with the figure in front of them.

use aya::{Ebpf, maps::Map};

/// Per-element overhead of a preallocated hash map entry (struct htab_elem, rounded).
const HASH_ELEM_OVERHEAD: u64 = 48;

/// How a map's memory grows with its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Array,
    PerCpuArray,
    Hash,
    PerCpuHash,
    RingBuf,
}

fn round8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// Bytes a map of this shape takes, approximately, with `cpus` possible CPUs.
pub fn bytes(kind: Kind, key: u64, value: u64, entries: u64, cpus: u64) -> u64 {
    match kind {
        Kind::Array => entries * round8(value),
        Kind::PerCpuArray => entries * round8(value) * cpus,
        Kind::Hash => entries * (round8(key) + round8(value) + HASH_ELEM_OVERHEAD),
        Kind::PerCpuHash => entries * (round8(key) + HASH_ELEM_OVERHEAD) + entries * round8(value) * cpus,
        Kind::RingBuf => entries,
    }
}

fn kind(map: &Map) -> Option<(Kind, &aya::maps::MapData)> {
    Some(match map {
        Map::Array(d) => (Kind::Array, d),
        Map::PerCpuArray(d) => (Kind::PerCpuArray, d),
        Map::HashMap(d) | Map::LruHashMap(d) => (Kind::Hash, d),
        Map::PerCpuHashMap(d) | Map::PerCpuLruHashMap(d) => (Kind::PerCpuHash, d),
        Map::RingBuf(d) => (Kind::RingBuf, d),
        _ => return None,
    })
}

/// "kernel maps take about 6.2 MiB on 2 CPUs (largest: …)", for the maps loaded.
pub fn summary(ebpf: &Ebpf) -> String {
    let cpus = aya::util::nr_cpus().map_or(1, |n| n as u64);
    let (total, maps) = of(ebpf, cpus);
    let largest: Vec<String> = maps.iter().take(3).map(|(n, b)| format!("{n} {}", mib(*b))).collect();
    format!("kernel maps take about {} on {cpus} CPUs (largest: {})", mib(total), largest.join(", "))
}

/// (total bytes, the maps by name and bytes, biggest first).
fn of(ebpf: &Ebpf, cpus: u64) -> (u64, Vec<(String, u64)>) {
    let mut maps: Vec<(String, u64)> = ebpf
        .maps()
        .filter_map(|(name, map)| {
            let (k, data) = kind(map)?;
            let info = data.info().ok()?;
            let b = bytes(k, info.key_size().into(), info.value_size().into(), info.max_entries().into(), cpus);
            Some((name.to_owned(), b))
        })
        .collect();
    maps.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    (maps.iter().map(|(_, b)| b).sum(), maps)
}

/// "12.3 MiB"
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_values_multiply_by_the_cpu_count_and_hash_entries_pay_their_keys() {
        // 4096 destinations, 20-byte keys, 88-byte per-CPU values, 64 CPUs.
        assert_eq!(bytes(Kind::PerCpuHash, 20, 88, 4096, 64), 4096 * (24 + 48) + 4096 * 88 * 64);
        assert_eq!(bytes(Kind::Hash, 8, 56, 65536, 64), 65536 * (8 + 56 + 48), "a shared hash does not grow with CPUs");
        assert_eq!(bytes(Kind::PerCpuArray, 4, 80, 1024, 2), 1024 * 80 * 2);
        assert_eq!(bytes(Kind::RingBuf, 0, 0, 1 << 20, 64), 1 << 20);
        assert_eq!(mib(3 << 20), "3.0 MiB");
    }
}
