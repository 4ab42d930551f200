//! TCP connect layer: per-destination counters, per-local-port counters and the connect
//! outcome event.

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// A remote endpoint. IPv4 addresses sit in the first 4 bytes of `addr`, the rest zero.
/// 4-byte aligned (it changes no layout: every Endpoint already sits at a multiple of 4) so
/// that the kernel programs copy it as five words, not byte by byte or through memcpy.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u16,
}

crate::counter_set! {
    /// Indexes into [`TcpCounters::c`].
    pub mod dest_counter {
        /// CLOSE -> SYN_SENT: an outgoing connect started.
        ATTEMPTS = "attempts",
        /// SYN_SENT -> ESTABLISHED.
        ESTABLISHED = "established",
        /// SYN answered by RST (ECONNREFUSED).
        REFUSED = "refused",
        /// SYN retries exhausted (ETIMEDOUT).
        TIMED_OUT = "timed_out",
        /// EHOSTUNREACH / ENETUNREACH (ICMP or a soft error at timeout).
        UNREACHABLE = "unreachable",
        /// Any other errno while in SYN_SENT.
        OTHER_ERROR = "other_errors",
        /// The application closed the socket before the handshake finished (for example a
        /// client-side connect timeout shorter than the kernel's SYN retries).
        ABORTED = "aborted",
        /// SYN retransmits (tcp_retransmit_skb in SYN_SENT).
        SYN_RETRANSMITS = "syn_retransmits",
        /// RST received on a connection past SYN_SENT.
        RESETS_RECEIVED = "resets_received",
        /// RST sent to this destination.
        RESETS_SENT = "resets_sent",
        /// Retransmits of anything but the SYN.
        DATA_RETRANSMITS = "data_retransmits",
        /// Aborted after at least one SYN retransmit: the application waited a second or
        /// more and gave up (a client-side connect timeout). A failure, unlike an abort
        /// within the first RTO (a cancelled connect, happy eyeballs).
        GAVE_UP = "gave_up",
    }
}

/// Counters per remote endpoint of outgoing connections, since the programs were loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpCounters {
    pub c: [u64; dest_counter::COUNT],
}

impl TcpCounters {
    pub const ZERO: TcpCounters = TcpCounters { c: [0; dest_counter::COUNT] };
}

crate::counter_set! {
    /// Indexes into [`PortCounters::c`]: the server role, keyed by local port.
    pub mod port_counter {
        SYNACK_RETRANSMITS = "synack_retransmits",
        RESETS_SENT = "resets_sent",
        RESETS_RECEIVED = "resets_received",
        DATA_RETRANSMITS = "data_retransmits",
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortCounters {
    pub c: [u64; port_counter::COUNT],
}

impl PortCounters {
    pub const ZERO: PortCounters = PortCounters { c: [0; port_counter::COUNT] };
}

/// How an outgoing connect ended.
pub mod outcome {
    pub const ESTABLISHED: u32 = 0;
    pub const REFUSED: u32 = 1;
    pub const TIMED_OUT: u32 = 2;
    pub const UNREACHABLE: u32 = 3;
    pub const OTHER_ERROR: u32 = 4;
    pub const ABORTED: u32 = 5;
}

/// errno values the classifier needs (Linux, all architectures observer targets).
pub mod errno {
    pub const ENETUNREACH: i32 = 101;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTUNREACH: i32 = 113;
}

/// Map an errno seen while in SYN_SENT to an outcome and the counter it bumps.
pub const fn classify_connect_error(err: i32) -> (u32, usize) {
    match err {
        0 => (outcome::ABORTED, dest_counter::ABORTED),
        errno::ECONNREFUSED => (outcome::REFUSED, dest_counter::REFUSED),
        errno::ETIMEDOUT => (outcome::TIMED_OUT, dest_counter::TIMED_OUT),
        errno::EHOSTUNREACH | errno::ENETUNREACH => (outcome::UNREACHABLE, dest_counter::UNREACHABLE),
        _ => (outcome::OTHER_ERROR, dest_counter::OTHER_ERROR),
    }
}

/// One finished connect attempt (established or failed), sent through the connect ring
/// buffer. Userspace turns these into latency histograms and evidence; the counters above
/// stay exact even when these are dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectEvent {
    /// Kernel monotonic time when the attempt ended.
    pub ts_ns: u64,
    /// SYN_SENT to the end, in nanoseconds.
    pub latency_ns: u64,
    pub dest: Endpoint,
    pub outcome: u32,
    /// errno reported by the kernel (0 when none).
    pub error: i32,
    pub syn_retransmits: u32,
    /// Thread group id of the process that called connect().
    pub pid: u32,
    pub comm: [u8; 16],
    /// The local port of an established connect (0 for a failed one): with `dest`, the
    /// connection's 4-tuple, which the TLS layer joins on.
    pub local_port: u16,
    /// Explicit tail padding: the verifier rejects copying uninitialised stack bytes.
    pub _pad: u16,
}
