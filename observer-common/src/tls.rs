//! The TLS branch's records for userspace: the first bytes of each direction of a TLS flow
//! (ClientHello, ServerHello, certificates, alerts), and the flow's FIN and RST.

use crate::tcp::Endpoint;

/// Bytes of one direction of a flow copied to userspace, at most: a post-quantum ClientHello
/// spans two segments, and a TLS 1.2 certificate chain follows the ServerHello.
pub const DIRECTION_BUDGET: u32 = 8192;
/// Bytes copied from one packet, at most (a GSO packet may carry the whole budget).
pub const CHUNK_MAX: usize = 4096;

/// What a [`TlsEvent`] reports.
pub mod kind {
    /// `captured` bytes of the stream, starting at `offset`.
    pub const DATA: u8 = 0;
    /// The sender closed its direction (FIN).
    pub const FIN: u8 = 1;
    /// The sender reset the connection (RST).
    pub const RST: u8 = 2;
    /// The sender's first packet that starts with application data (not an encrypted
    /// alert): its side of the handshake is done.
    pub const APP: u8 = 3;
    /// The client's first payload on a connection to port 443 was not a TLS record.
    pub const NOT_TLS: u8 = 4;
}

/// One record in the TLS ring. A record holds [`TLS_EVENT_HEADER`] + `captured` bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsEvent {
    pub ts_ns: u64,
    /// The side that sent the ClientHello, and the side it was sent to.
    pub client: Endpoint,
    pub server: Endpoint,
    /// Where `data` starts in the sender's stream: bytes since its first record.
    pub offset: u32,
    /// The TCP payload's length in this packet (more than `captured` when cut).
    pub payload_len: u32,
    pub captured: u16,
    pub kind: u8,
    /// 1 when the client sent this packet.
    pub from_client: u8,
    pub ifindex: u32,
    pub data: [u8; CHUNK_MAX],
}

/// Bytes of a [`TlsEvent`] before its data.
pub const TLS_EVENT_HEADER: usize = core::mem::offset_of!(TlsEvent, data);
