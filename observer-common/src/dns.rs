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

/// A DNS message crosses several hooks on its way (a container's veth, a bridge, the uplink),
/// and NAT may rewrite its addresses between them. Its identity on every hook is the client's
/// port, the DNS id and the start of the question, which no NAT rewrites.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnsKey {
    pub client_port: u16,
    pub id: u16,
    /// The question's first four bytes, case folded.
    pub qhash: u32,
}

/// A query that NAT rewrote: where the client sent it, as the client addressed it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsPending {
    pub client: Endpoint,
    pub resolver: Endpoint,
    /// When the query was first seen.
    pub query_ns: u64,
}

// No implicit padding: the verifier rejects map values with uninitialised bytes.
const _: () = assert!(size_of::<DnsPending>() == 2 * size_of::<Endpoint>() + 8);

/// Sightings of the same message on other hooks within this long are the same message.
/// Packets cross a host's hooks within microseconds; a client's own retry comes much later.
pub const DUPLICATE_WINDOW_NS: u64 = 100_000_000;

crate::counter_set! {
    /// Indexes into [`IfaceCounters::c`], per interface index: what only the kernel sees.
    /// (Messages counted per interface come from the events, which carry the ifindex: a
    /// counter lookup per DNS message costs more than the events already give.)
    pub mod iface_counter {
        /// Sightings of a message already counted on another hook (or another direction).
        DNS_DUPLICATES = "dns_duplicates",
        /// Non-first IP fragments of UDP datagrams: no port to tell whether they are DNS.
        UDP_FRAGMENTS = "udp_fragments",
        /// IPv6 packets with more extension headers than observer follows (4).
        EXT_HEADERS_TOO_DEEP = "ext_headers_too_deep",
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceCounters {
    pub c: [u64; iface_counter::COUNT],
}

impl IfaceCounters {
    pub const ZERO: IfaceCounters = IfaceCounters { c: [0; iface_counter::COUNT] };
}

/// One DNS message seen at TC. `data` holds the first `captured` bytes of the DNS payload
/// (the UDP payload), `dns_len` the payload's full length. A record in the ring holds the
/// header and only the `captured` bytes: [`DNS_EVENT_HEADER`] + `captured` bytes long.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsEvent {
    pub ts_ns: u64,
    /// The client and the resolver as the client addressed them (the query's first sighting).
    pub client: Endpoint,
    pub resolver: Endpoint,
    /// For a response: the address that actually answered, when NAT made it differ from
    /// `resolver`; zero otherwise.
    pub answerer: Endpoint,
    pub ifindex: u32,
    pub dns_len: u16,
    pub captured: u16,
    pub direction: u8,
    /// 1 when the message is a response (QR bit), 0 for a query.
    pub is_response: u8,
    /// 1 when the datagram was fragmented: only the first fragment's bytes were seen.
    pub fragmented: u8,
    /// A response arriving (ingress): its IP TTL or hop limit, for the hop count to the
    /// resolver; 0 otherwise.
    pub ttl: u8,
    pub data: [u8; CAPTURE_MAX],
}

/// Bytes of a [`DnsEvent`] before its data: a ring record is this plus the bytes captured.
pub const DNS_EVENT_HEADER: usize = core::mem::offset_of!(DnsEvent, data);
