//! The heaviest clients, names and destinations of the last minutes, by
//! bytes and by flows, in bounded memory whatever the traffic: each is a
//! Filtered Space-Saving sketch (the `topk` crate: a fixed number of
//! monitored keys plus a fixed array of counters for the rest), one per
//! minute ("epoch"), the last [`EPOCHS`] of them merged when asked. A
//! million distinct clients cost what ten do. Flows come in [`Batch`]es:
//! a keep-alive connection's requests to one name within one second are
//! counted together (see [`super::LiveFlow::count`]).

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

    fn add(&mut self, key: K, flows: u64, bytes: u64) {
        self.flows.insert(key.clone(), flows);
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

/// Finished flows of one client, to one name and destination, counted
/// together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The client's IP.
    pub client: Option<IpAddr>,
    /// The name they asked for.
    pub name: Option<Arc<str>>,
    /// Where they went.
    pub dst: Option<SocketAddr>,
    /// How many.
    pub flows: u64,
    /// Their bytes, both ways.
    pub bytes: u64,
}

/// A connection's batch being filled (its client is the connection's),
/// and the second (of the live state's clock) it began in.
#[derive(Debug, Default)]
pub struct Pending {
    name: Option<Arc<str>>,
    dst: Option<SocketAddr>,
    flows: u32,
    second: u32,
    bytes: u64,
}

impl Pending {
    /// Adds one finished flow of `client` to `name` and `dst` with its
    /// `bytes`, in `second`. Returns the batch so far when the flow cannot
    /// join it (another name or destination, another second): record it.
    pub fn add(
        &mut self,
        client: Option<IpAddr>,
        name: Option<&Arc<str>>,
        dst: Option<SocketAddr>,
        bytes: u64,
        second: u64,
    ) -> Option<Batch> {
        let second = second as u32;
        let same_name = match (&self.name, name) {
            (Some(a), Some(n)) => Arc::ptr_eq(a, n) || a == n,
            (a, n) => a.is_none() && n.is_none(),
        };
        let full = self.flows == u32::MAX;
        let joins = self.flows > 0 && self.second == second && same_name && self.dst == dst;
        let done = (!joins || full).then(|| self.batch(client)).flatten();
        if self.flows == 0 {
            self.name = name.cloned();
            self.dst = dst;
            self.second = second;
        }
        self.flows += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        done
    }

    /// The batch of `client`, if there is one begun before `second` (any,
    /// with `None`).
    pub fn take(&mut self, client: Option<IpAddr>, before: Option<u64>) -> Option<Batch> {
        match before {
            Some(s) if u64::from(self.second) >= s => None,
            _ => self.batch(client),
        }
    }

    /// The batch so far, emptied, if it holds anything.
    fn batch(&mut self, client: Option<IpAddr>) -> Option<Batch> {
        if self.flows == 0 {
            return None;
        }
        let p = std::mem::take(self);
        Some(Batch {
            client,
            name: p.name,
            dst: p.dst,
            flows: u64::from(p.flows),
            bytes: p.bytes,
        })
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
    /// Counts a batch of finished flows (or requests) and their bytes.
    pub fn record(&self, b: Batch) {
        if b.flows == 0 {
            return;
        }
        let mut epochs = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(e) = epochs.back_mut() else {
            return;
        };
        if let Some(c) = b.client {
            e.clients.add(c, b.flows, b.bytes);
        }
        if let Some(n) = b.name {
            e.names.add(n, b.flows, b.bytes);
        }
        if let Some(d) = b.dst {
            e.destinations.add(d, b.flows, b.bytes);
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

    fn one(client: IpAddr, name: Option<Arc<str>>, bytes: u64) -> Batch {
        Batch {
            client: Some(client),
            name,
            dst: None,
            flows: 1,
            bytes,
        }
    }

    #[test]
    fn heavy_clients_and_names_stand_out_of_many_light_ones() {
        let h = Hitters::default();
        let heavy: Arc<str> = Arc::from("heavy.test");
        for i in 0..100_000u32 {
            let name: Arc<str> = Arc::from(format!("n{i}.test"));
            h.record(one(ip(i + 100), Some(name), 10));
            if i % 100 == 0 {
                h.record(one(ip(1), Some(heavy.clone()), 5_000));
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
    fn a_heavy_name_of_the_new_minute_leads_light_ones_of_the_last() {
        let h = Hitters::default();
        for i in 0..150u32 {
            let name: Arc<str> = Arc::from(format!("n{i}.test"));
            h.record(one(ip(i + 100), Some(name), 200));
        }
        h.rotate();
        let heavy: Arc<str> = Arc::from("heavy.test");
        for _ in 0..3 {
            h.record(one(ip(1), Some(heavy.clone()), 5_000));
        }
        let top = h.top(10);
        assert_eq!(
            top.names.by_bytes[0].key, "heavy.test",
            "{:?}",
            top.names.by_bytes
        );
        assert_eq!(
            top.names.by_flows[0].key, "heavy.test",
            "{:?}",
            top.names.by_flows
        );
    }

    #[test]
    fn a_batch_holds_one_name_and_destination_within_one_second() {
        let mut p = Pending::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a.test"), Arc::from("b.test"));
        let c = Some(ip(1));
        assert_eq!(p.add(c, Some(&a), None, 10, 5), None);
        assert_eq!(p.add(c, Some(&a), None, 20, 5), None);
        let done = p.add(c, Some(&b), None, 1, 5).expect("another name");
        assert_eq!(
            (done.name.as_deref(), done.flows, done.bytes),
            (Some("a.test"), 2, 30)
        );
        let done = p.add(c, Some(&b), None, 1, 6).expect("another second");
        assert_eq!((done.flows, done.bytes), (1, 1));
        assert_eq!(p.take(c, Some(6)), None, "not due within its second");
        assert_eq!(p.take(c, Some(7)).map(|b| b.flows), Some(1));
        assert_eq!(p.take(c, None), None);
    }

    #[test]
    fn old_epochs_fall_out_of_the_window() {
        let h = Hitters::default();
        h.record(one(ip(1), None, 100));
        for _ in 0..EPOCHS - 1 {
            h.rotate();
        }
        assert_eq!(h.top(5).clients.by_flows.len(), 1);
        h.rotate();
        h.record(one(ip(2), None, 1));
        let top = h.top(5);
        assert_eq!(top.clients.by_flows.len(), 1);
        assert_eq!(top.clients.by_flows[0].key, "10.0.0.2");
    }
}
