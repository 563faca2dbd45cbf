//! Connection caps: all client connections of the process, and per client
//! (an IPv4 address, or an IPv6 /64, which is what one host or one small
//! LAN segment usually holds). A refused connection is closed at once, so
//! refusing costs an accept and a close, never a spin.

use crate::flow::DownstreamLimit;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
}

/// Holds one connection's place; released on drop.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<ConnectionLimiter>,
    client: Option<u128>,
}

/// The key a client is counted under: a v4 address, or a v6 /64.
fn client_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1),
    }
}

impl ConnectionLimiter {
    /// At most `max` connections in all, `per_client` per client.
    pub fn new(max: usize, per_client: usize) -> Arc<ConnectionLimiter> {
        Arc::new(ConnectionLimiter {
            max,
            per_client,
            total: AtomicUsize::new(0),
            clients: Default::default(),
        })
    }

    fn shard(&self, key: u128) -> &Mutex<HashMap<u128, usize>> {
        let h = (key ^ (key >> 64)) as u64;
        &self.clients[(h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % SHARDS]
    }

    /// A place for a new connection from `client`, or the cap it hits.
    pub fn try_acquire(
        self: &Arc<Self>,
        client: Option<IpAddr>,
    ) -> Result<Permit, DownstreamLimit> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(DownstreamLimit::MaxConnections);
        }
        let key = client.map(client_key);
        if let Some(key) = key {
            let mut map = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(key).or_insert(0);
            if *n >= self.per_client {
                drop(map);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(DownstreamLimit::PerClient);
            }
            *n += 1;
        }
        Ok(Permit {
            limiter: self.clone(),
            client: key,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Clients with at least one open connection (bounded by `max`).
    pub fn clients(&self) -> usize {
        self.clients
            .iter()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let l = &self.limiter;
        if let Some(key) = self.client {
            let mut map = l.shard(key).lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
        l.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn per_client_and_global_caps_and_release() {
        let l = ConnectionLimiter::new(4, 2);
        let a1 = l.try_acquire(ip("192.0.2.10")).unwrap();
        let _a2 = l.try_acquire(ip("::ffff:192.0.2.10")).unwrap();
        assert_eq!(
            l.try_acquire(ip("192.0.2.10")).unwrap_err(),
            DownstreamLimit::PerClient
        );
        // The same /64 is one client; another /64 is another.
        let _b1 = l.try_acquire(ip("2001:db8:1::10")).unwrap();
        let _b2 = l.try_acquire(ip("2001:db8:1::ffff")).unwrap();
        assert_eq!(
            l.try_acquire(ip("2001:db8:2::10")).unwrap_err(),
            DownstreamLimit::MaxConnections
        );
        drop(a1);
        assert_eq!(l.open(), 3);
        let _a3 = l.try_acquire(ip("192.0.2.10")).unwrap();
        assert_eq!(
            l.try_acquire(ip("2001:db8:1::1")).unwrap_err(),
            DownstreamLimit::MaxConnections
        );
        assert_eq!(l.clients(), 2);
    }

    #[test]
    fn released_clients_leave_no_entry() {
        let l = ConnectionLimiter::new(100, 100);
        let permits: Vec<_> = (0..50)
            .map(|i| l.try_acquire(ip(&format!("192.0.2.{i}"))).unwrap())
            .collect();
        assert_eq!(l.clients(), 50);
        drop(permits);
        assert_eq!((l.open(), l.clients()), (0, 0));
    }
}
