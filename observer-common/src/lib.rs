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
        /// The in-flight connection table could not take a new socket.
        CONN_TABLE_FULL = "conn_table_full",
        /// The per-destination counter table could not take a new destination.
        DEST_TABLE_FULL = "dest_table_full",
        /// The per-local-port counter table could not take a new port.
        PORT_TABLE_FULL = "port_table_full",
        /// A tracepoint field could not be read.
        TRACEPOINT_READ_FAILED = "tracepoint_read_failed",
        /// A DNS message did not fit in the DNS ring buffer (the per-resolver counters still count it).
        DNS_RINGBUF_FULL = "dns_ringbuf_full",
        /// The per-resolver counter table could not take a new resolver.
        RESOLVER_TABLE_FULL = "resolver_table_full",
        /// A DNS message's bytes could not be copied out of the packet.
        DNS_COPY_FAILED = "dns_copy_failed",
        /// The per-interface table could not take a new interface.
        IFACE_TABLE_FULL = "iface_table_full",
        /// A packet's headers were not linear and could not be pulled in: not parsed.
        PULL_FAILED = "pull_failed",
        /// A TLS record did not fit in the TLS ring buffer.
        TLS_RINGBUF_FULL = "tls_ringbuf_full",
        /// The TLS flow table could not take a new flow.
        TLS_TABLE_FULL = "tls_table_full",
        /// A TLS flow's bytes could not be copied out of the packet.
        TLS_COPY_FAILED = "tls_copy_failed",
        /// An HTTP payload or OpenSSL plaintext did not fit in the HTTP ring buffer.
        HTTP_RINGBUF_FULL = "http_ringbuf_full",
        /// An HTTP payload's bytes (or a process's plaintext) could not be copied.
        HTTP_COPY_FAILED = "http_copy_failed",
        /// The table of OpenSSL calls in progress could not take another thread.
        SSL_CALLS_FULL = "ssl_calls_full",
        /// An ICMP error did not fit in the ICMP ring buffer.
        ICMP_RINGBUF_FULL = "icmp_ringbuf_full",
        /// A TCP sample or early connect failure did not fit in the route ring buffer.
        ROUTE_RINGBUF_FULL = "route_ringbuf_full",
        /// The table of drops by addresses and reason could not take a new key.
        DROP_TABLE_FULL = "drop_table_full",
        /// The table of established connections sampled for loss and RTT was full.
        TCP_SOCKS_FULL = "tcp_socks_full",
        /// The table of connect() calls in progress could not take another thread.
        CONNECT_CALLS_FULL = "connect_calls_full",
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
