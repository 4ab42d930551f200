//! Test peers that Debian has no package for.
//!
//!   peer rst-server ADDR:PORT COUNT   accept COUNT connections; on each, read the request,
//!                                     then close with SO_LINGER 0 so the kernel sends an RST.

use std::{
    io::Read,
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use socket2::Socket;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("rst-server") => rst_server(&args[2], args[3].parse().expect("COUNT")),
        _ => {
            eprintln!("usage: peer rst-server ADDR:PORT COUNT");
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
