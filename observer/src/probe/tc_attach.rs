//! Attaching the TC programs. Where the kernel has TCX (6.6 and later) each program is a TCX
//! link placed first in the chain, so that a CNI's programs cannot hide packets from it; the
//! link goes away with observer's file descriptors. Elsewhere (or with `--tc-attach classic`)
//! it is a clsact filter at priority 1. Filters outlive their process, so observer removes
//! the ones an earlier, killed observer left, and the clsact qdiscs it created itself.

use std::{
    collections::HashMap,
    fs,
    io,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{NlOptions, SchedClassifierLinkId, TcAttachOptions, TcError, qdisc_add_clsact, qdisc_detach_program},
    },
    util::KernelVersion,
};

/// How TC programs are attached (`--tc-attach`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TcAttach {
    /// TCX where the kernel has it (6.6+), classic clsact filters otherwise.
    Auto,
    Tcx,
    Classic,
}

impl TcAttach {
    /// The mode this kernel gets.
    pub fn resolve(self) -> TcAttach {
        match self {
            TcAttach::Auto => match KernelVersion::current() {
                Ok(v) if v >= KernelVersion::new(6, 6, 0) => TcAttach::Tcx,
                _ => TcAttach::Classic,
            },
            other => other,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            TcAttach::Auto => "auto",
            TcAttach::Tcx => "tcx",
            TcAttach::Classic => "classic",
        }
    }
}

/// The clsact qdiscs observer created, removed again at exit. Each is also noted in a file
/// under `/run/observer/clsact/` (tmpfs: a reboot clears both), so that the next observer
/// removes one that a killed observer left behind.
pub struct ClsactOwner {
    dir: PathBuf,
    /// Interface name -> ifindex, for the qdiscs this observer is to remove.
    owned: HashMap<String, u32>,
}

const EEXIST: i32 = 17;

impl Default for ClsactOwner {
    fn default() -> Self {
        ClsactOwner::new()
    }
}

impl ClsactOwner {
    pub fn new() -> ClsactOwner {
        let dir = std::env::var_os("OBSERVER_RUN_DIR").map_or_else(|| PathBuf::from("/run/observer"), PathBuf::from);
        ClsactOwner { dir: dir.join("clsact"), owned: HashMap::new() }
    }

    fn marker(&self, iface: &str) -> PathBuf {
        self.dir.join(iface)
    }

    /// Make sure `iface` has a clsact qdisc; remember it when it is (or was) observer's.
    fn ensure(&mut self, iface: &str, ifindex: u32) -> Result<(), TcError> {
        if self.owned.contains_key(iface) {
            return Ok(());
        }
        match qdisc_add_clsact(iface) {
            Ok(()) => {
                let _ = fs::create_dir_all(&self.dir);
                let _ = fs::write(self.marker(iface), ifindex.to_string());
                self.owned.insert(iface.to_owned(), ifindex);
                Ok(())
            }
            Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(EEXIST) => {
                // Someone's qdisc: ours only if an earlier observer noted it for this device.
                let noted = fs::read_to_string(self.marker(iface)).ok().and_then(|s| s.trim().parse::<u32>().ok());
                if noted == Some(ifindex) {
                    self.owned.insert(iface.to_owned(), ifindex);
                } else if noted.is_some() {
                    let _ = fs::remove_file(self.marker(iface));
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Remove the qdiscs observer created (their filters go with them). Call after the
    /// programs' own links are dropped.
    pub fn release(&mut self) {
        for (iface, ifindex) in std::mem::take(&mut self.owned) {
            if current_ifindex(&iface) == Some(ifindex) {
                let _ = delete_clsact(ifindex);
            }
            let _ = fs::remove_file(self.marker(&iface));
        }
    }
}

impl Drop for ClsactOwner {
    fn drop(&mut self) {
        self.release();
    }
}

fn current_ifindex(iface: &str) -> Option<u32> {
    fs::read_to_string(Path::new("/sys/class/net").join(iface).join("ifindex")).ok()?.trim().parse().ok()
}

/// One hook of one interface.
pub struct Hook<'a> {
    pub iface: &'a str,
    pub ifindex: u32,
    pub kind: TcAttachType,
}

/// Attach `prog` (named `name`) to one hook. Lines for the user go to `notes`.
pub fn attach(
    prog: &mut SchedClassifier,
    name: &str,
    at: &Hook<'_>,
    mode: TcAttach,
    owner: &mut ClsactOwner,
    notes: &mut Vec<String>,
) -> anyhow::Result<SchedClassifierLinkId> {
    let (iface, hook) = (at.iface, at.kind);
    if mode == TcAttach::Tcx {
        return Ok(prog.attach_with_options(iface, hook, TcAttachOptions::TcxOrder(LinkOrder::first()))?);
    }
    owner.ensure(iface, at.ifindex).map_err(|e| anyhow::anyhow!("cannot add a clsact qdisc: {e}"))?;
    match qdisc_detach_program(iface, hook, name) {
        Ok(()) => notes.push(format!("replaced a TC filter ({name}) that an earlier observer left on {iface}")),
        Err(TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => notes.push(format!("cannot look for old observer filters on {iface}: {e}")),
    }
    // Priority 1: before any other classic filter on the hook.
    let options = NlOptions { priority: 1, ..NlOptions::default() };
    Ok(prog.attach_with_options(iface, hook, TcAttachOptions::Netlink(options))?)
}

/// RTM_DELQDISC for the clsact qdisc of one interface (what `tc qdisc del dev X clsact`
/// sends); aya can add a clsact qdisc but not remove one.
fn delete_clsact(ifindex: u32) -> io::Result<()> {
    #[repr(C)]
    struct TcMsg {
        family: u8,
        pad1: u8,
        pad2: u16,
        ifindex: i32,
        handle: u32,
        parent: u32,
        info: u32,
    }
    #[repr(C)]
    struct Request {
        header: libc::nlmsghdr,
        tc: TcMsg,
        kind_attr: libc::nlattr,
        kind: [u8; 8],
    }
    const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
    const TCA_KIND: u16 = 1;
    let req = Request {
        header: libc::nlmsghdr {
            nlmsg_len: size_of::<Request>() as u32,
            nlmsg_type: libc::RTM_DELQDISC,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        tc: TcMsg { family: 0, pad1: 0, pad2: 0, ifindex: ifindex as i32, handle: 0xFFFF_0000, parent: TC_H_CLSACT, info: 0 },
        kind_attr: libc::nlattr { nla_len: (size_of::<libc::nlattr>() + 7) as u16, nla_type: TCA_KIND },
        kind: *b"clsact\0\0",
    };
    // SAFETY: plain socket calls on a buffer we own; the fd is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as u16;
        let sent = libc::sendto(
            fd,
            (&raw const req).cast(),
            size_of::<Request>(),
            0,
            (&raw const kernel).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        );
        let result = if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            let mut buf = [0u8; 512];
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            let header = size_of::<libc::nlmsghdr>();
            if n < (header + 4) as isize {
                Err(io::Error::last_os_error())
            } else {
                // NLMSG_ERROR carries the errno (negative) right after the header; 0 is the ack.
                let code = i32::from_ne_bytes([buf[header], buf[header + 1], buf[header + 2], buf[header + 3]]);
                if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) }
            }
        };
        libc::close(fd);
        result
    }
}
