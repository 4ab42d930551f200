//! The ICMP branch of the TC program: destination unreachable, time exceeded and packet too
//! big (ICMP and ICMPv6) arriving at this host, attributed to the destination of the packet
//! they quote. Errors are rare (the kernel rate-limits them at the source), so each one goes
//! to userspace as an event.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use observer_common::{
    dns::DIRECTION_INGRESS,
    icmp::{IcmpEvent, what},
    lost,
    tcp::{AF_INET, AF_INET6, Endpoint},
};

use crate::{
    maps::{ICMP_EVENTS, count_lost},
    tc::{IPPROTO_TCP, IPPROTO_UDP, MAX_L4_OFFSET, Packet, copy_endpoint, endpoints, field, ptr_at},
};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// ICMP: destination unreachable (3), time exceeded (11). ICMPv6: destination unreachable
/// (1), packet too big (2), time exceeded (3).
#[inline(always)]
fn is_error(v6: bool, icmp_type: u8) -> bool {
    if v6 { matches!(icmp_type, 1..=3) } else { matches!(icmp_type, 3 | 11) }
}

#[inline(always)]
pub fn on_icmp(ctx: &TcContext, pkt: &mut Packet) {
    if pkt.direction != DIRECTION_INGRESS {
        return;
    }
    let l4 = pkt.l4;
    if l4 > MAX_L4_OFFSET {
        return;
    }
    let v6 = pkt.proto == IPPROTO_ICMPV6;
    let Some(h) = ptr_at::<[u8; 8]>(ctx, l4) else { return };
    let (icmp_type, code): (u8, u8) = (field(h, 0), field(h, 1));
    if !is_error(v6, icmp_type) {
        return;
    }
    // Bytes 4..8: the next hop's MTU (ICMP frag needed: the low 16 bits; ICMPv6 packet too
    // big: all 32).
    let mtu = u32::from_be(field::<_, u32>(h, 4));
    let mtu = if v6 { mtu } else { mtu & 0xffff };
    let _ = quoted(ctx, pkt, (u32::from(icmp_type) << 8) | u32::from(code), mtu);
}

/// The quoted packet's destination, then the event.
#[inline(never)]
fn quoted(ctx: &TcContext, pkt: &mut Packet, type_code: u32, mtu: u32) -> Option<()> {
    let inner = pkt.l4 + 8;
    if inner > MAX_L4_OFFSET {
        return None;
    }
    let v6 = pkt.proto == IPPROTO_ICMPV6;
    let mut dest = Endpoint { addr: [0; 16], port: 0, family: 0 };
    let (proto, ports_at) = if v6 {
        let ip = ptr_at::<[u8; 40]>(ctx, inner)?;
        dest.family = AF_INET6;
        let mut i = 0;
        while i < 16 {
            dest.addr[i] = field(ip, 24 + i);
            i += 1;
        }
        (field::<_, u8>(ip, 6), inner + 40)
    } else {
        let ip = ptr_at::<[u8; 20]>(ctx, inner)?;
        let ihl = ((field::<_, u8>(ip, 0) & 0x0f) as usize) * 4;
        if ihl < 20 {
            return None;
        }
        dest.family = AF_INET;
        let d: [u8; 4] = field(ip, 16);
        dest.addr[0] = d[0];
        dest.addr[1] = d[1];
        dest.addr[2] = d[2];
        dest.addr[3] = d[3];
        (field::<_, u8>(ip, 9), inner + ihl)
    };
    if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && ports_at <= MAX_L4_OFFSET
        && let Some(p) = ptr_at::<[u8; 4]>(ctx, ports_at)
    {
        dest.port = u16::from_be(field(p, 2));
    }
    endpoints(ctx, pkt, 0, 0)?;
    let Some(mut entry) = ICMP_EVENTS.reserve::<IcmpEvent>(0) else {
        count_lost(lost::ICMP_RINGBUF_FULL);
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    copy_endpoint(&mut ev.dest, &dest);
    copy_endpoint(&mut ev.reporter, &pkt.src);
    ev.mtu = mtu;
    ev.ifindex = pkt.ifindex;
    ev.icmp_type = (type_code >> 8) as u8;
    ev.code = type_code as u8;
    ev.v6 = v6 as u8;
    ev.proto = proto;
    ev.what = what::ERROR;
    ev.ttl = 0;
    ev._pad = [0; 2];
    entry.submit(0);
    Some(())
}

/// A SYN-ACK arriving: its TTL (hop limit) says how many hops its sender is away, and a
/// change of it says the path changed. SYN-ACKs are one per connect, so this is cheap.
#[inline(never)]
pub fn on_synack(ctx: &TcContext, pkt: &mut Packet, ports: u32) -> Option<()> {
    if pkt.direction != DIRECTION_INGRESS {
        return None;
    }
    let l3 = pkt.l3;
    if l3 > MAX_L4_OFFSET {
        return None;
    }
    let v6 = pkt.family == AF_INET6;
    let ip = ptr_at::<[u8; 9]>(ctx, l3)?;
    let ttl: u8 = if v6 { field(ip, 7) } else { field(ip, 8) };
    endpoints(ctx, pkt, (ports >> 16) as u16, ports as u16)?;
    let Some(mut entry) = ICMP_EVENTS.reserve::<IcmpEvent>(0) else {
        count_lost(lost::ICMP_RINGBUF_FULL);
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    copy_endpoint(&mut ev.dest, &pkt.src);
    copy_endpoint(&mut ev.reporter, &pkt.src);
    ev.mtu = 0;
    ev.ifindex = pkt.ifindex;
    ev.icmp_type = 0;
    ev.code = 0;
    ev.v6 = v6 as u8;
    ev.proto = IPPROTO_TCP;
    ev.what = what::SYNACK_TTL;
    ev.ttl = ttl;
    ev._pad = [0; 2];
    entry.submit(0);
    Some(())
}
