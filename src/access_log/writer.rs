//! The writer side of the access log: a thread of its own that takes the
//! pending lines every few milliseconds (less often while none come),
//! writes them in one go, and reopens the file on SIGHUP. [`LogCloser`]
//! has it write out what is pending before the process exits.

use super::settings::open;
use super::settings::Destination;
use async_trait::async_trait;
use log::{error, info};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    pub(super) closer: LogCloser,
}

/// Ends the writer thread once it has written what is pending: for a
/// process about to exit, which would otherwise lose the last records.
#[derive(Debug, Clone, Default)]
pub struct LogCloser {
    closing: Arc<AtomicBool>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// The longest [`LogCloser::close`] waits for the last write (a disk that
/// hangs must not keep the process from exiting).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

impl LogCloser {
    /// Writes out the pending records and stops the writer; waits at most
    /// [`CLOSE_WAIT`]. Records logged afterwards are not written.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        thread.thread().unpark();
        let deadline = Instant::now() + CLOSE_WAIT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
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

fn run_writer(
    pending: Arc<Pending>,
    kind: Destination,
    reopen: Arc<AtomicBool>,
    closing: Arc<AtomicBool>,
) {
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
        // Unparked early by `LogCloser::close`.
        std::thread::park_timeout(nap);
        // Read before the lines are taken: whatever was logged before the
        // close began is in this round.
        let last = closing.load(Ordering::SeqCst);
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
        // Closed, or every logger is gone: nothing more can come.
        if last
            || Arc::strong_count(&pending) == 1
                && pending.lines.lock().map_or(true, |l| l.is_empty())
        {
            return;
        }
    }
}

impl AccessLogWriter {
    /// What stops this writer before the process exits.
    pub fn closer(&self) -> LogCloser {
        self.closer.clone()
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::File(p) => write!(f, "{}", p.display()),
            Destination::Stdout => f.write_str("stdout"),
            Destination::Stderr => f.write_str("stderr"),
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
        let closing = self.closer.closing.clone();
        info!("access log: writing to {kind}");
        {
            // Held while the thread starts: a close meanwhile waits for it.
            let mut slot = self.closer.thread.lock().unwrap_or_else(|p| p.into_inner());
            match std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || run_writer(pending, kind, reopen, closing))
            {
                Ok(thread) => *slot = Some(thread),
                Err(e) => error!("cannot start the access-log writer: {e}"),
            }
        }
        // The writer lives on in its thread: returning would have Pingora
        // log this service as exited while it writes.
        std::future::pending::<()>().await
    }
}
