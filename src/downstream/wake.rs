//! Polling a long-lived future only when it has woken.
//!
//! A keep-alive connection waits for each request on three futures at once:
//! the socket, its idle timer and the shutdown signal. The last two live as
//! long as the connection and almost never end, yet a plain `select!` polls
//! them on every wait, and both sit on a `tokio::sync::Notify`, whose poll
//! takes a lock each time (about 500 instructions per request together, by
//! callgrind). A [`WakeGate`] gives such a future a waker of its own once:
//! afterwards it is polled again only when that waker was used, and every
//! other poll costs an atomic swap and a waker check.
//!
//! This relies on the futures contract: a future that returned `Pending`
//! wakes the waker of its last poll when it can make progress.

use futures::task::{waker_ref, ArcWake, AtomicWaker};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// The waker a gated future is polled with: it notes the wake-up and
/// passes it on to the task that polled the gate last.
#[derive(Default)]
struct Wake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl ArcWake for Wake {
    fn wake_by_ref(wake: &Arc<Self>) {
        wake.woken.store(true, Ordering::Release);
        wake.task.wake();
    }
}

/// See the module docs. One gate serves one future at a time; [`reset`]
/// it when that future is replaced.
///
/// [`reset`]: WakeGate::reset
pub struct WakeGate {
    wake: Arc<Wake>,
    /// The current future has been polled with our waker and not woken
    /// since: polling it again would only repeat its last answer.
    parked: bool,
}

impl Default for WakeGate {
    fn default() -> Self {
        WakeGate {
            wake: Arc::new(Wake::default()),
            parked: false,
        }
    }
}

impl std::fmt::Debug for WakeGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeGate")
            .field("parked", &self.parked)
            .finish()
    }
}

impl WakeGate {
    /// The next [`poll`](Self::poll) polls the future whatever happened
    /// before: for a new future.
    pub fn reset(&mut self) {
        self.parked = false;
    }

    /// Polls `fut` if it is new or has woken since it last returned
    /// `Pending`; `Pending` otherwise. Either way `cx`'s task is woken when
    /// `fut` wakes.
    pub fn poll<F: Future + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        fut: Pin<&mut F>,
    ) -> Poll<F::Output> {
        self.wake.task.register(cx.waker());
        // Taken before the poll: a wake-up during it is kept for the next.
        let woken = self.wake.woken.swap(false, Ordering::AcqRel);
        if self.parked && !woken {
            return Poll::Pending;
        }
        let waker = waker_ref(&self.wake);
        let polled = fut.poll(&mut Context::from_waker(&waker));
        self.parked = polled.is_pending();
        polled
    }
}

pin_project_lite::pin_project! {
    /// A future behind its own [`WakeGate`].
    pub struct Gated<F> {
        #[pin]
        fut: F,
        gate: WakeGate,
    }
}

impl<F: Future> Gated<F> {
    /// Gates `fut`.
    pub fn new(fut: F) -> Self {
        Gated {
            fut,
            gate: WakeGate::default(),
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.gate.poll(cx, this.fut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts its polls; ends when its channel has a value.
    struct Counted {
        polls: Arc<AtomicUsize>,
        rx: tokio::sync::oneshot::Receiver<()>,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut self.rx).poll(cx).map(|_| ())
        }
    }

    #[tokio::test]
    async fn polled_again_only_after_its_wake_and_the_task_is_woken() {
        let polls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut gated = std::pin::pin!(Gated::new(Counted {
            polls: polls.clone(),
            rx,
        }));
        // Many polls of the task (as by a select! whose other branch keeps
        // waking it): the gated future is polled once.
        for _ in 0..10 {
            let r = futures::poll!(gated.as_mut());
            assert!(r.is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Its wake-up reaches the task, and the next poll reaches it.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx.send(());
        });
        tokio::time::timeout(Duration::from_secs(2), gated)
            .await
            .expect("the gated future's wake-up was lost");
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_reset_gate_polls_a_new_future() {
        let mut gate = WakeGate::default();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let pending = std::pin::pin!(std::future::pending::<()>());
        assert!(gate.poll(&mut cx, pending).is_pending());
        let mut ready = std::future::ready(7);
        // Parked: a different future is not polled without a reset...
        assert!(gate.poll(&mut cx, Pin::new(&mut ready)).is_pending());
        gate.reset();
        assert_eq!(gate.poll(&mut cx, Pin::new(&mut ready)), Poll::Ready(7));
    }
}
