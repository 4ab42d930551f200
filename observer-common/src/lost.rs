//! Indexes of the kernel's lost-event counters (a per-CPU array, summed by userspace).
//! Nothing is dropped silently: every place that cannot record something bumps one of these.

/// A connect outcome did not fit in the connect ring buffer.
pub const CONNECT_RINGBUF_FULL: u32 = 0;
/// The in-flight connection table could not take a new socket.
pub const CONN_TABLE_FULL: u32 = 1;
/// The per-destination counter table could not take a new destination.
pub const DEST_TABLE_FULL: u32 = 2;
/// The per-local-port counter table could not take a new port.
pub const PORT_TABLE_FULL: u32 = 3;
/// A tracepoint field could not be read.
pub const TRACEPOINT_READ_FAILED: u32 = 4;
/// A DNS message did not fit in the DNS ring buffer (the per-resolver counters still count it).
pub const DNS_RINGBUF_FULL: u32 = 5;
/// The per-resolver counter table could not take a new resolver.
pub const RESOLVER_TABLE_FULL: u32 = 6;
/// A DNS message's bytes could not be copied out of the packet.
pub const DNS_COPY_FAILED: u32 = 7;

pub const COUNT: u32 = 8;

/// Names used in the JSON `lost` section, in index order.
pub const NAMES: [&str; COUNT as usize] = [
    "connect_ringbuf_full",
    "conn_table_full",
    "dest_table_full",
    "port_table_full",
    "tracepoint_read_failed",
    "dns_ringbuf_full",
    "resolver_table_full",
    "dns_copy_failed",
];
