//! The state a listener's app works with: what the whole process shares
//! (filters, admission, upstream settings, draining, the access log) and
//! what is the listener's own (its settings and metrics).

use crate::access_log::AccessLog;
use crate::admission::{Admission, Rules};
use crate::downstream::Downstream;
use crate::filters::FilterChain;
use crate::lifecycle::Draining;
use crate::listener::{Listener, ListenerKind};
use crate::metrics::ListenerMetrics;
use crate::summary::Outputs;
use crate::upstream::connector::SockHook;
use crate::upstream::UpstreamConf;
use std::sync::Arc;

/// Settings and state shared by all listeners of one process.
pub struct Shared {
    /// All filters, in order.
    pub chain: FilterChain,
    /// Loop protection and forward-proxy policy checks.
    pub admission: Admission,
    /// Upstream timeouts and mark.
    pub upstream: UpstreamConf,
    /// Set when this process is being replaced or stopped.
    pub draining: Draining,
    /// The access log, unless disabled.
    pub access_log: Option<AccessLog>,
    /// Sets `SO_MARK` on Pingora's upstream sockets (`upstream.mark`).
    pub mark_hook: Option<SockHook>,
    /// Client-side limits.
    pub downstream: Downstream,
}

/// One listener's view: its settings, its metrics, the shared state.
pub struct ListenerState {
    /// The listener as configured.
    pub listener: Listener,
    /// Its metric series, resolved once.
    pub metrics: ListenerMetrics,
    /// The process-wide part.
    pub shared: Arc<Shared>,
}

impl ListenerState {
    /// The state of `listener`, registering its metric series.
    pub fn new(listener: Listener, shared: Arc<Shared>) -> Arc<ListenerState> {
        Arc::new(ListenerState {
            metrics: ListenerMetrics::new(&listener.id),
            listener,
            shared,
        })
    }

    /// Where this listener's finished flows are counted and logged.
    pub fn outputs(&self) -> Outputs<'_> {
        Outputs {
            listener: &self.listener.id,
            metrics: &self.metrics,
            log: self.shared.access_log.as_ref(),
        }
    }

    /// This listener's admission rules.
    pub fn rules(&self) -> Rules<'_> {
        Rules {
            listener: &self.listener.id,
            forward: match &self.listener.kind {
                ListenerKind::Forward(p) => Some(p),
                _ => None,
            },
        }
    }
}
