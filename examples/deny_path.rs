//! A custom filter on top of tproxyd, registered by name so that the YAML
//! places it in the chain and gives it its settings:
//!
//! ```yaml
//! tproxyd:
//!   filters:
//!     - deny_path: { pattern: "/private" }
//! ```
//! Requests whose path contains the pattern get 403; all others reach the
//! origin with an `X-Client-IP` header. Run it like tproxyd itself:
//! `cargo run --example deny_path -- -c conf.yaml`.
use std::sync::Arc;
use tproxyd::config::ConfigError;
use tproxyd::filters::{Filter, FilterCtx, RequestHeader, Result, Verdict};

struct DenyPath {
    pattern: String,
}

#[async_trait::async_trait]
impl Filter for DenyPath {
    fn name(&self) -> &str {
        "deny_path"
    }

    async fn request(&self, ctx: &mut FilterCtx, req: &RequestHeader) -> Result<Verdict> {
        if req.uri.path().contains(&self.pattern) {
            ctx.set_decision(format!("deny_path:{}", self.pattern));
            return Ok(Verdict::respond(
                403,
                "403 Forbidden: this path is blocked\n",
            ));
        }
        Ok(Verdict::Continue)
    }

    async fn upstream_request(&self, ctx: &mut FilterCtx, req: &mut RequestHeader) -> Result<()> {
        req.insert_header("X-Client-IP", ctx.flow.client.ip().to_string())
    }
}

fn main() {
    tproxyd::Tproxyd::new()
        .register_filter("deny_path", |settings, key| {
            let pattern = settings["pattern"]
                .as_str()
                .ok_or_else(|| ConfigError::Invalid {
                    key: format!("{key}.pattern"),
                    reason: "a string is required".into(),
                })?;
            Ok(Arc::new(DenyPath {
                pattern: pattern.into(),
            }))
        })
        .run()
}
