//! Filter names usable in `tproxyd.filters`, and the list as configured.

use super::{headers, host_check, Filter};
use crate::error::{invalid, ConfigError};
use std::collections::HashMap;
use std::sync::Arc;

/// Builds a filter from its YAML settings (the value under its name in
/// `tproxyd.filters`); `key` is that value's dotted path, for errors.
pub type FilterFactory = Arc<
    dyn Fn(&serde_yaml::Value, &str) -> std::result::Result<Arc<dyn Filter>, ConfigError>
        + Send
        + Sync,
>;

/// One entry of `tproxyd.filters`: a filter name and its settings, to be
/// instantiated by a [`FilterRegistry`].
#[derive(Debug, Clone)]
pub struct FilterSpec {
    /// The filter's registered name (`acl`, `headers`, a custom one, …).
    pub name: String,
    /// Dotted path of its settings, e.g. `tproxyd.filters[1].acl`.
    pub key: String,
    /// Its settings as written.
    pub config: serde_yaml::Value,
}

impl FilterSpec {
    /// Reads the `tproxyd.filters` list (at dotted path `key`): each entry
    /// a map with exactly one key, the filter's name.
    pub fn parse_list(
        items: Vec<serde_yaml::Value>,
        key: &str,
    ) -> Result<Vec<FilterSpec>, ConfigError> {
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| FilterSpec::parse(item, &format!("{key}[{i}]")))
            .collect()
    }

    fn parse(item: serde_yaml::Value, key: &str) -> Result<FilterSpec, ConfigError> {
        let serde_yaml::Value::Mapping(m) = item else {
            return Err(invalid(
                key,
                "each filter is a map with one key, its name (e.g. `- acl: {...}`)",
            ));
        };
        let mut entries = m.into_iter();
        let (Some((name, config)), None) = (entries.next(), entries.next()) else {
            return Err(invalid(
                key,
                "each filter is a map with exactly one key, its name",
            ));
        };
        let name = name
            .as_str()
            .ok_or_else(|| invalid(key, "a filter name must be a string"))?
            .to_string();
        let config = match config {
            serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
            v => v,
        };
        Ok(FilterSpec {
            key: format!("{key}.{name}"),
            name,
            config,
        })
    }
}

/// Filter names usable in `tproxyd.filters`, with their factories.
#[derive(Clone)]
pub struct FilterRegistry {
    factories: HashMap<String, FilterFactory>,
}

impl Default for FilterRegistry {
    /// The built-ins: `headers`, `host_check`, `rate_limit` (`acl` is
    /// the decision's, see [`super::Filters`]).
    fn default() -> Self {
        let mut r = FilterRegistry {
            factories: HashMap::new(),
        };
        r.insert("headers", |v, key| {
            Ok(Arc::new(headers::HeadersFilter::from_yaml(v, key)?) as Arc<dyn Filter>)
        });
        r.insert("rate_limit", |v, key| {
            Ok(Arc::new(super::rate_limit::RateLimitFilter::from_yaml(v, key)?) as Arc<dyn Filter>)
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

    /// Instantiates the configured filter list, in order; an unknown name
    /// is an error naming its key and the known names.
    pub fn build(&self, specs: &[FilterSpec]) -> Result<Vec<Arc<dyn Filter>>, ConfigError> {
        specs
            .iter()
            .map(|spec| {
                let factory = self.factories.get(&spec.name).ok_or_else(|| {
                    let mut known: Vec<&str> = self.factories.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    invalid(
                        &spec.key,
                        format!(
                            "unknown filter {:?} (known: {})",
                            spec.name,
                            known.join(", ")
                        ),
                    )
                })?;
                factory(&spec.config, &spec.key)
            })
            .collect()
    }
}
