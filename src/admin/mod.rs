//! The admin listener (default `127.0.0.1:9187`): Prometheus metrics,
//! health, and a read-only status page with its JSON API, served by
//! Pingora's HTTP app machinery and its Prometheus app.
//!
//! - `GET /metrics` — Prometheus text format ([`crate::metrics`])
//! - `GET /healthz` — liveness: 200 while the process serves HTTP at all
//! - `GET /readyz` — readiness: 200 once every transparent listener is
//!   bound, 503 before that and while draining (upgrade / shutdown)
//! - `GET /` — the status page: one HTML file built into the binary
//! - `GET /api/flows` — the flows open now ([`api`]), filtered and bounded
//! - `GET /api/summary` — listeners, rates, top lists, name sets, identity
//!
//! Nothing here changes anything: every other method is refused. With
//! `token_file`, every path but `/healthz` and `/readyz` wants the token
//! (`Authorization: Bearer`, or Basic with the token as password so that
//! a browser can open the page). `flows: off` keeps no flow, client or
//! name at all (see [`crate::live`]).

mod api;
mod server;

pub use api::Identity;
pub use server::{admin_server, AdminApp};

use crate::error::{invalid, ConfigError};
use crate::lifecycle::Draining;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// `on` / `off` (YAML 1.2 reads them as words, not booleans); `true` and
/// `false` work too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Switch(bool);

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::Bool(b) => Ok(Switch(b)),
            serde_yaml::Value::String(s) if s == "on" => Ok(Switch(true)),
            serde_yaml::Value::String(s) if s == "off" => Ok(Switch(false)),
            other => {
                let shown = serde_yaml::to_string(&other).unwrap_or_default();
                Err(serde::de::Error::custom(format!(
                    "{:?} is neither on nor off",
                    shown.trim()
                )))
            }
        }
    }
}

impl Switch {
    fn is_on(self) -> bool {
        self.0
    }
}

/// `tproxyd.admin` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    enabled: bool,
    address: String,
    token_file: Option<String>,
    flows: Switch,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            enabled: true,
            address: "127.0.0.1:9187".into(),
            token_file: None,
            flows: Switch(true),
        }
    }
}

/// The admin token, read from `token_file` (never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The validated admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Its address, as written (`IP:port`).
    pub address: String,
    /// The token every path but health and readiness wants, if any.
    pub token: Option<Token>,
    /// Whether flows (and the clients and names they show) are kept.
    pub flows: bool,
}

impl Admin {
    /// What `tproxyd check` (and start-up) warns about: an admin listener
    /// reachable from beyond this host without a token.
    pub fn warning(&self) -> Option<String> {
        let ip = self.address.parse::<SocketAddr>().ok()?.ip();
        (!ip.is_loopback() && self.token.is_none()).then(|| {
            format!(
                "tproxyd.admin.address {} is reachable beyond this host and no \
                 tproxyd.admin.token_file is set: anyone who reaches it sees the \
                 metrics{}",
                self.address,
                if self.flows {
                    ", and every client and name in the flows (set flows: off to hide them)"
                } else {
                    ""
                }
            )
        })
    }
}

/// Reads the token in `path`: its first line, trimmed; empty is an error.
fn read_token(path: &str) -> Result<Token, ConfigError> {
    const KEY: &str = "tproxyd.admin.token_file";
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(KEY, format!("cannot read {path}: {e}")))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(invalid(
            KEY,
            format!("{path} holds no token (its first line is empty)"),
        ));
    }
    Ok(Token(Arc::from(token)))
}

impl AdminSettings {
    /// The admin listener, `None` when disabled. Its port must differ
    /// from every proxy listener's (`listening`).
    pub fn validate(
        self,
        listening: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Option<Admin>, ConfigError> {
        const KEY: &str = "tproxyd.admin.address";
        if !self.enabled {
            return Ok(None);
        }
        let a: SocketAddr = self
            .address
            .parse()
            .map_err(|_| invalid(KEY, format!("{:?} is not an IP:port address", self.address)))?;
        if listening.into_iter().any(|l| l.port() == a.port()) {
            return Err(invalid(KEY, "shares its port with a transparent listener"));
        }
        Ok(Some(Admin {
            address: self.address,
            token: self.token_file.as_deref().map(read_token).transpose()?,
            flows: self.flows.is_on(),
        }))
    }
}

/// How many transparent listeners are bound, out of how many configured.
#[derive(Debug, Clone)]
pub struct Readiness {
    expected: usize,
    bound: Arc<AtomicUsize>,
    draining: Draining,
}

impl Readiness {
    /// Ready once `expected` listeners reported bound, unless draining.
    pub fn new(expected: usize, draining: Draining) -> Self {
        Readiness {
            expected,
            bound: Arc::new(AtomicUsize::new(0)),
            draining,
        }
    }

    /// Called by each listener once its socket is in place.
    pub fn listener_bound(&self) {
        self.bound.fetch_add(1, Ordering::SeqCst);
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), String> {
        let bound = self.bound.load(Ordering::SeqCst);
        if self.draining.is_draining() {
            Err("draining: this process is being replaced or stopped".into())
        } else if bound < self.expected {
            Err(format!("{bound} of {} listeners bound", self.expected))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
