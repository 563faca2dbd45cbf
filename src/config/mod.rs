//! The YAML configuration: Pingora's own server keys at the top level plus a
//! `tproxyd:` section that only we read.
//!
//! This module only composes: it splits Pingora's keys from ours, lets
//! Pingora parse its part, reads the shape of ours, and hands each part to
//! the component that owns it (listeners, filters, upstream, admin, access
//! log, downstream) for validation. Pingora ignores keys it does not know,
//! so a typo in either part would otherwise be silently dropped: everything
//! is checked up front (also by `tproxyd -t`) and every error names its key.

use crate::access_log::{AccessLogOutput, AccessLogSettings};
use crate::admin::{Admin, AdminSettings};
use crate::decision::Decider;
use crate::destination::LoopGuard;
use crate::downstream::{Downstream, DownstreamSettings};
use crate::egress::{EgressSettings, Egresses};
use crate::error::{invalid, Timeout};
pub use crate::error::{parse_duration, ConfigError};
use crate::filters::forwarding::ForwardingSettings;
use crate::filters::{Filters, RequestHeadersSettings};
pub use crate::flow::Mode;
use crate::flow::RelayKind;
use crate::interception::{Interception, InterceptionSettings};
use crate::listener::{Context as ListenerContext, Listener, ListenerSettings};
use crate::policy::{RouteSettings, Routes};
use crate::sets::{Catalog, SetSettings, DEFAULT_WATCH_INTERVAL};
use crate::upstream::{Upstream, UpstreamSettings};
use pingora_core::server::configuration::ServerConf;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;

/// The `tproxyd:` section as written: each key is a component's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SectionSettings {
    listeners: Vec<ListenerSettings>,
    request_headers: RequestHeadersSettings,
    forwarding: ForwardingSettings,
    filters: Vec<serde_yaml::Value>,
    upstream: UpstreamSettings,
    admin: AdminSettings,
    access_log: AccessLogSettings,
    downstream: DownstreamSettings,
    /// Deprecated: `downstream.read_buffer`.
    downstream_read_buffer: Option<usize>,
    interception: InterceptionSettings,
    sets: indexmap::IndexMap<String, SetSettings>,
    sets_watch_interval: Timeout,
    egress: indexmap::IndexMap<String, EgressSettings>,
    routes: Vec<RouteSettings>,
}

impl Default for SectionSettings {
    fn default() -> Self {
        SectionSettings {
            listeners: ListenerSettings::default_list(),
            request_headers: RequestHeadersSettings::default(),
            forwarding: ForwardingSettings::default(),
            filters: Vec::new(),
            upstream: UpstreamSettings::default(),
            admin: AdminSettings::default(),
            access_log: AccessLogSettings::default(),
            downstream: DownstreamSettings::default(),
            downstream_read_buffer: None,
            interception: InterceptionSettings::default(),
            sets: indexmap::IndexMap::new(),
            sets_watch_interval: DEFAULT_WATCH_INTERVAL,
            egress: indexmap::IndexMap::new(),
            routes: Vec::new(),
        }
    }
}

impl SectionSettings {
    /// Each component validates its own part; only the cross-checks that
    /// need two parts (the resolve timeout, the admin port, the marks) meet
    /// here.
    fn validate(self) -> Result<Section, ConfigError> {
        let upstream = self.upstream.validate()?;
        let interception = self.interception.validate()?;
        if let Some(mark) = upstream
            .mark
            .filter(|m| m & interception.fwmark == interception.fwmark)
        {
            // The policy rule would route the proxy's own upstream
            // connections to the local stack.
            return Err(invalid(
                "tproxyd.upstream.mark",
                format!(
                    "{mark:#x} carries every bit of interception.fwmark {:#x}; pick a mark without them",
                    interception.fwmark
                ),
            ));
        }
        let sets = Catalog::validate(self.sets, self.sets_watch_interval)?;
        let egresses = Egresses::validate(self.egress)?;
        let routes = Routes::validate(self.routes, &egresses, &sets)?;
        let cx = ListenerContext {
            resolve_timeout: upstream.resolve_timeout,
            sets: &sets,
        };
        let listeners = Listener::validate_list(self.listeners, cx)?;
        let admin = self
            .admin
            .validate(listeners.iter().map(|l| l.socket_addr.socket_addr()))?;
        let access_log = self.access_log.validate()?;
        Ok(Section {
            filters: Filters::validate(self.request_headers, self.forwarding, self.filters, &sets)?,
            downstream: self.downstream.validate(self.downstream_read_buffer)?,
            listeners,
            upstream,
            admin,
            access_log,
            interception,
            sets,
            egresses,
            routes,
        })
    }
}

/// The validated `tproxyd:` section.
#[derive(Debug, Clone)]
pub struct Section {
    /// At least one.
    pub listeners: Vec<Listener>,
    /// Forwarding headers, request headers, the filter list.
    pub filters: Filters,
    /// Upstream timeouts and mark.
    pub upstream: Upstream,
    /// The admin listener (metrics, health), unless disabled.
    pub admin: Option<Admin>,
    /// The access log (by default: text lines on stderr).
    pub access_log: Option<AccessLogOutput>,
    /// Client-side limits and buffers.
    pub downstream: Downstream,
    /// How `tproxyd rules` steers traffic here.
    pub interception: Interception,
    /// The name and address sets rules may use (loaded at start-up).
    pub sets: Catalog,
    /// Where flows may leave: `direct` and the configured egresses.
    pub egresses: Egresses,
    /// Which egress each flow leaves through.
    pub routes: Routes,
}

impl Section {
    /// What is valid but probably not what the operator means, worded
    /// for `tproxyd check` and `doctor`.
    pub fn warnings(&self) -> Vec<String> {
        let proxies: Vec<&str> = self
            .routes
            .egresses()
            .filter(|e| e.is_proxy())
            .map(|e| &*e.name)
            .collect();
        let mut out = Vec::new();
        for l in self.listeners.iter().filter(|l| l.spoofs()) {
            if !proxies.is_empty() {
                out.push(format!(
                    "listener {} spoofs the client's address (spoof_source), which does not apply \
                     to flows routed through proxy egress {}: the origin sees the parent",
                    l.name(),
                    proxies.join(", ")
                ));
            }
        }
        out.extend(self.admin.as_ref().and_then(|a| a.warning()));
        out
    }

    /// The decider of this configuration's flows: our own listening
    /// addresses and Via token.
    pub fn decider(&self) -> Decider {
        let loop_guard = LoopGuard::new(self.listeners.iter().map(|l| l.socket_addr));
        Decider::new(
            loop_guard,
            std::sync::Arc::new(self.filters.forwarding.clone()),
        )
    }

    /// What an open-file limit of `nofile` must keep out of the
    /// connections' share: listeners, the admin and log files, Pingora's
    /// pool of `upstream_pool` idle upstream connections, and the most that
    /// splice pipes may hold. Returns (pipes allowed, descriptors kept).
    pub fn descriptor_reserve(&self, upstream_pool: usize, nofile: u64) -> (usize, u64) {
        let base = 64 + self.listeners.len() as u64 + upstream_pool as u64;
        let pipes = match self.upstream.relay {
            RelayKind::Splice => crate::relay::pipe_limit(
                nofile.saturating_sub(base),
                self.downstream.max_connections,
            ),
            RelayKind::Copy => 0,
        };
        (pipes, base.saturating_add(crate::relay::fd_budget(pipes)))
    }
}

/// The whole file: Pingora's part and ours, both validated.
pub struct Config {
    /// Handed to Pingora's `Server` as is.
    pub server: ServerConf,
    /// Ours.
    pub tproxyd: Section,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("tproxyd", &self.tproxyd)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&text)
    }

    /// The built-in defaults, used when no `-c` is given: one TPROXY listener
    /// on `[::]:8888`, `Via: 1.1 tproxyd`.
    pub fn defaults() -> Config {
        Config::from_yaml("version: 1\n").expect("built-in defaults are valid")
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))?;
        let doc = match doc {
            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
            serde_yaml::Value::Mapping(m) => m,
            _ => return Err(ConfigError::Yaml("the file must be a YAML mapping".into())),
        };

        // Pingora's part: reject keys Pingora would silently ignore, then
        // let Pingora parse and validate the rest.
        let known = pingora_keys();
        let mut server_doc = serde_yaml::Mapping::new();
        let mut ours = None;
        for (k, v) in doc {
            let key = k
                .as_str()
                .ok_or_else(|| ConfigError::Yaml(format!("top-level key {k:?} is not a string")))?
                .to_string();
            if key == "tproxyd" {
                ours = Some(v);
            } else if known.contains(&key) {
                server_doc.insert(k, v);
            } else {
                return Err(invalid(
                    key,
                    "unknown key (neither a Pingora server setting nor `tproxyd`)",
                ));
            }
        }
        if !server_doc.contains_key("version") {
            server_doc.insert("version".into(), 1.into());
        }
        let server_yaml = serde_yaml::to_string(&server_doc).expect("mapping serialises");
        let server = ServerConf::from_yaml(&server_yaml).map_err(|e| {
            // Pingora's error context repeats the whole document; keep the cause.
            let cause = e
                .root_cause()
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            ConfigError::Yaml(format!("Pingora server settings: {cause}"))
        })?;

        for (key, set) in [
            ("user", server.user.is_some()),
            ("group", server.group.is_some()),
        ] {
            if set {
                return Err(invalid(
                    key,
                    "Pingora switches user before tproxyd binds its IP_TRANSPARENT sockets, \
                     and the switch drops CAP_NET_ADMIN, so the bind would fail; remove it and \
                     run as root, or as an unprivileged user that holds CAP_NET_ADMIN \
                     (systemd: User=/DynamicUser= with AmbientCapabilities=CAP_NET_ADMIN, \
                     see conf/tproxyd.service)",
                ));
            }
        }

        let raw: SectionSettings = match ours {
            None | Some(serde_yaml::Value::Null) => SectionSettings::default(),
            Some(v) => serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                let key = if path == "." {
                    "tproxyd".to_string()
                } else {
                    format!("tproxyd.{path}")
                };
                invalid(key, e.into_inner().to_string())
            })?,
        };
        let tproxyd = raw.validate()?;
        Ok(Config { server, tproxyd })
    }
}

/// The top-level keys Pingora's `ServerConf` understands, read off its own
/// serialisation so that this list follows Pingora upgrades.
fn pingora_keys() -> BTreeSet<String> {
    let conf = ServerConf::new().expect("Pingora defaults");
    match serde_yaml::to_value(&conf) {
        Ok(serde_yaml::Value::Mapping(m)) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        _ => BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests;
