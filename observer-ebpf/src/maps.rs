//! Kernel maps. Sizes here are defaults; userspace sets the real ones at load time
//! (`--max-destinations`, `--max-connections`, `--ringbuf-bytes`).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use observer_common::{
    dns::DnsCounters,
    lost,
    tcp::{Endpoint, PortCounters, TcpCounters},
};

use crate::conn::Conn;

/// Counters per remote endpoint of outgoing connections. Per-CPU: BPF has no atomic add in
/// Rust's `core`, and per-CPU slots need none; userspace sums the CPUs.
#[map]
pub static TCP_DESTS: LruPerCpuHashMap<Endpoint, TcpCounters> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// Server-role counters per local port.
#[map]
pub static TCP_PORTS: LruPerCpuHashMap<u16, PortCounters> =
    LruPerCpuHashMap::with_max_entries(1024, 0);

/// Outgoing connections this host started while observer ran, by socket address.
#[map]
pub static CONNS: LruHashMap<u64, Conn> = LruHashMap::with_max_entries(16384, 0);

/// Connect outcomes for userspace (latency histograms, evidence).
#[map]
pub static CONNECT_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Exact DNS counters per resolver endpoint.
#[map]
pub static DNS_RESOLVERS: LruPerCpuHashMap<Endpoint, DnsCounters> =
    LruPerCpuHashMap::with_max_entries(1024, 0);

/// Bounded copies of DNS messages for userspace.
#[map]
pub static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

/// Lost-event counters, indexed by `observer_common::lost`.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::COUNT, 0);

#[inline(always)]
pub fn count_lost(index: u32) {
    if let Some(p) = LOST.get_ptr_mut(index) {
        // Per-CPU slot: no other CPU writes it, a plain add is enough.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn add_one(slot: *mut u64) {
    // This CPU's own slot. A softirq could in theory interrupt a process-context program
    // between the load and the store; that window is two instructions wide.
    unsafe { *slot += 1 };
}

/// Bump one per-destination counter, creating the entry on first use.
#[inline(always)]
pub fn bump_dest(dest: &Endpoint, index: usize) {
    if index >= observer_common::tcp::dest_counter::COUNT {
        return;
    }
    let entry = match TCP_DESTS.get_ptr_mut(dest) {
        Some(p) => p,
        None => {
            // EEXIST means another CPU created it first, which is fine.
            let _ = TCP_DESTS.insert(dest, &TcpCounters::ZERO, BPF_NOEXIST as u64);
            match TCP_DESTS.get_ptr_mut(dest) {
                Some(p) => p,
                None => {
                    count_lost(lost::DEST_TABLE_FULL);
                    return;
                }
            }
        }
    };
    add_one(unsafe { &raw mut (*entry).c[index] });
}

/// Bump one per-local-port counter, creating the entry on first use.
#[inline(always)]
pub fn bump_port(port: u16, index: usize) {
    if index >= observer_common::tcp::port_counter::COUNT {
        return;
    }
    let entry = match TCP_PORTS.get_ptr_mut(&port) {
        Some(p) => p,
        None => {
            let _ = TCP_PORTS.insert(&port, &PortCounters::ZERO, BPF_NOEXIST as u64);
            match TCP_PORTS.get_ptr_mut(&port) {
                Some(p) => p,
                None => {
                    count_lost(lost::PORT_TABLE_FULL);
                    return;
                }
            }
        }
    };
    add_one(unsafe { &raw mut (*entry).c[index] });
}


/// Bump one per-resolver DNS counter, creating the entry on first use.
#[inline(always)]
pub fn bump_resolver(resolver: &Endpoint, index: usize) {
    if index >= observer_common::dns::dns_counter::COUNT {
        return;
    }
    let entry = match DNS_RESOLVERS.get_ptr_mut(resolver) {
        Some(p) => p,
        None => {
            let _ = DNS_RESOLVERS.insert(resolver, &DnsCounters::ZERO, BPF_NOEXIST as u64);
            match DNS_RESOLVERS.get_ptr_mut(resolver) {
                Some(p) => p,
                None => {
                    count_lost(lost::RESOLVER_TABLE_FULL);
                    return;
                }
            }
        }
    };
    add_one(unsafe { &raw mut (*entry).c[index] });
}
