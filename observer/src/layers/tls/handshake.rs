//! One TLS flow's handshake, rebuilt from the first bytes of each direction that the kernel
//! copies: the records are parsed with tls-parser, and the flow ends with one outcome.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use tls_parser::{
    TlsCipherSuite, TlsExtension, TlsMessage, TlsMessageHandshake, TlsRecordType, TlsVersion, parse_tls_extensions,
    parse_tls_raw_record, parse_tls_record_with_header,
};

use super::cert::{self, CertFacts};
use crate::events::{Mono, TlsChunk, TlsKind};

/// Bytes kept per direction (the kernel copies at most 8 KiB).
const STREAM_MAX: usize = 16 * 1024;
/// What the kernel copies of each direction: a stream this long may have been cut by it.
const COPIED_PER_DIRECTION: usize = observer_common::tls::DIRECTION_BUDGET as usize;
/// Pieces kept out of order per direction, waiting for the gap before them.
const PENDING_MAX: usize = 8;
/// The largest record TLS allows (2^14 plus expansion).
const RECORD_MAX: usize = 16384 + 2048;
/// An encrypted alert: 2 bytes, the inner content type and a 16-byte tag.
const ENCRYPTED_ALERT_LEN: usize = 19;

/// How a handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Application data in both directions.
    Completed,
    /// A fatal alert in the clear.
    Alert,
    /// FIN or RST before completion.
    Aborted,
    /// No ServerHello within the stall timeout.
    Stalled,
    /// Bytes that do not parse as TLS.
    Malformed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Alert => "alert",
            Outcome::Aborted => "aborted",
            Outcome::Stalled => "stalled",
            Outcome::Malformed => "malformed",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientHello {
    pub sni: Option<String>,
    /// Offered versions, newest first (supported_versions, else the hello's own).
    pub versions: Vec<&'static str>,
    pub alpn: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerHello {
    pub at: Mono,
    pub version: &'static str,
    pub cipher: String,
    /// Only TLS 1.2 and earlier say it in the clear.
    pub alpn: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub description: String,
    pub fatal: bool,
    pub from_client: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Close {
    pub from_client: bool,
    pub rst: bool,
}

#[derive(Debug, Default)]
struct Stream {
    buf: Vec<u8>,
    /// Where the next record starts in `buf`.
    cursor: usize,
    /// Pieces past a gap, by offset.
    pending: BTreeMap<u32, Vec<u8>>,
}

impl Stream {
    /// Add bytes at `offset`; duplicates (a packet seen on two hooks, a retransmit) and
    /// overlaps are cut, a piece past a gap waits for it.
    fn add(&mut self, offset: u32, bytes: &[u8]) {
        let at = offset as usize;
        if at > self.buf.len() {
            if self.pending.len() < PENDING_MAX {
                self.pending.entry(offset).or_insert_with(|| bytes.to_vec());
            }
            return;
        }
        self.append(at, bytes);
        while let Some((&off, _)) = self.pending.first_key_value() {
            if off as usize > self.buf.len() {
                break;
            }
            let (off, piece) = self.pending.pop_first().expect("just seen");
            self.append(off as usize, &piece);
        }
    }

    fn append(&mut self, at: usize, bytes: &[u8]) {
        let new = (at + bytes.len()).saturating_sub(self.buf.len());
        if new == 0 {
            return;
        }
        let room = STREAM_MAX.saturating_sub(self.buf.len());
        let take = new.min(room);
        let from = bytes.len() - new;
        self.buf.extend_from_slice(&bytes[from..from + take]);
    }
}

/// One TLS flow, from its ClientHello on.
#[derive(Debug)]
pub struct Flow {
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// When the ClientHello was seen.
    pub started: Mono,
    streams: [Stream; 2],
    pub hello: Option<ClientHello>,
    pub server_hello: Option<ServerHello>,
    pub cert: Option<CertFacts>,
    pub alert: Option<Alert>,
    /// The first application data of the client (0) and of the server (1).
    pub app: [Option<Mono>; 2],
    /// When each side sent ChangeCipherSpec: its later handshake records and alerts are
    /// encrypted. With TLS 1.2 and earlier, both sides having sent it (and their Finished
    /// after it) is a completed handshake, even when no data follows (a health check).
    pub ccs: [Option<Mono>; 2],
    pub close: Option<Close>,
    pub malformed: Option<String>,
}

fn version_name(v: TlsVersion) -> &'static str {
    match v.0 {
        0x0300 => "SSLv3",
        0x0301 => "TLSv1.0",
        0x0302 => "TLSv1.1",
        0x0303 => "TLSv1.2",
        0x0304 => "TLSv1.3",
        v if v & 0x0f0f == 0x0a0a => "GREASE",
        _ => "unknown",
    }
}

/// "UnknownCa" -> "unknown_ca", as TLS names the alerts.
fn snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A hello's extensions; none when they do not parse (the hello's own fields still count).
fn extensions(raw: Option<&[u8]>) -> Vec<TlsExtension<'_>> {
    raw.and_then(|e| parse_tls_extensions(e).ok()).map(|(_, v)| v).unwrap_or_default()
}

/// The protocol a server chose (ALPN) in a ServerHello at the start of `bytes`, for the HTTP
/// layer: "h2" there means HTTP/2 follows, which it counts and does not parse.
pub fn server_alpn(bytes: &[u8]) -> Option<String> {
    let (_, record) = parse_tls_raw_record(bytes).ok()?;
    if record.hdr.record_type != TlsRecordType::Handshake {
        return None;
    }
    let (_, messages) = parse_tls_record_with_header(record.data, &record.hdr).ok()?;
    messages.into_iter().find_map(|m| match m {
        TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)) => extensions(sh.ext).into_iter().find_map(|e| match e {
            TlsExtension::ALPN(protos) => protos.first().map(|p| String::from_utf8_lossy(p).into_owned()),
            _ => None,
        }),
        _ => None,
    })
}

pub fn alert_name(code: tls_parser::TlsAlertDescription) -> String {
    let text = code.to_string();
    if text.chars().all(|c| c.is_ascii_alphanumeric()) { snake(&text) } else { format!("alert_{}", code.0) }
}

impl Flow {
    pub fn new(client: SocketAddr, server: SocketAddr, started: Mono) -> Flow {
        Flow {
            client,
            server,
            started,
            streams: Default::default(),
            hello: None,
            server_hello: None,
            cert: None,
            alert: None,
            app: [None, None],
            ccs: [None, None],
            close: None,
            malformed: None,
        }
    }

    pub fn sni(&self) -> &str {
        self.hello.as_ref().and_then(|h| h.sni.as_deref()).unwrap_or("")
    }

    pub fn on_chunk(&mut self, c: &TlsChunk) {
        let d = usize::from(!c.from_client);
        match c.kind {
            TlsKind::Data => {
                self.streams[d].add(c.offset, &c.bytes);
                self.parse(d, c.at);
            }
            TlsKind::App => {
                self.app[d].get_or_insert(c.at);
            }
            TlsKind::Fin | TlsKind::Rst => {
                if self.close.is_none() {
                    self.close = Some(Close { from_client: c.from_client, rst: c.kind == TlsKind::Rst });
                }
            }
            TlsKind::NotTls => self.malformed = Some("the first bytes are not a TLS record".to_owned()),
        }
    }

    /// Parse every complete record of direction `d` not parsed yet.
    fn parse(&mut self, d: usize, at: Mono) {
        loop {
            let s = &self.streams[d];
            let rest = &s.buf[s.cursor..];
            if rest.is_empty() || self.malformed.is_some() {
                return;
            }
            // tls-parser takes any content type; TLS has five (20 to 24), and the first byte
            // says so before the record is whole.
            if !(20..=24).contains(&rest[0]) {
                self.malformed = Some(format!("a record of content type {}, which TLS does not have", rest[0]));
                return;
            }
            match parse_tls_raw_record(rest) {
                Ok((left, record)) => {
                    let used = rest.len() - left.len();
                    let (hdr, data) = (record.hdr, record.data.to_vec());
                    self.streams[d].cursor += used;
                    self.on_record(d, at, &hdr, &data);
                }
                Err(tls_parser::nom::Err::Incomplete(_)) => {
                    // A length no record may have: it will never complete.
                    if rest.len() >= 5 && usize::from(u16::from_be_bytes([rest[3], rest[4]])) > RECORD_MAX {
                        self.malformed = Some(format!("a record claims {} bytes", u16::from_be_bytes([rest[3], rest[4]])));
                    }
                    return;
                }
                Err(_) => {
                    self.malformed = Some("bytes that are not a TLS record".to_owned());
                    return;
                }
            }
        }
    }

    fn on_record(&mut self, d: usize, at: Mono, hdr: &tls_parser::TlsRecordHeader, data: &[u8]) {
        let from_client = d == 0;
        match hdr.record_type {
            TlsRecordType::ChangeCipherSpec => {
                self.ccs[d].get_or_insert(at);
            }
            // TLS 1.3 sends its encrypted handshake as application data too; an encrypted
            // alert is not the peer's data.
            TlsRecordType::ApplicationData if data.len() != ENCRYPTED_ALERT_LEN => {
                self.app[d].get_or_insert(at);
            }
            TlsRecordType::Alert | TlsRecordType::Handshake if self.ccs[d].is_some() => {}
            TlsRecordType::Alert | TlsRecordType::Handshake => {
                match parse_tls_record_with_header(data, hdr) {
                    Ok((_, messages)) => {
                        for m in messages {
                            self.on_message(from_client, at, m);
                        }
                    }
                    // A handshake message longer than one record continues in the next; the
                    // start of the flow is enough for what observer reports.
                    Err(tls_parser::nom::Err::Incomplete(_)) => {}
                    Err(_) if hdr.record_type == TlsRecordType::Handshake && self.hello.is_some() && !from_client => {}
                    Err(_) => self.malformed = Some(format!("a {:?} record that does not parse", hdr.record_type)),
                }
            }
            _ => {}
        }
    }

    fn on_message(&mut self, from_client: bool, at: Mono, m: TlsMessage<'_>) {
        match m {
            TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)) if from_client && self.hello.is_none() => {
                let mut hello = ClientHello { versions: vec![version_name(ch.version)], ..ClientHello::default() };
                for ext in extensions(ch.ext) {
                    match ext {
                        TlsExtension::SNI(names) => {
                            hello.sni = names.first().map(|(_, n)| String::from_utf8_lossy(n).into_owned());
                        }
                        TlsExtension::SupportedVersions(vs) => {
                            hello.versions = vs.iter().map(|v| version_name(*v)).filter(|n| *n != "GREASE").collect();
                        }
                        TlsExtension::ALPN(protos) => {
                            hello.alpn = protos.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
                        }
                        _ => {}
                    }
                }
                self.hello = Some(hello);
            }
            TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)) if !from_client && self.server_hello.is_none() => {
                let mut version = version_name(sh.version);
                let mut alpn = None;
                for ext in extensions(sh.ext) {
                    match ext {
                        TlsExtension::SupportedVersions(vs) => {
                            if let Some(v) = vs.first() {
                                version = version_name(*v);
                            }
                        }
                        TlsExtension::ALPN(protos) => alpn = protos.first().map(|p| String::from_utf8_lossy(p).into_owned()),
                        _ => {}
                    }
                }
                let cipher = TlsCipherSuite::from_id(sh.cipher.0).map(|c| c.name.to_owned()).unwrap_or_else(|| format!("0x{:04x}", sh.cipher.0));
                self.server_hello = Some(ServerHello { at, version, cipher, alpn });
            }
            TlsMessage::Handshake(TlsMessageHandshake::Certificate(c)) if !from_client && self.cert.is_none() => {
                if let Some(leaf) = c.cert_chain.first() {
                    self.cert = Some(cert::facts(leaf.data, c.cert_chain.len()));
                }
            }
            TlsMessage::Alert(a) => {
                let alert = Alert { description: alert_name(a.code), fatal: a.severity.0 == 2, from_client };
                if self.alert.as_ref().is_none_or(|old| !old.fatal) {
                    self.alert = Some(alert);
                }
            }
            _ => {}
        }
    }

    /// TLS 1.3 hides the certificate: say so rather than guess.
    pub fn is_tls13(&self) -> bool {
        self.server_hello.as_ref().is_some_and(|s| s.version == "TLSv1.3")
    }

    /// A record cut short by a close: its header claims more than its sender sent before
    /// closing. Only said when the kernel's copy of that direction was not cut first.
    pub fn truncated(&self) -> Option<String> {
        self.close?;
        self.streams.iter().find_map(|s| {
            let rest = &s.buf[s.cursor..];
            if rest.is_empty() || s.buf.len() >= COPIED_PER_DIRECTION {
                return None;
            }
            if rest.len() < 5 {
                return Some(format!("a record header cut after {} bytes", rest.len()));
            }
            let claimed = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            Some(format!("a record claims {claimed} bytes and stops after {}", rest.len() - 5))
        })
    }

    /// The flow's outcome, once it has one; `now` and `stall_after` judge a missing ServerHello.
    pub fn outcome(&self, now: Mono, stall_after: Duration) -> Option<Outcome> {
        if self.malformed.is_some() || self.truncated().is_some() {
            return Some(Outcome::Malformed);
        }
        if self.alert.as_ref().is_some_and(|a| a.fatal) {
            return Some(Outcome::Alert);
        }
        if self.done_at().is_some() {
            return Some(Outcome::Completed);
        }
        if self.close.is_some() {
            return Some(Outcome::Aborted);
        }
        if self.server_hello.is_none() && now.since(self.started) >= stall_after {
            return Some(Outcome::Stalled);
        }
        None
    }

    /// ClientHello to ServerHello.
    pub fn hello_latency(&self) -> Option<Duration> {
        self.server_hello.as_ref().map(|s| s.at.since(self.started))
    }

    /// When the handshake was done: application data in both directions, or (TLS 1.2 and
    /// earlier) ChangeCipherSpec from both sides. TLS 1.3 sends ChangeCipherSpec only for
    /// middleboxes, so it proves nothing there.
    fn done_at(&self) -> Option<Mono> {
        if let (Some(a), Some(b)) = (self.app[0], self.app[1]) {
            return Some(a.max(b));
        }
        let pre13 = self.server_hello.as_ref().is_some_and(|s| s.version != "TLSv1.3");
        match (pre13, self.ccs[0], self.ccs[1]) {
            (true, Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        }
    }

    /// ClientHello to a completed handshake (see `done_at`).
    pub fn complete_latency(&self) -> Option<Duration> {
        Some(self.done_at()?.since(self.started))
    }
}

#[cfg(test)]
pub mod tests;
