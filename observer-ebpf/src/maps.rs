//! Kernel maps. Sizes here are defaults; userspace sets the real ones at load time
//! (`--max-destinations`, `--max-connections`, `--ringbuf-bytes`).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use observer_common::{
    dns::{DnsCounters, DnsKey, DnsPending, IfaceCounters},
    lost, table,
    tcp::{Endpoint, PortCounters, TcpCounters},
};

use crate::conn::Conn;

/// Counters per remote endpoint of outgoing connections. Per-CPU: BPF has no atomic add in
/// Rust's `core`, and per-CPU slots need none; userspace sums the CPUs.
#[map]
pub static TCP_DESTS: LruPerCpuHashMap<Endpoint, TcpCounters> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// The destinations whose counters changed since userspace last took this set (the value is
/// unused). Userspace reads only these entries of TCP_DESTS: reading all 100,000 every
/// interval was a third of observer's work on a busy node. Sized by userspace.
#[map]
pub static DEST_DIRTY: HashMap<Endpoint, u8> = HashMap::with_max_entries(1024, 0);

/// Marks that did not fit in DEST_DIRTY: userspace then reads the whole of TCP_DESTS.
#[map]
pub static DEST_DIRTY_FULL: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

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

/// Bytes this CPU wrote to CONNECT_EVENTS since it last woke the reader (see wakeup_flags).
#[map]
pub static CONNECT_PRODUCED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Exact DNS counters per resolver endpoint.
#[map]
pub static DNS_RESOLVERS: LruPerCpuHashMap<Endpoint, DnsCounters> =
    LruPerCpuHashMap::with_max_entries(1024, 0);

/// Queries that NAT rewrote between two hooks, by identity, until their response comes:
/// it is attributed to the resolver the client addressed.
#[map]
pub static DNS_PENDING: LruHashMap<DnsKey, DnsPending> = LruHashMap::with_max_entries(16384, 0);

/// Per CPU, the DNS messages counted last: another sighting of one is not a new message.
#[map]
pub static DNS_RECENT: PerCpuArray<crate::dns::Recent> = PerCpuArray::with_max_entries(crate::dns::RECENT_SLOTS, 0);

/// Per-interface DNS figures (only DNS and fragment packets touch it).
#[map]
pub static IFACES: LruPerCpuHashMap<u32, IfaceCounters> = LruPerCpuHashMap::with_max_entries(256, 0);

/// One parsed packet per CPU: the TC program's working memory (see `tc::Packet`).
#[map]
pub static SCRATCH: PerCpuArray<crate::tc::Packet> = PerCpuArray::with_max_entries(1, 0);

/// Bounded copies of DNS messages for userspace, in two rings: the even CPUs write the
/// first, the odd ones the second. A ring's producer lock and positions are shared by every
/// CPU that writes it; with one ring, a query leaving on one CPU and the answers arriving on
/// another wrote the same cache lines in turn, and that cost a flood 10 % of its rate.
/// Userspace orders the two by time (see `probe::dns_rings`).
#[map]
pub static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(512 * 1024, 0);
#[map]
pub static DNS_EVENTS_1: RingBuf = RingBuf::with_byte_size(512 * 1024, 0);

/// TLS flows between their ClientHello and application data in both directions (or a RST).
/// An LRU: a handshake that never ends is evicted, not left to fill the table.
#[map]
pub static TLS_FLOWS: LruHashMap<crate::tls::FlowKey, crate::tls::Flow> = LruHashMap::with_max_entries(8192, 0);

/// Per port pair (hashed), the sequence number where a TLS handshake record or an HTTP
/// request's header block that ran past its packet continues (the high bits say which):
/// that next packet starts mid-record and is still copied.
#[map]
pub static CONTINUES: Array<u64> = Array::with_max_entries(crate::tls::CONTINUE_SLOTS, 0);

/// Per flow direction (hashed, direct-mapped), whether its packets need their payload copied
/// out to be checked for TLS: see `tls::on_tcp`.
#[map]
pub static FLOW_CACHE: Array<u64> = Array::with_max_entries(crate::tls::FLOW_CACHE_SLOTS, 0);

/// Per port pair (hashed), the sequence number of the client's first payload on a connection
/// to the TLS port, from its SYN: a first payload that is not TLS is reported.
#[map]
pub static TLS_FIRST_DATA: Array<u32> = Array::with_max_entries(crate::tls::CONTINUE_SLOTS, 0);

/// The first bytes of TLS flows, their application data and closes, for userspace.
#[map]
pub static TLS_EVENTS: RingBuf = RingBuf::with_byte_size(512 * 1024, 0);

/// The first bytes of HTTP messages (TC) and OpenSSL plaintext (uprobes), for userspace.
#[map]
pub static HTTP_EVENTS: RingBuf = RingBuf::with_byte_size(512 * 1024, 0);

/// OpenSSL calls in progress, per thread (pid_tgid): an LRU, so that a thread that died
/// inside a call does not hold its slot.
#[map]
pub static SSL_CALLS: LruHashMap<u64, crate::ssl::Call> = LruHashMap::with_max_entries(4096, 0);

/// Per CPU, the OpenSSL plaintext event being built.
#[map]
pub static SSL_SCRATCH: PerCpuArray<crate::ssl::Scratch> = PerCpuArray::with_max_entries(1, 0);

/// ICMP errors arriving, for userspace (rare: the senders rate-limit them).
#[map]
pub static ICMP_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// Drops on this host, by addresses, protocol and reason (per CPU; userspace sums them).
#[map]
pub static DROPS: LruPerCpuHashMap<observer_common::route::DropKey, observer_common::route::DropCounters> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// Layer 3 records (TCP samples, early connect failures) for userspace.
#[map]
pub static ROUTE_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Established TCP connections sampled by sock_ops, by socket cookie. An LRU: a socket whose
/// close was missed does not hold its slot.
#[map]
pub static TCP_SOCKS: LruHashMap<u64, crate::sockops::SockState> = LruHashMap::with_max_entries(65536, 0);

/// Connections sampled from their retransmits (older than observer), by socket address.
/// Sized by userspace like TCP_SOCKS; an LRU.
#[map]
pub static OLD_SOCKS: LruHashMap<u64, crate::older::OldSock> = LruHashMap::with_max_entries(65536, 0);

/// connect() calls in progress, per thread. An LRU, for threads that die inside the call.
#[map]
pub static CONNECT_CALLS: LruHashMap<u32, crate::connect_calls::Call> = LruHashMap::with_max_entries(4096, 0);

/// Lost-event counters, indexed by `observer_common::lost`.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::COUNT as u32, 0);

/// Per LRU table, entries created and entries removed (see `observer_common::table`):
/// userspace tells evictions from these and the entries it still finds.
#[map]
pub static TABLES: PerCpuArray<u64> = PerCpuArray::with_max_entries(2 * table::COUNT as u32, 0);

#[inline(always)]
fn count_table(slot: usize) {
    if let Some(p) = TABLES.get_ptr_mut(slot as u32) {
        unsafe { *p += 1 };
    }
}

/// A new entry in table `t` (an insert that succeeded; with an LRU it may have evicted one).
#[inline(always)]
pub fn table_created(t: usize) {
    count_table(2 * t);
}

/// An entry of table `t` that a program removed (a remove that found it).
#[inline(always)]
pub fn table_removed(t: usize) {
    count_table(2 * t + 1);
}

/// Insert `value` under `key` in table `t`, counting it; a refused insert is lost (false).
#[inline(always)]
pub fn lru_insert<K, V>(map: &LruHashMap<K, V>, t: usize, key: &K, value: &V) -> bool {
    match map.insert(key, value, 0) {
        Ok(()) => {
            table_created(t);
            true
        }
        Err(_) => {
            count_lost(lost::TABLE_INSERT_FAILED);
            false
        }
    }
}

/// Remove `key` from table `t`, counting it when it was there.
#[inline(always)]
pub fn lru_remove<K, V>(map: &LruHashMap<K, V>, t: usize, key: &K) {
    if map.remove(key).is_ok() {
        table_removed(t);
    }
}

#[inline(always)]
pub fn count_lost(index: usize) {
    if let Some(p) = LOST.get_ptr_mut(index as u32) {
        // Per-CPU slot: no other CPU writes it, a plain add is enough.
        unsafe { *p += 1 };
    }
}

/// A map value that is an array of N counters.
pub trait Counters<const N: usize>: 'static {
    const ZERO: Self;
    fn counters(&mut self) -> &mut [u64; N];
}

impl Counters<{ observer_common::tcp::dest_counter::COUNT }> for TcpCounters {
    const ZERO: Self = TcpCounters::ZERO;
    fn counters(&mut self) -> &mut [u64; observer_common::tcp::dest_counter::COUNT] {
        &mut self.c
    }
}

impl Counters<{ observer_common::tcp::port_counter::COUNT }> for PortCounters {
    const ZERO: Self = PortCounters::ZERO;
    fn counters(&mut self) -> &mut [u64; observer_common::tcp::port_counter::COUNT] {
        &mut self.c
    }
}

impl Counters<{ observer_common::dns::dns_counter::COUNT }> for DnsCounters {
    const ZERO: Self = DnsCounters::ZERO;
    fn counters(&mut self) -> &mut [u64; observer_common::dns::dns_counter::COUNT] {
        &mut self.c
    }
}

impl Counters<1> for observer_common::route::DropCounters {
    const ZERO: Self = observer_common::route::DropCounters { c: [0] };
    fn counters(&mut self) -> &mut [u64; 1] {
        &mut self.c
    }
}

/// One more drop under `key`.
#[inline(always)]
pub fn bump_drop(key: &observer_common::route::DropKey) {
    bump(&DROPS, key, 0, table::DROPS);
}

impl Counters<{ observer_common::dns::iface_counter::COUNT }> for IfaceCounters {
    const ZERO: Self = IfaceCounters::ZERO;
    fn counters(&mut self) -> &mut [u64; observer_common::dns::iface_counter::COUNT] {
        &mut self.c
    }
}

/// The counters of `key`, created on first use and counted in table `t`.
#[inline(always)]
fn entry<K, V: Counters<N>, const N: usize>(map: &LruPerCpuHashMap<K, V>, key: &K, t: usize) -> Option<*mut V> {
    if let Some(p) = map.get_ptr_mut(key) {
        return Some(p);
    }
    // EEXIST means another CPU created it first, which is fine (and not counted twice).
    if map.insert(key, &V::ZERO, BPF_NOEXIST as u64).is_ok() {
        table_created(t);
    }
    let p = map.get_ptr_mut(key);
    if p.is_none() {
        count_lost(lost::TABLE_INSERT_FAILED);
    }
    p
}

/// Bump counters `indices` of `key` with one lookup; indices past N are skipped.
#[inline(always)]
fn bump_all<K, V: Counters<N>, const N: usize>(map: &LruPerCpuHashMap<K, V>, key: &K, indices: &[usize], t: usize) {
    let Some(p) = entry(map, key, t) else { return };
    for &index in indices {
        if index < N {
            // This CPU's own slot. A softirq could in theory interrupt a process-context
            // program between the load and the store; that window is two instructions wide.
            unsafe { (*p).counters()[index] += 1 };
        }
    }
}

#[inline(always)]
fn bump<K, V: Counters<N>, const N: usize>(map: &LruPerCpuHashMap<K, V>, key: &K, index: usize, t: usize) {
    bump_all(map, key, &[index], t);
}

#[inline(always)]
pub fn bump_dest(dest: &Endpoint, index: usize) {
    bump(&TCP_DESTS, dest, index, table::DESTS);
    mark_dirty(dest);
}

/// After the counters of `dest` changed (in this order: userspace takes the set, then reads
/// the counters, so a change it misses is marked again for the next reading).
#[inline(always)]
fn mark_dirty(dest: &Endpoint) {
    // Already marked: most bumps, and a lookup takes no lock.
    if DEST_DIRTY.get_ptr(dest).is_some() {
        return;
    }
    match DEST_DIRTY.insert(dest, &0, BPF_NOEXIST as u64) {
        Ok(()) => {}
        // Another CPU marked it first.
        Err(e) if e == -EEXIST => {}
        Err(_) => {
            if let Some(p) = DEST_DIRTY_FULL.get_ptr_mut(0) {
                unsafe { *p += 1 };
            }
        }
    }
}

const EEXIST: i32 = 17;

#[inline(always)]
pub fn bump_port(port: u16, index: usize) {
    bump(&TCP_PORTS, &port, index, table::PORTS);
}

#[inline(always)]
pub fn bump_resolver(resolver: &Endpoint, index: usize) {
    bump(&DNS_RESOLVERS, resolver, index, table::RESOLVERS);
}

/// Several counters of one resolver for one message (response, rcode, truncated): one lookup.
#[inline(always)]
pub fn bump_resolver_all(resolver: &Endpoint, indices: &[usize]) {
    bump_all(&DNS_RESOLVERS, resolver, indices, table::RESOLVERS);
}

#[inline(always)]
pub fn bump_iface(ifindex: u32, index: usize) {
    bump(&IFACES, &ifindex, index, table::IFACES);
}

/// Ring-buffer flags for a record of `len` bytes, given the bytes this CPU produced since its
/// last wakeup (`produced`, kept per CPU): wake the reader once per `every` bytes. Asking the
/// ring how much is waiting instead reads the reader's cache line on every record.
#[inline(always)]
pub fn wakeup_flags(produced: &mut u64, len: u64, every: u64) -> u64 {
    *produced += len;
    if *produced >= every {
        *produced = 0;
        aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64
    } else {
        aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64
    }
}
