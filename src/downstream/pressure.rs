//! Pressure: the process near its connection cap.
//!
//! From `downstream.pressure_watermark` of `max_connections` open, the
//! process is under pressure: a wait for a request, or for the rest of a
//! head, gets the shorter pressure timeout, and a client holding more than
//! its fair share gets no new place. Pressure ends once fewer connections
//! than a low mark are open: the watermark less 5% of the cap, so that a
//! count hovering at the watermark does not switch it on and off with
//! every connection (each switch on wakes every waiting connection).
//!
//! Connections learn of it in two ways: each wait reads the flag as it
//! begins (an atomic load), and a wait that began without pressure also
//! waits for it to come on ([`PressureWatch`]): a `watch` that wakes the
//! waiting connections once per switch, never per request.

use super::wake::Gated;
use crate::metrics;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Above the watermark a client's fair share is at least this many
/// connections, however many clients there are.
pub const FAIR_SHARE_FLOOR: usize = 8;

/// The process's pressure flag; see the module docs.
#[derive(Debug)]
pub struct Pressure {
    /// On from this many open connections...
    high: usize,
    /// ...and off again below this many.
    low: usize,
    on: AtomicBool,
    tx: watch::Sender<bool>,
    /// When a switch was last logged (Unix seconds): at most one line per
    /// [`LOG_EVERY`] seconds, the gauge says the rest.
    logged: AtomicU64,
}

/// Seconds between two log lines about switching.
const LOG_EVERY: u64 = 10;

impl Pressure {
    /// Pressure from `high` of `max` open connections.
    pub fn new(max: usize, high: usize) -> Pressure {
        let margin = (max / 20).max(1);
        Pressure {
            high,
            low: high.saturating_sub(margin).max(1),
            on: AtomicBool::new(false),
            tx: watch::channel(false).0,
            logged: AtomicU64::new(0),
        }
    }

    /// Whether the process is under pressure now.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// A client holding `held` of `open` connections among `clients` holds
    /// more than its fair share: under pressure it gets no new place. (A
    /// client at its share may take one more, so that clients holding the
    /// same number can all still grow.)
    pub fn over_fair_share(&self, held: usize, open: usize, clients: usize) -> bool {
        self.is_on() && held > (open / clients.max(1)).max(FAIR_SHARE_FLOOR)
    }

    /// After the number of open connections changed to `open`: switches if
    /// it crossed a mark (`current` reads the number again, under the
    /// switch's lock, so that racing updates settle on the right state).
    pub fn update(&self, open: usize, current: impl Fn() -> usize) {
        let on = self.is_on();
        if on == self.wanted(on, open) {
            return;
        }
        self.tx.send_if_modified(|value| {
            let want = self.wanted(*value, current());
            if want == *value {
                return false;
            }
            *value = want;
            // Set under the watch's lock: a wait that reads the flag off
            // and then waits on the watch finds the watch off too.
            self.on.store(want, Ordering::Release);
            metrics::downstream_pressure(want);
            self.log(want, current());
            true
        });
    }

    fn wanted(&self, on: bool, open: usize) -> bool {
        match on {
            true => open >= self.low,
            false => open >= self.high,
        }
    }

    fn log(&self, on: bool, open: usize) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.logged.load(Ordering::Relaxed);
        if now < last + LOG_EVERY && last != 0 {
            return;
        }
        self.logged.store(now, Ordering::Relaxed);
        if on {
            log::warn!(
                "downstream pressure: {open} client connections open (watermark {}): \
                 shorter keep-alive and header timeouts, fair shares per client, \
                 idle connections reclaimed at the cap",
                self.high
            );
        } else {
            log::info!("downstream pressure over: {open} client connections open");
        }
    }

    /// A receiver of the switches, for [`PressureWatch`].
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}

/// The wait for pressure to come on, made once and kept.
type Coming = Gated<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// One connection's wait for pressure to come on. Made when a wait first
/// needs it and kept across waits until pressure comes on: one watch
/// waiter per connection and switch, polled only when woken.
#[derive(Default)]
pub struct PressureWatch {
    rx: Option<watch::Receiver<bool>>,
    coming: Option<Coming>,
}

impl std::fmt::Debug for PressureWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PressureWatch")
            .field("waiting", &self.coming.is_some())
            .finish()
    }
}

impl PressureWatch {
    /// Watches `rx`; with `None`, pressure never comes.
    pub fn new(rx: Option<watch::Receiver<bool>>) -> Self {
        PressureWatch { rx, coming: None }
    }

    /// Ends once pressure is on (at once if it already is); see the
    /// [`Future`] impl, which a select can poll in place.
    pub async fn comes_on(&mut self) {
        self.await
    }
}

/// Ends once pressure is on (at once if it already is); never without a
/// limiter. May be awaited again and again, through `&mut`: a wait cut
/// short is taken up by the next one, and one that ended starts afresh.
impl Future for PressureWatch {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(rx) = &this.rx else {
            return Poll::Pending;
        };
        let coming = this.coming.get_or_insert_with(|| {
            let mut rx = rx.clone();
            Gated::new(Box::pin(async move {
                if rx.wait_for(|on| *on).await.is_err() {
                    // No sender: pressure never comes.
                    std::future::pending::<()>().await;
                }
            }))
        });
        ready!(Pin::new(coming).poll(cx));
        this.coming = None;
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn switches_at_the_watermark_and_off_below_the_low_mark() {
        let p = Pressure::new(200, 160);
        let open = AtomicUsize::new(0);
        let set = |n: usize| {
            open.store(n, Ordering::SeqCst);
            p.update(n, || open.load(Ordering::SeqCst));
            p.is_on()
        };
        assert!(!set(159));
        assert!(set(160));
        // Hysteresis: 5% of the cap below the watermark.
        assert!(set(151));
        assert!(set(150));
        assert!(!set(149));
        assert!(!set(159));
        // A tiny cap still switches off when empty.
        let tiny = Pressure::new(1, 1);
        tiny.update(1, || 1);
        assert!(tiny.is_on());
        tiny.update(0, || 0);
        assert!(!tiny.is_on());
    }

    #[test]
    fn fair_shares_have_a_floor_and_apply_only_under_pressure() {
        let p = Pressure::new(200, 160);
        assert!(!p.over_fair_share(100, 100, 1));
        p.update(170, || 170);
        // 170 connections among 8 clients: 21 each.
        assert!(p.over_fair_share(22, 170, 8));
        assert!(!p.over_fair_share(21, 170, 8));
        // Among many clients the floor applies.
        assert!(!p.over_fair_share(8, 170, 100));
        assert!(p.over_fair_share(9, 170, 100));
    }

    #[tokio::test]
    async fn a_waiting_connection_learns_once_pressure_comes_on() {
        let p = Arc::new(Pressure::new(10, 8));
        let mut watch = PressureWatch::new(Some(p.subscribe()));
        let early = tokio::time::timeout(Duration::from_millis(20), watch.comes_on()).await;
        assert!(early.is_err(), "pressure came without a switch");
        let p2 = p.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            p2.update(9, || 9);
        });
        tokio::time::timeout(Duration::from_secs(2), watch.comes_on())
            .await
            .expect("the switch woke the wait");
        // Already on: the next wait ends at once.
        tokio::time::timeout(Duration::from_millis(100), watch.comes_on())
            .await
            .expect("pressure is on");
        // Without a limiter it never comes.
        let mut none = PressureWatch::default();
        let never = tokio::time::timeout(Duration::from_millis(20), none.comes_on()).await;
        assert!(never.is_err());
    }
}
