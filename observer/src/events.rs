//! What a source hands to the layers: plain userspace types, decoupled from the ring buffer
//! and the kernel maps, so that tests, snapshots and a later offline replay can feed the
//! layers. Every timestamp here comes from the source; no layer reads a clock.

use bytes::{Bytes, BytesMut};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, SystemTime},
};

use observer_common::{
    dns::{CAPTURE_MAX, DNS_EVENT_HEADER, DnsEvent, dns_counter, iface_counter},
    tcp::{AF_INET, ConnectEvent, Endpoint, dest_counter, outcome, port_counter},
    http::{HTTP_CAPTURE, HTTP_EVENT_HEADER, HttpEvent, kind as http_kind},
    icmp::{IcmpEvent, what as icmp_what},
    tls::{CHUNK_MAX, TLS_EVENT_HEADER, TlsEvent, kind as tls_kind},
};

/// A point on the kernel's CLOCK_MONOTONIC (what bpf_ktime_get_ns returns), in nanoseconds.
/// A test source makes these up; the live source reads them from the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mono(pub u64);

impl Mono {
    /// Time since `earlier`, zero when `earlier` is later.
    pub fn since(self, earlier: Mono) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    pub fn after(self, d: Duration) -> Mono {
        Mono(self.0.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }
}

mod route;
pub use route::{ConnectFailRec, DropRec, TcpSampleRec, decode_route, drop_reading};

/// One thing seen, as it happened. Each layer takes the variants it knows and ignores the rest.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Connect(ConnectRecord),
    Dns(DnsMessage),
    Tls(TlsChunk),
    Http(HttpChunk),
    Icmp(IcmpMessage),
    Hops(HopSample),
    TcpSample(TcpSampleRec),
    ConnectFailed(ConnectFailRec),
}

/// A SYN-ACK's TTL (hop limit): the hop count to its sender, inferred.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HopSample {
    pub at: Mono,
    pub peer: IpAddr,
    pub ttl: u8,
}

/// An ICMP error that arrived, about a packet sent to `dest`.
#[derive(Debug, Clone, PartialEq)]
pub struct IcmpMessage {
    pub at: Mono,
    /// The quoted packet's destination (port 0 when it was neither TCP nor UDP).
    pub dest: SocketAddr,
    /// The router or host that sent the error.
    pub reporter: IpAddr,
    pub v6: bool,
    pub icmp_type: u8,
    pub code: u8,
    /// The quoted packet's protocol.
    pub proto: u8,
    /// Fragmentation needed / packet too big: the next hop's MTU.
    pub mtu: u32,
}

/// Decode an ICMP ring-buffer record (fixed size): an ICMP error or a SYN-ACK's TTL; `None`
/// for a short one or an unknown kind.
pub fn decode_icmp(raw: &[u8]) -> Option<Event> {
    let (ev, _) = split_record::<IcmpEvent>(raw)?;
    if ev.what == icmp_what::SYNACK_TTL {
        return Some(Event::Hops(HopSample { at: Mono(ev.ts_ns), peer: endpoint_addr(&ev.reporter).ip(), ttl: ev.ttl }));
    }
    if ev.what != icmp_what::ERROR {
        return None;
    }
    Some(Event::Icmp(IcmpMessage {
        at: Mono(ev.ts_ns),
        dest: endpoint_addr(&ev.dest),
        reporter: endpoint_addr(&ev.reporter).ip(),
        v6: ev.v6 != 0,
        icmp_type: ev.icmp_type,
        code: ev.code,
        proto: ev.proto,
        mtu: ev.mtu,
    }))
}

/// Where an HTTP chunk was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpKind {
    /// At TC: a TCP payload that starts like an HTTP message.
    Start,
    /// At TC: the segment after a request whose header block did not end in its packet.
    Continues,
    /// A process's plaintext through OpenSSL: what it wrote, or what it read.
    SslWrite,
    SslRead,
}

/// The first bytes of an HTTP message, from a packet or from a process's TLS plaintext.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpChunk {
    pub at: Mono,
    /// The sender and the receiver. For OpenSSL plaintext the source fills them in from the
    /// process's socket; `None` when it could not.
    pub src: Option<SocketAddr>,
    pub dst: Option<SocketAddr>,
    pub kind: HttpKind,
    /// TC: the segment's sequence number.
    pub seq: u32,
    /// The message's bytes in this packet or call; `bytes` may be a prefix.
    pub payload_len: u32,
    pub ifindex: u32,
    /// OpenSSL plaintext: the process, its socket and its SSL object.
    pub pid: u32,
    pub fd: i32,
    pub ssl: u64,
    /// "comm[pid]", when the source knows it.
    pub process: Option<String>,
    /// The receiver is an address of this host (set by the source): a request to it is
    /// served here.
    pub dst_is_local: bool,
    pub bytes: Vec<u8>,
}

/// What a TLS record from the kernel reports about one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsKind {
    /// Bytes of the sender's stream at `offset`.
    Data,
    /// The sender's first application data (not an encrypted alert).
    App,
    Fin,
    Rst,
    /// The first payload of a connection to a TLS port was not a TLS record.
    NotTls,
}

/// One TLS record from the kernel: a piece of a flow's first bytes, or a mark on it.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsChunk {
    pub at: Mono,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub from_client: bool,
    pub kind: TlsKind,
    pub offset: u32,
    pub bytes: Vec<u8>,
}

/// A ring event that is plain old data: all zeroes is a valid value, and the first
/// `HEADER` bytes of a record hold its fixed fields (the captured bytes follow them).
///
/// # Safety
/// Implement only for `#[repr(C)]` types without pointers, references or niches, with
/// `HEADER <= size_of::<Self>()`.
unsafe trait RingRecord: Sized {
    const HEADER: usize;
}

// SAFETY: both are #[repr(C)] integers and byte arrays; their HEADER is an offset_of!.
unsafe impl RingRecord for DnsEvent {
    const HEADER: usize = DNS_EVENT_HEADER;
}
// SAFETY: as above.
unsafe impl RingRecord for TlsEvent {
    const HEADER: usize = TLS_EVENT_HEADER;
}

// SAFETY: as above.
unsafe impl RingRecord for IcmpEvent {
    const HEADER: usize = size_of::<IcmpEvent>();
}
// SAFETY: as above.
unsafe impl RingRecord for HttpEvent {
    const HEADER: usize = HTTP_EVENT_HEADER;
}

/// A variable-length ring record: the event's fixed fields (only those are copied), and the
/// bytes after them. `None` for a record shorter than the fixed fields.
fn split_record<T: RingRecord>(raw: &[u8]) -> Option<(T, &[u8])> {
    if raw.len() < T::HEADER {
        return None;
    }
    // SAFETY: RingRecord promises that all zeroes is a valid T.
    let mut ev: T = unsafe { std::mem::zeroed() };
    // SAFETY: T::HEADER bytes exist on both sides (RingRecord and the check above), and the
    // two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(raw.as_ptr(), (&raw mut ev).cast::<u8>(), T::HEADER) };
    Some((ev, &raw[T::HEADER..]))
}

/// Decode a TLS ring-buffer record; `None` for a short record or an unknown kind.
pub fn decode_tls(raw: &[u8]) -> Option<TlsChunk> {
    let (ev, data) = split_record::<TlsEvent>(raw)?;
    let captured = usize::from(ev.captured).min(data.len()).min(CHUNK_MAX);
    let kind = match ev.kind {
        tls_kind::DATA => TlsKind::Data,
        tls_kind::APP => TlsKind::App,
        tls_kind::FIN => TlsKind::Fin,
        tls_kind::RST => TlsKind::Rst,
        tls_kind::NOT_TLS => TlsKind::NotTls,
        _ => return None,
    };
    Some(TlsChunk {
        at: Mono(ev.ts_ns),
        client: endpoint_addr(&ev.client),
        server: endpoint_addr(&ev.server),
        from_client: ev.from_client != 0,
        kind,
        offset: ev.offset,
        bytes: data[..captured].to_vec(),
    })
}

#[cfg(test)]
impl HttpChunk {
    /// A message's first bytes seen at TC, `at_ms` into the run; `dst_is_local`: its
    /// receiver is this host.
    pub fn at_tc(at_ms: u64, src: &str, dst: &str, bytes: &[u8], dst_is_local: bool) -> HttpChunk {
        HttpChunk {
            at: Mono(at_ms * 1_000_000),
            src: Some(src.parse().expect("an address")),
            dst: Some(dst.parse().expect("an address")),
            kind: HttpKind::Start,
            seq: 1,
            payload_len: bytes.len() as u32,
            ifindex: 2,
            pid: 0,
            fd: -1,
            ssl: 0,
            process: None,
            dst_is_local,
            bytes: bytes.to_vec(),
        }
    }
}

/// Decode an HTTP ring-buffer record; `None` for a short record or an unknown kind. The
/// addresses of OpenSSL plaintext are left for the source to fill in.
pub fn decode_http(raw: &[u8]) -> Option<HttpChunk> {
    let (ev, data) = split_record::<HttpEvent>(raw)?;
    let captured = usize::from(ev.captured).min(data.len()).min(HTTP_CAPTURE);
    let kind = match ev.kind {
        http_kind::START => HttpKind::Start,
        http_kind::CONTINUES => HttpKind::Continues,
        http_kind::SSL_WRITE => HttpKind::SslWrite,
        http_kind::SSL_READ => HttpKind::SslRead,
        _ => return None,
    };
    let tc = matches!(kind, HttpKind::Start | HttpKind::Continues);
    // A uprobe's addresses are there when the kernel could read the socket.
    let known = tc || (ev.src.family != 0 && ev.dst.family != 0);
    let comm = String::from_utf8_lossy(ev.comm.split(|&b| b == 0).next().unwrap_or(&[])).into_owned();
    Some(HttpChunk {
        at: Mono(ev.ts_ns),
        src: known.then(|| endpoint_addr(&ev.src)),
        dst: known.then(|| endpoint_addr(&ev.dst)),
        kind,
        seq: if tc { ev.seq_or_ssl as u32 } else { 0 },
        payload_len: ev.payload_len,
        ifindex: ev.ifindex,
        pid: ev.pid,
        fd: ev.fd,
        ssl: if tc { 0 } else { ev.seq_or_ssl },
        process: (!tc && !comm.is_empty()).then(|| format!("{comm}[{}]", ev.pid)),
        dst_is_local: false,
        bytes: data[..captured].to_vec(),
    })
}

/// Since-start kernel counters, one reading per layer that keeps counters in the kernel.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub tcp: TcpSnapshot,
    pub dns: DnsSnapshot,
    /// Drops on this host per key, since each key's counter was created.
    pub drops: Vec<DropRec>,
}

/// A signal the source cannot collect, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Disabled {
    pub source: String,
    #[serde(deserialize_with = "crate::present::wire::interned")]
    pub signals: crate::present::wire::Name,
    pub reason: String,
}

/// The end of an interval: a reading of the counters, and the time it was taken at.
#[derive(Debug, Clone)]
pub struct Tick {
    pub at: Mono,
    /// Wall-clock time of the reading, for the report's timestamp.
    pub wall: SystemTime,
    pub counters: Counters,
    /// Since-start losses the source knows of (kernel counters, undecodable records).
    pub lost: Vec<(&'static str, u64)>,
    pub disabled: Vec<Disabled>,
    /// Lines for the user (an interface came or went).
    pub notes: Vec<String>,
}

#[cfg(test)]
impl Tick {
    /// A tick at time zero with empty readings.
    pub fn for_tests() -> Tick {
        Tick { at: Mono(0), wall: SystemTime::UNIX_EPOCH, counters: Counters::default(), lost: vec![], disabled: vec![], notes: vec![] }
    }
}

/// What a source yields: events as they arrive, and a tick at the end of each interval.
// One tick per interval: boxing the larger variant would save nothing worth an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Input {
    Events(Vec<Event>),
    Tick(Tick),
}

pub type DestCounts = [u64; dest_counter::COUNT];
pub type PortCounts = [u64; port_counter::COUNT];
pub type ResolverCounts = [u64; dns_counter::COUNT];
pub type IfaceCounts = [u64; iface_counter::COUNT];

/// Since-start DNS counters per resolver, read from the kernel at one instant.
#[derive(Debug, Clone, Default)]
pub struct DnsSnapshot {
    pub resolvers: Vec<(SocketAddr, ResolverCounts)>,
    /// Since-start kernel DNS figures per interface index.
    pub per_interface: Vec<(u32, IfaceCounts)>,
    /// Index -> name of the interfaces the TC program is attached to at the reading.
    pub names: Vec<(u32, String)>,
}

/// One DNS message seen on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsMessage {
    /// Latencies are differences of these.
    pub at: Mono,
    /// The client and the resolver as the client addressed them.
    pub client: SocketAddr,
    pub resolver: SocketAddr,
    /// The address that actually answered, when NAT made it differ from `resolver`.
    pub answerer: Option<SocketAddr>,
    pub is_response: bool,
    pub ifindex: u32,
    /// The first fragment of a fragmented datagram.
    pub fragmented: bool,
    /// The DNS payload's full length; `bytes` may be a prefix of it (at most 512).
    pub dns_len: usize,
    /// A response that arrived: its IP TTL (hop limit), for the hop count to its sender.
    pub ttl: Option<u8>,
    /// A slice of a buffer shared by the messages of one ring read (see [`decode_dns`]).
    pub bytes: Bytes,
}

/// Room taken at a time for the bytes of DNS messages: a few hundred messages' worth.
const DNS_BYTES_CHUNK: usize = 64 * 1024;

/// Decode a DNS ring-buffer record: the event's header, then the bytes captured. `None` for
/// a record shorter than the header (counted by the caller).
///
/// The bytes are copied into `room`, which many messages share: an allocation of its own
/// for each message was a tenth of observer's time under a flood.
pub fn decode_dns(raw: &[u8], room: &mut BytesMut) -> Option<DnsMessage> {
    let (ev, data) = split_record::<DnsEvent>(raw)?;
    // Never trust the length field beyond what the record holds.
    let captured = usize::from(ev.captured).min(data.len()).min(CAPTURE_MAX);
    Some(DnsMessage {
        at: Mono(ev.ts_ns),
        client: endpoint_addr(&ev.client),
        resolver: endpoint_addr(&ev.resolver),
        answerer: (ev.answerer.family != 0).then(|| endpoint_addr(&ev.answerer)),
        is_response: ev.is_response != 0,
        ifindex: ev.ifindex,
        fragmented: ev.fragmented != 0,
        dns_len: usize::from(ev.dns_len),
        ttl: (ev.ttl != 0).then_some(ev.ttl),
        bytes: {
            if room.capacity() - room.len() < captured {
                *room = BytesMut::with_capacity(DNS_BYTES_CHUNK);
            }
            room.extend_from_slice(&data[..captured]);
            room.split().freeze()
        },
    })
}

/// Since-start counters read from the kernel maps at one instant.
#[derive(Debug, Clone, Default)]
pub struct TcpSnapshot {
    /// With `gone` None, every destination the kernel holds; else only those whose counters
    /// changed since the last reading (the others read as they did).
    pub dests: Vec<(SocketAddr, DestCounts)>,
    /// The destinations gone from the kernel's table since the last reading, when `dests`
    /// holds only the changed ones.
    pub gone: Option<Vec<SocketAddr>>,
    /// Destinations the kernel holds, for the tables' accounting (a scripted source that
    /// does not model the tables leaves it 0).
    pub held: usize,
    pub ports: Vec<(u16, PortCounts)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Established,
    Refused,
    TimedOut,
    Unreachable,
    OtherError,
    Aborted,
}

impl Outcome {
    pub fn from_raw(v: u32) -> Option<Outcome> {
        Some(match v {
            outcome::ESTABLISHED => Outcome::Established,
            outcome::REFUSED => Outcome::Refused,
            outcome::TIMED_OUT => Outcome::TimedOut,
            outcome::UNREACHABLE => Outcome::Unreachable,
            outcome::OTHER_ERROR => Outcome::OtherError,
            outcome::ABORTED => Outcome::Aborted,
            _ => return None,
        })
    }
}

/// One finished outgoing connect.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectRecord {
    pub at: Mono,
    pub dest: SocketAddr,
    pub outcome: Outcome,
    pub latency: Duration,
    pub error: i32,
    pub syn_retransmits: u32,
    pub pid: u32,
    pub comm: String,
    /// The local port of an established connect; 0 when it failed.
    pub local_port: u16,
}

impl ConnectRecord {
    /// "comm[pid]", as processes are named in reports and evidence.
    pub fn process(&self) -> String {
        format!("{}[{}]", self.comm, self.pid)
    }
}

pub fn endpoint_addr(e: &Endpoint) -> SocketAddr {
    let ip = if e.family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(e.addr[0], e.addr[1], e.addr[2], e.addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(e.addr))
    };
    SocketAddr::new(ip, e.port)
}

/// Decode a ring-buffer record. `None` for a short or unknown record (counted by the caller).
pub fn decode_connect(bytes: &[u8]) -> Option<ConnectRecord> {
    if bytes.len() < size_of::<ConnectEvent>() {
        return None;
    }
    // SAFETY: the length is checked, ConnectEvent is plain old data, and the read is unaligned.
    let ev: ConnectEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let comm_len = ev.comm.iter().position(|&b| b == 0).unwrap_or(ev.comm.len());
    Some(ConnectRecord {
        at: Mono(ev.ts_ns),
        dest: endpoint_addr(&ev.dest),
        outcome: Outcome::from_raw(ev.outcome)?,
        latency: Duration::from_nanos(ev.latency_ns),
        error: ev.error,
        syn_retransmits: ev.syn_retransmits,
        pid: ev.pid,
        comm: String::from_utf8_lossy(&ev.comm[..comm_len]).into_owned(),
        local_port: ev.local_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use observer_common::tcp::AF_INET6;

    fn raw(ev: &ConnectEvent) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain #[repr(C)] value.
        unsafe { std::slice::from_raw_parts((ev as *const ConnectEvent).cast::<u8>(), size_of::<ConnectEvent>()) }.to_vec()
    }

    #[test]
    fn decodes_v4_and_v6_and_rejects_short_or_unknown_records() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let mut ev = ConnectEvent {
            ts_ns: 5,
            latency_ns: 1_500_000,
            dest: Endpoint { addr, port: 443, family: AF_INET },
            outcome: outcome::REFUSED,
            error: 111,
            syn_retransmits: 0,
            pid: 42,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            local_port: 0,
            _pad: 0,
        };
        let r = decode_connect(&raw(&ev)).unwrap();
        assert_eq!(r.dest, "10.0.0.2:443".parse().unwrap());
        assert_eq!((r.outcome, r.comm.as_str(), r.latency), (Outcome::Refused, "curl", Duration::from_micros(1500)));

        ev.dest = Endpoint { addr: "fd00::1".parse::<Ipv6Addr>().unwrap().octets(), port: 53, family: AF_INET6 };
        let r = decode_connect(&raw(&ev)).unwrap();
        assert_eq!(r.dest, "[fd00::1]:53".parse().unwrap());

        assert!(decode_connect(&raw(&ev)[..10]).is_none());
        ev.outcome = 99;
        assert!(decode_connect(&raw(&ev)).is_none());
    }

    #[test]
    fn a_dns_record_holds_the_header_and_only_the_captured_bytes() {
        use observer_common::dns::{DNS_EVENT_HEADER, DnsEvent};
        let mut ev: DnsEvent = unsafe { std::mem::zeroed() };
        ev.ts_ns = 7;
        ev.client = Endpoint { addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], port: 40000, family: AF_INET };
        ev.resolver = Endpoint { addr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], port: 53, family: AF_INET };
        ev.captured = 3;
        ev.dns_len = 3;
        ev.data[..3].copy_from_slice(&[1, 2, 3]);
        // SAFETY: reading the bytes of a plain #[repr(C)] value.
        let all = unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<DnsEvent>()) };
        let m = decode_dns(&all[..DNS_EVENT_HEADER + 3], &mut BytesMut::new()).unwrap();
        assert_eq!((&m.bytes[..], m.answerer, m.at), (&[1u8, 2, 3][..], None, Mono(7)));
        assert_eq!(m.resolver, "10.0.0.2:53".parse().unwrap());
        // A length field that claims more than the record holds is cut to the record.
        ev.captured = 400;
        let all = unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<DnsEvent>()) };
        assert_eq!(decode_dns(&all[..DNS_EVENT_HEADER + 2], &mut BytesMut::new()).unwrap().bytes, [1, 2][..]);
        assert!(decode_dns(&all[..DNS_EVENT_HEADER - 1], &mut BytesMut::new()).is_none());
    }

    #[test]
    fn messages_decoded_into_one_room_keep_their_own_bytes() {
        use observer_common::dns::{DNS_EVENT_HEADER, DnsEvent};
        let mut room = BytesMut::new();
        let mut record = |fill: u8, n: u16| {
            let mut ev: DnsEvent = unsafe { std::mem::zeroed() };
            ev.captured = n;
            ev.data[..usize::from(n)].fill(fill);
            // SAFETY: reading the bytes of a plain #[repr(C)] value.
            let all = unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<DnsEvent>()) };
            decode_dns(&all[..DNS_EVENT_HEADER + usize::from(n)], &mut room).unwrap().bytes
        };
        // Enough messages to fill the room and take more: each keeps its own bytes.
        let kept: Vec<(u8, Bytes)> = (0..400u16).map(|i| (i as u8, record(i as u8, 300 + i % 200))).collect();
        for (i, (fill, bytes)) in kept.iter().enumerate() {
            assert_eq!(bytes.len(), 300 + i % 200);
            assert!(bytes.iter().all(|b| b == fill), "message {i}");
        }
    }

    #[test]
    fn a_tls_record_holds_the_header_and_the_captured_bytes_and_unknown_kinds_are_refused() {
        use observer_common::tls::{TLS_EVENT_HEADER, TlsEvent, kind};
        let mut ev: TlsEvent = unsafe { std::mem::zeroed() };
        ev.ts_ns = 9;
        ev.client = Endpoint { addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], port: 40000, family: AF_INET };
        ev.server = Endpoint { addr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], port: 443, family: AF_INET };
        ev.kind = kind::DATA;
        ev.from_client = 1;
        ev.offset = 1400;
        ev.captured = 5000;
        ev.data[..4].copy_from_slice(&[22, 3, 1, 0]);
        // SAFETY: reading the bytes of a plain #[repr(C)] value.
        let all = unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<TlsEvent>()) };
        let c = decode_tls(&all[..TLS_EVENT_HEADER + 4]).unwrap();
        assert_eq!((c.kind, c.from_client, c.offset, c.at), (TlsKind::Data, true, 1400, Mono(9)));
        assert_eq!((c.bytes.as_slice(), c.server), (&[22u8, 3, 1, 0][..], "10.0.0.2:443".parse().unwrap()));
        assert!(decode_tls(&all[..TLS_EVENT_HEADER - 1]).is_none());
        ev.kind = 99;
        let all = unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<TlsEvent>()) };
        assert!(decode_tls(&all[..TLS_EVENT_HEADER]).is_none());
    }
}
