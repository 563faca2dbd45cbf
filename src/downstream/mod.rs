//! The client side of a connection, and what one client may hold of the
//! proxy: time for a request head, idle time between requests, bytes of a
//! request head, connections, and the read buffer per connection
//! (`tproxyd.downstream`).
//!
//! tproxyd sits inline for a whole LAN and its ruleset fails closed: these
//! limits are on by default so that no client, buggy or hostile, can take
//! more than a bounded share of the proxy's memory, descriptors and time.
//! [`connection`] is one client connection between its requests, which
//! [`head`] reads within their limits; [`sniff`] tells HTTP from what an
//! HTTP listener tunnels instead; [`reply`] writes what tproxyd answers
//! itself; [`connections`] counts connections and [`gate`] refuses those
//! over a cap. Near the cap, [`pressure`] shortens the waits and
//! [`reclaim`] closes idle connections to make room for new ones.

pub mod connection;
pub mod connections;
pub mod gate;
pub mod head;
pub mod idle;
pub mod pressure;
pub mod reclaim;
pub mod reply;
pub mod sniff;
pub mod wake;

use crate::error::{invalid, ConfigError, Timeout};
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use serde::Deserialize;
use std::time::Duration;

/// Pingora's own default is 64 KiB, allocated for every connection (idle
/// ones included); for a plain-HTTP proxy with many idle keep-alive clients
/// that is most of its memory (BENCHMARKS.md).
/// tproxyd reads request heads itself into buffers of their own size, and
/// Pingora reads bodies into its own body buffers, so by default client
/// connections get no read buffer at all (0): nothing is held per idle
/// connection and nothing is copied twice.
pub const DEFAULT_READ_BUFFER: usize = 0;

/// `tproxyd.downstream` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownstreamSettings {
    /// First byte of a request head to its end, for every request.
    header_timeout: Timeout,
    /// Idle time before a request (between requests, and before the first).
    keepalive_timeout: Timeout,
    /// The whole request head, request line included.
    max_header_bytes: usize,
    /// All client connections of the process.
    max_connections: usize,
    /// Per client address (IPv6: per /64).
    max_connections_per_client: usize,
    /// A client that takes no bytes of its response for this long is
    /// dropped (a zero-window client holds no connection for ever).
    send_timeout: Timeout,
    /// Bytes of read buffer per client connection (0: none).
    read_buffer: usize,
    /// The share of `max_connections` open from which the pressure
    /// timeouts apply and clients get no more than a fair share.
    pressure_watermark: f64,
    /// `keepalive_timeout` above the watermark.
    pressure_keepalive_timeout: Timeout,
    /// `header_timeout` above the watermark.
    pressure_header_timeout: Timeout,
}

impl Default for DownstreamSettings {
    fn default() -> Self {
        DownstreamSettings {
            header_timeout: Timeout::secs(15),
            keepalive_timeout: Timeout::secs(60),
            max_header_bytes: 32 * 1024,
            max_connections: 10_000,
            max_connections_per_client: 1024,
            send_timeout: Timeout::secs(60),
            read_buffer: DEFAULT_READ_BUFFER,
            pressure_watermark: 0.8,
            pressure_keepalive_timeout: Timeout::secs(5),
            pressure_header_timeout: Timeout::secs(5),
        }
    }
}

/// Validated client-side settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Downstream {
    /// Bytes of read buffer per client connection.
    pub read_buffer: usize,
    /// A request head must be complete this long after its first byte.
    pub header_timeout: Duration,
    /// A connection idle this long before a request is closed.
    pub keepalive_timeout: Duration,
    /// The largest request head accepted.
    pub max_header_bytes: usize,
    /// Client connections of the process, as configured (see
    /// [`Downstream::effective_max_connections`]).
    pub max_connections: usize,
    /// Client connections per client address (IPv6: per /64).
    pub max_connections_per_client: usize,
    /// Each write to a client must progress within this.
    pub send_timeout: Duration,
    /// The share of the connection cap from which it is under pressure
    /// (0 < w <= 1).
    pub pressure_watermark: f64,
    /// `keepalive_timeout` under pressure (the shorter of the two applies).
    pub pressure_keepalive_timeout: Duration,
    /// `header_timeout` under pressure (the shorter of the two applies).
    pub pressure_header_timeout: Duration,
}

impl Default for Downstream {
    fn default() -> Self {
        DownstreamSettings::default()
            .validate(None)
            .expect("the defaults are valid")
    }
}

/// Pingora's fixed upper bound on a request head.
const PINGORA_MAX_HEAD: usize = 1024 * 1024 - 1;

impl DownstreamSettings {
    /// Checks `tproxyd.downstream`. `legacy_read_buffer` is the old
    /// top-level `tproxyd.downstream_read_buffer`, still read (with a
    /// warning) when given.
    pub fn validate(self, legacy_read_buffer: Option<usize>) -> Result<Downstream, ConfigError> {
        let s = self;
        let (read_buffer, key) = match legacy_read_buffer {
            Some(n) => {
                log::warn!(
                    "tproxyd.downstream_read_buffer is deprecated: write it as tproxyd.downstream.read_buffer"
                );
                (n, "tproxyd.downstream_read_buffer")
            }
            None => (s.read_buffer, "tproxyd.downstream.read_buffer"),
        };
        if read_buffer != 0 && !(1024..=1024 * 1024).contains(&read_buffer) {
            return Err(invalid(
                key,
                "must be 0 (no read buffer) or between 1024 and 1048576 bytes",
            ));
        }
        if !(1024..=PINGORA_MAX_HEAD).contains(&s.max_header_bytes) {
            return Err(invalid(
                "tproxyd.downstream.max_header_bytes",
                format!("must be between 1024 and {PINGORA_MAX_HEAD} bytes"),
            ));
        }
        if s.max_connections == 0 {
            return Err(invalid(
                "tproxyd.downstream.max_connections",
                "must be at least 1",
            ));
        }
        if s.max_connections_per_client == 0 {
            return Err(invalid(
                "tproxyd.downstream.max_connections_per_client",
                "must be at least 1",
            ));
        }
        if !(s.pressure_watermark > 0.0 && s.pressure_watermark <= 1.0) {
            return Err(invalid(
                "tproxyd.downstream.pressure_watermark",
                "must be a share of max_connections above 0 and at most 1 (e.g. 0.8)",
            ));
        }
        Ok(Downstream {
            read_buffer,
            header_timeout: s.header_timeout.0,
            keepalive_timeout: s.keepalive_timeout.0,
            max_header_bytes: s.max_header_bytes,
            max_connections: s.max_connections,
            max_connections_per_client: s.max_connections_per_client,
            send_timeout: s.send_timeout.0,
            pressure_watermark: s.pressure_watermark,
            pressure_keepalive_timeout: s.pressure_keepalive_timeout.0,
            pressure_header_timeout: s.pressure_header_timeout.0,
        })
    }
}

impl Downstream {
    /// `max_connections`, lowered when the process's open-file limit
    /// (`nofile`) cannot hold that many: a proxied connection can need two
    /// descriptors (client and upstream), and `reserved` are kept for
    /// listeners, pooled upstream connections, logs. `Some` when lowered.
    pub fn effective_max_connections(&self, nofile: u64, reserved: u64) -> (usize, bool) {
        let fits = (nofile.saturating_sub(reserved) / 2).max(1);
        let fits = usize::try_from(fits).unwrap_or(usize::MAX);
        if fits < self.max_connections {
            (fits, true)
        } else {
            (self.max_connections, false)
        }
    }

    /// The idle wait before a request, under pressure or not.
    pub fn keepalive(&self, pressure: bool) -> Duration {
        match pressure {
            true => self.keepalive_timeout.min(self.pressure_keepalive_timeout),
            false => self.keepalive_timeout,
        }
    }

    /// The time a request head may take, under pressure or not.
    pub fn header_time(&self, pressure: bool) -> Duration {
        match pressure {
            true => self.header_timeout.min(self.pressure_header_timeout),
            false => self.header_timeout,
        }
    }

    /// How many of `max` open connections put the process under pressure
    /// (at least 1, at most `max`).
    pub fn watermark(&self, max: usize) -> usize {
        let at = (max as f64 * self.pressure_watermark).ceil() as usize;
        at.clamp(1, max.max(1))
    }

    /// Pingora's listening endpoint for `address` with these settings.
    pub fn endpoint(&self, address: &str) -> ListenerConfig {
        ListenerConfig::tcp(address).l4_buffer(L4BufferSettings::default().read(self.read_buffer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_the_open_file_limit() {
        let d = Downstream::default();
        assert_eq!(d.header_timeout, Duration::from_secs(15));
        assert_eq!(d.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(d.max_header_bytes, 32768);
        assert_eq!(
            (d.max_connections, d.max_connections_per_client),
            (10_000, 1024)
        );
        assert_eq!(
            d.effective_max_connections(1_048_576, 1024),
            (10_000, false)
        );
        assert_eq!(d.effective_max_connections(20_000, 1024), (9_488, true));
        assert_eq!(d.effective_max_connections(100, 1024), (1, true));
    }

    #[test]
    fn pressure_settings_defaults_choice_and_errors() {
        let d = Downstream::default();
        assert_eq!(d.watermark(10_000), 8_000);
        assert_eq!((d.watermark(6), d.watermark(1)), (5, 1));
        assert_eq!(d.keepalive(false), Duration::from_secs(60));
        assert_eq!(d.keepalive(true), Duration::from_secs(5));
        assert_eq!(d.header_time(true), Duration::from_secs(5));
        // The shorter of the two applies under pressure.
        let yaml = "keepalive_timeout: 2s\npressure_keepalive_timeout: 9s\npressure_watermark: 1\n";
        let s: DownstreamSettings = serde_yaml::from_str(yaml).unwrap();
        let d = s.validate(None).unwrap();
        assert_eq!(d.keepalive(true), Duration::from_secs(2));
        assert_eq!(d.watermark(200), 200);
        for bad in ["0", "1.5", "-0.1", ".nan"] {
            let yaml = format!("pressure_watermark: {bad}\n");
            let s: DownstreamSettings = serde_yaml::from_str(&yaml).unwrap();
            let e = s.validate(None).unwrap_err().to_string();
            assert!(
                e.contains("tproxyd.downstream.pressure_watermark"),
                "{bad}: {e}"
            );
        }
    }
}
