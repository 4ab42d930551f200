//! Loading the layer 3 programs: sock_ops on the root cgroup (loss and RTT of established
//! connections), `skb:kfree_skb` (drops on this host) and the connect syscall tracepoints
//! (connects that fail before any SYN). Each can fail alone; what it would have given is
//! then one `disabled` entry.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, SockOps},
};
use observer_common::route::{ConnectSyscallLayout, DropLayout, SKB_BLOCK, TcpSockLayout};

use super::{btf, tracefs};
use crate::events::Disabled;

/// The drop program's offsets, and the kernel's names of its drop reasons.
pub fn drop_layout(tracefs_dir: &Path, vmlinux: Option<&[u8]>) -> Result<(DropLayout, DropReasons), String> {
    let text = tracefs::read_format(tracefs_dir, "skb", "kfree_skb").map_err(|e| format!("tracepoint skb:kfree_skb not available ({e})"))?;
    let fields = tracefs::parse_format(&text);
    let field = |name: &str, size: u16| match fields.get(name) {
        Some(f) if f.size == size => Ok(u32::from(f.offset)),
        Some(f) => Err(format!("skb:kfree_skb field `{name}` is {} bytes, expected {size}", f.size)),
        None => Err(format!("skb:kfree_skb has no field `{name}`")),
    };
    let blob = vmlinux.ok_or("no kernel BTF (/sys/kernel/btf/vmlinux): the skb's header offsets are unknown")?;
    let member = |m: &str| btf::member_offset(blob, "sk_buff", m).map_err(|e| e.to_string());
    let mut layout = DropLayout {
        enabled: 1,
        tp_skbaddr: field("skbaddr", 8)?,
        tp_protocol: field("protocol", 2)?,
        // Kernels before 5.17 do not say why.
        tp_reason: field("reason", 4).unwrap_or(u32::MAX),
        protocol: member("protocol")?,
        head: member("head")?,
        network_header: member("network_header")?,
        transport_header: member("transport_header")?,
        sk: member("sk")?,
        dev: member("dev")?,
        // possible_net_t holds just the pointer.
        dev_net: btf::member_offset(blob, "net_device", "nd_net").map_err(|e| e.to_string())?,
        sk_net: btf::member_offset(blob, "sock_common", "skc_net").map_err(|e| e.to_string())?,
        net_inum: btf::member_offset(blob, "net", "ns").map_err(|e| e.to_string())?
            + btf::member_offset(blob, "ns_common", "inum").map_err(|e| e.to_string())?,
        netns_inum: netns_inode()?,
        ..DropLayout::default()
    };
    // One read for the three header fields when they sit close together (they do, at the
    // end of sk_buff's headers group), one for dev and sk when adjacent.
    let fields = [layout.protocol, layout.transport_header, layout.network_header, layout.head];
    let start = fields.iter().copied().min().unwrap_or(0);
    let end = (layout.head + 8).max(layout.transport_header + 2).max(layout.network_header + 2).max(layout.protocol + 2);
    if end - start <= SKB_BLOCK {
        (layout.block_start, layout.block_len) = (start, SKB_BLOCK);
        (layout.block_protocol, layout.block_th) = (layout.protocol - start, layout.transport_header - start);
        (layout.block_nh, layout.block_head) = (layout.network_header - start, layout.head - start);
    }
    layout.dev_sk_adjacent = u32::from(layout.sk == layout.dev + 8);
    let reasons = DropReasons::from_format(&text);
    layout.routine = reasons.routine_bitmap();
    Ok((layout, reasons))
}

/// The inode number of this process's network namespace.
fn netns_inode() -> Result<u32, String> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata("/proc/self/ns/net").map_err(|e| format!("cannot stat /proc/self/ns/net: {e}"))?.ino();
    u32::try_from(ino).map_err(|_| format!("network namespace inode {ino} does not fit 32 bits"))
}

/// The connect syscall tracepoints' offsets.
pub fn connect_layout(tracefs_dir: &Path) -> Result<ConnectSyscallLayout, String> {
    let offset = |name: &str, field: &str| -> Result<u32, String> {
        let text = tracefs::read_format(tracefs_dir, "syscalls", name).map_err(|e| format!("tracepoint syscalls:{name} not available ({e})"))?;
        match tracefs::parse_format(&text).get(field) {
            Some(f) if f.size == 8 => Ok(u32::from(f.offset)),
            _ => Err(format!("syscalls:{name} has no 8-byte field `{field}`")),
        }
    };
    Ok(ConnectSyscallLayout { enabled: 1, uservaddr: offset("sys_enter_connect", "uservaddr")?, ret: offset("sys_exit_connect", "ret")? })
}

/// `enum skb_drop_reason` names, from the tracepoint's own format (`__print_symbolic`), so
/// that they match the running kernel (the numbers change between versions).
#[derive(Debug, Clone, Default)]
pub struct DropReasons(HashMap<u32, String>);

impl DropReasons {
    pub fn from_format(text: &str) -> DropReasons {
        let mut names = HashMap::new();
        let Some(at) = text.find("__print_symbolic(") else { return DropReasons(names) };
        for item in text[at..].split('{').skip(1) {
            let Some((num, rest)) = item.split_once(',') else { continue };
            let Ok(n) = num.trim().parse::<u32>() else { continue };
            if let Some(name) = rest.split('"').nth(1) {
                names.insert(n, name.to_owned());
            }
        }
        DropReasons(names)
    }

    /// Reasons below 128 whose drops are routine (not judged): the kernel counts those per
    /// reason only.
    pub fn routine_bitmap(&self) -> [u64; 2] {
        let mut bits = [0u64; 2];
        for (n, name) in &self.0 {
            if *n < 128 && !crate::layers::routing::drop_loses_traffic(name) {
                bits[(*n / 64) as usize] |= 1 << (n % 64);
            }
        }
        bits
    }

    /// "NETFILTER_DROP"; "unknown" where the kernel does not say (before 5.17).
    pub fn name(&self, reason: u32) -> String {
        match self.0.get(&reason) {
            Some(n) => n.clone(),
            None if reason == 0 => "unknown".to_owned(),
            None => format!("reason {reason}"),
        }
    }
}

/// The root of the cgroup v2 hierarchy, opened; with the directory observer mounted it on
/// when the host had it nowhere (a v1-only host, a bare VM, or `ip netns exec`, which
/// remounts /sys): that mount is removed once the program is attached (the link keeps the
/// cgroup), so the host's mount table is left as it was.
fn cgroup2_root() -> anyhow::Result<(std::fs::File, PathBuf, bool)> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    if let Some(path) = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| f.get(1).map(|p| PathBuf::from(p.replace("\\040", " "))))?
    }) {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        return Ok((file, path, false));
    }
    // A directory of its own that an unprivileged user with the capabilities can create.
    let dir = std::env::temp_dir().join(format!("observer-cgroup2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let c = |s: &[u8]| std::ffi::CString::new(s).expect("no NUL");
    let (src, fstype, target) = (c(b"none"), c(b"cgroup2"), c(dir.as_os_str().as_encoded_bytes()));
    // SAFETY: a plain syscall with valid NUL-terminated strings.
    if unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) } != 0 {
        let e = std::io::Error::last_os_error();
        anyhow::bail!("no cgroup v2 hierarchy is mounted, and mounting one at {} failed: {e}", dir.display());
    }
    let file = std::fs::File::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    Ok((file, dir, true))
}

/// Attach what was loaded with a layout. Returns the attached names and the disabled ones.
/// `drops`: whether kfree_skb can be watched, and whether it passes its drop reason.
pub fn attach(ebpf: &mut Ebpf, drops: Option<bool>, connects: bool) -> (Vec<String>, Vec<Disabled>) {
    let mut attached = Vec::new();
    let mut disabled = Vec::new();
    match attach_sock_ops(ebpf) {
        Ok(root) => attached.push(format!("sock_ops:cgroup {}", root.display())),
        Err(e) => disabled.push(Disabled {
            source: "sock_ops:root cgroup".to_owned(),
            signals: "retransmit ratios, loss by kind and RTT of established connections",
            reason: format!("{e:#}"),
        }),
    }
    if let Some(has_reason) = drops {
        // The raw tracepoint first: a drop then costs no trace record. Its program reads the
        // reason argument, which kernels before 5.17 do not pass.
        let raw = if has_reason { super::attach_raw_tracepoint(ebpf, "kfree_skb_raw", &["kfree_skb"]) } else { Err(anyhow::anyhow!("no reason argument")) };
        match raw {
            Ok(()) => attached.push("raw_tp:kfree_skb".to_owned()),
            Err(raw) => match super::attach_tracepoint(ebpf, "kfree_skb", "skb", &["kfree_skb"]) {
                Ok(()) => attached.push("skb:kfree_skb".to_owned()),
                Err(e) => disabled.push(drops_disabled(format!("{e:#} (raw tracepoint: {raw:#})"))),
            },
        }
    }
    if connects {
        let r = super::attach_tracepoint(ebpf, "sys_enter_connect", "syscalls", &["sys_enter_connect"])
            .and_then(|()| super::attach_tracepoint(ebpf, "sys_exit_connect", "syscalls", &["sys_exit_connect"]));
        match r {
            Ok(()) => attached.push("syscalls:sys_{enter,exit}_connect".to_owned()),
            Err(e) => disabled.push(connects_disabled(format!("{e:#}"))),
        }
    }
    (attached, disabled)
}

/// Where the retransmit tracepoint reads a connection's counters (one sock_ops does not
/// sample: older than observer).
pub fn tcp_sock_layout(vmlinux: Option<&[u8]>) -> Result<TcpSockLayout, String> {
    let blob = vmlinux.ok_or("no kernel BTF (/sys/kernel/btf/vmlinux): struct tcp_sock's offsets are unknown")?;
    let member = |s: &str, m: &str| btf::member_offset(blob, s, m).map_err(|e| e.to_string());
    Ok(TcpSockLayout {
        enabled: 1,
        cookie: member("sock", "__sk_common")? + member("sock_common", "skc_cookie")?,
        data_segs_out: member("tcp_sock", "data_segs_out")?,
        total_retrans: member("tcp_sock", "total_retrans")?,
        srtt_us: member("tcp_sock", "srtt_us")?,
        lost_out: member("tcp_sock", "lost_out")?,
        icsk_retransmits: member("inet_connection_sock", "icsk_retransmits")?,
    })
}

pub fn older_disabled(reason: String) -> Disabled {
    Disabled {
        source: "btf:struct tcp_sock".to_owned(),
        signals: "loss and RTT of connections established before observer started",
        reason,
    }
}

pub fn drops_disabled(reason: String) -> Disabled {
    Disabled { source: "skb:kfree_skb".to_owned(), signals: "packets dropped on this host (local loss told from path loss)", reason }
}

pub fn connects_disabled(reason: String) -> Disabled {
    Disabled {
        source: "syscalls:sys_{enter,exit}_connect".to_owned(),
        signals: "connects that fail before any SYN (no route, no free local port)",
        reason,
    }
}

fn attach_sock_ops(ebpf: &mut Ebpf) -> anyhow::Result<PathBuf> {
    let (cgroup, root, mounted) = cgroup2_root()?;
    let attached = (|| -> anyhow::Result<()> {
        let prog: &mut SockOps = ebpf.program_mut("observer_sockops").context("program observer_sockops missing")?.try_into()?;
        prog.load().context("the verifier rejected observer_sockops")?;
        // A link (5.7+) always sits beside any other sock_ops program (a CNI's), and takes
        // no flags; before links, aya falls back to a plain attach.
        prog.attach(&cgroup, CgroupAttachMode::Single).with_context(|| format!("attaching to {}", root.display()))?;
        Ok(())
    })();
    drop(cgroup);
    if mounted {
        let target = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).expect("no NUL");
        // SAFETY: a plain syscall with a valid NUL-terminated path. Lazy: nothing holds it.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&root);
    }
    attached.map(|()| root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_names_come_from_the_tracepoint_format() {
        let text = r#"print fmt: "reason: %s", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 12, "NETFILTER_DROP" }, { 128, "MAX" })"#;
        let r = DropReasons::from_format(text);
        assert_eq!((r.name(12), r.name(2), r.name(0), r.name(77)), ("NETFILTER_DROP".into(), "NOT_SPECIFIED".into(), "unknown".into(), "reason 77".into()));
        assert_eq!(DropReasons::from_format("garbage { x, \"y\" }").name(1), "reason 1");
        // NOT_SPECIFIED (2) is routine, NETFILTER_DROP (12) is not.
        assert_eq!(r.routine_bitmap(), [1 << 2, 0]);
    }
}
