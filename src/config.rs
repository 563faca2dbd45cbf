//! The YAML configuration: Pingora's own server keys at the top level plus a
//! `tproxyd:` section that only we read.
//!
//! Pingora ignores keys it does not know, so a typo in either part would
//! otherwise be silently dropped. Everything here is checked up front (also by
//! `tproxyd -t`) and every error names the key it is about.

use crate::access_log::AccessLogConf;
use crate::filters::acl::AclFilter;
use crate::filters::forwarding::{Forwarding, ForwardingRaw};
use crate::filters::host_check::{CheckMode, HostCheckFilter};
use crate::filters::template::Template;
use crate::forward::ForwardPolicy;
use crate::passthrough::{DenyAction, Policy, TlsPolicy};
use pingora_core::server::configuration::ServerConf;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A configuration problem, worded for the operator who has to fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The YAML is malformed or a value has the wrong shape.
    #[error("invalid config: {0}")]
    Yaml(String),
    /// A value parsed but makes no sense; `key` is its dotted path.
    #[error("invalid config: {key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Where a listener learns the address the client originally dialed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// nftables `tproxy` / iptables `TPROXY`: the accepted socket's local
    /// address *is* the original destination.
    Tproxy,
    /// `nat ... redirect`: the kernel rewrote the destination, so it is read
    /// back from conntrack with `SO_ORIGINAL_DST`.
    Redirect,
    /// An explicit (forward) proxy: clients name the destination in the
    /// request (absolute URI, CONNECT). Not transparent.
    Forward,
    /// HTTPS without decryption: peek at the ClientHello, decide by SNI,
    /// splice to the original destination (see `crate::passthrough`).
    #[serde(rename = "tls-passthrough")]
    TlsPassthrough,
}

/// Where a TLS passthrough listener learns the original destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationSource {
    /// The accepted socket's local address.
    Tproxy,
    /// `SO_ORIGINAL_DST`.
    Redirect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsRaw {
    #[serde(default = "five_s")]
    client_hello_timeout: String,
    #[serde(default = "five_min")]
    idle_timeout: String,
    #[serde(default = "allow")]
    missing_sni: Policy,
    #[serde(default = "deny")]
    non_tls: Policy,
    #[serde(default = "alert")]
    deny_action: DenyAction,
    #[serde(default = "off")]
    sni_check: CheckMode,
    #[serde(default)]
    acl: Option<serde_yaml::Value>,
}

fn five_s() -> String {
    "5s".into()
}
fn five_min() -> String {
    "300s".into()
}
fn allow() -> Policy {
    Policy::Allow
}
fn deny() -> Policy {
    Policy::Deny
}
fn alert() -> DenyAction {
    DenyAction::Alert
}
fn off() -> CheckMode {
    CheckMode::Off
}

impl Mode {
    /// The name used in the config file and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Tproxy => "tproxy",
            Mode::Redirect => "redirect",
            Mode::Forward => "forward",
            Mode::TlsPassthrough => "tls-passthrough",
        }
    }
}

/// One transparent listening socket as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConf {
    /// Shown in logs; must be unique.
    pub name: String,
    /// `ip:port`. The exact string is the key of the socket in Pingora's
    /// listen-fd table, which is how an upgraded process finds it again.
    pub address: String,
    /// Destination source for this listener.
    pub mode: Mode,
    /// Connect upstream from the client's IP (tproxy / redirect only).
    #[serde(default)]
    pub spoof_source: bool,
    /// Forward mode: client CIDRs allowed to use the proxy (default none).
    #[serde(default)]
    pub allow_clients: Option<Vec<String>>,
    /// Forward mode: ports CONNECT may reach (default [443]).
    #[serde(default)]
    pub connect_ports: Option<Vec<u16>>,
    /// Forward mode: allow loopback / link-local / own addresses.
    #[serde(default)]
    pub allow_local_destinations: Option<bool>,
    /// TLS passthrough: `tproxy` (default) or `redirect`.
    #[serde(default)]
    pub destination: Option<DestinationSource>,
    /// TLS passthrough policy.
    #[serde(default)]
    pub tls: Option<serde_yaml::Value>,
}

/// Headers the proxy adds to every request it forwards.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestHeadersConf {
    /// Appended in order, values may use variables. A `Via` here sets our
    /// Via entry (see `forwarding`), which is appended to an existing list.
    pub add: indexmap::IndexMap<String, String>,
}

/// Raw (string-valued) upstream settings as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct UpstreamRaw {
    connect_timeout: String,
    read_timeout: String,
    write_timeout: String,
    idle_timeout: String,
    resolve_timeout: String,
    mark: Option<MarkRaw>,
}

/// `upstream.mark`: a number, decimal or `0x` hex.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum MarkRaw {
    Num(u32),
    Text(String),
}

impl Default for UpstreamRaw {
    fn default() -> Self {
        UpstreamRaw {
            connect_timeout: "5s".into(),
            read_timeout: "60s".into(),
            write_timeout: "60s".into(),
            idle_timeout: "60s".into(),
            resolve_timeout: "2s".into(),
            mark: None,
        }
    }
}

/// Timeouts for the connection to the original destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConf {
    /// TCP connect; expiry answers 504.
    pub connect_timeout: Duration,
    /// Waiting for the origin to send; expiry answers 504.
    pub read_timeout: Duration,
    /// Waiting for the origin to take our bytes.
    pub write_timeout: Duration,
    /// How long an idle pooled upstream connection is kept for reuse.
    pub idle_timeout: Duration,
    /// Bound on resolving a name (forward mode).
    pub resolve_timeout: Duration,
    /// `SO_MARK` on every upstream socket, so that rules can exempt the
    /// proxy's own traffic from interception.
    pub mark: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TproxydRaw {
    #[serde(default = "default_listeners")]
    listeners: Vec<ListenerConf>,
    #[serde(default)]
    request_headers: RequestHeadersConf,
    #[serde(default)]
    forwarding: ForwardingRaw,
    #[serde(default)]
    filters: Vec<serde_yaml::Value>,
    #[serde(default)]
    upstream: UpstreamRaw,
    #[serde(default)]
    admin: AdminRaw,
    #[serde(default)]
    access_log: AccessLogConf,
    #[serde(default = "default_read_buffer")]
    downstream_read_buffer: usize,
}

fn default_read_buffer() -> usize {
    8 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AdminRaw {
    enabled: bool,
    address: String,
}

impl Default for AdminRaw {
    fn default() -> Self {
        AdminRaw {
            enabled: true,
            address: "127.0.0.1:9187".into(),
        }
    }
}

impl Default for TproxydRaw {
    fn default() -> Self {
        TproxydRaw {
            listeners: default_listeners(),
            request_headers: RequestHeadersConf::default(),
            forwarding: ForwardingRaw::default(),
            filters: Vec::new(),
            upstream: UpstreamRaw::default(),
            admin: AdminRaw::default(),
            access_log: AccessLogConf::default(),
            downstream_read_buffer: default_read_buffer(),
        }
    }
}

/// One entry of `tproxyd.filters`: a filter name and its settings, to be
/// instantiated by a [`crate::filters::FilterRegistry`].
#[derive(Debug, Clone)]
pub struct FilterSpec {
    /// The filter's registered name (`acl`, `headers`, a custom one, …).
    pub name: String,
    /// Dotted path of its settings, e.g. `tproxyd.filters[1].acl`.
    pub key: String,
    /// Its settings as written.
    pub config: serde_yaml::Value,
}

fn default_listeners() -> Vec<ListenerConf> {
    vec![ListenerConf {
        name: "lan-http".into(),
        address: "[::]:8888".into(),
        mode: Mode::Tproxy,
        spoof_source: false,
        allow_clients: None,
        connect_ports: None,
        allow_local_destinations: None,
        destination: None,
        tls: None,
    }]
}

/// A listener after validation.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Unique name from the config.
    pub name: String,
    /// The address string exactly as configured (the fd-table key).
    pub address: String,
    /// The parsed form of `address`.
    pub socket_addr: SocketAddr,
    /// Destination source.
    pub mode: Mode,
    /// Connect upstream from the client's address.
    pub spoof_source: bool,
    /// Forward-proxy policy (forward mode only).
    pub forward: Option<ForwardPolicy>,
    /// TLS passthrough policy (tls-passthrough mode only).
    pub tls: Option<TlsPolicy>,
}

impl Listener {
    /// A plain listener of `mode` (no spoofing, default forward policy).
    pub fn new(name: &str, address: &str, mode: Mode) -> Result<Listener, ConfigError> {
        let socket_addr = address
            .parse()
            .map_err(|_| invalid("address", format!("{address:?} is not an IP:port address")))?;
        Ok(Listener {
            name: name.to_string(),
            address: address.to_string(),
            socket_addr,
            mode,
            spoof_source: false,
            forward: None,
            tls: None,
        })
    }
}

/// The validated `tproxyd:` section.
#[derive(Debug, Clone)]
pub struct TproxydConf {
    /// At least one.
    pub listeners: Vec<Listener>,
    /// Added to each forwarded request, in order (without `Via`, which
    /// `forwarding` handles).
    pub add_request_headers: Vec<(http::HeaderName, Template)>,
    /// Via / X-Forwarded-For / Forwarded and the loop token.
    pub forwarding: Forwarding,
    /// The configured filter list, in order, not yet instantiated.
    pub filters: Vec<FilterSpec>,
    /// Upstream timeouts.
    pub upstream: UpstreamConf,
    /// The admin listener (metrics, health), unless disabled.
    pub admin: Option<String>,
    /// The access log (by default: text lines on stderr).
    pub access_log: AccessLogConf,
    /// Bytes of read buffer per client connection (Pingora's default is
    /// 64 KiB, allocated for every connection, idle ones included).
    pub downstream_read_buffer: usize,
}

/// The whole file: Pingora's part and ours, both validated.
pub struct Config {
    /// Handed to Pingora's `Server` as is.
    pub server: ServerConf,
    /// Ours.
    pub tproxyd: TproxydConf,
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

        let raw: TproxydRaw = match ours {
            None | Some(serde_yaml::Value::Null) => TproxydRaw::default(),
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
        let tproxyd = validate(raw)?;
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

/// Parses a duration such as `5s`, `250ms` or `1m`.
pub fn parse_duration(key: &str, s: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        invalid(
            key,
            format!("bad duration {s:?}: {e} (use e.g. 5s, 250ms, 1m)"),
        )
    })?;
    if d.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(d)
}

fn validate(raw: TproxydRaw) -> Result<TproxydConf, ConfigError> {
    let resolve_timeout = raw.upstream.resolve_timeout.clone();
    if raw.listeners.is_empty() {
        return Err(invalid(
            "tproxyd.listeners",
            "at least one listener is required",
        ));
    }
    let mut names = BTreeSet::new();
    let mut addrs = BTreeSet::new();
    let mut listeners = Vec::with_capacity(raw.listeners.len());
    for (i, l) in raw.listeners.into_iter().enumerate() {
        let key = format!("tproxyd.listeners[{i}]");
        if l.name.trim().is_empty() {
            return Err(invalid(format!("{key}.name"), "must not be empty"));
        }
        if !names.insert(l.name.clone()) {
            return Err(invalid(
                format!("{key}.name"),
                format!("duplicate listener name {:?}", l.name),
            ));
        }
        let socket_addr: SocketAddr = l.address.parse().map_err(|_| {
            invalid(
                format!("{key}.address"),
                format!(
                    "{:?} is not an IP:port address (e.g. \"[::]:8888\" or \"0.0.0.0:8888\")",
                    l.address
                ),
            )
        })?;
        if socket_addr.port() == 0 {
            return Err(invalid(format!("{key}.address"), "port must not be 0"));
        }
        if !addrs.insert(socket_addr) {
            return Err(invalid(
                format!("{key}.address"),
                format!("address {} is used by another listener", l.address),
            ));
        }
        if l.spoof_source && l.mode == Mode::Forward {
            return Err(invalid(
                format!("{key}.spoof_source"),
                "only tproxy and redirect listeners can spoof the client's address",
            ));
        }
        let forward = if l.mode == Mode::Forward {
            let allow_clients = l
                .allow_clients
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    crate::filters::acl::parse_net(c)
                        .map_err(|r| invalid(format!("{key}.allow_clients[{j}]"), r))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let connect_ports = l.connect_ports.unwrap_or_else(|| vec![443]);
            if connect_ports.contains(&0) {
                return Err(invalid(
                    format!("{key}.connect_ports"),
                    "port 0 is not a port",
                ));
            }
            Some(ForwardPolicy {
                allow_clients,
                connect_ports,
                allow_local_destinations: l.allow_local_destinations.unwrap_or(false),
                resolve_timeout: Duration::ZERO,
            })
        } else {
            for (k, set) in [
                ("allow_clients", l.allow_clients.is_some()),
                ("connect_ports", l.connect_ports.is_some()),
                (
                    "allow_local_destinations",
                    l.allow_local_destinations.is_some(),
                ),
            ] {
                if set {
                    return Err(invalid(
                        format!("{key}.{k}"),
                        "only applies to mode: forward",
                    ));
                }
            }
            None
        };
        let tls = if l.mode == Mode::TlsPassthrough {
            let k = format!("{key}.tls");
            let raw: TlsRaw = crate::filters::parse_settings(
                &l.tls
                    .unwrap_or(serde_yaml::Value::Mapping(Default::default())),
                &k,
            )?;
            let acl = match &raw.acl {
                Some(v) => Some(Arc::new(AclFilter::from_yaml(v, &format!("{k}.acl"))?)),
                None => None,
            };
            let resolve = parse_duration("tproxyd.upstream.resolve_timeout", &resolve_timeout)?;
            Some(TlsPolicy {
                redirect: l.destination == Some(DestinationSource::Redirect),
                client_hello_timeout: parse_duration(
                    &format!("{k}.client_hello_timeout"),
                    &raw.client_hello_timeout,
                )?,
                idle_timeout: parse_duration(&format!("{k}.idle_timeout"), &raw.idle_timeout)?,
                missing_sni: raw.missing_sni,
                non_tls: raw.non_tls,
                deny_action: raw.deny_action,
                sni_check: (raw.sni_check != CheckMode::Off).then(|| {
                    Arc::new(HostCheckFilter::new(
                        raw.sni_check,
                        resolve,
                        Duration::from_secs(60),
                    ))
                }),
                acl,
            })
        } else {
            for (k, set) in [
                ("destination", l.destination.is_some()),
                ("tls", l.tls.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        format!("{key}.{k}"),
                        "only applies to mode: tls-passthrough",
                    ));
                }
            }
            None
        };
        listeners.push(Listener {
            name: l.name,
            address: l.address,
            socket_addr,
            mode: l.mode,
            spoof_source: l.spoof_source,
            forward,
            tls,
        });
    }

    let mut add = raw.request_headers.add;
    let legacy_via = add
        .keys()
        .find(|k| k.eq_ignore_ascii_case("via"))
        .cloned()
        .and_then(|k| add.shift_remove(&k));
    let add_request_headers =
        crate::filters::headers::parse_pairs("tproxyd.request_headers.add", &add)?;
    let forwarding = Forwarding::new(raw.forwarding, legacy_via.as_deref())?;

    let mut filters = Vec::with_capacity(raw.filters.len());
    for (i, item) in raw.filters.into_iter().enumerate() {
        let key = format!("tproxyd.filters[{i}]");
        let serde_yaml::Value::Mapping(m) = item else {
            return Err(invalid(
                key,
                "each filter is a map with one key, its name (e.g. `- acl: {...}`)",
            ));
        };
        let mut entries = m.into_iter();
        let (Some((name, config)), None) = (entries.next(), entries.next()) else {
            return Err(invalid(
                key,
                "each filter is a map with exactly one key, its name",
            ));
        };
        let name = name
            .as_str()
            .ok_or_else(|| invalid(&key, "a filter name must be a string"))?
            .to_string();
        let config = match config {
            serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
            v => v,
        };
        filters.push(FilterSpec {
            key: format!("{key}.{name}"),
            name,
            config,
        });
    }

    let u = raw.upstream;
    let mark = match u.mark {
        None => None,
        Some(MarkRaw::Num(n)) => Some(n),
        Some(MarkRaw::Text(t)) => {
            let t = t.trim();
            let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => t.parse().ok(),
            };
            Some(parsed.ok_or_else(|| {
                invalid(
                    "tproxyd.upstream.mark",
                    format!("{t:?} is not a number (e.g. 0x100 or 256)"),
                )
            })?)
        }
    };
    if mark == Some(0) {
        return Err(invalid(
            "tproxyd.upstream.mark",
            "0 means no mark; leave it out instead",
        ));
    }
    let upstream = UpstreamConf {
        connect_timeout: parse_duration("tproxyd.upstream.connect_timeout", &u.connect_timeout)?,
        read_timeout: parse_duration("tproxyd.upstream.read_timeout", &u.read_timeout)?,
        write_timeout: parse_duration("tproxyd.upstream.write_timeout", &u.write_timeout)?,
        idle_timeout: parse_duration("tproxyd.upstream.idle_timeout", &u.idle_timeout)?,
        resolve_timeout: parse_duration("tproxyd.upstream.resolve_timeout", &u.resolve_timeout)?,
        mark,
    };
    for l in &mut listeners {
        if let Some(f) = &mut l.forward {
            f.resolve_timeout = upstream.resolve_timeout;
        }
    }

    let admin = if raw.admin.enabled {
        let a: SocketAddr = raw.admin.address.parse().map_err(|_| {
            invalid(
                "tproxyd.admin.address",
                format!("{:?} is not an IP:port address", raw.admin.address),
            )
        })?;
        if listeners.iter().any(|l| l.socket_addr.port() == a.port()) {
            return Err(invalid(
                "tproxyd.admin.address",
                "shares its port with a transparent listener",
            ));
        }
        Some(raw.admin.address)
    } else {
        None
    };
    raw.access_log.validate()?;
    if !(1024..=1024 * 1024).contains(&raw.downstream_read_buffer) {
        return Err(invalid(
            "tproxyd.downstream_read_buffer",
            "must be between 1024 and 1048576 bytes",
        ));
    }

    Ok(TproxydConf {
        listeners,
        add_request_headers,
        forwarding,
        filters,
        upstream,
        admin,
        access_log: raw.access_log,
        downstream_read_buffer: raw.downstream_read_buffer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        Config::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn defaults_have_one_tproxy_listener_and_via() {
        let c = Config::defaults();
        assert_eq!(c.tproxyd.listeners.len(), 1);
        assert_eq!(c.tproxyd.listeners[0].address, "[::]:8888");
        assert_eq!(c.tproxyd.listeners[0].mode, Mode::Tproxy);
        assert!(c.tproxyd.add_request_headers.is_empty());
        assert_eq!(c.tproxyd.forwarding.via_token(), "tproxyd");
        assert_eq!(c.tproxyd.upstream.connect_timeout, Duration::from_secs(5));
    }

    #[test]
    fn full_example_parses() {
        let c = Config::from_yaml(
            r#"
version: 1
threads: 2
grace_period_seconds: 3
tproxyd:
  listeners:
    - { name: lan-http, address: "[::]:8888", mode: tproxy }
    - { name: nat, address: "0.0.0.0:8889", mode: redirect }
  request_headers:
    add: { Via: "1.1 gw", X-Seen: "yes" }
  upstream:
    connect_timeout: 250ms
    read_timeout: 1m
"#,
        )
        .unwrap();
        assert_eq!(c.server.threads, 2);
        assert_eq!(c.server.grace_period_seconds, Some(3));
        assert_eq!(c.tproxyd.listeners[1].mode, Mode::Redirect);
        assert_eq!(c.tproxyd.add_request_headers.len(), 1);
        assert_eq!(c.tproxyd.forwarding.via_token(), "gw");
        assert_eq!(
            c.tproxyd.upstream.connect_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(c.tproxyd.upstream.read_timeout, Duration::from_secs(60));
    }

    #[test]
    fn errors_name_the_key() {
        let e = err("tproxyd:\n  listeners:\n    - { name: a, address: \"[::]:80\", mode: nat }\n");
        assert!(e.contains("listeners[0].mode") && e.contains("nat"), "{e}");
        let e = err("tproxyd:\n  listeners:\n    - { name: a, address: \"example.org:80\", mode: tproxy }\n");
        assert!(e.contains("tproxyd.listeners[0].address"), "{e}");
        let e = err("tproxyd:\n  upstream:\n    connect_timeout: soon\n");
        assert!(e.contains("tproxyd.upstream.connect_timeout"), "{e}");
        let e = err("tproxyd:\n  listen: []\n");
        assert!(e.contains("unknown field `listen`"), "{e}");
        let e = err("threadz: 4\n");
        assert!(e.contains("threadz") && e.contains("unknown key"), "{e}");
        let e = err("threads: many\n");
        assert!(e.contains("threads"), "{e}");
        let e = err("daemon: true\nuser: nobody\n");
        assert!(e.contains("user: Pingora switches user"), "{e}");
        let e = err("tproxyd:\n  admin: { address: nowhere }\n");
        assert!(e.contains("tproxyd.admin.address"), "{e}");
        let e = err("tproxyd:\n  access_log: { format: xml }\n");
        assert!(e.contains("tproxyd.access_log.format"), "{e}");
        let e = err("tproxyd:\n  access_log: { path: /nonexistent/dir/a.log }\n");
        assert!(e.contains("tproxyd.access_log.path"), "{e}");
        let e = err("tproxyd:\n  upstream: { mark: lots }\n");
        assert!(e.contains("tproxyd.upstream.mark"), "{e}");
        let c = Config::from_yaml("tproxyd:\n  upstream: { mark: \"0x10\" }\n").unwrap();
        assert_eq!(c.tproxyd.upstream.mark, Some(16));
        let e = err("tproxyd:\n  listeners:\n    - { name: f, address: \"[::]:3128\", mode: forward, spoof_source: true }\n");
        assert!(e.contains("listeners[0].spoof_source"), "{e}");
        let e = err("tproxyd:\n  listeners:\n    - { name: t, address: \"[::]:80\", mode: tproxy, allow_clients: [\"10.0.0.0/8\"] }\n");
        assert!(
            e.contains("listeners[0].allow_clients") && e.contains("forward"),
            "{e}"
        );
        let e = err("tproxyd:\n  listeners:\n    - { name: f, address: \"[::]:3128\", mode: forward, allow_clients: [\"10.0.0.0/40\"] }\n");
        assert!(e.contains("listeners[0].allow_clients[0]"), "{e}");
        let c = Config::from_yaml(
            "tproxyd:\n  listeners:\n    - { name: f, address: \"[::]:3128\", mode: forward }\n",
        )
        .unwrap();
        let f = c.tproxyd.listeners[0].forward.as_ref().unwrap();
        assert!(f.allow_clients.is_empty());
        assert_eq!(f.connect_ports, vec![443]);
        assert!(!f.allow_local_destinations);
        let e = err("tproxyd:\n  listeners:\n    - { name: s, address: \"[::]:8443\", mode: tls-passthrough, tls: { non_tls: maybe } }\n");
        assert!(e.contains("tproxyd.listeners[0].tls.non_tls"), "{e}");
        let e = err("tproxyd:\n  listeners:\n    - { name: s, address: \"[::]:8443\", mode: tls-passthrough, tls: { acl: { rules: [ { action: deny, sni: [\"a.*\"] } ] } } }\n");
        assert!(
            e.contains("tproxyd.listeners[0].tls.acl.rules[0].host[0]"),
            "{e}"
        );
        let e = err("tproxyd:\n  listeners:\n    - { name: h, address: \"[::]:80\", mode: tproxy, destination: redirect }\n");
        assert!(e.contains("listeners[0].destination"), "{e}");
        let c = Config::from_yaml("tproxyd:\n  listeners:\n    - { name: s, address: \"[::]:8443\", mode: tls-passthrough, destination: redirect }\n").unwrap();
        let t = c.tproxyd.listeners[0].tls.as_ref().unwrap();
        assert!(t.redirect && t.missing_sni == Policy::Allow && t.non_tls == Policy::Deny);
        let e = err("tproxyd:\n  listeners: []\n");
        assert!(e.contains("tproxyd.listeners"), "{e}");
        let e = err("tproxyd:\n  listeners:\n    - { name: a, address: \"[::]:80\", mode: tproxy }\n    - { name: a, address: \"[::]:81\", mode: tproxy }\n");
        assert!(e.contains("duplicate listener name"), "{e}");
        let e = err("tproxyd:\n  request_headers:\n    add: { \"Bad Name\": x }\n");
        assert!(e.contains("request_headers.add.Bad Name"), "{e}");
        let e = err("tproxyd:\n  request_headers:\n    add: { X-C: \"$client\" }\n");
        assert!(
            e.contains("request_headers.add.X-C") && e.contains("$client"),
            "{e}"
        );
        let e = err("tproxyd:\n  forwarding: { x_forwarded_for: sometimes }\n");
        assert!(e.contains("tproxyd.forwarding.x_forwarded_for"), "{e}");
        let e = err("tproxyd:\n  filters:\n    - { acl: {}, headers: {} }\n");
        assert!(e.contains("tproxyd.filters[0]"), "{e}");
        let c = Config::from_yaml("tproxyd:\n  filters:\n    - acl:\n    - custom: { a: 1 }\n")
            .unwrap();
        assert_eq!(c.tproxyd.filters[1].name, "custom");
        assert_eq!(c.tproxyd.filters[1].key, "tproxyd.filters[1].custom");
    }
}
