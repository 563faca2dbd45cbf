//! A keep-alive connection's idle deadline, kept across its requests.
//!
//! Waiting for the next request with a fresh timeout each time registers a
//! timer per request (Pingora's timer wheel: a lock, a tree lookup and a
//! `Notify` waiter, about 3k instructions by callgrind) although the wait
//! almost never times out. This timer is armed once and left running: when
//! it fires, the wait that is under way checks how long it has really been
//! idle and re-arms for the rest. So a busy connection registers about one
//! timer per `keepalive_timeout`, not one per request. Its sleep is polled
//! through a [`WakeGate`]: only when it has fired, not on every wait.

use super::wake::WakeGate;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// A sleep armed to end at its deadline.
type Armed = (Instant, Pin<Box<dyn Future<Output = ()> + Send>>);

/// The running timer of one connection; see the module docs.
#[derive(Default)]
pub struct IdleTimer {
    armed: Option<Armed>,
    gate: WakeGate,
}

impl std::fmt::Debug for IdleTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleTimer")
            .field("deadline", &self.armed.as_ref().map(|(d, _)| d))
            .finish()
    }
}

impl IdleTimer {
    /// Resolves once a wait that began at `since` has lasted `wait`. The
    /// running timer may fire earlier (it was armed for an earlier wait):
    /// it is then re-armed for what is left. One armed for a later deadline
    /// (a longer wait before) is re-armed at once.
    pub fn expired(&mut self, since: Instant, wait: Duration) -> Expired<'_> {
        Expired {
            timer: self,
            since,
            wait,
        }
    }
}

/// The future of [`IdleTimer::expired`].
pub struct Expired<'a> {
    timer: &'a mut IdleTimer,
    since: Instant,
    wait: Duration,
}

impl Future for Expired<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.since + self.wait;
        loop {
            let timer = &mut *self.timer;
            if timer.armed.as_ref().is_none_or(|(at, _)| *at > deadline) {
                let left = deadline.saturating_duration_since(Instant::now());
                timer.armed = Some((deadline, Box::pin(pingora_timeout::sleep(left))));
                timer.gate.reset();
            }
            let Some((_, sleep)) = &mut timer.armed else {
                unreachable!("armed just above");
            };
            if timer.gate.poll(cx, sleep.as_mut()).is_pending() {
                return Poll::Pending;
            }
            timer.armed = None;
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            // Fired for an earlier wait: arm again for the rest of this one.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_after_the_current_wait_not_the_first() {
        let mut timer = IdleTimer::default();
        // A first wait that ends (by a request) long before its deadline.
        let first = Instant::now();
        let quick = tokio::time::timeout(
            Duration::from_millis(50),
            timer.expired(first, Duration::from_millis(300)),
        )
        .await;
        assert!(quick.is_err(), "fired before its deadline");
        // The next wait starts later: the armed timer fires at first+300ms,
        // which is too early for it; it must re-arm and fire near
        // second+300ms instead.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let second = Instant::now();
        timer.expired(second, Duration::from_millis(300)).await;
        let waited = second.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "fired after {waited:?}, before the second wait's deadline"
        );
        assert!(waited < Duration::from_secs(2), "fired after {waited:?}");
    }

    #[tokio::test]
    async fn a_shorter_wait_after_a_longer_one_is_not_late() {
        let mut timer = IdleTimer::default();
        let long = tokio::time::timeout(
            Duration::from_millis(20),
            timer.expired(Instant::now(), Duration::from_secs(30)),
        )
        .await;
        assert!(long.is_err(), "a 30 s wait fired early");
        let started = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(2),
            timer.expired(started, Duration::from_millis(100)),
        )
        .await
        .expect("the 100 ms wait waited for the 30 s timer");
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_zero_wait_fires_at_once() {
        let mut timer = IdleTimer::default();
        tokio::time::timeout(
            Duration::from_secs(1),
            timer.expired(Instant::now(), Duration::ZERO),
        )
        .await
        .expect("a zero wait fires");
    }
}
