//! Namespace harness for observer's end-to-end tests.
//!
//! Each test builds its own client and server namespaces joined by a veth pair, on a subnet of
//! its own, runs real peers (nginx, curl, dnsmasq, dig, nft, iperf3) in them, runs observer in
//! the client namespace and asserts what it reports for that test's destinations. Guards tear
//! everything down on drop, also when an assertion fails. Tests panic with a message rather than
//! return errors, so that the failing line is in the backtrace.

pub mod busy;
pub mod net;
pub mod observer;
pub mod peers;
pub mod http;
pub mod tls;

pub use net::{Netns, Pair, Proc, Routed};
pub use observer::{Observer, Report};

/// Skip nothing silently: these tests need root, and say so.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "end-to-end tests need root (network namespaces, eBPF): run `cargo xtask test`");
}

/// A process's resident memory in KiB (0 when it is gone): what the benchmarks print.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A process's peak resident memory (KiB) since it started or since [`reset_peak_rss`]: what
/// sampling misses, the moments inside an interval's close.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Start a process's peak resident memory again from its current RSS (`clear_refs` 5).
pub fn reset_peak_rss(pid: u32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

/// Run a command to completion and return its stdout; panic with its stderr when it fails.
pub fn sh(cmd: &str) -> String {
    let out = std::process::Command::new("bash").arg("-c").arg(cmd).output().expect("spawn bash");
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`sh`] but a failure is returned, not a panic (for clients expected to fail).
pub fn sh_status(cmd: &str) -> (bool, String) {
    let out = std::process::Command::new("bash").arg("-c").arg(cmd).output().expect("spawn bash");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
