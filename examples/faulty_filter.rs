//! A filter that fails on purpose — used by the lab tests to prove that a
//! filter's error or panic becomes a clean 500 for that request only, and
//! that the proxy keeps serving. Paths ending in `/filter-error` make it
//! return an error, `/filter-panic` make it panic, in the phase named by
//! the first path segment (`/request/...`, `/upstream/...`, `/response/...`).
use tproxyd::filters::{
    Error, ErrorType, Filter, FilterCtx, RequestHeader, ResponseHeader, Result, Verdict,
};

struct Faulty;

/// Remembers the request path for the later phases.
#[derive(Clone)]
struct Path(String);

fn fail(ctx: &FilterCtx, phase: &str) -> Result<()> {
    let Some(Path(path)) = ctx.state.get::<Path>() else {
        return Ok(());
    };
    if !path.starts_with(&format!("/{phase}/")) {
        return Ok(());
    }
    if path.ends_with("/filter-panic") {
        panic!("faulty filter panics in {phase}");
    }
    if path.ends_with("/filter-error") {
        return Error::e_explain(
            ErrorType::InternalError,
            format!("faulty filter fails in {phase}"),
        );
    }
    Ok(())
}

#[async_trait::async_trait]
impl Filter for Faulty {
    fn name(&self) -> &str {
        "faulty"
    }

    async fn request(&self, ctx: &mut FilterCtx, req: &RequestHeader) -> Result<Verdict> {
        ctx.state.insert(Path(req.uri.path().to_string()));
        fail(ctx, "request").map(|_| Verdict::Continue)
    }

    async fn upstream_request(&self, ctx: &mut FilterCtx, _req: &mut RequestHeader) -> Result<()> {
        fail(ctx, "upstream")
    }

    async fn response(&self, ctx: &mut FilterCtx, _resp: &mut ResponseHeader) -> Result<()> {
        fail(ctx, "response")
    }
}

fn main() {
    tproxyd::Tproxyd::new().filter(Faulty).run()
}
