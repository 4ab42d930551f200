//! Where a tracepoint keeps its fields. Userspace reads the offsets from the tracefs `format`
//! file at start and hands them to the programs as read-only globals, so nothing is tied to
//! one kernel's struct layout.

/// Offset of a field that this tracepoint does not have.
pub const ABSENT: u16 = u16::MAX;

/// How a tracepoint stores its addresses.
pub mod addr_style {
    /// `sport`, `dport`, `family`, `saddr[4]`, `daddr[4]`, `saddr_v6[16]`, `daddr_v6[16]`,
    /// ports in host byte order.
    pub const SPLIT: u16 = 0;
    /// `saddr[28]` and `daddr[28]` hold a `sockaddr_in` or `sockaddr_in6` (family first, port
    /// in network byte order); `tcp:tcp_send_reset` since 6.10.
    pub const SOCKADDR: u16 = 1;
}

/// Field offsets of one tracepoint, in bytes from the start of its record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TpLayout {
    /// 1 when userspace filled this in and the programs may use it.
    pub enabled: u16,
    pub addr_style: u16,
    pub skaddr: u16,
    pub state: u16,
    pub oldstate: u16,
    pub newstate: u16,
    pub protocol: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
}

impl TpLayout {
    pub const DISABLED: TpLayout = TpLayout {
        enabled: 0,
        addr_style: addr_style::SPLIT,
        skaddr: ABSENT,
        state: ABSENT,
        oldstate: ABSENT,
        newstate: ABSENT,
        protocol: ABSENT,
        sport: ABSENT,
        dport: ABSENT,
        family: ABSENT,
        saddr: ABSENT,
        daddr: ABSENT,
        saddr_v6: ABSENT,
        daddr_v6: ABSENT,
    };
}
