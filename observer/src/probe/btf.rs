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
        if kind == KIND_STRUCT && r.str_at(strs, str_len, name_off)? == name {
            for i in 0..vlen {
                let m = body + 12 * i;
                if r.str_at(strs, str_len, r.u32_at(m)?)? == member {
                    let raw = r.u32_at(m + 8)?;
                    // With kind_flag the low 24 bits are the bit offset, the top 8 a bitfield size.
                    let bits = if kind_flag { raw & 0x00ff_ffff } else { raw };
                    return Ok(bits / 8);
                }
            }
            return Err(BtfError::NoMember(name.to_owned(), member.to_owned()));
        }
        at = body + extra;
    }
    Err(BtfError::NoStruct(name.to_owned()))
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
    }
}
