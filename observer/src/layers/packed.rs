//! Destinations with their window counts, packed for the rules to read once. A close lists
//! every destination past the `--top` ones for the rules (which judge all of them); as
//! `(SocketAddr, [u32; 11])` that list was 76 bytes a destination, 7.6 MB at 100,000, the
//! largest thing a close built. Most counters are zero (a refused connect grows two), so an
//! entry is its port and family, its address, a mask of its non-zero counters and only those:
//! 20 bytes for that refused connect.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// Set in an entry's first word for IPv6 (then four address words and the scope id follow).
const V6: u32 = 1 << 16;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedCounts<const N: usize> {
    words: Vec<u32>,
    len: usize,
}

impl<const N: usize> PackedCounts<N> {
    const FITS: () = assert!(N <= 32, "an entry's mask has 32 bits");

    /// Room for about `entries` entries of a few counters each.
    pub fn with_capacity(entries: usize) -> Self {
        PackedCounts { words: Vec::with_capacity(entries.saturating_mul(5)), len: 0 }
    }

    /// Add a destination; counts past u32::MAX are saturated (the rules' thresholds are far
    /// below).
    pub fn push(&mut self, addr: SocketAddr, counts: &[u64; N]) {
        let () = Self::FITS;
        match addr {
            SocketAddr::V4(a) => self.words.extend([u32::from(a.port()), a.ip().to_bits()]),
            SocketAddr::V6(a) => {
                let ip = a.ip().to_bits();
                self.words.extend([u32::from(a.port()) | V6, (ip >> 96) as u32, (ip >> 64) as u32, (ip >> 32) as u32, ip as u32, a.scope_id()]);
            }
        }
        let mask = counts.iter().enumerate().filter(|(_, c)| **c > 0).fold(0u32, |m, (i, _)| m | (1 << i));
        self.words.push(mask);
        self.words.extend(counts.iter().filter(|c| **c > 0).map(|c| u32::try_from(*c).unwrap_or(u32::MAX)));
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, [u32; N])> + '_ {
        let w = &self.words;
        let mut i = 0;
        std::iter::from_fn(move || {
            let head = *w.get(i)?;
            let port = head as u16;
            let (addr, at) = if head & V6 == 0 {
                (SocketAddr::from((Ipv4Addr::from_bits(*w.get(i + 1)?), port)), i + 2)
            } else {
                let a = w.get(i + 1..i + 6)?;
                let ip = (u128::from(a[0]) << 96) | (u128::from(a[1]) << 64) | (u128::from(a[2]) << 32) | u128::from(a[3]);
                (SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from_bits(ip), port, 0, a[4])), i + 6)
            };
            let mask = *w.get(at)?;
            let mut counts = [0u32; N];
            let mut next = at + 1;
            for (k, c) in counts.iter_mut().enumerate() {
                if mask & (1 << k) != 0 {
                    *c = *w.get(next)?;
                    next += 1;
                }
            }
            i = next;
            Some((addr, counts))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_as_pushed_in_a_fraction_of_the_space() {
        let mut p = PackedCounts::<11>::with_capacity(4);
        let v4: SocketAddr = "10.200.3.4:443".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1:2]:53".parse().unwrap();
        let scoped = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 80, 0, 7));
        let mut refused = [0u64; 11];
        (refused[0], refused[2]) = (1, 1);
        let mut all = [0u64; 11];
        for (i, c) in all.iter_mut().enumerate() {
            *c = i as u64 + 1;
        }
        all[10] = u64::from(u32::MAX) + 5;
        p.push(v4, &refused);
        p.push(v6, &all);
        p.push(scoped, &[0; 11]);
        p.push(v4, &[0; 11]);
        let got: Vec<_> = p.iter().collect();
        let mut all32 = all.map(|c| c as u32);
        all32[10] = u32::MAX;
        assert_eq!(got, [(v4, refused.map(|c| c as u32)), (v6, all32), (scoped, [0; 11]), (v4, [0; 11])]);
        assert_eq!(p.len(), 4);
        // The refused connect: port, address, mask and two counts.
        let mut one = PackedCounts::<11>::default();
        one.push(v4, &refused);
        assert_eq!(one.words.len() * 4, 20);
    }
}
