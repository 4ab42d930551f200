//! Tracepoint field offsets from tracefs `format` files, and a tracefs to read them from.

use std::{
    collections::HashMap,
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use observer_common::layout::{TpLayout, addr_style};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at {path} failed: {source}. Mount it with \
         `mount -t tracefs nodev /sys/kernel/tracing` and start observer again"
    )]
    Mount { path: PathBuf, source: io::Error },
}

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

fn has_events(dir: &Path) -> bool {
    dir.join("events").is_dir()
}

/// Find a mounted tracefs, or mount one at /sys/kernel/tracing. When observer has to mount
/// it, it first moves into a mount namespace of its own, so the host's mount table is left as
/// it was. Must run before any thread starts (unshare(CLONE_NEWNS) refuses threaded callers).
pub fn ensure_tracefs() -> Result<PathBuf, TracefsError> {
    if let Some(found) = CANDIDATES.iter().map(Path::new).find(|p| has_events(p)) {
        return Ok(found.to_owned());
    }
    let target = Path::new(CANDIDATES[0]);
    let mount = |target: &Path| -> io::Result<()> {
        let c = |s: &str| CString::new(s).expect("no NUL in constant");
        let dir = CString::new(target.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        // SAFETY: plain syscalls with valid NUL-terminated strings.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Keep our mount from propagating back to the host.
            let root = c("/");
            let none = c("none");
            if libc::mount(none.as_ptr(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fstype = c("tracefs");
            let src = c("nodev");
            if libc::mount(src.as_ptr(), dir.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    mount(target).map_err(|source| TracefsError::Mount { path: target.to_owned(), source })?;
    Ok(target.to_owned())
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u16,
    pub size: u16,
}

/// Parse the `field:` lines of a tracefs `format` file into name -> (offset, size). Array
/// suffixes are dropped (`saddr[4]` -> `saddr`).
pub fn parse_format(text: &str) -> HashMap<String, Field> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in line.split(';') {
            let part = part.trim();
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d.trim());
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.trim().parse::<u16>().ok();
            } else if let Some(s) = part.strip_prefix("size:") {
                size = s.trim().parse::<u16>().ok();
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else { continue };
        let Some(name) = decl.split_whitespace().last() else { continue };
        let name = name.split('[').next().unwrap_or(name).trim_start_matches('*');
        fields.insert(name.to_owned(), Field { offset, size });
    }
    fields
}

/// The fields a program reads from one tracepoint.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    pub skaddr: bool,
    pub state: bool,
    pub set_state: bool,
    pub protocol: bool,
    pub addresses: bool,
}

impl Needs {
    pub const NONE: Needs =
        Needs { skaddr: false, state: false, set_state: false, protocol: false, addresses: false };
}

/// Build a [`TpLayout`] from parsed fields, or say which field is missing or has an
/// unexpected size.
pub fn build_layout(fields: &HashMap<String, Field>, needs: Needs) -> Result<TpLayout, String> {
    let mut l = TpLayout::DISABLED;
    let get = |name: &str, size: u16| -> Result<u16, String> {
        match fields.get(name) {
            Some(f) if f.size == size => Ok(f.offset),
            Some(f) => Err(format!("field `{name}` is {} bytes, expected {size}", f.size)),
            None => Err(format!("no field `{name}`")),
        }
    };
    if needs.skaddr {
        l.skaddr = get("skaddr", 8)?;
    }
    if needs.state {
        l.state = get("state", 4)?;
    }
    if needs.set_state {
        l.oldstate = get("oldstate", 4)?;
        l.newstate = get("newstate", 4)?;
    }
    if needs.protocol {
        l.protocol = get("protocol", 2)?;
    }
    if needs.addresses {
        if fields.contains_key("sport") {
            l.addr_style = addr_style::SPLIT;
            l.sport = get("sport", 2)?;
            l.dport = get("dport", 2)?;
            l.family = get("family", 2)?;
            l.saddr = get("saddr", 4)?;
            l.daddr = get("daddr", 4)?;
            l.saddr_v6 = get("saddr_v6", 16)?;
            l.daddr_v6 = get("daddr_v6", 16)?;
        } else {
            // sockaddr_in6 storage: family, port and address all live inside it.
            l.addr_style = addr_style::SOCKADDR;
            l.saddr = get("saddr", 28)?;
            l.daddr = get("daddr", 28)?;
        }
    }
    l.enabled = 1;
    Ok(l)
}

/// Read `events/<category>/<name>/format` under `tracefs`.
pub fn read_format(tracefs: &Path, category: &str, name: &str) -> io::Result<String> {
    fs::read_to_string(tracefs.join("events").join(category).join(name).join("format"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET_STATE: &str = "name: inet_sock_set_state
ID: 1440
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;

print fmt: \"family=%s\"
";

    const SEND_RESET_610: &str = "
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:60;\tsize:28;\tsigned:0;
";

    #[test]
    fn reads_offsets_and_strips_array_suffixes() {
        let f = parse_format(SET_STATE);
        assert_eq!(f["skaddr"], Field { offset: 8, size: 8 });
        assert_eq!(f["daddr_v6"], Field { offset: 56, size: 16 });
        let l = build_layout(
            &f,
            Needs { skaddr: true, set_state: true, protocol: true, addresses: true, ..Needs::NONE },
        )
        .unwrap();
        assert_eq!((l.enabled, l.addr_style, l.oldstate, l.newstate), (1, addr_style::SPLIT, 16, 20));
        assert_eq!((l.sport, l.dport, l.family, l.protocol, l.daddr), (24, 26, 28, 30, 36));
    }

    #[test]
    fn sockaddr_style_when_there_are_no_port_fields() {
        let f = parse_format(SEND_RESET_610);
        let l = build_layout(&f, Needs { skaddr: true, addresses: true, ..Needs::NONE }).unwrap();
        assert_eq!((l.addr_style, l.saddr, l.daddr, l.skaddr), (addr_style::SOCKADDR, 32, 60, 16));
    }

    #[test]
    fn missing_or_resized_fields_are_named() {
        let f = parse_format(SEND_RESET_610);
        let err = build_layout(&f, Needs { protocol: true, ..Needs::NONE }).unwrap_err();
        assert_eq!(err, "no field `protocol`");
        let odd = SET_STATE.replace("size:4;\tsigned:1;\n\tfield:int newstate", "size:8;\tsigned:1;\n\tfield:int newstate");
        let err = build_layout(&parse_format(&odd), Needs { set_state: true, ..Needs::NONE }).unwrap_err();
        assert_eq!(err, "field `oldstate` is 8 bytes, expected 4");
    }

    #[test]
    fn garbage_is_ignored_not_fatal() {
        assert!(parse_format("field:\noffset:x;size:;\n\u{0}\u{ff}").is_empty());
    }
}
