//! `tproxyd doctor`: the host checked against the config, one line per
//! check (`ok`, `warn`, `FAIL`) with the fix, for the operator whose LAN
//! is not being intercepted and who needs to know why. Each check looks at
//! one thing the kernel path depends on: the capability, the socket
//! option, the table, the policy routing, `lo`, the sysctls that break
//! interception, other tables on the same ports, the open-file limit.

use crate::config::{Config, ConfigError, TproxydConf};
use crate::interception::OnProxyDown;
use crate::listener::Listener;
use crate::rules::live::{self, LiveTable};
use crate::rules::{host, Family, Hook, Mapping, Ruleset, TABLE};
use crate::transparent::{bind_transparent, has_cap_net_admin};
use std::fmt;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but probably not as meant.
    Warn,
    /// Interception cannot work like this.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    /// The verdict.
    pub status: Status,
    /// What was checked, e.g. `policy-routing-v4`.
    pub name: &'static str,
    /// What was found, and for warn/FAIL what to do.
    pub detail: String,
}

/// Every check's line.
#[derive(Debug, Default)]
pub struct Report {
    /// In the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, status: Status, name: &'static str, detail: impl Into<String>) {
        self.checks.push(Check {
            status,
            name,
            detail: detail.into(),
        });
    }

    /// Whether any check failed (the exit status).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let s = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            writeln!(f, "{s} {}: {}", c.name, c.detail)?;
        }
        let (w, x) = self.checks.iter().fold((0, 0), |(w, x), c| match c.status {
            Status::Warn => (w + 1, x),
            Status::Fail => (w, x + 1),
            Status::Ok => (w, x),
        });
        writeln!(f, "{} checks: {x} failed, {w} warnings", self.checks.len())
    }
}

/// Runs every check for the config loaded from `path`.
pub fn examine(config: Result<Config, ConfigError>, path: &str) -> Report {
    let mut r = Report::default();
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            r.add(
                Status::Fail,
                "config",
                format!("{e} — fix the file ({path})"),
            );
            return r;
        }
    };
    r.add(Status::Ok, "config", format!("{path} is valid"));
    let t = &config.tproxyd;
    privileges(&mut r, t);
    let plan = Ruleset::from_config(t);
    table(&mut r, &plan);
    coverage(&mut r, &plan);
    routing(&mut r, &plan);
    loopback(&mut r);
    sysctls(&mut r, &plan);
    others(&mut r, &plan);
    open_files(&mut r, t, &config);
    r
}

/// CAP_NET_ADMIN, and whether an `IP_TRANSPARENT` socket can be bound.
fn privileges(r: &mut Report, t: &TproxydConf) {
    if !t.listeners.iter().any(Listener::is_transparent) {
        r.add(
            Status::Ok,
            "capability",
            "no transparent listener: none needed",
        );
        return;
    }
    if has_cap_net_admin() {
        r.add(Status::Ok, "capability", "CAP_NET_ADMIN held");
    } else {
        r.add(
            Status::Fail,
            "capability",
            "no CAP_NET_ADMIN — run as root, or systemd: AmbientCapabilities=CAP_NET_ADMIN",
        );
    }
    match bind_transparent("[::]:0".parse().expect("an address")) {
        Ok(_) => r.add(
            Status::Ok,
            "transparent-socket",
            "an IP_TRANSPARENT socket binds",
        ),
        Err(e) => r.add(
            Status::Fail,
            "transparent-socket",
            format!(
                "cannot bind an IP_TRANSPARENT socket: {e} — needs CAP_NET_ADMIN and IPv6 enabled"
            ),
        ),
    }
}

/// `table inet tproxyd` is loaded and steers what the config says.
fn table(r: &mut Report, plan: &Ruleset) {
    const FIX: &str = "fix: tproxyd rules --apply";
    let live = match live::read() {
        Ok(Some(live)) => live,
        Ok(None) if plan.steers.is_empty() => {
            r.add(
                Status::Warn,
                "nft-table",
                "no listener has `intercept` and no table is loaded: the firewall is yours to write",
            );
            return;
        }
        Ok(None) => {
            r.add(
                Status::Fail,
                "nft-table",
                format!("table inet {TABLE} is not loaded — {FIX}"),
            );
            return;
        }
        Err(e) => {
            r.add(Status::Fail, "nft-table", format!("{e} — install nftables"));
            return;
        }
    };
    let want = plan.mapping();
    let diffs = differences(&want, &live.mapping);
    if diffs.is_empty() {
        r.add(
            Status::Ok,
            "nft-table",
            format!(
                "table inet {TABLE} steers the ports the config says ({} port/family pairs)",
                want.len()
            ),
        );
    } else {
        r.add(
            Status::Fail,
            "nft-table",
            format!(
                "table inet {TABLE} does not match the config: {} — {FIX}",
                diffs.join("; ")
            ),
        );
    }
    fail_mode(r, plan, &live);
}

/// Intercepting listeners that take one family only: the other family's
/// traffic to their ports is neither intercepted nor reset.
fn coverage(r: &mut Report, plan: &Ruleset) {
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
        r.add(
            Status::Ok,
            "families",
            "every intercepting listener takes IPv4 and IPv6",
        );
    } else {
        r.add(
            Status::Warn,
            "families",
            format!(
                "{}: the other family's traffic to their ports is not intercepted — listen on [::]:PORT to take both",
                one.join(", ")
            ),
        );
    }
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

/// The fail-closed resets are there (or not) as `on_proxy_down` says.
fn fail_mode(r: &mut Report, plan: &Ruleset, live: &LiveTable) {
    let tproxied: Vec<(Family, u16)> = plan
        .mapping()
        .iter()
        .filter(|m| m.0 == Hook::Tproxy)
        .map(|m| (m.1, m.2))
        .collect();
    let reset = tproxied.iter().filter(|p| live.resets.contains(p)).count();
    match plan.interception.on_proxy_down {
        OnProxyDown::Reset if reset < tproxied.len() => r.add(
            Status::Fail,
            "fail-closed",
            format!(
                "{} intercepted port/family pairs would be forwarded unproxied while tproxyd is down — fix: tproxyd rules --apply",
                tproxied.len() - reset
            ),
        ),
        OnProxyDown::Bypass if reset > 0 => r.add(
            Status::Warn,
            "fail-closed",
            "on_proxy_down: bypass, but the table resets — fix: tproxyd rules --apply",
        ),
        OnProxyDown::Reset => r.add(Status::Ok, "fail-closed", "clients get a reset while tproxyd is down"),
        OnProxyDown::Bypass => r.add(
            Status::Ok,
            "fail-closed",
            "fail open (on_proxy_down: bypass): traffic is routed unproxied while tproxyd is down",
        ),
    }
}

/// `ip rule fwmark M/M lookup T` and `local default dev lo table T`, v4
/// and v6, as `tproxyd rules --apply` installs them.
fn routing(r: &mut Report, plan: &Ruleset) {
    if !plan.steers.iter().any(|s| s.hook == Hook::Tproxy) {
        r.add(
            Status::Ok,
            "policy-routing",
            "no tproxy interception: none needed",
        );
        return;
    }
    let i = &plan.interception;
    let needed = host::families(plan);
    for (fam, name) in [("-4", "policy-routing-v4"), ("-6", "policy-routing-v6")] {
        if !needed.contains(&fam) {
            r.add(
                Status::Ok,
                name,
                "not needed: no v6 tproxy interception, or IPv6 is disabled here",
            );
            continue;
        }
        let rule = host::has_policy_rule(fam, i);
        let route = host::has_local_route(fam, i);
        let what = format!(
            "ip {fam} rule fwmark {m:#x}/{m:#x} lookup {t}, ip {fam} route local default dev lo table {t}",
            m = i.fwmark,
            t = i.route_table
        );
        match (rule, route) {
            (Ok(true), Ok(true)) => r.add(Status::Ok, name, what),
            (Err(e), _) | (_, Err(e)) => r.add(Status::Fail, name, e),
            (Ok(rule), Ok(route)) => {
                let missing = match (rule, route) {
                    (false, false) => "the rule and the route are",
                    (false, _) => "the rule is",
                    _ => "the route is",
                };
                r.add(
                    Status::Fail,
                    name,
                    format!("{missing} missing ({what}): marked packets are not delivered locally — fix: tproxyd rules --apply"),
                )
            }
        }
    }
}

/// `lo` must be up: the v6 local route goes away while it is down.
fn loopback(r: &mut Report) {
    if host::loopback_up() {
        r.add(Status::Ok, "loopback", "lo is up");
    } else {
        r.add(
            Status::Fail,
            "loopback",
            "lo is down — fix: ip link set lo up",
        );
    }
}

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

/// Forwarding, and `src_valid_mark`, which makes the reverse-path check
/// route with the mark, find `local`, and drop every intercepted packet.
fn sysctls(r: &mut Report, plan: &Ruleset) {
    for (key, name) in [
        ("net/ipv4/ip_forward", "ip_forward"),
        ("net/ipv6/conf/all/forwarding", "ipv6-forwarding"),
    ] {
        match sysctl(key) {
            Some(1) => r.add(Status::Ok, name, format!("{} = 1", key.replace('/', "."))),
            _ => r.add(
                Status::Warn,
                name,
                format!(
                    "{} is not 1: traffic that is not intercepted is not routed — fix: sysctl -w {}=1",
                    key.replace('/', "."),
                    key.replace('/', ".")
                ),
            ),
        }
    }
    let ifs = interfaces(plan);
    let bad: Vec<&String> = ifs
        .iter()
        .filter(|i| sysctl(&format!("net/ipv4/conf/{i}/src_valid_mark")) == Some(1))
        .collect();
    if bad.is_empty() {
        r.add(
            Status::Ok,
            "src_valid_mark",
            format!("0 on {}", ifs.join(", ")),
        );
    } else {
        let keys: Vec<String> = bad
            .iter()
            .map(|i| format!("net.ipv4.conf.{i}.src_valid_mark=0"))
            .collect();
        r.add(
            Status::Fail,
            "src_valid_mark",
            format!(
                "1 on {}: the reverse-path check routes with the mark and drops intercepted packets — fix: sysctl -w {}",
                bad.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                keys.join(" ")
            ),
        );
    }
    let rp: Vec<String> = ifs
        .iter()
        .filter_map(|i| sysctl(&format!("net/ipv4/conf/{i}/rp_filter")).map(|v| format!("{i}={v}")))
        .collect();
    r.add(
        Status::Ok,
        "rp_filter",
        format!(
            "{} (0, 1 and 2 all work while src_valid_mark is 0)",
            rp.join(", ")
        ),
    );
}

/// Other tables whose rules also steer (tproxy, redirect, dnat) one of
/// the intercepted ports: whichever runs first wins, silently.
fn others(r: &mut Report, plan: &Ruleset) {
    let ours: std::collections::BTreeSet<u16> = plan.mapping().iter().map(|m| m.2).collect();
    let json = match host::run("nft", &["-j", "list", "ruleset"], None) {
        Ok(j) => j,
        Err(e) => return r.add(Status::Warn, "other-tables", e),
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
        let clash: Vec<u16> = table
            .mapping
            .iter()
            .map(|m| m.2)
            .filter(|p| ours.contains(p))
            .collect();
        if let Some(p) = clash.first() {
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
        r.add(
            Status::Ok,
            "other-tables",
            "no other table steers the intercepted ports",
        );
    } else {
        r.add(
            Status::Warn,
            "other-tables",
            format!(
                "{} — remove those rules or the port from `intercept`",
                found.join("; ")
            ),
        );
    }
}

/// Whether the open-file limit holds `downstream.max_connections`.
fn open_files(r: &mut Report, t: &TproxydConf, config: &Config) {
    use nix::sys::resource::{getrlimit, Resource};
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let (_, reserved) = t.descriptor_reserve(config.server.upstream_keepalive_pool_size, hard);
    let d = &t.downstream;
    let (max, lowered) = d.effective_max_connections(hard, reserved);
    if lowered {
        r.add(
            Status::Warn,
            "open-files",
            format!(
                "the open-file limit here ({hard}) holds {max} of downstream.max_connections {} — raise it (systemd: LimitNOFILE) or lower the key",
                d.max_connections
            ),
        );
    } else {
        r.add(
            Status::Ok,
            "open-files",
            format!(
                "limit {hard} holds downstream.max_connections {}",
                d.max_connections
            ),
        );
    }
}
