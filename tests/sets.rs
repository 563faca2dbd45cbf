//! Policy on names at scale, through real TPROXY: flows denied by name and
//! address sets loaded from files (each list format) and allowed otherwise,
//! for HTTP, TLS passthrough by SNI, TLS on an HTTP listener, and CONNECT
//! (judged by name before any lookup); a set reloaded under load with no
//! failed request; a broken file keeping the old set.

mod harness;

use harness::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The lists, one per format.
fn write_lists(dir: &Path) {
    std::fs::write(
        dir.join("ads.txt"),
        "# ads\nads.test\n*.tracker.test\nblocked.invalid\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("hosts.txt"),
        "127.0.0.1 localhost\n0.0.0.0 hosted.test other.test\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("adblock.txt"),
        "[Adblock Plus 2.0]\n! comment\n||adblocked.test^\nexample.com##.ad\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("nets.txt"),
        format!("{SERVER2_V4}\n2001:db8:2::11/128\n"),
    )
    .unwrap();
}

fn config(dir: &Path, watch: &str) -> String {
    let d = dir.display();
    let extra = format!(
        r#"  sets_watch_interval: {watch}
  sets:
    ads: {{ file: {d}/ads.txt, format: domains }}
    hosted: {{ file: {d}/hosts.txt, format: hosts }}
    adb: {{ file: {d}/adblock.txt }}
    nets: {{ file: {d}/nets.txt, format: cidrs }}
  filters:
    - acl:
        rules:
          - {{ name: names, action: deny, host_set: [ads, hosted, adb] }}
          - {{ name: nets, action: deny, dst_set: [nets] }}
"#
    );
    lab_config(dir, &extra).replace(
        "  upstream:",
        r#"    - name: lan-tls
      address: "[::]:8443"
      mode: tls-passthrough
      tls:
        acl:
          rules:
            - { name: tls-names, action: deny, sni: ["*.nope.test"], host_set: [ads] }
            - { name: tls-ads, action: deny, host_set: [ads] }
    - name: fwd
      address: "[::]:3128"
      mode: forward
      allow_clients: ["192.0.2.0/24"]
      connect_ports: [443]
  upstream:"#,
    )
}

fn curl(lab: &Lab, args: &[&str]) -> bool {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns(),
            "curl",
            "-sSk",
            "--max-time",
            "3",
        ])
        .args(args)
        .output()
        .unwrap();
    out.status.success()
}

/// A CONNECT's status and body (a refusal's), read up to the end of the
/// answer or, for a 200, of its head (the tunnel then stays open).
fn connect(lab: &Lab, authority: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let proxy = format!("{ROUTER_LAN_V4}:3128");
    let mut s = lab.client_connect_from(CLIENT_V4, &proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if text.starts_with("HTTP/1.1 200") && text.contains("\r\n\r\n") {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn every_kind_of_flow_is_judged_by_its_name_in_the_sets() {
    if !lab_available("sets_every_kind") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    Origin::start_echo(&lab, 443);
    Origin::start_echo(&lab, 84);
    let dir = TempDir::new("sets");
    write_lists(&dir.0);
    let proxy = Proxy::start(&lab, &config(&dir.0, "5s"), &[8888, 8889, 8443, 3128]);
    let v4 = format!("{SERVER_V4}:80");
    // HTTP: a listed name and its subdomains, from each name format.
    for host in [
        "ads.test",
        "www.ads.test",
        "a.b.tracker.test",
        "hosted.test",
        "x.other.test",
        "adblocked.test",
    ] {
        let r = get(&lab, &v4, host, "/blocked");
        assert_eq!(r.status, 403, "{host}: {r:?}");
        assert!(r.body.contains("rule names"), "{host}: {}", r.body);
    }
    // Not on a label boundary, or not listed at all: forwarded.
    for host in [
        "badads.test",
        "tracker.test.other",
        "localhost",
        "example.com",
    ] {
        assert_eq!(get(&lab, &v4, host, "/fine").status, 200, "{host}");
    }
    assert_eq!(origin.count(), 4, "denied requests never reach the origin");
    proxy.wait_access(&["www.ads.test", "403", "decision=acl:deny:names"]);
    // A CIDR set on the destination.
    let r = get(&lab, &format!("{SERVER2_V4}:80"), "fine.test", "/net");
    assert_eq!(r.status, 403, "{r:?}");
    proxy.wait_access(&[SERVER2_V4, "decision=acl:deny:nets"]);
    // TLS on a passthrough listener, by SNI.
    assert!(!curl(
        &lab,
        &[
            "--resolve",
            &format!("www.ads.test:443:{SERVER_V4}"),
            "https://www.ads.test/"
        ]
    ));
    proxy.wait_access(&[
        "TLS www.ads.test",
        "tls=denied",
        "decision=acl:deny:tls-ads",
    ]);
    let _ = curl(
        &lab,
        &[
            "--resolve",
            &format!("fine.test:443:{SERVER_V4}"),
            "https://fine.test/",
        ],
    );
    proxy.wait_access(&["TLS fine.test", "tls=spliced"]);
    // TLS found on an HTTP listener (port 84), by SNI.
    let _ = curl(
        &lab,
        &[
            "--resolve",
            &format!("x.tracker.test:84:{SERVER_V4}"),
            "https://x.tracker.test:84/",
        ],
    );
    proxy.wait_access(&[
        "TUNNEL x.tracker.test",
        "refused=acl",
        "decision=acl:deny:names",
    ]);
    let _ = curl(
        &lab,
        &[
            "--resolve",
            &format!("fine.test:84:{SERVER_V4}"),
            "https://fine.test:84/",
        ],
    );
    proxy.wait_access(&["TUNNEL fine.test", "tls=tunnelled"]);
    // CONNECT, by its authority, before any lookup: a listed name that
    // does not even resolve is refused, not a 502.
    let (status, body) = connect(&lab, "www.blocked.invalid:443");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("rule names"), "{body}");
    let (status, body) = connect(&lab, "nowhere.invalid:443");
    assert_eq!(status, 502, "an unlisted name is looked up: {body}");
    assert_eq!(connect(&lab, &format!("{SERVER_V4}:443")).0, 200);
    proxy.wait_access(&[
        "CONNECT www.blocked.invalid:443",
        "403",
        "decision=acl:deny:names",
    ]);
}

#[test]
fn a_set_reloads_under_load_and_a_broken_file_keeps_the_old_set() {
    if !lab_available("sets_reload") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("sets-reload");
    write_lists(&dir.0);
    let proxy = Proxy::start(&lab, &config(&dir.0, "200ms"), &[8888, 8889]);
    let v4 = format!("{SERVER_V4}:80");
    assert_eq!(get(&lab, &v4, "new.test", "/before").status, 200);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = start_load(&lab, &v4, 4, 1, stop.clone());
    wait_load_flowing(&origin, &v4, 5);
    // The new list, written aside and renamed in (what list updaters do).
    let list = dir.0.join("ads.txt");
    let aside = dir.0.join("ads.txt.new");
    std::fs::write(&aside, "ads.test\nnew.test\n").unwrap();
    std::fs::rename(&aside, &list).unwrap();
    wait_until("the new entry in force", Duration::from_secs(5), || {
        get(&lab, &v4, "www.new.test", "/after").status == 403
    });
    // A broken file: the load fails, the old set stays, the error counts.
    std::fs::write(&aside, "# nothing left\n\u{0}\n").unwrap();
    std::fs::rename(&aside, &list).unwrap();
    let errors = || {
        metric(
            &admin_get(&lab, "/metrics").body,
            "tproxyd_set_reload_total",
            &[r#"set="ads""#, r#"result="error""#],
        )
    };
    wait_until("the failed reload counted", Duration::from_secs(5), || {
        errors() == Some(1.0)
    });
    assert_eq!(
        get(&lab, &v4, "www.new.test", "/kept").status,
        403,
        "the old set stays"
    );
    assert!(
        proxy
            .log_text()
            .contains("set ads: keeping the previous set"),
        "{}",
        proxy.log_text()
    );
    let body = admin_get(&lab, "/metrics").body;
    assert_eq!(
        metric(&body, "tproxyd_set_entries", &[r#"set="ads""#]),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "tproxyd_set_reload_total",
            &[r#"set="ads""#, r#"result="ok""#]
        ),
        Some(1.0)
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = finish_load(load);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.ok > 20, "{report:?}");
}

#[test]
fn a_custom_filter_looks_names_up_in_a_set() {
    if !lab_available("sets_example_filter") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("sets-example");
    write_lists(&dir.0);
    let extra = format!(
        "  sets:\n    ads: {{ file: {}/ads.txt }}\n  filters:\n    - tag_listed: {{ set: ads }}\n",
        dir.0.display()
    );
    let yaml = lab_config(&dir.0, &extra);
    let _proxy = Proxy::start_bin(&lab, &example_bin("tag_listed"), &yaml, &[8888, 8889]);
    let v4 = format!("{SERVER_V4}:80");
    assert_eq!(get(&lab, &v4, "www.ads.test", "/listed").status, 200);
    assert_eq!(get(&lab, &v4, "fine.test", "/unlisted").status, 200);
    let seen = origin.wait_request("/listed");
    assert_eq!(
        seen.headers.get("x-listed").map(String::as_str),
        Some("ads"),
        "{seen:?}"
    );
    let seen = origin.wait_request("/unlisted");
    assert!(!seen.headers.contains_key("x-listed"), "{seen:?}");
}
