//! The structured access log: one record per request, as text or JSON
//! lines, to a file or stdout.
//!
//! Records are formatted on the request path but written by a dedicated
//! thread behind a bounded queue, so disk I/O never blocks a request; if the
//! writer falls behind, records are dropped and counted
//! (`tproxyd_access_log_dropped_total`). SIGHUP makes the writer reopen the
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
mod writer;

pub use record::{Record, TlsLog};
pub use settings::{AccessLogSettings, Format};
pub use writer::AccessLogWriter;

use log::error;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use writer::SinkKind;

/// The request-path side of the access log.
pub struct AccessLog {
    tx: SyncSender<String>,
    format: Format,
    /// Whether to keep the query string.
    pub query: bool,
}

/// Records queued before the writer catches up; beyond that they are dropped.
const QUEUE: usize = 16 * 1024;

impl AccessLog {
    /// The logger and its writer service (which owns the file); `None`
    /// when the log is disabled.
    pub fn new(conf: &AccessLogSettings) -> Option<(AccessLog, AccessLogWriter)> {
        if !conf.enabled {
            return None;
        }
        let (tx, rx) = sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, reopen.clone()) {
            error!("cannot install the SIGHUP handler for log reopening: {e}");
        }
        let sink = match (&conf.path, conf.stderr) {
            (Some(p), _) => SinkKind::File(p.clone()),
            (None, true) => SinkKind::Stderr,
            (None, false) => SinkKind::Stdout,
        };
        Some((
            AccessLog {
                tx,
                format: conf.format,
                query: conf.query,
            },
            AccessLogWriter {
                rx: Mutex::new(Some(rx)),
                sink,
                reopen,
            },
        ))
    }

    /// Queues a record; never blocks.
    pub fn write(&self, rec: &Record<'_>) {
        let now = SystemTime::now();
        let line = match self.format {
            Format::Text => rec.text_line(now),
            Format::Json => rec.json_line(now),
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                crate::metrics::access_log_dropped()
            }
        }
    }
}
