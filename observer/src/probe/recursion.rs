//! Runs the kernel skipped. A tracepoint program that fires while another BPF program runs
//! on the same CPU (say, a softirq's retransmit during a process-context state change) is
//! not run at all; the kernel counts it in the program's `recursion_misses` (Linux 5.12+).
//! Whatever that run would have counted is lost.

use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};

use aya::Ebpf;
use aya_obj::generated::bpf_prog_info;

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `info` member of `union bpf_attr`, padded to the union's size: the kernel requires
/// the bytes it does not use to be zero.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
    _rest: [u64; 14],
}

/// One program's skipped runs since it was loaded.
fn misses(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    // SAFETY: plain data, all zeroes is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<bpf_prog_info>() as u32,
        info: (&raw mut info) as u64,
        _rest: [0; 14],
    };
    // SAFETY: `attr` and `info` outlive the call; the kernel writes at most info_len bytes.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &raw mut attr, size_of::<InfoAttr>()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}

/// Skipped runs per loaded program (only those with any), and their sum. An error reading
/// one program is returned as text, once, by the caller's choice.
pub fn read(ebpf: &Ebpf) -> Result<(u64, Vec<(String, u64)>), String> {
    let mut total = 0;
    let mut by_program = Vec::new();
    for (name, prog) in ebpf.programs() {
        // Programs this kernel did not load have no fd.
        let Ok(fd) = prog.fd() else { continue };
        let n = misses(fd.as_fd()).map_err(|e| format!("cannot read {name}'s run statistics: {e}"))?;
        total += n;
        if n > 0 {
            by_program.push((name.to_owned(), n));
        }
    }
    Ok((total, by_program))
}
