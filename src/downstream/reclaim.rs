//! Reclaiming idle connections at the cap, as nginx does when it runs out
//! of connections: a new connection gets the place of an idle one instead
//! of a reset.
//!
//! A connection is idle, and may be reclaimed, only while it waits for the
//! first byte of its next request: never while a head arrives, a request
//! is in Pingora, a response is written, or it carries a tunnel, a CONNECT
//! or a passthrough relay. A brand-new connection that has sent nothing
//! yet is idle too (nginx puts it on the same reusable queue): silent
//! connections opened to fill the cap are reclaimed like idle keep-alive
//! ones, the heaviest client's first, and a light client's fresh
//! connection is the last candidate.
//!
//! Only under pressure ([`super::pressure`]) do idle connections register
//! here, so below the watermark this costs nothing. The newcomer takes
//! the idle connection of the client holding the most connections, its
//! longest-idle one first: O(log n), without a scan. Its place is handed
//! over at once (the total stays, the per-client counts move), and the
//! idle connection, woken, closes quietly.

use super::connections::ConnectionLimiter;
use futures::task::AtomicWaker;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::time::Instant;

/// A registered wait: when it began, and a number that tells apart waits
/// that began at once.
type IdleKey = (Instant, u64);

tokio::task_local! {
    /// The place of the connection a task serves, set by the gate.
    static PLACE: Arc<Place>;
}

/// One connection's place among the open ones: held by the gate through
/// its permit, and by the connection, which registers its idle waits.
#[derive(Debug)]
pub struct Place {
    pub(super) limiter: Arc<ConnectionLimiter>,
    /// The key the client is counted under (none: not an IP peer).
    pub(super) client: Option<u128>,
    /// Its registered wait, while it waits under pressure.
    waiting: Mutex<Option<IdleKey>>,
    /// Handed over to a newcomer: the connection closes, and its permit
    /// frees nothing.
    pub(super) handed_over: AtomicBool,
    waker: AtomicWaker,
}

impl Place {
    pub(super) fn new(limiter: Arc<ConnectionLimiter>, client: Option<u128>) -> Place {
        Place {
            limiter,
            client,
            waiting: Mutex::new(None),
            handed_over: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// The place of the connection this task serves, if the gate set one:
    /// known during the first poll of the connection's task, where the
    /// connection is made (see [`Place::first_poll`]).
    pub fn current() -> Option<Arc<Place>> {
        PLACE.try_with(Arc::clone).ok()
    }

    /// Polls `fut`, the first time, with `place` as its
    /// [`Place::current`]: the connection is made then. The gate polls
    /// later on without it: a task-local scope around every poll cost
    /// each request a few hundred instructions (callgrind).
    pub fn first_poll<F: Future + ?Sized>(
        place: Arc<Place>,
        fut: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        PLACE.sync_scope(place, || fut.poll(cx))
    }

    /// Registers a wait that began at `since` as reclaimable; it stays so
    /// until the [`Waiting`] is dropped. `None` without a client key.
    pub fn enter(self: &Arc<Self>, since: Instant) -> Option<Waiting> {
        let client = self.client?;
        self.limiter.enter_idle(self, client, since);
        Some(Waiting {
            place: self.clone(),
            left: false,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A wait registered as reclaimable; unregistered when dropped.
#[derive(Debug)]
pub struct Waiting {
    place: Arc<Place>,
    left: bool,
}

impl Waiting {
    /// Ends the wait: whether it was reclaimed (the connection must close).
    pub fn leave(mut self) -> bool {
        self.left = true;
        self.place.limiter.idle.leave(&self.place)
    }

    /// Ends once the connection was reclaimed.
    pub async fn reclaimed(&self) {
        let place = &self.place;
        poll_fn(|cx| {
            place.waker.register(cx.waker());
            match place.handed_over.load(Ordering::Acquire) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
        .await
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.left {
            self.place.limiter.idle.leave(&self.place);
        }
    }
}

/// The idle connections registered under pressure; see the module docs.
#[derive(Debug, Default)]
pub(super) struct Registry {
    state: Mutex<State>,
    /// Clients in `state`: while 0, counting a connection does not lock.
    clients: AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    clients: HashMap<u128, Client>,
    /// (open connections, client) of every client in `clients`.
    heaviest: BTreeSet<(usize, u128)>,
}

/// A client with idle connections.
#[derive(Debug)]
struct Client {
    /// All its open connections (the limiter's count, mirrored).
    open: usize,
    /// Its idle ones, longest idle first.
    idle: BTreeMap<IdleKey, Arc<Place>>,
}

impl Registry {
    /// Registers `place` of `client`, who holds `open` connections, idle
    /// since `since`. The caller holds `client`'s count lock, so `open`
    /// stays what the limiter counts (see [`Registry::recount`]).
    pub(super) fn enter(&self, place: &Arc<Place>, client: u128, open: usize, since: Instant) {
        let mut s = lock(&self.state);
        let mut waiting = lock(&place.waiting);
        if waiting.is_some() || place.handed_over.load(Ordering::Acquire) {
            return;
        }
        s.next += 1;
        let key = (since, s.next);
        let State {
            clients, heaviest, ..
        } = &mut *s;
        let c = clients.entry(client).or_insert_with(|| {
            heaviest.insert((open, client));
            self.clients.fetch_add(1, Ordering::AcqRel);
            Client {
                open,
                idle: BTreeMap::new(),
            }
        });
        c.idle.insert(key, place.clone());
        *waiting = Some(key);
    }

    /// Unregisters `place`'s wait if it is registered; whether the place
    /// was handed over (then the connection must close).
    pub(super) fn leave(&self, place: &Place) -> bool {
        // Nothing registered (always so below the watermark): no lock.
        // `take` marks a place handed over before it unregisters it.
        if self.clients.load(Ordering::Acquire) == 0 {
            return place.handed_over.load(Ordering::Acquire);
        }
        let mut s = lock(&self.state);
        let key = lock(&place.waiting).take();
        if let (Some(key), Some(client)) = (key, place.client) {
            s.remove(client, key, &self.clients);
        }
        place.handed_over.load(Ordering::Acquire)
    }

    /// `client` now holds `open` connections. The caller holds its count
    /// lock: every change of a registered client's count goes through here.
    pub(super) fn recount(&self, client: u128, open: usize) {
        if self.clients.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut s = lock(&self.state);
        let State {
            clients, heaviest, ..
        } = &mut *s;
        if let Some(c) = clients.get_mut(&client) {
            heaviest.remove(&(c.open, client));
            heaviest.insert((open, client));
            c.open = open;
        }
    }

    /// Takes the longest-idle connection of the client that holds the
    /// most, and marks it handed over; the caller moves its count and
    /// wakes it ([`Registry::wake`]).
    pub(super) fn take(&self) -> Option<Arc<Place>> {
        if self.clients.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut s = lock(&self.state);
        let &(_, client) = s.heaviest.last()?;
        let (key, place) = s.clients.get(&client)?.idle.first_key_value()?;
        let (key, place) = (*key, place.clone());
        place.handed_over.store(true, Ordering::Release);
        *lock(&place.waiting) = None;
        s.remove(client, key, &self.clients);
        Some(place)
    }

    /// Wakes a connection taken by [`Registry::take`], to close.
    pub(super) fn wake(place: &Place) {
        place.waker.wake();
    }

    /// Registered idle connections (for tests and figures).
    pub(super) fn len(&self) -> usize {
        lock(&self.state)
            .clients
            .values()
            .map(|c| c.idle.len())
            .sum()
    }
}

impl State {
    fn remove(&mut self, client: u128, key: IdleKey, count: &AtomicUsize) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        c.idle.remove(&key);
        if c.idle.is_empty() {
            self.heaviest.remove(&(c.open, client));
            self.clients.remove(&client);
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
