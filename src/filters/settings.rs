//! The filter settings of the `tproxyd:` section: `forwarding`,
//! `request_headers` and the `filters` list, validated together because a
//! `Via` in `request_headers.add` is really a forwarding setting.

use super::forwarding::{Forwarding, ForwardingSettings};
use super::headers::{parse_pairs, HeadersFilter};
use super::template::Template;
use super::{Filter, FilterChain, FilterRegistry, FilterSpec};
use crate::error::ConfigError;
use crate::policy::Acl;
use crate::sets::Catalog;
use serde::Deserialize;
use std::sync::Arc;

/// `tproxyd.request_headers` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestHeadersSettings {
    /// Appended in order, values may use variables. A `Via` here sets our
    /// Via entry (see [`super::forwarding`]), appended to an existing list.
    pub add: indexmap::IndexMap<String, String>,
}

/// The validated filter settings; [`Filters::chain`] instantiates
/// them.
#[derive(Debug, Clone)]
pub struct Filters {
    /// Via / X-Forwarded-For / Forwarded and the loop token.
    pub forwarding: Forwarding,
    /// Added to each forwarded request, in order (without `Via`).
    pub add_request_headers: Vec<(http::HeaderName, Template)>,
    /// The configured filter list, in order, not yet instantiated
    /// (without its `acl` entries).
    pub filters: Vec<FilterSpec>,
    /// The list's `acl` entries, in order: the rule sets of the decision.
    pub acls: Vec<Acl>,
}

impl Filters {
    /// Validates `tproxyd.request_headers`, `tproxyd.forwarding` and the
    /// shape of `tproxyd.filters` (each filter's own settings are checked
    /// when [`Filters::chain`] builds it).
    pub fn validate(
        request_headers: RequestHeadersSettings,
        forwarding: ForwardingSettings,
        filters: Vec<serde_yaml::Value>,
        sets: &Catalog,
    ) -> Result<Filters, ConfigError> {
        let mut add = request_headers.add;
        let legacy_via = add
            .keys()
            .find(|k| k.eq_ignore_ascii_case("via"))
            .cloned()
            .and_then(|k| add.shift_remove(&k));
        let (acls, filters): (Vec<FilterSpec>, Vec<FilterSpec>) =
            FilterSpec::parse_list(filters, "tproxyd.filters")?
                .into_iter()
                .partition(|f| f.name == "acl");
        Ok(Filters {
            add_request_headers: parse_pairs("tproxyd.request_headers.add", &add)?,
            forwarding: forwarding.validate(legacy_via.as_deref())?,
            filters,
            acls: acls
                .iter()
                .map(|f| Acl::from_yaml(&f.config, &f.key, sets))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The full chain: forwarding headers, then `request_headers.add`, then
    /// `tproxyd.filters` built by `registry`, then `extra` (added in code).
    pub fn chain(
        &self,
        registry: &FilterRegistry,
        extra: &[Arc<dyn Filter>],
    ) -> Result<FilterChain, ConfigError> {
        let mut filters: Vec<Arc<dyn Filter>> = Vec::new();
        if !self.add_request_headers.is_empty() {
            filters.push(Arc::new(HeadersFilter::request_add(
                self.add_request_headers.clone(),
            )));
        }
        filters.extend(registry.build(&self.filters)?);
        filters.extend(extra.iter().cloned());
        Ok(FilterChain::new(filters).with_forwarding(self.forwarding.clone()))
    }
}
