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

use crate::config::ConfigError;
use async_trait::async_trait;
use log::{error, info};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Human-readable, one line per request.
    Text,
    /// One JSON object per line, with the field names of [`Record`].
    Json,
}

/// `tproxyd.access_log` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConf {
    /// Line format (default text).
    #[serde(default = "text")]
    pub format: Format,
    /// File to append to; none: stdout.
    pub path: Option<PathBuf>,
    /// Include the query string in `path`.
    #[serde(default)]
    pub query: bool,
}

fn text() -> Format {
    Format::Text
}

impl AccessLogConf {
    /// Checks that the file can be opened for appending.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(p) = &self.path {
            open(p).map_err(|e| ConfigError::Invalid {
                key: "tproxyd.access_log.path".into(),
                reason: format!("cannot open {} for appending: {e}", p.display()),
            })?;
        }
        Ok(())
    }
}

fn open(p: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
}

/// One request, as logged. The JSON field names are stable.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub ts: String,
    /// Same id as `$request_id`.
    pub request_id: String,
    /// Listener name.
    pub listener: &'a str,
    /// `tproxy` or `redirect`.
    pub mode: &'a str,
    /// Client IP.
    pub client_ip: Option<String>,
    /// Client port.
    pub client_port: Option<u16>,
    /// Original destination IP.
    pub dst_ip: Option<String>,
    /// Original destination port.
    pub dst_port: Option<u16>,
    /// Local address of the upstream connection (shows source spoofing).
    pub upstream_local: Option<String>,
    /// Request method.
    pub method: &'a str,
    /// Host header as sent.
    pub host: Option<&'a str>,
    /// Path (with the query string when `query: true`).
    pub path: &'a str,
    /// Status sent to the client; 0 when none was sent.
    pub status: u16,
    /// Request body bytes received from the client.
    pub req_body_bytes: usize,
    /// Response body bytes sent to the client.
    pub resp_body_bytes: usize,
    /// From request header read to end of response, milliseconds.
    pub duration_ms: f64,
    /// Time to open the upstream connection, ms; null when reused or none.
    pub upstream_connect_ms: Option<f64>,
    /// Whether the upstream connection came from the pool; null when none.
    pub upstream_reused: Option<bool>,
    /// What a filter decided, e.g. `acl:deny:no-admin`.
    pub decision: Option<&'a str>,
    /// Why the proxy refused the request itself (`loop`, `acl`, …).
    pub refused: Option<&'a str>,
    /// Pingora's error kind when the request failed, e.g. `ConnectRefused`.
    pub error: Option<&'a str>,
}

impl Record<'_> {
    /// The current time in the log's format.
    pub fn now() -> String {
        humantime::format_rfc3339_millis(SystemTime::now()).to_string()
    }

    fn text_line(&self) -> String {
        let addr = |ip: &Option<String>, port: Option<u16>| match (ip, port) {
            (Some(ip), Some(p)) if ip.contains(':') => format!("[{ip}]:{p}"),
            (Some(ip), Some(p)) => format!("{ip}:{p}"),
            _ => "-".into(),
        };
        let mut line = format!(
            "{} {} {} {} -> {} \"{} {} {}\" {} {}B {:.1}ms",
            self.ts,
            self.request_id,
            self.listener,
            addr(&self.client_ip, self.client_port),
            addr(&self.dst_ip, self.dst_port),
            self.method,
            self.host.unwrap_or("-"),
            self.path,
            self.status,
            self.resp_body_bytes,
            self.duration_ms
        );
        if let Some(l) = &self.upstream_local {
            line.push_str(&format!(" via={l}"));
        }
        if let Some(r) = self.upstream_reused {
            line.push_str(if r { " reused" } else { " new" });
        }
        for (k, v) in [
            ("refused", self.refused),
            ("decision", self.decision),
            ("error", self.error),
        ] {
            if let Some(v) = v {
                line.push_str(&format!(" {k}={v}"));
            }
        }
        line
    }
}

/// Splits an address into the record's ip/port fields.
pub fn split(a: Option<SocketAddr>) -> (Option<String>, Option<u16>) {
    (a.map(|a| a.ip().to_string()), a.map(|a| a.port()))
}

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
    /// The logger and its writer service (which owns the file).
    pub fn new(conf: &AccessLogConf) -> (AccessLog, AccessLogWriter) {
        let (tx, rx) = sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, reopen.clone()) {
            error!("cannot install the SIGHUP handler for log reopening: {e}");
        }
        (
            AccessLog {
                tx,
                format: conf.format,
                query: conf.query,
            },
            AccessLogWriter {
                rx: Mutex::new(Some(rx)),
                path: conf.path.clone(),
                reopen,
            },
        )
    }

    /// Queues a record; never blocks.
    pub fn write(&self, rec: &Record<'_>) {
        let line = match self.format {
            Format::Text => rec.text_line(),
            Format::Json => {
                serde_json::to_string(rec).unwrap_or_else(|e| format!("{{\"log_error\":\"{e}\"}}"))
            }
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                crate::metrics::access_log_dropped()
            }
        }
    }
}

/// The background service whose thread writes the queued records.
pub struct AccessLogWriter {
    rx: Mutex<Option<Receiver<String>>>,
    path: Option<PathBuf>,
    reopen: Arc<AtomicBool>,
}

enum Sink {
    File(std::io::BufWriter<std::fs::File>),
    Stdout(std::io::Stdout),
}

impl Sink {
    fn open(path: &Option<PathBuf>) -> std::io::Result<Sink> {
        Ok(match path {
            Some(p) => Sink::File(std::io::BufWriter::new(open(p)?)),
            None => Sink::Stdout(std::io::stdout()),
        })
    }

    fn out(&mut self) -> &mut dyn Write {
        match self {
            Sink::File(f) => f,
            Sink::Stdout(s) => s,
        }
    }
}

fn run_writer(rx: Receiver<String>, path: Option<PathBuf>, reopen: Arc<AtomicBool>) {
    let mut sink = match Sink::open(&path) {
        Ok(s) => s,
        Err(e) => {
            error!("access log: cannot open {path:?}: {e}; records go to stdout");
            Sink::Stdout(std::io::stdout())
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let out = sink.out();
                let _ = writeln!(out, "{line}");
                // Write what else is queued, then flush once.
                while let Ok(line) = rx.try_recv() {
                    let _ = writeln!(out, "{line}");
                }
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if reopen.swap(false, Ordering::SeqCst) && path.is_some() {
            let _ = sink.out().flush();
            match Sink::open(&path) {
                Ok(s) => {
                    sink = s;
                    info!(
                        "access log reopened: {}",
                        path.as_ref()
                            .map_or(String::new(), |p| p.display().to_string())
                    );
                }
                Err(e) => error!("access log: cannot reopen {path:?}: {e}; keeping the old file"),
            }
        }
    }
}

#[async_trait]
impl BackgroundService for AccessLogWriter {
    async fn start(&self, _shutdown: ShutdownWatch) {
        // A thread of its own (started here, after any daemon fork) so that
        // file writes never stall a runtime that serves requests.
        let Some(rx) = self.rx.lock().expect("not poisoned").take() else {
            return;
        };
        let path = self.path.clone();
        let reopen = self.reopen.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run_writer(rx, path, reopen))
        {
            error!("cannot start the access-log writer: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record<'static> {
        Record {
            ts: "2026-11-27T22:00:00.000Z".into(),
            request_id: "00000000000000ab".into(),
            listener: "lan-http",
            mode: "tproxy",
            client_ip: Some("2001:db8:1::10".into()),
            client_port: Some(4242),
            dst_ip: Some("198.51.100.10".into()),
            dst_port: Some(80),
            upstream_local: Some("198.51.100.1:40000".into()),
            method: "GET",
            host: Some("example.org"),
            path: "/x",
            status: 200,
            req_body_bytes: 0,
            resp_body_bytes: 12,
            duration_ms: 1.5,
            upstream_connect_ms: Some(0.25),
            upstream_reused: Some(false),
            decision: Some("acl:allow:lan"),
            refused: None,
            error: None,
        }
    }

    #[test]
    fn json_has_stable_fields() {
        let v: serde_json::Value = serde_json::to_value(rec()).unwrap();
        assert_eq!(v["dst_ip"], "198.51.100.10");
        assert_eq!(v["dst_port"], 80);
        assert_eq!(v["status"], 200);
        assert_eq!(v["upstream_reused"], false);
        assert!(v["error"].is_null());
        assert_eq!(v.as_object().unwrap().len(), 21);
    }

    #[test]
    fn text_line() {
        assert_eq!(
            rec().text_line(),
            "2026-11-27T22:00:00.000Z 00000000000000ab lan-http [2001:db8:1::10]:4242 -> 198.51.100.10:80 \"GET example.org /x\" 200 12B 1.5ms via=198.51.100.1:40000 new decision=acl:allow:lan"
        );
    }
}
