//! The filter API: how tproxyd is extended.
//!
//! A [`Filter`] hooks into each request's life at four points, the way
//! Pingora's `ProxyHttp` does for the proxy itself: the request as it
//! arrives (it may answer early, e.g. 403), the request on its way to the
//! origin, the response on its way back, and logging. Every hook gets a
//! [`FilterCtx`] with what a transparent proxy knows about the flow (client,
//! **original destination**, listener, request id) plus per-request state.
//!
//! Filters run in the configured order: `tproxyd.forwarding` first, then
//! `tproxyd.request_headers`, then the `tproxyd.filters` list from YAML
//! (built-ins and filters registered by name), then filters added in code.
//! An `Err` from a filter, or a panic, becomes a clean 500 for that request.
//!
//! Which hooks run for which traffic:
//!
//! | traffic | `request` | `upstream_request` | `response` | `log` |
//! |---|---|---|---|---|
//! | plain HTTP on `tproxy`/`redirect` listeners | yes | yes | yes | yes |
//! | absolute-form requests on `forward` listeners | yes | yes | yes | yes |
//! | `CONNECT` on `forward` listeners (the request head is all there is) | yes | no | no | yes |
//! | `tls-passthrough` connections (no HTTP at all) | no | no | no | no |
//! | tunnels of what is not HTTP on `tproxy`/`redirect` listeners | yes | no | no | yes |
//!
//! For CONNECT the request is the `CONNECT host:port` head with its header
//! lines; Host in the context is the authority. A tunnel is seen as
//! `CONNECT <destination>` without headers, with the SNI as Host when it is
//! TLS. Hooks run only for flows the decision let through (see
//! `crate::decision`).
//!
//! The `acl` entries of the list are not filters: they are the rule sets
//! of the flows' decision (`crate::policy`), which runs before every
//! filter, in the order they are listed. Passthrough listeners are governed
//! by their own `tls:` policy (whose `acl` has the same rules, with the SNI
//! as host).
//!
//! Built-ins: [`headers`], [`host_check`], [`rate_limit`]; plus
//! [`forwarding`] (Via / X-Forwarded-For / Forwarded and the Via loop
//! token), configured under `tproxyd.forwarding`.

mod chain;
pub mod forwarding;
pub mod headers;
pub mod host_check;
pub mod rate_limit;
mod registry;
mod settings;
pub mod template;

pub use chain::FilterChain;
pub use registry::{FilterFactory, FilterRegistry, FilterSpec};
pub use settings::{Filters, RequestHeadersSettings};

pub use crate::flow::{FlowInfo, Refusal, RequestId};
use crate::sets::{Catalog, Slot};
use async_trait::async_trait;
pub use pingora_error::{Error, ErrorType, Result};
pub use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::Arc;

/// A response a filter sends instead of forwarding the request: the same
/// [`Answer`](crate::flow::Answer) tproxyd itself uses for early answers,
/// so its refusal reason is counted and logged like tproxyd's own.
pub type EarlyResponse = crate::flow::Answer;

/// The per-request context every hook receives.
pub struct FilterCtx {
    /// Client, destination, listener, request id.
    pub flow: FlowInfo,
    /// The request's Host header (without changes), if any; for forward
    /// requests and CONNECT the URI's authority.
    pub host: Option<String>,
    /// The HTTP version the request was received with (Via names it).
    pub version: http::Version,
    /// Per-request state: a filter may store values of its own types here
    /// in one hook and read them in a later one (types must be `Clone +
    /// Send + Sync + 'static`).
    pub state: http::Extensions,
    decision: Option<String>,
    sets: Option<Arc<Catalog>>,
}

impl FilterCtx {
    /// A context for a new request.
    pub fn new(flow: FlowInfo, host: Option<String>) -> Self {
        FilterCtx {
            flow,
            host,
            version: http::Version::HTTP_11,
            state: http::Extensions::new(),
            decision: None,
            sets: None,
        }
    }

    /// The same context, with what decided the flow before any filter ran
    /// (e.g. `acl:allow:lan`) as its decision so far.
    pub fn with_decision(mut self, decision: Option<&str>) -> Self {
        self.decision = decision.map(str::to_string);
        self
    }

    /// The same context, with the configured sets to look names up in.
    pub fn with_sets(mut self, sets: Arc<Catalog>) -> Self {
        self.sets = Some(sets);
        self
    }

    /// The set named `name` in `tproxyd.sets`, if there is one:
    /// `ctx.set("ads").is_some_and(|s| s.contains_name(&name))`, with the
    /// name from [`FilterCtx::name`] (sets store names normalised).
    pub fn set(&self, name: &str) -> Option<&Slot> {
        self.sets.as_deref().and_then(|c| c.find(name))
    }

    /// The name the client asked for, as sets and rules match it: the
    /// Host's (or SNI's, or CONNECT authority's) host part, lower case,
    /// without port or trailing dot.
    pub fn name(&self) -> Option<String> {
        self.host.as_deref().and_then(crate::addr::flow_name)
    }

    /// Records what a filter decided (e.g. which ACL rule matched); shown
    /// in the access log. A later decision replaces an earlier one.
    pub fn set_decision(&mut self, decision: impl Into<String>) {
        self.decision = Some(decision.into());
    }

    /// The last recorded decision.
    pub fn decision(&self) -> Option<&str> {
        self.decision.as_deref()
    }
}

/// What [`Filter::request`] decides.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Go on with the next filter, then forward.
    Continue,
    /// Answer now; the request is not forwarded and later filters' request
    /// hooks do not run.
    Respond(EarlyResponse),
}

impl Verdict {
    /// An early answer by a custom filter (counted as refusal `filter`).
    pub fn respond(status: u16, body: impl Into<String>) -> Verdict {
        Verdict::refuse(Refusal::Filter, status, body)
    }

    /// An early answer with its refusal reason (the built-ins use `acl`
    /// and `host-mismatch`), for the metrics and the access log.
    pub fn refuse(reason: Refusal, status: u16, body: impl Into<String>) -> Verdict {
        Verdict::Respond(EarlyResponse::refused(reason, status, body))
    }
}

/// What the log hook learns about a finished request.
#[derive(Debug, Clone, Copy)]
pub struct LogSummary<'a> {
    /// Status sent to the client (0 if none).
    pub status: u16,
    /// The error that ended the request, if any.
    pub error: Option<&'a Error>,
}

/// Which of its hooks a [`Filter`] implements. The chain calls a filter only
/// for these: a hook left at its default still costs a boxed future per
/// call (`async_trait`), so the built-in filters name exactly theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hooks {
    /// [`Filter::request`].
    pub request: bool,
    /// [`Filter::upstream_request`].
    pub upstream_request: bool,
    /// [`Filter::response`].
    pub response: bool,
    /// [`Filter::log`].
    pub log: bool,
}

impl Hooks {
    /// Every hook: the default, always correct.
    pub const ALL: Hooks = Hooks {
        request: true,
        upstream_request: true,
        response: true,
        log: true,
    };
    /// No hook; start from this and set the ones implemented.
    pub const NONE: Hooks = Hooks {
        request: false,
        upstream_request: false,
        response: false,
        log: false,
    };
}

/// A hook into each request's life. All methods have do-nothing defaults;
/// implement the ones you need. The table in the [module docs](self) says
/// which hooks run for which kind of traffic.
#[async_trait]
pub trait Filter: Send + Sync {
    /// Shown in logs and error messages.
    fn name(&self) -> &str;

    /// The hooks this filter implements; the others are never called.
    ///
    /// By default: all of them (correct for any filter). A filter that
    /// leaves some at their defaults may name only its own, which saves an
    /// allocation per request for each hook left out.
    fn hooks(&self) -> Hooks {
        Hooks::ALL
    }

    /// Runs once per request, after its head was read and tproxyd admitted
    /// it (the destination is known and not a loop), before any upstream
    /// connection is made.
    ///
    /// It may read the request and the flow, keep state in `ctx.state` and
    /// record a decision. Return [`Verdict::Respond`] to answer the request
    /// here (nothing is forwarded and later filters' `request` hooks do not
    /// run); [`Verdict::Continue`] to go on. An `Err` answers 500.
    ///
    /// By default: `Continue`.
    async fn request(&self, _ctx: &mut FilterCtx, _req: &RequestHeader) -> Result<Verdict> {
        Ok(Verdict::Continue)
    }

    /// Runs once per forwarded request, after the upstream connection is
    /// chosen and just before the request head is sent to the origin.
    ///
    /// It may change the head that goes upstream (add, set or remove
    /// headers; the client's own head is not changed). An `Err` answers 500
    /// and nothing is sent upstream.
    ///
    /// By default: changes nothing.
    async fn upstream_request(&self, _ctx: &mut FilterCtx, _req: &mut RequestHeader) -> Result<()> {
        Ok(())
    }

    /// Runs once per response from the origin, before its head is sent to
    /// the client. Not called for answers tproxyd or a filter made itself.
    ///
    /// It may change the response head. An `Err` ends the request with a
    /// 500 if nothing was sent yet, else closes the connection.
    ///
    /// By default: changes nothing.
    async fn response(&self, _ctx: &mut FilterCtx, _resp: &mut ResponseHeader) -> Result<()> {
        Ok(())
    }

    /// Runs once per request after its response was sent or the request
    /// failed, for every request whose `request` hook ran (also when a
    /// filter answered it early).
    ///
    /// It may only observe: the response is gone. A panic here is caught
    /// and ignored.
    ///
    /// By default: does nothing.
    async fn log(&self, _ctx: &FilterCtx, _summary: &LogSummary<'_>) {}
}

/// A context for unit tests of filters.
#[cfg(test)]
pub(crate) fn test_ctx(client: &str, dst: &str, host: Option<&str>) -> FilterCtx {
    let listener = crate::flow::ListenerId {
        name: "lan".into(),
        mode: crate::flow::Mode::Tproxy,
    };
    FilterCtx::new(
        FlowInfo::new(
            &listener,
            Some(client.parse().expect("client address")),
            dst.parse().expect("destination address"),
            RequestId(1),
        ),
        host.map(str::to_string),
    )
}
