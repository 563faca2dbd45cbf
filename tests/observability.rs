//! Metrics, health and the structured access log, checked against a known
//! mix of real requests through TPROXY.

mod harness;

use harness::*;
use nix::sys::signal::Signal;
use std::collections::HashSet;
use std::time::Duration;

/// A lan-http listener sample, with `extra` labels (`key="value"`) if any.
fn m(body: &str, name: &str, extra: &str) -> f64 {
    let mut labels = vec![r#"listener="lan-http""#, r#"mode="tproxy""#];
    if !extra.is_empty() {
        labels.push(extra);
    }
    metric(body, name, &labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{body}"))
}

/// Sends the known mix and returns the body bytes the client received.
fn known_mix(lab: &Lab) -> usize {
    let mut bytes = 0;
    let mut c = Client::new(lab.client_connect(&format!("{SERVER_V4}:80")).unwrap());
    for path in ["/a", "/b", "/status/404"] {
        let r = c.get("mix.test", path, &[]).unwrap();
        bytes += r.body.len();
    }
    let r = get(lab, &format!("[{SERVER_V6}]:80"), "mix.test", "/c");
    assert_eq!(r.status, 200);
    bytes += r.body.len();
    let r = get(lab, &format!("{SERVER_V4}:82"), "mix.test", "/refused");
    assert_eq!(r.status, 502);
    bytes += r.body.len();
    let r = get(lab, &format!("{ROUTER_LAN_V4}:8888"), "mix.test", "/loop");
    assert_eq!(r.status, 508);
    bytes += r.body.len();
    bytes
}

#[test]
fn metrics_count_a_known_mix_exactly() {
    if !lab_available("metrics_known_mix") {
        return;
    }
    let lab = Lab::up();
    let _origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("metrics");
    let _proxy = Proxy::start(&lab, &lab_config(&dir.0, ""), &[8888, 8889, 9187]);

    let before = admin_get(&lab, "/metrics");
    assert_eq!(before.status, 200);
    assert_eq!(
        m(
            &before.body,
            "tproxyd_requests_total",
            r#"status_class="2xx""#
        ),
        0.0
    );
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        metric(&before.body, "tproxyd_build_info", &[&version]),
        Some(1.0)
    );
    assert!(metric(&before.body, "tproxyd_process_start_time_seconds", &[]).unwrap() > 1.7e9);

    let bytes = known_mix(&lab);

    // Wait for the last request's logging phase, then compare exactly (also
    // when the wait timed out: the comparisons say what is off).
    let mut body = String::new();
    poll_until(Duration::from_secs(5), || {
        body = admin_get(&lab, "/metrics").body;
        m(&body, "tproxyd_request_duration_seconds_count", "") == 6.0
            && m(&body, "tproxyd_downstream_connections_active", "") == 0.0
    });
    let c = |name, extra| m(&body, name, extra);
    assert_eq!(c("tproxyd_requests_total", r#"status_class="2xx""#), 3.0);
    assert_eq!(c("tproxyd_requests_total", r#"status_class="4xx""#), 1.0);
    assert_eq!(c("tproxyd_requests_total", r#"status_class="5xx""#), 2.0);
    assert_eq!(c("tproxyd_requests_refused_total", r#"reason="loop""#), 1.0);
    assert_eq!(c("tproxyd_requests_refused_total", r#"reason="acl""#), 0.0);
    assert_eq!(
        c(
            "tproxyd_upstream_connect_failures_total",
            r#"reason="refused""#
        ),
        1.0
    );
    assert_eq!(
        c(
            "tproxyd_upstream_connect_failures_total",
            r#"reason="timeout""#
        ),
        0.0
    );
    // Four requests reached origins: /a /b /status/404 on one keep-alive
    // client connection, /c over v6.
    let new = c("tproxyd_upstream_connections_total", r#"kind="new""#);
    let reused = c("tproxyd_upstream_connections_total", r#"kind="reused""#);
    assert_eq!(new + reused, 4.0);
    assert!(
        reused >= 2.0,
        "the keep-alive requests reuse the pooled connection: {reused}"
    );
    assert_eq!(c("tproxyd_upstream_connect_seconds_count", ""), new);
    assert_eq!(c("tproxyd_client_sent_bytes_total", ""), bytes as f64);
    assert_eq!(c("tproxyd_client_received_bytes_total", ""), 0.0);
    assert_eq!(c("tproxyd_requests_in_flight", ""), 0.0);
    assert_eq!(c("tproxyd_downstream_connections_active", ""), 0.0);
    // Never a label per client, Host or path.
    for bad in ["mix.test", CLIENT_V4, "/status"] {
        assert!(
            !body.contains(bad),
            "high-cardinality label {bad} in metrics"
        );
    }

    assert_eq!(admin_get(&lab, "/healthz").status, 200);
    let ready = admin_get(&lab, "/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert_eq!(admin_get(&lab, "/nope").status, 404);
}

#[test]
fn open_connections_and_in_flight_requests_are_gauged() {
    if !lab_available("gauges") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("gauges");
    let _proxy = Proxy::start(&lab, &lab_config(&dir.0, ""), &[8888, 8889, 9187]);
    // Two idle keep-alive connections and one slow request in flight.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut c = Client::new(lab.client_connect(&format!("{SERVER_V4}:80")).unwrap());
        assert_eq!(c.get("g.test", "/warm", &[]).unwrap().status, 200);
        idle.push(c);
    }
    let s = lab.client_connect(&format!("{SERVER_V4}:80")).unwrap();
    let slow = std::thread::spawn(move || Client::new(s).get("g.test", "/slow/20", &[]));
    // In flight for ~2 s from here on.
    origin.wait_request("/slow/20");
    let body = admin_get(&lab, "/metrics").body;
    assert_eq!(m(&body, "tproxyd_downstream_connections_active", ""), 3.0);
    assert_eq!(m(&body, "tproxyd_requests_in_flight", ""), 1.0);
    assert_eq!(slow.join().unwrap().unwrap().status, 200);
    drop(idle);
    let mut body = String::new();
    let closed = poll_until(Duration::from_secs(5), || {
        body = admin_get(&lab, "/metrics").body;
        m(&body, "tproxyd_downstream_connections_active", "") == 0.0
    });
    assert!(closed, "connections never closed:\n{body}");
    assert_eq!(m(&body, "tproxyd_requests_in_flight", ""), 0.0);
}

fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("invalid JSON line {l:?}: {e}")))
        .collect()
}

/// Waits (up to 5 s) until `paths` hold at least `n` lines together, and
/// returns them all (fewer if the wait timed out: the caller's assertions
/// say what is off).
fn wait_lines(paths: &[&std::path::Path], n: usize) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    poll_until(Duration::from_secs(5), || {
        all = paths.iter().flat_map(|p| json_lines(p)).collect();
        all.len() >= n
    });
    all
}

/// Whether the file at `path` holds at least one complete line.
fn has_a_line(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains('\n')
}

#[test]
fn json_access_log_has_every_field_and_valid_lines() {
    if !lab_available("json_access_log") {
        return;
    }
    let lab = Lab::up();
    let _origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("jsonlog");
    let log = dir.0.join("access.log");
    let extra = format!(
        "  access_log:\n    format: json\n    path: {}\n    query: true\n",
        log.display()
    );
    let _proxy = Proxy::start(&lab, &lab_config(&dir.0, &extra), &[8888, 8889]);

    let mut c = Client::new(lab.client_connect(&format!("{SERVER_V4}:80")).unwrap());
    assert_eq!(c.get("j.test", "/one?x=1", &[]).unwrap().status, 200);
    assert_eq!(c.get("j.test", "/status/404", &[]).unwrap().status, 404);
    assert_eq!(
        get(&lab, &format!("[{SERVER_V6}]:80"), "j6.test", "/six").status,
        200
    );
    assert_eq!(
        get(&lab, &format!("{SERVER_V4}:82"), "j.test", "/refused").status,
        502
    );
    assert_eq!(
        get(&lab, &format!("{ROUTER_LAN_V4}:8888"), "j.test", "/loop").status,
        508
    );

    let lines = wait_lines(&[&log], 5);
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let by_path = |p: &str| {
        lines
            .iter()
            .find(|l| l["path"] == p)
            .unwrap_or_else(|| panic!("no line for {p}"))
    };
    let fields = [
        "ts",
        "request_id",
        "listener",
        "mode",
        "client_ip",
        "client_port",
        "dst_ip",
        "dst_port",
        "upstream_local",
        "method",
        "host",
        "path",
        "status",
        "req_body_bytes",
        "resp_body_bytes",
        "duration_ms",
        "upstream_connect_ms",
        "upstream_reused",
        "decision",
        "refused",
        "error",
    ];
    for l in &lines {
        for f in fields {
            assert!(l.get(f).is_some(), "field {f} missing in {l}");
        }
        assert!(
            l["ts"].as_str().unwrap().ends_with('Z'),
            "UTC RFC 3339: {}",
            l["ts"]
        );
        assert_eq!(l["listener"], "lan-http");
        assert_eq!(l["mode"], "tproxy");
    }
    let one = by_path("/one?x=1");
    assert_eq!(
        (one["dst_ip"].as_str(), one["dst_port"].as_u64()),
        (Some(SERVER_V4), Some(80))
    );
    assert_eq!(one["client_ip"], CLIENT_V4);
    assert_eq!(one["status"], 200);
    assert_eq!(one["host"], "j.test");
    assert_eq!(one["upstream_reused"], false);
    assert!(one["upstream_connect_ms"].as_f64().is_some());
    assert!(one["upstream_local"]
        .as_str()
        .unwrap()
        .starts_with(ROUTER_WAN_V4));
    let second = by_path("/status/404");
    assert_eq!(second["status"], 404);
    assert_eq!(second["upstream_reused"], true);
    let six = by_path("/six");
    assert_eq!(six["dst_ip"], SERVER_V6);
    assert_eq!(six["client_ip"], CLIENT_V6);
    let refused = by_path("/refused");
    assert_eq!(
        (refused["status"].as_u64(), refused["error"].as_str()),
        (Some(502), Some("ConnectRefused"))
    );
    let lp = by_path("/loop");
    assert_eq!(
        (lp["status"].as_u64(), lp["refused"].as_str()),
        (Some(508), Some("loop"))
    );
    let ids: HashSet<_> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5);
}

#[test]
fn sighup_reopens_the_log_file_without_losing_a_line() {
    if !lab_available("sighup_rotation") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("rotate");
    let log = dir.0.join("access.log");
    let rotated = dir.0.join("access.log.1");
    let extra = format!(
        "  access_log:\n    format: json\n    path: {}\n",
        log.display()
    );
    let proxy = Proxy::start(&lab, &lab_config(&dir.0, &extra), &[8888, 8889]);

    // A steady stream of requests while the file is rotated underneath.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dst = format!("{SERVER_V4}:80");
    let load = start_load(&lab, &dst, 2, 1, stop.clone());
    wait_load_flowing(&origin, &dst, load.len());
    wait_until(
        "an access-log line in the file to be rotated",
        Duration::from_secs(10),
        || has_a_line(&log),
    );
    std::fs::rename(&log, &rotated).unwrap();
    proxy.signal(Signal::SIGHUP);
    wait_until(
        "the access log to be reopened and written to again",
        Duration::from_secs(10),
        || proxy.log_text().contains("access log reopened") && has_a_line(&log),
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = finish_load(load);
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    let n = report.ok;

    let lines = wait_lines(&[&rotated, &log], n);
    let old = json_lines(&rotated).len();
    let new = json_lines(&log).len();
    assert_eq!(
        lines.len(),
        n,
        "{n} requests, {old} lines in the rotated file, {new} in the new one"
    );
    assert!(old > 0 && new > 0, "old {old}, new {new}");
    let ids: HashSet<_> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), n, "no duplicates");
    assert!(proxy.log_text().contains("access log reopened"));
}
