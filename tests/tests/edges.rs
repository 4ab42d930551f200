//! Bad input at the edges: a config that is not a config, interfaces that are not there or
//! go away, a read-only tracefs, no BPF filesystem. Each gets one clear line, and observer
//! either runs on or exits non-zero with that line. Nothing panics.

use std::time::Duration;

use observer_tests::{Observer, Pair, observer::binary, peers::TempDir, require_root, sh, sh_status};

/// Run observer with `args` (a quick, bounded run); its exit status and stderr lines.
fn run(args: &str) -> (bool, Vec<String>) {
    let (ok, out) = sh_status(&format!("timeout 20 {} {args} --format json --duration 1 2>&1 >/dev/null", binary().display()));
    (ok, out.lines().map(str::to_owned).collect())
}

#[test]
fn a_config_that_is_a_directory_huge_a_fifo_or_not_utf8_is_one_line_and_a_non_zero_exit() {
    require_root();
    let tmp = TempDir::new("edges-config");
    let dir = tmp.0.display().to_string();
    sh(&format!("truncate -s 3G {dir}/huge.toml && mkfifo {dir}/fifo.toml && printf '[dns]\\n# caf\\xe9\\n' > {dir}/latin1.toml"));
    let cases = [
        (dir.clone(), "is a directory; --config takes a TOML file"),
        (format!("{dir}/huge.toml"), "is 3221225472 bytes; a config file is at most 1048576 bytes"),
        // A FIFO would block the start for ever.
        (format!("{dir}/fifo.toml"), "is not a regular file"),
        (format!("{dir}/latin1.toml"), "is not UTF-8 (the first bad byte is at offset 11)"),
    ];
    for (path, says) in cases {
        let (ok, lines) = run(&format!("--config {path}"));
        assert!(!ok, "{path} must stop observer: {lines:?}");
        assert_eq!(lines.len(), 1, "one line for {path}: {lines:?}");
        assert!(lines[0].starts_with(&format!("observer: config file {path}: {says}")), "{lines:?}");
    }
}

#[test]
fn an_interface_that_does_not_exist_is_disabled_and_one_that_goes_away_is_said_and_comes_back() {
    require_root();
    let pair = Pair::new("edges-iface");
    pair.client.run("ip link add obsdummy0 type veth peer name obsdummy1 && ip link set obsdummy0 up && ip link set obsdummy1 up");
    let obs = Observer::start(&pair.client, &["--interface", "lo,obsdummy0,nope0"]);
    let first = obs.wait_for(Duration::from_secs(3), |_| true).expect("a report");
    let disabled = first.0["disabled"].to_string();
    assert!(disabled.contains("interface:nope0") && disabled.contains("no such interface"), "{disabled}");
    assert!(!disabled.contains("obsdummy0"), "{disabled}");
    assert_eq!(first.0["dns"]["interfaces"], serde_json::json!(["lo", "obsdummy0"]));
    // (A veth: this kernel has no dummy driver. Deleting one end deletes both.)
    assert!(obs.stderr().contains("disabled: DNS, TLS, HTTP and ICMP on this interface (named with --interface) (interface:nope0): no such interface"), "{}", obs.stderr());
    // It goes away while observer runs: one line, listed in disabled, observer runs on.
    pair.client.run("ip link del obsdummy0");
    let gone = obs.wait_for_next(Duration::from_secs(3), |r| r.0["disabled"].to_string().contains("interface:obsdummy0"));
    assert!(gone.is_some(), "{}", obs.stderr());
    assert_eq!(gone.unwrap().0["dns"]["interfaces"], serde_json::json!(["lo"]));
    // And comes back: watched again, said once.
    pair.client.run("ip link add obsdummy0 type veth peer name obsdummy1 && ip link set obsdummy0 up && ip link set obsdummy1 up");
    let back = obs.wait_for_next(Duration::from_secs(3), |r| r.0["dns"]["interfaces"] == serde_json::json!(["lo", "obsdummy0"]));
    assert!(back.is_some(), "{}", obs.stderr());
    // stderr is read on its own thread: give it the line printed with that report.
    std::thread::sleep(Duration::from_millis(300));
    let err = obs.stderr();
    let last = obs.stop();
    assert!(!last.0["disabled"].to_string().contains("obsdummy0"), "{:#}", last.0["disabled"]);
    assert_eq!(err.matches("--interface obsdummy0: no such interface; nothing is watched on it until it is up").count(), 1, "{err}");
    assert_eq!(err.matches("--interface obsdummy0 is up again: watched").count(), 1, "{err}");
    assert_eq!(err.matches("nope0").count(), 1, "said once, at start: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_bad_interface_name_is_a_flag_error() {
    require_root();
    let (ok, lines) = run("--interface ../../etc");
    assert!(!ok);
    assert!(lines.iter().any(|l| l.contains("`../../etc` is not an interface name")), "{lines:?}");
}

/// observer in `pair.client`'s network namespace, under a mount namespace of its own that
/// `prepare` changes first (nsenter, not `ip netns exec`, which remounts /sys).
fn run_in_mount_ns(pair: &Pair, prepare: &str) -> (bool, String) {
    sh_status(&format!(
        "unshare -m sh -c 'mount --make-rprivate / && {prepare} && exec nsenter --net=/run/netns/{} timeout 20 {} --format json --duration 1.5' 2>&1",
        pair.client.name,
        binary().display()
    ))
}

#[test]
fn a_read_only_tracefs_is_enough() {
    require_root();
    let pair = Pair::new("edges-rotrace");
    let t = if sh_status("test -d /sys/kernel/tracing").0 { "/sys/kernel/tracing" } else { "/sys/kernel/debug/tracing" };
    // Mounted first where a fresh host has not mounted it yet (in the test's own mount
    // namespace), then read-only; prove it is where observer runs: a write must fail there.
    let prepare = format!("(mountpoint -q {t} || mount -t tracefs nodev {t}) && mount -o remount,bind,ro {t} && ! touch {t}/observer-probe 2>/dev/null");
    let (ok, out) = run_in_mount_ns(&pair, &prepare);
    assert!(ok, "{out}");
    assert!(out.contains("observer: attached 11 "), "{out}");
    assert!(out.lines().last().unwrap_or("").contains("\"final\":true"), "{out}");
    assert!(!out.contains("panicked") && !out.contains("\"disabled\":[{"), "{out}");
}

#[test]
fn no_bpf_filesystem_is_fine() {
    require_root();
    let pair = Pair::new("edges-nobpffs");
    // Unmounted (if it was), and nothing of it left to find.
    let prepare = "(umount /sys/fs/bpf 2>/dev/null; true) && ! mountpoint -q /sys/fs/bpf";
    let (ok, out) = run_in_mount_ns(&pair, prepare);
    assert!(ok, "{out}");
    assert!(out.contains("observer: attached 11 "), "{out}");
    assert!(out.lines().last().unwrap_or("").contains("\"final\":true"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}
