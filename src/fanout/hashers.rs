//! Hashers and map types for the fan-out's keys: locate codes (already
//! well spread) and tickers (a few bytes chosen by the feed).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::wire::Locate;

/// A hasher for `u16` keys: the key is already well spread.
#[derive(Default)]
pub struct LocateHasher(u64);

impl Hasher for LocateHasher {
    fn finish(&self) -> u64 {
        // Spread the bits so hashbrown's top-7-bit tags differ.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n);
    }
}

/// FNV-1a over a ticker's bytes: tickers are a few bytes, chosen by the
/// feed, and looked up once per quote per client; SipHash's flood
/// resistance buys nothing here and costs most of the lookup.
#[derive(Clone, Copy)]
pub struct SymbolHasher(u64);

impl Default for SymbolHasher {
    fn default() -> Self {
        SymbolHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for SymbolHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A map keyed by ticker.
pub type SymbolMap<V> = HashMap<Arc<str>, V, BuildHasherDefault<SymbolHasher>>;

/// A `HashSet` of locate codes.
pub type LocateSet = HashSet<Locate, BuildHasherDefault<LocateHasher>>;
