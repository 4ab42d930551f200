//! One DNS message parsed with simple-dns: the question and, for a response, what came back.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use simple_dns::{Packet, PacketFlag, RCODE, rdata::RData};

use super::nc;
use crate::layers::small_set::SmallSet;

/// The question, and for a response what came back. The name is shared (`Arc`): a parsed
/// message is kept for its repeats (see `cache`), and the name goes into the tables as is.
/// No id: a kept parse serves repeats with other ids, so the id is read from each message
/// (`dns_id`).
#[derive(Debug)]
pub struct Parsed {
    pub qname: Option<(Arc<str>, QType)>,
    pub rcode: usize,
    pub truncated: bool,
    pub addresses: SmallSet<IpAddr>,
    pub answers: SmallSet<String>,
    pub nodata: bool,
}

/// Parse one message. Hostile input (compression loops, names over 255 bytes, bad label
/// lengths, truncated headers) is an error from simple-dns, never a panic.
pub fn parse(bytes: &[u8]) -> Result<Parsed, simple_dns::SimpleDnsError> {
    let p = Packet::parse(bytes)?;
    let qname = p.questions.first().map(|q| (Arc::from(name_text(&q.qname)), qtype_name(q.qtype)));
    let rcode = match p.rcode() {
        RCODE::NoError => nc::NOERROR,
        RCODE::NameError => nc::NXDOMAIN,
        RCODE::ServerFailure => nc::SERVFAIL,
        RCODE::Refused => nc::REFUSED,
        _ => nc::OTHER_RCODE,
    };
    let mut addresses = Vec::new();
    let mut answers = Vec::new();
    for rr in &p.answers {
        match &rr.rdata {
            RData::A(a) => {
                let ip = IpAddr::V4(Ipv4Addr::from(a.address));
                addresses.push(ip);
                answers.push(ip.to_string());
            }
            RData::AAAA(a) => {
                let ip = IpAddr::V6(Ipv6Addr::from(a.address));
                addresses.push(ip);
                answers.push(ip.to_string());
            }
            RData::CNAME(c) => {
                answers.push(format!("CNAME {}", c.0.to_string().trim_end_matches('.')));
            }
            _ => {}
        }
    }
    let asked_addresses = qname.as_ref().is_some_and(|(_, t)| matches!(t.as_str(), "A" | "AAAA"));
    let nodata = rcode == nc::NOERROR
        && if asked_addresses { addresses.is_empty() } else { p.answers.is_empty() };
    Ok(Parsed {
        qname,
        rcode,
        truncated: p.has_flags(PacketFlag::TRUNCATION),
        addresses: addresses.into_iter().collect(),
        answers: answers.into_iter().collect(),
        nodata,
    })
}

/// The name lower-cased, without the trailing dot. Built from the labels' bytes in one
/// allocation; a name with bytes other than printable ASCII goes through simple-dns's own
/// text form, which escapes them.
fn name_text(n: &simple_dns::Name<'_>) -> String {
    let plain = n.as_bytes().all(|l| l.iter().all(|b| b.is_ascii_graphic() && *b != b'.' && *b != b'\\'));
    if !plain {
        return n.to_string().trim_end_matches('.').to_ascii_lowercase();
    }
    let mut out = String::with_capacity(64);
    for label in n.as_bytes() {
        if !out.is_empty() {
            out.push('.');
        }
        out.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    out
}

fn qtype_name(q: simple_dns::QTYPE) -> QType {
    QType::new(&match q {
        simple_dns::QTYPE::TYPE(t) => format!("{t:?}"),
        other => format!("{other:?}"),
    })
}

/// A query type's name ("A", "AAAA", "TYPE65280"), held inline: it is half of every name's
/// key, and 50,000 names each held a heap allocation for two to four letters. Longer names
/// (none of simple-dns's) are cut at 15 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct QType {
    bytes: [u8; 15],
    len: u8,
}

impl QType {
    pub fn new(name: &str) -> QType {
        let mut n = name.len().min(15);
        while !name.is_char_boundary(n) {
            n -= 1;
        }
        let mut bytes = [0u8; 15];
        bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        QType { bytes, len: n as u8 }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len).min(15)]).unwrap_or_default()
    }
}

impl std::ops::Deref for QType {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// As the text orders.
impl Ord for QType {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for QType {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for QType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for QType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

pub fn dns_id(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
}

/// Whether the header's rcode (the low 4 bits of its fourth byte) is NXDOMAIN: read as the
/// kernel reads it, also when the rest of the message does not parse.
pub fn is_nxdomain(bytes: &[u8]) -> bool {
    bytes.get(3).is_some_and(|b| b & 0x0f == 3)
}

#[cfg(test)]
mod tests {
    use simple_dns::{CLASS, Name, Packet, Question, TYPE};

    fn query(name: &str) -> Vec<u8> {
        let mut p = Packet::new_query(7);
        p.questions.push(Question::new(Name::new_unchecked(name), TYPE::AAAA.into(), CLASS::IN.into(), false));
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn names_are_lower_cased_without_the_root_dot_and_odd_bytes_are_escaped() {
        let (name, qtype) = super::parse(&query("Api.Example.COM")).unwrap().qname.unwrap();
        assert_eq!((&*name, qtype.as_str()), ("api.example.com", "AAAA"));
        let mut types = ["NS", "A", "AAAA", "TYPE65280", "MX"].map(super::QType::new);
        types.sort();
        assert_eq!(types.map(|t| t.to_string()), ["A", "AAAA", "MX", "NS", "TYPE65280"], "ordered as text");
        assert_eq!(super::QType::new("ABCDEFGHIJKLMNOPQ").as_str(), "ABCDEFGHIJKLMNO", "cut at 15 bytes");
        assert_eq!(super::parse(&query("Api.Example.COM.")).unwrap().qname.unwrap().0.as_ref(), "api.example.com");
        // A label with a space: simple-dns's text form, as before.
        let odd = super::parse(&query("a b.test")).unwrap().qname.unwrap().0;
        assert!(odd.ends_with(".test") && odd.starts_with('a'), "{odd}");
    }
}
