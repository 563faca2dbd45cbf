//! The firewall: `table inet tproxyd` loaded and steering what the config
//! says, failing closed or open as `on_proxy_down` says, both families
//! covered, and no other table steering the same ports.

use super::{tool_fix, Report, APPLY};
use crate::interception::OnProxyDown;
use crate::rules::live::{self, LiveTable};
use crate::rules::{host, Family, Hook, Mapping, Ruleset, TABLE};
use std::collections::BTreeSet;

/// The `nft-table` check, then `fail-closed` against the loaded table.
pub(super) fn table(r: &mut Report, plan: &Ruleset) {
    let live = match live::read() {
        Ok(Some(live)) => live,
        Ok(None) if plan.steers.is_empty() => {
            return r.warn(
                "nft-table",
                "no listener has `intercept` and no table is loaded: the firewall is yours to write",
                "give a listener `intercept`, or steer its ports with rules of your own",
            );
        }
        Ok(None) => {
            return r.fail(
                "nft-table",
                format!("table inet {TABLE} is not installed"),
                APPLY,
            );
        }
        Err(e) => return r.fail("nft-table", &e, tool_fix(&e, "nftables")),
    };
    let want = plan.mapping();
    let diffs = differences(&want, &live.mapping);
    if diffs.is_empty() {
        r.ok(
            "nft-table",
            format!(
                "table inet {TABLE} steers the ports the config says ({} port/family pairs)",
                want.len()
            ),
        );
    } else {
        r.fail(
            "nft-table",
            format!(
                "table inet {TABLE} does not match the config: {}",
                diffs.join("; ")
            ),
            APPLY,
        );
    }
    fail_mode(r, plan, &live);
}

/// At most a few differences between the config's mapping and the table's,
/// worded port by port.
fn differences(want: &Mapping, live: &Mapping) -> Vec<String> {
    let show = |(h, f, p, to, iface): &(Hook, Family, u16, u16, String)| {
        let how = match h {
            Hook::Tproxy => "tproxy",
            Hook::Nat => "redirect",
        };
        format!("{} port {p} on {iface} → :{to} ({how})", f.nfproto())
    };
    let mut out: Vec<String> = want
        .difference(live)
        .map(|m| format!("config steers {} but the table does not", show(m)))
        .chain(
            live.difference(want)
                .map(|m| format!("the table steers {} but the config does not", show(m))),
        )
        .collect();
    let more = out.len().saturating_sub(4);
    out.truncate(4);
    if more > 0 {
        out.push(format!("and {more} more"));
    }
    out
}

/// The `fail-closed` check: the resets are there (or not) as
/// `on_proxy_down` says.
fn fail_mode(r: &mut Report, plan: &Ruleset, live: &LiveTable) {
    let tproxied: Vec<(Family, u16)> = plan
        .mapping()
        .iter()
        .filter(|m| m.0 == Hook::Tproxy)
        .map(|m| (m.1, m.2))
        .collect();
    let reset = tproxied.iter().filter(|p| live.resets.contains(p)).count();
    match plan.interception.on_proxy_down {
        OnProxyDown::Reset if reset < tproxied.len() => r.fail(
            "fail-closed",
            format!(
                "{} intercepted port/family pairs would be forwarded unproxied while tproxyd is down",
                tproxied.len() - reset
            ),
            APPLY,
        ),
        OnProxyDown::Bypass if reset > 0 => r.warn(
            "fail-closed",
            "on_proxy_down: bypass, but the table resets",
            APPLY,
        ),
        OnProxyDown::Reset => r.ok("fail-closed", "clients get a reset while tproxyd is down"),
        OnProxyDown::Bypass => r.ok(
            "fail-closed",
            "fail open (on_proxy_down: bypass): traffic is routed unproxied while tproxyd is down",
        ),
    }
}

/// The `families` check: intercepting listeners that take one family only
/// leave the other family's traffic to their ports neither intercepted
/// nor reset.
pub(super) fn coverage(r: &mut Report, plan: &Ruleset) {
    let has = |name: &str, f: Family| {
        plan.steers
            .iter()
            .any(|s| s.listener == name && s.family == f)
    };
    let mut one: Vec<String> = plan
        .steers
        .iter()
        .filter(|s| !(has(&s.listener, Family::V4) && has(&s.listener, Family::V6)))
        .map(|s| format!("{} ({} only)", s.listener, s.family.nfproto()))
        .collect();
    one.dedup();
    if plan.steers.is_empty() {
        return;
    }
    if one.is_empty() {
        r.ok(
            "families",
            "every intercepting listener takes IPv4 and IPv6",
        );
    } else {
        r.warn(
            "families",
            format!(
                "{}: the other family's traffic to their ports is not intercepted",
                one.join(", ")
            ),
            "listen on [::]:PORT to take both",
        );
    }
}

/// The `other-tables` check: other tables whose rules also steer (tproxy,
/// redirect, dnat) one of the intercepted ports; whichever runs first
/// wins, silently.
pub(super) fn others(r: &mut Report, plan: &Ruleset) {
    let ours: BTreeSet<u16> = plan.mapping().iter().map(|m| m.2).collect();
    let json = match host::run("nft", &["-j", "list", "ruleset"], None) {
        Ok(j) => j,
        Err(e) => return r.warn("other-tables", &e, tool_fix(&e, "nftables")),
    };
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let mut found = Vec::new();
    for rule in doc["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("rule"))
    {
        if rule["table"] == TABLE && rule["family"] == "inet" {
            continue;
        }
        let mut table = LiveTable::default();
        live::read_rule(rule, &mut table);
        let clash = table.mapping.iter().map(|m| m.2).find(|p| ours.contains(p));
        if let Some(p) = clash {
            found.push(format!(
                "table {} {} chain {} steers port {p}",
                rule["family"].as_str().unwrap_or("?"),
                rule["table"].as_str().unwrap_or("?"),
                rule["chain"].as_str().unwrap_or("?")
            ));
        }
    }
    found.dedup();
    if found.is_empty() {
        r.ok(
            "other-tables",
            "no other table steers the intercepted ports",
        );
    } else {
        r.warn(
            "other-tables",
            found.join("; "),
            "remove those rules, or the port from `intercept`",
        );
    }
}
