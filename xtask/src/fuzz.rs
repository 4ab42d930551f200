//! `cargo xtask fuzz`: every fuzz target in fuzz/ (cargo-fuzz, libFuzzer, on the nightly
//! toolchain that rustup has), each up to a number of executions or seconds, with limits that
//! turn a hang or an unbounded allocation into a failure. Prints each target's executions.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

/// The targets, in fuzz/Cargo.toml.
pub const TARGETS: [&str; 4] = ["dns", "events", "tls", "http"];
const CARGO_FUZZ_VERSION: &str = "0.13.1";

fn nightly_cargo(dir: &Path) -> Command {
    let mut c = Command::new("cargo");
    // The parsers only: the eBPF object is built with another toolchain, and not needed.
    c.arg("+nightly").current_dir(dir).env("OBSERVER_EBPF_SKIP", "1");
    c
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let have = Command::new("cargo").args(["+nightly", "fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about 30 s)");
        crate::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION]))?;
    }
    Ok(())
}

/// "Done 600851 runs in 16 second(s)" -> (runs, seconds).
pub fn parse_done(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().rev().find(|l| l.starts_with("Done ") && l.contains(" runs in "))?;
    let mut words = line.split_whitespace();
    let runs = words.nth(1)?.parse().ok()?;
    let secs = words.nth(2)?.parse().ok()?;
    Some((runs, secs))
}

/// Run each target (all, or `only`) up to `runs` executions or `seconds`, then minimise its
/// corpus (fuzz/corpus/TARGET, committed). Fails on the first crash, hang or limit.
pub fn run(root: &Path, seconds: u64, runs: u64, only: Option<&str>) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let dir = root.join("fuzz");
    crate::run(nightly_cargo(&dir).args(["fuzz", "build", "-O", "-s", "none"]))?;
    let mut lines = Vec::new();
    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus).with_context(|| format!("cannot create {}", corpus.display()))?;
        let out = nightly_cargo(&dir)
            .args(["fuzz", "run", "-O", "-s", "none", target])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-runs={runs}"))
            .arg(format!("-max_total_time={seconds}"))
            // A hang, a large allocation or a growing heap is a failure, like a panic.
            .args(["-timeout=5", "-malloc_limit_mb=256", "-rss_limit_mb=1024", "-print_final_stats=1"])
            // DNS messages are copied at most 512 bytes; TLS and HTTP chunks up to 8 KiB.
            .arg(format!("-max_len={}", if *target == "dns" { 1024 } else { 4096 }))
            .output()
            .with_context(|| format!("cannot run the fuzz target {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("fuzz target {target} failed ({}); the input is under fuzz/artifacts/{target}:\n{}", out.status, tail.join("\n"));
        }
        let (done, secs) = parse_done(&log).with_context(|| format!("no summary line from {target}"))?;
        crate::run(nightly_cargo(&dir).args(["fuzz", "cmin", "-O", "-s", "none", target]).arg(&corpus))?;
        let files = std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
        let line = format!(
            "fuzz {target:7} {done:>11} executions in {secs:>4} s ({:>8} /s), corpus {files} files{}",
            done / secs.max(1),
            if done >= runs { "" } else { " (stopped by the time limit)" }
        );
        println!("{line}");
        lines.push(line);
    }
    println!("fuzz: {} targets, no crash, hang or allocation over the limits", lines.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_libfuzzers_closing_line() {
        let log = "#600851\tDONE   cov: 1638 ft: 4178\nDone 600851 runs in 16 second(s)\n";
        assert_eq!(super::parse_done(log), Some((600_851, 16)));
        assert_eq!(super::parse_done("no summary"), None);
    }
}
