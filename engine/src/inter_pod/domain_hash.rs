//! The hasher for maps keyed by topology domain (a node label value). The
//! filter looks a domain up for every node in every cycle of a pod with inter-pod
//! rules, so the hash is on the hot path; FNV-1a is several times cheaper than the
//! standard SipHash on short strings. Keys are label values of the cluster's own
//! nodes, so SipHash's resistance to chosen keys buys little here.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by topology domain.
pub(crate) type DomainMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv1a>>;
