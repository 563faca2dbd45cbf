//! Name and address sets loaded from files (`tproxyd.sets`): block and
//! allow lists of up to millions of domains, hosts files, adblock lists,
//! CIDR lists. Rules refer to them by name (`host_set`, `client_set`,
//! `dst_set`); a set's file is re-read when it changes or on SIGHUP
//! ([`watch`]), the new set built off the request path and swapped in
//! atomically, and a file that cannot be loaded keeps the previous set.
//!
//! ```yaml
//! tproxyd:
//!   sets:
//!     ads: { file: /etc/tproxyd/ads.txt, format: auto }   # auto | domains | hosts | adblock | cidrs
//!     lan: { file: /etc/tproxyd/lan.cidrs, format: cidrs, max_entries: 100000 }
//!   sets_watch_interval: 5s
//! ```
//!
//! Names are kept as fingerprints of reversed labels ([`names`]), addresses
//! as merged ranges ([`cidrs`]); [`load`] reads a file within bounds.

pub mod cidrs;
pub mod load;
pub mod names;
pub mod parse;
pub mod watch;

use crate::error::{invalid, ConfigError, Timeout};
use arc_swap::ArcSwapOption;
use cidrs::NetHit;
pub use load::{Contents, Report};
pub use parse::Format;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One `tproxyd.sets.NAME` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSettings {
    file: PathBuf,
    #[serde(default)]
    format: Format,
    #[serde(default = "default_max_entries")]
    max_entries: usize,
}

fn default_max_entries() -> usize {
    5_000_000
}

/// The default of `tproxyd.sets_watch_interval`.
pub const DEFAULT_WATCH_INTERVAL: Timeout = Timeout::secs(5);

/// What a set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// Domain names.
    Names,
    /// Addresses and networks.
    Addresses,
}

/// A set as loaded: its contents, what the load found, and when.
#[derive(Debug)]
pub struct Loaded {
    /// The entries.
    pub contents: Contents,
    /// Counts and skipped lines.
    pub report: Report,
    /// When it was loaded.
    pub at: SystemTime,
}

/// One configured set: its settings and what is loaded now.
#[derive(Debug)]
pub struct Slot {
    /// Its name in `tproxyd.sets`.
    pub name: String,
    /// Its file.
    pub file: PathBuf,
    /// Its format.
    pub format: Format,
    /// The most entries a load may keep.
    pub max_entries: usize,
    current: ArcSwapOption<Loaded>,
}

/// A name found in a set: the entry, and where it was listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The entry as listed (`example.com`, `10.0.0.0/8`).
    pub entry: String,
    /// `file:line`.
    pub at: String,
}

impl Slot {
    /// Names or addresses.
    pub fn kind(&self) -> SetKind {
        match self.format {
            Format::Cidrs => SetKind::Addresses,
            _ => SetKind::Names,
        }
    }

    /// Loads the file and swaps the result in; on failure the previous
    /// contents stay and the error says why.
    pub fn load(&self) -> Result<Arc<Loaded>, String> {
        let loaded = load::load(&self.file, self.format, self.max_entries)
            .map_err(|why| format!("{}: {why}", self.file.display()));
        // The load's scratch space (several times the set's size) goes
        // back to the system now rather than staying in the allocator's
        // free lists: a router has little memory.
        // SAFETY: mi_collect has no preconditions; it only frees pages the
        // allocator holds unused (none when another allocator is global).
        unsafe { libmimalloc_sys::mi_collect(true) };
        let (contents, report) = loaded?;
        let loaded = Arc::new(Loaded {
            contents,
            report,
            at: SystemTime::now(),
        });
        self.current.store(Some(loaded.clone()));
        Ok(loaded)
    }

    /// What is loaded now, if anything.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current.load_full()
    }

    /// Whether `name` (normalised) or a parent of it is in this name set.
    pub fn contains_name(&self, name: &str) -> bool {
        match self.current.load().as_deref() {
            Some(Loaded {
                contents: Contents::Names(s),
                ..
            }) => s.contains(name),
            _ => false,
        }
    }

    /// Whether `ip` is in this address set.
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        match self.current.load().as_deref() {
            Some(Loaded {
                contents: Contents::Cidrs(s),
                ..
            }) => s.contains(ip),
            _ => false,
        }
    }

    /// The entry covering `name` or `ip`, for `tproxyd explain`.
    pub fn find(&self, name: Option<&str>, ip: Option<IpAddr>) -> Option<Found> {
        let loaded = self.current.load_full()?;
        let file = self.file.file_name().unwrap_or_default().to_string_lossy();
        let (entry, line) = match (&loaded.contents, name, ip) {
            (Contents::Names(s), Some(n), _) => {
                let entry = s.entry(n)?;
                let line = load::line_of(&self.file, self.format, &entry);
                (entry, line.map_or("?".into(), |l| l.to_string()))
            }
            (Contents::Cidrs(s), _, Some(ip)) => s
                .lookup(ip)
                .map(|NetHit { net, line }| (net.to_string(), line.to_string()))?,
            _ => return None,
        };
        Some(Found {
            entry,
            at: format!("{file}:{line}"),
        })
    }
}

/// Every configured set, by name, and how often their files are checked.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    slots: Vec<Arc<Slot>>,
    /// How often files are checked for changes.
    pub watch_interval: Duration,
}

impl Catalog {
    /// Validates `tproxyd.sets` (not loading anything yet).
    pub fn validate(
        sets: indexmap::IndexMap<String, SetSettings>,
        watch_interval: Timeout,
    ) -> Result<Catalog, ConfigError> {
        let mut slots = Vec::with_capacity(sets.len());
        for (name, s) in sets {
            let key = format!("tproxyd.sets.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                return Err(invalid(key, "a set's name is letters, digits, - and _"));
            }
            if s.max_entries == 0 {
                return Err(invalid(format!("{key}.max_entries"), "must be at least 1"));
            }
            slots.push(Arc::new(Slot {
                name,
                file: s.file,
                format: s.format,
                max_entries: s.max_entries,
                current: ArcSwapOption::empty(),
            }));
        }
        Ok(Catalog {
            slots,
            watch_interval: watch_interval.0,
        })
    }

    /// The set named `name`, checked to be of `kind`; the error names
    /// `key` (the rule's key that refers to it).
    pub fn get(&self, name: &str, kind: SetKind, key: &str) -> Result<Arc<Slot>, ConfigError> {
        let slot = self.slots.iter().find(|s| s.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.slots.iter().map(|s| s.name.as_str()).collect();
            invalid(
                key,
                format!(
                    "no set {name:?} in tproxyd.sets (known: {})",
                    known.join(", ")
                ),
            )
        })?;
        if slot.kind() != kind {
            let want = match kind {
                SetKind::Names => "names (format auto, domains, hosts or adblock)",
                SetKind::Addresses => "addresses (format cidrs)",
            };
            return Err(invalid(key, format!("set {name:?} does not hold {want}")));
        }
        Ok(slot.clone())
    }

    /// The set named `name`, if configured.
    pub fn find(&self, name: &str) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.as_ref())
    }

    /// Every set, in the order configured.
    pub fn slots(&self) -> &[Arc<Slot>] {
        &self.slots
    }

    /// Loads every set, at start-up: a set that cannot be loaded is a
    /// config error naming its file key.
    pub fn load_all(&self) -> Result<(), ConfigError> {
        for slot in &self.slots {
            let key = format!("tproxyd.sets.{}.file", slot.name);
            let loaded = slot.load().map_err(|why| invalid(key, why))?;
            watch::loaded(slot, &loaded);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
