//! The command line: `-t` validation of both config parts, and start-up
//! failures that must stop the process instead of leaving it listener-less.

mod harness;

use harness::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn check(yaml: &str) -> (bool, String) {
    let dir = TempDir::new("check");
    let path = dir.0.join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(tproxyd_bin())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn shipped_config_is_valid() {
    let out = Command::new(tproxyd_bin())
        .args(["-t", "-c"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/tproxyd.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid"));
}

#[test]
fn lab_config_is_valid() {
    let dir = TempDir::new("labconf");
    let (ok, text) = check(&lab_config(&dir.0, ""));
    assert!(ok, "{text}");
}

#[test]
fn bad_configs_are_rejected_naming_the_key() {
    let cases: &[(&str, &[&str])] = &[
        (
            "tproxyd:\n  listeners:\n    - { name: a, address: \"[::]:8888\", mode: transparent }\n",
            &["tproxyd.listeners[0].mode", "transparent"],
        ),
        (
            "tproxyd:\n  listeners:\n    - { name: a, address: \"localhost:8888\", mode: tproxy }\n",
            &["tproxyd.listeners[0].address", "localhost:8888"],
        ),
        (
            "tproxyd:\n  upstream:\n    read_timeout: forever\n",
            &["tproxyd.upstream.read_timeout", "bad duration"],
        ),
        ("tproxyd:\n  listners: []\n", &["listners", "unknown field"]),
        ("grace_period_secs: 3\n", &["grace_period_secs", "unknown key"]),
        ("threads: lots\n", &["threads"]),
        ("tproxyd: [\n", &["invalid config"]),
    ];
    for (yaml, needles) in cases {
        let (ok, text) = check(yaml);
        assert!(!ok, "accepted bad config:\n{yaml}");
        for n in *needles {
            assert!(text.contains(n), "message for\n{yaml}\nlacks {n:?}: {text}");
        }
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let out = Command::new(tproxyd_bin())
        .args(["-t", "-c", "/nonexistent/tproxyd.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tproxyd.yaml"));
}

#[test]
fn a_listener_that_cannot_bind_stops_the_process() {
    if !lab_available("listener_bind_failure") {
        return;
    }
    let lab = Lab::up();
    // Something else already listens on the proxy port in the router.
    let _squatter = in_netns(&lab.router_ns(), || {
        std::net::TcpListener::bind("[::]:8888").unwrap()
    });
    let dir = TempDir::new("bindfail");
    let conf = dir.0.join("c.yaml");
    std::fs::write(&conf, lab_config(&dir.0, "")).unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.router_ns(), tproxyd_bin(), "-c"])
        .arg(&conf)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    if !poll_until(Duration::from_secs(10), || {
        status = child.try_wait().unwrap();
        status.is_some()
    }) {
        let _ = child.kill();
        panic!("tproxyd kept running without its listener");
    }
    let status = status.unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("lan-http") && err.contains("[::]:8888") && err.contains("in use"),
        "{err}"
    );
}

fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tproxyd_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_is_written_for_tproxyd_with_its_subcommands() {
    let (ok, help, _) = run_cli(&["--help"]);
    assert!(ok);
    for cmd in ["run", "check", "rules", "doctor", "completions"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from\n{help}"
        );
    }
    assert!(
        !help.to_lowercase().contains("pingora-based") && !help.contains("base set of command"),
        "Pingora's own help text leaks into ours:\n{help}"
    );
    for signal in ["SIGTERM", "SIGQUIT", "SIGINT", "SIGHUP"] {
        assert!(help.contains(signal), "{signal} missing from\n{help}");
    }
    for sub in ["run", "check", "rules", "doctor"] {
        let (ok, text, _) = run_cli(&[sub, "--help"]);
        assert!(ok && text.contains("--conf"), "{sub} --help:\n{text}");
        assert!(!text.to_lowercase().contains("pingora-based"), "{text}");
    }
    let (ok, _, err) = run_cli(&["frobnicate"]);
    assert!(!ok && err.contains("frobnicate"), "{err}");
}

#[test]
fn check_subcommand_is_dash_t() {
    let dir = TempDir::new("check");
    let good = dir.0.join("good.yaml");
    std::fs::write(&good, "version: 1\n").unwrap();
    let bad = dir.0.join("bad.yaml");
    std::fs::write(&bad, "tproxyd:\n  interception: { quic: block }\n").unwrap();
    let (ok, out, _) = run_cli(&["check", "-c", good.to_str().unwrap()]);
    assert!(ok && out.contains("is valid"), "{out}");
    let (ok, out, _) = run_cli(&["run", "-t", "-c", good.to_str().unwrap()]);
    assert!(ok && out.contains("is valid"), "{out}");
    let (ok, _, err) = run_cli(&["check", "-c", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("tproxyd.interception.quic"), "{err}");
    let (ok, _, err) = run_cli(&["check", "-c", "/nonexistent/tproxyd.yaml"]);
    assert!(!ok && err.contains("/nonexistent/tproxyd.yaml"), "{err}");
}

#[test]
fn rules_prints_the_table_for_the_shipped_config_without_privileges() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/tproxyd.yaml");
    let (ok, out, err) = run_cli(&["rules", "-c", conf.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("table inet tproxyd {"), "{out}");
    assert!(out.contains("tproxy ip to :8888"), "{out}");
    assert!(out.contains("reject with tcp reset"), "{out}");
}

#[test]
fn shipped_manual_and_completions_are_generated_from_this_cli() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (args, file) in [
        (&["manpage"][..], "dist/tproxyd.8"),
        (
            &["completions", "bash"][..],
            "dist/completions/tproxyd.bash",
        ),
        (&["completions", "zsh"][..], "dist/completions/_tproxyd"),
        (
            &["completions", "fish"][..],
            "dist/completions/tproxyd.fish",
        ),
    ] {
        let (ok, out, _) = run_cli(args);
        assert!(ok);
        let shipped = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            out == shipped,
            "{file} is out of date: run dist/generate.sh"
        );
    }
    let (_, man, _) = run_cli(&["manpage"]);
    for section in [
        ".SH NAME",
        ".SH COMMANDS",
        ".SH CONFIGURATION",
        ".SH SIGNALS",
        ".B SIGTERM",
        ".B SIGQUIT",
        ".B SIGINT",
        ".B SIGHUP",
    ] {
        assert!(man.contains(section), "{section}");
    }
    let synopsis = man.split(".SH SYNOPSIS\n").nth(1).unwrap_or_default();
    assert!(
        synopsis
            .lines()
            .next()
            .is_some_and(|l| l.contains(r"\fB\-\-conf\fR \fIFILE\fR")),
        "the synopsis does not show --conf FILE:\n{synopsis}"
    );
}
