//! The egresses' metrics: flows by egress and result, and the time to
//! open a connection through each. Each egress resolves its series once.

use pingora_prometheus::prometheus::{
    exponential_buckets, register_histogram_vec, register_int_counter_vec, Histogram, HistogramVec,
    IntCounter, IntCounterVec,
};
use std::sync::LazyLock;

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tproxyd_egress_requests_total",
        "Flows (HTTP requests, tunnels, passthrough connections) sent through an egress, by result: ok, unreachable (the parent or destination could not be reached), refused (the parent refused), fallback (its parent was down and the flow went direct).",
        &["egress", "result"]
    )
    .expect("metric registers once")
});
static CONNECT: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tproxyd_egress_connect_seconds",
        "Time to open a connection through an egress: TCP connect, plus the parent's handshake for a proxy egress.",
        &["egress"],
        exponential_buckets(0.0001, 2.5, 14).expect("valid buckets")
    )
    .expect("metric registers once")
});

/// What became of a flow at its egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It left.
    Ok,
    /// The parent or the destination could not be reached.
    Unreachable,
    /// The parent refused it.
    Refused,
    /// The parent was down and the flow went direct.
    Fallback,
}

/// One egress's series, resolved once.
#[derive(Debug, Clone)]
pub struct EgressMetrics {
    outcomes: [IntCounter; 4],
    connect: Histogram,
}

impl EgressMetrics {
    /// The series of the egress named `name`.
    pub fn new(name: &str) -> Self {
        let c = |r: &str| REQUESTS.with_label_values(&[name, r]);
        EgressMetrics {
            outcomes: [c("ok"), c("unreachable"), c("refused"), c("fallback")],
            connect: CONNECT.with_label_values(&[name]),
        }
    }

    /// Counts a flow's outcome.
    pub fn outcome(&self, o: Outcome) {
        self.outcomes[o as usize].inc();
    }

    /// Notes how long a connection took to open.
    pub fn connected(&self, d: std::time::Duration) {
        self.connect.observe(d.as_secs_f64());
    }
}
