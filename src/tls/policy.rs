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

use super::ClientHello;
use crate::error::{parse_settings, ConfigError, Timeout};
use crate::filters::acl::{AclFilter, Action};
use crate::filters::host_check::{CheckMode, HostCheckFilter, Outcome};
use crate::filters::{FilterCtx, FlowInfo, RequestHeader};
use log::warn;
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
    pub acl: Option<Arc<AclFilter>>,
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

/// A verdict on one ClientHello, and what to log about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Splice (true) or close.
    pub allowed: bool,
    /// e.g. `acl:deny:no-social`, `missing_sni:allow`.
    pub decision: Option<String>,
}

impl TlsPolicy {
    /// Validates `tls` (absent: all defaults) at dotted path `key`; SNI
    /// names are resolved within `resolve_timeout`.
    pub fn from_settings(
        tls: Option<&serde_yaml::Value>,
        key: &str,
        resolve_timeout: Duration,
    ) -> Result<TlsPolicy, ConfigError> {
        let empty = serde_yaml::Value::Mapping(Default::default());
        let raw: TlsSettings = parse_settings(tls.unwrap_or(&empty), key)?;
        let acl = match &raw.acl {
            Some(v) => Some(Arc::new(AclFilter::from_yaml(v, &format!("{key}.acl"))?)),
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

    /// The verdict on first bytes that are not TLS at all.
    pub fn decide_non_tls(&self) -> Decision {
        Decision {
            allowed: self.non_tls == Policy::Allow,
            decision: Some(format!("non_tls:{}", self.non_tls.as_str())),
        }
    }

    /// The verdict for a parsed ClientHello on `flow`: SNI presence, ACL
    /// (the SNI is the host), SNI check.
    pub async fn decide(&self, hello: &ClientHello, flow: &FlowInfo) -> Decision {
        let dst = flow.destination;
        if hello.ech && self.ech == Policy::Deny {
            return Decision {
                allowed: false,
                decision: Some("ech:deny".into()),
            };
        }
        let Some(sni) = hello.sni.as_deref() else {
            return Decision {
                allowed: self.missing_sni == Policy::Allow,
                decision: Some(format!("missing_sni:{}", self.missing_sni.as_str())),
            };
        };
        let mut decision = None;
        if let Some(acl) = &self.acl {
            let ctx = FilterCtx::new(flow.clone(), Some(sni.to_string()));
            let target = format!("{sni}:{}", dst.port());
            let Ok(req) = RequestHeader::build("CONNECT", target.as_bytes(), None) else {
                return Decision {
                    allowed: false,
                    decision: Some("invalid:sni".into()),
                };
            };
            let (action, rule) = acl.decide(&ctx, &req);
            let rule = rule.unwrap_or("default");
            if action == Action::Deny {
                return Decision {
                    allowed: false,
                    decision: Some(format!("acl:deny:{rule}")),
                };
            }
            decision = Some(format!("acl:allow:{rule}"));
        }
        if let Some(check) = &self.sni_check {
            if let Outcome::Mismatch(why) = check.name_matches(sni, dst.ip()).await {
                warn!(
                    "TLS {}: SNI {sni} does not match destination {dst}: {why}",
                    flow.request_id
                );
                let deny = check.mode() == CheckMode::Deny;
                return Decision {
                    allowed: !deny,
                    decision: Some(
                        if deny {
                            "sni_check:deny"
                        } else {
                            "sni_check:mismatch"
                        }
                        .into(),
                    ),
                };
            }
        }
        Decision {
            allowed: true,
            decision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> TlsPolicy {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        TlsPolicy::from_settings(Some(&v), "t", Duration::from_secs(1)).unwrap()
    }

    fn hello(sni: Option<&str>) -> ClientHello {
        ClientHello {
            sni: sni.map(str::to_string),
            ..Default::default()
        }
    }

    fn decide(p: &TlsPolicy, sni: Option<&str>) -> Decision {
        let ctx = crate::filters::test_ctx("192.0.2.10:1", "198.51.100.10:443", None);
        futures::executor::block_on(p.decide(&hello(sni), &ctx.flow))
    }

    #[test]
    fn sni_rules_missing_sni_and_non_tls() {
        let p = policy(
            "{missing_sni: deny, acl: {rules: [{name: social, action: deny, sni: [\"*.social.test\"]}]}}",
        );
        let d = decide(&p, Some("www.social.test"));
        assert!(!d.allowed);
        assert_eq!(d.decision.as_deref(), Some("acl:deny:social"));
        let d = decide(&p, Some("www.lab.test"));
        assert!(d.allowed);
        assert_eq!(d.decision.as_deref(), Some("acl:allow:default"));
        assert!(!decide(&p, None).allowed);
        assert!(!p.decide_non_tls().allowed);
        let open = policy("{non_tls: allow}");
        assert!(decide(&open, None).allowed);
        assert_eq!(
            open.decide_non_tls().decision.as_deref(),
            Some("non_tls:allow")
        );
    }

    #[test]
    fn ech_is_decided_by_its_own_key_and_its_outer_name_by_the_rules() {
        let ctx = crate::filters::test_ctx("192.0.2.10:1", "198.51.100.10:443", None);
        let ech = ClientHello {
            sni: Some("public.lab.test".into()),
            ech: true,
            ..Default::default()
        };
        let allow = policy("{acl: {rules: [{name: pub, action: deny, sni: [public.lab.test]}]}}");
        let d = futures::executor::block_on(allow.decide(&ech, &ctx.flow));
        assert_eq!(
            (d.allowed, d.decision.as_deref()),
            (false, Some("acl:deny:pub"))
        );
        let deny = policy("{ech: deny}");
        let d = futures::executor::block_on(deny.decide(&ech, &ctx.flow));
        assert_eq!(
            (d.allowed, d.decision.as_deref()),
            (false, Some("ech:deny"))
        );
        assert!(decide(&deny, Some("www.lab.test")).allowed);
    }

    #[test]
    fn literal_sni_is_checked_against_the_destination() {
        let p = policy("{sni_check: deny}");
        assert!(decide(&p, Some("198.51.100.10")).allowed);
        let d = decide(&p, Some("198.51.100.99"));
        assert_eq!(
            (d.allowed, d.decision.as_deref()),
            (false, Some("sni_check:deny"))
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        let v: serde_yaml::Value = serde_yaml::from_str("{non_tls: maybe}").unwrap();
        let e =
            TlsPolicy::from_settings(Some(&v), "tproxyd.listeners[0].tls", Duration::from_secs(1))
                .unwrap_err();
        assert!(
            e.to_string().contains("tproxyd.listeners[0].tls.non_tls"),
            "{e}"
        );
    }
}
