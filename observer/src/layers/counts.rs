//! Counters with their names, serialised as a JSON object in index order.

use serde::Serialize;

/// Counters that serialise as a JSON object in the kernel's index order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts<const N: usize> {
    pub values: [u64; N],
    pub names: &'static [&'static str; N],
}

impl<const N: usize> Counts<N> {
    pub fn get(&self, index: usize) -> u64 {
        self.values[index]
    }
}

impl<const N: usize> Serialize for Counts<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(N))?;
        for (name, v) in self.names.iter().zip(self.values) {
            m.serialize_entry(name, &v)?;
        }
        m.end()
    }
}
