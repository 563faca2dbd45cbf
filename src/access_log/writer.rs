//! The writer side of the access log: a thread of its own that drains the
//! queue into the sink and reopens the file on SIGHUP.

use super::settings::open;
use async_trait::async_trait;
use log::{error, info};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The background service whose thread writes the queued records.
pub struct AccessLogWriter {
    pub(super) rx: Mutex<Option<Receiver<String>>>,
    pub(super) sink: SinkKind,
    pub(super) reopen: Arc<AtomicBool>,
}

#[derive(Debug, Clone)]
pub(super) enum SinkKind {
    File(PathBuf),
    Stdout,
    Stderr,
}

enum Sink {
    File(std::io::BufWriter<std::fs::File>),
    Stdout(std::io::BufWriter<std::io::Stdout>),
    Stderr(std::io::BufWriter<std::io::Stderr>),
}

impl Sink {
    fn open(kind: &SinkKind) -> std::io::Result<Sink> {
        Ok(match kind {
            SinkKind::File(p) => Sink::File(std::io::BufWriter::new(open(p)?)),
            SinkKind::Stdout => Sink::Stdout(std::io::BufWriter::new(std::io::stdout())),
            SinkKind::Stderr => Sink::Stderr(std::io::BufWriter::new(std::io::stderr())),
        })
    }

    fn out(&mut self) -> &mut dyn Write {
        match self {
            Sink::File(f) => f,
            Sink::Stdout(s) => s,
            Sink::Stderr(s) => s,
        }
    }
}

fn run_writer(rx: Receiver<String>, kind: SinkKind, reopen: Arc<AtomicBool>) {
    let mut sink = match Sink::open(&kind) {
        Ok(s) => s,
        Err(e) => {
            error!("access log: cannot open {kind:?}: {e}; records go to stderr");
            Sink::Stderr(std::io::BufWriter::new(std::io::stderr()))
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
        if reopen.swap(false, Ordering::SeqCst) {
            if let SinkKind::File(p) = &kind {
                let _ = sink.out().flush();
                match Sink::open(&kind) {
                    Ok(s) => {
                        sink = s;
                        info!("access log reopened: {}", p.display());
                    }
                    Err(e) => error!(
                        "access log: cannot reopen {}: {e}; keeping the old file",
                        p.display()
                    ),
                }
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
        let kind = self.sink.clone();
        let reopen = self.reopen.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run_writer(rx, kind, reopen))
        {
            error!("cannot start the access-log writer: {e}");
        }
    }
}
