//! A set of domain names, each covering itself and its subdomains.
//!
//! A name is keyed by its labels reversed, a dot after each
//! (`example.com` as `com.example.`), so a name's parents are the prefixes
//! of its key that end at a dot. The set holds a 64-bit fingerprint of
//! each listed key: SipHash, keyed at random per set (no client can aim a
//! name at a collision), in a hash table. A lookup hashes the name's key
//! once, taking the hash at each dot (`com.`, `com.example.`, ...), and
//! probes once for each: a handful of memory reads whatever the set's
//! size, no allocation. A false match needs two 64-bit fingerprints to collide
//! under a random key: about one lookup in 10^13 with a million names.
//!
//! An FST over the reversed keys was the first structure (smaller: 10.8
//! MiB for a million names against about 9 here with the load's scratch
//! returned), but its walk reads one node per byte through several MiB,
//! and the cache misses put its p99 over 1 µs (BENCHMARKS.md, "Sets: a million names").
//!
//! The set keeps no names: which entry matched is the matching part of
//! the name looked up, and its line is found in the file when asked
//! (`tproxyd explain`, `load::line_of`).

use super::parse::MAX_NAME;
use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// A name's reversed form fits in this (a dot after each label).
pub const KEY_MAX: usize = MAX_NAME + 1;

/// Writes `name`'s labels in reverse order, each followed by a dot
/// (`a.example.com` → `com.example.a.`); `None` when it is too long.
pub fn reversed<'b>(name: &str, buf: &'b mut [u8; KEY_MAX]) -> Option<&'b [u8]> {
    if name.is_empty() || name.len() > MAX_NAME {
        return None;
    }
    let mut at = 0;
    for label in name.rsplit('.') {
        let end = at + label.len() + 1;
        let slot = buf.get_mut(at..end)?;
        slot[..label.len()].copy_from_slice(label.as_bytes());
        slot[label.len()] = b'.';
        at = end;
    }
    Some(&buf[..at])
}

/// The prefixes of `key` that end at a dot, shortest first (the keys of
/// the name's parents, then its own), as their length and fingerprint, in
/// one pass: SipHash is a stream, so each prefix's hash continues the
/// last one's.
fn prefix_prints<'k>(
    keyed: &RandomState,
    key: &'k [u8],
) -> impl Iterator<Item = (usize, u64)> + 'k {
    let (mut h, mut len) = (keyed.build_hasher(), 0);
    key.split_inclusive(|&b| b == b'.').map(move |label| {
        h.write(label);
        len += label.len();
        (len, h.clone().finish())
    })
}

/// Passes a fingerprint (already a keyed hash) through as its own hash.
#[derive(Default)]
struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64s are hashed here; anything else is folded in, to be total.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A name set: fingerprints of reversed keys.
pub struct NameSet {
    prints: HashSet<u64, BuildHasherDefault<Fingerprint>>,
    keyed: RandomState,
}

impl std::fmt::Debug for NameSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameSet").field("len", &self.len()).finish()
    }
}

impl Default for NameSet {
    fn default() -> Self {
        NameSet {
            prints: HashSet::default(),
            keyed: RandomState::new(),
        }
    }
}

impl NameSet {
    fn print(&self, key: &[u8]) -> u64 {
        let mut h = self.keyed.build_hasher();
        h.write(key);
        h.finish()
    }

    /// Adds a reversed key; whether it was new.
    pub fn insert_key(&mut self, key: &[u8]) -> bool {
        self.prints.insert(self.print(key))
    }

    /// Drops every key covered by a listed parent of it, given the keys
    /// inserted: a listed name already covers its subdomains.
    pub fn drop_covered<'k>(&mut self, keys: impl IntoIterator<Item = &'k [u8]>) {
        for key in keys {
            let covered = prefix_prints(&self.keyed, key)
                .any(|(len, p)| len < key.len() && self.prints.contains(&p));
            if covered {
                self.prints.remove(&self.print(key));
            }
        }
        self.prints.shrink_to_fit();
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.prints.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.prints.is_empty()
    }

    /// Bytes the set takes (its table: a fingerprint and a control byte a
    /// slot).
    pub fn size(&self) -> usize {
        self.prints.capacity() * 9
    }

    /// How long the key of the listed name covering `name` is (its
    /// shortest listed parent, or itself).
    fn find(&self, name: &str, buf: &mut [u8; KEY_MAX]) -> Option<usize> {
        let key = reversed(name, buf)?;
        prefix_prints(&self.keyed, key)
            .find(|(_, p)| self.prints.contains(p))
            .map(|(len, _)| len)
    }

    /// Whether `name` (normalised: lower case, no trailing dot) or a
    /// parent of it is listed.
    pub fn contains(&self, name: &str) -> bool {
        self.find(name, &mut [0; KEY_MAX]).is_some()
    }

    /// The listed name that covers `name`, if any.
    pub fn entry(&self, name: &str) -> Option<String> {
        let mut buf = [0; KEY_MAX];
        let len = self.find(name, &mut buf)?;
        let key = std::str::from_utf8(&buf[..len - 1]).ok()?;
        Some(key.rsplit('.').collect::<Vec<_>>().join("."))
    }
}

#[cfg(test)]
mod tests;
