//! Which interfaces the TC program watches: every interface that is up (or the ones named
//! with `--interface`), including ones that appear after start.

use std::{fs, path::Path};

/// Where to hook an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hooks {
    /// Ingress and egress.
    Both,
    /// Loopback: a packet crosses egress and then ingress of the same device, so one hook
    /// sees it once.
    EgressOnly,
}

/// What a packet starts with on this interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    /// No link header: the IP header comes first (tun, WireGuard, ipip, GRE, PPP).
    Ip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub ifindex: u32,
    pub hooks: Hooks,
    pub link: Link,
}

const ARPHRD_ETHER: u32 = 1;
const ARPHRD_LOOPBACK: u32 = 772;
/// Link types whose packets start with the IP header: PPP, raw IP, ipip, ip6tnl, sit, GRE,
/// ip6gre, and "none" (tun, WireGuard).
const ARPHRD_IP_FIRST: [u32; 8] = [512, 519, 768, 769, 776, 778, 823, 65534];
const IFF_UP: u32 = 0x1;

fn read_number(path: &Path) -> Option<u32> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// What to do with one interface, from its sysfs `type` and `flags`.
pub fn hooks_for(kind: u32, flags: u32) -> Result<(Hooks, Link), String> {
    if flags & IFF_UP == 0 {
        return Err("down".to_owned());
    }
    match kind {
        ARPHRD_ETHER => Ok((Hooks::Both, Link::Ethernet)),
        ARPHRD_LOOPBACK => Ok((Hooks::EgressOnly, Link::Ethernet)),
        k if ARPHRD_IP_FIRST.contains(&k) => Ok((Hooks::Both, Link::Ip)),
        other => Err(format!("link type {other} is neither Ethernet nor IP-first; not watched")),
    }
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Interfaces to watch now.
    pub watch: Vec<Iface>,
    /// Interfaces that cannot be watched, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Interfaces that are down (watched once they come up).
    pub down: Vec<String>,
}

/// The interfaces under `sysfs_net` (only those named in `only`, when it is not empty).
pub fn scan(sysfs_net: &Path, only: &[String]) -> Scan {
    let mut found = Scan::default();
    let Ok(entries) = fs::read_dir(sysfs_net) else { return found };
    let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for name in names {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let dir = sysfs_net.join(&name);
        let (Some(kind), Some(flags), Some(ifindex)) =
            (read_number(&dir.join("type")), read_number(&dir.join("flags")), read_number(&dir.join("ifindex")))
        else {
            continue;
        };
        match hooks_for(kind, flags) {
            Ok((hooks, link)) => found.watch.push(Iface { name, ifindex, hooks, link }),
            Err(reason) if reason != "down" => found.skipped.push((name, reason)),
            Err(_) => found.down.push(name),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_hooked_once_and_odd_links_are_explained() {
        assert_eq!(hooks_for(1, 0x1003), Ok((Hooks::Both, Link::Ethernet)));
        assert_eq!(hooks_for(772, 0x9), Ok((Hooks::EgressOnly, Link::Ethernet)));
        assert_eq!(hooks_for(1, 0x1002), Err("down".to_owned()));
        assert_eq!(hooks_for(65534, 0x1), Ok((Hooks::Both, Link::Ip)), "WireGuard and tun are parsed from L3");
        assert!(hooks_for(32, 0x1).unwrap_err().contains("neither Ethernet"), "InfiniBand is not");
    }

    #[test]
    fn scans_a_sysfs_like_tree_and_honours_the_filter() {
        let dir = std::env::temp_dir().join(format!("observer-ifaces-{}", std::process::id()));
        for (name, kind, flags, idx) in [("eth0", "1", "0x1003", "2"), ("lo", "772", "0x9", "1"), ("ib0", "32", "0x1", "5"), ("eth1", "1", "0x1002", "3")] {
            let d = dir.join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("type"), kind).unwrap();
            fs::write(d.join("flags"), flags).unwrap();
            fs::write(d.join("ifindex"), idx).unwrap();
        }
        let found = scan(&dir, &[]);
        let names: Vec<&str> = found.watch.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "lo"]);
        assert_eq!(found.skipped.len(), 1);
        assert_eq!(found.skipped[0].0, "ib0");
        assert_eq!(found.down, ["eth1"]);
        let found = scan(&dir, &["lo".to_owned()]);
        assert_eq!(found.watch, vec![Iface { name: "lo".into(), ifindex: 1, hooks: Hooks::EgressOnly, link: Link::Ethernet }]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
