//! DNS layer: exact per-resolver counters kept in the kernel, and the bounded copy of each DNS
//! message sent to userspace.

use crate::tcp::Endpoint;

/// At most this many bytes of a DNS message reach userspace (classic UDP DNS size).
pub const CAPTURE_MAX: usize = 512;
/// Extra DNS ports beside 53 (`--dns-port`), in a small array map.
pub const MAX_EXTRA_PORTS: u32 = 8;

crate::counter_set! {
    /// Indexes into [`DnsCounters::c`], per resolver endpoint.
    pub mod dns_counter {
        /// A UDP DNS message with QR=0 (a query) sent to this resolver.
        QUERIES = "queries",
        /// A UDP DNS message with QR=1 from this resolver.
        RESPONSES = "responses",
        NOERROR = "noerror",
        NXDOMAIN = "nxdomain",
        SERVFAIL = "servfail",
        REFUSED = "refused",
        OTHER_RCODE = "other_rcode",
        /// Responses with the TC bit set.
        TRUNCATED = "truncated",
        /// UDP payloads to or from a DNS port too short for a DNS header (12 bytes).
        SHORT = "short",
        /// TCP segments with payload to or from port 53 (DNS over TCP is counted, not parsed).
        TCP_SEGMENTS = "tcp_segments",
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsCounters {
    pub c: [u64; dns_counter::COUNT],
}

impl DnsCounters {
    pub const ZERO: DnsCounters = DnsCounters { c: [0; dns_counter::COUNT] };
}

pub const DIRECTION_INGRESS: u8 = 0;
pub const DIRECTION_EGRESS: u8 = 1;

/// One DNS message seen at TC. `data` holds the first `captured` bytes of the DNS payload
/// (the UDP payload), `dns_len` the payload's full length.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsEvent {
    pub ts_ns: u64,
    pub client: Endpoint,
    pub resolver: Endpoint,
    pub ifindex: u32,
    pub dns_len: u16,
    pub captured: u16,
    pub direction: u8,
    /// 1 when the message is a response (QR bit), 0 for a query.
    pub is_response: u8,
    pub _pad: [u8; 6],
    pub data: [u8; CAPTURE_MAX],
}
