//! The filter API: how tproxyd is extended.
//!
//! A [`Filter`] hooks into each request's life at four points — the request
//! as it arrives (it may answer early, e.g. 403), the request on its way to
//! the origin, the response on its way back, and logging. Every hook gets a
//! [`FilterCtx`] with what a transparent proxy knows about the flow (client,
//! **original destination**, listener, request id) plus per-request state.
//!
//! Filters run in the configured order: `tproxyd.request_headers`, then the
//! `tproxyd.filters` list from YAML (built-ins and filters registered by
//! name), then filters added in code. An `Err` from a filter — or a panic —
//! becomes a clean 500 for that request.
//!
//! Built-ins: [`headers`], [`acl`], [`host_check`]; plus [`forwarding`]
//! (Via / X-Forwarded-For / Forwarded and the Via loop token), which is
//! configured under `tproxyd.forwarding` and always runs first.

pub mod acl;
pub mod forwarding;
pub mod headers;
pub mod host_check;
pub mod template;

use crate::config::{ConfigError, Mode};
use async_trait::async_trait;
use futures::FutureExt;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

pub use pingora_error::{Error, ErrorType, Result};
pub use pingora_http::{RequestHeader, ResponseHeader};

/// A process-unique request id, shown in logs and available to filters
/// (`$request_id`), so a request can be followed across log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

impl RequestId {
    /// The next id. Seeded from the start time and pid so that ids from an
    /// upgraded process do not repeat the old one's.
    pub fn next() -> RequestId {
        static NEXT: LazyLock<AtomicU64> = LazyLock::new(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            AtomicU64::new(nanos ^ (u64::from(std::process::id()) << 40))
        });
        RequestId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What a transparent proxy knows about a request's flow.
#[derive(Debug, Clone)]
pub struct FlowInfo {
    /// The client's address (v4-mapped addresses canonicalised).
    pub client: SocketAddr,
    /// The address the client originally dialed: where the request goes.
    pub destination: SocketAddr,
    /// The listener's configured name.
    pub listener: Arc<str>,
    /// How the listener learns the destination.
    pub mode: Mode,
    /// This request's id.
    pub request_id: RequestId,
}

/// The per-request context every hook receives.
pub struct FilterCtx {
    /// Client, destination, listener, request id.
    pub flow: FlowInfo,
    /// The request's Host header (without changes), if any.
    pub host: Option<String>,
    /// Per-request state: a filter may store values of its own types here
    /// in one hook and read them in a later one (types must be `Clone +
    /// Send + Sync + 'static`).
    pub state: http::Extensions,
    decision: Option<String>,
}

impl FilterCtx {
    /// A context for a new request.
    pub fn new(flow: FlowInfo, host: Option<String>) -> Self {
        FilterCtx {
            flow,
            host,
            state: http::Extensions::new(),
            decision: None,
        }
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

/// A response a filter sends instead of forwarding the request.
#[derive(Debug, Clone)]
pub struct EarlyResponse {
    /// HTTP status, e.g. 403.
    pub status: u16,
    /// A short plain-text body.
    pub body: String,
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
    /// Shorthand for an early answer.
    pub fn respond(status: u16, body: impl Into<String>) -> Verdict {
        Verdict::Respond(EarlyResponse {
            status,
            body: body.into(),
        })
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

/// A hook into each request's life. All methods have do-nothing defaults;
/// implement the ones you need.
#[async_trait]
pub trait Filter: Send + Sync {
    /// Shown in logs and error messages.
    fn name(&self) -> &str;

    /// The request as it arrived from the client. Return
    /// [`Verdict::Respond`] to answer it here.
    async fn request(&self, _ctx: &mut FilterCtx, _req: &RequestHeader) -> Result<Verdict> {
        Ok(Verdict::Continue)
    }

    /// The request as it will be sent to the origin: change its headers here.
    async fn upstream_request(&self, _ctx: &mut FilterCtx, _req: &mut RequestHeader) -> Result<()> {
        Ok(())
    }

    /// The origin's response on its way to the client.
    async fn response(&self, _ctx: &mut FilterCtx, _resp: &mut ResponseHeader) -> Result<()> {
        Ok(())
    }

    /// After the response was sent (or the request failed).
    async fn log(&self, _ctx: &FilterCtx, _summary: &LogSummary<'_>) {}
}

/// Builds a filter from its YAML settings (the value under its name in
/// `tproxyd.filters`); `key` is that value's dotted path, for errors.
pub type FilterFactory = Arc<
    dyn Fn(&serde_yaml::Value, &str) -> std::result::Result<Arc<dyn Filter>, ConfigError>
        + Send
        + Sync,
>;

/// Filter names usable in `tproxyd.filters`, with their factories.
#[derive(Clone)]
pub struct FilterRegistry {
    factories: HashMap<String, FilterFactory>,
}

impl Default for FilterRegistry {
    fn default() -> Self {
        let mut r = FilterRegistry {
            factories: HashMap::new(),
        };
        r.insert("headers", |v, key| {
            Ok(Arc::new(headers::HeadersFilter::from_yaml(v, key)?) as Arc<dyn Filter>)
        });
        r.insert("acl", |v, key| {
            Ok(Arc::new(acl::AclFilter::from_yaml(v, key)?) as Arc<dyn Filter>)
        });
        r.insert("host_check", |v, key| {
            Ok(Arc::new(host_check::HostCheckFilter::from_yaml(v, key)?) as Arc<dyn Filter>)
        });
        r
    }
}

impl FilterRegistry {
    /// Adds or replaces a named filter factory.
    pub fn insert(
        &mut self,
        name: &str,
        factory: impl Fn(&serde_yaml::Value, &str) -> std::result::Result<Arc<dyn Filter>, ConfigError>
            + Send
            + Sync
            + 'static,
    ) {
        self.factories.insert(name.to_string(), Arc::new(factory));
    }

    /// Whether `name` is known.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// Instantiates the configured filter list, in order.
    pub fn build(
        &self,
        specs: &[crate::config::FilterSpec],
    ) -> std::result::Result<Vec<Arc<dyn Filter>>, ConfigError> {
        specs
            .iter()
            .map(|spec| {
                let factory = self.factories.get(&spec.name).ok_or_else(|| {
                    let mut known: Vec<&str> = self.factories.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    ConfigError::Invalid {
                        key: spec.key.clone(),
                        reason: format!(
                            "unknown filter {:?} (known: {})",
                            spec.name,
                            known.join(", ")
                        ),
                    }
                })?;
                factory(&spec.config, &spec.key)
            })
            .collect()
    }
}

/// The filters of a process, in order, run with errors and panics turned
/// into clean failures.
#[derive(Clone, Default)]
pub struct FilterChain {
    filters: Vec<Arc<dyn Filter>>,
}

async fn guarded<T>(name: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.more_context(format!("in filter {name}"))),
        Err(_) => Error::e_explain(ErrorType::InternalError, format!("filter {name} panicked")),
    }
}

impl FilterChain {
    /// A chain running `filters` in this order.
    pub fn new(filters: Vec<Arc<dyn Filter>>) -> Self {
        FilterChain { filters }
    }

    /// True when there is nothing to run (the hot path skips the context).
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Runs the request hooks until one answers; returns that answer and
    /// the name of the filter that gave it.
    pub async fn request(
        &self,
        ctx: &mut FilterCtx,
        req: &RequestHeader,
    ) -> Result<Option<(EarlyResponse, &str)>> {
        for f in &self.filters {
            if let Verdict::Respond(r) = guarded(f.name(), f.request(ctx, req)).await? {
                return Ok(Some((r, f.name())));
            }
        }
        Ok(None)
    }

    /// Runs every upstream-request hook.
    pub async fn upstream_request(
        &self,
        ctx: &mut FilterCtx,
        req: &mut RequestHeader,
    ) -> Result<()> {
        for f in &self.filters {
            guarded(f.name(), f.upstream_request(ctx, req)).await?;
        }
        Ok(())
    }

    /// Runs every response hook.
    pub async fn response(&self, ctx: &mut FilterCtx, resp: &mut ResponseHeader) -> Result<()> {
        for f in &self.filters {
            guarded(f.name(), f.response(ctx, resp)).await?;
        }
        Ok(())
    }

    /// Runs every log hook; a panicking one is skipped.
    pub async fn log(&self, ctx: &FilterCtx, summary: &LogSummary<'_>) {
        for f in &self.filters {
            let _ = guarded(f.name(), f.log(ctx, summary).map(Ok)).await;
        }
    }
}

/// Deserialises a filter's YAML settings, naming the offending key on error.
pub fn parse_settings<T: serde::de::DeserializeOwned>(
    value: &serde_yaml::Value,
    key: &str,
) -> std::result::Result<T, ConfigError> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." {
            key.to_string()
        } else {
            format!("{key}.{path}")
        };
        ConfigError::Invalid {
            key,
            reason: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Boom(bool);

    #[async_trait]
    impl Filter for Boom {
        fn name(&self) -> &str {
            "boom"
        }
        async fn upstream_request(&self, _: &mut FilterCtx, _: &mut RequestHeader) -> Result<()> {
            if self.0 {
                panic!("boom");
            }
            Error::e_explain(ErrorType::InternalError, "no")
        }
    }

    struct Answer;

    #[async_trait]
    impl Filter for Answer {
        fn name(&self) -> &str {
            "answer"
        }
        async fn request(&self, ctx: &mut FilterCtx, _: &RequestHeader) -> Result<Verdict> {
            ctx.state.insert(7u32);
            Ok(Verdict::respond(418, "no"))
        }
    }

    fn ctx() -> FilterCtx {
        FilterCtx::new(
            FlowInfo {
                client: "192.0.2.10:1".parse().unwrap(),
                destination: "198.51.100.10:80".parse().unwrap(),
                listener: "lan".into(),
                mode: Mode::Tproxy,
                request_id: RequestId::next(),
            },
            None,
        )
    }

    #[test]
    fn errors_and_panics_are_contained_and_named() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for panics in [false, true] {
            let chain = FilterChain::new(vec![Arc::new(Boom(panics))]);
            let e = futures::executor::block_on(chain.upstream_request(&mut ctx(), &mut req))
                .unwrap_err();
            assert_eq!(e.etype(), &ErrorType::InternalError);
            assert!(e.to_string().contains("boom"), "{e}");
        }
    }

    #[test]
    fn an_answer_stops_the_request_hooks_and_state_is_kept() {
        let chain = FilterChain::new(vec![Arc::new(Answer), Arc::new(Boom(true))]);
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let mut c = ctx();
        let v = futures::executor::block_on(chain.request(&mut c, &req)).unwrap();
        assert!(matches!(
            v,
            Some((EarlyResponse { status: 418, .. }, "answer"))
        ));
        assert_eq!(c.state.get::<u32>(), Some(&7));
        assert_ne!(RequestId::next(), RequestId::next());
    }
}
