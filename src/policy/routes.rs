//! Routes (`tproxyd.routes`): which egress each flow leaves through. A
//! list of rules with the same conditions as `acl` rules, evaluated in
//! order after the rule sets; the first that matches chooses its egress,
//! and a flow no route matches leaves `direct`.
//!
//! ```yaml
//! tproxyd:
//!   routes:
//!     - { name: work, egress: corp, host_set: [work-sites] }
//!     - { egress: vpn, client: ["192.0.2.64/26"] }
//! ```

use super::{Check, Conditions, ConditionsSettings, Facts};
use crate::egress::{Egress, Egresses};
use crate::error::{invalid, ConfigError};
use crate::sets::Catalog;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One `tproxyd.routes[i]` as written.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteSettings {
    name: Option<String>,
    egress: String,
    #[serde(flatten)]
    conditions: ConditionsSettings,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Clone)]
struct Route {
    name: Arc<str>,
    egress: Arc<Egress>,
    conditions: Conditions,
}

/// The validated routes.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<Route>,
    direct: Arc<Egress>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            routes: Vec::new(),
            direct: Egress::builtin(),
        }
    }
}

/// The egress chosen for a flow, and by which route.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The egress.
    pub egress: Arc<Egress>,
    /// The route's name; `None` when no route matched (`direct`).
    pub route: Option<Arc<str>>,
}

/// One route's part in [`Routes::explain`].
#[derive(Debug, Clone)]
pub struct RouteTrace {
    /// The route's name (`default` for the implicit last one).
    pub route: String,
    /// Its egress.
    pub egress: String,
    /// Whether it matched (and so chose).
    pub matched: bool,
    /// Why, condition by condition.
    pub why: Vec<String>,
}

impl Routes {
    /// Validates `tproxyd.routes`: egresses and sets must exist.
    pub fn validate(
        list: Vec<RouteSettings>,
        egresses: &Egresses,
        sets: &Catalog,
    ) -> Result<Routes, ConfigError> {
        let mut routes = Vec::with_capacity(list.len());
        for (i, r) in list.into_iter().enumerate() {
            let key = format!("tproxyd.routes[{i}]");
            if let Some(k) = r.unknown.keys().next() {
                return Err(invalid(&key, format!("unknown field `{k}`")));
            }
            routes.push(Route {
                name: r.name.unwrap_or_else(|| format!("#{i}")).into(),
                egress: egresses.get(&r.egress, &format!("{key}.egress"))?,
                conditions: r.conditions.validate(&key, sets)?,
            });
        }
        Ok(Routes {
            routes,
            direct: egresses.direct().clone(),
        })
    }

    /// The first matching route's egress (else `direct`); `None` when a
    /// route on the destination address comes first and it is not known.
    pub fn choose(&self, f: &Facts<'_>) -> Option<Chosen> {
        for r in &self.routes {
            match r.conditions.check(f) {
                Check::Match => {
                    return Some(Chosen {
                        egress: r.egress.clone(),
                        route: Some(r.name.clone()),
                    })
                }
                Check::NoMatch => {}
                Check::NeedsDestination => return None,
            }
        }
        Some(Chosen {
            egress: self.direct.clone(),
            route: None,
        })
    }

    /// Every route in order up to the one that chooses, with why.
    pub fn explain(&self, f: &Facts<'_>) -> Vec<RouteTrace> {
        let mut out = Vec::new();
        for r in &self.routes {
            let (check, why) = r.conditions.explain(f);
            out.push(RouteTrace {
                route: r.name.to_string(),
                egress: r.egress.name.to_string(),
                matched: check == Check::Match,
                why,
            });
            if check != Check::NoMatch {
                return out;
            }
        }
        out.push(RouteTrace {
            route: "default".into(),
            egress: self.direct.name.to_string(),
            matched: true,
            why: vec!["+ no route matched".into()],
        });
        out
    }

    /// Whether there is no route (every flow leaves `direct`).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The egresses routes may choose, besides `direct`.
    pub fn egresses(&self) -> impl Iterator<Item = &Arc<Egress>> {
        self.routes.iter().map(|r| &r.egress)
    }
}
