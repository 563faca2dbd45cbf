//! What the host's firewall steers to tproxyd, as configured: each
//! listener's `intercept` (ports, interfaces) and the process-wide
//! `tproxyd.interception` (mark, route table, fail-closed or open, QUIC,
//! bypass lists). `tproxyd rules` turns it into one nftables table and the
//! policy routing, and `tproxyd doctor` checks the host against it, so the
//! listener ports live in one file only.

use crate::addr::parse_net;
use crate::error::{invalid, ConfigError};
use ipnet::IpNet;
use serde::Deserialize;

/// `listeners[i].intercept` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptSettings {
    /// Destination ports steered to this listener: numbers or `"80-89"`.
    ports: Vec<PortSpec>,
    /// Incoming interfaces (`lan0`, or a prefix with `*`: `wlan*`); empty:
    /// every interface but `lo`.
    #[serde(default)]
    interfaces: Vec<String>,
}

/// A port or an inclusive range, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PortSpec {
    One(u16),
    Range(String),
}

/// What the firewall steers to one listener, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intercept {
    /// Inclusive port ranges, sorted, not overlapping.
    pub ports: Vec<(u16, u16)>,
    /// Interface names; empty means every interface but `lo`.
    pub interfaces: Vec<String>,
}

impl InterceptSettings {
    /// Checks ports and interface names; `key` is the listener's
    /// `…intercept`.
    pub fn validate(self, key: &str) -> Result<Intercept, ConfigError> {
        let mut ports = Vec::with_capacity(self.ports.len());
        for (i, p) in self.ports.iter().enumerate() {
            let k = format!("{key}.ports[{i}]");
            let range = match p {
                PortSpec::One(n) => (*n, *n),
                PortSpec::Range(s) => parse_range(s).map_err(|r| invalid(&k, r))?,
            };
            if range.0 == 0 {
                return Err(invalid(k, "port 0 cannot be intercepted"));
            }
            ports.push(range);
        }
        if ports.is_empty() {
            return Err(invalid(
                format!("{key}.ports"),
                "at least one port is required (e.g. [80])",
            ));
        }
        ports.sort_unstable();
        if let Some(w) = ports.windows(2).find(|w| w[1].0 <= w[0].1) {
            return Err(invalid(
                format!("{key}.ports"),
                format!("{} overlaps {}", show_range(w[1]), show_range(w[0])),
            ));
        }
        for (i, name) in self.interfaces.iter().enumerate() {
            check_interface(name).map_err(|r| invalid(format!("{key}.interfaces[{i}]"), r))?;
        }
        Ok(Intercept {
            ports,
            interfaces: self.interfaces,
        })
    }
}

impl Intercept {
    /// Whether the two could steer the same packet: a shared port on a
    /// shared interface (no interfaces: all of them).
    pub fn overlaps(&self, other: &Intercept) -> Option<(u16, u16)> {
        let shared_if = self.interfaces.is_empty()
            || other.interfaces.is_empty()
            || self.interfaces.iter().any(|i| other.interfaces.contains(i));
        if !shared_if {
            return None;
        }
        self.ports
            .iter()
            .copied()
            .find(|a| other.ports.iter().any(|b| a.0.max(b.0) <= a.1.min(b.1)))
    }

    /// Whether `port` is one of its ports.
    pub fn has_port(&self, port: u16) -> bool {
        self.ports.iter().any(|&(lo, hi)| lo <= port && port <= hi)
    }
}

/// `a-b` as nftables writes it, or `a`.
pub fn show_range((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a port or a range like \"80-89\"");
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let (lo, hi): (u16, u16) = (
        lo.parse().map_err(|_| bad())?,
        hi.parse().map_err(|_| bad())?,
    );
    if lo > hi {
        return Err(format!("{s:?}: the range is backwards"));
    }
    Ok((lo, hi))
}

/// Interface names go into the ruleset verbatim, so only what Linux
/// allows in a name (at most 15 bytes, no space, `/` or quote) is taken,
/// with a trailing `*` for nftables' prefix match.
fn check_interface(name: &str) -> Result<(), String> {
    let base = name.strip_suffix('*').unwrap_or(name);
    let ok = !base.is_empty()
        && base.len() <= 15
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@:+".contains(&b));
    if !ok {
        return Err(format!(
            "{name:?} is not an interface name (at most 15 letters, digits or -_.@:+, optionally ending in *)"
        ));
    }
    if base == "lo" {
        return Err("lo is never intercepted".into());
    }
    Ok(())
}

/// What happens to intercepted traffic while no tproxyd listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnProxyDown {
    /// Fail closed: clients get a TCP reset.
    #[default]
    Reset,
    /// Fail open: the traffic is routed on, unproxied.
    Bypass,
}

/// QUIC (UDP/443) from intercepted interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Quic {
    /// Answered with ICMP port unreachable, so browsers fall back to TCP
    /// (and so to tproxyd) at once instead of after a timeout.
    #[default]
    Reject,
    /// Left alone (routed unproxied).
    Allow,
}

/// `tproxyd.interception` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterceptionSettings {
    fwmark: u32,
    route_table: u32,
    on_proxy_down: OnProxyDown,
    quic: Quic,
    bypass: BypassSettings,
}

/// `tproxyd.interception.bypass` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BypassSettings {
    destinations: Vec<String>,
    clients: Vec<String>,
}

impl Default for InterceptionSettings {
    fn default() -> Self {
        InterceptionSettings {
            fwmark: 1,
            route_table: 100,
            on_proxy_down: OnProxyDown::Reset,
            quic: Quic::Reject,
            bypass: BypassSettings::default(),
        }
    }
}

/// `tproxyd.interception`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interception {
    /// The mark that routes steered packets to the local stack; the policy
    /// rule matches it under a mask of itself, so other bits stay free for
    /// other users of marks.
    pub fwmark: u32,
    /// The routing table holding the `local default dev lo` routes.
    pub route_table: u32,
    /// Fail closed or open.
    pub on_proxy_down: OnProxyDown,
    /// What happens to QUIC.
    pub quic: Quic,
    /// Destinations never intercepted.
    pub bypass_destinations: Vec<IpNet>,
    /// Clients never intercepted.
    pub bypass_clients: Vec<IpNet>,
}

impl Default for Interception {
    fn default() -> Self {
        InterceptionSettings::default()
            .validate()
            .expect("the defaults are valid")
    }
}

impl InterceptionSettings {
    /// Checks the mark, the table and the bypass CIDRs.
    pub fn validate(self) -> Result<Interception, ConfigError> {
        const KEY: &str = "tproxyd.interception";
        if self.fwmark == 0 {
            return Err(invalid(format!("{KEY}.fwmark"), "must not be 0"));
        }
        if matches!(self.route_table, 0 | 253..=255) {
            return Err(invalid(
                format!("{KEY}.route_table"),
                format!(
                    "{} is reserved (0 unspec, 253 default, 254 main, 255 local); use e.g. 100",
                    self.route_table
                ),
            ));
        }
        let nets = |list: &[String], key: &str| -> Result<Vec<IpNet>, ConfigError> {
            list.iter()
                .enumerate()
                .map(|(i, s)| {
                    parse_net(s).map_err(|r| invalid(format!("{KEY}.bypass.{key}[{i}]"), r))
                })
                .collect()
        };
        Ok(Interception {
            fwmark: self.fwmark,
            route_table: self.route_table,
            on_proxy_down: self.on_proxy_down,
            quic: self.quic,
            bypass_destinations: nets(&self.bypass.destinations, "destinations")?,
            bypass_clients: nets(&self.bypass.clients, "clients")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intercept(yaml: &str) -> Result<Intercept, ConfigError> {
        serde_yaml::from_str::<InterceptSettings>(yaml)
            .unwrap()
            .validate("l.intercept")
    }

    #[test]
    fn ports_and_ranges_are_sorted_and_checked() {
        let i = intercept("{ports: [8080, \"80-89\"], interfaces: [lan0, \"wlan*\"]}").unwrap();
        assert_eq!(i.ports, vec![(80, 89), (8080, 8080)]);
        assert!(i.has_port(85) && !i.has_port(90));
        for (yaml, want) in [
            ("{ports: []}", "l.intercept.ports: at least one"),
            ("{ports: [0]}", "l.intercept.ports[0]: port 0"),
            ("{ports: [\"90-80\"]}", "backwards"),
            ("{ports: [\"x\"]}", "is not a port"),
            ("{ports: [80, \"79-81\"]}", "80 overlaps 79-81"),
            ("{ports: [80], interfaces: [\"lan 0\"]}", "interfaces[0]"),
            (
                "{ports: [80], interfaces: [\"a\\\"b\"]}",
                "not an interface",
            ),
            ("{ports: [80], interfaces: [lo]}", "lo is never"),
            (
                "{ports: [80], interfaces: [abcdefghijklmnop]}",
                "not an interface",
            ),
        ] {
            let e = intercept(yaml).unwrap_err().to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn overlap_needs_a_shared_port_and_interface() {
        let a = intercept("{ports: [80], interfaces: [lan0]}").unwrap();
        let b = intercept("{ports: [\"70-90\"], interfaces: [lan1]}").unwrap();
        let c = intercept("{ports: [\"70-90\"]}").unwrap();
        assert_eq!(a.overlaps(&b), None);
        assert_eq!(a.overlaps(&c), Some((80, 80)));
    }

    #[test]
    fn interception_defaults_and_errors() {
        let d = Interception::default();
        assert_eq!((d.fwmark, d.route_table), (1, 100));
        assert_eq!(
            (d.on_proxy_down, d.quic),
            (OnProxyDown::Reset, Quic::Reject)
        );
        for (yaml, want) in [
            ("{fwmark: 0}", "tproxyd.interception.fwmark: must not be 0"),
            (
                "{route_table: 254}",
                "tproxyd.interception.route_table: 254 is reserved",
            ),
            (
                "{bypass: {clients: [\"x\"]}}",
                "tproxyd.interception.bypass.clients[0]",
            ),
        ] {
            let s: InterceptionSettings = serde_yaml::from_str(yaml).unwrap();
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }
}
