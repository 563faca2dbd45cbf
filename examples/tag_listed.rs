//! A custom filter that looks names up in a set from `tproxyd.sets`: the
//! origin of a request whose name is in the set gets `X-Listed: <set>`
//! (a school's content filter behind tproxyd could act on it).
//!
//! ```yaml
//! tproxyd:
//!   sets:
//!     trackers: { file: /etc/tproxyd/trackers.txt }
//!   filters:
//!     - tag_listed: { set: trackers }
//! ```
//! Run it like tproxyd itself: `cargo run --example tag_listed -- -c conf.yaml`.
use std::sync::Arc;
use tproxyd::config::ConfigError;
use tproxyd::filters::{Filter, FilterCtx, RequestHeader, Result};

struct TagListed {
    set: String,
}

#[async_trait::async_trait]
impl Filter for TagListed {
    fn name(&self) -> &str {
        "tag_listed"
    }

    async fn upstream_request(&self, ctx: &mut FilterCtx, req: &mut RequestHeader) -> Result<()> {
        let listed = match (ctx.set(&self.set), ctx.name()) {
            (Some(set), Some(name)) => set.contains_name(&name),
            _ => false,
        };
        if listed {
            req.insert_header("X-Listed", self.set.as_str())?;
        }
        Ok(())
    }
}

fn main() {
    tproxyd::Tproxyd::new()
        .register_filter("tag_listed", |settings, key| {
            let set = settings["set"]
                .as_str()
                .ok_or_else(|| ConfigError::Invalid {
                    key: format!("{key}.set"),
                    reason: "the name of a set in tproxyd.sets is required".into(),
                })?;
            Ok(Arc::new(TagListed { set: set.into() }))
        })
        .run()
}
