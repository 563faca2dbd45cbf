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
//!
//! [`Idle`] is what a connection's waits share besides: the timer, its
//! place (registered as reclaimable while it waits under pressure) and its
//! watch for pressure coming on.

use super::pressure::PressureWatch;
use super::reclaim::{Place, Waiting};
use super::wake::WakeGate;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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

/// What the waits of one connection share; see the module docs.
#[derive(Debug, Default)]
pub struct Idle {
    /// The running idle timer.
    pub(super) timer: IdleTimer,
    place: Option<Arc<Place>>,
    /// Ends when pressure comes on.
    pub(super) watch: PressureWatch,
}

impl Idle {
    /// For a connection that holds `place` (none: never under pressure).
    pub fn new(place: Option<Arc<Place>>) -> Self {
        let rx = place.as_ref().map(|p| p.limiter.pressure().subscribe());
        Idle {
            timer: IdleTimer::default(),
            place,
            watch: PressureWatch::new(rx),
        }
    }

    /// Whether the process is under pressure now.
    pub fn pressure(&self) -> bool {
        self.place
            .as_ref()
            .is_some_and(|p| p.limiter.pressure().is_on())
    }

    /// Registers a wait for a request that began at `since` as
    /// reclaimable, until the [`Waiting`] is dropped.
    pub fn enter(&self, since: Instant) -> Option<Waiting> {
        self.place.as_ref()?.enter(since)
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

    /// How a connection with `idle` waits for a head that never comes,
    /// with `keepalive` (and `pressured` under pressure) in ms; how long.
    async fn wait_head(
        idle: &mut Idle,
        keepalive: u64,
        pressured: u64,
    ) -> (super::super::head::Head, Duration) {
        use super::super::{head::read_head, Downstream};
        let limits = Downstream {
            keepalive_timeout: Duration::from_millis(keepalive),
            pressure_keepalive_timeout: Duration::from_millis(pressured),
            ..Downstream::default()
        };
        // A socket: only a socket says when it is readable.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let server = listener.accept().await.unwrap().0;
        let l4 = pingora_core::protocols::l4::stream::Stream::from(server);
        let mut stream: pingora_core::protocols::Stream = Box::new(l4);
        let never = std::pin::pin!(std::future::pending::<()>());
        let start = Instant::now();
        let head = read_head(&mut stream, None, None, &limits, never, idle).await;
        (head, start.elapsed())
    }

    fn client(s: &str) -> Option<std::net::IpAddr> {
        Some(s.parse().unwrap())
    }

    #[tokio::test]
    async fn pressure_shortens_a_wait_already_running() {
        use super::super::connections::ConnectionLimiter;
        let limiter = ConnectionLimiter::new(4, 10, 2);
        let (permit, _) = limiter.try_acquire(client("192.0.2.10")).unwrap();
        let mut idle = Idle::new(Some(permit.place()));
        let more = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            limiter.try_acquire(client("192.0.2.11")).unwrap()
        };
        let ((head, took), _second) = tokio::join!(wait_head(&mut idle, 10_000, 300), more);
        assert!(matches!(head, super::super::head::Head::Idle), "{head:?}");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(5),
            "a 10 s wait ended after {took:?}, 300 ms under pressure"
        );
    }

    #[tokio::test]
    async fn a_wait_under_pressure_is_reclaimed_for_a_newcomer() {
        use super::super::connections::{Admission, ConnectionLimiter};
        let limiter = ConnectionLimiter::new(2, 10, 2);
        let (permit, _) = limiter.try_acquire(client("192.0.2.10")).unwrap();
        let _other = limiter.try_acquire(client("192.0.2.11")).unwrap();
        let mut idle = Idle::new(Some(permit.place()));
        let newcomer = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            limiter.try_acquire(client("192.0.2.12")).unwrap()
        };
        let ((head, took), (_p, how)) =
            tokio::join!(wait_head(&mut idle, 10_000, 10_000), newcomer);
        assert_eq!(how, Admission::Reclaimed);
        assert!(matches!(head, super::super::head::Head::Closed), "{head:?}");
        assert!(took < Duration::from_secs(5), "closed after {took:?}");
        drop(permit);
        assert_eq!(limiter.open(), 2, "the handed-over permit freed a place");
    }
}
