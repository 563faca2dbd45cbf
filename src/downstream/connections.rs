//! Connection caps: all client connections of the process, and per client
//! (an IPv4 address, or an IPv6 /64, which is what one host or one small
//! LAN segment usually holds). A refused connection is closed at once, so
//! refusing costs an accept and a close, never a spin.
//!
//! At the cap a new connection first takes the place of an idle one
//! ([`super::reclaim`]); only when none is idle is it refused. Above the
//! watermark ([`super::pressure`]) a client holding more than its fair share
//! gets no new place.

use super::pressure::Pressure;
use super::reclaim::{Place, Registry};
use crate::flow::DownstreamLimit;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(test)]
use std::time::Duration;
use tokio::time::Instant;

/// Per-client counts are spread over this many locks, so that accepts on
/// different threads rarely wait for each other.
const SHARDS: usize = 16;

/// Counts open client connections and refuses those over a cap.
#[derive(Debug)]
pub struct ConnectionLimiter {
    max: usize,
    per_client: usize,
    total: AtomicUsize,
    clients: [Mutex<HashMap<u128, usize>>; SHARDS],
    /// Clients with at least one open connection.
    active: AtomicUsize,
    pressure: Pressure,
    pub(super) idle: Registry,
}

/// Holds one connection's place; released on drop (unless it was handed
/// over to a newcomer).
#[derive(Debug)]
pub struct Permit {
    place: Arc<Place>,
}

/// How a connection got its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// There was room.
    Free,
    /// It took the place of an idle connection, which closes.
    Reclaimed,
}

/// The key a client is counted under: a v4 address, or a v6 /64.
fn client_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1),
    }
}

impl ConnectionLimiter {
    /// At most `max` connections in all, `per_client` per client; under
    /// pressure from `watermark` open connections.
    pub fn new(max: usize, per_client: usize, watermark: usize) -> Arc<ConnectionLimiter> {
        Arc::new(ConnectionLimiter {
            max,
            per_client,
            total: AtomicUsize::new(0),
            clients: Default::default(),
            active: AtomicUsize::new(0),
            pressure: Pressure::new(max, watermark),
            idle: Registry::default(),
        })
    }

    fn shard(&self, key: u128) -> MutexGuard<'_, HashMap<u128, usize>> {
        let h = (key ^ (key >> 64)) as u64;
        let i = (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % SHARDS;
        self.clients[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new connection from `client`, or the cap it hits.
    pub fn try_acquire(
        self: &Arc<Self>,
        client: Option<IpAddr>,
    ) -> Result<(Permit, Admission), DownstreamLimit> {
        let key = client.map(client_key);
        let open = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        let full = open > self.max;
        if full {
            self.total.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(key) = key {
            if let Err(limit) = self.admit(key) {
                if !full {
                    self.release_total();
                }
                return Err(limit);
            }
        }
        let admission = if full {
            // The newcomer takes the idle connection's place: the total
            // stays, the idle connection's client counts one less.
            let Some(idle) = self.idle.take() else {
                if let Some(key) = key {
                    self.release_client(key);
                }
                return Err(DownstreamLimit::MaxConnections);
            };
            if let Some(held) = idle.client {
                self.release_client(held);
            }
            Registry::wake(&idle);
            Admission::Reclaimed
        } else {
            self.pressure.update(open, || self.open());
            Admission::Free
        };
        let place = Arc::new(Place::new(self.clone(), key));
        Ok((Permit { place }, admission))
    }

    /// Counts a new connection of `key`, within its caps.
    fn admit(&self, key: u128) -> Result<(), DownstreamLimit> {
        let mut map = self.shard(key);
        let held = map.get(&key).copied().unwrap_or(0);
        if held >= self.per_client
            || self
                .pressure
                .over_fair_share(held, self.open(), self.active.load(Ordering::Acquire))
        {
            return Err(DownstreamLimit::PerClient);
        }
        if held == 0 {
            self.active.fetch_add(1, Ordering::AcqRel);
        }
        map.insert(key, held + 1);
        self.idle.recount(key, held + 1);
        Ok(())
    }

    /// Counts one connection of `key` less.
    fn release_client(&self, key: u128) {
        let mut map = self.shard(key);
        let Some(n) = map.get_mut(&key) else {
            return;
        };
        *n -= 1;
        let left = *n;
        if left == 0 {
            map.remove(&key);
            self.active.fetch_sub(1, Ordering::AcqRel);
        }
        self.idle.recount(key, left);
    }

    fn release_total(&self) {
        let open = self.total.fetch_sub(1, Ordering::AcqRel) - 1;
        self.pressure.update(open, || self.open());
    }

    /// Registers `place`, a connection of `client` idle since `since`, as
    /// reclaimable (see [`Place::enter`]).
    pub(super) fn enter_idle(&self, place: &Arc<Place>, client: u128, since: Instant) {
        let map = self.shard(client);
        let open = map.get(&client).copied().unwrap_or(0);
        if open > 0 {
            self.idle.enter(place, client, open, since);
        }
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Clients with at least one open connection (bounded by `max`).
    pub fn clients(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Idle connections registered as reclaimable now.
    pub fn reclaimable(&self) -> usize {
        self.idle.len()
    }

    /// Whether the process is above the watermark.
    pub fn pressure(&self) -> &Pressure {
        &self.pressure
    }
}

impl Permit {
    /// The place it holds, for the connection it admitted.
    pub fn place(&self) -> Arc<Place> {
        self.place.clone()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let place = &self.place;
        let l = &place.limiter;
        // A wait still registered leaves first; a place taken meanwhile
        // was handed over with its count.
        if l.idle.leave(place) {
            return;
        }
        if let Some(key) = place.client {
            l.release_client(key);
        }
        l.release_total();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// A place for `client`, however it came.
    fn take(l: &Arc<ConnectionLimiter>, client: &str) -> Permit {
        l.try_acquire(ip(client)).unwrap().0
    }

    #[test]
    fn per_client_and_global_caps_and_release() {
        let l = ConnectionLimiter::new(4, 2, 4);
        let a1 = take(&l, "192.0.2.10");
        let _a2 = take(&l, "::ffff:192.0.2.10");
        assert_eq!(
            l.try_acquire(ip("192.0.2.10")).unwrap_err(),
            DownstreamLimit::PerClient
        );
        // The same /64 is one client; another /64 is another.
        let _b1 = take(&l, "2001:db8:1::10");
        let _b2 = take(&l, "2001:db8:1::ffff");
        // At the cap with nothing idle: refused.
        assert_eq!(
            l.try_acquire(ip("2001:db8:2::10")).unwrap_err(),
            DownstreamLimit::MaxConnections
        );
        drop(a1);
        assert_eq!(l.open(), 3);
        let _a3 = take(&l, "192.0.2.10");
        assert_eq!(
            l.try_acquire(ip("2001:db8:3::1")).unwrap_err(),
            DownstreamLimit::MaxConnections
        );
        // At the cap, a client at its own cap is told so.
        assert_eq!(
            l.try_acquire(ip("2001:db8:1::1")).unwrap_err(),
            DownstreamLimit::PerClient
        );
        assert_eq!(l.clients(), 2);
    }

    #[test]
    fn released_clients_leave_no_entry() {
        let l = ConnectionLimiter::new(100, 100, 80);
        let permits: Vec<_> = (0..50).map(|i| take(&l, &format!("192.0.2.{i}"))).collect();
        assert_eq!(l.clients(), 50);
        drop(permits);
        assert_eq!((l.open(), l.clients()), (0, 0));
        assert!(l.shard(client_key("192.0.2.1".parse().unwrap())).is_empty());
    }

    #[test]
    fn at_the_cap_the_heaviest_clients_longest_idle_connection_is_taken() {
        let l = ConnectionLimiter::new(5, 10, 5);
        let t0 = Instant::now();
        let heavy: Vec<Permit> = (0..3).map(|_| take(&l, "192.0.2.10")).collect();
        let light: Vec<Permit> = (0..2).map(|_| take(&l, "192.0.2.11")).collect();
        // Idle: the light client's longest, and two of the heavy one's,
        // the second idle longer than the first.
        let places: Vec<Arc<Place>> = heavy.iter().chain(&light).map(Permit::place).collect();
        let waits = [
            places[3].enter(t0),
            places[0].enter(t0 + Duration::from_secs(2)),
            places[1].enter(t0 + Duration::from_secs(1)),
        ];
        assert_eq!(l.reclaimable(), 3);
        let (newcomer, how) = l.try_acquire(ip("192.0.2.12")).unwrap();
        assert_eq!(how, Admission::Reclaimed);
        assert!(places[1].handed_over.load(Ordering::SeqCst));
        assert!(!places[0].handed_over.load(Ordering::SeqCst));
        assert_eq!((l.open(), l.clients(), l.reclaimable()), (5, 3, 2));
        // The heavy client now holds 2, as many as the light one: the
        // tie goes to the higher key, the light client's.
        let (_second, how) = l.try_acquire(ip("192.0.2.12")).unwrap();
        assert_eq!(how, Admission::Reclaimed);
        assert!(places[3].handed_over.load(Ordering::SeqCst));
        // Handed-over permits free nothing; the rest free their place.
        let [w3, w0, w1] = waits;
        assert!(w1.unwrap().leave() && w3.unwrap().leave());
        drop((heavy, light));
        assert_eq!((l.open(), l.reclaimable()), (2, 0));
        drop(w0);
        drop(newcomer);
        assert_eq!((l.open(), l.clients()), (1, 1));
    }

    #[test]
    fn above_the_watermark_a_client_gets_no_more_than_its_share() {
        let l = ConnectionLimiter::new(40, 40, 20);
        let greedy: Vec<Permit> = (0..19).map(|_| take(&l, "192.0.2.10")).collect();
        let _other = take(&l, "192.0.2.11");
        assert!(l.pressure().is_on());
        // 20 open among 2 clients: a share of 10, and the greedy one has 19.
        assert_eq!(
            l.try_acquire(ip("192.0.2.10")).unwrap_err(),
            DownstreamLimit::PerClient
        );
        let _light = take(&l, "192.0.2.11");
        drop(greedy);
        assert!(!l.pressure().is_on());
        let _again = take(&l, "192.0.2.10");
    }

    #[tokio::test]
    async fn a_reclaimed_wait_is_woken_and_a_dropped_permit_unregisters() {
        let l = ConnectionLimiter::new(2, 10, 2);
        let idle = take(&l, "192.0.2.10");
        let busy = take(&l, "192.0.2.10");
        let waiting = idle.place().enter(Instant::now()).unwrap();
        // Dropped while registered: it leaves, and frees its place.
        drop(busy.place().enter(Instant::now()));
        drop(busy);
        assert_eq!((l.open(), l.reclaimable()), (1, 1));
        let _filler = take(&l, "192.0.2.11");
        let woken = tokio::spawn(async move {
            waiting.reclaimed().await;
            waiting.leave()
        });
        tokio::task::yield_now().await;
        let (_newcomer, how) = l.try_acquire(ip("192.0.2.12")).unwrap();
        assert_eq!(how, Admission::Reclaimed);
        assert!(woken.await.unwrap(), "the wait learned it was reclaimed");
        drop(idle);
        assert_eq!((l.open(), l.clients()), (2, 2));
    }
}
