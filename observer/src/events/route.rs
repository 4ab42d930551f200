//! The route ring's records as userspace types (TCP samples, early connect failures), and
//! the drop counters' readings.

use std::net::SocketAddr;

use observer_common::route::{ConnectFailEvent, DropKey, TcpSample, kind, retrans};

use super::{Event, Mono, RingRecord, endpoint_addr, split_record};

/// A connection's cumulative counters at one moment (sock_ops).
#[derive(Debug, Clone, PartialEq)]
pub struct TcpSampleRec {
    pub at: Mono,
    pub cookie: u64,
    pub peer: SocketAddr,
    pub local_port: u16,
    /// This host connected (else it accepted).
    pub active: bool,
    /// The connection's last sample.
    pub closed: bool,
    /// A connection older than observer, sampled from its retransmits: its first sample is
    /// a baseline.
    pub adopted: bool,
    pub data_segs_out: u64,
    pub total_retrans: u64,
    /// Retransmitted segments: RTO, fast recovery, probes.
    pub retrans: [u64; retrans::COUNT],
    pub timeouts: u64,
    pub srtt_us: u64,
    /// The interface this host routes `peer` through; the source fills it in.
    pub iface: Option<String>,
}

/// Packets dropped on this host under one key (addresses, protocol, reason), since the
/// kernel's counter was created: one reading.
#[derive(Debug, Clone, PartialEq)]
pub struct DropRec {
    pub count: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub proto: u8,
    /// The packet belonged to a local socket.
    pub has_sk: bool,
    pub reason: u32,
    /// The far end, and the kernel's name of the reason; the source fills them in (it
    /// knows the local addresses and the reason names).
    pub peer: SocketAddr,
    pub reason_name: String,
    pub iface: Option<String>,
}

/// A connect() that failed before any SYN.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectFailRec {
    pub at: Mono,
    pub dest: SocketAddr,
    pub errno: i32,
    /// "comm[pid]".
    pub process: String,
    pub iface: Option<String>,
}

// SAFETY: both are #[repr(C)] integers, endpoints and byte arrays; fixed size.
unsafe impl RingRecord for TcpSample {
    const HEADER: usize = size_of::<TcpSample>();
}
// SAFETY: as above.
unsafe impl RingRecord for ConnectFailEvent {
    const HEADER: usize = size_of::<ConnectFailEvent>();
}

/// Decode a route ring record by its kind (at byte 8); `None` for a short or unknown one.
pub fn decode_route(raw: &[u8]) -> Option<Event> {
    let k = u32::from_ne_bytes(raw.get(8..12)?.try_into().ok()?);
    match k {
        kind::SAMPLE | kind::CLOSED => {
            let (s, _) = split_record::<TcpSample>(raw)?;
            Some(Event::TcpSample(TcpSampleRec {
                at: Mono(s.ts_ns),
                cookie: s.cookie,
                peer: endpoint_addr(&s.peer),
                local_port: s.local_port,
                active: s.active != 0,
                closed: k == kind::CLOSED,
                adopted: s.adopted != 0,
                data_segs_out: u64::from(s.data_segs_out),
                total_retrans: u64::from(s.total_retrans),
                retrans: s.retrans.map(u64::from),
                timeouts: u64::from(s.timeouts),
                srtt_us: u64::from(s.srtt_us),
                iface: None,
            }))
        }
        kind::CONNECT_FAILED => {
            let (c, _) = split_record::<ConnectFailEvent>(raw)?;
            let comm_len = c.comm.iter().position(|&b| b == 0).unwrap_or(c.comm.len());
            Some(Event::ConnectFailed(ConnectFailRec {
                at: Mono(c.ts_ns),
                dest: endpoint_addr(&c.dest),
                errno: c.errno,
                process: format!("{}[{}]", String::from_utf8_lossy(&c.comm[..comm_len]), c.pid),
                iface: None,
            }))
        }
        _ => None,
    }
}

/// A drop counter's key and since-start count, as a reading for the layers.
pub fn drop_reading(k: &DropKey, count: u64) -> DropRec {
    let (src, dst) = (endpoint_addr(&k.src), endpoint_addr(&k.dst));
    DropRec { count, src, dst, proto: k.proto, has_sk: k.has_sk != 0, reason: k.reason, peer: dst, reason_name: String::new(), iface: None }
}

#[cfg(test)]
mod tests {
    use observer_common::tcp::{AF_INET, Endpoint};

    use super::*;

    fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain #[repr(C)] value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn each_kind_decodes_and_short_or_unknown_records_do_not() {
        let peer = Endpoint { addr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], port: 5201, family: AF_INET };
        let s = TcpSample { ts_ns: 5, kind: kind::CLOSED, srtt_us: 300, cookie: 9, peer, data_segs_out: 100, total_retrans: 3, retrans: [1, 2, 0], ..Default::default() };
        let Some(Event::TcpSample(r)) = decode_route(&bytes(&s)) else { panic!("not a sample") };
        assert_eq!((r.peer.to_string(), r.closed, r.data_segs_out, r.retrans, r.srtt_us), ("10.0.0.2:5201".into(), true, 100, [1, 2, 0], 300));
        let d = drop_reading(&DropKey { reason: 12, src: peer, dst: peer, proto: 6, has_sk: 1, _pad: [0; 2] }, 7);
        assert_eq!((d.reason, d.count, d.has_sk, d.dst.to_string()), (12, 7, true, "10.0.0.2:5201".into()));
        let c = ConnectFailEvent { ts_ns: 1, kind: kind::CONNECT_FAILED, errno: 101, dest: peer, pid: 7, comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0" };
        assert!(matches!(decode_route(&bytes(&c)), Some(Event::ConnectFailed(r)) if r.errno == 101 && r.process == "curl[7]"));
        let mut bad = bytes(&s);
        bad[8] = 77;
        assert_eq!(decode_route(&bad), None);
        assert_eq!(decode_route(&bytes(&s)[..40]), None);
        assert_eq!(decode_route(&[1, 2, 3]), None);
    }
}
