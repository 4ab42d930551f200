//! Test peers that Debian has no package for.
//!
//!   peer rst-server ADDR:PORT COUNT   accept COUNT connections; on each, read the request,
//!                                     then close with SO_LINGER 0 so the kernel sends an RST.
//!   peer dns-delay LISTEN UPSTREAM MS  a UDP forwarder that holds each query MS milliseconds
//!                                     before passing it to a real resolver (netem is not
//!                                     available here), and relays the answer back.
//!   peer dns-junk DEST COUNT          send COUNT hostile DNS messages (12-byte header, then a
//!                                     compression loop, a bad label, a name over 255 bytes…).
//!   peer dns-flood DEST QPS SECS      send well-formed queries at QPS for SECS; print how many.
//!   peer dns-echo LISTEN              answer every query at once (QR set, NOERROR, no records).
//!   peer dns-flood-hbh DEST QPS SECS  dns-flood over IPv6 with a hop-by-hop options header.
//!   peer dns-blast DEST SECS          send well-formed queries as fast as one thread can for
//!                                     SECS; print how many per second.
//!   peer dns-raw-vlan IFACE SRC DST TAGS COUNT
//!                                     write COUNT DNS queries SRC -> DST:53 as raw Ethernet
//!                                     frames on IFACE with TAGS (1: 802.1Q, 2: QinQ) VLAN tags
//!                                     inline, as a VM or a raw socket does.
//!   peer tcp-hold LISTEN              accept TCP connections and never answer (a TLS server
//!                                     that stalls), until killed.
//!   peer udp-hold LISTEN              bind a UDP socket and never read it (its buffer fills, and
//!                                     the kernel drops what comes next), until killed.
//!   peer tls-truncated LISTEN         accept TLS clients, read their ClientHello, answer with a
//!                                     record header claiming 16 KiB and 100 bytes of it, close.
//!   peer tls-big-hello DEST SNI       send a ~3 KiB TLS 1.3 ClientHello for SNI in two writes
//!                                     50 ms apart (two segments), print what came back.
//!   peer http-slow LISTEN MS          an HTTP/1.1 upstream that answers every request 200 after
//!                                     MS milliseconds (keep-alive), until killed.
//!   peer http-split DEST HOST         send one request in two segments 100 ms apart (the Host
//!                                     header in the second), print the status line.
//!   peer http-garbage DEST            send a request line followed by binary junk, then a
//!                                     request whose header block is larger than 512 bytes
//!                                     before its Host, each on its own connection.
//!   peer http-load DEST SECS          send requests one after another on one keep-alive
//!                                     connection for SECS; print requests per second.
//!   peer write-loop SECS              write one byte to /dev/null as fast as one thread can
//!                                     for SECS; print writes per second.
//!   peer tun-delay IFACE MS           a delay element (this kernel has no netem): create tun
//!                                     device IFACE, and write every packet read from it back
//!                                     into it MS milliseconds later, until killed. Route
//!                                     traffic into IFACE (policy routing on the way in); what
//!                                     comes back out of it is routed on as usual.
//!   peer tc-drop IFACE ingress|egress  stand in for a CNI: attach a TCX program that drops
//!                                     every packet on IFACE's hook, until killed. It goes
//!                                     first in the chain, as a CNI that attaches later would.

use std::{
    io::Read,
    net::{SocketAddr, TcpListener, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use socket2::Socket;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("rst-server") => rst_server(&args[2], args[3].parse().expect("COUNT")),
        Some("dns-delay") => dns_delay(&args[2], &args[3], args[4].parse().expect("MS")),
        Some("dns-junk") => dns_junk(&args[2], args[3].parse().expect("COUNT")),
        Some("dns-flood") => dns_flood(&args[2], args[3].parse().expect("QPS"), args[4].parse().expect("SECS")),
        Some("dns-echo") => dns_echo(&args[2]),
        Some("connect-spread") => connect_spread(
            args[2].parse().expect("BASE"),
            args[3].parse().expect("N"),
            args[4].parse().expect("RATE"),
            args[5].parse().expect("SECS"),
        ),
        Some("dns-names") => dns_names(&args[2], args[3].parse().expect("N"), args[4].parse().expect("RATE"), args[5].parse().expect("SECS")),
        Some("connect-burst") => connect_burst(&args[2], args[3].parse().expect("COUNT"), args[4].parse().expect("THREADS")),
        Some("dns-blast") => dns_blast(&args[2], args[3].parse().expect("SECS")),
        Some("dns-flood-hbh") => {
            dns_flood_with(&args[2], args[3].parse().expect("QPS"), args[4].parse().expect("SECS"), set_hop_by_hop)
        }
        Some("dns-raw-vlan") => dns_raw_vlan(
            &args[2],
            args[3].parse().expect("SRC"),
            args[4].parse().expect("DST"),
            args[5].parse().expect("TAGS"),
            args[6].parse().expect("COUNT"),
        ),
        Some("tc-drop") => tc_drop(&args[2], &args[3]),
        Some("tun-delay") => tun_delay(&args[2], args[3].parse().expect("MS")),
        Some("http-slow") => http_slow(&args[2], args[3].parse().expect("MS")),
        Some("http-split") => http_split(&args[2], &args[3]),
        Some("http-garbage") => http_garbage(&args[2]),
        Some("http-load") => http_load(&args[2], args[3].parse().expect("SECS")),
        Some("write-loop") => write_loop(args[2].parse().expect("SECS")),
        Some("tcp-hold") => tcp_hold(&args[2]),
        Some("udp-hold") => udp_hold(&args[2]),
        Some("tls-truncated") => tls_truncated(&args[2]),
        Some("tls-big-hello") => tls_big_hello(&args[2], &args[3]),
        _ => {
            eprintln!("usage: peer rst-server|dns-delay|dns-junk|dns-flood|dns-echo …");
            std::process::exit(2);
        }
    }
}

fn rst_server(addr: &str, count: usize) {
    let addr: SocketAddr = addr.parse().expect("ADDR:PORT");
    let listener = TcpListener::bind(addr).expect("bind");
    for stream in listener.incoming().take(count) {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf);
        let sock = Socket::from(stream);
        sock.set_linger(Some(Duration::ZERO)).expect("SO_LINGER");
        drop(sock);
    }
}

fn dns_delay(listen: &str, upstream: &str, ms: u64) {
    let sock = UdpSocket::bind(listen).expect("bind");
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM");
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf) else { continue };
        let query = buf[..n].to_vec();
        let reply_to = sock.try_clone().expect("clone socket");
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(ms));
            let bind = if upstream.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let up = UdpSocket::bind(bind).expect("bind upstream socket");
            up.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
            if up.send_to(&query, upstream).is_err() {
                return;
            }
            let mut answer = [0u8; 4096];
            if let Ok((m, _)) = up.recv_from(&mut answer) {
                let _ = reply_to.send_to(&answer[..m], client);
            }
        });
    }
}

/// Hostile DNS messages, each at least a full header so that the kernel passes them on.
fn junk(i: usize) -> Vec<u8> {
    let id = (i as u16).to_be_bytes();
    let header = [id[0], id[1], 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let tail: Vec<u8> = match i % 5 {
        0 => vec![0xc0, 12, 0, 1, 0, 1],
        1 => vec![1, b'a', 0xc0, 12, 0, 1, 0, 1],
        2 => {
            let mut v = Vec::new();
            for _ in 0..5 {
                v.push(63);
                v.extend([b'a'; 63]);
            }
            v.extend([0, 0, 1, 0, 1]);
            v
        }
        3 => vec![70, b'a', b'b', 0, 0, 1, 0, 1],
        _ => vec![],
    };
    [&header[..], &tail].concat()
}

fn dns_junk(dest: &str, count: usize) {
    let dest: SocketAddr = dest.parse().expect("DEST");
    let sock = UdpSocket::bind(if dest.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).expect("bind");
    for i in 0..count {
        // Errors (ICMP port unreachable reported on the next send) are expected and ignored.
        let _ = sock.send_to(&junk(i), dest);
    }
}

fn query(id: u16) -> Vec<u8> {
    let idb = id.to_be_bytes();
    let mut q = vec![idb[0], idb[1], 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["bench", "test"] {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

fn dns_flood(dest: &str, qps: u64, secs: u64) {
    dns_flood_with(dest, qps, secs, |_| {});
}

/// Every datagram from this socket carries an 8-byte hop-by-hop header (one PadN option).
fn set_hop_by_hop(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    const IPV6_HOPOPTS: libc::c_int = 54;
    let opts: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
    // SAFETY: a valid socket and an 8-byte buffer.
    let rc = unsafe {
        libc::setsockopt(sock.as_raw_fd(), libc::IPPROTO_IPV6, IPV6_HOPOPTS, opts.as_ptr().cast(), opts.len() as libc::socklen_t)
    };
    assert_eq!(rc, 0, "IPV6_HOPOPTS: {}", std::io::Error::last_os_error());
}

fn dns_flood_with(dest: &str, qps: u64, secs: u64, setup: impl Fn(&UdpSocket)) {
    let dest: SocketAddr = dest.parse().expect("DEST");
    let sock = UdpSocket::bind(if dest.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).expect("bind");
    setup(&sock);
    let start = Instant::now();
    let total = qps * secs;
    let mut sent: u64 = 0;
    let mut failed: u64 = 0;
    while sent + failed < total {
        // Pace in 1 ms slices: send what is due, then sleep.
        let due = (start.elapsed().as_secs_f64() * qps as f64) as u64;
        while sent + failed < due.min(total) {
            match sock.send_to(&query((sent + failed) as u16), dest) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    println!("{sent} {failed} {:.3}", start.elapsed().as_secs_f64());
}

/// COUNT connects to DEST from THREADS threads at once, each closed at once. Prints how
/// many were established and how many failed.
fn connect_burst(dest: &str, count: u64, threads: u64) {
    let dest: SocketAddr = dest.parse().expect("DEST");
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, 0u64);
                for _ in 0..count / threads {
                    match std::net::TcpStream::connect_timeout(&dest, Duration::from_secs(2)) {
                        Ok(_) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (ok, failed) = workers.into_iter().map(|w| w.join().expect("worker")).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    println!("{ok} {failed}");
}

/// RATE connects a second for SECS, round-robin over N addresses from BASE up (port 80),
/// from two threads. Prints connects made, refused and other failures.
fn connect_spread(base: std::net::Ipv4Addr, n: u32, rate: u64, secs: u64) {
    let base = u32::from(base);
    let workers: Vec<_> = (0..2u32)
        .map(|w| {
            thread::spawn(move || {
                let start = Instant::now();
                let total = rate / 2 * secs;
                let (mut done, mut refused, mut other) = (0u64, 0u64, 0u64);
                let mut i = w;
                while done < total {
                    let due = (start.elapsed().as_secs_f64() * (rate / 2) as f64) as u64;
                    while done < due.min(total) {
                        let addr = SocketAddr::from((std::net::Ipv4Addr::from(base + i % n), 80));
                        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
                            _ => other += 1,
                        }
                        done += 1;
                        i += 2;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                (done, refused, other)
            })
        })
        .collect();
    let t = workers.into_iter().map(|w| w.join().expect("worker")).fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    println!("{} {} {}", t.0, t.1, t.2);
}

/// RATE queries a second for SECS to DEST, for the names n0.scale.test … n(N-1).scale.test
/// in turn. Prints queries sent.
fn dns_names(dest: &str, n: u64, rate: u64, secs: u64) {
    let dest: SocketAddr = dest.parse().expect("DEST");
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    let start = Instant::now();
    let total = rate * secs;
    let mut sent = 0u64;
    let mut buf = [0u8; 512];
    sock.set_nonblocking(true).expect("nonblocking");
    while sent < total {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due.min(total) {
            let id = (sent as u16).to_be_bytes();
            let mut q = vec![id[0], id[1], 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
            for label in [format!("n{}", sent % n).as_str(), "scale", "test"] {
                q.push(label.len() as u8);
                q.extend(label.as_bytes());
            }
            q.extend([0, 0, 1, 0, 1]);
            let _ = sock.send_to(&q, dest);
            sent += 1;
        }
        // Drain the answers so that the socket's queue does not fill.
        while sock.recv_from(&mut buf).is_ok() {}
        thread::sleep(Duration::from_millis(1));
    }
    println!("{sent}");
}

fn dns_echo(listen: &str) {
    let sock = UdpSocket::bind(listen).expect("bind");
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
        if n < 12 {
            continue;
        }
        buf[2] |= 0x80;
        let _ = sock.send_to(&buf[..n], from);
    }
}

/// One's-complement sum for the IPv4 header checksum.
fn ip_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn dns_raw_vlan(iface: &str, src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, tags: usize, count: u16) {
    let mac_text = std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).expect("interface MAC");
    let mac: Vec<u8> = mac_text.trim().split(':').map(|h| u8::from_str_radix(h, 16).expect("MAC")).collect();
    let ifindex: i32 = std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex")).expect("ifindex").trim().parse().expect("ifindex");
    // SAFETY: plain socket calls; the fd is closed at the end.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex;
    addr.sll_halen = 6;
    for id in 0..count {
        let dns = query(id);
        let mut frame = vec![0xff; 6];
        frame.extend(&mac);
        // Outer 802.1ad tag for QinQ, then 802.1Q.
        if tags >= 2 {
            frame.extend([0x88, 0xa8, 0x00, 200]);
        }
        if tags >= 1 {
            frame.extend([0x81, 0x00, 0x00, 100]);
        }
        frame.extend([0x08, 0x00]);
        let total = (20 + 8 + dns.len()) as u16;
        let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip.extend(src.octets());
        ip.extend(dst.octets());
        let sum = ip_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend(ip);
        let udp_len = (8 + dns.len()) as u16;
        // A source port per tag depth: the same port, id and question within 100 ms would be
        // one message seen twice.
        frame.extend((40000 + tags as u16).to_be_bytes());
        frame.extend(53u16.to_be_bytes());
        frame.extend(udp_len.to_be_bytes());
        frame.extend([0, 0]); // no UDP checksum (allowed over IPv4)
        frame.extend(dns);
        // SAFETY: a valid buffer and address.
        let sent = unsafe {
            libc::sendto(fd, frame.as_ptr().cast(), frame.len(), 0, (&raw const addr).cast(), size_of::<libc::sockaddr_ll>() as u32)
        };
        assert!(sent > 0, "sendto: {}", std::io::Error::last_os_error());
    }
    unsafe { libc::close(fd) };
    println!("{count}");
}

fn dns_blast(dest: &str, secs: f64) {
    let dest: SocketAddr = dest.parse().expect("DEST");
    let sock = UdpSocket::bind(if dest.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).expect("bind");
    let start = Instant::now();
    let mut sent: u64 = 0;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..256 {
            if sock.send_to(&query(sent as u16), dest).is_ok() {
                sent += 1;
            }
        }
    }
    println!("{:.0}", sent as f64 / start.elapsed().as_secs_f64());
}

/// A TCX program that returns TC_ACT_SHOT for every packet, loaded and linked with bpf(2)
/// directly (two instructions need no object file); the link lives as long as this process.
fn tc_drop(iface: &str, hook: &str) {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    const BPF_TCX_INGRESS: u32 = 46;
    const BPF_TCX_EGRESS: u32 = 47;
    const BPF_F_BEFORE: u32 = 1 << 3;
    const TC_ACT_SHOT: u64 = 2;
    let attach_type = match hook {
        "ingress" => BPF_TCX_INGRESS,
        "egress" => BPF_TCX_EGRESS,
        _ => panic!("HOOK is ingress or egress"),
    };
    let ifindex: u32 = std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))
        .expect("IFACE exists")
        .trim()
        .parse()
        .expect("ifindex");
    // r0 = TC_ACT_SHOT; exit
    let insns: [u64; 2] = [0xb7 | (TC_ACT_SHOT << 32), 0x95];
    let license = c"GPL";
    // union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log fields,
    // kern_version, prog_flags, prog_name[16], prog_ifindex, expected_attach_type.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SCHED_CLS.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..55].copy_from_slice(b"cni_sim");
    attr[68..72].copy_from_slice(&attach_type.to_ne_bytes());
    // SAFETY: bpf(2) reads `attr` and the buffers it points to, which outlive the call.
    let prog = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
    assert!(prog >= 0, "BPF_PROG_LOAD: {}", std::io::Error::last_os_error());
    // BPF_LINK_CREATE: prog_fd, target_ifindex, attach_type, flags, then tcx's relative_fd.
    let mut attr = [0u8; 64];
    attr[0..4].copy_from_slice(&(prog as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    attr[8..12].copy_from_slice(&attach_type.to_ne_bytes());
    attr[12..16].copy_from_slice(&BPF_F_BEFORE.to_ne_bytes());
    // SAFETY: as above.
    let link = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_CREATE, attr.as_ptr(), attr.len()) };
    assert!(link >= 0, "BPF_LINK_CREATE: {}", std::io::Error::last_os_error());
    println!("dropping every packet on {iface} {hook}");
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// A UDP socket that never reads: once its buffer is full, the kernel drops what arrives
/// (SOCKET_RCVBUFF).
fn udp_hold(addr: &str) {
    let _sock = UdpSocket::bind(addr).expect("bind");
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

fn tcp_hold(addr: &str) {
    let listener = TcpListener::bind(addr).expect("bind");
    let mut held = Vec::new();
    for stream in listener.incoming().flatten() {
        held.push(stream);
    }
}

/// A ClientHello record: TLS 1.3 offered, an SNI, and a padding extension that makes it
/// longer than one segment, as a post-quantum key share does.
fn big_client_hello(sni: &str, pad: usize) -> Vec<u8> {
    fn ext(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut e = kind.to_be_bytes().to_vec();
        e.extend_from_slice(&(data.len() as u16).to_be_bytes());
        e.extend_from_slice(data);
        e
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    let mut name = vec![0];
    name.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    name.extend_from_slice(sni.as_bytes());
    let mut list = (name.len() as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&name);
    let mut exts = ext(0x0000, &list);
    exts.extend(ext(0x002b, &[2, 3, 4]));
    exts.extend(ext(0x000a, &[0, 2, 0, 0x1d]));
    exts.extend(ext(0x000d, &[0, 2, 4, 3]));
    exts.extend(ext(0x0015, &vec![0; pad]));
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let n = body.len() as u32;
    let mut hs = vec![1, (n >> 16) as u8, (n >> 8) as u8, n as u8];
    hs.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

fn tls_big_hello(dest: &str, sni: &str) {
    use std::io::Write;
    let dest: SocketAddr = dest.parse().expect("DEST");
    let mut s = std::net::TcpStream::connect_timeout(&dest, Duration::from_secs(2)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let hello = big_client_hello(sni, 3000);
    let (a, b) = hello.split_at(1000);
    s.write_all(a).expect("write");
    thread::sleep(Duration::from_millis(50));
    s.write_all(b).expect("write");
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    println!("{} bytes sent, {n} bytes back", hello.len());
}

fn tls_truncated(addr: &str) {
    use std::io::Write;
    let listener = TcpListener::bind(addr).expect("bind");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        // The whole ClientHello record first, however many segments it came in.
        let mut header = [0u8; 5];
        if stream.read_exact(&mut header).is_err() {
            continue;
        }
        let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
        let _ = stream.read_exact(&mut body);
        let mut cut = vec![22, 3, 3, 0x40, 0x00];
        cut.extend_from_slice(&[2; 100]);
        let _ = stream.write_all(&cut);
        // Dropping the stream closes it with a FIN.
    }
}

/// Read up to the end of a request's header block; false at EOF.
fn read_head(s: &mut std::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return false,
        }
    }
    true
}

fn http_slow(addr: &str, ms: u64) {
    use std::io::Write;
    let listener = TcpListener::bind(addr).expect("bind");
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let mut s = stream;
            while read_head(&mut s) {
                thread::sleep(Duration::from_millis(ms));
                if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                    return;
                }
            }
        });
    }
}

fn http_split(dest: &str, host: &str) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(dest).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(b"GET /split/path?q=1 HTTP/1.1\r\nUser-Agent: observer-test\r\n").expect("write");
    thread::sleep(Duration::from_millis(100));
    s.write_all(format!("Host: {host}\r\nConnection: close\r\n\r\n").as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    println!("{}", out.lines().next().unwrap_or(""));
}

fn http_garbage(dest: &str) {
    use std::io::Write;
    let mut junk = b"GET /\x00\x01".to_vec();
    junk.extend((0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    junk.extend_from_slice(b"\r\n\r\n");
    let mut big = b"GET /big HTTP/1.1\r\nCookie: ".to_vec();
    big.extend(std::iter::repeat_n(b'c', 700));
    big.extend_from_slice(b"\r\nHost: big.test\r\nConnection: close\r\n\r\n");
    for payload in [junk, big] {
        let mut s = std::net::TcpStream::connect(dest).expect("connect");
        s.write_all(&payload).expect("write");
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        println!("{}", String::from_utf8_lossy(&out).lines().next().unwrap_or(""));
    }
}

fn http_load(dest: &str, secs: u64) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(dest).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let req = b"GET /load HTTP/1.1\r\nHost: load.test\r\n\r\n";
    let expect = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".len();
    let mut buf = vec![0u8; expect];
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        s.write_all(req).expect("write");
        s.read_exact(&mut buf).expect("read the response");
        n += 1;
    }
    println!("{:.0}", n as f64 / start.elapsed().as_secs_f64());
}

fn write_loop(secs: u64) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open("/dev/null").expect("/dev/null");
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        for _ in 0..1000 {
            f.write_all(b"x").expect("write");
        }
        n += 1000;
    }
    println!("{:.0}", n as f64 / start.elapsed().as_secs_f64());
}

/// The tun device's fd, created with IFF_TUN | IFF_NO_PI (raw IP packets).
fn tun_open(name: &str) -> std::fs::File {
    use std::os::fd::AsRawFd;
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    let file = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").expect("open /dev/net/tun");
    let mut req = [0u8; 40];
    req[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as u16;
    req[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads an ifreq (40 bytes) from the pointer.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, req.as_mut_ptr()) };
    assert_eq!(rc, 0, "TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    file
}

fn tun_delay(name: &str, ms: u64) {
    use std::io::Write;
    let mut reader = tun_open(name);
    let mut writer = reader.try_clone().expect("dup the tun fd");
    let delay = Duration::from_millis(ms);
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        // Packets leave in arrival order, each `delay` after it came in.
        for (at, packet) in rx {
            let due = at + delay;
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            let _ = writer.write(&packet);
        }
    });
    let mut buf = vec![0u8; 65536];
    loop {
        match reader.read(&mut buf) {
            Ok(n) if n > 0 => {
                if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("reading {name}: {e}"),
        }
    }
}
