//! The connection to the original destination: its settings
//! (`tproxyd.upstream`) and the connectors ([`connector`]) that open it.

pub mod connector;

use crate::error::{invalid, ConfigError, Timeout};
use crate::flow::RelayKind;
use crate::relay::{relay_counted, send_within, Counts, Endpoint, Relayed};
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// `tproxyd.upstream` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    connect_timeout: Timeout,
    read_timeout: Timeout,
    write_timeout: Timeout,
    idle_timeout: Timeout,
    resolve_timeout: Timeout,
    mark: Option<MarkSettings>,
    relay: RelayKind,
}

/// A mark (`upstream.mark`, an egress's `mark`) as written: a number,
/// decimal or `0x` hex.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MarkSettings {
    /// A number.
    Num(u32),
    /// Text: decimal or `0x` hex.
    Text(String),
}

impl MarkSettings {
    /// The mark; the error names `key`. 0 is refused (it means no mark).
    pub fn value(self, key: &str) -> Result<u32, ConfigError> {
        let mark = match self {
            MarkSettings::Num(n) => n,
            MarkSettings::Text(t) => {
                let t = t.trim();
                let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => t.parse().ok(),
                };
                parsed.ok_or_else(|| {
                    invalid(key, format!("{t:?} is not a number (e.g. 0x100 or 256)"))
                })?
            }
        };
        if mark == 0 {
            return Err(invalid(key, "0 means no mark; leave it out instead"));
        }
        Ok(mark)
    }
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: Timeout::secs(5),
            read_timeout: Timeout::secs(60),
            write_timeout: Timeout::secs(60),
            idle_timeout: Timeout::secs(60),
            resolve_timeout: Timeout::secs(2),
            mark: None,
            relay: RelayKind::Splice,
        }
    }
}

/// Timeouts and socket settings for the connection to the original
/// destination, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// TCP connect; expiry answers 504.
    pub connect_timeout: Duration,
    /// Waiting for the origin to send; expiry answers 504.
    pub read_timeout: Duration,
    /// Waiting for the origin to take our bytes.
    pub write_timeout: Duration,
    /// How long an idle pooled upstream connection is kept for reuse.
    pub idle_timeout: Duration,
    /// Bound on resolving a name (forward mode, SNI and Host checks).
    pub resolve_timeout: Duration,
    /// `SO_MARK` on every upstream socket, so that rules can exempt the
    /// proxy's own traffic from interception.
    pub mark: Option<u32>,
    /// How opaque flows (TLS passthrough, tunnels) move their bytes:
    /// `splice` (the default; in the kernel where both ends are plain
    /// sockets and pipes are left, else copied) or `copy` (always through
    /// user space, to rule splicing out).
    pub relay: RelayKind,
}

impl UpstreamSettings {
    /// Checks the mark (the durations were checked when parsed).
    pub fn validate(self) -> Result<Upstream, ConfigError> {
        const KEY: &str = "tproxyd.upstream.mark";
        let mark = match self.mark {
            Some(m) => Some(m.value(KEY)?),
            None => None,
        };
        Ok(Upstream {
            connect_timeout: self.connect_timeout.0,
            read_timeout: self.read_timeout.0,
            write_timeout: self.write_timeout.0,
            idle_timeout: self.idle_timeout.0,
            resolve_timeout: self.resolve_timeout.0,
            mark,
            relay: self.relay,
        })
    }
}

impl Default for Upstream {
    fn default() -> Self {
        UpstreamSettings::default()
            .validate()
            .expect("the defaults are valid")
    }
}

/// The rest of an opaque flow once its upstream connection is open: the
/// client's `first` bytes (already read: a replayed ClientHello, early
/// tunnel bytes) sent within the write timeout, then both directions
/// relayed until done or quiet for `idle`, counted into `live` as they
/// move when given (the status page's flow). `Err` with the error kind
/// when the first bytes could not be sent.
pub async fn relay_opened<A, B>(
    client: &mut A,
    upstream: &mut B,
    first: &[u8],
    conf: &Upstream,
    idle: Duration,
    live: Option<&Counts>,
) -> Result<Relayed, &'static str>
where
    A: Endpoint + ?Sized,
    B: Endpoint + ?Sized,
{
    if !first.is_empty() && !send_within(upstream, first, conf.write_timeout).await {
        return Err("WriteError");
    }
    let own = Counts::default();
    let counts = live.unwrap_or(&own);
    counts.up.fetch_add(first.len() as u64, Ordering::Relaxed);
    Ok(relay_counted(client, upstream, idle, conf.relay, counts).await)
}
