//! `acl` rule sets: allow or deny flows by their conditions. First
//! matching rule wins; no rule matching gives the set's `default`.
//!
//! ```yaml
//! - acl:
//!     default: allow          # allow | deny, when no rule matches
//!     no_name: allow          # allow | deny: flows without a name (see below)
//!     rules:
//!       - name: no-admin
//!         action: deny
//!         client: ["192.0.2.0/24"]     # CIDR or IP
//!         dst: ["198.51.100.0/24"]
//!         dst_port: [80, "8000-8999"]
//!         host: ["example.com", "*.example.com"]
//!         method: [POST, PUT]
//!         path_prefix: ["/admin"]
//!         host_set: [ads]                # sets from tproxyd.sets
//!         client_set: [kids]
//!         dst_set: [blocked-nets]
//! ```
//!
//! Flows without a name (a tunnel of what is not TLS, a ClientHello
//! without SNI, HTTP/1.0 without Host): with `no_name: allow` (the
//! default) their name conditions never match and the rules go on; with
//! `no_name: deny` a set that has name conditions denies them outright.

use super::{Check, Conditions, ConditionsSettings, Facts};
use crate::error::{invalid, parse_settings, ConfigError};
use crate::sets::Catalog;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let the flow go on.
    Allow,
    /// Refuse it (403, a TLS alert or a reset, by kind of flow).
    Deny,
}

impl Action {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

#[derive(Debug, Deserialize)]
struct RuleSettings {
    name: Option<String>,
    action: Action,
    #[serde(flatten)]
    conditions: ConditionsSettings,
    /// Whatever is left: unknown keys, refused by name.
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_yaml::Value>,
}

/// An `acl` rule set as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclSettings {
    #[serde(default = "allow")]
    default: Action,
    #[serde(default = "allow")]
    no_name: Action,
    #[serde(default)]
    rules: Vec<RuleSettings>,
}

fn allow() -> Action {
    Action::Allow
}

#[derive(Debug, Clone)]
struct Rule {
    tag: Tag,
    action: Action,
    conditions: Conditions,
}

/// What decided, made once with the rule set so that a verdict only
/// clones it: the rule's name and the verdict as logged.
#[derive(Debug, Clone)]
struct Tag {
    rule: Arc<str>,
    /// `acl:ACTION:RULE`.
    label: Arc<str>,
}

impl Tag {
    fn new(action: Action, rule: &str) -> Tag {
        Tag {
            rule: rule.into(),
            label: format!("acl:{}:{rule}", action.as_str()).into(),
        }
    }
}

/// A validated rule set.
#[derive(Debug, Clone)]
pub struct Acl {
    /// Where it is written, e.g. `tproxyd.filters[0].acl`.
    pub key: String,
    default: Action,
    no_name: Action,
    rules: Vec<Rule>,
    /// Whether any rule looks at the name (only then does `no_name` apply).
    names: bool,
    default_tag: Tag,
    no_name_tag: Tag,
}

/// What a rule set decided, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allow or deny.
    pub action: Action,
    /// The rule's name; `default` when none matched, `no-name` when
    /// `no_name` decided.
    pub rule: Arc<str>,
    /// As logged: `acl:deny:no-admin` (made with the rule set, not for
    /// each flow).
    pub label: Arc<str>,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

/// The outcome of [`Acl::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Decided.
    Decided(Verdict),
    /// A rule on the destination address comes before any decision, and
    /// the name is not resolved yet.
    NeedsDestination,
}

/// One rule's part in [`Acl::explain`].
#[derive(Debug, Clone)]
pub struct RuleTrace {
    /// The rule (or `default`, `no-name`).
    pub rule: String,
    /// Its action.
    pub action: Action,
    /// Whether it matched (and so decided).
    pub matched: bool,
    /// Why, condition by condition.
    pub why: Vec<String>,
}

impl AclSettings {
    /// Validates the rule set at dotted path `key`; its set names must be
    /// in `sets`.
    pub fn validate(self, key: &str, sets: &Catalog) -> Result<Acl, ConfigError> {
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, r) in self.rules.into_iter().enumerate() {
            let key = format!("{key}.rules[{i}]");
            if let Some(k) = r.unknown.keys().next() {
                return Err(invalid(&key, format!("unknown field `{k}`")));
            }
            let name = r.name.unwrap_or_else(|| format!("#{i}"));
            rules.push(Rule {
                tag: Tag::new(r.action, &name),
                action: r.action,
                conditions: r.conditions.validate(&key, sets)?,
            });
        }
        Ok(Acl {
            key: key.to_string(),
            names: rules.iter().any(|r| r.conditions.on_name()),
            default: self.default,
            no_name: self.no_name,
            default_tag: Tag::new(self.default, "default"),
            no_name_tag: Tag::new(Action::Deny, "no-name"),
            rules,
        })
    }
}

impl Acl {
    /// Parses and validates the rule set written at `key`.
    pub fn from_yaml(
        value: &serde_yaml::Value,
        key: &str,
        sets: &Catalog,
    ) -> Result<Acl, ConfigError> {
        parse_settings::<AclSettings>(value, key)?.validate(key, sets)
    }

    fn verdict(action: Action, tag: &Tag) -> Verdict {
        Verdict {
            action,
            rule: tag.rule.clone(),
            label: tag.label.clone(),
        }
    }

    /// The first matching rule's verdict (else the default's).
    pub fn decide(&self, f: &Facts<'_>) -> Outcome {
        if f.name.is_none() && self.names && self.no_name == Action::Deny {
            return Outcome::Decided(Self::verdict(Action::Deny, &self.no_name_tag));
        }
        for r in &self.rules {
            match r.conditions.check(f) {
                Check::Match => return Outcome::Decided(Self::verdict(r.action, &r.tag)),
                Check::NoMatch => {}
                Check::NeedsDestination => return Outcome::NeedsDestination,
            }
        }
        Outcome::Decided(Self::verdict(self.default, &self.default_tag))
    }

    /// Every rule in order up to the one that decides, each with why it
    /// matched or not, then the default if it decided.
    pub fn explain(&self, f: &Facts<'_>) -> Vec<RuleTrace> {
        if f.name.is_none() && self.names && self.no_name == Action::Deny {
            return vec![RuleTrace {
                rule: "no-name".into(),
                action: Action::Deny,
                matched: true,
                why: vec!["+ the flow has no name and no_name is deny".into()],
            }];
        }
        let mut out = Vec::new();
        for r in &self.rules {
            let (check, why) = r.conditions.explain(f);
            let matched = check == Check::Match;
            out.push(RuleTrace {
                rule: r.tag.rule.to_string(),
                action: r.action,
                matched,
                why,
            });
            if check != Check::NoMatch {
                return out;
            }
        }
        out.push(RuleTrace {
            rule: "default".into(),
            action: self.default,
            matched: true,
            why: vec!["+ no rule matched".into()],
        });
        out
    }

    /// Whether a rule on the destination address could decide before any
    /// rule on the name (then a name must be resolved first).
    pub fn needs_destination(&self) -> bool {
        self.rules.iter().any(|r| r.conditions.needs_destination())
    }
}

#[cfg(test)]
mod tests;
