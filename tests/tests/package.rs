//! The .deb (`cargo xtask package`) installed with dpkg in a throwaway root: the host's own
//! system under an overlay whose writes go to a tmpfs, in a mount namespace of its own, with
//! dpkg chrooted into it. The host is untouched.

use observer_tests::{peers::TempDir, require_root, sh, sh_status};

#[test]
fn the_deb_installs_runs_shows_its_man_page_and_removes_cleanly() {
    require_root();
    let deb = std::env::var("OBSERVER_DEB").expect("OBSERVER_DEB: the .deb to test (cargo xtask test builds it with cargo xtask package)");
    let host_group_before = sh_status("getent group observer").0;
    let dir = TempDir::new("deb-root");
    let r = dir.0.display();
    let files = [
        "/usr/bin/observer",
        "/usr/lib/systemd/system/observer.service",
        "/etc/default/observer",
        "/usr/share/man/man1/observer.1.gz",
        "/usr/share/bash-completion/completions/observer",
        "/usr/share/zsh/vendor-completions/_observer",
        "/usr/share/fish/vendor_completions.d/observer.fish",
    ]
    .join(" ");
    let script = format!(
        r#"set -e
R={r}
mount -t tmpfs tmpfs $R
mkdir $R/upper $R/work $R/root
mount -t overlay overlay -o lowerdir=/,upperdir=$R/upper,workdir=$R/work $R/root
mount -t proc proc $R/root/proc
mount --bind /dev $R/root/dev
cp {deb} $R/root/tmp/observer.deb
c() {{ chroot $R/root "$@"; }}
c dpkg -i /tmp/observer.deb >/dev/null
echo "== version"; c observer --version
echo "== group"; c getent group observer
echo "== files"; for f in {files}; do c test -s $f && echo "have $f"; done
echo "== man"; c env MANPAGER=cat COLUMNS=100 man observer 2>&1 | head -20
echo "== completion"; c bash -c '. /usr/share/bash-completion/completions/observer && complete -p observer'
echo "== unit"; c systemd-analyze verify /usr/lib/systemd/system/observer.service 2>&1 && echo "unit ok"
echo "== enabled"; c test -L /etc/systemd/system/multi-user.target.wants/observer.service && echo "enabled"
c dpkg --purge observer >/dev/null
echo "== after purge"
c dpkg -s observer >/dev/null 2>&1 && echo "still installed"
c getent group observer || echo "no group"
for f in {files} /etc/systemd/system/multi-user.target.wants/observer.service; do c test -e $f && echo "left $f"; done
echo "== done"
"#
    );
    let (ok, out) = sh_status(&format!("unshare -m --propagation private bash -c {}", observer_tests::net::quote(&script)));
    assert!(ok, "{out}");
    let section = |name: &str| -> String {
        let start = out.find(&format!("== {name}\n")).unwrap_or_else(|| panic!("no {name}: {out}")) + name.len() + 4;
        out[start..].split("\n== ").next().unwrap_or_default().to_owned()
    };
    assert_eq!(section("version").trim(), format!("observer {}", env!("CARGO_PKG_VERSION")), "{out}");
    assert!(section("group").starts_with("observer:x:"), "the postinst creates the group: {out}");
    assert_eq!(section("files").lines().count(), 7, "{out}");
    let man = section("man");
    assert!(man.contains("NAME") && man.contains("observer - Passive network triage") && man.contains("SYNOPSIS"), "{man}");
    assert!(section("completion").contains("-F _observer observer"), "{out}");
    assert!(section("unit").contains("unit ok"), "{out}");
    assert!(section("enabled").contains("enabled"), "{out}");
    let after = section("after purge");
    assert_eq!(after.trim(), "no group", "nothing left after a purge: {out}");
    assert!(out.contains("== done"), "{out}");
    // The host never saw any of it.
    assert!(!std::path::Path::new("/usr/bin/observer").exists() || sh("dpkg -S /usr/bin/observer 2>&1 || true").contains("no path found"));
    assert_eq!(sh_status("getent group observer").0, host_group_before);
}
