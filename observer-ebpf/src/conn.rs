//! State kept per outgoing connection between tracepoints.

use observer_common::tcp::Endpoint;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Conn {
    pub start_ns: u64,
    pub dest: Endpoint,
    pub syn_retransmits: u32,
    /// 1 once SYN_SENT -> ESTABLISHED was seen.
    pub established: u32,
    pub pid: u32,
    pub comm: [u8; 16],
    /// 1 once an RST arrived while in SYN_SENT: the refusal, if sk_err cannot be read.
    pub rst_seen: u32,
    /// The error an error report (`inet_sk_error_report`) found on the socket in SYN_SENT:
    /// an ICMP error the application may read and clear before it closes.
    pub reported_error: i32,
}

