//! The flows open now: a table split into shards (slabs behind short,
//! non-async locks), so that registering and dropping a flow costs a lock,
//! a slot and one allocation, and two worker threads rarely meet on the
//! same lock. A query walks each shard once and keeps only its `limit`
//! best matches.

use super::flow::{FlowView, LiveFlow};
use slab::Slab;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

/// The open flows.
#[derive(Debug)]
pub struct Table {
    shards: [Mutex<Slab<Arc<LiveFlow>>>; SHARDS],
    next: AtomicUsize,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            shards: std::array::from_fn(|_| Mutex::new(Slab::new())),
            next: AtomicUsize::new(0),
        }
    }
}

/// A flow's place in the table; dropping it takes the flow out.
#[derive(Debug)]
pub struct Slot<'a> {
    table: &'a Table,
    shard: usize,
    key: usize,
    flow: Arc<LiveFlow>,
}

impl Slot<'_> {
    /// The registered flow.
    pub fn flow(&self) -> &Arc<LiveFlow> {
        &self.flow
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut shard = self.table.shards[self.shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        shard.try_remove(self.key);
    }
}

/// Which flows a query wants, and how many.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// A part of the client's address (`192.0.2.` or a whole address).
    pub client: Option<String>,
    /// A part of the host or SNI, any case.
    pub host: Option<String>,
    /// The kind exactly (`http`, `connect`, …).
    pub kind: Option<String>,
    /// The oldest first instead of the largest (by bytes) first.
    pub oldest_first: bool,
    /// At most this many.
    pub limit: usize,
}

impl Query {
    fn matches(&self, f: &LiveFlow) -> bool {
        if let Some(k) = &self.kind {
            if f.kind().as_str() != k {
                return false;
            }
        }
        if let Some(c) = &self.client {
            let client = f.client().map(|c| c.to_string()).unwrap_or_default();
            if !client.contains(c.as_str()) {
                return false;
            }
        }
        if let Some(h) = &self.host {
            let host = f.host();
            let host = host.as_deref().unwrap_or_default();
            if !host.to_ascii_lowercase().contains(&h.to_ascii_lowercase()) {
                return false;
            }
        }
        true
    }

    /// The order: larger keys first.
    fn key(&self, f: &LiveFlow) -> u64 {
        match self.oldest_first {
            true => u64::MAX - f.started_ms(),
            false => f.bytes(),
        }
    }
}

/// A query's answer.
#[derive(Debug)]
pub struct Listing {
    /// Open flows in all.
    pub open: usize,
    /// Of them, those the query matched.
    pub matched: usize,
    /// The first `limit` of those, in the query's order.
    pub flows: Vec<FlowView>,
}

impl Table {
    /// Puts `flow` in the table until the registration is dropped.
    pub fn register(&self, flow: LiveFlow) -> Slot<'_> {
        let flow = Arc::new(flow);
        let shard = self.next.fetch_add(1, Ordering::Relaxed) % SHARDS;
        let key = self.shards[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(flow.clone());
        Slot {
            table: self,
            shard,
            key,
            flow,
        }
    }

    /// How many flows are open.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether no flow is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every open flow, each shard locked while it is walked.
    pub fn each(&self, mut f: impl FnMut(&LiveFlow)) {
        for shard in &self.shards {
            let s = shard.lock().unwrap_or_else(|e| e.into_inner());
            s.iter().for_each(|(_, flow)| f(flow));
        }
    }

    /// One pass over the flows: those `q` matches, the first `q.limit` of
    /// them in its order. Each shard is locked only while it is walked.
    pub fn query(&self, q: &Query) -> Listing {
        let mut best: BinaryHeap<(Reverse<u64>, u64, usize)> = BinaryHeap::new();
        let mut kept: Slab<Arc<LiveFlow>> = Slab::new();
        let (mut open, mut matched) = (0, 0);
        let mut seq = 0u64;
        for shard in &self.shards {
            let flows: Vec<Arc<LiveFlow>> = {
                let s = shard.lock().unwrap_or_else(|e| e.into_inner());
                open += s.len();
                s.iter().map(|(_, f)| f.clone()).collect()
            };
            for f in flows.into_iter().filter(|f| q.matches(f)) {
                matched += 1;
                if q.limit == 0 {
                    continue;
                }
                let key = q.key(&f);
                if best.len() == q.limit {
                    match best.peek() {
                        Some((Reverse(min), _, _)) if key > *min => {
                            if let Some((_, _, slot)) = best.pop() {
                                kept.remove(slot);
                            }
                        }
                        _ => continue,
                    }
                }
                seq += 1;
                best.push((Reverse(key), seq, kept.insert(f)));
            }
        }
        let mut order = best.into_vec();
        order.sort();
        let flows = order
            .into_iter()
            .map(|(_, _, slot)| kept.remove(slot).view())
            .collect();
        Listing {
            open,
            matched,
            flows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowKind;
    use std::sync::atomic::Ordering;

    fn flow(client: &str, bytes: u64) -> LiveFlow {
        let f = LiveFlow::new("lan".into(), FlowKind::Http, Some(client.parse().unwrap()));
        f.counts().down.store(bytes, Ordering::Relaxed);
        f
    }

    #[test]
    fn registrations_come_and_go() {
        let t = Table::default();
        let a = t.register(flow("192.0.2.10:1000", 5));
        let b = t.register(flow("192.0.2.11:1000", 7));
        assert_eq!(t.len(), 2);
        drop(a);
        assert_eq!(t.len(), 1);
        drop(b);
        assert!(t.is_empty());
    }

    #[test]
    fn a_query_keeps_the_largest_matches_up_to_its_limit() {
        let t = Table::default();
        let _r: Vec<_> = (0..50u64)
            .map(|i| t.register(flow(&format!("192.0.2.{}:1000", i % 5), i)))
            .collect();
        let q = Query {
            client: Some("192.0.2.3:".into()),
            limit: 3,
            ..Query::default()
        };
        let l = t.query(&q);
        assert_eq!((l.open, l.matched), (50, 10));
        let bytes: Vec<u64> = l.flows.iter().map(|f| f.bytes_down).collect();
        assert_eq!(bytes, [48, 43, 38]);
        let none = t.query(&Query {
            kind: Some("connect".into()),
            limit: 10,
            ..Query::default()
        });
        assert_eq!((none.matched, none.flows.len()), (0, 0));
        let zero = t.query(&Query::default());
        assert_eq!((zero.matched, zero.flows.len()), (50, 0));
    }
}
