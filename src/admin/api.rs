//! The status page's JSON: `/api/flows` (the open flows, filtered, at
//! most `limit`) and `/api/summary` (listeners, last minute, top lists,
//! name sets, build and config identity). Both only read.

use crate::live::{FlowView, LastMinute, ListenerStatus, Live, Query, Top, EPOCHS};
use crate::sets::{Catalog, SetKind};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::time::SystemTime;

/// Flows listed when the query names no `limit`.
const DEFAULT_LIMIT: usize = 100;
/// The most flows one answer lists.
pub const MAX_LIMIT: usize = 1000;
/// Entries of each top list.
const TOP: usize = 10;
/// The flow kinds a `kind=` filter may name.
const KINDS: [&str; 5] = ["http", "forward", "connect", "passthrough", "tunnel"];

/// Which build runs, from which config.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    /// tproxyd's version.
    pub version: &'static str,
    /// The config file, if one was given.
    pub config: Option<String>,
    /// SHA-256 of the config file's bytes (hex), when it could be read.
    pub config_sha256: Option<String>,
    /// When this process started (RFC 3339).
    pub started: String,
    /// Its process id.
    pub pid: u32,
}

impl Identity {
    /// This process, running from the config file at `config` (none: the
    /// built-in defaults).
    pub fn new(config: Option<&str>) -> Identity {
        let hash = config
            .and_then(|p| std::fs::read(p).ok())
            .map(|bytes| hex(&Sha256::digest(bytes)));
        Identity {
            version: env!("CARGO_PKG_VERSION"),
            config: config.map(str::to_string),
            config_sha256: hash,
            started: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            pid: std::process::id(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The flows query as the URL gives it; a clear error for what it cannot
/// be.
pub fn parse_query(query: Option<&str>) -> Result<Query, String> {
    let mut q = Query {
        limit: DEFAULT_LIMIT,
        ..Query::default()
    };
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .trim()
            .to_string();
        let some = (!v.is_empty()).then(|| v.clone());
        match k {
            "client" => q.client = some,
            "host" => q.host = some,
            "kind" => match some {
                Some(kind) if !KINDS.contains(&kind.as_str()) => {
                    return Err(format!("kind {kind:?} is none of {}", KINDS.join(", ")));
                }
                kind => q.kind = kind,
            },
            "limit" => {
                q.limit = v
                    .parse::<usize>()
                    .map_err(|_| format!("limit {v:?} is not a number"))?
                    .min(MAX_LIMIT);
            }
            "sort" => match v.as_str() {
                "bytes" | "" => q.oldest_first = false,
                "age" => q.oldest_first = true,
                _ => return Err(format!("sort {v:?} is neither bytes nor age")),
            },
            _ => {
                return Err(format!(
                    "unknown parameter {k:?}: try client, host, kind, limit, sort"
                ))
            }
        }
    }
    Ok(q)
}

/// One name or address set (`tproxyd.sets`) as loaded now.
#[derive(Debug, Clone, Serialize)]
pub struct SetInfo {
    /// Its name.
    pub name: String,
    /// `names` or `addresses`.
    pub kind: &'static str,
    /// Entries it holds now (0 before its first load).
    pub size: usize,
    /// Lines its last load skipped.
    pub skipped: u64,
    /// When it was last (re)loaded (RFC 3339), if ever.
    pub last_reload: Option<String>,
    /// Its file.
    pub source: String,
}

/// The configured sets as loaded now.
pub fn sets(catalog: &Catalog) -> Vec<SetInfo> {
    catalog
        .slots()
        .iter()
        .map(|s| {
            let loaded = s.current();
            SetInfo {
                name: s.name.clone(),
                kind: match s.kind() {
                    SetKind::Names => "names",
                    SetKind::Addresses => "addresses",
                },
                size: loaded.as_ref().map_or(0, |l| l.report.entries),
                skipped: loaded.as_ref().map_or(0, |l| l.report.skipped),
                last_reload: loaded
                    .as_ref()
                    .map(|l| humantime::format_rfc3339_seconds(l.at).to_string()),
                source: s.file.display().to_string(),
            }
        })
        .collect()
}

/// `/api/flows`.
#[derive(Debug, Serialize)]
pub struct Flows {
    /// Whether flows are kept at all (`admin.flows`).
    pub enabled: bool,
    /// Flows open now.
    pub open: usize,
    /// Of them, those the filters matched.
    pub matched: usize,
    /// The limit applied.
    pub limit: usize,
    /// The first `limit` matches: the most bytes (or, `sort=age`, the
    /// oldest) first.
    pub flows: Vec<FlowView>,
}

/// The open flows `query` asks for.
pub fn flows(live: &Live, query: &Query) -> Flows {
    let l = live.table().query(query);
    Flows {
        enabled: live.flows_enabled(),
        open: l.open,
        matched: l.matched,
        limit: query.limit,
        flows: l.flows,
    }
}

/// `/api/summary`.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    /// Which build runs, from which config.
    pub identity: &'a Identity,
    /// Whether flows (and the top lists) are kept.
    pub flows_enabled: bool,
    /// Flows open now.
    pub open_flows: usize,
    /// The listeners with their open connections.
    pub listeners: Vec<ListenerStatus>,
    /// Requests, bytes, refusals and limits over the last minute.
    pub last_minute: LastMinute,
    /// Seconds the top lists cover (at most).
    pub top_window_seconds: u64,
    /// The heaviest clients, names and destinations (empty with flows off).
    pub top: Top,
    /// The name sets with their sizes and last reload.
    pub sets: Vec<SetInfo>,
}

/// The summary as it stands.
pub fn summary<'a>(live: &Live, catalog: &Catalog, identity: &'a Identity) -> Summary<'a> {
    Summary {
        identity,
        flows_enabled: live.flows_enabled(),
        open_flows: live.table().len(),
        listeners: live.listeners(),
        last_minute: live.last_minute(),
        top_window_seconds: 60 * EPOCHS as u64,
        top: live.top(TOP),
        sets: sets(catalog),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_decode_and_bound() {
        let q = parse_query(Some(
            "client=192.0.2.&host=%41.test&kind=connect&limit=5000",
        ))
        .unwrap();
        assert_eq!(q.client.as_deref(), Some("192.0.2."));
        assert_eq!(q.host.as_deref(), Some("A.test"));
        assert_eq!(q.kind.as_deref(), Some("connect"));
        assert_eq!(q.limit, MAX_LIMIT);
        let d = parse_query(None).unwrap();
        assert_eq!(
            (d.limit, d.client, d.oldest_first),
            (DEFAULT_LIMIT, None, false)
        );
        assert!(parse_query(Some("sort=age&client=")).unwrap().oldest_first);
        for bad in ["kind=ftp", "limit=x", "sort=name", "drop=1"] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_identity_hashes_the_config_file() {
        let path = std::env::temp_dir().join(format!("tproxyd-identity-{}", std::process::id()));
        std::fs::write(&path, "abc").unwrap();
        let id = Identity::new(path.to_str());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            id.config_sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert!(Identity::new(None).config_sha256.is_none());
    }
}
