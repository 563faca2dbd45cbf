//! The stop and upgrade signals, listened for from before the first
//! listener opens.
//!
//! Pingora's own watcher (`UnixShutdownSignalWatch`) asks tokio for
//! SIGQUIT, SIGTERM and SIGINT only once its main loop starts, after the
//! services (and so the listening sockets) are up. tokio installs the
//! process-wide handler *before* it subscribes the new listener, and any
//! runtime may drain the signal pipe in between: a signal that lands in
//! that window is caught and then delivered to nobody. A supervisor that
//! stops tproxyd the moment its port is open (a test, a quick
//! `systemctl restart`) then finds it still running, with nothing logged.
//! Seen about once in 25 starts under load with `work_stealing: false`,
//! whose many runtimes drain the pipe sooner.
//!
//! [`EarlySignals`] subscribes all three before anything else starts and
//! hands them to Pingora as its [`ShutdownSignalWatch`]. A signal that
//! arrives while tproxyd is still starting is kept and acted on as soon
//! as the main loop runs, with the same meaning Pingora gives it.

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use std::io;
use std::sync::Mutex;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGQUIT, SIGTERM and SIGINT, subscribed early; see the module docs.
pub struct EarlySignals(Mutex<Option<[Signal; 3]>>);

impl EarlySignals {
    /// Subscribes the three signals now. From here on they no longer
    /// take their default action (ending the process): call this right
    /// before the server starts, and hand the result to `Server::run`.
    pub fn listen() -> io::Result<Self> {
        // tokio wants a runtime with a signal driver at subscription time
        // only; afterwards any runtime's driver delivers to the
        // subscription (Pingora's all have one). This one starts no
        // threads, so nothing is left behind for a daemon's fork.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let _in_rt = rt.enter();
        let signals = [
            signal(SignalKind::quit())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ];
        Ok(EarlySignals(Mutex::new(Some(signals))))
    }
}

#[async_trait]
impl ShutdownSignalWatch for EarlySignals {
    /// Pingora calls this once, from its main loop.
    async fn recv(&self) -> ShutdownSignal {
        let taken = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some([mut quit, mut term, mut int]) = taken else {
            // A second call has nothing left to wait for.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{raise, Signal as Sig};

    /// The window this module closes: a signal raised after subscribing
    /// but before anyone waits, with no runtime running at that moment,
    /// is still delivered once the wait starts on another runtime.
    #[test]
    fn a_signal_before_the_wait_is_kept() {
        let signals = EarlySignals::listen().expect("subscribe");
        raise(Sig::SIGTERM).expect("raise");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), signals.recv()).await
        });
        assert!(
            matches!(got, Ok(ShutdownSignal::GracefulTerminate)),
            "SIGTERM raised before the wait was not delivered"
        );
    }
}
