//! Kernel settings: forwarding, and the reverse-path settings on the
//! intercepted interfaces (`src_valid_mark` makes the reverse-path check
//! route with the mark, find `local`, and drop every intercepted packet).

use super::Report;
use crate::rules::Ruleset;

/// The value of `/proc/sys/<path>`, when it reads as a number.
fn sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The interfaces the plan intercepts on that exist here (`all` too).
fn interfaces(plan: &Ruleset) -> Vec<String> {
    let present: Vec<String> = std::fs::read_dir("/proc/sys/net/ipv4/conf")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| !matches!(n.as_str(), "all" | "default" | "lo"))
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec!["all".to_string()];
    for s in &plan.steers {
        // No interfaces: every one but lo; `wlan*`: those it matches.
        let wanted = |n: &String| match s.interfaces.as_slice() {
            [] => true,
            list => list.iter().any(|i| match i.strip_suffix('*') {
                Some(prefix) => n.starts_with(prefix),
                None => i == n,
            }),
        };
        for n in present.iter().filter(|n| wanted(n)) {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
    }
    out
}

/// The `ip_forward`, `ipv6-forwarding`, `src_valid_mark` and `rp_filter`
/// checks.
pub(super) fn check(r: &mut Report, plan: &Ruleset) {
    forwarding(r);
    let ifs = interfaces(plan);
    let bad: Vec<&str> = ifs
        .iter()
        .filter(|i| sysctl(&format!("net/ipv4/conf/{i}/src_valid_mark")) == Some(1))
        .map(String::as_str)
        .collect();
    if bad.is_empty() {
        r.ok("src_valid_mark", format!("0 on {}", ifs.join(", ")));
    } else {
        let keys: Vec<String> = bad
            .iter()
            .map(|i| format!("net.ipv4.conf.{i}.src_valid_mark=0"))
            .collect();
        r.fail(
            "src_valid_mark",
            format!(
                "1 on {}: the reverse-path check routes with the mark and drops intercepted packets",
                bad.join(", ")
            ),
            format!("sysctl -w {}", keys.join(" ")),
        );
    }
    let rp: Vec<String> = ifs
        .iter()
        .filter_map(|i| sysctl(&format!("net/ipv4/conf/{i}/rp_filter")).map(|v| format!("{i}={v}")))
        .collect();
    r.ok(
        "rp_filter",
        format!(
            "{} (0, 1 and 2 all work while src_valid_mark is 0)",
            rp.join(", ")
        ),
    );
}

/// Forwarding off routes nothing that is not intercepted.
fn forwarding(r: &mut Report) {
    for (path, name) in [
        ("net/ipv4/ip_forward", "ip_forward"),
        ("net/ipv6/conf/all/forwarding", "ipv6-forwarding"),
    ] {
        let key = path.replace('/', ".");
        match sysctl(path) {
            Some(1) => r.ok(name, format!("{key} = 1")),
            _ => r.warn(
                name,
                format!("{key} is not 1: traffic that is not intercepted is not routed"),
                format!("sysctl -w {key}=1"),
            ),
        }
    }
}
