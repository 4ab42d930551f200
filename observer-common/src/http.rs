//! The HTTP branch's records for userspace: the first bytes of each TCP payload that starts
//! like an HTTP/1.x request or status line (or the HTTP/2 preface), seen at TC; and the
//! plaintext of OpenSSL's reads and writes, seen by uprobes.

use crate::tcp::Endpoint;

/// Bytes of a payload copied, at most: a request line and the headers up to Host fit in it
/// on almost every client; a header block cut before its Host is counted as `unparsed`.
pub const HTTP_CAPTURE: usize = 512;

/// What an [`HttpEvent`] reports.
pub mod kind {
    /// A TCP payload that starts like a request or status line (at TC).
    pub const START: u8 = 0;
    /// The segment after a request whose header block did not end in its packet.
    pub const CONTINUES: u8 = 1;
    /// Plaintext that a process wrote with `SSL_write` (uprobe).
    pub const SSL_WRITE: u8 = 2;
    /// Plaintext that a process read with `SSL_read` (uretprobe).
    pub const SSL_READ: u8 = 3;
}

/// One record in the HTTP ring: [`HTTP_EVENT_HEADER`] + `captured` bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HttpEvent {
    pub ts_ns: u64,
    /// The sender and the receiver: at TC, the packet's; from a uprobe, the socket's, read
    /// by the kernel (family 0 when it could not be: userspace then finds the socket from
    /// `pid` and `fd`).
    pub src: Endpoint,
    pub dst: Endpoint,
    /// The TCP sequence number of the payload (TC), or the SSL object's address (uprobe).
    pub seq_or_ssl: u64,
    /// The payload's length in this packet or call (more than `captured` when cut).
    pub payload_len: u32,
    pub ifindex: u32,
    /// From a uprobe: the process and the socket it used (-1 when no syscall was seen yet).
    pub pid: u32,
    pub fd: i32,
    /// From a uprobe: the calling thread's command name.
    pub comm: [u8; 16],
    pub captured: u16,
    pub kind: u8,
    /// TC: the hook (`dns::DIRECTION_*`).
    pub direction: u8,
    pub _pad: u32,
    pub data: [u8; HTTP_CAPTURE],
}

/// Bytes of an [`HttpEvent`] before its data.
pub const HTTP_EVENT_HEADER: usize = core::mem::offset_of!(HttpEvent, data);
