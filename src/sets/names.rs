//! A set of domain names, each covering itself and its subdomains: an FST
//! (the `fst` crate) over the names written with their labels reversed and
//! a dot after each (`example.com` as `com.example.`), so that a name and
//! all its subdomains share a prefix ending at a label boundary. A lookup
//! walks the name's reversed form through the FST once and stops at the
//! first final state it meets after a dot: no allocation, and a
//! million-name list in a few MiB.
//!
//! Each name maps to the line it came from, for `tproxyd explain`.

use super::parse::MAX_NAME;
use fst::raw::Output;

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

/// The entry a name matched, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The listed name (the matched name itself or a parent of it).
    pub entry: String,
    /// Its line in the file.
    pub line: u64,
}

/// A built name set.
pub struct NameSet {
    map: fst::Map<Vec<u8>>,
}

impl std::fmt::Debug for NameSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameSet").field("len", &self.len()).finish()
    }
}

impl NameSet {
    /// From reversed keys in strictly increasing order, each with its
    /// line.
    pub fn build<'k>(keys: impl IntoIterator<Item = (&'k [u8], u64)>) -> Result<NameSet, String> {
        let mut b = fst::MapBuilder::memory();
        for (k, line) in keys {
            b.insert(k, line).map_err(|e| e.to_string())?;
        }
        let bytes = b.into_inner().map_err(|e| e.to_string())?;
        let map = fst::Map::new(bytes).map_err(|e| e.to_string())?;
        Ok(NameSet { map })
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes the set takes.
    pub fn size(&self) -> usize {
        self.map.as_fst().size()
    }

    /// How long the matched key is and its line, for `name` (normalised:
    /// lower case, no trailing dot).
    fn find(&self, name: &str, buf: &mut [u8; KEY_MAX]) -> Option<(usize, u64)> {
        let key = reversed(name, buf)?;
        let fst = self.map.as_fst();
        let mut node = fst.root();
        let mut out = Output::zero();
        for (i, &b) in key.iter().enumerate() {
            let t = node.transition(node.find_input(b)?);
            out = out.cat(t.out);
            node = fst.node(t.addr);
            if b == b'.' && node.is_final() {
                return Some((i + 1, out.cat(node.final_output()).value()));
            }
        }
        None
    }

    /// Whether `name` or a parent of it is listed.
    pub fn contains(&self, name: &str) -> bool {
        self.find(name, &mut [0; KEY_MAX]).is_some()
    }

    /// The listed entry that covers `name`, if any.
    pub fn lookup(&self, name: &str) -> Option<Hit> {
        let mut buf = [0; KEY_MAX];
        let (len, line) = self.find(name, &mut buf)?;
        let key = std::str::from_utf8(&buf[..len - 1]).ok()?;
        let entry: Vec<&str> = key.rsplit('.').collect();
        Some(Hit {
            entry: entry.join("."),
            line,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> NameSet {
        let mut keys: Vec<(Vec<u8>, u64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    reversed(n, &mut [0; KEY_MAX]).unwrap().to_vec(),
                    i as u64 + 1,
                )
            })
            .collect();
        keys.sort();
        NameSet::build(keys.iter().map(|(k, l)| (k.as_slice(), *l))).unwrap()
    }

    #[test]
    fn covers_subdomains_on_label_boundaries_only() {
        let s = set(&["example.com", "ads.test", "b.c.d"]);
        assert!(s.contains("example.com"));
        assert!(s.contains("a.example.com"));
        assert!(s.contains("x.y.example.com"));
        assert!(!s.contains("badexample.com"));
        assert!(!s.contains("com"));
        assert!(!s.contains("example.co"));
        assert!(!s.contains("c.d"));
        assert!(s.contains("a.b.c.d"));
        assert_eq!(
            s.lookup("www.example.com"),
            Some(Hit {
                entry: "example.com".into(),
                line: 1
            })
        );
        assert_eq!(s.lookup("b.c.d").unwrap().line, 3);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn reversal() {
        let mut b = [0; KEY_MAX];
        assert_eq!(
            reversed("a.example.com", &mut b).unwrap(),
            b"com.example.a."
        );
        assert_eq!(reversed(&"a".repeat(254), &mut b), None);
        let long = format!("{}.{}", "a".repeat(126), "b".repeat(126));
        assert_eq!(reversed(&long, &mut b).unwrap().len(), 254);
    }
}
