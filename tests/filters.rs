//! The filters, end to end through TPROXY: each built-in changes what the
//! origin or the client sees (and would fail these tests if it did nothing),
//! the example custom filter works, and filter failures become clean 500s.

mod harness;

use harness::*;
use std::time::{Duration, Instant};

fn setup_bin(test: &str, bin: Option<&str>, extra: &str) -> Option<(Lab, Origin, Proxy)> {
    if !lab_available(test) {
        return None;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80, 8080]);
    let dir = TempDir::new("conf");
    let yaml = lab_config(&dir.0, extra);
    let proxy = match bin {
        Some(b) => Proxy::start_bin(&lab, &example_bin(b), &yaml, &[8888, 8889]),
        None => Proxy::start(&lab, &yaml, &[8888, 8889]),
    };
    Some((lab, origin, proxy))
}

fn setup(test: &str, extra: &str) -> Option<(Lab, Origin, Proxy)> {
    setup_bin(test, None, extra)
}

fn v4(port: u16) -> String {
    format!("{SERVER_V4}:{port}")
}

#[test]
fn headers_filter_adds_sets_removes_with_variables() {
    let extra = r#"  request_headers:
    add: { X-Client: "$client_ip" }
  filters:
    - headers:
        request:
          add: { X-Flow: "$client_ip:$client_port>$dst_ip:$dst_port $listener" }
          set: { X-Gateway: "gw-$listener", X-Seen-Host: "$host" }
          remove: [X-Debug]
        response:
          set: { X-Request-Id: "$request_id" }
          remove: [Content-Type]
"#;
    let Some((lab, origin, proxy)) = setup("headers_filter", extra) else {
        return;
    };
    let stream = lab.client_connect(&v4(80)).unwrap();
    let client_port = stream.local_addr().unwrap().port();
    let mut c = Client::new(stream);
    let resp = c
        .get(
            "www.example.org",
            "/h",
            &[("X-Debug", "1"), ("X-Gateway", "forged")],
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    let s = origin.seen().pop().unwrap();
    assert_eq!(s.headers["x-client"], CLIENT_V4);
    assert_eq!(
        s.headers["x-flow"],
        format!("{CLIENT_V4}:{client_port}>{SERVER_V4}:80 lan-http")
    );
    assert_eq!(
        s.headers["x-gateway"], "gw-lan-http",
        "set replaces the client's value"
    );
    assert_eq!(s.headers["x-seen-host"], "www.example.org");
    assert!(!s.headers.contains_key("x-debug"), "removed");
    assert_eq!(s.headers["via"], "1.1 tproxyd", "Via stays on by default");
    // Response side: the request id is the one in the access log.
    let id = resp
        .headers
        .get("x-request-id")
        .expect("x-request-id")
        .clone();
    assert_eq!(id.len(), 16);
    assert!(!resp.headers.contains_key("content-type"));
    proxy.wait_access(&[&id, "/h", "200"]);
}

#[test]
fn forwarding_headers_modes() {
    let extra = r#"  forwarding:
    via: transparent
    x_forwarded_for: on
    forwarded: replace
"#;
    let Some((lab, origin, _proxy)) = setup("forwarding_modes", extra) else {
        return;
    };
    let mut c = Client::new(lab.client_connect(&format!("[{SERVER_V6}]:80")).unwrap());
    let resp = c
        .get(
            "www.example.org",
            "/f",
            &[
                ("Via", "1.0 client-side-cache"),
                ("X-Forwarded-For", "203.0.113.7"),
                ("Forwarded", "for=203.0.113.7"),
            ],
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    let s = origin.seen().pop().unwrap();
    assert_eq!(
        s.headers["via"], "1.0 client-side-cache",
        "transparent: untouched, ours not added"
    );
    assert_eq!(
        s.headers["x-forwarded-for"],
        format!("203.0.113.7, {CLIENT_V6}")
    );
    assert_eq!(
        s.headers["forwarded"],
        format!("for=\"[{CLIENT_V6}]\";proto=http;host=\"www.example.org\"")
    );
}

#[test]
fn forwarding_delete_and_custom_via_token_for_loops() {
    let extra = r#"  forwarding:
    via: on
    via_token: gw-east
    x_forwarded_for: delete
"#;
    let Some((lab, origin, _proxy)) = setup("forwarding_delete_token", extra) else {
        return;
    };
    let mut c = Client::new(lab.client_connect(&v4(80)).unwrap());
    // Another tproxyd upstream of us ("tproxyd") is not a loop for gw-east.
    let resp = c
        .get(
            "a.test",
            "/d",
            &[("X-Forwarded-For", "203.0.113.7"), ("Via", "1.1 tproxyd")],
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    let s = origin.seen().pop().unwrap();
    assert!(!s.headers.contains_key("x-forwarded-for"));
    assert_eq!(s.headers["via"], "1.1 tproxyd, 1.1 gw-east");
    // Our own token is.
    let resp = get_with(&lab, &v4(80), &[("Via", "1.1 gw-east")]);
    assert_eq!(resp.status, 508);
    assert_eq!(origin.count(), 1);
}

fn get_with(lab: &Lab, dst: &str, extra: &[(&str, &str)]) -> Response {
    Client::new(lab.client_connect(dst).unwrap())
        .get("a.test", "/x", extra)
        .unwrap()
}

#[test]
fn acl_first_match_wins_denies_with_403_and_logs_the_rule() {
    let extra = r#"  filters:
    - acl:
        default: deny
        rules:
          - name: no-admin
            action: deny
            path_prefix: [/admin]
          - name: lan-v4-web
            action: allow
            client: ["192.0.2.0/24"]
            dst: ["198.51.100.10"]
            dst_port: [80, "8000-8099"]
            method: [GET]
          - name: v6-lab-names
            action: allow
            client: ["2001:db8:1::/64"]
            host: ["*.lab.test"]
"#;
    let Some((lab, origin, proxy)) = setup("acl", extra) else {
        return;
    };
    let ok = get(&lab, &v4(80), "x.test", "/public");
    assert_eq!(ok.status, 200);
    let ok = get(&lab, &v4(8080), "x.test", "/public-nat");
    assert_eq!(ok.status, 200);
    assert_eq!(origin.count(), 2);

    let denied = get(&lab, &v4(80), "x.test", "/admin/panel");
    assert_eq!(denied.status, 403);
    assert!(!denied.headers.contains_key("server"), "{denied:?}");
    assert!(denied.body.contains("no-admin"), "{}", denied.body);
    proxy.wait_access(&["/admin/panel", "403", "decision=acl:deny:no-admin"]);

    // Another destination: no allow rule matches → default deny.
    let denied = get(&lab, &format!("{SERVER2_V4}:80"), "x.test", "/public");
    assert_eq!(denied.status, 403);
    proxy.wait_access(&[SERVER2_V4, "decision=acl:deny:default"]);

    // v6 client: allowed only for *.lab.test Hosts.
    let v6 = format!("[{SERVER_V6}]:80");
    assert_eq!(get(&lab, &v6, "www.lab.test", "/v6").status, 200);
    assert_eq!(get(&lab, &v6, "lab.test", "/v6").status, 403);
    assert_eq!(get(&lab, &v6, "www.example.org", "/v6").status, 403);
    proxy.wait_access(&["www.lab.test", "decision=acl:allow:v6-lab-names"]);
    assert_eq!(origin.count(), 3, "denied requests never reach the origin");
}

#[test]
fn host_check_deny_and_log_modes() {
    let extra = r#"  filters:
    - host_check: { mode: deny, resolve_timeout: 1s }
"#;
    let Some((lab, origin, proxy)) = setup("host_check_deny", extra) else {
        return;
    };
    // Literal IPs must match exactly.
    assert_eq!(get(&lab, &v4(80), SERVER_V4, "/ip-ok").status, 200);
    let r = get(&lab, &v4(80), SERVER2_V4, "/ip-bad");
    assert_eq!(r.status, 409);
    assert!(
        r.body.contains(SERVER2_V4) && r.body.contains(SERVER_V4),
        "{}",
        r.body
    );
    let v6 = format!("[{SERVER_V6}]:80");
    assert_eq!(get(&lab, &v6, &v6, "/v6-ok").status, 200);
    // Names resolve in the router (lab hosts file): www.lab.test is .10.
    assert_eq!(get(&lab, &v4(80), "www.lab.test", "/name-ok").status, 200);
    assert_eq!(get(&lab, &v6, "www.lab.test", "/name-ok-v6").status, 200);
    assert_eq!(
        get(
            &lab,
            &format!("{SERVER2_V4}:80"),
            "www.lab.test",
            "/name-bad"
        )
        .status,
        409
    );
    // Port must match too.
    assert_eq!(
        get(&lab, &v4(8080), "www.lab.test:8080", "/port-ok").status,
        200
    );
    assert_eq!(
        get(&lab, &v4(8080), "www.lab.test", "/port-bad").status,
        409
    );
    // Unresolvable: let through, logged as unverified, and fast.
    let t = Instant::now();
    assert_eq!(
        get(&lab, &v4(80), "nowhere.invalid", "/unverified").status,
        200
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    proxy.wait_access(&["/unverified", "decision=host_check:unverified"]);
    proxy.wait_access(&["/name-bad", "409", "decision=host_check:deny"]);
    let paths: Vec<String> = origin.seen().iter().map(|s| s.path.clone()).collect();
    assert!(!paths.iter().any(|p| p.ends_with("-bad")), "{paths:?}");
}

#[test]
fn host_check_log_mode_forwards_and_logs() {
    let extra = "  filters:\n    - host_check: { mode: log }\n";
    let Some((lab, origin, proxy)) = setup("host_check_log", extra) else {
        return;
    };
    let r = get(&lab, &v4(80), SERVER2_V4, "/mismatch");
    assert_eq!(r.status, 200);
    assert_eq!(origin.count(), 1);
    proxy.wait_access(&["/mismatch", "decision=host_check:mismatch"]);
}

#[test]
fn example_custom_filter_denies_and_tags() {
    let extra = "  filters:\n    - deny_path: { pattern: /private }\n";
    let Some((lab, origin, proxy)) = setup_bin("example_deny_path", Some("deny_path"), extra)
    else {
        return;
    };
    let r = get(&lab, &v4(80), "x.test", "/public/page");
    assert_eq!(r.status, 200);
    let s = origin.seen().pop().unwrap();
    assert_eq!(s.headers["x-client-ip"], CLIENT_V4);
    assert_eq!(s.headers["via"], "1.1 tproxyd");
    let r = get(&lab, &format!("[{SERVER_V6}]:80"), "x.test", "/a/private/b");
    assert_eq!(r.status, 403);
    assert_eq!(r.body, "403 Forbidden: this path is blocked\n");
    assert_eq!(origin.count(), 1);
    proxy.wait_access(&["/a/private/b", "403", "decision=deny_path:/private"]);
}

#[test]
fn example_custom_filter_settings_are_validated() {
    let dir = TempDir::new("denycheck");
    let conf = dir.0.join("c.yaml");
    std::fs::write(
        &conf,
        "tproxyd:\n  filters:\n    - deny_path: { patern: x }\n",
    )
    .unwrap();
    let bin = example_bin("deny_path");
    let out = std::process::Command::new(&bin)
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tproxyd.filters[0].deny_path.pattern"),
        "{err}"
    );
    std::fs::write(&conf, "tproxyd:\n  filters:\n    - no_such_filter: {}\n").unwrap();
    let out = std::process::Command::new(&bin)
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unknown filter \"no_such_filter\""),
        "{err}"
    );
}

#[test]
fn filter_errors_and_panics_become_500_and_the_proxy_keeps_serving() {
    let Some((lab, origin, proxy)) = setup_bin("filter_failures", Some("faulty_filter"), "") else {
        return;
    };
    for phase in ["request", "upstream", "response"] {
        for kind in ["filter-error", "filter-panic"] {
            let path = format!("/{phase}/{kind}");
            let t = Instant::now();
            let r = get(&lab, &v4(80), "x.test", &path);
            assert_eq!(r.status, 500, "{path}: {r:?}");
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "{path} answered promptly"
            );
            proxy.wait_access(&[&path, "500"]);
        }
    }
    // Request-phase failures never reach the origin; later phases may have.
    assert!(origin
        .seen()
        .iter()
        .all(|s| !s.path.starts_with("/request/")));
    assert_eq!(get(&lab, &v4(80), "x.test", "/fine").status, 200);
}
