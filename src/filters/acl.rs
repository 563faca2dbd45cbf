//! The `acl` built-in: allow or deny requests by client, destination,
//! Host, method and path. First matching rule wins; a rule matches when
//! every condition it has matches (each list: any of its entries).
//!
//! ```yaml
//! filters:
//!   - acl:
//!       default: allow                  # allow | deny, when no rule matches
//!       rules:
//!         - name: no-admin
//!           action: deny
//!           client: ["192.0.2.0/24"]     # CIDR or IP
//!           dst: ["198.51.100.0/24"]
//!           dst_port: [80, "8000-8999"]
//!           host: ["example.com", "*.example.com"]
//!           method: [POST, PUT]
//!           path_prefix: ["/admin"]
//! ```
//! A denied request gets `403` with a short body naming the rule; the access
//! log records the decision.

use super::{Filter, FilterCtx, Hooks, RequestHeader, Result, Verdict};
pub use crate::addr::{host_name, parse_net};
use crate::error::{parse_settings, ConfigError};
use crate::flow::Refusal;
use async_trait::async_trait;
use ipnet::IpNet;
use serde::Deserialize;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Forward the request.
    Allow,
    /// Answer 403.
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PortRaw {
    One(u16),
    Range(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleRaw {
    name: Option<String>,
    action: Action,
    #[serde(default)]
    client: Vec<String>,
    #[serde(default)]
    dst: Vec<String>,
    #[serde(default)]
    dst_port: Vec<PortRaw>,
    /// Host patterns; for TLS passthrough listeners they match the SNI
    /// (`sni` is accepted as another name for it).
    #[serde(default, alias = "sni")]
    host: Vec<String>,
    #[serde(default)]
    method: Vec<String>,
    #[serde(default)]
    path_prefix: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclRaw {
    #[serde(default = "allow")]
    default: Action,
    #[serde(default)]
    rules: Vec<RuleRaw>,
}

fn allow() -> Action {
    Action::Allow
}

/// A Host pattern: an exact name or `*.suffix` (any depth of subdomain,
/// not the suffix itself). Case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `example.com`
    Exact(String),
    /// `*.example.com`, stored as `.example.com`
    Suffix(String),
}

impl HostPattern {
    /// Parses a pattern; `*` is only allowed as a leading `*.` label.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        let (p, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest.to_string()),
            None => (HostPattern::Exact(lower.clone()), lower.clone()),
        };
        let rest = rest.trim_start_matches('[').trim_end_matches(']');
        if rest.is_empty()
            || rest.contains('*')
            || !rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(format!("{s:?} is not a host name or *.suffix pattern"));
        }
        Ok(match p {
            HostPattern::Exact(_) => HostPattern::Exact(rest.to_string()),
            s => s,
        })
    }

    /// Whether `host` (already without port, lower-case) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(e) => host == e,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    action: Action,
    client: Vec<IpNet>,
    dst: Vec<IpNet>,
    dst_port: Vec<(u16, u16)>,
    host: Vec<HostPattern>,
    method: Vec<String>,
    path_prefix: Vec<String>,
}

fn nets(key: &str, list: &[String]) -> std::result::Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            parse_net(s).map_err(|reason| ConfigError::Invalid {
                key: format!("{key}[{i}]"),
                reason,
            })
        })
        .collect()
}

impl Rule {
    fn parse(key: &str, i: usize, raw: RuleRaw) -> std::result::Result<Rule, ConfigError> {
        let invalid = |k: String, reason: String| ConfigError::Invalid { key: k, reason };
        let mut dst_port = Vec::new();
        for (j, p) in raw.dst_port.iter().enumerate() {
            let range = match p {
                PortRaw::One(n) => Some((*n, *n)),
                PortRaw::Range(s) => match s.split_once('-') {
                    Some((a, b)) => a.trim().parse().ok().zip(b.trim().parse().ok()),
                    None => s.trim().parse().ok().map(|n| (n, n)),
                },
            }
            .filter(|(a, b)| a <= b)
            .ok_or_else(|| {
                invalid(
                    format!("{key}.dst_port[{j}]"),
                    "expected a port or a range like \"8000-8999\"".into(),
                )
            })?;
            dst_port.push(range);
        }
        let host = raw
            .host
            .iter()
            .enumerate()
            .map(|(j, h)| HostPattern::parse(h).map_err(|r| invalid(format!("{key}.host[{j}]"), r)))
            .collect::<std::result::Result<_, _>>()?;
        let method = raw
            .method
            .iter()
            .enumerate()
            .map(|(j, m)| {
                http::Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                    .map(|m| m.to_string())
                    .map_err(|_| {
                        invalid(
                            format!("{key}.method[{j}]"),
                            format!("{m:?} is not an HTTP method"),
                        )
                    })
            })
            .collect::<std::result::Result<_, _>>()?;
        for (j, p) in raw.path_prefix.iter().enumerate() {
            if !p.starts_with('/') {
                return Err(invalid(
                    format!("{key}.path_prefix[{j}]"),
                    format!("{p:?} must start with /"),
                ));
            }
        }
        Ok(Rule {
            name: raw.name.unwrap_or_else(|| format!("#{i}")),
            action: raw.action,
            client: nets(&format!("{key}.client"), &raw.client)?,
            dst: nets(&format!("{key}.dst"), &raw.dst)?,
            dst_port,
            host,
            method,
            path_prefix: raw.path_prefix,
        })
    }

    fn matches(&self, ctx: &FilterCtx, req: &RequestHeader) -> bool {
        let f = &ctx.flow;
        (self.client.is_empty() || self.client.iter().any(|n| n.contains(&f.client.ip())))
            && (self.dst.is_empty() || self.dst.iter().any(|n| n.contains(&f.destination.ip())))
            && (self.dst_port.is_empty()
                || self
                    .dst_port
                    .iter()
                    .any(|(a, b)| (*a..=*b).contains(&f.destination.port())))
            && (self.host.is_empty() || {
                let h = ctx.host.as_deref().map(host_name).unwrap_or_default();
                self.host.iter().any(|p| p.matches(&h))
            })
            && (self.method.is_empty() || self.method.iter().any(|m| m == req.method.as_str()))
            && (self.path_prefix.is_empty() || {
                let path = req.uri.path();
                self.path_prefix
                    .iter()
                    .any(|p| path.starts_with(p.as_str()))
            })
    }
}

/// The `acl` filter.
#[derive(Debug, Clone)]
pub struct AclFilter {
    default: Action,
    rules: Vec<Rule>,
}

impl AclFilter {
    /// From the filter's YAML settings.
    pub fn from_yaml(
        value: &serde_yaml::Value,
        key: &str,
    ) -> std::result::Result<Self, ConfigError> {
        let raw: AclRaw = parse_settings(value, key)?;
        let rules = raw
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| Rule::parse(&format!("{key}.rules[{i}]"), i, r))
            .collect::<std::result::Result<_, _>>()?;
        Ok(AclFilter {
            default: raw.default,
            rules,
        })
    }

    /// The action for a request, and the name of the rule that decided it
    /// (`None`: the default).
    pub fn decide(&self, ctx: &FilterCtx, req: &RequestHeader) -> (Action, Option<&str>) {
        self.rules
            .iter()
            .find(|r| r.matches(ctx, req))
            .map_or((self.default, None), |r| (r.action, Some(r.name.as_str())))
    }
}

#[async_trait]
impl Filter for AclFilter {
    fn name(&self) -> &str {
        "acl"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            request: true,
            ..Hooks::NONE
        }
    }

    async fn request(&self, ctx: &mut FilterCtx, req: &RequestHeader) -> Result<Verdict> {
        let (action, rule) = self.decide(ctx, req);
        let rule = rule.unwrap_or("default");
        match action {
            Action::Allow => {
                ctx.set_decision(format!("acl:allow:{rule}"));
                Ok(Verdict::Continue)
            }
            Action::Deny => {
                ctx.set_decision(format!("acl:deny:{rule}"));
                Ok(Verdict::refuse(
                    Refusal::Acl,
                    403,
                    format!("403 Forbidden: denied by gateway policy (rule {rule})\n"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::test_ctx as ctx;

    fn acl(yaml: &str) -> AclFilter {
        AclFilter::from_yaml(&serde_yaml::from_str(yaml).unwrap(), "acl").unwrap()
    }

    fn req(method: &str, path: &str) -> RequestHeader {
        RequestHeader::build(method, path.as_bytes(), None).unwrap()
    }

    #[test]
    fn first_match_wins_and_all_conditions_must_match() {
        let a = acl(r#"
default: deny
rules:
  - { name: admin, action: deny, path_prefix: [/admin] }
  - { name: lan-web, action: allow, client: ["192.0.2.0/24"], dst_port: [80, "8000-8999"], method: [get, HEAD] }
  - { name: v6, action: allow, client: ["2001:db8:1::10"] }
"#);
        let c = ctx("192.0.2.10:1", "198.51.100.10:80", None);
        assert_eq!(
            a.decide(&c, &req("GET", "/x")),
            (Action::Allow, Some("lan-web"))
        );
        assert_eq!(
            a.decide(&c, &req("GET", "/admin/x")),
            (Action::Deny, Some("admin"))
        );
        assert_eq!(a.decide(&c, &req("POST", "/x")), (Action::Deny, None));
        let c = ctx("192.0.2.10:1", "198.51.100.10:8080", None);
        assert_eq!(a.decide(&c, &req("GET", "/")).0, Action::Allow);
        let c = ctx("192.0.2.10:1", "198.51.100.10:9000", None);
        assert_eq!(a.decide(&c, &req("GET", "/")), (Action::Deny, None));
        let c = ctx("[2001:db8:1::10]:1", "[2001:db8:2::10]:80", None);
        assert_eq!(a.decide(&c, &req("PUT", "/")), (Action::Allow, Some("v6")));
    }

    #[test]
    fn host_patterns() {
        let a = acl(r#"
rules:
  - { name: exact, action: deny, host: [Example.COM] }
  - { name: wild, action: deny, host: ["*.example.org"], dst: ["198.51.100.0/24"] }
  - { name: v6lit, action: deny, host: ["[2001:db8::1]"] }
"#);
        let d = |h: &str| {
            a.decide(
                &ctx("192.0.2.10:1", "198.51.100.10:80", Some(h)),
                &req("GET", "/"),
            )
            .1
        };
        assert_eq!(d("example.com"), Some("exact"));
        assert_eq!(d("EXAMPLE.com:80"), Some("exact"));
        assert_eq!(d("www.example.com"), None);
        assert_eq!(d("a.b.example.org"), Some("wild"));
        assert_eq!(d("example.org"), None);
        assert_eq!(d("[2001:db8::1]:80"), Some("v6lit"));
        assert_eq!(
            a.decide(
                &ctx("192.0.2.10:1", "203.0.113.1:80", Some("x.example.org")),
                &req("GET", "/")
            )
            .1,
            None
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        let e = |y: &str| {
            AclFilter::from_yaml(&serde_yaml::from_str(y).unwrap(), "tproxyd.filters[0].acl")
                .unwrap_err()
                .to_string()
        };
        assert!(e("rules: [{action: deny, client: [10.0.0.0/33]}]")
            .contains("tproxyd.filters[0].acl.rules[0].client[0]"));
        assert!(
            e("rules: [{action: deny, dst_port: [\"90-80\"]}]").contains("rules[0].dst_port[0]")
        );
        assert!(e("rules: [{action: deny, host: [\"a.*.com\"]}]").contains("rules[0].host[0]"));
        assert!(e("rules: [{action: maybe}]").contains("rules[0].action"));
        assert!(e("rules: [{action: deny, path_prefix: [admin]}]").contains("path_prefix[0]"));
        assert!(e("rules: [{action: deny, colour: red}]").contains("colour"));
        assert!(e("default: perhaps").contains("default"));
    }
}
