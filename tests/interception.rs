//! End to end through the kernel: client namespace → nftables TPROXY /
//! REDIRECT in the router namespace → tproxyd → origin in the server
//! namespace. Needs root; see `harness::lab_available`.

mod harness;

use harness::*;
use std::time::{Duration, Instant};

/// Lab, origin on ports 80-82 and 8080, tproxyd with the lab config.
fn setup(test: &str, extra: &str) -> Option<(Lab, Origin, Proxy)> {
    if !lab_available(test) {
        return None;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80, 8080]);
    let dir = TempDir::new("conf");
    let proxy = Proxy::start(&lab, &lab_config(&dir.0, extra), &[8888, 8889]);
    Some((lab, origin, proxy))
}

fn v6(addr: &str, port: u16) -> String {
    format!("[{addr}]:{port}")
}

#[test]
fn intercepts_v4_and_v6_to_the_original_destination() {
    let Some((lab, origin, proxy)) = setup("intercepts_v4_and_v6", "") else {
        return;
    };
    for (dst, router_wan, client) in [
        (format!("{SERVER_V4}:80"), ROUTER_WAN_V4, CLIENT_V4),
        (v6(SERVER_V6, 80), ROUTER_WAN_V6, CLIENT_V6),
    ] {
        let before = origin.count();
        // The Host header names some other site: routing must ignore it.
        let resp = get(&lab, &dst, "www.example.org", "/hello?x=1");
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.body, format!("origin {dst} GET /hello?x=1\n"));
        let seen = origin.seen();
        assert_eq!(seen.len(), before + 1);
        let s = seen.last().unwrap();
        assert_eq!(s.local.to_string(), dst, "origin saw the wrong destination");
        assert_eq!(
            s.peer.ip().to_string(),
            router_wan,
            "origin's peer is the router"
        );
        assert_eq!(s.headers["via"], "1.1 tproxyd");
        assert_eq!(
            s.headers["host"], "www.example.org",
            "Host passed through untouched"
        );
        let line = proxy.wait_access(&[&dst, "200", "/hello"]);
        assert!(line.contains(client), "access log names the client: {line}");
    }
}

#[test]
fn keep_alive_requests_and_two_destinations_on_one_listener() {
    let Some((lab, origin, _proxy)) = setup("keep_alive_two_destinations", "") else {
        return;
    };
    for dst in [
        format!("{SERVER_V4}:80"),
        format!("{SERVER2_V4}:80"),
        v6(SERVER_V6, 80),
        v6(SERVER2_V6, 80),
    ] {
        let mut c = Client::new(lab.client_connect(&dst).unwrap());
        for i in 0..3 {
            let path = format!("/ka/{i}");
            let resp = c.get("example.test", &path, &[]).unwrap();
            assert_eq!(resp.status, 200);
            assert_eq!(resp.body, format!("origin {dst} GET {path}\n"));
        }
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 12);
    for s in &seen {
        assert!(s.path.starts_with("/ka/"));
        assert_eq!(s.headers["via"], "1.1 tproxyd");
    }
    // Each destination saw exactly its three requests.
    for dst in [SERVER_V4, SERVER2_V4, SERVER_V6, SERVER2_V6] {
        let n = seen
            .iter()
            .filter(|s| s.local.ip().to_string() == dst)
            .count();
        assert_eq!(n, 3, "requests for {dst}");
    }
}

#[test]
fn via_is_appended_and_custom_headers_are_added() {
    let extra =
        "  request_headers:\n    add:\n      Via: \"1.1 gw-test\"\n      X-Intercepted: \"yes\"\n";
    let Some((lab, origin, _proxy)) = setup("via_appended", extra) else {
        return;
    };
    let mut c = Client::new(lab.client_connect(&format!("{SERVER_V4}:80")).unwrap());
    let resp = c
        .get("example.test", "/via", &[("Via", "1.0 upstream-cache")])
        .unwrap();
    assert_eq!(resp.status, 200);
    let s = origin.seen().pop().unwrap();
    assert_eq!(s.headers["via"], "1.0 upstream-cache, 1.1 gw-test");
    assert_eq!(s.headers["x-intercepted"], "yes");
}

#[test]
fn redirect_mode_uses_so_original_dst_v4_and_v6() {
    let Some((lab, origin, proxy)) = setup("redirect_mode", "") else {
        return;
    };
    for (dst, client) in [
        (format!("{SERVER_V4}:8080"), CLIENT_V4),
        (v6(SERVER_V6, 8080), CLIENT_V6),
    ] {
        let resp = get(&lab, &dst, "example.test", "/nat");
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.body, format!("origin {dst} GET /nat\n"));
        let s = origin.seen().pop().unwrap();
        assert_eq!(s.local.to_string(), dst);
        assert_eq!(s.headers["via"], "1.1 tproxyd");
        let line = proxy.wait_access(&["lan-nat", &dst]);
        assert!(line.contains(client), "{line}");
    }
}

#[test]
fn loops_are_refused_with_508_and_the_proxy_keeps_serving() {
    let Some((lab, origin, proxy)) = setup("loops_refused", "") else {
        return;
    };
    // A client dialing the proxy port itself (TPROXY and REDIRECT listeners),
    // v4 and v6: the original destination is our own socket.
    for dst in [
        format!("{ROUTER_LAN_V4}:8888"),
        v6(ROUTER_LAN_V6, 8888),
        format!("{ROUTER_LAN_V4}:8889"),
        v6(ROUTER_LAN_V6, 8889),
    ] {
        let t = Instant::now();
        let resp = get(&lab, &dst, "example.test", "/loop");
        assert_eq!(resp.status, 508, "{dst}: {resp:?}");
        assert!(
            !resp.headers.contains_key("server"),
            "tproxyd's own answer names no server: {resp:?}"
        );
        assert!(resp.body.contains("Loop Detected"), "{}", resp.body);
        assert!(t.elapsed() < Duration::from_secs(2), "answered at once");
    }
    // A request that already carries our Via token.
    let mut c = Client::new(lab.client_connect(&format!("{SERVER_V4}:80")).unwrap());
    let resp = c
        .get(
            "example.test",
            "/via-loop",
            &[("Via", "1.0 a, 1.1 tproxyd")],
        )
        .unwrap();
    assert_eq!(resp.status, 508);
    assert_eq!(origin.count(), 0, "a loop never reaches the origin");
    proxy.wait_access(&["/via-loop", "508", "refused=loop"]);

    // Still serving.
    let resp = get(&lab, &format!("{SERVER_V4}:80"), "example.test", "/after");
    assert_eq!(resp.status, 200);
    assert_eq!(origin.count(), 1);
}

#[test]
fn refused_is_502_and_blackholed_is_504_within_the_timeout() {
    let Some((lab, origin, proxy)) = setup("upstream_failures", "") else {
        return;
    };
    // Nothing listens on port 82 at the origin: RST → 502.
    for dst in [format!("{SERVER_V4}:82"), v6(SERVER_V6, 82)] {
        let resp = get(&lab, &dst, "example.test", "/refused");
        assert_eq!(resp.status, 502, "{resp:?}");
        assert!(
            !resp.headers.contains_key("server"),
            "tproxyd's own answer names no server: {resp:?}"
        );
        assert!(
            resp.body.contains(&dst),
            "body names the destination: {}",
            resp.body
        );
        assert!(resp.body.contains("refused"), "{}", resp.body);
    }
    // The origin drops SYNs to port 81: connect times out (1s) → 504.
    for dst in [format!("{SERVER_V4}:81"), v6(SERVER_V6, 81)] {
        let t = Instant::now();
        let resp = get(&lab, &dst, "example.test", "/blackhole");
        let took = t.elapsed();
        assert_eq!(resp.status, 504, "{resp:?}");
        assert!(
            !resp.headers.contains_key("server"),
            "tproxyd's own answer names no server: {resp:?}"
        );
        assert!(resp.body.contains(&dst), "{}", resp.body);
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "504 should come after the 1s connect timeout, took {took:?}"
        );
    }
    proxy.wait_access(&["/blackhole", "504", "ConnectTimedout"]);
    assert_eq!(origin.count(), 0);
}

#[test]
fn malformed_request_gets_400() {
    let Some((lab, origin, proxy)) = setup("malformed_request", "") else {
        return;
    };
    let mut c = Client::new(lab.client_connect(&format!("{SERVER_V4}:80")).unwrap());
    let resp = c
        .send_raw(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
        .unwrap();
    assert_eq!(resp.status, 400);
    assert!(
        !resp.headers.contains_key("server"),
        "tproxyd's own answer names no server: {resp:?}"
    );
    // CONNECT is for forward listeners: a transparent one answers 405.
    let mut c = Client::new(lab.client_connect(&format!("{SERVER_V4}:80")).unwrap());
    let resp = c
        .send_raw(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n")
        .unwrap();
    assert_eq!(resp.status, 405);
    assert_eq!(origin.count(), 0);
    // Refused before any hook ran, both are still logged.
    let dst = format!("-> {SERVER_V4}:80");
    proxy.wait_access(&[&dst, "\"- - -\" 400", "error=InvalidHTTPHeader"]);
    proxy.wait_access(&[&dst, "\"CONNECT - -\" 405", "error=MethodNotAllowed"]);
}

#[test]
fn fails_closed_when_no_proxy_listens() {
    if !lab_available("fails_closed") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    // No tproxyd: the router must reset, not forward the connection.
    let err = lab
        .client_connect(&format!("{SERVER_V4}:80"))
        .expect_err("connection must be refused while tproxyd is down");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let err = lab.client_connect(&v6(SERVER_V6, 80)).expect_err("v6 too");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(origin.count(), 0);
}
