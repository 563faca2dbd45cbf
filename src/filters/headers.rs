//! The `headers` built-in: add, set and remove request and response
//! headers, with variables.
//!
//! ```yaml
//! filters:
//!   - headers:
//!       request:
//!         add: { X-Client: "$client_ip" }   # another field line
//!         set: { X-Gateway: "gw1" }         # replaces any existing
//!         remove: [X-Debug]
//!       response:
//!         set: { X-Request-Id: "$request_id" }
//! ```
//! Within one side the order is remove, set, add.

use super::template::Template;
use super::{Filter, FilterCtx, Hooks, RequestHeader, ResponseHeader, Result};
use crate::error::parse_settings;
use crate::error::ConfigError;
use async_trait::async_trait;
use http::HeaderName;
use indexmap::IndexMap;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OpsRaw {
    add: IndexMap<String, String>,
    set: IndexMap<String, String>,
    remove: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HeadersRaw {
    request: OpsRaw,
    response: OpsRaw,
}

/// Header operations for one direction.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    add: Vec<(HeaderName, Template)>,
    set: Vec<(HeaderName, Template)>,
    remove: Vec<HeaderName>,
}

fn header_name(key: &str, name: &str) -> std::result::Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConfigError::Invalid {
        key: key.to_string(),
        reason: format!("{name:?} is not a valid HTTP header name"),
    })
}

/// Parses `name: template` pairs; `key` is the map's dotted path.
pub fn parse_pairs(
    key: &str,
    pairs: &IndexMap<String, String>,
) -> std::result::Result<Vec<(HeaderName, Template)>, ConfigError> {
    pairs
        .iter()
        .map(|(name, value)| {
            let k = format!("{key}.{name}");
            let n = header_name(&k, name)?;
            let t =
                Template::parse(value).map_err(|reason| ConfigError::Invalid { key: k, reason })?;
            Ok((n, t))
        })
        .collect()
}

impl HeaderOps {
    fn parse(key: &str, raw: &OpsRaw) -> std::result::Result<Self, ConfigError> {
        Ok(HeaderOps {
            add: parse_pairs(&format!("{key}.add"), &raw.add)?,
            set: parse_pairs(&format!("{key}.set"), &raw.set)?,
            remove: raw
                .remove
                .iter()
                .enumerate()
                .map(|(i, n)| header_name(&format!("{key}.remove[{i}]"), n))
                .collect::<std::result::Result<_, _>>()?,
        })
    }

    fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

/// Applies [`HeaderOps`] to a request or response header.
macro_rules! apply_ops {
    ($ops:expr, $ctx:expr, $h:expr) => {{
        for n in &$ops.remove {
            $h.remove_header(n);
        }
        for (n, t) in &$ops.set {
            $h.insert_header(n.clone(), t.render($ctx))?;
        }
        for (n, t) in &$ops.add {
            $h.append_header(n.clone(), t.render($ctx))?;
        }
    }};
}

/// The `headers` filter.
#[derive(Debug, Clone, Default)]
pub struct HeadersFilter {
    request: HeaderOps,
    response: HeaderOps,
}

impl HeadersFilter {
    /// From the filter's YAML settings.
    pub fn from_yaml(
        value: &serde_yaml::Value,
        key: &str,
    ) -> std::result::Result<Self, ConfigError> {
        let raw: HeadersRaw = parse_settings(value, key)?;
        Ok(HeadersFilter {
            request: HeaderOps::parse(&format!("{key}.request"), &raw.request)?,
            response: HeaderOps::parse(&format!("{key}.response"), &raw.response)?,
        })
    }

    /// Only request additions: the core's `tproxyd.request_headers.add`.
    pub fn request_add(add: Vec<(HeaderName, Template)>) -> Self {
        HeadersFilter {
            request: HeaderOps {
                add,
                ..Default::default()
            },
            response: HeaderOps::default(),
        }
    }

    /// True when the filter would change nothing.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

#[async_trait]
impl Filter for HeadersFilter {
    fn name(&self) -> &str {
        "headers"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            upstream_request: true,
            response: true,
            ..Hooks::NONE
        }
    }

    async fn upstream_request(&self, ctx: &mut FilterCtx, req: &mut RequestHeader) -> Result<()> {
        apply_ops!(self.request, ctx, req);
        Ok(())
    }

    async fn response(&self, ctx: &mut FilterCtx, resp: &mut ResponseHeader) -> Result<()> {
        apply_ops!(self.response, ctx, resp);
        Ok(())
    }
}
