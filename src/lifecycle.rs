//! Knowing when this process is on its way out, and leaving as soon as
//! nothing holds it.
//!
//! On SIGQUIT (graceful upgrade) Pingora hands the listening sockets to the
//! new process but keeps serving for a few seconds, then drops idle
//! keep-alive connections. A client that sends its next request on such a
//! connection at that moment sees it closed. So from the moment the upgrade
//! (or a SIGTERM) starts, we answer with `Connection: close`: clients finish
//! their current request and reconnect — to the new process.
//!
//! Then the grace period: Pingora's main thread sleeps all of
//! `grace_period_seconds` before it stops the runtimes, whether anything is
//! still in flight or not. Idle keep-alive connections close as shutdown
//! begins (their wait for a request ends on it), so every client
//! connection still open is in flight: a request being answered, a relay,
//! or the first request of a connection accepted just before. [`Exit`]
//! counts them; when the last one has closed the process exits at once,
//! the access log written out first. Otherwise Pingora's deadline stands,
//! and the number cut at it is logged.

use async_trait::async_trait;
use log::{info, warn};
use pingora_core::server::{ExecutionPhase, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::TryRecvError};

/// Set once the process stops taking new work; read on every request.
#[derive(Debug, Default, Clone)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// True once an upgrade or shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How often the open connections are counted during the grace period:
/// the most the exit lags behind the last one closing.
const RECOUNT: Duration = Duration::from_millis(10);

/// How the process ends once its grace period has begun: at once when no
/// client connection is left open, else at Pingora's deadline, saying how
/// many it cut.
pub struct Exit {
    open: Box<dyn Fn() -> usize + Send + Sync>,
    before_exit: Box<dyn Fn() + Send + Sync>,
    /// The count of the last round before Pingora stopped the runtimes;
    /// `None` until the grace period is watched.
    last_open: Mutex<Option<usize>>,
}

/// How a grace period ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// No client connection was left open.
    Idle,
    /// Pingora stopped the runtimes, cutting what was still open.
    Cut,
}

/// Whether Pingora has announced that it stops the runtimes (which drops
/// every connection still open), or is gone.
fn runtimes_stopping(phases: &mut broadcast::Receiver<ExecutionPhase>) -> bool {
    loop {
        match phases.try_recv() {
            Ok(ExecutionPhase::ShutdownRuntimes | ExecutionPhase::Terminated)
            | Err(TryRecvError::Closed) => return true,
            Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
            Err(TryRecvError::Empty) => return false,
        }
    }
}

/// Counts `open` every `every` until it is 0 or the runtimes stop; each
/// count taken before they stopped goes to `last`.
fn wait_for_idle(
    open: &dyn Fn() -> usize,
    phases: &mut broadcast::Receiver<ExecutionPhase>,
    every: Duration,
    last: &Mutex<Option<usize>>,
) -> Ending {
    loop {
        let n = open();
        // Pingora announces the runtimes' stop before it drops anything:
        // while it has not, `n` was counted before anything was cut.
        if runtimes_stopping(phases) {
            return Ending::Cut;
        }
        *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(n);
        if n == 0 {
            return Ending::Idle;
        }
        std::thread::sleep(every);
    }
}

impl Exit {
    /// `open` counts the open client connections (every request, relay, or
    /// connection whose first request is awaited holds one); `before_exit`
    /// runs right before the process exits and writes out what is still
    /// buffered (the access log).
    pub fn new(
        open: impl Fn() -> usize + Send + Sync + 'static,
        before_exit: impl Fn() + Send + Sync + 'static,
    ) -> Arc<Exit> {
        Arc::new(Exit {
            open: Box::new(open),
            before_exit: Box::new(before_exit),
            last_open: Mutex::new(None),
        })
    }

    /// Watches the grace period that began at `since`, on a thread of its
    /// own; exits the process as soon as no client connection is left.
    fn watch(self: Arc<Self>, mut phases: broadcast::Receiver<ExecutionPhase>, since: Instant) {
        info!(
            "grace period: {} client connections open; exiting once they are closed",
            (self.open)()
        );
        if wait_for_idle(&*self.open, &mut phases, RECOUNT, &self.last_open) == Ending::Idle {
            info!(
                "exiting: no client connection open any more, {:.2}s into the grace period",
                since.elapsed().as_secs_f64()
            );
            (self.before_exit)();
            std::process::exit(0);
        }
    }

    /// Once Pingora's `run` has returned (its runtimes stopped, whatever
    /// was open dropped): says how many client connections the end of the
    /// grace period cut, and writes out the access log. On the main
    /// thread, which exits right after.
    pub fn after_run(&self) {
        if let Some(n) = *self.last_open.lock().unwrap_or_else(|p| p.into_inner()) {
            warn!("exiting: the grace period is over with {n} client connections open, cut");
        }
        (self.before_exit)();
    }
}

/// A Pingora background service that follows the server's execution phases:
/// flips [`Draining`] when an upgrade or shutdown begins, and hands the
/// grace period to [`Exit`]. It runs inside Pingora's runtimes, so it also
/// works after `-d` forks.
pub struct DrainWatcher {
    phases: Mutex<Option<(broadcast::Receiver<ExecutionPhase>, Arc<Exit>)>>,
    draining: Draining,
}

impl DrainWatcher {
    /// `phases` comes from `Server::watch_execution_phase()`.
    pub fn new(
        phases: broadcast::Receiver<ExecutionPhase>,
        draining: Draining,
        exit: Arc<Exit>,
    ) -> Self {
        DrainWatcher {
            phases: Mutex::new(Some((phases, exit))),
            draining,
        }
    }
}

#[async_trait]
impl BackgroundService for DrainWatcher {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some((mut phases, exit)) = self.phases.lock().expect("not poisoned").take() else {
            return;
        };
        loop {
            match phases.recv().await {
                Ok(
                    phase @ (ExecutionPhase::GracefulUpgradeTransferringFds
                    | ExecutionPhase::GracefulTerminate
                    | ExecutionPhase::ShutdownStarted),
                ) if !self.draining.is_draining() => {
                    info!("{phase:?}: closing keep-alive connections after their current response");
                    self.draining.start();
                }
                Ok(ExecutionPhase::ShutdownGracePeriod) => {
                    self.draining.start();
                    let since = Instant::now();
                    let spawned = std::thread::Builder::new()
                        .name("exit-watch".into())
                        .spawn(move || exit.watch(phases, since));
                    if let Err(e) = spawned {
                        warn!("cannot watch the grace period ({e}): it runs its full length");
                    }
                    return;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    const TICK: Duration = Duration::from_millis(1);

    #[test]
    fn ends_when_the_last_connection_closes() {
        let (tx, mut rx) = broadcast::channel(16);
        let rounds = AtomicUsize::new(0);
        let count = || 3usize.saturating_sub(rounds.fetch_add(1, Ordering::SeqCst));
        tx.send(ExecutionPhase::ShutdownGracePeriod).unwrap();
        let last = Mutex::new(None);
        assert_eq!(wait_for_idle(&count, &mut rx, TICK, &last), Ending::Idle);
        // Counted 3, 2, 1, 0: it waited for every one.
        assert_eq!(rounds.load(Ordering::SeqCst), 4);
        assert_eq!(*last.lock().unwrap(), Some(0));
    }

    #[test]
    fn nothing_open_ends_at_once() {
        let (_tx, mut rx) = broadcast::channel(16);
        let t = Instant::now();
        let last = Mutex::new(None);
        assert_eq!(wait_for_idle(&|| 0, &mut rx, RECOUNT, &last), Ending::Idle);
        assert!(t.elapsed() < RECOUNT, "{:?}", t.elapsed());
    }

    /// When Pingora stops the runtimes, the count cut is the one taken
    /// before it said so: the drops that follow its word would read as
    /// connections that finished.
    #[test]
    fn a_cut_keeps_the_count_before_the_runtimes_stopped() {
        let (tx, mut rx) = broadcast::channel(16);
        let rounds = AtomicUsize::new(0);
        let count = || match rounds.fetch_add(1, Ordering::SeqCst) {
            0 => 3,
            1 => 2,
            _ => {
                // Pingora announces the stop, then drops everything.
                tx.send(ExecutionPhase::ShutdownRuntimes).unwrap();
                0
            }
        };
        let last = Mutex::new(None);
        assert_eq!(wait_for_idle(&count, &mut rx, TICK, &last), Ending::Cut);
        assert_eq!(*last.lock().unwrap(), Some(2));
    }

    #[test]
    fn a_server_gone_is_a_cut() {
        let (tx, mut rx) = broadcast::channel::<ExecutionPhase>(16);
        drop(tx);
        let last = Mutex::new(None);
        assert_eq!(wait_for_idle(&|| 1, &mut rx, TICK, &last), Ending::Cut);
        assert_eq!(*last.lock().unwrap(), None);
    }

    /// What `after_run` writes out: the access log, once.
    #[test]
    fn after_run_runs_the_last_step() {
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let exit = Exit::new(
            || 0,
            move || {
                d.fetch_add(1, Ordering::SeqCst);
            },
        );
        exit.after_run();
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
