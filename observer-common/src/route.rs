//! Layer 3 records: per-connection TCP samples from sock_ops (segments sent, retransmits by
//! kind, smoothed RTT) and connect() calls that failed before any SYN was sent, in one ring
//! buffer; and packets the kernel dropped on this host (`skb:kfree_skb`), counted in a map
//! (a flood of drops must not flood the ring, nor cost a wakeup each).
//!
//! Every ring record starts with `ts_ns: u64` and `kind: u32`, so userspace reads the kind
//! at byte 8 before it picks the struct.

use crate::tcp::Endpoint;

/// What a record in the route ring is.
pub mod kind {
    /// A live connection's counters, at most once per sample period per connection.
    pub const SAMPLE: u32 = 0;
    /// The same, as the connection closed: its last counters.
    pub const CLOSED: u32 = 1;
    /// A connect() that failed before SYN_SENT ([`super::ConnectFailEvent`]).
    pub const CONNECT_FAILED: u32 = 3;
}

/// Retransmitted segments by what drove them, from the socket's state at the retransmit.
pub mod retrans {
    /// After a retransmission timeout, until the data outstanding then is acknowledged.
    pub const RTO: usize = 0;
    /// In fast recovery: segments marked lost (duplicate ACKs, SACK, RACK).
    pub const FAST: usize = 1;
    /// With nothing marked lost: tail-loss probes, mostly.
    pub const PROBE: usize = 2;
    pub const COUNT: usize = 3;
}

/// A TCP connection's counters since it was established (sock_ops).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpSample {
    pub ts_ns: u64,
    /// [`kind::SAMPLE`] or [`kind::CLOSED`].
    pub kind: u32,
    /// Smoothed RTT in µs (the kernel's `srtt_us >> 3`).
    pub srtt_us: u32,
    /// The socket's cookie: one connection, across samples.
    pub cookie: u64,
    pub peer: Endpoint,
    pub local_port: u16,
    /// 1: this host connected (active open); 0: it accepted.
    pub active: u8,
    /// 1: a connection older than observer, sampled from its retransmits: its counters
    /// started before observer did, so its first sample is a baseline, not traffic.
    pub adopted: u8,
    /// Data segments sent, retransmits included (`data_segs_out`).
    pub data_segs_out: u32,
    /// Segments retransmitted (`total_retrans`).
    pub total_retrans: u32,
    /// Retransmitted segments by [`retrans`] kind, as counted by the program.
    pub retrans: [u32; retrans::COUNT],
    /// Retransmission timeouts that fired.
    pub timeouts: u32,
}

/// What a dropped packet is counted under: its addresses, protocol and drop reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    pub src: Endpoint,
    pub dst: Endpoint,
    /// `enum skb_drop_reason` (0 on kernels before 5.17, which do not say).
    pub reason: u32,
    /// IP protocol (6 TCP, 17 UDP, …).
    pub proto: u8,
    /// 1 when the packet belonged to a local socket (sent by this host).
    pub has_sk: u8,
    pub _pad: [u8; 2],
}

/// Packets dropped under one [`DropKey`] since it was created.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    pub c: [u64; 1],
}

/// A connect() that returned an error without the socket ever reaching SYN_SENT: no route,
/// no free local port, a local policy. Nothing went on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectFailEvent {
    pub ts_ns: u64,
    /// [`kind::CONNECT_FAILED`].
    pub kind: u32,
    /// The positive errno connect() returned.
    pub errno: i32,
    pub dest: Endpoint,
    pub pid: u32,
    pub comm: [u8; 16],
}

/// Where `skb:kfree_skb` and `struct sk_buff` keep what the drop program reads: tracepoint
/// offsets from tracefs, struct offsets from BTF. `enabled` 0: not attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropLayout {
    pub enabled: u32,
    /// In the tracepoint record: skbaddr, protocol, reason (u32::MAX when absent).
    pub tp_skbaddr: u32,
    pub tp_protocol: u32,
    pub tp_reason: u32,
    /// In struct sk_buff: protocol, head, network_header, transport_header, sk, dev.
    pub protocol: u32,
    pub head: u32,
    pub network_header: u32,
    pub transport_header: u32,
    pub sk: u32,
    pub dev: u32,
    /// net_device.nd_net and sock_common.skc_net (each a `struct net *`), and net.ns.inum.
    pub dev_net: u32,
    pub sk_net: u32,
    pub net_inum: u32,
    /// The inode of observer's network namespace: drops elsewhere (another namespace on the
    /// same kernel) are not this host's.
    pub netns_inum: u32,
    /// Where the skb's header fields are read in one go: the start of a block of at most
    /// [`SKB_BLOCK`] bytes holding protocol, transport_header, network_header and head, and
    /// where in it each is. `block_len` 0: read them one by one.
    pub block_start: u32,
    pub block_len: u32,
    pub block_protocol: u32,
    pub block_th: u32,
    pub block_nh: u32,
    pub block_head: u32,
    /// 1 when `dev` and `sk` are adjacent (`sk` right after `dev`): one read for both.
    pub dev_sk_adjacent: u32,
    /// Reasons (below 128) that are TCP and IP doing their normal work: counted per reason
    /// only, without reading the packet (a flood of them costs a map update each).
    pub routine: [u64; 2],
}

/// The most bytes of `struct sk_buff` read in one go for its header fields.
pub const SKB_BLOCK: u32 = 32;

/// Offsets in `syscalls:sys_enter_connect` (uservaddr) and `sys_exit_connect` (ret).
/// Where `struct tcp_sock` keeps what the retransmit tracepoint reads of a connection that
/// sock_ops does not sample (one older than observer): offsets from BTF, from the start of
/// the socket. `enabled` 0: not read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSockLayout {
    pub enabled: u32,
    /// sock_common.skc_cookie (u64; 0 until someone asked for it).
    pub cookie: u32,
    /// tcp_sock: data_segs_out, total_retrans, srtt_us (<< 3), lost_out (u32 each).
    pub data_segs_out: u32,
    pub total_retrans: u32,
    pub srtt_us: u32,
    pub lost_out: u32,
    /// inet_connection_sock.icsk_retransmits (u8): RTOs since the last forward progress.
    pub icsk_retransmits: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectSyscallLayout {
    pub enabled: u32,
    pub uservaddr: u32,
    pub ret: u32,
}
