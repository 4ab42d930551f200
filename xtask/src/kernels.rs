//! `cargo xtask test-kernels`: boot Debian 12's stock kernel (6.1, from Debian's package) in
//! qemu under TCG, with a busybox initramfs that holds the release observer and the test
//! peer, and check what observer reports from inside: every program loads and attaches
//! (classic TC: 6.1 has no TCX; the OpenSSL uprobes), refused connects, DNS, TLS handshakes
//! (a stalled one, a cut one), HTTP in clear text and HTTPS read through the uprobes over lo
//! are counted, established connections are sampled by sock_ops (a cgroup v2 mounted by
//! observer), a connect without a route is counted, and a clean exit leaves no filter or qdisc behind. A second run puts a VLAN device and a bond on veths
//! (drivers this machine's own kernel lacks) and checks that each message is counted once.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The init script: bring up lo, load the TC modules, run observer with traffic on lo, then
/// print what observer printed between markers and power off.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo observer-vm > /proc/sys/kernel/hostname
for m in $(cat /modules/order); do insmod "/modules/$m" || echo "=== INSMOD FAILED $m"; done
ip link set lo up
echo "=== KERNEL $(uname -r)"
/peer dns-echo 127.0.0.1:53 &
/peer tcp-hold 127.0.0.1:10443 &
/peer tls-truncated 127.0.0.1:11443 &
/peer http-slow 127.0.0.1:8088 5 &
/peer udp-hold 127.0.0.1:5300 &
/observer --format json --interval 1 --duration 20 --set tls.stall_after_s=1 > /out.json 2> /err.txt &
obs=$!
i=0
while ! grep -q "observer: attached" /err.txt && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done
echo "=== QDISC WHILE RUNNING"
tc qdisc show dev lo
/peer dns-flood 127.0.0.1:53 20 1
for p in 1 2 3; do nc 127.0.0.1 9 </dev/null; done
for p in 1 2; do nc 10.255.0.1 80 </dev/null; done
/peer dns-blast 127.0.0.1:5300 1 > /dev/null
/peer tls-big-hello 127.0.0.1:10443 stall.test
/peer tls-big-hello 127.0.0.1:11443 cut.test
for p in 1 2 3; do wget -q -O /dev/null http://127.0.0.1:8088/vm/$p; done
/openssl s_server -quiet -accept 127.0.0.1:4433 -cert /cert.pem -key /key.pem -www > /dev/null 2>&1 &
sleep 1
printf 'GET /tls HTTP/1.0\r\nHost: vm.test\r\n\r\n' | timeout 5 /openssl s_client -quiet -connect 127.0.0.1:4433 -servername vm.test > /dev/null 2>&1
wait $obs
echo "=== EXIT $?"
echo "=== STDERR"
cat /err.txt
echo "=== JSON"
tail -n 1 /out.json
echo "=== QDISC AFTER"
tc qdisc show dev lo
# A VLAN on a veth, and a bond over a veth, with the resolvers in another namespace.
I=/ip2
mkdir -p /run/netns
$I netns add srv
$I link add v0 type veth peer name v1 && $I link set v1 netns srv
$I link set v0 up && $I -n srv link set v1 up && $I -n srv link set lo up
$I link add link v0 name v0.100 type vlan id 100 && $I addr add 10.100.0.1/24 dev v0.100 && $I link set v0.100 up
$I -n srv link add link v1 name v1.100 type vlan id 100 && $I -n srv addr add 10.100.0.2/24 dev v1.100 && $I -n srv link set v1.100 up
$I link add v2 type veth peer name v3 && $I link set v3 netns srv
# bonding creates bond0 itself when it loads: a name of our own.
$I link add bond1 type bond mode active-backup && $I link set v2 master bond1 && $I link set bond1 up
$I addr add 10.101.0.1/24 dev bond1
$I -n srv addr add 10.101.0.2/24 dev v3 && $I -n srv link set v3 up
$I netns exec srv /peer dns-echo 10.100.0.2:53 &
$I netns exec srv /peer dns-echo 10.101.0.2:53 &
echo "=== STACKED LINKS"
$I -br link
/observer --format json --interval 1 --duration 15 > /out2.json 2> /err2.txt &
obs=$!
i=0
while ! grep -q "observer: attached" /err2.txt && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done
sleep 1
/peer dns-flood 10.100.0.2:53 20 1
/peer dns-flood 10.101.0.2:53 20 1
wait $obs
echo "=== STACKED STDERR"
cat /err2.txt
echo "=== STACKED JSON"
tail -n 1 /out2.json
echo "=== END"
poweroff -f
"#;

/// The modules the guest loads, in order: TC, veth, 802.1Q (over garp and mrp), bonding.
const MODULES: [&str; 10] = [
    "kernel/net/sched/sch_ingress.ko",
    "kernel/net/sched/cls_bpf.ko",
    "kernel/drivers/net/veth.ko",
    "kernel/net/llc/llc.ko",
    "kernel/net/802/stp.ko",
    "kernel/net/802/garp.ko",
    "kernel/net/802/mrp.ko",
    "kernel/net/8021q/8021q.ko",
    "kernel/net/tls/tls.ko",
    "kernel/drivers/net/bonding/bonding.ko",
];

fn sh(cmd: &str) -> anyhow::Result<String> {
    let out = Command::new("bash").arg("-c").arg(cmd).output().with_context(|| format!("cannot run {cmd}"))?;
    if !out.status.success() {
        bail!("`{cmd}` failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Debian's current 6.1 cloud kernel, unpacked under `dir` (downloaded once).
fn kernel(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut deps = sh("apt-cache depends linux-image-cloud-amd64").unwrap_or_default();
    if !deps.contains("linux-image-6.1") {
        // Package lists missing or stale: refresh them once.
        sh("apt-get update -qq")?;
        deps = sh("apt-cache depends linux-image-cloud-amd64")?;
    }
    let Some(pkg) = deps.lines().find_map(|l| l.trim().strip_prefix("Depends: ")).filter(|p| p.starts_with("linux-image-6.1"))
    else {
        bail!("apt-cache names no linux-image-6.1 package for linux-image-cloud-amd64 (run apt-get update?):\n{deps}")
    };
    let root = dir.join(pkg);
    if !root.join("boot").exists() {
        fs::create_dir_all(dir)?;
        sh(&format!("cd {} && apt-get download -q {pkg} 2>/dev/null && dpkg-deb -x {pkg}_*.deb {pkg} && rm -f {pkg}_*.deb", dir.display()))?;
    }
    let version = pkg.trim_start_matches("linux-image-");
    Ok((root.join(format!("boot/vmlinuz-{version}")), root.join(format!("lib/modules/{version}"))))
}

/// Copy `bin` and the shared libraries it needs into `root`, at the same paths.
fn install_with_libs(bin: &Path, root: &Path, as_name: &str) -> anyhow::Result<()> {
    fs::copy(bin, root.join(as_name)).with_context(|| format!("copy {}", bin.display()))?;
    let ldd = sh(&format!("ldd {}", bin.display()))?;
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let to = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(to.parent().expect("a library has a parent"))?;
        fs::copy(lib, &to).with_context(|| format!("copy {lib}"))?;
    }
    Ok(())
}

fn initramfs(work: &Path, modules: &Path, bin: &Path) -> anyhow::Result<PathBuf> {
    let root = work.join("initramfs");
    let _ = fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "modules", "tmp"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static is missing (xtask/setup.sh installs it)")?;
    install_with_libs(&bin.join("observer"), &root, "observer")?;
    install_with_libs(&bin.join("peer"), &root, "peer")?;
    // In load order: each after the modules it depends on (there is no modprobe).
    let mut order = String::new();
    for m in MODULES {
        let from = modules.join(m);
        let name = from.file_name().expect("a module file").to_string_lossy().into_owned();
        fs::copy(&from, root.join("modules").join(&name)).with_context(|| format!("{}", from.display()))?;
        order.push_str(&name);
        order.push('\n');
    }
    fs::write(root.join("modules/order"), order)?;
    // iproute2's ip, for namespaces and bonds (busybox's ip has neither).
    install_with_libs(Path::new("/usr/sbin/ip"), &root, "ip2")?;
    // openssl and its libssl, for HTTPS through the OpenSSL uprobes, with a certificate.
    install_with_libs(Path::new("/usr/bin/openssl"), &root, "openssl")?;
    sh(&format!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=vm.test \
         -keyout {0}/key.pem -out {0}/cert.pem 2>/dev/null",
        root.display()
    ))?;
    fs::write(root.join("init"), INIT)?;
    sh(&format!("chmod +x {}/init", root.display()))?;
    let image = work.join("initramfs.cpio.gz");
    sh(&format!("cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}", root.display(), image.display()))?;
    Ok(image)
}

/// The rest of the marker's own line: `=== NAME value`.
fn value<'a>(console: &'a str, name: &str) -> &'a str {
    console.split(&format!("=== {name} ")).nth(1).and_then(|r| r.lines().next()).unwrap_or("").trim()
}

/// The lines between `=== NAME` and the next marker.
fn section<'a>(console: &'a str, name: &str) -> Option<&'a str> {
    let start = console.find(&format!("=== {name}"))?;
    let rest = &console[start..];
    let body = rest.split_once('\n')?.1;
    Some(body.split("\n=== ").next().unwrap_or(body))
}

pub fn run(root: &Path, bin: &Path, tally: &mut (u64, u64)) -> anyhow::Result<()> {
    let work = root.join("target/kernels");
    let (vmlinuz, modules) = kernel(&work)?;
    let image = initramfs(&work, &modules, bin)?;
    eprintln!("xtask: booting {} under qemu (TCG)", vmlinuz.display());
    let started = std::time::Instant::now();
    let out = Command::new("timeout")
        .args(["600", "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&image)
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=3"])
        .output()
        .context("cannot start qemu-system-x86_64 (xtask/setup.sh installs it)")?;
    let console = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    fs::write(work.join("console.log"), &console)?;
    eprintln!("xtask: the guest ran {:.0} s; its console is in {}", started.elapsed().as_secs_f64(), work.join("console.log").display());

    let kernel = value(&console, "KERNEL");
    let stderr = section(&console, "STDERR").unwrap_or("");
    let json = section(&console, "JSON").and_then(|j| j.lines().find(|l| l.starts_with('{')));
    let report: serde_json::Value = json.and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default();
    let resolver = report["dns"]["resolvers"].as_array().and_then(|rs| rs.iter().find(|r| r["resolver"] == "127.0.0.1:53"));
    let stacked_json = section(&console, "STACKED JSON").and_then(|j| j.lines().find(|l| l.starts_with('{')));
    let stacked: serde_json::Value = stacked_json.and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default();
    let once = |resolver: &str| {
        let r = stacked["dns"]["resolvers"].as_array().and_then(|rs| rs.iter().find(|r| r["resolver"] == resolver));
        let ok = r.is_some_and(|r| r["total"]["queries"] == 20 && r["total"]["responses"] == 20 && r["total"]["unanswered"] == 0);
        (ok, format!("{resolver}: {}", r.cloned().unwrap_or_default()))
    };
    let (vlan_once, vlan_detail) = once("10.100.0.2:53");
    let (bond_once, bond_detail) = once("10.101.0.2:53");
    let dups = |iface: &str| {
        stacked["dns"]["per_interface"].as_array().and_then(|a| a.iter().find(|i| i["interface"] == iface)).map_or(0, |i| i["total"]["dns_duplicates"].as_u64().unwrap_or(0))
    };
    let dest = report["tcp"]["destinations"].as_array().and_then(|ds| ds.iter().find(|d| d["dest"] == "127.0.0.1:9"));
    let tls = |dest: &str, sni: &str, outcome: &str| {
        let t = report["tls"]["targets"].as_array().and_then(|ts| ts.iter().find(|t| t["dest"] == dest && t["sni"] == sni));
        (t.is_some_and(|t| t["total"][outcome] == 1 && t["total"]["handshakes"] == 1), format!("{dest} {sni}: {}", t.cloned().unwrap_or_default()))
    };
    let http = |server: &str, host: &str| {
        report["http"]["targets"].as_array().and_then(|ts| ts.iter().find(|t| t["server"] == server && t["host"] == host)).cloned()
    };
    let plain = http("127.0.0.1:8088", "127.0.0.1:8088");
    let over_tls = http("127.0.0.1:4433", "vm.test");
    let route = |dest: &str| report["routing"]["destinations"].as_array().and_then(|ds| ds.iter().find(|d| d["dest"] == dest)).cloned();
    let (sampled, unrouted) = (route("127.0.0.1:8088"), route("10.255.0.1:80"));
    let rcvbuf_drops: u64 = report["routing"]["destinations"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["drop_reasons"].as_array().into_iter().flatten())
        .filter(|r| r[0] == "SOCKET_RCVBUFF")
        .filter_map(|r| r[2].as_u64())
        .sum();
    let (stalled, stalled_detail) = tls("127.0.0.1:10443", "stall.test", "stalled");
    let (cut, cut_detail) = tls("127.0.0.1:11443", "cut.test", "malformed");
    let checks: Vec<(&str, bool, String)> = vec![
        ("boots_debian_6_1", kernel.starts_with("6.1."), format!("kernel {kernel:?}")),
        (
            "exits_cleanly_with_a_final_report",
            value(&console, "EXIT") == "0" && report["final"] == true,
            format!("exit status {:?}", value(&console, "EXIT")),
        ),
        (
            "every_program_loads_and_attaches",
            report["disabled"].as_array().is_some_and(Vec::is_empty) && stderr.contains("tcp:tcp_retransmit_synack"),
            format!("disabled: {}", report["disabled"]),
        ),
        ("tc_falls_back_to_classic_on_lo", stderr.contains("tc(classic):observer on lo"), "attach line".into()),
        // A socket that never reads, flooded: the raw kfree_skb program counts the drops.
        (
            "a_full_socket_buffer_is_a_drop_with_its_reason",
            stderr.contains("raw_tp:kfree_skb") && rcvbuf_drops > 0,
            format!("SOCKET_RCVBUFF drops: {rcvbuf_drops}"),
        ),
        (
            "dns_over_lo_is_counted",
            resolver.is_some_and(|r| r["total"]["queries"] == 20 && r["total"]["responses"] == 20),
            format!("resolver: {}", resolver.cloned().unwrap_or_default()),
        ),
        (
            "the_clsact_qdisc_it_created_is_gone_after_exit",
            section(&console, "QDISC WHILE RUNNING").is_some_and(|q| q.contains("clsact"))
                && section(&console, "QDISC AFTER").is_some_and(|q| !q.contains("clsact")),
            format!("{:?} then {:?}", section(&console, "QDISC WHILE RUNNING"), section(&console, "QDISC AFTER")),
        ),
        // Each of the 40 messages crossed two hooks: the upper device and the veth.
        (
            "a_vlan_on_a_veth_counts_each_message_once",
            vlan_once && dups("v0") + dups("v0.100") >= 40,
            format!("{vlan_detail}; duplicates on v0 and v0.100: {}", dups("v0") + dups("v0.100")),
        ),
        (
            "a_bond_over_a_veth_counts_each_message_once",
            bond_once && dups("v2") + dups("bond1") >= 40,
            format!("{bond_detail}; duplicates on v2 and bond1: {}", dups("v2") + dups("bond1")),
        ),
        ("every_module_loads", !console.contains("=== INSMOD FAILED"), "insmod".into()),
        ("a_tls_client_hello_with_no_answer_is_stalled", stalled, stalled_detail),
        ("a_tls_record_cut_by_a_close_is_malformed", cut, cut_detail),
        (
            "http_over_lo_is_matched_request_to_response",
            plain.as_ref().is_some_and(|t| t["total"]["responses"] == 3 && t["total"]["2xx"] == 3),
            format!("target: {}", plain.clone().unwrap_or_default()),
        ),
        (
            "https_is_read_through_the_openssl_uprobes",
            over_tls.as_ref().is_some_and(|t| t["total"]["2xx"].as_u64().unwrap_or(0) >= 1),
            format!("target: {}; http: {}", over_tls.clone().unwrap_or_default(), report["http"]),
        ),
        (
            "established_connections_are_sampled_by_sock_ops",
            // The RTT samples are older than the final window by then: they are in the baseline.
            sampled.as_ref().is_some_and(|d| {
                d["total"]["segments"].as_u64().unwrap_or(0) >= 3 && (d["rtt"]["count"].as_u64().unwrap_or(0) >= 1 || d["rtt_baseline_us"].as_u64().is_some())
            })
                && stderr.contains("sock_ops:cgroup"),
            format!("destination: {}", sampled.clone().unwrap_or_default()),
        ),
        (
            "a_connect_without_a_route_is_counted_with_its_errno",
            unrouted.as_ref().is_some_and(|d| d["total"]["connect_failed"] == 2 && d["connect_errors"][0][0] == "ENETUNREACH"),
            format!("destination: {}", unrouted.clone().unwrap_or_default()),
        ),
        (
            "refused_connects_are_counted",
            dest.is_some_and(|d| d["total"]["refused"] == 3),
            format!("destination: {}", dest.cloned().unwrap_or_default()),
        ),
    ];
    let mut failed = 0;
    for (name, ok, detail) in &checks {
        println!("test kernel_6_1::{name} ... {}", if *ok { "ok" } else { "FAILED" });
        if !ok {
            println!("    {detail}");
            failed += 1;
        }
    }
    println!("test result: {}. {} passed; {failed} failed", if failed == 0 { "ok" } else { "FAILED" }, checks.len() - failed);
    tally.0 += (checks.len() - failed) as u64;
    tally.1 += failed as u64;
    if failed > 0 {
        println!("observer's stderr in the guest:\n{stderr}");
        bail!("{failed} kernel checks failed; the guest's console is in {}", work.join("console.log").display());
    }
    Ok(())
}
