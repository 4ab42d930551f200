//! Which interface this host routes an address through: longest-prefix match over the main
//! routing tables in `/proc/net/route` and `/proc/net/ipv6_route` (no policy routing), for
//! the blast radius ("one interface"). Read again every few intervals; one cache entry per
//! address asked.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use crate::layers::routing::network;

#[derive(Debug, Clone, PartialEq)]
struct Route {
    net: IpAddr,
    prefix: u8,
    iface: String,
}

#[derive(Debug)]
pub struct Routes {
    proc: PathBuf,
    routes: Vec<Route>,
    cache: HashMap<IpAddr, Option<String>>,
}

/// Addresses remembered between two reloads of the tables.
const MAX_CACHED: usize = 65_536;

impl Routes {
    pub fn new(proc: PathBuf) -> Routes {
        let mut r = Routes { proc, routes: Vec::new(), cache: HashMap::new() };
        r.reload();
        r
    }

    pub fn reload(&mut self) {
        let read = |name: &str| std::fs::read_to_string(self.proc.join("net").join(name)).unwrap_or_default();
        let mut routes = parse_v4(&read("route"));
        routes.extend(parse_v6(&read("ipv6_route")));
        // Longest prefix first: the first match wins.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix));
        self.routes = routes;
        self.cache.clear();
    }

    pub fn iface(&mut self, ip: IpAddr) -> Option<String> {
        if let Some(hit) = self.cache.get(&ip) {
            return hit.clone();
        }
        let found = self.routes.iter().find(|r| contains(r.net, r.prefix, ip)).map(|r| r.iface.clone());
        if self.cache.len() < MAX_CACHED {
            self.cache.insert(ip, found.clone());
        }
        found
    }
}

/// `ip` is in `net/prefix` (same family).
pub fn contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    net.is_ipv4() == ip.is_ipv4() && network(net, prefix) == network(ip, prefix)
}

/// `/proc/net/route`: Iface, Destination, Gateway, Flags, RefCnt, Use, Metric, Mask, …, with
/// addresses as little-endian hex. Routes that are not up (flag 1) are left out.
fn parse_v4(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            if flags & 1 == 0 {
                return None;
            }
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            Some(Route {
                net: IpAddr::V4(Ipv4Addr::from(dest.swap_bytes())),
                prefix: mask.count_ones() as u8,
                iface: (*f.first()?).to_owned(),
            })
        })
        .collect()
}

/// `/proc/net/ipv6_route`: destination (32 hex), its prefix length (hex), source and its
/// length, next hop, metric, refcount, use, flags, interface.
fn parse_v6(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let net = u128::from_str_radix(f[0], 16).ok()?;
            let prefix = u8::from_str_radix(f[1], 16).ok()?;
            let iface = f[9];
            // The kernel's "lo" entries for local and unreachable routes are not a way out.
            (iface != "lo").then(|| Route { net: IpAddr::V6(Ipv6Addr::from(net)), prefix, iface: iface.to_owned() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_names_the_interface() {
        let dir = std::env::temp_dir().join(format!("obs-routes-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::write(
            dir.join("net/route"),
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth1\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             down0\t0003000A\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("net/ipv6_route"),
            "fd770001000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1\n\
             00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n",
        )
        .unwrap();
        let mut r = Routes::new(dir.clone());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(r.iface(ip("10.0.2.7")).as_deref(), Some("eth1"));
        assert_eq!(r.iface(ip("192.0.2.1")).as_deref(), Some("eth0"), "the default route");
        assert_eq!(r.iface(ip("10.0.3.1")).as_deref(), Some("eth0"), "a route that is not up is skipped");
        assert_eq!(r.iface(ip("fd77:1::2")).as_deref(), Some("eth1"));
        assert_eq!(r.iface(ip("fd99::1")), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
