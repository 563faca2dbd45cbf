//! Policy routing, which delivers the marked packets to the local stack:
//! `ip rule fwmark M/M lookup T` and `local default dev lo table T`, v4 and
//! v6, as `tproxyd rules --apply` installs them; and `lo`, which the v6
//! local route needs up.

use super::{tool_fix, Report, APPLY};
use crate::rules::{host, Hook, Ruleset};

/// The `policy-routing` check, or one per family (`policy-routing-v4`,
/// `policy-routing-v6`) when tproxy interception needs it.
pub(super) fn policy(r: &mut Report, plan: &Ruleset) {
    if !plan.steers.iter().any(|s| s.hook == Hook::Tproxy) {
        r.ok("policy-routing", "no tproxy interception: none needed");
        return;
    }
    let i = &plan.interception;
    let needed = host::families(plan);
    for (fam, name) in [("-4", "policy-routing-v4"), ("-6", "policy-routing-v6")] {
        if !needed.contains(&fam) {
            r.ok(
                name,
                "not needed: no v6 tproxy interception, or IPv6 is disabled here",
            );
            continue;
        }
        let what = format!(
            "ip {fam} rule fwmark {m:#x}/{m:#x} lookup {t}, ip {fam} route local default dev lo table {t}",
            m = i.fwmark,
            t = i.route_table
        );
        let missing = match (host::has_policy_rule(fam, i), host::has_local_route(fam, i)) {
            (Ok(true), Ok(true)) => {
                r.ok(name, what);
                continue;
            }
            (Err(e), _) | (_, Err(e)) => {
                r.fail(name, &e, tool_fix(&e, "iproute2"));
                continue;
            }
            (Ok(false), Ok(false)) => "not installed",
            (Ok(false), _) => "the rule is missing",
            _ => "the route is missing",
        };
        r.fail(
            name,
            format!("{missing} ({what}): marked packets are not delivered locally"),
            APPLY,
        );
    }
}

/// The `loopback` check: the v6 local route goes away while `lo` is down.
pub(super) fn loopback(r: &mut Report) {
    if host::loopback_up() {
        r.ok("loopback", "lo is up");
    } else {
        r.fail("loopback", "lo is down", "ip link set lo up");
    }
}
