//! The loaded `table inet tproxyd`, read back from `nft -j` as the same
//! (port → listener port) mapping the config gives, for `doctor`: what
//! matters is where each port goes, not how nft prints the rule.

use super::host::run;
use super::{Family, Hook, Mapping, TABLE};
use serde_json::Value;
use std::collections::BTreeSet;

/// What the loaded table does.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LiveTable {
    /// Where each port is steered.
    pub mapping: Mapping,
    /// (family, port) answered with a TCP reset (fail closed).
    pub resets: BTreeSet<(Family, u16)>,
    /// Whether UDP/443 is rejected.
    pub quic_rejected: bool,
}

/// Reads the table; `Ok(None)` when it is not loaded.
pub fn read() -> Result<Option<LiveTable>, String> {
    match run("nft", &["-j", "list", "table", "inet", TABLE], None) {
        Ok(json) => parse(&json).map(Some),
        // `nft` itself missing is an error, not an absent table.
        Err(e) if e.contains("is nft installed") => Err(e),
        Err(e) if e.contains("No such file") || e.contains("does not exist") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parses `nft -j list table` output.
pub fn parse(json: &str) -> Result<LiveTable, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("nft -j: {e}"))?;
    let mut live = LiveTable::default();
    let items = doc["nftables"].as_array().map_or(&[][..], Vec::as_slice);
    for rule in items.iter().filter_map(|o| o.get("rule")) {
        read_rule(rule, &mut live);
    }
    Ok(live)
}

/// Adds what one rule of `nft -j` output steers, resets or rejects.
pub fn read_rule(rule: &Value, live: &mut LiveTable) {
    let expr = rule["expr"].as_array().map_or(&[][..], Vec::as_slice);
    let (mut families, mut tcp, mut udp) = (None, Vec::new(), Vec::new());
    let mut iface = "*".to_string();
    for e in expr {
        let Some(m) = e.get("match") else { continue };
        let (left, right) = (&m["left"], &m["right"]);
        if left["meta"]["key"] == "iifname" {
            let name = right.as_str().unwrap_or("?");
            iface = match m["op"].as_str() {
                Some("!=") => format!("!{name}"),
                _ => name.to_string(),
            };
            continue;
        }
        if m["op"] != "==" {
            continue;
        }
        if left["meta"]["key"] == "nfproto" {
            families = match right.as_str() {
                Some("ipv4") => Some(vec![Family::V4]),
                Some("ipv6") => Some(vec![Family::V6]),
                _ => None,
            };
        } else if left["payload"]["field"] == "dport" {
            let ports = ports(right);
            match left["payload"]["protocol"].as_str() {
                Some("tcp") => tcp = ports,
                Some("udp") => udp = ports,
                _ => {}
            }
        }
    }
    let families = families.unwrap_or_else(|| vec![Family::V4, Family::V6]);
    for e in expr {
        if let Some(t) = e.get("tproxy") {
            let family = match t["family"].as_str() {
                Some("ip") => vec![Family::V4],
                Some("ip6") => vec![Family::V6],
                _ => families.clone(),
            };
            steer(
                &mut live.mapping,
                (Hook::Tproxy, &iface),
                &family,
                &tcp,
                &t["port"],
            );
        } else if let Some(r) = e.get("redirect").or_else(|| e.get("dnat")) {
            steer(
                &mut live.mapping,
                (Hook::Nat, &iface),
                &families,
                &tcp,
                &r["port"],
            );
        } else if let Some(r) = e.get("reject") {
            if r["type"] == "tcp reset" {
                for f in &families {
                    live.resets.extend(tcp.iter().map(|p| (*f, *p)));
                }
            } else if udp.contains(&443) {
                live.quic_rejected = true;
            }
        }
    }
}

fn steer(
    m: &mut Mapping,
    (hook, iface): (Hook, &str),
    families: &[Family],
    ports: &[u16],
    to: &Value,
) {
    let Some(to) = to.as_u64().and_then(|p| u16::try_from(p).ok()) else {
        return;
    };
    for f in families {
        m.extend(ports.iter().map(|p| (hook, *f, *p, to, iface.to_string())));
    }
}

/// A port, a range or a set of both, each port listed.
fn ports(v: &Value) -> Vec<u16> {
    let range = |r: &Value| -> Vec<u16> {
        match (r[0].as_u64(), r[1].as_u64()) {
            (Some(a), Some(b)) if a <= b && b <= 65535 => (a as u16..=b as u16).collect(),
            _ => Vec::new(),
        }
    };
    if let Some(p) = v.as_u64().and_then(|p| u16::try_from(p).ok()) {
        vec![p]
    } else if let Some(r) = v.get("range") {
        range(r)
    } else if let Some(set) = v.get("set").and_then(Value::as_array) {
        set.iter().flat_map(ports).collect()
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tproxy_redirect_reset_and_quic_rules() {
        let json = r#"{"nftables":[{"metainfo":{}},
 {"rule":{"chain":"prerouting","expr":[{"match":{"op":"==","left":{"meta":{"key":"nfproto"}},"right":"ipv4"}},
   {"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":{"set":[80,{"range":[82,83]}]}}},
   {"tproxy":{"family":"ip","port":8888}},{"accept":null}]}},
 {"rule":{"chain":"prerouting","expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":80}},
   {"reject":{"type":"tcp reset"}}]}},
 {"rule":{"chain":"prerouting","expr":[{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":443}},
   {"reject":{"type":"icmpx","expr":"port-unreachable"}}]}},
 {"rule":{"chain":"nat_prerouting","expr":[{"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"lan0"}},{"match":{"op":"==","left":{"meta":{"key":"nfproto"}},"right":"ipv6"}},
   {"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":8080}},{"redirect":{"port":8889}}]}}]}"#;
        let live = parse(json).unwrap();
        let (any, lan) = ("*".to_string(), "lan0".to_string());
        let want: Mapping = [
            (Hook::Tproxy, Family::V4, 80, 8888, any.clone()),
            (Hook::Tproxy, Family::V4, 82, 8888, any.clone()),
            (Hook::Tproxy, Family::V4, 83, 8888, any),
            (Hook::Nat, Family::V6, 8080, 8889, lan),
        ]
        .into_iter()
        .collect();
        assert_eq!(live.mapping, want);
        assert_eq!(
            live.resets,
            [(Family::V4, 80), (Family::V6, 80)].into_iter().collect()
        );
        assert!(live.quic_rejected);
    }
}
