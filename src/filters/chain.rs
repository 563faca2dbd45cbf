//! The filters of a process in order, run with errors and panics turned
//! into clean failures: one bad filter fails its request, never the proxy.

use super::forwarding::Forwarding;
use super::{
    EarlyResponse, Filter, FilterCtx, Hooks, LogSummary, RequestHeader, ResponseHeader, Verdict,
};
use futures::FutureExt;
use pingora_error::{Error, ErrorType, Result};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// The filters of a process, in order, listed per hook: each hook runs only
/// the filters whose [`Filter::hooks`] name it, so a hook a filter leaves
/// at its default costs nothing (calling it would box a future per
/// request).
///
/// The forwarding headers (`tproxyd.forwarding`) come first and are applied
/// in place, not through [`Filter`]: a built-in that cannot wait needs no
/// boxed future per request.
#[derive(Clone, Default)]
pub struct FilterChain {
    forwarding: Option<Arc<Forwarding>>,
    request: Vec<Arc<dyn Filter>>,
    upstream_request: Vec<Arc<dyn Filter>>,
    response: Vec<Arc<dyn Filter>>,
    log: Vec<Arc<dyn Filter>>,
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
        let with = |hook: fn(Hooks) -> bool| -> Vec<Arc<dyn Filter>> {
            filters
                .iter()
                .filter(|f| hook(f.hooks()))
                .cloned()
                .collect()
        };
        FilterChain {
            forwarding: None,
            request: with(|h| h.request),
            upstream_request: with(|h| h.upstream_request),
            response: with(|h| h.response),
            log: with(|h| h.log),
        }
    }

    /// The same chain with `forwarding` applied before its filters'
    /// upstream-request hooks.
    pub fn with_forwarding(mut self, forwarding: Forwarding) -> Self {
        self.forwarding = Some(Arc::new(forwarding));
        self
    }

    /// True when there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.forwarding.is_none()
            && self.request.is_empty()
            && self.upstream_request.is_empty()
            && self.response.is_empty()
            && self.log.is_empty()
    }

    /// Runs the request hooks until one answers; returns that answer.
    pub async fn request(
        &self,
        ctx: &mut FilterCtx,
        req: &RequestHeader,
    ) -> Result<Option<EarlyResponse>> {
        for f in &self.request {
            if let Verdict::Respond(r) = guarded(f.name(), f.request(ctx, req)).await? {
                return Ok(Some(r));
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
        if let Some(f) = &self.forwarding {
            f.apply(ctx, req)
                .map_err(|e| e.more_context("in filter forwarding"))?;
        }
        for f in &self.upstream_request {
            guarded(f.name(), f.upstream_request(ctx, req)).await?;
        }
        Ok(())
    }

    /// Runs every response hook.
    pub async fn response(&self, ctx: &mut FilterCtx, resp: &mut ResponseHeader) -> Result<()> {
        for f in &self.response {
            guarded(f.name(), f.response(ctx, resp)).await?;
        }
        Ok(())
    }

    /// Runs every log hook; a panicking one is skipped.
    pub async fn log(&self, ctx: &FilterCtx, summary: &LogSummary<'_>) {
        for f in &self.log {
            let _ = guarded(f.name(), f.log(ctx, summary).map(Ok)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::test_ctx;
    use crate::flow::Refusal;
    use async_trait::async_trait;

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
        test_ctx("192.0.2.10:1", "198.51.100.10:80", None)
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
        let answer = v.expect("an early answer");
        assert_eq!(answer.status, 418);
        assert_eq!(answer.refusal, Some(Refusal::Filter));
        assert_eq!(c.state.get::<u32>(), Some(&7));
    }

    /// `Answer` again, but saying it only has an upstream-request hook.
    struct Declared(Hooks);

    #[async_trait]
    impl Filter for Declared {
        fn name(&self) -> &str {
            "declared"
        }
        fn hooks(&self) -> Hooks {
            self.0
        }
        async fn request(&self, ctx: &mut FilterCtx, req: &RequestHeader) -> Result<Verdict> {
            Answer.request(ctx, req).await
        }
    }

    #[test]
    fn a_hook_runs_only_for_filters_that_name_it() {
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let run = |hooks: Hooks| {
            let chain = FilterChain::new(vec![Arc::new(Declared(hooks))]);
            futures::executor::block_on(chain.request(&mut ctx(), &req)).unwrap()
        };
        assert!(run(Hooks::ALL).is_some(), "named: runs");
        let only_upstream = Hooks {
            upstream_request: true,
            ..Hooks::NONE
        };
        assert!(run(only_upstream).is_none(), "not named: skipped");
        assert!(!FilterChain::new(vec![Arc::new(Declared(only_upstream))]).is_empty());
        assert!(FilterChain::new(vec![Arc::new(Declared(Hooks::NONE))]).is_empty());
    }
}
