//! The structured access log: one record per request, as text or JSON
//! lines, to a file or stdout.
//!
//! Records are formatted on the request path into a reused buffer and
//! appended to a bounded pending buffer that a dedicated thread writes out
//! every few milliseconds, so disk I/O never blocks a request and a record
//! costs no wake-up or syscall; if the writer falls behind, records are
//! dropped and counted (`tproxyd_access_log_dropped_total`). SIGHUP makes the writer reopen the
//! file — the rotation story for logrotate: rename, then `kill -HUP`.
//!
//! ```yaml
//! tproxyd:
//!   access_log:
//!     format: json          # text | json
//!     path: /var/log/tproxyd/access.log   # omit for stdout
//!     query: false          # include the query string
//! ```

mod record;
mod settings;
mod text;
mod writer;

pub use record::{Record, TlsLog};
pub use settings::{AccessLogOutput, AccessLogSettings, Destination, Format};
pub use writer::{AccessLogWriter, LogCloser};

use log::error;
use std::cell::RefCell;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Formatted lines waiting for the writer thread. Request threads append
/// under a short lock; the writer swaps the whole buffer out every few
/// milliseconds. So a record costs no allocation, no channel operation, no
/// thread wake-up and no `write(2)`: those happen once per batch.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) lines: Mutex<Vec<u8>>,
}

/// The request-path side of the access log.
pub struct AccessLog {
    pending: Arc<Pending>,
    format: Format,
    /// Whether to keep the query string.
    pub query: bool,
}

/// Bytes of lines held for the writer; past that, records are dropped and
/// counted (a disk that cannot keep up never slows a request).
const MAX_PENDING: usize = 4 * 1024 * 1024;

thread_local! {
    /// The line being formatted, reused by every record of a thread.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

impl AccessLog {
    /// The logger and its writer service (which owns the file).
    pub fn new(conf: &AccessLogOutput) -> (AccessLog, AccessLogWriter) {
        let pending = Arc::new(Pending::default());
        let reopen = Arc::new(AtomicBool::new(false));
        if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, reopen.clone()) {
            error!("cannot install the SIGHUP handler for log reopening: {e}");
        }
        (
            AccessLog {
                pending: pending.clone(),
                format: conf.format,
                query: conf.query,
            },
            AccessLogWriter {
                pending: Mutex::new(Some(pending)),
                sink: conf.destination.clone(),
                reopen,
                closer: LogCloser::default(),
            },
        )
    }

    /// Formats a record and hands it to the writer; never blocks on I/O.
    pub fn write(&self, rec: &Record<'_>) {
        let now = SystemTime::now();
        SCRATCH.with(|scratch| {
            let mut line = scratch.borrow_mut();
            line.clear();
            match self.format {
                Format::Text => rec.write_text(&mut line, now),
                Format::Json => rec.write_json(&mut line, now),
            }
            line.push(b'\n');
            let mut lines = self.pending.lines.lock().unwrap_or_else(|p| p.into_inner());
            if lines.len() + line.len() > MAX_PENDING {
                drop(lines);
                crate::metrics::access_log_dropped();
                return;
            }
            lines.extend_from_slice(&line);
        });
    }
}
