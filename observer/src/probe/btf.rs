//! Just enough of a BTF reader to find a struct member's offset in the running kernel
//! (`/sys/kernel/btf/vmlinux`), so that nothing is hard-coded to one kernel's `struct sock`.
//! aya keeps its BTF type lookups private, hence this. Every read is bounds-checked: a
//! malformed blob gives an error, never a panic.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("BTF blob is truncated or malformed at byte {0}")]
    Malformed(usize),
    #[error("BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("struct `{0}` has no member `{1}`")]
    NoMember(String, String),
    #[error("BTF kind {0} is unknown to observer")]
    UnknownKind(u32),
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u32_at(&self, at: usize) -> Result<u32, BtfError> {
        let b = self.0.get(at..at + 4).ok_or(BtfError::Malformed(at))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn str_at(&self, start: usize, len: usize, off: u32) -> Result<&str, BtfError> {
        let at = start.checked_add(off as usize).ok_or(BtfError::Malformed(start))?;
        let end = start + len;
        let tail = self.0.get(at..end).ok_or(BtfError::Malformed(at))?;
        let n = tail.iter().position(|&b| b == 0).ok_or(BtfError::Malformed(at))?;
        std::str::from_utf8(&tail[..n]).map_err(|_| BtfError::Malformed(at))
    }
}

/// Byte offset of `member` in `struct name`.
/// The way from a socket to the errno of its first queued error: offsets of
/// sock.sk_error_queue, sk_buff_head.next, sk_buff.cb, and sock_exterr_skb.ee plus
/// sock_extended_err.ee_errno (summed).
pub fn error_queue_layout(blob: &[u8]) -> Result<[u32; 4], BtfError> {
    let ee = member_offset(blob, "sock_exterr_skb", "ee")? + member_offset(blob, "sock_extended_err", "ee_errno")?;
    Ok([member_offset(blob, "sock", "sk_error_queue")?, member_offset(blob, "sk_buff_head", "next")?, member_offset(blob, "sk_buff", "cb")?, ee])
}

/// One type record: its kind, name, member count, kind flag and where its members start.
#[derive(Clone, Copy)]
struct TypeRec {
    kind: u32,
    name_off: u32,
    vlen: usize,
    kind_flag: bool,
    body: usize,
}

const KIND_UNION: u32 = 5;
/// Anonymous structs and unions followed, at most (sock_common nests one level).
const MAX_NESTING: usize = 4;

/// Offset in bytes of `member` in `struct name`, looking inside anonymous struct and union
/// members (as C does: `sk->__sk_common.skc_daddr` sits in an unnamed union).
pub fn member_offset(blob: &[u8], name: &str, member: &str) -> Result<u32, BtfError> {
    let r = Reader(blob);
    let magic = blob.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or(BtfError::Malformed(0))?;
    if magic != MAGIC {
        return Err(BtfError::Malformed(0));
    }
    let hdr_len = r.u32_at(4)? as usize;
    let type_off = r.u32_at(8)? as usize;
    let type_len = r.u32_at(12)? as usize;
    let str_off = r.u32_at(16)? as usize;
    let str_len = r.u32_at(20)? as usize;
    let types = hdr_len.checked_add(type_off).ok_or(BtfError::Malformed(8))?;
    let types_end = types.checked_add(type_len).ok_or(BtfError::Malformed(12))?;
    let strs = hdr_len.checked_add(str_off).ok_or(BtfError::Malformed(16))?;
    if types_end > blob.len() || strs.checked_add(str_len).is_none_or(|e| e > blob.len()) {
        return Err(BtfError::Malformed(types_end));
    }
    // Type ids start at 1; index 0 stands for void.
    let mut recs = vec![TypeRec { kind: 0, name_off: 0, vlen: 0, kind_flag: false, body: 0 }];
    let mut at = types;
    while at < types_end {
        let name_off = r.u32_at(at)?;
        let info = r.u32_at(at + 4)?;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let kind_flag = info >> 31 == 1;
        let body = at + 12;
        let extra = match kind {
            1 | 14 | 17 => 4,
            2 | 7..=12 | 16 | 18 => 0,
            3 => 12,
            4 | 5 => 12 * vlen,
            6 | 13 => 8 * vlen,
            15 | 19 => 12 * vlen,
            k => return Err(BtfError::UnknownKind(k)),
        };
        recs.push(TypeRec { kind, name_off, vlen, kind_flag, body });
        at = body + extra;
    }
    for rec in &recs[1..] {
        if rec.kind == KIND_STRUCT && r.str_at(strs, str_len, rec.name_off)? == name {
            return find_member(&r, &recs, (strs, str_len), rec, member, 0)?
                .ok_or_else(|| BtfError::NoMember(name.to_owned(), member.to_owned()));
        }
    }
    Err(BtfError::NoStruct(name.to_owned()))
}

/// `member`'s offset in the struct or union `rec`, through its anonymous members.
fn find_member(r: &Reader, recs: &[TypeRec], strs: (usize, usize), rec: &TypeRec, member: &str, depth: usize) -> Result<Option<u32>, BtfError> {
    for i in 0..rec.vlen {
        let m = rec.body + 12 * i;
        let name = r.str_at(strs.0, strs.1, r.u32_at(m)?)?;
        let raw = r.u32_at(m + 8)?;
        let bits = if rec.kind_flag { raw & 0x00ff_ffff } else { raw };
        if name == member {
            return Ok(Some(bits / 8));
        }
        if name.is_empty() && depth < MAX_NESTING {
            let Some(inner) = recs.get(r.u32_at(m + 4)? as usize) else { continue };
            if (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                && let Some(off) = find_member(r, recs, strs, inner, member, depth + 1)?
            {
                return Ok(Some(bits / 8 + off));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `int` and `struct sock { int a; int sk_err; }` (sk_err at byte 4).
    fn blob(kind_flag: bool) -> Vec<u8> {
        let strings = b"\0int\0sock\0a\0sk_err\0".to_vec();
        let mut types = Vec::new();
        let mut push = |v: u32| types.extend_from_slice(&v.to_le_bytes());
        // [1] int: name "int", kind 1, size 4, encoding word.
        push(1);
        push(1 << 24);
        push(4);
        push(32);
        // [2] struct sock, two members.
        push(5);
        push((4 << 24) | 2 | if kind_flag { 1 << 31 } else { 0 });
        push(8);
        push(10); // "a"
        push(1);
        push(0);
        push(12); // "sk_err"
        push(1);
        push(32);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_member_offsets() {
        assert_eq!(member_offset(&blob(false), "sock", "sk_err"), Ok(4));
        assert_eq!(member_offset(&blob(true), "sock", "sk_err"), Ok(4));
        assert_eq!(member_offset(&blob(false), "sock", "a"), Ok(0));
    }

    #[test]
    fn says_what_is_missing() {
        assert_eq!(member_offset(&blob(false), "sk_buff", "len"), Err(BtfError::NoStruct("sk_buff".into())));
        assert!(matches!(member_offset(&blob(false), "sock", "nope"), Err(BtfError::NoMember(..))));
    }

    #[test]
    fn truncated_or_garbage_blobs_are_errors_not_panics() {
        let b = blob(false);
        for cut in 0..b.len() {
            let _ = member_offset(&b[..cut], "sock", "sk_err");
        }
        assert!(member_offset(&[0xff; 64], "sock", "sk_err").is_err());
        let mut huge = b.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(member_offset(&huge, "sock", "sk_err").is_err());
    }

    #[test]
    fn reads_the_running_kernel_when_it_has_btf() {
        let Ok(vmlinux) = std::fs::read("/sys/kernel/btf/vmlinux") else { return };
        let off = member_offset(&vmlinux, "sock", "sk_err").expect("struct sock has sk_err");
        assert!(off > 0 && off < 4096, "{off}");
        // Inside anonymous unions: the address pair, then the port pair.
        let daddr = member_offset(&vmlinux, "sock_common", "skc_daddr").expect("skc_daddr");
        let saddr = member_offset(&vmlinux, "sock_common", "skc_rcv_saddr").expect("skc_rcv_saddr");
        let dport = member_offset(&vmlinux, "sock_common", "skc_dport").expect("skc_dport");
        let num = member_offset(&vmlinux, "sock_common", "skc_num").expect("skc_num");
        assert_eq!((daddr, saddr, num - dport), (0, 4, 2));
        let q = error_queue_layout(&vmlinux).expect("the error queue's members");
        assert!(q[0] > 0 && q[2] > 0 && q[3] >= 16, "{q:?}");
    }
}
