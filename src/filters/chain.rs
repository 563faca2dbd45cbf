//! The filters of a process in order, run with errors and panics turned
//! into clean failures: one bad filter fails its request, never the proxy.

use super::{EarlyResponse, Filter, FilterCtx, LogSummary, RequestHeader, ResponseHeader, Verdict};
use futures::FutureExt;
use pingora_error::{Error, ErrorType, Result};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// The filters of a process, in order.
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

    /// True when there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Runs the request hooks until one answers; returns that answer.
    pub async fn request(
        &self,
        ctx: &mut FilterCtx,
        req: &RequestHeader,
    ) -> Result<Option<EarlyResponse>> {
        for f in &self.filters {
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
}
