//! Events, map keys and map values that cross the kernel/userspace boundary.
//!
//! Everything here is `#[repr(C)]`, has no implicit padding (the verifier rejects reads of
//! uninitialised stack bytes in map keys), and is `no_std`. The `user` feature adds the
//! `aya::Pod` impls that userspace needs to read maps.
#![no_std]

#[macro_use]
pub mod counters;
pub mod dns;
pub mod layout;
pub mod tcp;
pub mod http;
pub mod icmp;
pub mod route;
pub mod tls;

// Indexes of the kernel's lost-event counters (a per-CPU array, summed by userspace).
// Nothing is dropped silently: every place that cannot record something bumps one of these.
crate::counter_set! {
    /// Kernel-side losses, by cause; the names are the keys of the JSON `lost` section.
    pub mod lost {
        /// A connect outcome did not fit in the connect ring buffer.
        CONNECT_RINGBUF_FULL = "connect_ringbuf_full",
        /// A kernel table refused a new entry (an LRU evicts instead; this is its rarer
        /// out-of-memory failure).
        TABLE_INSERT_FAILED = "table_insert_failed",
        /// A connect ended whose start the connection table had evicted: its outcome is
        /// lost (the per-destination attempt was counted, the result was not).
        CONNECT_OUTCOMES_EVICTED = "connect_outcomes_evicted",
        /// A tracepoint field could not be read.
        TRACEPOINT_READ_FAILED = "tracepoint_read_failed",
        /// A DNS message did not fit in the DNS ring buffer (the per-resolver counters still count it).
        DNS_RINGBUF_FULL = "dns_ringbuf_full",
        /// A DNS message's bytes could not be copied out of the packet.
        DNS_COPY_FAILED = "dns_copy_failed",
        /// A packet's headers were not linear and could not be pulled in: not parsed.
        PULL_FAILED = "pull_failed",
        /// A TLS record did not fit in the TLS ring buffer.
        TLS_RINGBUF_FULL = "tls_ringbuf_full",
        /// A TLS flow's bytes could not be copied out of the packet.
        TLS_COPY_FAILED = "tls_copy_failed",
        /// An HTTP payload or OpenSSL plaintext did not fit in the HTTP ring buffer.
        HTTP_RINGBUF_FULL = "http_ringbuf_full",
        /// An HTTP payload's bytes (or a process's plaintext) could not be copied.
        HTTP_COPY_FAILED = "http_copy_failed",
        /// An ICMP error did not fit in the ICMP ring buffer.
        ICMP_RINGBUF_FULL = "icmp_ringbuf_full",
        /// A TCP sample or early connect failure did not fit in the route ring buffer.
        ROUTE_RINGBUF_FULL = "route_ringbuf_full",
    }
}

crate::counter_set! {
    /// Kernel LRU tables whose evictions are counted. Each has two slots in the `TABLES`
    /// per-CPU array: entries created (2 × index) and entries the programs removed
    /// (2 × index + 1). The names are the keys of the JSON `lost` section.
    pub mod table {
        /// Per-destination counters: an evicted entry loses its increments since the last read.
        DESTS = "dest_evicted",
        /// Per-local-port counters.
        PORTS = "port_evicted",
        /// Per-resolver DNS counters.
        RESOLVERS = "resolver_evicted",
        /// Per-interface DNS counters.
        IFACES = "iface_evicted",
        /// Drops by addresses and reason.
        DROPS = "drop_evicted",
        /// Connections this host opened, from connect() to close.
        CONNS = "conn_evicted",
        /// Established connections sampled by sock_ops for loss and RTT.
        TCP_SOCKS = "tcp_sock_evicted",
        /// Connections older than observer, sampled from their retransmits.
        OLD_SOCKS = "old_sock_evicted",
        /// OpenSSL calls in progress, per thread.
        SSL_CALLS = "ssl_call_evicted",
        /// connect() calls in progress, per thread.
        CONNECT_CALLS = "connect_call_evicted",
    }
}

#[cfg(feature = "user")]
mod pod {
    use crate::{
        dns::{DnsCounters, DnsKey, DnsPending, IfaceCounters},
        layout::{SockLayout, TpLayout},
        route::{ConnectSyscallLayout, DropCounters, DropKey, DropLayout, TcpSockLayout},
        tcp::*,
    };
    // SAFETY: all of these are #[repr(C)], Copy, with no padding and no pointers.
    unsafe impl aya::Pod for Endpoint {}
    unsafe impl aya::Pod for TcpCounters {}
    unsafe impl aya::Pod for PortCounters {}
    unsafe impl aya::Pod for TpLayout {}
    unsafe impl aya::Pod for SockLayout {}
    unsafe impl aya::Pod for DropLayout {}
    unsafe impl aya::Pod for DropKey {}
    unsafe impl aya::Pod for DropCounters {}
    unsafe impl aya::Pod for ConnectSyscallLayout {}
    unsafe impl aya::Pod for TcpSockLayout {}
    unsafe impl aya::Pod for DnsCounters {}
    unsafe impl aya::Pod for IfaceCounters {}
    unsafe impl aya::Pod for DnsKey {}
    unsafe impl aya::Pod for DnsPending {}
}
