//! The `host_check` built-in: does the Host header agree with where the
//! connection was really going?
//!
//! tproxyd always connects to the original destination and never re-routes
//! by Host, so a mismatch is not a routing problem — but it is a signal
//! (domain fronting, a malware beacon with a fake Host, a client with a
//! stale DNS cache). Policy:
//!
//! ```yaml
//! filters:
//!   - host_check:
//!       mode: deny            # off | log | deny (409)
//!       resolve_timeout: 2s   # bound for resolving a Host name
//!       cache_ttl: 60s        # how long a resolution is reused
//! ```
//! A Host that is a literal IP must equal the destination IP exactly; a
//! name must resolve to it. A port in Host must equal the destination port
//! (no port means 80). Resolution is asynchronous, cached and bounded in
//! time: when it fails or times out the request is let through and logged
//! as unverified — a lookup never blocks the proxy.

use super::{Filter, FilterCtx, Hooks, RequestHeader, Result, Verdict};
use crate::addr::{host_name, host_port};
use crate::error::{parse_settings, ConfigError, Timeout};
use crate::flow::Refusal;
use async_trait::async_trait;
use log::warn;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to do on a mismatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckMode {
    /// Do not check.
    Off,
    /// Log a warning and forward.
    Log,
    /// Answer 409 Conflict.
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostCheckRaw {
    mode: CheckMode,
    #[serde(default = "default_timeout")]
    resolve_timeout: Timeout,
    #[serde(default = "default_ttl")]
    cache_ttl: Timeout,
}

fn default_timeout() -> Timeout {
    Timeout::secs(2)
}
fn default_ttl() -> Timeout {
    Timeout::secs(60)
}

/// Failed lookups are remembered briefly so a dead name is not hammered.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Bound on cached names.
const CACHE_MAX: usize = 4096;

type Lookup = Option<Arc<[IpAddr]>>;

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Host agrees with the destination (or there is no Host).
    Match,
    /// Host disagrees; the reason says how.
    Mismatch(String),
    /// The name could not be resolved in time.
    Unverified,
}

/// The `host_check` filter.
pub struct HostCheckFilter {
    mode: CheckMode,
    timeout: Duration,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Lookup)>>,
}

impl HostCheckFilter {
    /// From the filter's YAML settings.
    pub fn from_yaml(
        value: &serde_yaml::Value,
        key: &str,
    ) -> std::result::Result<Self, ConfigError> {
        let raw: HostCheckRaw = parse_settings(value, key)?;
        Ok(HostCheckFilter {
            mode: raw.mode,
            timeout: raw.resolve_timeout.0,
            ttl: raw.cache_ttl.0,
            cache: Mutex::new(HashMap::new()),
        })
    }

    async fn resolve(&self, name: &str) -> Lookup {
        let now = Instant::now();
        if let Some((at, hit)) = self.cache.lock().expect("not poisoned").get(name) {
            let ttl = if hit.is_some() {
                self.ttl
            } else {
                NEGATIVE_TTL
            };
            if now.duration_since(*at) < ttl {
                return hit.clone();
            }
        }
        let found: Lookup =
            match tokio::time::timeout(self.timeout, tokio::net::lookup_host((name, 0))).await {
                Ok(Ok(addrs)) => Some(addrs.map(|a| a.ip().to_canonical()).collect()),
                _ => None,
            };
        let mut cache = self.cache.lock().expect("not poisoned");
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(name.to_string(), (now, found.clone()));
        found
    }

    /// Checks a request's Host against its flow's destination.
    pub async fn check(&self, ctx: &FilterCtx) -> Outcome {
        let Some(host) = ctx.host.as_deref() else {
            return Outcome::Match;
        };
        let dst = ctx.flow.destination;
        let name = host_name(host);
        let port = host_port(host).unwrap_or(80);
        if port != dst.port() {
            return Outcome::Mismatch(format!(
                "port {port} is not destination port {}",
                dst.port()
            ));
        }
        self.name_matches(&name, dst.ip()).await
    }

    /// Whether `name` (a host name or a literal IP, without port) is `ip`:
    /// a literal must be equal, a name must resolve to it. Also used for
    /// the SNI check of TLS passthrough listeners.
    pub async fn name_matches(&self, name: &str, ip: IpAddr) -> Outcome {
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(lit) = bare.parse::<IpAddr>() {
            return if lit.to_canonical() == ip {
                Outcome::Match
            } else {
                Outcome::Mismatch(format!("{lit} is not destination {ip}"))
            };
        }
        match self.resolve(bare).await {
            Some(addrs) if addrs.contains(&ip) => Outcome::Match,
            Some(_) => Outcome::Mismatch(format!("{bare} does not resolve to {ip}")),
            None => Outcome::Unverified,
        }
    }

    /// A checker with the given mode and bounds (for non-HTTP users).
    pub fn new(mode: CheckMode, timeout: Duration, ttl: Duration) -> Self {
        HostCheckFilter {
            mode,
            timeout,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The configured policy.
    pub fn mode(&self) -> CheckMode {
        self.mode
    }
}

#[async_trait]
impl Filter for HostCheckFilter {
    fn name(&self) -> &str {
        "host_check"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            request: true,
            ..Hooks::NONE
        }
    }

    async fn request(&self, ctx: &mut FilterCtx, _req: &RequestHeader) -> Result<Verdict> {
        if self.mode == CheckMode::Off {
            return Ok(Verdict::Continue);
        }
        match self.check(ctx).await {
            Outcome::Match => Ok(Verdict::Continue),
            Outcome::Unverified => {
                ctx.set_decision("host_check:unverified");
                Ok(Verdict::Continue)
            }
            Outcome::Mismatch(why) => {
                let host = ctx.host.clone().unwrap_or_default();
                warn!(
                    "request {}: Host {host:?} does not match destination {}: {why}",
                    ctx.flow.request_id, ctx.flow.destination
                );
                if self.mode == CheckMode::Deny {
                    ctx.set_decision("host_check:deny");
                    Ok(Verdict::refuse(
                        Refusal::HostMismatch,
                        409,
                        format!(
                            "409 Conflict: Host {host} does not match the destination {} ({why})\n",
                            ctx.flow.destination
                        ),
                    ))
                } else {
                    ctx.set_decision("host_check:mismatch");
                    Ok(Verdict::Continue)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(dst: &str, host: &str) -> FilterCtx {
        crate::filters::test_ctx("192.0.2.10:1", dst, Some(host))
    }

    fn filter() -> HostCheckFilter {
        HostCheckFilter::from_yaml(
            &serde_yaml::from_str("{mode: deny, resolve_timeout: 1s}").unwrap(),
            "k",
        )
        .unwrap()
    }

    #[test]
    fn literal_ips_and_ports() {
        let f = filter();
        let run = |dst: &str, host: &str| futures::executor::block_on(f.check(&ctx(dst, host)));
        assert_eq!(run("198.51.100.10:80", "198.51.100.10"), Outcome::Match);
        assert_eq!(
            run("198.51.100.10:8080", "198.51.100.10:8080"),
            Outcome::Match
        );
        assert!(matches!(
            run("198.51.100.10:80", "198.51.100.11"),
            Outcome::Mismatch(_)
        ));
        assert!(matches!(
            run("198.51.100.10:8080", "198.51.100.10"),
            Outcome::Mismatch(_)
        ));
        assert_eq!(run("[2001:db8::1]:80", "[2001:db8::1]"), Outcome::Match);
        assert!(matches!(
            run("[2001:db8::1]:80", "[2001:db8::2]:80"),
            Outcome::Mismatch(_)
        ));
    }
}
