//! Where a flow leaves (`tproxyd.egress`): directly (optionally from
//! another interface or with a routing mark, for multi-WAN and VPNs), or
//! through a parent proxy, HTTP or SOCKS5, which gets the name the client
//! asked for rather than a bare address. Routes (`tproxyd.routes`, in
//! `crate::policy`) choose an egress per flow; this module owns the
//! egresses, their settings and how a connection is opened through each
//! ([`open`]).
//!
//! ```yaml
//! tproxyd:
//!   egress:
//!     vpn:  { via: direct, interface: wg0, mark: 0x20 }
//!     corp: { via: http, address: "proxy.corp.example:3128", username: gw, password_file: /etc/tproxyd/corp.pass }
//!     tor:  { via: socks5, address: "127.0.0.1:9050", fallback: direct }
//! ```
//!
//! A built-in `direct` egress always exists. Passwords come from files,
//! never from the YAML, and are never logged.

pub mod metrics;
pub mod open;
mod parent;
mod socks;

use crate::error::{invalid, ConfigError};
use serde::Deserialize;
use std::sync::Arc;

/// How an egress reaches the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViaKind {
    /// Straight to the destination.
    Direct,
    /// Through a parent HTTP proxy (absolute-form requests, CONNECT).
    Http,
    /// Through a SOCKS5 proxy.
    Socks5,
}

/// What an egress does when its parent cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Fail the flow (502/504, or a reset): a parent is often there for
    /// compliance, so tproxyd never goes around it unless told.
    #[default]
    None,
    /// Connect directly instead.
    Direct,
}

/// One `tproxyd.egress.NAME` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSettings {
    via: ViaKind,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    mark: Option<crate::upstream::MarkSettings>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password_file: Option<std::path::PathBuf>,
    #[serde(default)]
    fallback: Fallback,
}

/// A user name and password for a parent (never shown).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password, from its file.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password>)", self.username)
    }
}

/// A parent proxy's address: `HOST:PORT`, the host a name or an IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentAddr {
    /// As written.
    pub host: String,
    /// Its port.
    pub port: u16,
}

impl std::fmt::Display for ParentAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// How a validated egress leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Directly, optionally from an interface (`SO_BINDTODEVICE`) and with a
    /// mark (`SO_MARK`).
    Direct {
        /// The interface to leave from.
        interface: Option<String>,
        /// The routing mark.
        mark: Option<u32>,
    },
    /// A parent HTTP proxy.
    Http(ParentAddr, Option<Credentials>),
    /// A SOCKS5 proxy.
    Socks5(ParentAddr, Option<Credentials>),
}

/// A validated egress.
#[derive(Debug, Clone)]
pub struct Egress {
    /// Its name (`direct` for the built-in one).
    pub name: Arc<str>,
    /// How it leaves.
    pub via: Via,
    /// What to do when its parent is down.
    pub fallback: Fallback,
    /// Its metric series.
    pub metrics: metrics::EgressMetrics,
}

impl Egress {
    /// The built-in `direct` egress: the upstream settings' mark, no
    /// interface.
    pub fn direct() -> Egress {
        Egress {
            name: "direct".into(),
            via: Via::Direct {
                interface: None,
                mark: None,
            },
            fallback: Fallback::None,
            metrics: metrics::EgressMetrics::new("direct"),
        }
    }

    /// The built-in `direct` egress, shared (its metric series resolved
    /// once).
    pub fn builtin() -> Arc<Egress> {
        static DIRECT: std::sync::LazyLock<Arc<Egress>> =
            std::sync::LazyLock::new(|| Arc::new(Egress::direct()));
        DIRECT.clone()
    }

    /// Whether it goes through a proxy (a parent gets the name; the
    /// client's address cannot be spoofed through it).
    pub fn is_proxy(&self) -> bool {
        !matches!(self.via, Via::Direct { .. })
    }

    /// Whether it is the plain built-in way out.
    pub fn is_plain_direct(&self) -> bool {
        self.via
            == Via::Direct {
                interface: None,
                mark: None,
            }
    }
}

fn parent(key: &str, address: Option<String>) -> Result<ParentAddr, ConfigError> {
    let text = address.ok_or_else(|| {
        invalid(
            format!("{key}.address"),
            "a parent needs address: HOST:PORT",
        )
    })?;
    match crate::addr::split_host_port(&text) {
        Some((host, Some(port))) => Ok(ParentAddr {
            host: host.to_string(),
            port,
        }),
        _ => Err(invalid(
            format!("{key}.address"),
            format!("{text:?} is not HOST:PORT"),
        )),
    }
}

fn credentials(
    key: &str,
    username: Option<String>,
    file: Option<std::path::PathBuf>,
) -> Result<Option<Credentials>, ConfigError> {
    let (username, file) = match (username, file) {
        (None, None) => return Ok(None),
        (Some(u), Some(f)) => (u, f),
        (Some(_), None) => {
            return Err(invalid(
                format!("{key}.password_file"),
                "username needs password_file",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                format!("{key}.username"),
                "password_file needs username",
            ))
        }
    };
    let k = format!("{key}.password_file");
    let text = std::fs::read_to_string(&file)
        .map_err(|e| invalid(&k, format!("cannot read {}: {e}", file.display())))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() || password.len() > 255 || username.is_empty() || username.len() > 255 {
        return Err(invalid(k, "user name and password must be 1 to 255 bytes"));
    }
    if username.contains(':') {
        return Err(invalid(format!("{key}.username"), "must not contain ':'"));
    }
    Ok(Some(Credentials { username, password }))
}

impl EgressSettings {
    /// Validates `tproxyd.egress.NAME` (`name`).
    pub fn validate(self, name: &str) -> Result<Egress, ConfigError> {
        let key = format!("tproxyd.egress.{name}");
        if name == "direct" {
            return Err(invalid(
                key,
                "`direct` is built in; give this egress another name",
            ));
        }
        let direct_only = [
            ("interface", self.interface.is_some()),
            ("mark", self.mark.is_some()),
        ];
        let parent_only = [
            ("address", self.address.is_some()),
            ("username", self.username.is_some()),
            ("password_file", self.password_file.is_some()),
        ];
        let (wrong, kind) = match self.via {
            ViaKind::Direct => (parent_only.iter().find(|(_, set)| *set), "http or socks5"),
            _ => (direct_only.iter().find(|(_, set)| *set), "direct"),
        };
        if let Some((k, _)) = wrong {
            return Err(invalid(
                format!("{key}.{k}"),
                format!("only applies to via: {kind}"),
            ));
        }
        let via = match self.via {
            ViaKind::Direct => Via::Direct {
                interface: self.interface,
                mark: match self.mark {
                    Some(m) => Some(m.value(&format!("{key}.mark"))?),
                    None => None,
                },
            },
            ViaKind::Http => Via::Http(
                parent(&key, self.address)?,
                credentials(&key, self.username, self.password_file)?,
            ),
            ViaKind::Socks5 => Via::Socks5(
                parent(&key, self.address)?,
                credentials(&key, self.username, self.password_file)?,
            ),
        };
        if self.fallback == Fallback::Direct && !matches!(via, Via::Http(..) | Via::Socks5(..)) {
            return Err(invalid(
                format!("{key}.fallback"),
                "only a proxy egress can fall back to direct",
            ));
        }
        Ok(Egress {
            name: name.into(),
            via,
            fallback: self.fallback,
            metrics: metrics::EgressMetrics::new(name),
        })
    }
}

/// Every egress: the built-in `direct` and the configured ones.
#[derive(Debug, Clone)]
pub struct Egresses {
    all: Vec<Arc<Egress>>,
}

impl Default for Egresses {
    fn default() -> Self {
        Egresses {
            all: vec![Egress::builtin()],
        }
    }
}

impl Egresses {
    /// Validates `tproxyd.egress`.
    pub fn validate(
        settings: indexmap::IndexMap<String, EgressSettings>,
    ) -> Result<Egresses, ConfigError> {
        let mut e = Egresses::default();
        for (name, s) in settings {
            e.all.push(Arc::new(s.validate(&name)?));
        }
        Ok(e)
    }

    /// The built-in `direct`.
    pub fn direct(&self) -> &Arc<Egress> {
        &self.all[0]
    }

    /// The egress named `name`; the error names `key`.
    pub fn get(&self, name: &str, key: &str) -> Result<Arc<Egress>, ConfigError> {
        self.all
            .iter()
            .find(|e| &*e.name == name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = self.all.iter().map(|e| &*e.name).collect();
                invalid(
                    key,
                    format!("no egress {name:?} (known: {})", known.join(", ")),
                )
            })
    }

    /// Every egress, `direct` first.
    pub fn all(&self) -> &[Arc<Egress>] {
        &self.all
    }
}

#[cfg(test)]
mod tests;
