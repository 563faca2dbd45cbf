//! Applying and removing the plan on this host with `nft` and `ip`, and
//! reading back the policy routing: the same commands an operator would
//! type, so what tproxyd did is easy to check by hand.

use super::nft::removal;
use super::{Family, Hook, Ruleset, TABLE};
use crate::interception::Interception;
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `program args`, feeding `input`; its stdout, or an error naming
/// the command and what it printed.
pub fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let shown = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{shown}`: {e} (is {program} installed?)"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("`{shown}`: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`{shown}`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{shown}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether IPv6 works here: compiled in, and not disabled on `lo` (or
/// everywhere) by sysctl, where the kernel refuses v6 routes through it.
pub fn ipv6_enabled() -> bool {
    let off = |p: &str| std::fs::read_to_string(p).is_ok_and(|v| v.trim() == "1");
    std::path::Path::new("/proc/sys/net/ipv6").exists()
        && !off("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        && !off("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
}

/// The families whose policy routing `plan` needs: v4 when anything is
/// steered with tproxy (or nothing at all), v6 when a v6 tproxy steer
/// exists and IPv6 works here.
pub fn families(plan: &Ruleset) -> Vec<&'static str> {
    let mut out = vec!["-4"];
    let v6 = plan
        .steers
        .iter()
        .any(|s| s.hook == Hook::Tproxy && s.family == Family::V6);
    if v6 && ipv6_enabled() {
        out.push("-6");
    }
    out
}

/// One `ip rule` entry, as `ip -j rule show` prints it.
#[derive(Debug, serde::Deserialize)]
struct PolicyRule {
    #[serde(default)]
    fwmark: Option<String>,
    #[serde(default)]
    fwmask: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    src: Option<String>,
}

fn hex(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The name `ip` prints for table `n`: its number, or its name from
/// `rt_tables`.
fn table_names(n: u32) -> Vec<String> {
    let mut names = vec![n.to_string()];
    for f in ["/etc/iproute2/rt_tables", "/usr/share/iproute2/rt_tables"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if let (Some(num), Some(name)) = (w.next(), w.next()) {
                if num.parse() == Ok(n) {
                    names.push(name.to_string());
                }
            }
        }
    }
    names
}

/// Whether `ip <family> rule` has `fwmark M/M lookup T` (a mask that
/// covers M is fine too).
pub fn has_policy_rule(family: &str, i: &Interception) -> Result<bool, String> {
    let out = run("ip", &["-j", family, "rule", "show"], None)?;
    let rules: Vec<PolicyRule> =
        serde_json::from_str(&out).map_err(|e| format!("`ip -j rule show`: {e}"))?;
    let names = table_names(i.route_table);
    Ok(rules.iter().any(|r| {
        let mark = r.fwmark.as_deref().and_then(hex);
        let mask = r.fwmask.as_deref().and_then(hex).unwrap_or(u32::MAX);
        // Exactly M/M: the table ORs M into marks that may carry other
        // bits, which a full-mask `fwmark M` rule would not match.
        mark == Some(i.fwmark)
            && mask == i.fwmark
            && r.src.as_deref().is_none_or(|s| s == "all")
            && r.table.as_ref().is_some_and(|t| names.contains(t))
    }))
}

/// Whether table T has `local default dev lo` for `family`; a table the
/// kernel does not have (nothing was ever routed in it) has no route.
pub fn has_local_route(family: &str, i: &Interception) -> Result<bool, String> {
    let table = i.route_table.to_string();
    let out = match run(
        "ip",
        &["-j", family, "route", "show", "table", &table],
        None,
    ) {
        Ok(out) => out,
        // `Error: ipv4: FIB table does not exist.` / `Dump terminated`
        Err(e) if e.contains("FIB table does not exist") => return Ok(false),
        Err(e) => return Err(e),
    };
    let routes: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    Ok(routes.iter().any(|r| {
        r["type"] == "local"
            && r["dev"] == "lo"
            && matches!(r["dst"].as_str(), Some("default" | "0.0.0.0/0" | "::/0"))
    }))
}

/// Loads the table in one transaction, then adds what policy routing is
/// missing (never a second copy of a rule). Says what it did.
pub fn apply(plan: &Ruleset, source: &str) -> Result<Vec<String>, String> {
    // The local routes need `lo` up (the kernel refuses a v6 route through
    // a down device): say so before anything is half applied.
    if !loopback_up() {
        return Err(
            "lo is down: the local routes need it (ip link set lo up), nothing applied".into(),
        );
    }
    let families = families(plan);
    let mut done = Vec::new();
    run("nft", &["-f", "-"], Some(&plan.nft(source)))?;
    done.push(format!(
        "loaded table inet {TABLE} ({} steering rules)",
        plan.steers.len()
    ));
    let i = &plan.interception;
    let (mark, table) = (
        format!("{:#x}/{:#x}", i.fwmark, i.fwmark),
        i.route_table.to_string(),
    );
    for &fam in &families {
        if has_policy_rule(fam, i)? {
            done.push(format!(
                "ip {fam} rule fwmark {mark} lookup {table}: present"
            ));
        } else {
            run(
                "ip",
                &[fam, "rule", "add", "fwmark", &mark, "lookup", &table],
                None,
            )?;
            done.push(format!("ip {fam} rule add fwmark {mark} lookup {table}"));
        }
        run(
            "ip",
            &[
                fam, "route", "replace", "local", "default", "dev", "lo", "table", &table,
            ],
            None,
        )?;
        done.push(format!(
            "ip {fam} route replace local default dev lo table {table}"
        ));
    }
    Ok(done)
}

/// Whether `lo` is up (`IFF_UP` in its flags).
pub fn loopback_up() -> bool {
    let flags = std::fs::read_to_string("/sys/class/net/lo/flags").unwrap_or_default();
    u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).is_ok_and(|f| f & 1 == 1)
}

/// Removes the table and the policy routing `apply` installs, and nothing
/// else. Absent pieces are fine (removing twice is not an error).
pub fn remove(i: &Interception) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    run("nft", &["-f", "-"], Some(&removal()))?;
    done.push(format!("removed table inet {TABLE}"));
    let (mark, table) = (
        format!("{:#x}/{:#x}", i.fwmark, i.fwmark),
        i.route_table.to_string(),
    );
    let families: &[&str] = if ipv6_enabled() {
        &["-4", "-6"]
    } else {
        &["-4"]
    };
    for &fam in families {
        // Bounded: a rule added by hand a few times over goes too.
        for _ in 0..64 {
            if !has_policy_rule(fam, i)? {
                break;
            }
            run(
                "ip",
                &[fam, "rule", "del", "fwmark", &mark, "lookup", &table],
                None,
            )?;
            done.push(format!("ip {fam} rule del fwmark {mark} lookup {table}"));
        }
        if has_local_route(fam, i)? {
            run(
                "ip",
                &[
                    fam, "route", "del", "local", "default", "dev", "lo", "table", &table,
                ],
                None,
            )?;
            done.push(format!(
                "ip {fam} route del local default dev lo table {table}"
            ));
        }
    }
    Ok(done)
}
