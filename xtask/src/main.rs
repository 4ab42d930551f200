//! `cargo xtask`: set up the machine, build unprivileged, run and test privileged.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod fuzz;
mod kernels;
mod package;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Xtask {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh Debian 12 machine needs (idempotent): xtask/setup.sh.
    Setup,
    /// Set up, build observer (release) and run it, as root. Arguments go to observer.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, run the unit tests, then the end-to-end tests (as root).
    Test {
        /// Only tests whose name contains this (passed to the test harness).
        filter: Option<String>,
        /// Skip the unit tests.
        #[arg(long)]
        e2e_only: bool,
    },
    /// clippy on the host crates, warnings as errors (the kernel crate builds inside them).
    Lint,
    /// Boot Debian 12's stock 6.1 kernel in qemu (TCG) and check observer inside it (as root).
    TestKernels,
    /// The packet path's cost: bare, empty TC program, tcpdump and observer side by side in one
    /// run (prints figures; not a test).
    Bench {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// Alternating rounds of the flood throughput comparison.
        #[arg(long, default_value_t = 3)]
        rounds: u64,
    },
    /// observer on a busy node: 1k, 10k and 100k destinations at 10,000 connects/s with half
    /// as many DNS names; prints RSS, CPU per interval, the interval close time and lost
    /// events (prints figures; not a test). SOAK_MINUTES holds the 100k load that long more.
    BenchScale {
        /// Seconds per level.
        #[arg(default_value_t = 20)]
        secs: u64,
        /// Minutes to hold the 100k load afterwards, printing the memory each minute.
        #[arg(default_value_t = 0)]
        soak_minutes: u64,
    },
    /// The .deb (cargo-deb): the binary, the systemd unit, /etc/default/observer, the man
    /// page and the shell completions; its postinst creates the `observer` group.
    Package,
    /// Every fuzz target (DNS, kernel event decoders, TLS, HTTP) with cargo-fuzz on the
    /// nightly toolchain, each up to --runs executions or SECONDS; prints the executions and
    /// keeps the minimised corpus in fuzz/corpus (prints figures; not a test).
    Fuzz {
        /// Seconds per target at most.
        #[arg(default_value_t = 600)]
        seconds: u64,
        /// Executions per target.
        #[arg(long, default_value_t = 10_000_000)]
        runs: u64,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Busy-host traffic with faults injected and removed every 2 minutes: false suspect
    /// intervals, missed or late detections, time to detect, RSS, lost events (prints
    /// figures; not a test).
    Soak {
        /// Minutes to run.
        #[arg(default_value_t = 10)]
        minutes: u64,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd.current_dir(root()).status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Run a test command, echo its output, and add its `test result:` lines to `tally`.
fn run_tests(cmd: &mut Command, tally: &mut (u64, u64)) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader};
    eprintln!("xtask: {cmd:?}");
    let mut child = cmd
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |word: &str| {
                rest.split(';')
                    .find_map(|p| p.trim().strip_suffix(word).and_then(|n| n.trim().rsplit(' ').next()?.parse::<u64>().ok()))
                    .unwrap_or(0)
            };
            tally.0 += num(" passed");
            tally.1 += num(" failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        println!("tests: {} passed, {} failed", tally.0, tally.1.max(1));
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// A figures program of tests/src/bin (bench, soak, bench_scale): built in release with the
/// binaries it drives, then run as root with their paths.
fn figures(program: &str, args: &[u64]) -> anyhow::Result<()> {
    setup()?;
    run(cargo().args(["build", "--release", "-p", "observer", "-p", "observer-tests", "--bins"]))?;
    let bin = root().join("target/release");
    run(privileged(bin.join(program))
        .args(args.iter().map(u64::to_string))
        .env("OBSERVER_BIN", bin.join("observer"))
        .env("OBSERVER_PEER_BIN", bin.join("peer"))
        .env("OBSERVER_BUSY_BIN", bin.join("busy")))
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Privileged steps run through sudo when we are not root already.
fn privileged(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg(program);
        c
    }
}

fn setup() -> anyhow::Result<()> {
    run(Command::new("bash").arg(root().join("xtask/setup.sh")))
}

fn main() -> anyhow::Result<()> {
    match Xtask::parse().cmd {
        Cmd::Setup => setup(),
        Cmd::Run { args } => {
            setup()?;
            run(cargo().args(["build", "--release", "-p", "observer"]))?;
            run(privileged(root().join("target/release/observer")).args(args))
        }
        Cmd::Lint => {
            run(cargo().args([
                "clippy", "-p", "observer", "-p", "observer-common", "-p", "observer-tests", "-p", "xtask",
                "--all-targets", "--", "-D", "warnings",
            ]))?;
            // The kernel crate, for its own target: aya-build relays its warnings as build
            // notes that nothing fails on. The Debian toolchain has no clippy; the compiler's
            // warnings are errors here.
            run(Command::new("rustup")
                .args(["run", "observer-bpf", "cargo", "check", "-p", "observer-ebpf", "--bins", "--release"])
                .args(["--target", "bpfel-unknown-none", "--target-dir", "target/ebpf-lint"])
                .env("CARGO_ENCODED_RUSTFLAGS", "--cfg=bpf_target_arch=\"x86_64\"\x1f-Dwarnings")
                .env_remove("RUSTC")
                .env_remove("RUSTC_WORKSPACE_WRAPPER"))
        }
        Cmd::Bench { secs, rounds } => figures("bench", &[secs, rounds]),
        Cmd::Soak { minutes } => figures("soak", &[minutes]),
        Cmd::BenchScale { secs, soak_minutes } => figures("bench_scale", &[secs, soak_minutes]),
        Cmd::Package => {
            setup()?;
            package::build(&root()).map(|_| ())
        }
        Cmd::Fuzz { seconds, runs, target } => fuzz::run(&root(), seconds, runs, target.as_deref()),
        Cmd::TestKernels => {
            setup()?;
            run(cargo().args(["build", "--release", "-p", "observer", "-p", "observer-tests", "--bins"]))?;
            let mut tally = (0, 0);
            let result = kernels::run(&root(), &root().join("target/release"), &mut tally);
            println!("tests: {} passed, {} failed", tally.0, tally.1);
            result
        }
        Cmd::Test { filter, e2e_only } => {
            setup()?;
            // Build everything unprivileged first.
            run(cargo().args(["build", "-p", "observer", "-p", "observer-tests", "--bins"]))?;
            run(cargo().args(["test", "--no-run", "-p", "observer", "-p", "observer-common", "-p", "observer-tests"]))?;
            // The .deb, for the test that installs it in a throwaway root.
            let deb = if filter.as_deref().is_none_or(|f| "the_deb_installs_runs_shows_its_man_page_and_removes_cleanly".contains(f)) {
                Some(package::build(&root())?)
            } else {
                None
            };
            let mut tally = (0, 0);
            if !e2e_only {
                let mut unit = cargo();
                unit.args(["test", "-p", "observer", "-p", "observer-common"]);
                if let Some(f) = &filter {
                    unit.args(["--", f]);
                }
                run_tests(&mut unit, &mut tally)?;
            }
            // Then the namespace tests, privileged, one at a time: each builds its own
            // namespaces, and the 2-core machine keeps timings honest that way.
            let mut e2e = privileged(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            // Every suite runs even after one fails, so that one run shows every failure.
            e2e.args(["test", "--no-fail-fast", "-p", "observer-tests", "--", "--test-threads=1"]);
            if let Some(deb) = &deb {
                e2e.env("OBSERVER_DEB", deb);
            }
            if let Some(f) = &filter {
                e2e.arg(f);
            }
            run_tests(&mut e2e, &mut tally)?;
            // Last, the oldest kernel the README names, booted in qemu (about a minute).
            if filter.as_deref().is_none_or(|f| "kernel_6_1".contains(f)) {
                run(cargo().args(["build", "--release", "-p", "observer", "-p", "observer-tests", "--bins"]))?;
                if let Err(e) = kernels::run(&root(), &root().join("target/release"), &mut tally) {
                    println!("tests: {} passed, {} failed", tally.0, tally.1.max(1));
                    return Err(e);
                }
            }
            // One closing line over every run above, for people and for CI.
            println!("tests: {} passed, {} failed", tally.0, tally.1);
            Ok(())
        }
    }
}
