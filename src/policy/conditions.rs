//! The conditions of a rule: every condition it has must hold (each list:
//! any of its entries). Shared by every kind of rule, so a rule means the
//! same wherever it is written.

use super::{Check, Facts, HostPattern};
use crate::addr::parse_net;
use crate::error::{invalid, ConfigError};
use crate::sets::{Catalog, SetKind, Slot};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PortSettings {
    One(u16),
    Range(String),
}

/// The condition keys of a rule as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConditionsSettings {
    client: Vec<String>,
    dst: Vec<String>,
    dst_port: Vec<PortSettings>,
    /// Host patterns; they match the name the client asked for (Host, SNI,
    /// CONNECT authority). `sni` is another name for it.
    #[serde(alias = "sni")]
    host: Vec<String>,
    method: Vec<String>,
    path_prefix: Vec<String>,
    /// Name sets (`tproxyd.sets`) the name must be in (or under).
    host_set: Vec<String>,
    /// Address sets the client must be in.
    client_set: Vec<String>,
    /// Address sets the destination must be in.
    dst_set: Vec<String>,
}

/// Validated conditions.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    client: Vec<IpNet>,
    dst: Vec<IpNet>,
    dst_port: Vec<(u16, u16)>,
    host: Vec<HostPattern>,
    method: Vec<http::Method>,
    path_prefix: Vec<String>,
    host_set: Vec<Arc<Slot>>,
    client_set: Vec<Arc<Slot>>,
    dst_set: Vec<Arc<Slot>>,
}

fn slots(
    key: &str,
    names: &[String],
    kind: SetKind,
    sets: &Catalog,
) -> Result<Vec<Arc<Slot>>, ConfigError> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| sets.get(n, kind, &format!("{key}[{i}]")))
        .collect()
}

fn set_names(slots: &[Arc<Slot>]) -> String {
    let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
    names.join(", ")
}

/// Where `ip` or `name` was found among `slots`, for a trace.
fn found_in(slots: &[Arc<Slot>], name: Option<&str>, ip: Option<IpAddr>) -> String {
    slots
        .iter()
        .find_map(|s| {
            s.find(name, ip)
                .map(|f| format!("set {}: matched by entry {} from {}", s.name, f.entry, f.at))
        })
        .unwrap_or_default()
}

fn nets(key: &str, list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| parse_net(s).map_err(|r| invalid(format!("{key}[{i}]"), r)))
        .collect()
}

fn port_range(p: &PortSettings) -> Option<(u16, u16)> {
    match p {
        PortSettings::One(n) => Some((*n, *n)),
        PortSettings::Range(s) => match s.split_once('-') {
            Some((a, b)) => a.trim().parse().ok().zip(b.trim().parse().ok()),
            None => s.trim().parse().ok().map(|n| (n, n)),
        },
    }
    .filter(|(a, b)| a <= b)
}

impl ConditionsSettings {
    /// Validates the conditions of the rule at dotted path `key`; set
    /// names must be in `sets`, of the right kind.
    pub fn validate(self, key: &str, sets: &Catalog) -> Result<Conditions, ConfigError> {
        let mut dst_port = Vec::new();
        for (j, p) in self.dst_port.iter().enumerate() {
            dst_port.push(port_range(p).ok_or_else(|| {
                invalid(
                    format!("{key}.dst_port[{j}]"),
                    "expected a port or a range like \"8000-8999\"",
                )
            })?);
        }
        let host = self
            .host
            .iter()
            .enumerate()
            .map(|(j, h)| HostPattern::parse(h).map_err(|r| invalid(format!("{key}.host[{j}]"), r)))
            .collect::<Result<_, _>>()?;
        let method = self
            .method
            .iter()
            .enumerate()
            .map(|(j, m)| {
                http::Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).map_err(|_| {
                    invalid(
                        format!("{key}.method[{j}]"),
                        format!("{m:?} is not an HTTP method"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        if let Some((j, p)) = self
            .path_prefix
            .iter()
            .enumerate()
            .find(|(_, p)| !p.starts_with('/'))
        {
            return Err(invalid(
                format!("{key}.path_prefix[{j}]"),
                format!("{p:?} must start with /"),
            ));
        }
        Ok(Conditions {
            client: nets(&format!("{key}.client"), &self.client)?,
            dst: nets(&format!("{key}.dst"), &self.dst)?,
            dst_port,
            host,
            method,
            path_prefix: self.path_prefix,
            host_set: slots(
                &format!("{key}.host_set"),
                &self.host_set,
                SetKind::Names,
                sets,
            )?,
            client_set: slots(
                &format!("{key}.client_set"),
                &self.client_set,
                SetKind::Addresses,
                sets,
            )?,
            dst_set: slots(
                &format!("{key}.dst_set"),
                &self.dst_set,
                SetKind::Addresses,
                sets,
            )?,
        })
    }
}

/// Notes one condition's outcome when tracing.
struct Trace<'t>(Option<&'t mut Vec<String>>);

impl Trace<'_> {
    fn note(&mut self, held: bool, what: impl FnOnce() -> String) -> bool {
        if let Some(t) = self.0.as_mut() {
            t.push(format!("{} {}", if held { "+" } else { "-" }, what()));
        }
        held
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().map(T::to_string).collect();
    shown.join(", ")
}

impl Conditions {
    /// Whether they hold for `f`.
    pub fn check(&self, f: &Facts<'_>) -> Check {
        self.eval(f, &mut Trace(None))
    }

    /// Whether they hold for `f`, and why: one line per condition, `+`
    /// for one that holds, `-` for one that does not.
    pub fn explain(&self, f: &Facts<'_>) -> (Check, Vec<String>) {
        let mut lines = Vec::new();
        let check = self.eval(f, &mut Trace(Some(&mut lines)));
        (check, lines)
    }

    /// Whether one of them is on the name the client asked for.
    pub fn on_name(&self) -> bool {
        !self.host.is_empty() || !self.host_set.is_empty()
    }

    /// Whether one of them is on the destination address.
    pub fn needs_destination(&self) -> bool {
        !self.dst.is_empty() || !self.dst_set.is_empty()
    }

    fn eval(&self, f: &Facts<'_>, t: &mut Trace<'_>) -> Check {
        let client = f.client.ip();
        if !self.client.is_empty()
            && !t.note(self.client.iter().any(|n| n.contains(&client)), || {
                format!("client {client} in [{}]", list(&self.client))
            })
        {
            return Check::NoMatch;
        }
        if !self.client_set.is_empty() {
            let held = self.client_set.iter().any(|s| s.contains_ip(client));
            if !t.note(held, || match held {
                true => format!(
                    "client {client} in {}",
                    found_in(&self.client_set, None, Some(client))
                ),
                false => format!("client {client} in sets [{}]", set_names(&self.client_set)),
            }) {
                return Check::NoMatch;
            }
        }
        if !self.dst_port.is_empty() {
            let held = self
                .dst_port
                .iter()
                .any(|(a, b)| (*a..=*b).contains(&f.port));
            if !t.note(held, || format!("port {} in the rule's ports", f.port)) {
                return Check::NoMatch;
            }
        }
        if !self.eval_request(f, t) {
            return Check::NoMatch;
        }
        self.eval_destination(f, t)
    }

    /// The conditions on the destination address, which may not be known
    /// yet (a name not resolved).
    fn eval_destination(&self, f: &Facts<'_>, t: &mut Trace<'_>) -> Check {
        if !self.needs_destination() {
            return Check::Match;
        }
        let Some(dst) = f.dst.map(|d| d.ip()) else {
            t.note(false, || {
                "dst: not known before the name is resolved".into()
            });
            return Check::NeedsDestination;
        };
        if !self.dst.is_empty() {
            let held = self.dst.iter().any(|n| n.contains(&dst));
            if !t.note(held, || format!("dst {dst} in [{}]", list(&self.dst))) {
                return Check::NoMatch;
            }
        }
        if !self.dst_set.is_empty() {
            let held = self.dst_set.iter().any(|s| s.contains_ip(dst));
            if !t.note(held, || match held {
                true => format!("dst {dst} in {}", found_in(&self.dst_set, None, Some(dst))),
                false => format!("dst {dst} in sets [{}]", set_names(&self.dst_set)),
            }) {
                return Check::NoMatch;
            }
        }
        Check::Match
    }

    /// The conditions on the name, method and path.
    fn eval_request(&self, f: &Facts<'_>, t: &mut Trace<'_>) -> bool {
        if !self.host.is_empty() {
            let held = f
                .name
                .is_some_and(|h| self.host.iter().any(|p| p.matches(h)));
            let name = f.name.unwrap_or("(no name)");
            if !t.note(held, || format!("name {name} in [{}]", list(&self.host))) {
                return false;
            }
        }
        if !self.host_set.is_empty() {
            let held = f
                .name
                .is_some_and(|h| self.host_set.iter().any(|s| s.contains_name(h)));
            let name = f.name.unwrap_or("(no name)");
            if !t.note(held, || match held {
                true => format!("name {name} in {}", found_in(&self.host_set, f.name, None)),
                false => format!("name {name} in sets [{}]", set_names(&self.host_set)),
            }) {
                return false;
            }
        }
        if !self.method.is_empty() {
            let held = f
                .method
                .is_some_and(|m| self.method.iter().any(|x| x.as_str() == m));
            let m = f.method.unwrap_or("(none)");
            if !t.note(held, || format!("method {m} in [{}]", list(&self.method))) {
                return false;
            }
        }
        if !self.path_prefix.is_empty() {
            // Compared as the origin reads the path (see `path`).
            let path = f.path.map(super::path::normalised);
            let held = path
                .as_deref()
                .is_some_and(|p| self.path_prefix.iter().any(|x| p.starts_with(x.as_str())));
            let p = path.as_deref().unwrap_or("(none)");
            if !t.note(held, || {
                format!("path {p} under [{}]", self.path_prefix.join(", "))
            }) {
                return false;
            }
        }
        true
    }
}
