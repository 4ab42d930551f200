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
    let dest: SocketAddr = dest.parse().expect("DEST");
    let sock = UdpSocket::bind(if dest.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).expect("bind");
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
