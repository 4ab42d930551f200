//! Capability and kernel checks that turn "Operation not permitted" into a sentence that
//! says what to do.

use std::path::Path;

use caps::{CapSet, Capability};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "observer needs {missing} to load its eBPF programs; run it as root: `sudo {exe} {args}`, \
         or grant the capabilities once: `sudo setcap {setcap}+ep {exe}`"
    )]
    Missing { missing: String, exe: String, args: String, setcap: String },
    #[error("cannot read or change this process's capabilities: {0}")]
    Read(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "this kernel ({release}) has no BPF ring buffer, which observer needs (Linux 5.8 or later)"
    )]
    NoRingBuf { release: String },
}

/// What observer needs: BPF and PERFMON to load tracing programs (SYS_ADMIN stands in for both
/// on kernels before 5.8), NET_ADMIN for TC links, SYS_ADMIN and DAC_READ_SEARCH to mount and
/// read tracefs, SYS_PTRACE to find libssl in other processes (the OpenSSL uprobes).
const SETCAP: &str = "cap_bpf,cap_perfmon,cap_net_admin,cap_sys_admin,cap_dac_read_search,cap_sys_ptrace";

pub fn check_capabilities() -> Result<(), PrivilegeError> {
    let eff = caps::read(None, CapSet::Effective).map_err(|e| PrivilegeError::Read(e.to_string()))?;
    let admin = eff.contains(&Capability::CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !eff.contains(&Capability::CAP_BPF) && !admin {
        missing.push("CAP_BPF");
    }
    if !eff.contains(&Capability::CAP_PERFMON) && !admin {
        missing.push("CAP_PERFMON");
    }
    if !eff.contains(&Capability::CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        return Ok(());
    }
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "observer".to_owned());
    let args: Vec<String> = std::env::args().skip(1).collect();
    Err(PrivilegeError::Missing {
        missing: missing.join(", "),
        exe,
        args: args.join(" "),
        setcap: SETCAP.to_owned(),
    })
}

/// The account observer continues as once attached: the user behind sudo, else `nobody`.
/// None when observer does not run as root (a binary given file capabilities): it already
/// runs as its user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

pub fn account_after_attach() -> Option<Account> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let env = |k: &str| std::env::var(k).ok()?.parse::<u32>().ok();
    match (env("SUDO_UID"), env("SUDO_GID")) {
        (Some(uid), Some(gid)) if uid != 0 => Some(Account { uid, gid }),
        _ => Some(nobody()),
    }
}

/// From the password database; 65534 where it has no `nobody`.
fn nobody() -> Account {
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once, one thread.
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    if pw.is_null() {
        return Account { uid: 65534, gid: 65534 };
    }
    let pw = unsafe { &*pw };
    Account { uid: pw.pw_uid, gid: pw.pw_gid }
}

/// What observer keeps after attach: CAP_NET_ADMIN and CAP_BPF to attach to interfaces that
/// come up later (and, on kernels before 6.x with unprivileged BPF disabled, to read its own
/// maps). With the OpenSSL uprobes on, also what they need later: CAP_PERFMON to attach to a
/// libssl that a new container brings, CAP_SYS_PTRACE to read other processes'
/// `/proc/PID/{maps,fd,net}`, and CAP_DAC_READ_SEARCH to open a container's library through
/// `/proc/PID/root`.
fn kept(ssl_uprobes: bool) -> caps::CapsHashSet {
    let mut keep: caps::CapsHashSet = [Capability::CAP_NET_ADMIN, Capability::CAP_BPF].into_iter().collect();
    if ssl_uprobes {
        keep.extend([Capability::CAP_PERFMON, Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH]);
    }
    keep
}

/// Once everything is attached, observer parses hostile packet bytes: do it as `account`
/// (when it runs as root), with only the kept capabilities, an empty bounding set and
/// no_new_privs, so that nothing it executes or is tricked into can gain more.
pub fn drop_after_attach(ssl_uprobes: bool, account: Option<Account>) -> Result<(), PrivilegeError> {
    let err = |what: &str| PrivilegeError::Read(format!("{what}: {}", std::io::Error::last_os_error()));
    let have = caps::read(None, CapSet::Permitted).map_err(|e| PrivilegeError::Read(e.to_string()))?;
    let keep: caps::CapsHashSet = kept(ssl_uprobes).intersection(&have).copied().collect();
    // The bounding set needs CAP_SETPCAP to change: first, while observer has it. A binary
    // with file capabilities has not, and no_new_privs below closes the same door.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        caps::clear(None, CapSet::Bounding).map_err(|e| PrivilegeError::Read(format!("clearing the bounding set: {e}")))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| PrivilegeError::Read(e.to_string()))?;
    if let Some(Account { uid, gid }) = account {
        // SAFETY: plain syscalls on this process's credentials; glibc applies the id changes
        // to every thread.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(err("setgroups"));
            }
            if libc::setresgid(gid, gid, gid) != 0 {
                return Err(err(&format!("switching to gid {gid}")));
            }
            // Keep the permitted set across the uid change (the effective set is emptied).
            if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
                return Err(err("PR_SET_KEEPCAPS"));
            }
            if libc::setresuid(uid, uid, uid) != 0 {
                return Err(err(&format!("switching to uid {uid}")));
            }
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
        }
    }
    let set = |which| caps::set(None, which, &keep).map_err(|e| PrivilegeError::Read(e.to_string()));
    if account.is_some() {
        // The effective set is empty now: shrink permitted, then raise effective within it.
        set(CapSet::Permitted)?;
        set(CapSet::Effective)?;
    } else {
        // Effective first: it must stay a subset of permitted at every step.
        set(CapSet::Effective)?;
        set(CapSet::Permitted)?;
    }
    caps::clear(None, CapSet::Inheritable).map_err(|e| PrivilegeError::Read(e.to_string()))?;
    // SAFETY: a flag on this process; it cannot be unset.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(err("PR_SET_NO_NEW_PRIVS"));
    }
    Ok(())
}

/// Kernel release and major.minor, from uname.
pub fn kernel_release() -> (String, (u32, u32)) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    (release.clone(), parse_release(&release))
}

pub fn parse_release(release: &str) -> (u32, u32) {
    let mut it = release.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
    let major = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// Ring buffers are required. BTF is not (offsets come from tracefs), but its absence is said
/// once, because later layers will want it.
pub fn check_kernel() -> Result<Vec<String>, KernelError> {
    let (release, version) = kernel_release();
    if version < (5, 8) {
        return Err(KernelError::NoRingBuf { release });
    }
    let mut notes = Vec::new();
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        notes.push(format!(
            "this kernel ({release}) has no BTF (/sys/kernel/btf/vmlinux is missing); observer \
             runs without it, with offsets from tracefs"
        ));
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v657"), (6, 18));
        assert_eq!(parse_release("5.4.0-150-generic"), (5, 4));
        assert_eq!(parse_release("garbage"), (0, 0));
    }

    #[test]
    fn missing_capabilities_message_names_the_fix() {
        let e = PrivilegeError::Missing {
            missing: "CAP_BPF, CAP_NET_ADMIN".into(),
            exe: "/usr/local/bin/observer".into(),
            args: "--format json".into(),
            setcap: SETCAP.into(),
        };
        let s = e.to_string();
        assert!(s.contains("needs CAP_BPF, CAP_NET_ADMIN"), "{s}");
        assert!(s.contains("`sudo /usr/local/bin/observer --format json`"), "{s}");
        assert!(s.contains("`sudo setcap cap_bpf,cap_perfmon,cap_net_admin"), "{s}");
    }
}
