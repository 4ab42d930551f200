//! The busy-host traffic generator: what a healthy production host does all day, at
//! realistic rates, so that the verdicts can be shown to stay quiet on it (and faults
//! injected on top of it to still be found).
//!
//!   busy client SECS NAME WEB LB BLACKHOLE RESOLVER
//!       from the client namespace, for SECS seconds, every behaviour below at its rate:
//!       - getaddrinfo(NAME) (A and AAAA, through the namespace's search list, ndots:5), every
//!         500 ms: 3 search-list NXDOMAINs per family, then the answer, and AAAA NODATA;
//!       - a happy-eyeballs connect to BLACKHOLE cancelled after 150 ms (before the first SYN
//!         retransmit), every 2 s;
//!       - an HTTP keep-alive connection to WEB: two requests, then idle until the server
//!         closes it (nginx's keepalive_timeout), every 2 s;
//!       - a request to WEB closed with its response unread (the kernel sends an RST), every
//!         1 s;
//!       - a health check (GET / with Connection: close) to WEB, every 1 s;
//!       - a short connection to LB (a request line, a one-line answer), every 300 ms; the
//!         LB resets one in 30 mid-stream, as a load balancer does at shutdown;
//!       - once, 20 s in: one DNS query to RESOLVER from UDP port 20999 (no lookup draws it:
//!         it is below the ephemeral ports), whose answer the
//!         server side drops (one unanswered query in about a thousand).
//!       Prints what it did, one count per behaviour.
//!   busy lb LISTEN
//!       the load balancer: answers each request line with "OK", and resets every 30th
//!       connection with SO_LINGER 0 instead of answering, until killed.
//!   busy scan TARGET SECS
//!       a port scan arriving at TARGET: every 10 s, raw SYNs (no socket: nothing this
//!       kernel's TCP tracepoints would count as a connect) to 20 closed ports.
//!
//! The long-lived bulk transfer (iperf3) and the occasional single packet loss on it (nft)
//! are set up by the test.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("client") if args.len() == 8 => client(args[2].parse().expect("SECS"), &args[3], &args[4], &args[5], &args[6], &args[7]),
        Some("lb") => lb(&args[2]),
        Some("scan") => scan(args[2].parse().expect("TARGET"), args[3].parse().expect("SECS")),
        _ => {
            eprintln!("usage: busy client SECS NAME WEB LB BLACKHOLE RESOLVER | busy lb LISTEN | busy scan TARGET SECS");
            std::process::exit(2);
        }
    }
}

/// Run `f` every `every` until `stop`, counting the runs.
fn every(name: &'static str, every: Duration, stop: Arc<AtomicBool>, f: impl Fn() + Send + 'static) -> thread::JoinHandle<(&'static str, u64)> {
    thread::spawn(move || {
        let count = AtomicU64::new(0);
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            f();
            count.fetch_add(1, Ordering::Relaxed);
            if let Some(rest) = every.checked_sub(started.elapsed()) {
                thread::sleep(rest);
            }
        }
        (name, count.load(Ordering::Relaxed))
    })
}

fn connect(addr: SocketAddr) -> Option<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    Some(s)
}

/// Read one HTTP response (headers and a Content-Length body) from a keep-alive stream.
fn read_response(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = s.read(&mut chunk) else { return false };
        if n == 0 {
            return false;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
    }
}

fn client(secs: u64, name: &str, web: &str, lb: &str, blackhole: &str, resolver: &str) {
    let web: SocketAddr = web.parse().expect("WEB");
    let lb: SocketAddr = lb.parse().expect("LB");
    let blackhole: SocketAddr = blackhole.parse().expect("BLACKHOLE");
    let resolver: SocketAddr = resolver.parse().expect("RESOLVER");
    let stop = Arc::new(AtomicBool::new(false));
    let host = name.to_owned();
    let mut jobs = vec![
        every("lookups", Duration::from_millis(500), stop.clone(), move || {
            let _ = (host.as_str(), 80).to_socket_addrs();
        }),
        every("cancelled_connects", Duration::from_secs(2), stop.clone(), move || {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
            let _ = s.connect_timeout(&blackhole.into(), Duration::from_millis(150));
        }),
        every("keepalive_idle_closes", Duration::from_secs(2), stop.clone(), move || {
            let Some(mut s) = connect(web) else { return };
            for _ in 0..2 {
                if s.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n").is_err() || !read_response(&mut s) {
                    return;
                }
            }
            // Idle until the server's keep-alive timeout closes it.
            let mut rest = [0u8; 64];
            let _ = s.read(&mut rest);
        }),
        every("unread_closes", Duration::from_secs(1), stop.clone(), move || {
            let Some(mut s) = connect(web) else { return };
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n");
            thread::sleep(Duration::from_millis(50));
            // The response is waiting unread: closing now sends an RST.
        }),
        every("health_checks", Duration::from_secs(1), stop.clone(), move || {
            let Some(mut s) = connect(web) else { return };
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n");
            let mut all = Vec::new();
            let _ = s.read_to_end(&mut all);
        }),
        every("lb_requests", Duration::from_millis(300), stop.clone(), move || {
            let Some(mut s) = connect(lb) else { return };
            let _ = s.write_all(b"GET\n");
            let mut all = Vec::new();
            let _ = s.read_to_end(&mut all);
        }),
    ];
    let started = Instant::now();
    let mut unanswered_sent = false;
    while started.elapsed() < Duration::from_secs(secs) {
        if !unanswered_sent && started.elapsed() >= Duration::from_secs(20) {
            unanswered_sent = true;
            if let Ok(sock) = UdpSocket::bind(("0.0.0.0", observer_tests::busy::UNANSWERED_PORT)) {
                let _ = sock.send_to(&query(0x4099, "rare.test"), resolver);
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for job in jobs.drain(..) {
        if let Ok((name, n)) = job.join() {
            println!("{name} {n}");
        }
    }
    println!("unanswered_queries {}", u8::from(unanswered_sent));
}

/// A DNS query for `name`, type A.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn lb(listen: &str) {
    let listener = TcpListener::bind(listen).expect("bind");
    let mut n = 0u64;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        n += 1;
        let reset = n.is_multiple_of(30);
        thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 256];
            let _ = stream.read(&mut buf);
            if reset {
                let sock = Socket::from(stream);
                let _ = sock.set_linger(Some(Duration::ZERO));
                return;
            }
            let _ = stream.write_all(b"OK\n");
        });
    }
}

/// The one's-complement sum of 16-bit words.
fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 TCP SYN from `src` to `dst`, with both checksums.
fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let c = checksum(&pseudo, 0);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ip
}

fn scan(target: Ipv4Addr, secs: u64) {
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))).expect("raw socket (root)");
    // The source: the address this namespace reaches the target from.
    let probe = UdpSocket::bind("0.0.0.0:0").expect("bind");
    probe.connect((target, 9)).expect("a route to the target");
    let std::net::IpAddr::V4(src) = probe.local_addr().expect("local address").ip() else { panic!("IPv4 only") };
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        for port in 30_000..30_020u16 {
            let packet = syn(src, 45_000 + port % 1000, target, port);
            if raw.send_to(&packet, &SocketAddr::from((target, 0)).into()).is_ok() {
                sent += 1;
            }
        }
        thread::sleep(Duration::from_secs(10));
    }
    println!("syns {sent}");
}
