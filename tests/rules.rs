//! `tproxyd rules` and `tproxyd doctor` in the lab's router namespace: the
//! lab itself is set up by `rules --apply -c lab/rules.yaml` (so every lab
//! test runs on generated rules); here the other interception settings,
//! `--remove`, idempotency and the doctor's diagnoses. Needs root.

mod harness;

use harness::*;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `tproxyd ARGS` in the router namespace: (exit 0?, stdout+stderr).
fn tproxyd_in_router(lab: &Lab, args: &[&str]) -> (bool, String) {
    let mut all = vec![tproxyd_bin()];
    all.extend_from_slice(args);
    let out = lab.exec(&lab.router_ns(), &all);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `lab/rules.yaml` with `interception` settings added, written to `dir`.
fn rules_config(dir: &Path, interception: &str) -> String {
    let base = std::fs::read_to_string(repo_file("lab/rules.yaml")).unwrap();
    let path = dir.join("rules.yaml");
    std::fs::write(&path, format!("{base}  interception:\n{interception}")).unwrap();
    path.display().to_string()
}

fn apply(lab: &Lab, conf: &str) {
    let (ok, text) = tproxyd_in_router(lab, &["rules", "--apply", "-c", conf]);
    assert!(ok, "rules --apply failed: {text}");
}

/// A plain GET from `src` (or the client's default address) to `dst`;
/// whether it went through tproxyd (the origin saw our Via).
fn proxied(lab: &Lab, origin: &Origin, src: Option<&str>, dst: &str, path: &str) -> bool {
    let stream = match src {
        Some(src) => lab.client_connect_from(src, dst),
        None => lab.client_connect(dst),
    }
    .unwrap_or_else(|e| panic!("connect {dst}: {e}"));
    let resp = Client::new(stream).get("www.lab.test", path, &[]).unwrap();
    assert_eq!(resp.status, 200, "{dst}{path}: {resp:?}");
    let seen = origin.wait_request(path);
    seen.headers
        .get("via")
        .is_some_and(|v| v.contains("tproxyd"))
}

fn v6(addr: &str, port: u16) -> String {
    format!("[{addr}]:{port}")
}

#[test]
fn fail_open_routes_traffic_unproxied_while_tproxyd_is_down() {
    if !lab_available("fail_open") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("rules");
    apply(&lab, &rules_config(&dir.0, "    on_proxy_down: bypass\n"));
    // No tproxyd: the connection reaches the origin directly.
    for dst in [format!("{SERVER_V4}:80"), v6(SERVER_V6, 80)] {
        let path = format!("/open-{}", dst.len());
        assert!(!proxied(&lab, &origin, None, &dst, &path));
        let seen = origin.wait_request(&path);
        assert!(
            seen.peer.ip().to_string().starts_with("192.0.2.")
                || seen.peer.ip().to_string().starts_with("2001:db8:1:"),
            "the origin sees the client itself: {seen:?}"
        );
    }
    // Back to fail closed: the same connection is reset.
    apply(&lab, &rules_config(&dir.0, "    on_proxy_down: reset\n"));
    let err = lab
        .client_connect(&format!("{SERVER_V4}:80"))
        .expect_err("reset while tproxyd is down");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn bypassed_destinations_and_clients_are_not_intercepted() {
    if !lab_available("bypass_lists") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("rules");
    apply(
        &lab,
        &rules_config(
            &dir.0,
            &format!(
                "    bypass:\n      destinations: [\"{SERVER2_V4}/32\", \"{SERVER2_V6}/128\"]\n      clients: [\"{CLIENT2_V4}\", \"{CLIENT2_V6}/128\"]\n"
            ),
        ),
    );
    let conf = TempDir::new("conf");
    let _proxy = Proxy::start(&lab, &lab_config(&conf.0, ""), &[8888]);
    let cases = [
        (None, format!("{SERVER_V4}:80"), true),
        (None, v6(SERVER_V6, 80), true),
        (None, format!("{SERVER2_V4}:80"), false),
        (None, v6(SERVER2_V6, 80), false),
        (Some(CLIENT2_V4), format!("{SERVER_V4}:80"), false),
        (Some(CLIENT2_V6), v6(SERVER_V6, 80), false),
    ];
    for (i, (src, dst, want)) in cases.iter().enumerate() {
        let path = format!("/case-{i}");
        assert_eq!(
            proxied(&lab, &origin, *src, dst, &path),
            *want,
            "from {src:?} to {dst}: intercepted should be {want}"
        );
    }
}

#[test]
fn quic_is_refused_at_once_unless_allowed() {
    if !lab_available("quic") {
        return;
    }
    let lab = Lab::up();
    // A UDP echo on 443 in the server namespace.
    let echo = in_netns(&lab.server_ns(), || UdpSocket::bind("0.0.0.0:443").unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let ask = |lab: &Lab| -> std::io::Result<usize> {
        in_netns(&lab.client_ns(), || {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(format!("{SERVER_V4}:443"))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.send(b"quic?")?;
            s.recv(&mut [0u8; 64])
        })
    };
    // The lab's default: quic: reject.
    let err = ask(&lab).expect_err("QUIC must be refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let dir = TempDir::new("rules");
    apply(&lab, &rules_config(&dir.0, "    quic: allow\n"));
    assert_eq!(ask(&lab).expect("QUIC allowed reaches the server"), 5);
}

fn ip_rules(lab: &Lab) -> String {
    let mut s = String::new();
    for fam in ["-4", "-6"] {
        let out = lab.exec(&lab.router_ns(), &["ip", fam, "rule", "show"]);
        s.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    s
}

#[test]
fn apply_is_idempotent_and_remove_touches_nothing_else() {
    if !lab_available("rules_remove") {
        return;
    }
    let lab = Lab::up();
    let decoy = "table inet decoy {\n  chain input {\n    type filter hook input priority filter; policy accept;\n    tcp dport 22 counter accept\n  }\n}\n";
    let dir = TempDir::new("rules");
    std::fs::write(dir.0.join("decoy.nft"), decoy).unwrap();
    let load = lab.exec(
        &lab.router_ns(),
        &["nft", "-f", &dir.0.join("decoy.nft").display().to_string()],
    );
    assert!(load.status.success(), "{load:?}");
    let list = |table: &str| {
        let out = lab.exec(&lab.router_ns(), &["nft", "list", "table", "inet", table]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let decoy_before = list("decoy");
    let lab_before = list("lab");
    let conf = repo_file("lab/rules.yaml").display().to_string();

    // The lab applied once already; twice more adds no second rule.
    apply(&lab, &conf);
    apply(&lab, &conf);
    let rules = ip_rules(&lab);
    assert_eq!(
        rules.matches("fwmark 0x1/0x1 lookup 100").count(),
        2,
        "{rules}"
    );

    let (ok, text) = tproxyd_in_router(&lab, &["rules", "--remove", "-c", &conf]);
    assert!(ok, "{text}");
    assert!(!list("tproxyd").0, "the tproxyd table is gone");
    assert_eq!(list("decoy"), decoy_before, "the decoy table is untouched");
    assert_eq!(list("lab"), lab_before, "the lab's own table is untouched");
    let rules = ip_rules(&lab);
    assert!(!rules.contains("fwmark"), "{rules}");
    let route = lab.exec(&lab.router_ns(), &["ip", "route", "show", "table", "100"]);
    assert!(String::from_utf8_lossy(&route.stdout).trim().is_empty());
    // Removing again is not an error.
    let (ok, text) = tproxyd_in_router(&lab, &["rules", "--remove", "-c", &conf]);
    assert!(ok, "{text}");
}

/// Runs the doctor; (exit 0?, report).
fn doctor(lab: &Lab, conf: &str) -> (bool, String) {
    tproxyd_in_router(lab, &["doctor", "-c", conf])
}

#[test]
fn doctor_passes_on_the_lab_and_names_each_breakage() {
    if !lab_available("doctor") {
        return;
    }
    let lab = Lab::up();
    let conf = repo_file("lab/rules.yaml").display().to_string();
    let (ok, report) = doctor(&lab, &conf);
    assert!(ok && !report.contains("FAIL"), "{report}");
    for check in [
        "nft-table",
        "policy-routing-v4",
        "policy-routing-v6",
        "loopback",
    ] {
        assert!(
            report.contains(&format!("ok   {check}:")),
            "{check}: {report}"
        );
    }

    // A policy rule deleted by hand.
    lab.exec(
        &lab.router_ns(),
        &[
            "ip", "-4", "rule", "del", "fwmark", "0x1/0x1", "lookup", "100",
        ],
    );
    let (ok, report) = doctor(&lab, &conf);
    assert!(!ok, "{report}");
    assert!(
        report.contains("FAIL policy-routing-v4: the rule is missing"),
        "{report}"
    );
    assert!(report.contains("ok   policy-routing-v6"), "{report}");
    apply(&lab, &conf);

    // The config changed but not the rules: a port, then an interface.
    let dir = TempDir::new("doctor");
    let edited = |from: &str, to: &str| {
        let path = dir.0.join("edited.yaml");
        let text = std::fs::read_to_string(&conf).unwrap().replace(from, to);
        std::fs::write(&path, text).unwrap();
        doctor(&lab, &path.display().to_string())
    };
    for ((from, to), named) in [
        (("\"80-89\"", "\"80-90\""), "ipv4 port 90 on lan0 → :8888"),
        (
            ("interfaces: [lan0] }", "interfaces: [lan1] }"),
            "port 80 on lan1 → :8888",
        ),
    ] {
        let (ok, report) = edited(from, to);
        assert!(!ok, "{report}");
        assert!(
            report.contains("FAIL nft-table") && report.contains(named),
            "{to}: {report}"
        );
    }

    // The table missing.
    lab.exec(
        &lab.router_ns(),
        &["nft", "delete", "table", "inet", "tproxyd"],
    );
    let (ok, report) = doctor(&lab, &conf);
    assert!(!ok, "{report}");
    assert!(
        report.contains(
            "FAIL nft-table: table inet tproxyd is not installed; fix: run `tproxyd rules --apply`"
        ),
        "{report}"
    );

    // lo down: the doctor says so, and --apply refuses before it applies
    // anything (the v6 local route cannot be added through a down lo).
    lab.exec(&lab.router_ns(), &["ip", "link", "set", "lo", "down"]);
    let (ok, report) = doctor(&lab, &conf);
    assert!(
        !ok && report.contains("FAIL loopback: lo is down"),
        "{report}"
    );
    let (ok, text) = tproxyd_in_router(&lab, &["rules", "--apply", "-c", &conf]);
    assert!(!ok && text.contains("lo is down"), "{text}");
    let listed = lab.exec(
        &lab.router_ns(),
        &["nft", "list", "table", "inet", "tproxyd"],
    );
    assert!(!listed.status.success(), "nothing applied while lo is down");
    lab.exec(&lab.router_ns(), &["ip", "link", "set", "lo", "up"]);

    // Another table steering an intercepted port: a warning naming it.
    let other = dir.0.join("other.nft");
    std::fs::write(
        &other,
        "table ip other {\n  chain pre {\n    type nat hook prerouting priority dstnat; policy accept;\n    tcp dport 80 redirect to :3128\n  }\n}\n",
    )
    .unwrap();
    let load = lab.exec(
        &lab.router_ns(),
        &["nft", "-f", &other.display().to_string()],
    );
    assert!(load.status.success(), "{load:?}");
    let (_, report) = doctor(&lab, &conf);
    assert!(
        report.contains("warn other-tables: table ip other chain pre steers port 80"),
        "{report}"
    );
    lab.exec(&lab.router_ns(), &["nft", "delete", "table", "ip", "other"]);

    // src_valid_mark=1 breaks interception.
    apply(&lab, &conf);
    lab.exec(
        &lab.router_ns(),
        &["sysctl", "-qw", "net.ipv4.conf.lan0.src_valid_mark=1"],
    );
    let (ok, report) = doctor(&lab, &conf);
    assert!(!ok, "{report}");
    assert!(
        report.contains("FAIL src_valid_mark: 1 on lan0"),
        "{report}"
    );
}
