//! The writer side of the access log: a thread of its own that takes the
//! pending lines every few milliseconds (less often while none come),
//! writes them in one go, and reopens the file on SIGHUP.

use super::settings::open;
use super::settings::Destination;
use async_trait::async_trait;
use log::{error, info};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Pending;

/// How often pending lines are written while records come: the most a
/// record waits, and the most that can be lost if the process is killed.
const FLUSH_EVERY: Duration = Duration::from_millis(5);

/// The longest nap while no records come: the wait doubles from
/// [`FLUSH_EVERY`] up to this after each empty round, so an idle proxy wakes
/// 10 times a second rather than 200 (a router idles most of the day), and
/// the first record after a quiet spell waits at most this long.
const IDLE_NAP: Duration = Duration::from_millis(100);

/// The background service whose thread writes the queued records.
pub struct AccessLogWriter {
    pub(super) pending: Mutex<Option<Arc<Pending>>>,
    pub(super) sink: Destination,
    pub(super) reopen: Arc<AtomicBool>,
}

enum Sink {
    File(std::io::BufWriter<std::fs::File>),
    Stdout(std::io::BufWriter<std::io::Stdout>),
    Stderr(std::io::BufWriter<std::io::Stderr>),
}

impl Sink {
    fn open(kind: &Destination) -> std::io::Result<Sink> {
        Ok(match kind {
            Destination::File(p) => Sink::File(std::io::BufWriter::new(open(p)?)),
            Destination::Stdout => Sink::Stdout(std::io::BufWriter::new(std::io::stdout())),
            Destination::Stderr => Sink::Stderr(std::io::BufWriter::new(std::io::stderr())),
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

fn run_writer(pending: Arc<Pending>, kind: Destination, reopen: Arc<AtomicBool>) {
    let mut sink = match Sink::open(&kind) {
        Ok(s) => s,
        Err(e) => {
            error!("access log: cannot open {kind:?}: {e}; records go to stderr");
            Sink::Stderr(std::io::BufWriter::new(std::io::stderr()))
        }
    };
    let mut batch: Vec<u8> = Vec::new();
    let mut nap = FLUSH_EVERY;
    loop {
        std::thread::sleep(nap);
        {
            let mut lines = pending.lines.lock().unwrap_or_else(|p| p.into_inner());
            // Hand back the emptied buffer of the last batch: capacity is
            // reused, nothing is allocated in steady state.
            std::mem::swap(&mut *lines, &mut batch);
        }
        if batch.is_empty() {
            nap = (nap * 2).min(IDLE_NAP);
        } else {
            nap = FLUSH_EVERY;
            let out = sink.out();
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
        }
        if reopen.swap(false, Ordering::SeqCst) {
            if let Destination::File(p) = &kind {
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
        // Every logger is gone: nothing more can come.
        if Arc::strong_count(&pending) == 1 && pending.lines.lock().map_or(true, |l| l.is_empty()) {
            return;
        }
    }
}

#[async_trait]
impl BackgroundService for AccessLogWriter {
    async fn start(&self, _shutdown: ShutdownWatch) {
        // A thread of its own (started here, after any daemon fork) so that
        // file writes never stall a runtime that serves requests.
        let Some(pending) = self.pending.lock().expect("not poisoned").take() else {
            return;
        };
        let kind = self.sink.clone();
        let reopen = self.reopen.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run_writer(pending, kind, reopen))
        {
            error!("cannot start the access-log writer: {e}");
        }
    }
}
