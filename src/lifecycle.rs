//! Knowing when this process is on its way out.
//!
//! On SIGQUIT (graceful upgrade) Pingora hands the listening sockets to the
//! new process but keeps serving for a few seconds, then drops idle
//! keep-alive connections. A client that sends its next request on such a
//! connection at that moment sees it closed. So from the moment the upgrade
//! (or a SIGTERM) starts, we answer with `Connection: close`: clients finish
//! their current request and reconnect — to the new process.

use async_trait::async_trait;
use log::info;
use pingora_core::server::{ExecutionPhase, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

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

/// A Pingora background service that follows the server's execution phases
/// and flips [`Draining`]. It runs inside Pingora's runtimes, so it also
/// works after `-d` forks.
pub struct DrainWatcher {
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    draining: Draining,
}

impl DrainWatcher {
    /// `phases` comes from `Server::watch_execution_phase()`.
    pub fn new(phases: broadcast::Receiver<ExecutionPhase>, draining: Draining) -> Self {
        DrainWatcher {
            phases: Mutex::new(Some(phases)),
            draining,
        }
    }
}

#[async_trait]
impl BackgroundService for DrainWatcher {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().expect("not poisoned").take() else {
            return;
        };
        loop {
            match phases.recv().await {
                Ok(
                    phase @ (ExecutionPhase::GracefulUpgradeTransferringFds
                    | ExecutionPhase::GracefulTerminate
                    | ExecutionPhase::ShutdownStarted),
                ) => {
                    info!("{phase:?}: closing keep-alive connections after their current response");
                    self.draining.start();
                    return;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
