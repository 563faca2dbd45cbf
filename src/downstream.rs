//! The client side of a connection: how much is buffered per client
//! connection (`tproxyd.downstream_read_buffer`).

use crate::error::{invalid, ConfigError};
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};

/// Pingora's own default is 64 KiB, allocated for every connection (idle
/// ones included); for a plain-HTTP proxy with many idle keep-alive clients
/// that is most of its memory (BENCHMARKS.md).
pub const DEFAULT_READ_BUFFER: usize = 8 * 1024;

/// Validated client-side settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downstream {
    /// Bytes of read buffer per client connection.
    pub read_buffer: usize,
}

impl Default for Downstream {
    fn default() -> Self {
        Downstream {
            read_buffer: DEFAULT_READ_BUFFER,
        }
    }
}

impl Downstream {
    /// Checks `tproxyd.downstream_read_buffer`.
    pub fn validate(read_buffer: usize) -> Result<Downstream, ConfigError> {
        if !(1024..=1024 * 1024).contains(&read_buffer) {
            return Err(invalid(
                "tproxyd.downstream_read_buffer",
                "must be between 1024 and 1048576 bytes",
            ));
        }
        Ok(Downstream { read_buffer })
    }

    /// Pingora's listening endpoint for `address` with these settings.
    pub fn endpoint(&self, address: &str) -> ListenerConfig {
        ListenerConfig::tcp(address).l4_buffer(L4BufferSettings::default().read(self.read_buffer))
    }
}
