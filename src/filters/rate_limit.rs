//! The `rate_limit` built-in: at most so many requests per second per key,
//! with a burst, estimated with Pingora's own rate estimator
//! (`pingora-limits`, a count-min sketch: fixed memory whatever the number
//! of distinct keys).
//!
//! ```yaml
//! filters:
//!   - rate_limit:
//!       per: client_ip            # client_ip | client_net (v4 /24, v6 /64) | dst_ip | host
//!       requests_per_second: 50
//!       burst: 100                # default: requests_per_second
//! ```
//! The window is `burst / requests_per_second` seconds (at least one), and a
//! key may make `burst` requests in any such sliding window: a client idle
//! for a while may send `burst` at once, a steady one gets
//! `requests_per_second`. Over the limit: `429 Too Many Requests` with
//! `Retry-After`, counted as refusal `rate-limit`; refused requests do not
//! count against the key.

use super::{Filter, FilterCtx, Hooks, RequestHeader, Result, Verdict};
use crate::addr::host_name;
use crate::error::{invalid, parse_settings, ConfigError};
use crate::flow::{Answer, Refusal};
use async_trait::async_trait;
use http::header::RETRY_AFTER;
use http::HeaderValue;
use pingora_limits::rate::Rate;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

/// What requests are counted together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// The client's address.
    ClientIp,
    /// The client's network: v4 /24, v6 /64.
    ClientNet,
    /// The original destination's address.
    DstIp,
    /// The Host header's name (without port, lower-cased).
    Host,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitSettings {
    per: Per,
    requests_per_second: f64,
    burst: Option<u32>,
}

/// Hash functions and columns of the estimator: a few hundred KiB in all,
/// and few enough collisions for tens of thousands of active keys.
const HASHES: usize = 4;
const SLOTS: usize = 16 * 1024;

/// The `rate_limit` filter.
pub struct RateLimitFilter {
    per: Per,
    burst: f64,
    rate: Rate,
}

/// The key one request is counted under.
#[derive(Hash)]
enum Key<'a> {
    Ip(IpAddr),
    Net(u128),
    Host(&'a str),
}

fn net(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()) & !0xff,
        IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1),
    }
}

impl RateLimitFilter {
    /// From the filter's YAML settings at dotted path `key`.
    pub fn from_yaml(
        value: &serde_yaml::Value,
        key: &str,
    ) -> std::result::Result<Self, ConfigError> {
        let s: RateLimitSettings = parse_settings(value, key)?;
        if !(s.requests_per_second.is_finite() && (0.001..=1e9).contains(&s.requests_per_second)) {
            return Err(invalid(
                format!("{key}.requests_per_second"),
                "must be a number between 0.001 and 1e9",
            ));
        }
        let burst = f64::from(
            s.burst
                .unwrap_or(s.requests_per_second.ceil() as u32)
                .max(1),
        );
        if s.burst == Some(0) {
            return Err(invalid(format!("{key}.burst"), "must be at least 1"));
        }
        let window = Duration::from_secs_f64((burst / s.requests_per_second).max(1.0));
        Ok(RateLimitFilter {
            per: s.per,
            burst: burst.max(s.requests_per_second * window.as_secs_f64()),
            rate: Rate::new_with_estimator_config(window, HASHES, SLOTS),
        })
    }

    /// Counts one request of `ctx`; `Err` with the seconds to wait when it
    /// is over the limit.
    fn admit(&self, ctx: &FilterCtx) -> std::result::Result<(), u64> {
        let host;
        let key = match self.per {
            Per::ClientIp => Key::Ip(ctx.flow.client.ip()),
            Per::ClientNet => Key::Net(net(ctx.flow.client.ip())),
            Per::DstIp => Key::Ip(ctx.flow.destination.ip()),
            Per::Host => {
                host = ctx.host.as_deref().map(host_name).unwrap_or_default();
                Key::Host(&host)
            }
        };
        // Requests in the sliding window, the previous window weighted by
        // how much of it still overlaps.
        let (in_window, left) = self.rate.rate_with(&key, |c| {
            let frac = c.current_interval_fraction;
            let n = c.prev_samples as f64 * (1.0 - frac) + c.curr_samples as f64;
            (n, c.interval.as_secs_f64() * (1.0 - frac))
        });
        if in_window + 1.0 > self.burst {
            return Err(left.ceil().max(1.0) as u64);
        }
        self.rate.observe(&key, 1);
        Ok(())
    }
}

#[async_trait]
impl Filter for RateLimitFilter {
    fn name(&self) -> &str {
        "rate_limit"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            request: true,
            ..Hooks::NONE
        }
    }

    async fn request(&self, ctx: &mut FilterCtx, _req: &RequestHeader) -> Result<Verdict> {
        match self.admit(ctx) {
            Ok(()) => Ok(Verdict::Continue),
            Err(wait) => {
                ctx.set_decision("rate_limit:exceeded");
                let answer = Answer::refused(
                    Refusal::RateLimit,
                    429,
                    format!("429 Too Many Requests: slow down, retry in {wait} s\n"),
                )
                .with_header(RETRY_AFTER, HeaderValue::from(wait));
                Ok(Verdict::Respond(answer))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::test_ctx;

    fn filter(yaml: &str) -> RateLimitFilter {
        RateLimitFilter::from_yaml(&serde_yaml::from_str(yaml).unwrap(), "rl").unwrap()
    }

    #[test]
    fn a_burst_then_refusals_with_retry_after_and_keys_are_separate() {
        let f = filter("{per: client_ip, requests_per_second: 2, burst: 4}");
        let a = test_ctx("192.0.2.10:1", "198.51.100.10:80", None);
        let b = test_ctx("192.0.2.11:1", "198.51.100.10:80", None);
        for i in 0..4 {
            assert_eq!(f.admit(&a), Ok(()), "request {i}");
        }
        let wait = f.admit(&a).unwrap_err();
        assert!((1..=2).contains(&wait), "{wait}");
        // Refused requests do not count; another client is not limited.
        assert!(f.admit(&a).is_err());
        assert_eq!(f.admit(&b), Ok(()));
    }

    #[test]
    fn client_net_and_host_keys() {
        let f = filter("{per: client_net, requests_per_second: 1}");
        assert_eq!(
            f.admit(&test_ctx("192.0.2.10:1", "198.51.100.10:80", None)),
            Ok(())
        );
        assert!(f
            .admit(&test_ctx("192.0.2.99:1", "198.51.100.10:80", None))
            .is_err());
        assert_eq!(
            f.admit(&test_ctx("192.0.3.10:1", "198.51.100.10:80", None)),
            Ok(())
        );
        let f = filter("{per: host, requests_per_second: 1}");
        let ctx = |h| test_ctx("192.0.2.10:1", "198.51.100.10:80", Some(h));
        assert_eq!(f.admit(&ctx("a.test")), Ok(()));
        assert!(f.admit(&ctx("A.test:80")).is_err());
        assert_eq!(f.admit(&ctx("b.test")), Ok(()));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let e = |y: &str| {
            RateLimitFilter::from_yaml(
                &serde_yaml::from_str(y).unwrap(),
                "tproxyd.filters[0].rate_limit",
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        assert!(e("{per: user, requests_per_second: 1}").contains("rate_limit.per"));
        assert!(e("{per: host, requests_per_second: 0}").contains("requests_per_second"));
        assert!(e("{per: host, requests_per_second: 1, burst: 0}").contains("rate_limit.burst"));
        assert!(e("{per: host}").contains("requests_per_second"));
    }
}
