//! Uprobes on OpenSSL (`SSL_write`, `SSL_read` and their `_ex` forms) in every libssl that a
//! process on this host maps, containers included (found through `/proc/PID/root`), and in
//! the host's own libssl so that processes that start later are covered from their first
//! call. A uprobe belongs to a file, not to a process: each distinct file is attached once.
//! fentry on tcp_sendmsg/tcp_recvmsg (or, where the kernel refuses it, the read/write syscall
//! tracepoints) tells which socket each call used.

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{FEntry, UProbe, uprobe::UProbeScope},
};

use observer_common::layout::SockLayout;

use crate::events::Disabled;

/// (entry program, symbol); the one return program follows every symbol.
const ENTRIES: [(&str, &str); 4] =
    [("ssl_write", "SSL_write"), ("ssl_write_ex", "SSL_write_ex"), ("ssl_read", "SSL_read"), ("ssl_read_ex", "SSL_read_ex")];
const RETURN: &str = "ssl_return";
const SYSCALLS: [&str; 4] = ["sys_enter_write", "sys_enter_read", "sys_enter_sendto", "sys_enter_recvfrom"];
/// Where distributions keep the host's own libssl.
const HOST_DIRS: [&str; 6] =
    ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib"];
const LIB_NAMES: [&str; 2] = ["libssl.so.3", "libssl.so.1.1"];
const SIGNALS: &str = "HTTP inside TLS (OpenSSL plaintext); Go crypto/tls, BoringSSL, rustls and statically linked OpenSSL are not covered";

pub struct SslProbes {
    /// (device, inode) of each libssl file attached.
    attached: HashSet<(u64, u64)>,
    pub libraries: Vec<String>,
    /// Files that could not be attached, with the reason (said once each).
    failed: Vec<(String, String)>,
}

impl SslProbes {
    /// Load the probes, and attach the first way of learning a call's socket that the kernel
    /// allows. Errors leave HTTPS unobserved, not the rest.
    /// `kernel_reads_sockets`: BTF gave `struct sock`'s offsets. Without them only the syscall
    /// tracepoints help: they record the fd, which userspace resolves through /proc.
    /// `raw_sock_tracepoints`: BTF also gave sock.sk_protocol, which the raw socket
    /// tracepoints read.
    pub fn load(ebpf: &mut Ebpf, tracefs: &Path, kernel_reads_sockets: bool, raw_sock_tracepoints: bool) -> anyhow::Result<SslProbes> {
        for (program, _) in ENTRIES.iter().chain([&(RETURN, "")]) {
            let p: &mut UProbe = ebpf.program_mut(program).with_context(|| format!("program {program} missing"))?.try_into()?;
            p.load().with_context(|| format!("the verifier rejected {program}"))?;
        }
        if !kernel_reads_sockets {
            attach_syscalls(ebpf, tracefs).context("no BTF for struct sock, and the syscall tracepoints failed")?;
            eprintln!(
                "observer: OpenSSL calls find their socket through the read/write syscall tracepoints and /proc, \
                 because the kernel has no BTF for struct sock: every syscall on this host takes the kernel's \
                 slower traced path while observer runs"
            );
            return Ok(SslProbes { attached: HashSet::new(), libraries: Vec::new(), failed: Vec::new() });
        }
        let how = match attach_fentry(ebpf) {
            Ok(()) => "fentry on tcp_sendmsg and tcp_recvmsg".to_owned(),
            Err(fentry) => match attach_sock_length(ebpf, tracefs, raw_sock_tracepoints) {
                Ok(()) => format!("the sock:sock_send_length and sock_recv_length tracepoints (fentry: {fentry:#})"),
                Err(sock) => {
                    attach_syscalls(ebpf, tracefs).with_context(|| {
                        format!("fentry failed ({fentry:#}), so did the socket tracepoints ({sock:#}) and the syscall tracepoints")
                    })?;
                    format!(
                        "the read/write syscall tracepoints, because fentry ({fentry:#}) and the socket tracepoints \
                         ({sock:#}) failed: every syscall on this host takes the kernel's slower traced path while observer runs"
                    )
                }
            },
        };
        eprintln!("observer: OpenSSL calls find their socket through {how}");
        Ok(SslProbes { attached: HashSet::new(), libraries: Vec::new(), failed: Vec::new() })
    }

    /// Attach to libssl files not attached yet: the host's own and those mapped by running
    /// processes. Returns lines to tell the user.
    pub fn refresh(&mut self, ebpf: &mut Ebpf, proc: &Path) -> Vec<String> {
        let mut notes = Vec::new();
        for path in candidates(proc) {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let id = (meta.dev(), meta.ino());
            if self.attached.contains(&id) || self.failed.iter().any(|(p, _)| *p == path.display().to_string()) {
                continue;
            }
            match attach(ebpf, &path) {
                Ok(()) => {
                    self.attached.insert(id);
                    self.libraries.push(path.display().to_string());
                    notes.push(format!("OpenSSL uprobes attached to {}", path.display()));
                }
                Err(e) => {
                    notes.push(format!("cannot attach OpenSSL uprobes to {}: {e:#}", path.display()));
                    self.failed.push((path.display().to_string(), format!("{e:#}")));
                }
            }
        }
        notes
    }

    pub fn disabled(&self) -> Vec<Disabled> {
        let mut v: Vec<Disabled> = self
            .failed
            .iter()
            .map(|(path, reason)| Disabled { source: format!("uprobe:{path}"), signals: SIGNALS, reason: reason.clone() })
            .collect();
        if self.attached.is_empty() && self.failed.is_empty() {
            v.push(Disabled {
                source: "uprobe:libssl".to_owned(),
                signals: SIGNALS,
                reason: "no libssl.so.3 or libssl.so.1.1 on this host or in any running process".to_owned(),
            });
        }
        v
    }
}

/// The way from a file descriptor to its socket's addresses, from BTF.
pub fn sock_layout(blob: &[u8]) -> Result<SockLayout, super::btf::BtfError> {
    let m = |s: &str, f: &str| super::btf::member_offset(blob, s, f);
    let common = m("sock", "__sk_common")?;
    Ok(SockLayout {
        enabled: 1,
        task_files: m("task_struct", "files")?,
        files_fdt: m("files_struct", "fdt")?,
        fdt_max_fds: m("fdtable", "max_fds")?,
        fdt_fd: m("fdtable", "fd")?,
        file_private_data: m("file", "private_data")?,
        socket_sk: m("socket", "sk")?,
        family: common + m("sock_common", "skc_family")?,
        daddr: common + m("sock_common", "skc_daddr")?,
        rcv_saddr: common + m("sock_common", "skc_rcv_saddr")?,
        dport: common + m("sock_common", "skc_dport")?,
        num: common + m("sock_common", "skc_num")?,
        v6_daddr: common + m("sock_common", "skc_v6_daddr")?,
        v6_rcv_saddr: common + m("sock_common", "skc_v6_rcv_saddr")?,
        sk_protocol: m("sock", "sk_protocol").unwrap_or(u32::MAX),
    })
}

/// The cheap way: only TCP sends and receives pay.
fn attach_fentry(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let btf = aya::Btf::from_sys_fs().context("no kernel BTF")?;
    for (program, function) in [("ssl_tcp_sendmsg", "tcp_sendmsg"), ("ssl_tcp_recvmsg", "tcp_recvmsg")] {
        let p: &mut FEntry = ebpf.program_mut(program).with_context(|| format!("program {program} missing"))?.try_into()?;
        p.load(function, &btf).with_context(|| format!("loading {program}"))?;
        p.attach().with_context(|| format!("attaching to {function}"))?;
    }
    Ok(())
}

/// Linux 6.3+: a tracepoint at every socket send and receive, with the socket.
fn attach_sock_length(ebpf: &mut Ebpf, tracefs: &Path, raw: bool) -> anyhow::Result<()> {
    let mut offsets = None;
    for name in ["sock_send_length", "sock_recv_length"] {
        let text = super::tracefs::read_format(tracefs, "sock", name).with_context(|| format!("no tracepoint sock:{name}"))?;
        let fields = super::tracefs::parse_format(&text);
        let (Some(sk), Some(protocol)) = (fields.get("sk"), fields.get("protocol")) else {
            anyhow::bail!("sock:{name} has no sk or protocol field");
        };
        if offsets.is_some_and(|o| o != (sk.offset, protocol.offset)) {
            anyhow::bail!("sock_send_length and sock_recv_length differ in layout");
        }
        offsets = Some((sk.offset, protocol.offset));
    }
    // The programs read these offsets from globals set at load time; the defaults are the
    // layout every kernel that has these tracepoints uses. Anything else is refused.
    if offsets != Some((8, 18)) {
        anyhow::bail!("sock:sock_send_length has sk and protocol at {offsets:?}, not (8, 18)");
    }
    // Raw first: a send or receive then costs no trace record. The tracepoints exist (the
    // formats above were read); a failure here leaves the classic ones.
    if raw && super::attach_raw_tracepoint(ebpf, "ssl_sock_length_raw", &["sock_send_length", "sock_recv_length"]).is_ok() {
        return Ok(());
    }
    super::attach_tracepoint(ebpf, "ssl_sock_length", "sock", &["sock_send_length", "sock_recv_length"])
}

/// The fallback: the read/write syscalls' tracepoints, looking only at threads inside a call.
fn attach_syscalls(ebpf: &mut Ebpf, tracefs: &Path) -> anyhow::Result<()> {
    let text = super::tracefs::read_format(tracefs, "syscalls", "sys_enter_write")
        .context("tracepoint syscalls:sys_enter_write not available")?;
    let fd = super::tracefs::parse_format(&text).get("fd").map(|f| f.offset).context("sys_enter_write has no fd field")?;
    if fd != 16 {
        anyhow::bail!("sys_enter_write's fd is at offset {fd}, not 16 as the program reads it");
    }
    super::attach_tracepoint(ebpf, "ssl_syscall", "syscalls", &SYSCALLS)
}

fn attach(ebpf: &mut Ebpf, path: &Path) -> anyhow::Result<()> {
    for (program, symbol) in ENTRIES {
        let p: &mut UProbe = ebpf.program_mut(program).context("program missing")?.try_into()?;
        p.attach(symbol, path, UProbeScope::AllProcesses).with_context(|| symbol.to_string())?;
        let r: &mut UProbe = ebpf.program_mut(RETURN).context("program missing")?.try_into()?;
        r.attach(symbol, path, UProbeScope::AllProcesses).with_context(|| format!("{symbol} (return)"))?;
    }
    Ok(())
}

/// libssl files: the host's, then every one a process maps, seen through its root.
fn candidates(proc: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in HOST_DIRS {
        for name in LIB_NAMES {
            let p = Path::new(dir).join(name);
            if p.exists() {
                out.push(p);
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(proc) else { return out };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(maps) = std::fs::read_to_string(e.path().join("maps")) else { continue };
        for lib in mapped_libssl(&maps) {
            let p = e.path().join("root").join(lib.trim_start_matches('/'));
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The libssl paths in a `/proc/PID/maps` text.
pub fn mapped_libssl(maps: &str) -> Vec<&str> {
    let mut v: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/') && p.rsplit('/').next().is_some_and(|f| f.starts_with("libssl.so")))
        .collect();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn libssl_paths_from_a_maps_file() {
        let maps = "7f00-7f01 r--p 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3\n\
                    7f01-7f02 r-xp 00001000 08:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3\n\
                    7f02-7f03 r--p 00000000 08:01 124 /usr/lib/x86_64-linux-gnu/libcrypto.so.3\n\
                    7f03-7f04 rw-p 00000000 00:00 0 \n\
                    7f04-7f05 r--p 00000000 08:01 125 /opt/app/lib/libssl.so.1.1 (deleted)\n";
        assert_eq!(super::mapped_libssl(maps), ["/usr/lib/x86_64-linux-gnu/libssl.so.3", "/opt/app/lib/libssl.so.1.1"]);
    }

    #[test]
    fn the_socket_layout_comes_from_the_running_kernel_when_it_has_btf() {
        let Ok(vmlinux) = std::fs::read("/sys/kernel/btf/vmlinux") else { return };
        let l = super::sock_layout(&vmlinux).expect("every member is in this kernel's BTF");
        assert_eq!((l.enabled, l.daddr, l.rcv_saddr), (1, 0, 4));
        assert!(l.v6_daddr > l.num && l.task_files > 0 && l.socket_sk > 0, "{l:?}");
    }
}
