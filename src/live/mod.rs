//! What goes through tproxyd right now, for the admin listener's status
//! page and flows API (`crate::admin`): the open flows ([`table`]), the
//! heaviest clients, names and destinations of the last minutes
//! ([`hitters`]), rates over the last minute ([`rates`]), and the
//! listeners with their open connections.
//!
//! A flow is registered where its connection is accepted (an HTTP
//! listener's connection with its keep-alive requests, a passthrough
//! connection) and is the connection task's [`current`] flow while it
//! lasts, so that the decision and the flow's summary update it without
//! being handed it. With `admin.flows: off` nothing is registered and no
//! client or name is kept: the top lists stay empty too.

mod flow;
mod hitters;
mod rates;
mod table;

pub use flow::{FlowState, FlowView, LiveFlow, Verdict};
pub use hitters::{Batch, Hitter, Hitters, Top, TopPair, EPOCHS};
pub use rates::{LastMinute, Rates, WINDOW};
pub use table::{Listing, Query, Table};

use crate::addr::{ClientAddr, OrigDstAddr};
use crate::flow::{FlowKind, ListenerId, Mode};
use crate::metrics::{ListenerMetrics, Totals};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

tokio::task_local! {
    static CURRENT: Option<Arc<LiveFlow>>;
}

/// Runs `work` (a connection's whole life) with `flow` as its current flow.
///
/// A plain function, not an `async fn`: an `async fn` keeps its argument
/// `work` in its state beside the scope it is moved into, so every
/// connection would carry its future twice for its whole life.
pub fn scope<F: std::future::Future>(
    flow: Option<Arc<LiveFlow>>,
    work: F,
) -> tokio::task::futures::TaskLocalFuture<Option<Arc<LiveFlow>>, F> {
    CURRENT.scope(flow, work)
}

/// The current task's flow, if it has one.
pub fn current() -> Option<Arc<LiveFlow>> {
    CURRENT.try_with(Clone::clone).ok().flatten()
}

/// Calls `f` with the current task's flow, if it has one.
pub fn with_current(f: impl FnOnce(&LiveFlow)) {
    let _ = CURRENT.try_with(|c| c.as_deref().map(f));
}

/// A listener as the summary shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerStatus {
    /// Its name.
    pub name: Arc<str>,
    /// Its mode.
    pub mode: &'static str,
    /// Its address.
    pub address: String,
    /// Open client connections.
    pub open_connections: i64,
    /// Requests (or passthrough connections) being served.
    pub in_flight: i64,
}

/// A listener and its metric series.
struct Listener {
    id: ListenerId,
    address: String,
    metrics: ListenerMetrics,
}

/// A registered flow: in the table until dropped, when its last batch
/// goes into the top lists.
#[derive(Debug)]
pub struct Registration<'a> {
    live: &'a Live,
    slot: table::Slot<'a>,
}

impl Registration<'_> {
    /// The registered flow.
    pub fn flow(&self) -> &Arc<LiveFlow> {
        self.slot.flow()
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.slot.flow().take_batch(None) {
            self.live.hitters.record(b);
        }
    }
}

/// The process's live state.
pub struct Live {
    flows: bool,
    /// Seconds since start, from the ticker: when batches are due.
    second: AtomicU64,
    table: Table,
    hitters: Hitters,
    rates: Rates,
    listeners: Vec<Listener>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("flows", &self.flows)
            .finish_non_exhaustive()
    }
}

impl Live {
    /// The live state of `listeners` (id and address); `flows`: whether
    /// flows (and the top lists, made of their clients and names) are kept.
    pub fn new(flows: bool, listeners: impl IntoIterator<Item = (ListenerId, String)>) -> Live {
        Live {
            flows,
            second: AtomicU64::new(0),
            table: Table::default(),
            hitters: Hitters::default(),
            rates: Rates::default(),
            listeners: listeners
                .into_iter()
                .map(|(id, address)| Listener {
                    metrics: ListenerMetrics::new(&id),
                    id,
                    address,
                })
                .collect(),
        }
    }

    /// Whether flows are kept (`admin.flows`).
    pub fn flows_enabled(&self) -> bool {
        self.flows
    }

    /// A flow of `client` accepted on `listener`, kept until the returned
    /// registration is dropped; `None` when flows are off.
    pub fn register(
        &self,
        listener: &ListenerId,
        client: Option<ClientAddr>,
    ) -> Option<Registration<'_>> {
        if !self.flows {
            return None;
        }
        let kind = match listener.mode {
            Mode::Forward => FlowKind::Forward,
            Mode::TlsPassthrough => FlowKind::Passthrough,
            Mode::Tproxy | Mode::Redirect => FlowKind::Http,
        };
        let flow = LiveFlow::new(listener.name.clone(), kind, client);
        Some(Registration {
            live: self,
            slot: self.table.register(flow),
        })
    }

    /// The open flows.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// A flow (or one request of it) finished, with `bytes` both ways:
    /// counted in the top lists, in batches of at most a second per
    /// connection (the ticker records those of connections gone quiet).
    pub fn finished(&self, flow: &LiveFlow, dst: Option<OrigDstAddr>, bytes: u64) {
        let second = self.second.load(Ordering::Relaxed);
        if let Some(b) = flow.count(dst.map(|d| d.socket_addr()), bytes, second) {
            self.hitters.record(b);
        }
    }

    /// The first `n` of each top list.
    pub fn top(&self, n: usize) -> Top {
        self.hitters.top(n)
    }

    /// Every listener's counters, summed.
    fn totals(&self) -> Totals {
        self.listeners.iter().fold(Totals::default(), |t, l| {
            rates::add(&t, &l.metrics.totals())
        })
    }

    /// What happened over the last minute.
    pub fn last_minute(&self) -> LastMinute {
        self.rates.last_minute(Instant::now(), &self.totals())
    }

    /// The listeners with their open connections.
    pub fn listeners(&self) -> Vec<ListenerStatus> {
        self.listeners
            .iter()
            .map(|l| ListenerStatus {
                name: l.id.name.clone(),
                mode: l.id.mode.as_str(),
                address: l.address.clone(),
                open_connections: l.metrics.downstream_active.get(),
                in_flight: l.metrics.in_flight.get(),
            })
            .collect()
    }

    /// Once a second: a snapshot for the rates; every minute a new epoch
    /// of the top lists.
    fn tick(&self, second: u64) {
        self.rates.tick(Instant::now(), self.totals());
        self.second.store(second, Ordering::Relaxed);
        // Recorded as found, not collected first: a vector of every due
        // batch, built and dropped each second, cost about 1.5 KB of RSS
        // per open flow (measured). Locks: shard, then flow, then sketches;
        // nothing takes them in another order.
        self.table.each(|f| {
            if let Some(b) = f.take_batch(Some(second)) {
                self.hitters.record(b);
            }
        });
        if second > 0 && second.is_multiple_of(60) {
            self.hitters.rotate();
        }
    }
}

/// The background service that ticks the live state once a second.
pub struct Ticker(pub Arc<Live>);

#[async_trait]
impl BackgroundService for Ticker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut second = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = every.tick() => {
                    self.0.tick(second);
                    second += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::RequestId;

    fn lan() -> ListenerId {
        ListenerId {
            name: "live-test".into(),
            mode: Mode::Tproxy,
        }
    }

    #[test]
    fn flows_off_registers_nothing() {
        let live = Live::new(false, [(lan(), "[::]:8888".to_string())]);
        assert!(live.register(&lan(), None).is_none());
        assert_eq!(live.listeners()[0].address, "[::]:8888");
    }

    #[tokio::test]
    async fn the_current_flow_is_the_connections() {
        let live = Live::new(true, []);
        let client: ClientAddr = "192.0.2.10:1000".parse().unwrap();
        let reg = live.register(&lan(), Some(client)).unwrap();
        assert!(current().is_none());
        scope(Some(reg.flow().clone()), async {
            with_current(|f| f.request_started(RequestId(7)));
            let f = current().unwrap();
            live.finished(&f, None, 10);
        })
        .await;
        let l = live.table().query(&Query {
            limit: 5,
            ..Query::default()
        });
        assert_eq!(l.flows[0].id, RequestId(7).to_string());
        // Batched until the connection closes (or the ticker comes).
        assert!(live.top(3).clients.by_bytes.is_empty());
        drop(reg);
        assert_eq!(live.top(3).clients.by_bytes[0].key, "192.0.2.10");
    }

    #[test]
    fn the_scope_holds_its_work_once() {
        // A future the size of a connection's: held once, not twice.
        let work = async {
            let buf = [0u8; 1024];
            std::future::ready(()).await;
            std::hint::black_box(buf);
        };
        let alone = std::mem::size_of_val(&work);
        let scoped = std::mem::size_of_val(&scope(None, work));
        assert!(
            scoped < alone + 64,
            "a {alone}-byte future takes {scoped} bytes in its scope"
        );
    }
}
