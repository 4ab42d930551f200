//! The TLS branch of the TC program. A TCP payload that starts like a TLS record costs a few
//! loads; only a ClientHello starts a flow, and only a tracked flow is looked up again. The
//! first bytes of each direction, the first application data of each, and FIN and RST go to
//! userspace, which parses them (tls-parser). A flow is dropped from the table once both
//! sides have sent application data, or on RST.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, generated::bpf_skb_load_bytes},
    programs::TcContext,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr};
use observer_common::{
    lost,
    tcp::Endpoint,
    tls::{CHUNK_MAX, DIRECTION_BUDGET, TLS_EVENT_HEADER, TlsEvent, kind},
};

use crate::{
    maps::{CONTINUES, FLOW_CACHE, TLS_EVENTS, TLS_FIRST_DATA, TLS_FLOWS, count_lost, wakeup_flags},
    http,
    tc::{ETH_P_IP, IPPROTO_TCP, Packet, Tcp, at, copy_endpoint, endpoints, field, ptr_at},
};

const CONTENT_CHANGE_CIPHER_SPEC: u8 = 20;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// An encrypted alert's record: 2 bytes of alert, the inner type and a 16-byte tag. TLS 1.3
/// encrypts its alerts as application data; this one is not the application's.
const ENCRYPTED_ALERT_LEN: u16 = 19;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
/// Where a first payload that is not TLS is reported (`kind::NOT_TLS`).
const TLS_PORT: u16 = 443;
/// [`FLOW_CACHE`] states of a flow direction, in the tag's low two bits.
const UNKNOWN: u64 = 0;
/// Neither a TLS handshake nor HTTP: its packets' payloads are not copied out to be checked.
const NOT_TLS: u64 = 1;
const TRACKED: u64 = 2;
/// It started with an HTTP message: every packet is checked for the next one (keep-alive).
const HTTP: u64 = 3;
/// A [`CONTINUES`] slot's mark for a TLS handshake record's next segment.
const CONTINUE_MARK: u64 = 1 << 32;
/// Wake userspace once per this many bytes a CPU wrote to the TLS ring (set by userspace to
/// a quarter of the ring divided by the CPUs, as for DNS).
#[unsafe(no_mangle)]
static TLS_WAKEUP_BYTES: u64 = 32 * 1024;
/// Slots of [`FLOW_CACHE`]; a power of two.
pub const FLOW_CACHE_SLOTS: u32 = 16384;
/// Slots of [`CONTINUES`]; a power of two.
pub const CONTINUE_SLOTS: u32 = 256;

/// A flow, keyed by its two endpoints in a fixed order (the lower port first), so that both
/// directions find it with one lookup.
#[repr(C)]
pub struct FlowKey {
    a: Endpoint,
    b: Endpoint,
}

#[repr(C)]
pub struct Flow {
    /// Sequence number of each direction's first record (index 0: the client's).
    base: [u32; 2],
    copied: [u32; 2],
    based: [u8; 2],
    /// 1 when the client is `a` of the key.
    client_is_a: u8,
    /// Bit 0: the client sent application data; bit 1: the server did.
    app: u8,
}

/// The branch's working values, in the packet's scratch slot.
#[repr(C)]
pub struct Scratch {
    key: FlowKey,
    /// What `head_from_pages` found: the record header, and the FLOW_CACHE tag and state.
    head: u64,
    tag: u64,
    known: u64,
    /// Bytes this CPU wrote to the ring since it last woke the reader.
    produced: u64,
    /// The direction this CPU last found NOT_TLS in FLOW_CACHE: a bulk flow's next packet,
    /// usually on the same CPU, is skipped without the call and the lookup.
    skip: u64,
    event: TlsEvent,
}

#[inline(always)]
fn less(x: &Endpoint, y: &Endpoint) -> bool {
    if x.port != y.port {
        return x.port < y.port;
    }
    let (xa, ya) = (x.addr.as_ptr().cast::<u32>(), y.addr.as_ptr().cast::<u32>());
    // SAFETY: Endpoint is 4-byte aligned and its address is 16 bytes.
    unsafe {
        for i in 0..4 {
            let (p, q) = (xa.add(i).read(), ya.add(i).read());
            if p != q {
                return p < q;
            }
        }
    }
    false
}

/// A direction of a flow as a [`FLOW_CACHE`] tag (the low two bits hold the state). The
/// packet's flow hash (the socket's on egress, the NIC's on ingress) with the ports costs one
/// load; without a hash, the addresses are folded in instead.
#[inline(always)]
fn direction_tag(ctx: &TcContext, pkt: &mut Packet, sport: u16, dport: u16) -> Option<u64> {
    let hash = unsafe { (*ctx.skb.skb).hash };
    if hash != 0 {
        return Some(hash_tag(hash, sport, dport));
    }
    let ports = (u64::from(sport) << 16) | u64::from(dport);
    endpoints(ctx, pkt, sport, dport)?;
    let fold = |e: &Endpoint| {
        let w = e.addr.as_ptr().cast::<u32>();
        // SAFETY: as in `less`.
        unsafe { w.read() ^ w.add(1).read() ^ w.add(2).read() ^ w.add(3).read() }
    };
    Some(((ports << 32) | u64::from(fold(&pkt.src) ^ fold(&pkt.dst).rotate_left(7))) & !3)
}

/// [`direction_tag`] from a packet's flow hash (not 0) and ports.
#[inline(always)]
fn hash_tag(hash: u32, sport: u16, dport: u16) -> u64 {
    ((u64::from(hash) << 32) | (u64::from(sport) << 16) | u64::from(dport)) & !3
}

/// The packet's direction is the one this CPU last found not TLS (`Scratch::skip`), known by
/// its flow hash without the cache's lookup.
#[inline(always)]
fn skipped(ctx: &TcContext, pkt: &Packet, sport: u16, dport: u16) -> bool {
    let hash = unsafe { (*ctx.skb.skb).hash };
    hash != 0 && pkt.tls.skip == hash_tag(hash, sport, dport)
}

#[inline(always)]
fn cache_slot(tag: u64) -> u32 {
    ((tag ^ (tag >> 29)) as u32 >> 2) & (FLOW_CACHE_SLOTS - 1)
}

/// Remember a direction's state; `tag` 0 means the packet did not come through the cache.
#[inline(always)]
fn cache_set(tag: u64, state: u64) {
    if tag == 0 {
        return;
    }
    if let Some(p) = FLOW_CACHE.get_ptr_mut(cache_slot(tag)) {
        // One aligned word: racing CPUs write whole values.
        unsafe { core::ptr::write_volatile(p, tag | state) };
    }
}

/// The record header of a packet whose payload is not linear, into `pkt.tls.head`; false when
/// the packet needs nothing more. Copying it out costs more than the rest of the branch, so a
/// direction known not to be a TLS handshake is remembered (FLOW_CACHE) and skipped. A
/// separate BPF function: inlined, its registers would cost every other packet too.
#[inline(never)]
fn head_from_pages(ctx: &TcContext, pkt: &mut Packet, payload: u32, ports_flags: u64) -> bool {
    // Packed: BPF functions take at most five arguments.
    let (sport, dport, flags) = ((ports_flags >> 24) as u16, (ports_flags >> 8) as u16, ports_flags as u8);
    let Some(tag) = direction_tag(ctx, pkt, sport, dport) else { return false };
    let cached = FLOW_CACHE.get(cache_slot(tag)).copied().unwrap_or(0);
    let known = if cached & !3 == tag { cached & 3 } else { UNKNOWN };
    if known == NOT_TLS && flags & (FIN | RST) == 0 {
        pkt.tls.skip = tag;
        return false;
    }
    let mut head = [0u8; 8];
    let dst = head.as_mut_ptr().cast::<core::ffi::c_void>();
    if unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), payload, dst, 6) } != 0 {
        return false;
    }
    let s = &mut pkt.tls;
    s.head = u64::from_le_bytes(head);
    s.tag = tag;
    s.known = known;
    true
}

/// True for the packet no branch acts on, the bulk of a busy host's TCP, decided in a few
/// loads before the general parse (its stores to the scratch slot and its register spills
/// cost a non-DNS packet about half of what observer adds to it): IPv4 without options or
/// fragments over Ethernet, TCP with neither port DNS's and no SYN, FIN or RST, and either no
/// payload or a payload in pages of the direction this CPU last found not TLS (`skip`).
/// Everything else takes the general path, which decides the same for these packets: DNS
/// wants port 53, ICMP a SYN-ACK, and `on_tcp` returns before any lookup for them.
#[inline(always)]
pub fn nothing_to_do(ctx: &TcContext, pkt: &Packet) -> bool {
    // Ethernet, IPv4 without options, TCP without options: the headers at fixed offsets.
    const IP: usize = EthHdr::LEN;
    const TCP: usize = IP + Ipv4Hdr::LEN;
    let Some(p) = ptr_at::<[u8; TCP + TcpHdr::LEN]>(ctx, 0) else { return false };
    let (ethertype, vihl, frags, proto): (u16, u8, u16, u8) =
        (field(p, at::ETHERTYPE), field(p, IP + at::V4_VIHL), field(p, IP + at::V4_FRAGS), field(p, IP + at::V4_PROTO));
    // As loaded (network order): IPv4; version 4 with a 20-byte header; neither MF nor an
    // offset; TCP.
    if ethertype != ETH_P_IP.to_be() || vihl != 0x45 || frags & 0x3fffu16.to_be() != 0 || proto != IPPROTO_TCP {
        return false;
    }
    // As in `tc::tcp_header`.
    let (sport, dport) = (u16::from_be(field(p, TCP)), u16::from_be(field(p, TCP + 2)));
    let (offset, flags): (u8, u8) = (field(p, TCP + 12), field(p, TCP + 13));
    let payload = TCP + (offset >> 4) as usize * 4;
    if sport == 53 || dport == 53 || flags & (SYN | FIN | RST) != 0 || offset >> 4 < 5 {
        return false;
    }
    let len = ctx.len() as usize;
    if len == payload {
        return true;
    }
    // A payload of 1 to 5 bytes may continue a record (`on_tcp` looks it up); a linear one
    // is read for its first bytes.
    if len < payload + 6 || ctx.data() + payload + 6 <= ctx.data_end() {
        return false;
    }
    skipped(ctx, pkt, sport, dport)
}

#[inline(always)]
pub fn on_tcp(ctx: &TcContext, pkt: &mut Packet, t: &Tcp) {
    let (sport, dport, flags, payload, seq) = (t.sport, t.dport, t.flags, t.payload, t.seq);
    let plen = (ctx.len() as usize).saturating_sub(payload);
    let slot = u32::from(sport ^ dport) & (CONTINUE_SLOTS - 1);
    if flags & SYN != 0 {
        // A new connection may reuse the ports (and hash) of one remembered as not TLS.
        if let Some(tag) = direction_tag(ctx, pkt, sport, dport) {
            cache_set(tag, UNKNOWN);
        }
        pkt.tls.skip = 0;
        if dport == TLS_PORT && flags & ACK == 0 {
            if let Some(p) = TLS_FIRST_DATA.get_ptr_mut(slot) {
                unsafe { *p = seq.wrapping_add(1) };
            }
        }
        return;
    }
    // The record header, packed little-endian: content type, version (3, 1..=4), length, and
    // a handshake's type.
    let mut h: u64 = 0;
    // The direction's FLOW_CACHE tag and state, for a packet whose payload is not linear.
    let (mut tag, mut known) = (0u64, UNKNOWN);
    if plen >= 6 {
        match ptr_at::<[u8; 6]>(ctx, payload) {
            Some(p) => h = u64::from(field::<_, u32>(p, 0)) | (u64::from(field::<_, u16>(p, 4)) << 32),
            // Not in the linear data (GSO and most NICs keep the payload in pages): copied
            // out, unless the direction is known to be neither TLS nor HTTP.
            None => {
                if flags & (FIN | RST) == 0 && skipped(ctx, pkt, sport, dport) {
                    return;
                }
                let ports_flags = (u64::from(sport) << 24) | (u64::from(dport) << 8) | u64::from(flags);
                if !head_from_pages(ctx, pkt, payload as u32, ports_flags) {
                    return;
                }
                let s = &pkt.tls;
                (h, tag, known) = (s.head, s.tag, s.known);
            }
        }
    }
    let head = h.to_le_bytes();
    let content = head[0];
    let is_record = plen >= 6 && (CONTENT_CHANGE_CIPHER_SPEC..=CONTENT_APPLICATION_DATA).contains(&content) && head[1] == 3 && (1..=4).contains(&head[2]);
    // A handshake record (or an HTTP request's header block) that ran past its packet
    // continues in a packet that starts mid-record.
    let next = if plen > 0 && !is_record { CONTINUES.get(slot).copied().unwrap_or(0) } else { 0 };
    let continues = next == CONTINUE_MARK | u64::from(seq);
    let http_start = !is_record && plen >= 4 && http::starts(h as u32);
    if http_start || next == http::CONTINUE_MARK | u64::from(seq) {
        let s = &mut pkt.http;
        (s.seq, s.slot, s.payload, s.plen, s.first, s.sport, s.dport) =
            (seq, slot, payload as u32, plen as u32, h as u32, sport, dport);
        s.kind = if http_start { observer_common::http::kind::START } else { observer_common::http::kind::CONTINUES };
        http::emit(ctx, pkt);
        if known != HTTP {
            cache_set(tag, HTTP);
            pkt.tls.skip = 0;
        }
    }
    if !is_record && !continues && flags & (FIN | RST) == 0 && known != TRACKED {
        if known != HTTP && !http_start {
            cache_set(tag, NOT_TLS);
        }
        if dport == TLS_PORT && plen > 0 {
            let slot_seq = (u64::from(slot) << 32) | u64::from(seq);
            let payload_plen = ((payload as u64) << 32) | plen as u64;
            not_tls(ctx, pkt, slot_seq, (u32::from(sport) << 16) | u32::from(dport), payload_plen);
        }
        return;
    }
    if endpoints(ctx, pkt, sport, dport).is_none() {
        return;
    }
    let src_is_a = less(&pkt.src, &pkt.dst);
    let s = &mut pkt.tls;
    if src_is_a {
        copy_endpoint(&mut s.key.a, &pkt.src);
        copy_endpoint(&mut s.key.b, &pkt.dst);
    } else {
        copy_endpoint(&mut s.key.a, &pkt.dst);
        copy_endpoint(&mut s.key.b, &pkt.src);
    }
    let flow = match TLS_FLOWS.get_ptr_mut(&s.key) {
        Some(f) => f,
        None => {
            // Only a ClientHello starts a flow.
            if !(is_record && content == CONTENT_HANDSHAKE && head[5] == HANDSHAKE_CLIENT_HELLO) {
                cache_set(tag, NOT_TLS);
                return;
            }
            let new = Flow { base: [0; 2], copied: [0; 2], based: [0; 2], client_is_a: src_is_a as u8, app: 0 };
            // EEXIST means another CPU created it first, which is fine.
            let _ = TLS_FLOWS.insert(&s.key, &new, BPF_NOEXIST as u64);
            match TLS_FLOWS.get_ptr_mut(&s.key) {
                Some(f) => f,
                None => {
                    count_lost(lost::TABLE_INSERT_FAILED);
                    return;
                }
            }
        }
    };
    if known != TRACKED {
        cache_set(tag, TRACKED);
        pkt.tls.skip = 0;
    }
    // SAFETY: a map value; racing CPUs only make the budget approximate.
    let flow = unsafe { &mut *flow };
    let from_client = src_is_a == (flow.client_is_a == 1);
    let d = if from_client { 0 } else { 1 };
    let now = unsafe { bpf_ktime_get_ns() };
    if plen > 0 && d < 2 && (is_record || continues) {
        if flow.based[d] == 0 && is_record {
            flow.base[d] = seq;
            flow.based[d] = 1;
        }
        let copied = flow.copied[d];
        if flow.based[d] == 1 && copied < DIRECTION_BUDGET {
            let left = (DIRECTION_BUDGET - copied) as usize;
            let n = plen.min(left).min(CHUNK_MAX);
            let offset = seq.wrapping_sub(flow.base[d]);
            emit(ctx, pkt, kind::DATA, from_client, offset, plen, payload, n, now);
            flow.copied[d] = copied + n as u32;
        }
        let record_len = u16::from_be_bytes([head[3], head[4]]) as usize;
        if is_record && content == CONTENT_HANDSHAKE && record_len + 5 > plen {
            if let Some(p) = CONTINUES.get_ptr_mut(slot) {
                unsafe { *p = CONTINUE_MARK | u64::from(seq.wrapping_add(plen as u32)) };
            }
        }
        if is_record && content == CONTENT_APPLICATION_DATA && record_len as u16 != ENCRYPTED_ALERT_LEN {
            let bit = 1u8 << d;
            if flow.app & bit == 0 {
                flow.app |= bit;
                emit(ctx, pkt, kind::APP, from_client, 0, plen, payload, 0, now);
                if flow.app == 3 {
                    // The handshake is over: this flow costs nothing more (the other
                    // direction learns it at its next lookup).
                    let _ = TLS_FLOWS.remove(&pkt.tls.key);
                    cache_set(tag, NOT_TLS);
                    return;
                }
            }
        }
    }
    if flags & RST != 0 {
        emit(ctx, pkt, kind::RST, from_client, 0, plen, payload, 0, now);
        let _ = TLS_FLOWS.remove(&pkt.tls.key);
        cache_set(tag, NOT_TLS);
    } else if flags & FIN != 0 {
        emit(ctx, pkt, kind::FIN, from_client, 0, plen, payload, 0, now);
    }
}

/// The client's first payload on a connection to the TLS port, when it is not a TLS record:
/// plain HTTP to an HTTPS port, or garbage. Reported once, with its first bytes.
#[inline(never)]
fn not_tls(ctx: &TcContext, pkt: &mut Packet, slot_seq: u64, ports: u32, payload_plen: u64) {
    // Packed: BPF functions take at most five arguments.
    let (slot, seq) = ((slot_seq >> 32) as u32, slot_seq as u32);
    let (payload, plen) = ((payload_plen >> 32) as usize, payload_plen as u32 as usize);
    let Some(first) = TLS_FIRST_DATA.get_ptr_mut(slot) else { return };
    if unsafe { *first } != seq {
        return;
    }
    unsafe { *first = 0 };
    if endpoints(ctx, pkt, (ports >> 16) as u16, ports as u16).is_none() {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    emit(ctx, pkt, kind::NOT_TLS, true, 0, plen, payload, plen.min(64), now);
}

/// One record for userspace: `n` bytes of the payload at `payload` (none for FIN and RST).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit(ctx: &TcContext, pkt: &mut Packet, what: u8, from_client: bool, offset: u32, plen: usize, payload: usize, n: usize, now: u64) {
    let ev = &mut pkt.tls.event;
    ev.ts_ns = now;
    if from_client {
        copy_endpoint(&mut ev.client, &pkt.src);
        copy_endpoint(&mut ev.server, &pkt.dst);
    } else {
        copy_endpoint(&mut ev.client, &pkt.dst);
        copy_endpoint(&mut ev.server, &pkt.src);
    }
    ev.offset = offset;
    ev.payload_len = plen as u32;
    ev.kind = what;
    ev.from_client = from_client as u8;
    ev.ifindex = pkt.ifindex;
    // Bounded for the verifier: 0..=CHUNK_MAX.
    let n = if n > CHUNK_MAX { CHUNK_MAX } else { n };
    ev.captured = 0;
    let mut copied = 0;
    if n > 0 {
        // 1..=CHUNK_MAX by a mask the verifier follows. The volatile load keeps LLVM from
        // folding the mask back into `n` (it can prove the range; a 6.1 verifier, which lost
        // the check on another register copy, cannot: "unbounded memory access").
        let v = unsafe { core::ptr::read_volatile(&n) } as u32;
        let len = (v.wrapping_sub(1) & (CHUNK_MAX as u32 - 1)) + 1;
        let dst = (&raw mut ev.data).cast::<core::ffi::c_void>();
        if unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), payload as u32, dst, len) } != 0 {
            count_lost(lost::TLS_COPY_FAILED);
            return;
        }
        ev.captured = len as u16;
        copied = len as usize;
    }
    let len = TLS_EVENT_HEADER + copied;
    let record = unsafe { core::slice::from_raw_parts((ev as *const TlsEvent).cast::<u8>(), len) };
    // Userspace drains every 20 ms; a wakeup per share of the ring from this CPU.
    let every = unsafe { core::ptr::read_volatile(&TLS_WAKEUP_BYTES) };
    let flags = wakeup_flags(&mut pkt.tls.produced, len as u64, every);
    if TLS_EVENTS.output::<[u8]>(record, flags).is_err() {
        count_lost(lost::TLS_RINGBUF_FULL);
    }
}
