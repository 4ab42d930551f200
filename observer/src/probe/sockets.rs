//! What the kernel's HTTP records leave to userspace: whether a packet's receiver is this
//! host, and, for OpenSSL plaintext, which connection and process a (pid, fd) is. The socket
//! is found through `/proc/PID/fd` and the process's own `/proc/PID/net/tcp{,6}` (its network
//! namespace, so containers resolve too).

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use crate::events::{HttpChunk, HttpKind};

/// Entries kept per cache before it is cleared (processes and sockets come and go).
const MAX_CACHED: usize = 8192;

#[derive(Debug, Default)]
pub struct HttpResolver {
    proc: PathBuf,
    local: HashSet<IpAddr>,
    /// (pid, fd) -> (socket inode, local, remote).
    sockets: HashMap<(u32, i32), (u64, SocketAddr, SocketAddr)>,
    /// (pid, SSL object) -> the fd its last syscall used.
    ssl_fds: HashMap<(u32, u64), i32>,
    /// (pid, SSL object) -> (local, remote), from calls whose socket the kernel read: a read
    /// served from OpenSSL's buffer makes no syscall and has none of its own.
    ssl_addrs: HashMap<(u32, u64), (SocketAddr, SocketAddr)>,
    comms: HashMap<u32, String>,
    /// OpenSSL plaintext whose socket could not be found.
    pub unresolved: u64,
}

impl HttpResolver {
    pub fn new(proc: PathBuf) -> HttpResolver {
        let mut r = HttpResolver { proc, ..HttpResolver::default() };
        r.refresh_local();
        r
    }

    /// Re-read this host's addresses (once per interval).
    /// An address of this network namespace.
    pub fn is_local(&self, ip: &IpAddr) -> bool {
        self.local.contains(ip)
    }

    pub fn refresh_local(&mut self) {
        self.local = local_addresses();
    }

    pub fn fill(&mut self, c: &mut HttpChunk) {
        match c.kind {
            HttpKind::Start | HttpKind::Continues => {
                c.dst_is_local = c.dst.is_some_and(|d| self.local.contains(&d.ip()));
            }
            HttpKind::SslWrite | HttpKind::SslRead => {
                // (sender, receiver) <-> (local, remote): a process writes from its end.
                let write = c.kind == HttpKind::SslWrite;
                let key = (c.pid, c.ssl);
                let (local, remote) = match (c.src, c.dst) {
                    // The kernel read the socket's addresses: remember them for the SSL
                    // object, whose reads from OpenSSL's buffer make no send or receive.
                    (Some(src), Some(dst)) => {
                        let pair = if write { (src, dst) } else { (dst, src) };
                        if self.ssl_addrs.len() >= MAX_CACHED {
                            self.ssl_addrs.clear();
                        }
                        self.ssl_addrs.insert(key, pair);
                        pair
                    }
                    _ => match self.ssl_addrs.get(&key).copied().or_else(|| self.through_proc(c)) {
                        Some(pair) => pair,
                        None => {
                            self.unresolved += 1;
                            return;
                        }
                    },
                };
                (c.src, c.dst) = if write { (Some(local), Some(remote)) } else { (Some(remote), Some(local)) };
                if c.process.is_none() {
                    c.process = Some(format!("{}[{}]", self.comm(c.pid), c.pid));
                }
            }
        }
    }

    /// Without the kernel's addresses: the call's fd (or the one its SSL object used last),
    /// through /proc.
    fn through_proc(&mut self, c: &HttpChunk) -> Option<(SocketAddr, SocketAddr)> {
        let fd = if c.fd >= 0 {
            if self.ssl_fds.len() >= MAX_CACHED {
                self.ssl_fds.clear();
            }
            self.ssl_fds.insert((c.pid, c.ssl), c.fd);
            c.fd
        } else {
            *self.ssl_fds.get(&(c.pid, c.ssl))?
        };
        self.socket(c.pid, fd)
    }

    fn comm(&mut self, pid: u32) -> String {
        if self.comms.len() >= MAX_CACHED {
            self.comms.clear();
        }
        let proc = &self.proc;
        self.comms
            .entry(pid)
            .or_insert_with(|| {
                std::fs::read_to_string(proc.join(pid.to_string()).join("comm")).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "?".to_owned())
            })
            .clone()
    }

    fn socket(&mut self, pid: u32, fd: i32) -> Option<(SocketAddr, SocketAddr)> {
        let dir = self.proc.join(pid.to_string());
        let link = std::fs::read_link(dir.join("fd").join(fd.to_string())).ok()?;
        let inode: u64 = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()?;
        if let Some((i, l, r)) = self.sockets.get(&(pid, fd))
            && *i == inode
        {
            return Some((*l, *r));
        }
        let found = ["tcp", "tcp6"].iter().find_map(|f| {
            let text = std::fs::read_to_string(dir.join("net").join(f)).ok()?;
            find_inode(&text, inode)
        })?;
        if self.sockets.len() >= MAX_CACHED {
            self.sockets.clear();
        }
        self.sockets.insert((pid, fd), (inode, found.0, found.1));
        Some(found)
    }
}

/// The local and remote address of the socket with this inode in a `/proc/net/tcp{,6}` text.
pub fn find_inode(text: &str, inode: u64) -> Option<(SocketAddr, SocketAddr)> {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[9].parse::<u64>().ok() != Some(inode) {
            continue;
        }
        return Some((proc_addr(f[1])?, proc_addr(f[2])?));
    }
    None
}

/// "0100007F:1F90" (IPv4) or 32 hex digits and a port (IPv6): words in host byte order.
fn proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<u32>> = (0..ip.len() / 8).map(|i| ip.get(i * 8..i * 8 + 8).and_then(|w| u32::from_str_radix(w, 16).ok())).collect();
    let words = words?;
    let ip = match words.as_slice() {
        [a] => IpAddr::V4(Ipv4Addr::from(a.to_ne_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Every address on this network namespace's interfaces.
fn local_addresses() -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below; each entry is read only while it lives.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut p = head;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.insert(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.insert(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_without_addresses_takes_those_its_ssl_object_had_and_each_kind_is_oriented() {
        let mut r = HttpResolver { proc: "/nonexistent".into(), ..HttpResolver::default() };
        let (local, remote): (SocketAddr, SocketAddr) = ("10.0.0.5:443".parse().unwrap(), "10.0.0.10:41000".parse().unwrap());
        // A server's read of a request: the kernel read the socket (sender first).
        let mut read = HttpChunk { ssl: 7, pid: 42, kind: HttpKind::SslRead, ..HttpChunk::at_tc(0, "10.0.0.10:41000", "10.0.0.5:443", b"GET", false) };
        read.process = Some("nginx[42]".into());
        r.fill(&mut read);
        assert_eq!((read.src, read.dst), (Some(remote), Some(local)));
        // Its write of the response, served with no send seen: the SSL object's addresses.
        let mut write = HttpChunk { src: None, dst: None, kind: HttpKind::SslWrite, ..read.clone() };
        r.fill(&mut write);
        assert_eq!((write.src, write.dst, r.unresolved), (Some(local), Some(remote), 0));
        // Another SSL object, nothing known and no fd: unresolved, counted.
        let mut other = HttpChunk { ssl: 8, ..write.clone() };
        other.src = None;
        other.dst = None;
        r.fill(&mut other);
        assert_eq!((other.src, r.unresolved), (None, 1));
    }

    #[test]
    fn sockets_by_inode_from_proc_net_tcp() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
                  0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n   \
                  1: 0500000A:C350 0900000A:2328 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(find_inode(v4, 777), Some(("10.0.0.5:50000".parse().unwrap(), "10.0.0.9:9000".parse().unwrap())));
        assert_eq!(find_inode(v4, 4242).unwrap().0, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(find_inode(v4, 1), None);
        let v6 = "header\n   0: 00000000000000000000000001000000:01BB 0000000000000000FFFF00000100007F:D431 01 0:0 0:0 0 0 0 99 1\n";
        let (l, r) = find_inode(v6, 99).unwrap();
        assert_eq!(l, "[::1]:443".parse().unwrap());
        assert_eq!(r, "[::ffff:127.0.0.1]:54321".parse().unwrap());
        assert_eq!(find_inode("x\n 0: zz:zz 00:00 01 a b c d e 5\n", 5), None);
    }
}
