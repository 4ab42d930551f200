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

/// Where the kernel keeps what leads from a thread's file descriptor to its TCP socket's
/// addresses: member offsets from the running kernel's BTF, for the OpenSSL probes (they
/// see a `write(fd, …)` and need the connection). `enabled` 0: not known, not walked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockLayout {
    pub enabled: u32,
    /// task_struct.files, files_struct.fdt, fdtable.max_fds, fdtable.fd.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    /// file.private_data (a struct socket for a socket), socket.sk.
    pub file_private_data: u32,
    pub socket_sk: u32,
    /// In struct sock (its sock_common first): the family, the remote and local IPv4
    /// addresses, the remote port (network order), the local port (host order), and the
    /// IPv6 addresses.
    pub family: u32,
    pub daddr: u32,
    pub rcv_saddr: u32,
    pub dport: u32,
    pub num: u32,
    pub v6_daddr: u32,
    pub v6_rcv_saddr: u32,
    /// sock.sk_protocol, a plain u16 since 5.6 (`u32::MAX`: unknown; the raw socket
    /// tracepoints, which need it, came in 6.3).
    pub sk_protocol: u32,
}
