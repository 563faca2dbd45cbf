//! The heaviest clients, names and destinations of the last minutes, by
//! bytes and by flows, in bounded memory whatever the traffic: each is a
//! Filtered Space-Saving sketch (the `topk` crate: a fixed number of
//! monitored keys plus a fixed array of counters for the rest), one per
//! minute ("epoch"), the last [`EPOCHS`] of them merged when asked. A
//! million distinct clients cost what ten do.

use serde::Serialize;
use std::collections::VecDeque;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use topk::FilteredSpaceSaving;

/// Keys each sketch monitors (the lists show fewer).
const MONITORED: usize = 32;
/// Epochs kept: the window is the current one plus the ones before.
pub const EPOCHS: usize = 5;

/// Two sketches over one kind of key: by flows and by bytes.
#[derive(Clone)]
struct Pair<K: Eq + Hash> {
    flows: FilteredSpaceSaving<K>,
    bytes: FilteredSpaceSaving<K>,
}

impl<K: Eq + Hash + Clone> Pair<K> {
    fn new() -> Self {
        Pair {
            flows: FilteredSpaceSaving::new(MONITORED),
            bytes: FilteredSpaceSaving::new(MONITORED),
        }
    }

    fn add(&mut self, key: K, bytes: u64) {
        self.flows.insert(key.clone(), 1);
        if bytes > 0 {
            self.bytes.insert(key, bytes);
        }
    }

    fn merge(&mut self, other: &Pair<K>) {
        // Same `k` on both sides: merging cannot fail.
        let _ = self.flows.merge(&other.flows);
        let _ = self.bytes.merge(&other.bytes);
    }
}

/// One minute's sketches.
#[derive(Clone)]
struct Epoch {
    clients: Pair<IpAddr>,
    names: Pair<Arc<str>>,
    destinations: Pair<SocketAddr>,
}

impl Epoch {
    fn new() -> Epoch {
        Epoch {
            clients: Pair::new(),
            names: Pair::new(),
            destinations: Pair::new(),
        }
    }
}

/// One entry of a top list: the key, its estimated count, and how much of
/// that may be over (Space-Saving estimates from above: the true count is
/// between `count - error` and `count`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Hitter {
    /// The client IP, name or destination.
    pub key: String,
    /// Flows or bytes.
    pub count: u64,
    /// The most `count` may be over.
    pub error: u64,
}

/// The top of one kind of key, by flows and by bytes.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TopPair {
    /// The most flows first.
    pub by_flows: Vec<Hitter>,
    /// The most bytes first.
    pub by_bytes: Vec<Hitter>,
}

/// The top lists.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Top {
    /// Client IPs.
    pub clients: TopPair,
    /// Host names and SNIs.
    pub names: TopPair,
    /// Original destinations (address and port).
    pub destinations: TopPair,
}

fn list<K: Eq + Hash + Clone + ToString>(s: FilteredSpaceSaving<K>, n: usize) -> Vec<Hitter> {
    s.into_sorted_vec()
        .into_iter()
        .filter(|(_, c)| c.estimated_count() > 0)
        .take(n)
        .map(|(k, c)| Hitter {
            key: k.to_string(),
            count: c.estimated_count(),
            error: c.associated_error(),
        })
        .collect()
}

fn top_pair<K: Eq + Hash + Clone + ToString>(p: Pair<K>, n: usize) -> TopPair {
    TopPair {
        by_flows: list(p.flows, n),
        by_bytes: list(p.bytes, n),
    }
}

/// The sketches of the last [`EPOCHS`] minutes.
pub struct Hitters {
    epochs: Mutex<VecDeque<Epoch>>,
}

impl Default for Hitters {
    fn default() -> Self {
        Hitters {
            epochs: Mutex::new(VecDeque::from([Epoch::new()])),
        }
    }
}

impl std::fmt::Debug for Hitters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hitters").finish_non_exhaustive()
    }
}

impl Hitters {
    /// Counts one finished flow (or request) and its bytes.
    pub fn record(
        &self,
        client: Option<IpAddr>,
        name: Option<Arc<str>>,
        dst: Option<SocketAddr>,
        bytes: u64,
    ) {
        let mut epochs = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(e) = epochs.back_mut() else {
            return;
        };
        if let Some(c) = client {
            e.clients.add(c, bytes);
        }
        if let Some(n) = name {
            e.names.add(n, bytes);
        }
        if let Some(d) = dst {
            e.destinations.add(d, bytes);
        }
    }

    /// Starts a new epoch, forgetting the oldest beyond [`EPOCHS`].
    pub fn rotate(&self) {
        let mut epochs = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        epochs.push_back(Epoch::new());
        while epochs.len() > EPOCHS {
            epochs.pop_front();
        }
    }

    /// The first `n` of each list over the kept epochs.
    pub fn top(&self, n: usize) -> Top {
        // Merged outside the lock: the request path waits only for a copy.
        let epochs: Vec<Epoch> = {
            let e = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
            e.iter().cloned().collect()
        };
        let mut all = Epoch::new();
        for e in &epochs {
            all.clients.merge(&e.clients);
            all.names.merge(&e.names);
            all.destinations.merge(&e.destinations);
        }
        Top {
            clients: top_pair(all.clients, n),
            names: top_pair(all.names, n),
            destinations: top_pair(all.destinations, n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + i))
    }

    #[test]
    fn heavy_clients_and_names_stand_out_of_many_light_ones() {
        let h = Hitters::default();
        let heavy: Arc<str> = Arc::from("heavy.test");
        for i in 0..100_000u32 {
            let name: Arc<str> = Arc::from(format!("n{i}.test"));
            h.record(Some(ip(i + 100)), Some(name), None, 10);
            if i % 100 == 0 {
                h.record(Some(ip(1)), Some(heavy.clone()), None, 5_000);
            }
        }
        let top = h.top(10);
        assert_eq!(top.clients.by_bytes[0].key, "10.0.0.1");
        assert_eq!(top.clients.by_flows[0].key, "10.0.0.1");
        assert_eq!(top.names.by_bytes[0].key, "heavy.test");
        assert_eq!(top.clients.by_bytes[0].count, 1_000 * 5_000);
        for l in [&top.clients.by_flows, &top.names.by_bytes] {
            assert!(l.len() <= 10);
        }
        assert!(top.destinations.by_flows.is_empty());
    }

    #[test]
    fn old_epochs_fall_out_of_the_window() {
        let h = Hitters::default();
        h.record(Some(ip(1)), None, None, 100);
        for _ in 0..EPOCHS - 1 {
            h.rotate();
        }
        assert_eq!(h.top(5).clients.by_flows.len(), 1);
        h.rotate();
        h.record(Some(ip(2)), None, None, 1);
        let top = h.top(5);
        assert_eq!(top.clients.by_flows.len(), 1);
        assert_eq!(top.clients.by_flows[0].key, "10.0.0.2");
    }
}
