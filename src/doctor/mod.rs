//! `tproxyd doctor`: the host checked against the config, for the operator
//! whose LAN is not being intercepted and who needs to know why. Each check
//! looks at one thing the kernel path depends on and prints exactly one
//! line:
//!
//! ```text
//! ok   NAME: WHAT
//! warn NAME: WHAT; fix: FIX
//! FAIL NAME: WHAT; fix: FIX
//! ```
//!
//! so `grep '^FAIL'`, `grep ' nft-table:'` or splitting on `; fix: ` read
//! it; a tool's error spread over lines is folded into its check's line.
//! The last line counts them (`N checks: F failed, W warnings`).
//!
//! One module per area: [`privileges`] (the capability, the socket option),
//! [`firewall`] (the nftables table, fail-closed, families, other tables),
//! [`routing`] (policy routing, `lo`), [`sysctls`] (forwarding and the
//! reverse-path settings that break interception), [`limits`] (the
//! open-file limit), [`egress`] (interfaces and parent proxies).

mod egress;
mod firewall;
mod limits;
mod privileges;
mod routing;
mod sysctls;

use crate::config::{Config, ConfigError};
use crate::rules::Ruleset;
use std::fmt;

/// The fix for a missing or outdated table, rule or route.
const APPLY: &str = "run `tproxyd rules --apply`";

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

impl Status {
    /// The line's first word, padded so the names line up.
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    /// The verdict.
    pub status: Status,
    /// What was checked, e.g. `policy-routing-v4`.
    pub name: &'static str,
    /// What was found.
    pub what: String,
    /// What to do: always there for warn and FAIL, never for ok.
    pub fix: Option<String>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.word(),
            self.name,
            one_line(&self.what)
        )?;
        match &self.fix {
            Some(fix) => write!(f, "; fix: {}", one_line(fix)),
            None => Ok(()),
        }
    }
}

/// Text from a tool (`ip` prints `Error: …` and `Dump terminated` on two
/// lines) folded into one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Every check's line.
#[derive(Debug, Default)]
pub struct Report {
    /// In the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, status: Status, name: &'static str, what: String, fix: Option<String>) {
        self.checks.push(Check {
            status,
            name,
            what,
            fix,
        });
    }

    /// A check that passed.
    fn ok(&mut self, name: &'static str, what: impl Into<String>) {
        self.add(Status::Ok, name, what.into(), None);
    }

    /// A check that warns, and what to do about it.
    fn warn(&mut self, name: &'static str, what: impl Into<String>, fix: impl Into<String>) {
        self.add(Status::Warn, name, what.into(), Some(fix.into()));
    }

    /// A check that failed, and what to do about it.
    fn fail(&mut self, name: &'static str, what: impl Into<String>, fix: impl Into<String>) {
        self.add(Status::Fail, name, what.into(), Some(fix.into()));
    }

    /// Whether any check failed (the exit status).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(f, "{c}")?;
        }
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        writeln!(
            f,
            "{} checks: {} failed, {} warnings",
            self.checks.len(),
            count(Status::Fail),
            count(Status::Warn)
        )
    }
}

/// The fix when running `tool` failed: install it when it is missing,
/// otherwise run the doctor as root (what `tool` needs to read the host).
fn tool_fix(error: &str, package: &str) -> String {
    if error.contains("installed?") {
        format!("install {package}")
    } else {
        "run tproxyd doctor as root".to_string()
    }
}

/// Runs every check for the config loaded from `path`.
pub fn examine(config: Result<Config, ConfigError>, path: &str) -> Report {
    let mut r = Report::default();
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            let fix = format!("edit {path}, or name another file with -c");
            r.fail("config", e.to_string(), fix);
            return r;
        }
    };
    r.ok("config", format!("{path} is valid"));
    let t = &config.tproxyd;
    privileges::check(&mut r, t);
    let plan = Ruleset::from_config(t);
    firewall::table(&mut r, &plan);
    firewall::coverage(&mut r, &plan);
    routing::policy(&mut r, &plan);
    routing::loopback(&mut r);
    sysctls::check(&mut r, &plan);
    firewall::others(&mut r, &plan);
    limits::open_files(&mut r, t, &config);
    egress::check(&mut r, t);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_is_one_line_with_its_fix() {
        let mut r = Report::default();
        r.ok("loopback", "lo is up");
        r.fail(
            "policy-routing-v4",
            "`ip -j -4 route show table 100` failed: Error: ipv4: FIB table does not exist.\nDump terminated\n",
            tool_fix("Operation not permitted", "iproute2"),
        );
        r.warn("families", "a (ipv4 only)", "listen on [::]:PORT");
        assert_eq!(
            r.to_string(),
            "ok   loopback: lo is up\n\
             FAIL policy-routing-v4: `ip -j -4 route show table 100` failed: Error: ipv4: FIB table does not exist. / Dump terminated; fix: run tproxyd doctor as root\n\
             warn families: a (ipv4 only); fix: listen on [::]:PORT\n\
             3 checks: 1 failed, 1 warnings\n"
        );
        assert!(r.failed());
        assert_eq!(
            tool_fix("(is ip installed?)", "iproute2"),
            "install iproute2"
        );
    }

    #[test]
    fn an_invalid_config_is_the_only_check() {
        let r = examine(Config::from_yaml("tproxyd: [1"), "x.yaml");
        let text = r.to_string();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.starts_with("FAIL config: "), "{text}");
        assert!(
            text.contains("; fix: edit x.yaml, or name another file with -c\n"),
            "{text}"
        );
    }
}
