//! The policy of a `mode: tls-passthrough` listener (`listeners[i].tls`):
//! which ClientHellos are spliced and how the others are closed.
//!
//! ```yaml
//! tls:
//!   client_hello_timeout: 5s   # slowloris guard
//!   idle_timeout: 300s         # a spliced connection quiet both ways this long is closed
//!   missing_sni: allow         # allow | deny
//!   non_tls: deny              # allow | deny: first bytes that are not TLS
//!   deny_action: alert         # alert (TLS access_denied) | reset
//!   sni_check: off             # off | log | deny: SNI must resolve to the destination
//!   ech: allow                 # allow | deny: hellos offering Encrypted Client Hello
//!   acl: { rules: [...] }      # the acl filter's rules; host/sni patterns match the SNI
//! ```

use crate::error::{parse_settings, ConfigError, Timeout};
use crate::filters::host_check::{CheckMode, HostCheckFilter};
use crate::policy::Acl;
use crate::sets::Catalog;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Allow or deny, for the cases without a usable SNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Splice it.
    Allow,
    /// Close it.
    Deny,
}

impl Policy {
    /// The name in the config and in decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Allow => "allow",
            Policy::Deny => "deny",
        }
    }
}

/// How a denied connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DenyAction {
    /// A TLS fatal `access_denied` alert, then close: the client's error
    /// message says what happened.
    Alert,
    /// A TCP reset.
    Reset,
}

/// `listeners[i].tls` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSettings {
    #[serde(default = "five_s")]
    client_hello_timeout: Timeout,
    #[serde(default = "five_min")]
    idle_timeout: Timeout,
    #[serde(default = "allow")]
    missing_sni: Policy,
    #[serde(default = "deny")]
    non_tls: Policy,
    #[serde(default = "alert")]
    deny_action: DenyAction,
    #[serde(default = "off")]
    sni_check: CheckMode,
    #[serde(default = "allow")]
    ech: Policy,
    #[serde(default)]
    acl: Option<serde_yaml::Value>,
}

fn five_s() -> Timeout {
    Timeout::secs(5)
}
fn five_min() -> Timeout {
    Timeout::secs(300)
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

/// A passthrough listener's validated policy.
#[derive(Clone)]
pub struct TlsPolicy {
    /// A ClientHello must be complete within this (slowloris guard).
    pub client_hello_timeout: Duration,
    /// A spliced connection idle this long in both directions is closed.
    pub idle_timeout: Duration,
    /// ClientHello without SNI.
    pub missing_sni: Policy,
    /// First bytes that are not TLS (plain HTTP to 443, SSLv2 hellos).
    pub non_tls: Policy,
    /// How denials close the connection.
    pub deny_action: DenyAction,
    /// SNI vs destination check (`off` = none).
    pub sni_check: Option<Arc<HostCheckFilter>>,
    /// Allow/deny rules; `host`/`sni` patterns match the SNI.
    pub acl: Option<Acl>,
    /// ClientHellos offering Encrypted Client Hello (whose SNI is only the
    /// outer, public name).
    pub ech: Policy,
}

impl std::fmt::Debug for TlsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPolicy")
            .field("missing_sni", &self.missing_sni)
            .field("non_tls", &self.non_tls)
            .field("deny_action", &self.deny_action)
            .finish_non_exhaustive()
    }
}

impl TlsPolicy {
    /// Validates `tls` (absent: all defaults) at dotted path `key`; SNI
    /// names are resolved within `resolve_timeout`.
    pub fn from_settings(
        tls: Option<&serde_yaml::Value>,
        key: &str,
        resolve_timeout: Duration,
        sets: &Catalog,
    ) -> Result<TlsPolicy, ConfigError> {
        let empty = serde_yaml::Value::Mapping(Default::default());
        let raw: TlsSettings = parse_settings(tls.unwrap_or(&empty), key)?;
        let acl = match &raw.acl {
            Some(v) => Some(Acl::from_yaml(v, &format!("{key}.acl"), sets)?),
            None => None,
        };
        Ok(TlsPolicy {
            client_hello_timeout: raw.client_hello_timeout.0,
            idle_timeout: raw.idle_timeout.0,
            missing_sni: raw.missing_sni,
            non_tls: raw.non_tls,
            deny_action: raw.deny_action,
            sni_check: (raw.sni_check != CheckMode::Off).then(|| {
                Arc::new(HostCheckFilter::new(
                    raw.sni_check,
                    resolve_timeout,
                    Duration::from_secs(60),
                ))
            }),
            acl,
            ech: raw.ech,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_settings_name_the_key() {
        let sets = Catalog::default();
        let p = TlsPolicy::from_settings(None, "t", Duration::from_secs(1), &sets).unwrap();
        assert_eq!(
            (p.missing_sni, p.non_tls, p.ech),
            (Policy::Allow, Policy::Deny, Policy::Allow)
        );
        assert!(p.acl.is_none() && p.sni_check.is_none());
        let v: serde_yaml::Value = serde_yaml::from_str("{non_tls: maybe}").unwrap();
        let e = TlsPolicy::from_settings(
            Some(&v),
            "tproxyd.listeners[0].tls",
            Duration::from_secs(1),
            &sets,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("tproxyd.listeners[0].tls.non_tls"),
            "{e}"
        );
    }
}
