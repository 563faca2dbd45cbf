//! Prometheus metrics, served by Pingora's Prometheus app on the admin
//! listener (see [`crate::admin`]).
//!
//! Names follow Prometheus conventions (`tproxyd_` prefix, `_total`,
//! `_seconds`, `_bytes`). Labels are bounded: the listener's name and mode
//! from the config, and small fixed sets (status class, refusal reason, …) —
//! never a client address, Host or path. Each listener resolves its label
//! sets once at start-up ([`ListenerMetrics`]), so the request path only
//! bumps atomics.

use crate::flow::{DownstreamLimit, ListenerId, Mode, Protocol, Refusal, RelayKind, TlsOutcome};
use pingora_prometheus::prometheus::{
    exponential_buckets, register_gauge, register_histogram_vec, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, Gauge, Histogram, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec,
};
use std::sync::LazyLock;

const L: &[&str] = &["listener", "mode"];

macro_rules! counter_vec {
    ($name:expr, $help:expr, $extra:expr) => {
        LazyLock::new(|| {
            let labels: Vec<&str> = L.iter().chain($extra.iter()).copied().collect();
            register_int_counter_vec!($name, $help, &labels).expect("metric registers once")
        })
    };
}

static REQUESTS: LazyLock<IntCounterVec> = counter_vec!(
    "tproxyd_requests_total",
    "Requests answered, by status class (1xx..5xx, or none when no response was sent).",
    ["status_class"]
);
static REFUSED: LazyLock<IntCounterVec> = counter_vec!(
    "tproxyd_requests_refused_total",
    "Requests (and TLS passthrough connections, tunnels) the proxy answered or closed itself instead of forwarding, by reason (acl, loop, host-mismatch, forward-not-allowed, filter, tls-policy, rate-limit, header-timeout, header-too-large, unsupported-protocol).",
    ["reason"]
);
static CONNECT_FAILURES: LazyLock<IntCounterVec> = counter_vec!(
    "tproxyd_upstream_connect_failures_total",
    "Failed connections to original destinations, by reason (refused, unreachable, timeout, other).",
    ["reason"]
);
static TIMEOUTS: LazyLock<IntCounterVec> = counter_vec!(
    "tproxyd_upstream_timeouts_total",
    "Upstream timeouts, by phase (connect, read, write).",
    ["phase"]
);
static UPSTREAM_CONNS: LazyLock<IntCounterVec> = counter_vec!(
    "tproxyd_upstream_connections_total",
    "Upstream connections used for requests: newly opened or reused from the pool.",
    ["kind"]
);
static CLIENT_RX: LazyLock<IntCounterVec> = counter_vec!(
    "tproxyd_client_received_bytes_total",
    "Request body bytes received from clients.",
    [] as [&str; 0]
);
static CLIENT_TX: LazyLock<IntCounterVec> = counter_vec!(
    "tproxyd_client_sent_bytes_total",
    "Response body bytes sent to clients.",
    [] as [&str; 0]
);
static DOWNSTREAM_ACTIVE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tproxyd_downstream_connections_active",
        "Open client connections (including idle keep-alive ones).",
        L
    )
    .expect("metric registers once")
});
static IN_FLIGHT: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!("tproxyd_requests_in_flight", "Requests being processed.", L)
        .expect("metric registers once")
});
static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tproxyd_request_duration_seconds",
        "Time from reading a request's header to the end of its response.",
        L,
        exponential_buckets(0.0005, 2.5, 14).expect("valid buckets")
    )
    .expect("metric registers once")
});
static CONNECT_TIME: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tproxyd_upstream_connect_seconds",
        "Time to open a new upstream connection (TCP connect).",
        L,
        exponential_buckets(0.0001, 2.5, 14).expect("valid buckets")
    )
    .expect("metric registers once")
});
static DOWNSTREAM_LIMITS: LazyLock<IntCounterVec> = counter_vec!(
    "tproxyd_downstream_limit_total",
    "Client-side limits that fired, by limit (header_timeout, keepalive_timeout, header_too_large, max_connections, per_client, reclaimed: an idle connection closed to make room at max_connections).",
    ["limit"]
);
static TUNNELS: LazyLock<IntCounterVec> = counter_vec!(
    "tproxyd_tunnels_total",
    "Connections on HTTP listeners that were not HTTP and were tunnelled to their original destination, by what they were (tls, h2-prior-knowledge, unknown, server-first).",
    ["reason"]
);
static RELAYS: LazyLock<IntCounterVec> = counter_vec!(
    "tproxyd_relay_total",
    "Opaque relays (TLS passthrough, CONNECT and other tunnels), by how their bytes moved: splice (in the kernel) or copy (through user space: `upstream.relay: copy`, a stream that cannot be spliced, or no pipe left).",
    ["kind"]
);
static TLS_CONNS: LazyLock<IntCounterVec> = counter_vec!(
    "tproxyd_tls_connections_total",
    "TLS passthrough connections, by outcome (spliced, denied, non_tls, bad_hello, connect_failed).",
    ["outcome"]
);
static PRESSURE: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tproxyd_downstream_pressure",
        "1 while client connections are at or above downstream.pressure_watermark of max_connections (shorter keep-alive and header timeouts, fair shares per client), else 0."
    )
    .expect("metric registers once")
});
static START_TIME: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "tproxyd_process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds."
    )
    .expect("metric registers once")
});
static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tproxyd_build_info",
        "Always 1; the version label says which tproxyd runs.",
        &["version"]
    )
    .expect("metric registers once")
});
static LOG_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tproxyd_access_log_dropped_total",
        "Access-log records dropped because the writer could not keep up.",
        &[] as &[&str]
    )
    .expect("metric registers once")
});

/// Sets the process-wide gauges; call once at start-up.
pub fn init_process() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    START_TIME.set(now);
    BUILD_INFO
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    LOG_DROPPED.with_label_values(&[] as &[&str]).inc_by(0);
    PRESSURE.set(0);
}

/// The process went under pressure (`true`) or out of it.
pub fn downstream_pressure(on: bool) {
    PRESSURE.set(i64::from(on));
}

/// Counts an access-log record the writer had to drop.
pub fn access_log_dropped() {
    LOG_DROPPED.with_label_values(&[] as &[&str]).inc();
}

/// Why an upstream connection could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// RST: nothing listens.
    Refused,
    /// No route / host unreachable.
    Unreachable,
    /// No answer within `connect_timeout`.
    Timeout,
    /// Anything else.
    Other,
}

impl ConnectFailure {
    const LABELS: [&'static str; 4] = ["refused", "unreachable", "timeout", "other"];

    fn index(self) -> usize {
        match self {
            ConnectFailure::Refused => 0,
            ConnectFailure::Unreachable => 1,
            ConnectFailure::Timeout => 2,
            ConnectFailure::Other => 3,
        }
    }
}

/// Upstream phase of a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// TCP connect.
    Connect,
    /// Waiting for the origin to send.
    Read,
    /// Waiting for the origin to take our bytes.
    Write,
}

impl TimeoutPhase {
    const LABELS: [&'static str; 3] = ["connect", "read", "write"];

    fn index(self) -> usize {
        match self {
            TimeoutPhase::Connect => 0,
            TimeoutPhase::Read => 1,
            TimeoutPhase::Write => 2,
        }
    }
}

/// What the status page's rates are made of: one listener's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Finished requests (and CONNECTs), any status.
    pub requests: u64,
    /// Finished TLS passthrough connections and tunnels.
    pub connections: u64,
    /// Body (and tunnel) bytes from clients.
    pub rx: u64,
    /// Body (and tunnel) bytes to clients.
    pub tx: u64,
    /// Refusals, in [`Refusal::ALL`] order.
    pub refused: [u64; Refusal::COUNT],
    /// Client-side limits fired, in [`DownstreamLimit::ALL`] order.
    pub limits: [u64; DownstreamLimit::COUNT],
}

/// One listener's metrics with their labels resolved.
#[derive(Clone)]
pub struct ListenerMetrics {
    status: [IntCounter; 6],
    refused: [IntCounter; Refusal::COUNT],
    tunnels: [IntCounter; 4],
    relays: [IntCounter; 2],
    limits: [IntCounter; DownstreamLimit::COUNT],
    connect_failures: [IntCounter; 4],
    timeouts: [IntCounter; 3],
    conn_new: IntCounter,
    conn_reused: IntCounter,
    rx: IntCounter,
    tx: IntCounter,
    /// Open client connections.
    pub downstream_active: IntGauge,
    /// Requests being processed.
    pub in_flight: IntGauge,
    duration: Histogram,
    connect_time: Histogram,
    tls: Option<[IntCounter; 5]>,
}

impl ListenerMetrics {
    /// Registers (or finds) the listener's series, all starting at zero so
    /// that dashboards see them before the first event.
    pub fn new(listener: &ListenerId) -> Self {
        let l = [&*listener.name, listener.mode.as_str()];
        let with = |v: &IntCounterVec, extra: &str| v.with_label_values(&[l[0], l[1], extra]);
        let status = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"].map(|c| with(&REQUESTS, c));
        let refused = Refusal::ALL.map(|r| with(&REFUSED, r.as_str()));
        let limits = DownstreamLimit::ALL.map(|l| with(&DOWNSTREAM_LIMITS, l.as_str()));
        let tunnels = Protocol::ALL.map(|p| with(&TUNNELS, p.as_str()));
        let relays = RelayKind::ALL.map(|k| with(&RELAYS, k.as_str()));
        let connect_failures = ConnectFailure::LABELS.map(|r| with(&CONNECT_FAILURES, r));
        let timeouts = TimeoutPhase::LABELS.map(|p| with(&TIMEOUTS, p));
        ListenerMetrics {
            status,
            refused,
            limits,
            tunnels,
            relays,
            connect_failures,
            timeouts,
            conn_new: with(&UPSTREAM_CONNS, "new"),
            conn_reused: with(&UPSTREAM_CONNS, "reused"),
            rx: CLIENT_RX.with_label_values(&l),
            tx: CLIENT_TX.with_label_values(&l),
            downstream_active: DOWNSTREAM_ACTIVE.with_label_values(&l),
            in_flight: IN_FLIGHT.with_label_values(&l),
            duration: DURATION.with_label_values(&l),
            connect_time: CONNECT_TIME.with_label_values(&l),
            tls: (listener.mode == Mode::TlsPassthrough)
                .then(|| TlsOutcome::ALL.map(|o| with(&TLS_CONNS, o.as_str()))),
        }
    }

    /// The counters as they stand.
    pub fn totals(&self) -> Totals {
        let sum = |c: &[IntCounter]| c.iter().map(IntCounter::get).sum::<u64>();
        Totals {
            requests: sum(&self.status),
            connections: sum(&self.tunnels) + self.tls.as_ref().map_or(0, |t| sum(t)),
            rx: self.rx.get(),
            tx: self.tx.get(),
            refused: self.refused.each_ref().map(IntCounter::get),
            limits: self.limits.each_ref().map(IntCounter::get),
        }
    }

    /// A finished TLS passthrough connection.
    pub fn tls_connection(&self, outcome: TlsOutcome) {
        if let Some(c) = &self.tls {
            c[outcome.index()].inc();
        }
    }

    /// A finished request.
    pub fn request_done(&self, status: u16, rx: usize, tx: usize, seconds: f64) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        self.status[class].inc();
        self.transfer(rx, tx, seconds);
    }

    /// Bytes from/to a client and how long it took (requests, tunnels).
    pub fn transfer(&self, rx: usize, tx: usize, seconds: f64) {
        self.rx.inc_by(rx as u64);
        self.tx.inc_by(tx as u64);
        self.duration.observe(seconds);
    }

    /// A relay ended; `kind` is how it moved its bytes.
    pub fn relay(&self, kind: RelayKind) {
        self.relays[kind.index()].inc();
    }

    /// A connection that was not HTTP, tunnelled.
    pub fn tunnel(&self, what: Protocol) {
        self.tunnels[what.index()].inc();
    }

    /// A client-side limit fired.
    pub fn limit(&self, which: DownstreamLimit) {
        self.limits[which.index()].inc();
    }

    /// A request the proxy answered itself.
    pub fn refused(&self, why: Refusal) {
        self.refused[why.index()].inc();
    }

    /// An upstream connection was used: new (with its connect time) or reused.
    pub fn upstream_connection(&self, reused: bool, connect_seconds: Option<f64>) {
        if reused {
            self.conn_reused.inc();
        } else {
            self.conn_new.inc();
            if let Some(s) = connect_seconds {
                self.connect_time.observe(s);
            }
        }
    }

    /// A failed upstream connect.
    pub fn connect_failed(&self, why: ConnectFailure) {
        self.connect_failures[why.index()].inc();
        if why == ConnectFailure::Timeout {
            self.timeout(TimeoutPhase::Connect);
        }
    }

    /// An upstream timeout.
    pub fn timeout(&self, phase: TimeoutPhase) {
        self.timeouts[phase.index()].inc();
    }
}

/// Counts a client connection for as long as it lives.
pub struct ConnectionGuard(IntGauge);

impl ConnectionGuard {
    /// Increments `gauge` until dropped.
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        ConnectionGuard(gauge.clone())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
