//! The ICMP branch's records: an error message about a packet this host (or a namespace
//! behind it) sent, attributed to that packet's destination from the header it quotes; and
//! the TTL of a SYN-ACK, from which the hop count to its sender is inferred.

/// What an [`IcmpEvent`] is.
pub mod what {
    /// An ICMP or ICMPv6 error.
    pub const ERROR: u8 = 0;
    /// A SYN-ACK arrived from `reporter` with IP TTL (hop limit) `ttl`.
    pub const SYNACK_TTL: u8 = 1;
}

use crate::tcp::Endpoint;

/// One ICMP or ICMPv6 error, as seen arriving (ingress).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IcmpEvent {
    pub ts_ns: u64,
    /// The quoted packet's destination (and its TCP or UDP port, 0 for other protocols).
    pub dest: Endpoint,
    /// Who sent the error: the router or host on the path.
    pub reporter: Endpoint,
    /// Fragmentation needed / packet too big: the next hop's MTU.
    pub mtu: u32,
    pub ifindex: u32,
    /// ICMP type and code as on the wire; `v6` 1 for ICMPv6.
    pub icmp_type: u8,
    pub code: u8,
    pub v6: u8,
    /// The quoted packet's protocol (6 TCP, 17 UDP, …).
    pub proto: u8,
    /// [`what`].
    pub what: u8,
    /// SYNACK_TTL: the TTL or hop limit it arrived with.
    pub ttl: u8,
    pub _pad: [u8; 2],
}
