//! Name sets as the status page lists them. The sets themselves belong to
//! another component; whatever holds them implements [`NameSets`] and is
//! added to the live state ([`super::Live::add_sets`]) at start-up. Until
//! one is, the list is empty.

use serde::Serialize;
use std::time::SystemTime;

/// One name set: its name, how many entries it holds, when it was last
/// (re)loaded and from where.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SetInfo {
    /// The set's name in the config.
    pub name: String,
    /// Entries it holds now.
    pub size: usize,
    /// When it was last loaded (RFC 3339), if ever.
    pub last_reload: Option<String>,
    /// Where it comes from (file, URL), if anywhere.
    pub source: Option<String>,
}

impl SetInfo {
    /// A set of `size` entries, loaded at `loaded`.
    pub fn new(name: impl Into<String>, size: usize, loaded: Option<SystemTime>) -> SetInfo {
        SetInfo {
            name: name.into(),
            size,
            last_reload: loaded.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            source: None,
        }
    }
}

/// Something that holds name sets and can list them, cheaply (the status
/// page asks every few seconds).
pub trait NameSets: Send + Sync {
    /// The sets as they stand.
    fn sets(&self) -> Vec<SetInfo>;
}
