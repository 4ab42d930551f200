//! The TC program on every watched interface: attached as interfaces come up, forgotten as
//! they go, and each failure listed in `disabled` with the kernel's reason.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, tc::SchedClassifierLinkId},
};

use super::{
    Disabled,
    interfaces::{self, Hooks, Link},
    tc_attach::{ClsactOwner, Hook, TcAttach, attach},
};

/// The programs attached to one interface, by name.
type Links = Vec<(&'static str, SchedClassifierLinkId)>;

/// The programs, by link type and hook.
fn program(link: Link, hook: TcAttachType) -> &'static str {
    match (link, hook) {
        (Link::Ethernet, TcAttachType::Ingress) => "observer_ingress",
        (Link::Ethernet, _) => "observer_egress",
        (Link::Ip, TcAttachType::Ingress) => "observer_ingress_l3",
        (Link::Ip, _) => "observer_egress_l3",
    }
}

pub const PROGRAMS: [&str; 5] = ["observer_ingress", "observer_egress", "observer_ingress_l3", "observer_egress_l3", "tc_empty"];

pub struct TcHooks {
    pub mode: TcAttach,
    only: Vec<String>,
    /// (also attach the empty program, attach only the empty program): benchmark baselines.
    baseline: (bool, bool),
    /// Interface name -> (ifindex, links).
    links: HashMap<String, (u32, Links)>,
    /// Interfaces already reported as not watchable, so each is said once.
    skipped: HashMap<String, String>,
    /// "iface hook" -> why it could not be attached (kept until it attaches).
    failed: BTreeMap<String, String>,
    /// Interfaces named with --interface that are absent or down, and which of the two.
    missing: BTreeMap<String, &'static str>,
    /// Whether `refresh` ran before (the start's state is said by the `disabled` lines).
    refreshed: bool,
    /// Declared last: fields drop in order, and the qdiscs go after the links.
    owner: ClsactOwner,
}

impl TcHooks {
    pub fn new(mode: TcAttach, only: Vec<String>, baseline: (bool, bool)) -> TcHooks {
        TcHooks {
            mode: mode.resolve(),
            only,
            baseline,
            links: HashMap::new(),
            skipped: HashMap::new(),
            failed: BTreeMap::new(),
            missing: BTreeMap::new(),
            refreshed: false,
            owner: ClsactOwner::new(),
        }
    }

    /// Interfaces the program is attached to.
    pub fn interfaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.links.keys().cloned().collect();
        v.sort();
        v
    }

    /// Interface index -> name, for the interfaces watched.
    pub fn names(&self) -> HashMap<u32, String> {
        self.links.iter().map(|(name, (idx, _))| (*idx, name.clone())).collect()
    }

    /// Hooks that could not be attached, as `disabled` entries.
    pub fn disabled(&self) -> Vec<Disabled> {
        let missing = self.missing.iter().map(|(name, why)| Disabled {
            source: format!("interface:{name}"),
            signals: "DNS, TLS, HTTP and ICMP on this interface (named with --interface)",
            reason: (*why).to_owned(),
        });
        self.failed
            .iter()
            .map(|(hook, reason)| Disabled { source: format!("tc:{hook}"), signals: "DNS and TLS on this interface", reason: reason.clone() })
            .chain(missing)
            .collect()
    }

    /// Interfaces named with --interface that cannot be watched now: said once when that
    /// starts and once when it ends, and listed in `disabled` meanwhile.
    fn check_named(&mut self, current: &HashMap<&str, u32>, down: &[String], notes: &mut Vec<String>) {
        for name in &self.only {
            let why = if current.contains_key(name.as_str()) || self.skipped.contains_key(name) {
                None
            } else if down.contains(name) {
                Some("the interface is down")
            } else {
                Some("no such interface")
            };
            match why {
                Some(why) if self.missing.get(name) != Some(&why) => {
                    // At start the `disabled` line says it.
                    if self.refreshed {
                        notes.push(format!("--interface {name}: {why}; nothing is watched on it until it is up"));
                    }
                    self.missing.insert(name.clone(), why);
                }
                None if self.missing.remove(name).is_some() => notes.push(format!("--interface {name} is up again: watched")),
                _ => {}
            }
        }
    }

    /// Attach to interfaces that came up since the last call and forget the ones that went
    /// away. Returns lines to tell the user.
    pub fn refresh(&mut self, ebpf: &mut Ebpf) -> Vec<String> {
        let mut notes = Vec::new();
        let interfaces::Scan { watch, skipped, down } = interfaces::scan(Path::new("/sys/class/net"), &self.only);
        for (name, reason) in skipped {
            if self.skipped.get(&name) != Some(&reason) {
                notes.push(format!("DNS is not watched on {name}: {reason}"));
                self.skipped.insert(name, reason);
            }
        }
        // Gone, or replaced by a new device with the same name: the kernel already dropped
        // those links with the device; detach our handles (errors are expected then).
        let current: HashMap<&str, u32> = watch.iter().map(|i| (i.name.as_str(), i.ifindex)).collect();
        let stale: Vec<String> =
            self.links.iter().filter(|(name, (idx, _))| current.get(name.as_str()) != Some(idx)).map(|(n, _)| n.clone()).collect();
        for name in stale {
            if let Some((_, links)) = self.links.remove(&name) {
                for (prog, link) in links {
                    if let Some(Ok(p)) = ebpf.program_mut(prog).map(<&mut SchedClassifier>::try_from) {
                        let _ = p.detach(link);
                    }
                }
            }
        }
        self.failed.retain(|hook, _| hook.split(' ').next().is_some_and(|n| current.contains_key(n)));
        self.check_named(&current, &down, &mut notes);
        self.refreshed = true;
        for iface in watch {
            if self.links.contains_key(&iface.name) {
                continue;
            }
            let mut hooks = vec![TcAttachType::Egress];
            if iface.hooks == Hooks::Both {
                hooks.push(TcAttachType::Ingress);
            }
            let (with_empty, only_empty) = self.baseline;
            let mut plan: Vec<(&'static str, TcAttachType)> = Vec::new();
            if !only_empty {
                plan.extend(hooks.iter().map(|h| (program(iface.link, *h), *h)));
            }
            if with_empty || only_empty {
                plan.extend(hooks.iter().map(|h| ("tc_empty", *h)));
            }
            let mut links = Vec::new();
            for (name, hook) in plan {
                let key = format!("{} {}", iface.name, if hook == TcAttachType::Ingress { "ingress" } else { "egress" });
                let attached = match ebpf.program_mut(name).map(<&mut SchedClassifier>::try_from) {
                    Some(Ok(prog)) => {
                        let at = Hook { iface: &iface.name, ifindex: iface.ifindex, kind: hook };
                        attach(prog, name, &at, self.mode, &mut self.owner, &mut notes)
                    }
                    _ => Err(anyhow::anyhow!("program {name} is not loaded")),
                };
                match attached {
                    Ok(link) => {
                        links.push((name, link));
                        self.failed.remove(&key);
                    }
                    Err(e) => {
                        let reason = format!("{e:#}");
                        if self.failed.get(&key) != Some(&reason) {
                            notes.push(format!("cannot watch DNS and TLS on {key}: {reason}"));
                        }
                        self.failed.insert(key, reason);
                    }
                }
            }
            if !links.is_empty() {
                self.links.insert(iface.name.clone(), (iface.ifindex, links));
            }
        }
        notes
    }
}
