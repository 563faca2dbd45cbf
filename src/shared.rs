//! The state a listener's app works with: what the whole process shares
//! (filters, the decider, upstream settings, draining, the access log) and
//! what is the listener's own (its settings and metrics).

use crate::access_log::AccessLog;
use crate::addr::ClientAddr;
use crate::decision::{Admitted, Decider, Decision, Flow, Rules};
use crate::downstream::Downstream;
use crate::egress::open::{open, EgressError, Opened, Remote};
use crate::filters::{FilterChain, FilterCtx, FlowInfo};
use crate::lifecycle::Draining;
use crate::listener::Listener;
use crate::live::{Live, Verdict};
use crate::metrics::ListenerMetrics;
use crate::policy::{Acl, Routes};
use crate::sets::Catalog;
use crate::summary::Outputs;
use crate::upstream::Upstream;
use std::sync::Arc;

/// Settings and state shared by all listeners of one process.
pub struct Shared {
    /// All filters, in order.
    pub chain: FilterChain,
    /// Decides every flow: loops, forward policy, rule sets.
    pub decider: Decider,
    /// The configured sets, for filters to look names up in.
    pub sets: Arc<Catalog>,
    /// The rule sets (`acl` entries of `tproxyd.filters`) that judge the
    /// flows of HTTP and forward listeners, in order.
    pub acls: Vec<Acl>,
    /// Upstream timeouts and mark.
    pub upstream: Upstream,
    /// Set when this process is being replaced or stopped.
    pub draining: Draining,
    /// The access log, unless disabled.
    pub access_log: Option<AccessLog>,
    /// The routes that choose each flow's egress.
    pub routes: Routes,
    /// Client-side limits.
    pub downstream: Downstream,
    /// What goes through now, for the status page.
    pub live: Arc<Live>,
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
            live: &self.shared.live,
        }
    }

    /// The filters' context of a flow the decision let through (`by`: what
    /// decided it).
    pub fn filter_ctx(&self, flow: FlowInfo, host: Option<String>, by: Option<&str>) -> FilterCtx {
        FilterCtx::new(flow, host)
            .with_decision(by)
            .with_sets(self.shared.sets.clone())
    }

    /// Opens the upstream connection of an opaque flow (CONNECT, tunnel,
    /// passthrough) that `a` let through, to `name` (when the flow has
    /// one) on `port`: through its egress, from `client`'s address when
    /// this listener spoofs and the flow leaves directly.
    pub async fn open_upstream(
        &self,
        a: &Admitted,
        name: Option<&str>,
        port: u16,
        client: Option<ClientAddr>,
    ) -> Result<Opened, EgressError> {
        let spoof = client.filter(|_| self.listener.spoofs()).map(|c| c.ip());
        let target = Remote {
            name: name.map(str::to_string),
            addr: a.dst,
            port,
        };
        open(&a.egress, &target, spoof, &self.shared.upstream).await
    }

    /// Whether anything looks at a flow's name: a rule set or a route.
    pub fn wants_names(&self) -> bool {
        let r = self.rules();
        !r.acls.is_empty() || !r.routes.is_empty() || r.tls.is_some()
    }

    /// The decision on `flow`, under this listener's rules; the status
    /// page's flow shows it.
    pub async fn decide(&self, flow: &Flow<'_>) -> Decision {
        let decision = self.shared.decider.decide(self.rules(), flow).await;
        crate::live::with_current(|f| f.decided(&verdict(flow, &decision)));
        decision
    }

    /// What this listener brings to its flows' decision.
    pub fn rules(&self) -> Rules<'_> {
        self.listener.rules(&self.shared.acls, &self.shared.routes)
    }
}

/// A decision as the status page's flow takes it.
fn verdict<'a>(flow: &Flow<'a>, d: &'a Decision) -> Verdict<'a> {
    let (allowed, dst, rule, egress) = match d {
        Decision::Allow(a) => (true, a.dst, a.by.as_deref(), Some(&a.egress.name)),
        Decision::Deny { answer, by } => {
            let rule = by.as_deref().or(answer.refusal.map(|r| r.as_str()));
            (false, None, rule, None)
        }
    };
    // HTTP flows name their host only when a rule or route looks at it;
    // the status page takes the Host header as it came.
    let host = || flow.request?.headers.get(http::header::HOST)?.to_str().ok();
    Verdict {
        kind: flow.kind,
        name: flow.name.or_else(host),
        allowed,
        dst,
        rule,
        egress,
    }
}
