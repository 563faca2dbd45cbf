//! The status page's API on the admin listener, against real traffic
//! through TPROXY in the lab: flows with live byte counts, the summary's
//! rates and top lists, the token, `flows: off`, and `tproxyd check`'s
//! warning about an exposed admin listener.

mod harness;

use harness::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// GET an admin API path: 200 and valid JSON, or the test fails saying
/// what came instead.
fn api(lab: &Lab, path: &str) -> Value {
    let r = admin_get(lab, path);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    let ct = r.headers.get("content-type").cloned().unwrap_or_default();
    assert!(ct.starts_with("application/json"), "{path}: {ct}");
    serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("{path}: invalid JSON ({e}): {}", r.body))
}

/// The listed flows.
fn flows(v: &Value) -> Vec<Value> {
    v["flows"].as_array().cloned().unwrap_or_default()
}

/// The keys of a top list, e.g. `top(&s, "names", "by_bytes")`.
fn top(summary: &Value, what: &str, by: &str) -> Vec<String> {
    summary["top"][what][by]
        .as_array()
        .unwrap_or_else(|| panic!("no top.{what}.{by} in {summary}"))
        .iter()
        .map(|h| h["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_long_download_grows_and_a_refusal_shows_under_load() {
    if !lab_available("status_flows") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("status");
    let _proxy = Proxy::start(&lab, &lab_config(&dir.0, ""), &[8888, 8889, 9187]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&lab, &format!("{SERVER_V4}:80"), 2, 1, stop.clone());

    // 40 chunks of 1000 bytes, 100 ms apart: about 4 s.
    let s = lab.client_connect(&format!("{SERVER_V4}:80")).unwrap();
    let slow = std::thread::spawn(move || Client::new(s).get("slow.test", "/slow/40", &[]));
    origin.wait_request("/slow/40");
    let mut samples: Vec<Value> = Vec::new();
    poll_until(Duration::from_secs(6), || {
        let v = api(&lab, "/api/flows?host=SLOW.test&kind=http");
        samples.extend(flows(&v));
        let down: Vec<u64> = samples
            .iter()
            .map(|f| f["bytes_down"].as_u64().unwrap())
            .collect();
        down.len() >= 2 && down[down.len() - 1] > down[0] && down[0] > 0
    });
    let (first, last) = (samples.first().unwrap(), samples.last().unwrap());
    assert!(
        last["bytes_down"].as_u64() > first["bytes_down"].as_u64(),
        "no growth: {samples:?}"
    );
    assert_eq!(last["state"], "relaying", "{last}");
    assert_eq!(last["host"], "slow.test");
    assert_eq!(last["listener"], "lan-http");
    assert_eq!(last["egress"], "direct");
    assert_eq!(last["destination"], format!("{SERVER_V4}:80"));
    assert!(
        last["client"].as_str().unwrap().starts_with(CLIENT_V4),
        "{last}"
    );

    // Valid and bounded under load.
    for _ in 0..20 {
        let f = api(&lab, "/api/flows?limit=2");
        assert!(flows(&f).len() <= 2);
        assert!(f["open"].as_u64().unwrap() >= 1, "{f}");
        api(&lab, "/api/summary");
    }
    // A refused request (a loop: the proxy's own address) shows in the
    // summary at once.
    let r = get(&lab, &format!("{ROUTER_LAN_V4}:8888"), "loop.test", "/loop");
    assert_eq!(r.status, 508);
    let s = api(&lab, "/api/summary");
    assert!(
        s["last_minute"]["refused"]["loop"].as_u64() >= Some(1),
        "{s}"
    );
    assert!(s["last_minute"]["requests"].as_u64() > Some(10), "{s}");

    let body = slow.join().unwrap().unwrap().body;
    assert_eq!(body.len(), 40_000);
    stop.store(true, Ordering::SeqCst);
    for h in load {
        let report = h.join().unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
    }
    let s = api(&lab, "/api/summary");
    let names = s["top"]["names"]["by_bytes"].as_array().unwrap();
    let slow = names.iter().find(|h| h["key"] == "slow.test");
    assert_eq!(slow.map(|h| &h["count"]), Some(&40_000.into()), "{s}");
    assert_eq!(
        top(&s, "destinations", "by_flows")[0],
        format!("{SERVER_V4}:80")
    );
    let l = &s["listeners"][0];
    assert_eq!(
        (&l["name"], &l["address"]),
        (&"lan-http".into(), &"[::]:8888".into())
    );
}

/// Adds `n` more client addresses (192.0.2.100 on) in the client namespace.
fn more_clients(lab: &Lab, n: u8) -> Vec<String> {
    let ips: Vec<String> = (0..n).map(|i| format!("192.0.2.{}", 100 + i)).collect();
    let batch: String = ips
        .iter()
        .map(|ip| format!("addr add {ip}/24 dev eth0\n"))
        .collect();
    let file = std::env::temp_dir().join(format!("tproxyd-addrs-{}", std::process::id()));
    std::fs::write(&file, batch).unwrap();
    let out = lab.exec(&lab.client_ns(), &["ip", "-batch", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ips
}

#[test]
fn hundreds_of_clients_and_names_leave_the_top_lists_bounded() {
    if !lab_available("status_top") {
        return;
    }
    let lab = Lab::up();
    let _origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("status-top");
    let ads = dir.0.join("ads.txt");
    std::fs::write(&ads, "ads.test\ntrack.test\nbeacon.test\n").unwrap();
    let extra = format!(
        "  sets:\n    ads: {{ file: {}, format: domains }}\n",
        ads.display()
    );
    let _proxy = Proxy::start(&lab, &lab_config(&dir.0, &extra), &[8888, 9187]);
    let dst = format!("{SERVER_V4}:80");
    for (i, ip) in more_clients(&lab, 150).iter().enumerate() {
        let s = lab.client_connect_from(ip, &dst).unwrap();
        let r = Client::new(s)
            .get(&format!("n{i}.test"), "/x", &[])
            .unwrap();
        assert_eq!(r.status, 200);
    }
    // One heavy client and name: 5000 bytes, and more requests than any.
    let mut c = Client::new(lab.client_connect(&dst).unwrap());
    for _ in 0..3 {
        assert_eq!(c.get("heavy.test", "/slow/5", &[]).unwrap().status, 200);
    }
    drop(c);
    // The heavy connection's batch is recorded when it closes; on a loaded
    // machine the close can take a while to reach the proxy.
    let mut s = Value::Null;
    let recorded = poll_until(Duration::from_secs(20), || {
        s = api(&lab, "/api/summary");
        top(&s, "names", "by_bytes").first().map(String::as_str) == Some("heavy.test")
    });
    assert!(recorded, "heavy.test never led the names by bytes: {s}");
    for what in ["clients", "names", "destinations"] {
        for by in ["by_flows", "by_bytes"] {
            assert!(top(&s, what, by).len() <= 10, "{what} {by}: {s}");
        }
    }
    assert_eq!(top(&s, "names", "by_flows").len(), 10, "{s}");
    assert_eq!(top(&s, "names", "by_bytes")[0], "heavy.test");
    assert_eq!(top(&s, "names", "by_flows")[0], "heavy.test");
    assert_eq!(top(&s, "clients", "by_bytes")[0], CLIENT_V4);
    assert_eq!(top(&s, "clients", "by_flows")[0], CLIENT_V4);
    assert_eq!(s["last_minute"]["requests"], 153, "{s}");
    let set = &s["sets"][0];
    assert_eq!(
        (&set["name"], &set["size"]),
        (&"ads".into(), &3.into()),
        "{s}"
    );
    assert!(set["last_reload"].is_string(), "{s}");
}

#[test]
fn a_token_guards_everything_but_health_and_readiness() {
    if !lab_available("status_token") {
        return;
    }
    let lab = Lab::up();
    let dir = TempDir::new("status-token");
    let token = dir.0.join("admin.token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let extra = format!("  admin:\n    token_file: {}\n", token.display());
    let _proxy = Proxy::start(&lab, &lab_config(&dir.0, &extra), &[8888, 9187]);
    for path in ["/", "/api/flows", "/api/summary", "/metrics"] {
        let r = admin_get(&lab, path);
        assert_eq!(r.status, 401, "{path} without the token: {}", r.body);
        assert!(r.headers["www-authenticate"].contains("Bearer"));
        let bad = admin_get_with(&lab, path, &[("Authorization", "Bearer wrong")]);
        assert_eq!(bad.status, 401, "{path} with a wrong token");
        let ok = admin_get_with(&lab, path, &[("Authorization", "Bearer s3cret-token")]);
        assert_eq!(ok.status, 200, "{path} with the token: {}", ok.body);
    }
    // What a browser sends once asked: Basic, the token as password.
    let basic = admin_get_with(
        &lab,
        "/",
        &[("Authorization", "Basic b3A6czNjcmV0LXRva2Vu")],
    );
    assert_eq!(basic.status, 200);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(admin_get(&lab, path).status, 200, "{path}");
    }
}

#[test]
fn flows_off_lists_no_flow_and_keeps_no_client() {
    if !lab_available("status_flows_off") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("status-off");
    let extra = "  admin:\n    flows: off\n";
    let _proxy = Proxy::start(&lab, &lab_config(&dir.0, extra), &[8888, 9187]);
    let s = lab.client_connect(&format!("{SERVER_V4}:80")).unwrap();
    let slow = std::thread::spawn(move || Client::new(s).get("off.test", "/slow/20", &[]));
    origin.wait_request("/slow/20");
    let f = api(&lab, "/api/flows");
    assert_eq!(f["enabled"], false, "{f}");
    assert_eq!((f["open"].as_u64(), flows(&f).len()), (Some(0), 0), "{f}");
    let s = api(&lab, "/api/summary");
    assert_eq!(s["listeners"][0]["open_connections"], 1, "{s}");
    assert_eq!(slow.join().unwrap().unwrap().status, 200);
    let s = api(&lab, "/api/summary");
    assert_eq!(s["flows_enabled"], false);
    assert_eq!(s["last_minute"]["requests"], 1, "{s}");
    assert!(top(&s, "clients", "by_flows").is_empty(), "{s}");
    assert!(top(&s, "names", "by_bytes").is_empty(), "{s}");
    // The page still loads, and says flows are off.
    let page = admin_get(&lab, "/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("flows are off"));
}

#[test]
fn the_page_is_one_file_and_the_listener_only_reads() {
    if !lab_available("status_page_file") {
        return;
    }
    let lab = Lab::up();
    let dir = TempDir::new("status-page");
    let _proxy = Proxy::start(&lab, &lab_config(&dir.0, ""), &[8888, 9187]);
    let page = admin_get(&lab, "/");
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    assert!(page.headers["content-security-policy"].contains("default-src 'none'"));
    // No external script, style, font or image: routers are often offline.
    for external in ["http://", "https://", "src=", "href=", "@import", "url("] {
        assert!(
            !page.body.contains(external),
            "the page refers to {external}"
        );
    }
    let bad = admin_get(&lab, "/api/flows?kind=ftp");
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("kind"), "{}", bad.body);
    let post = in_netns(&lab.router_ns(), || {
        let s = std::net::TcpStream::connect("127.0.0.1:9187").unwrap();
        Client::new(s)
            .send_raw(b"POST /api/flows HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
    });
    assert_eq!(post.status, 405);
}

#[test]
fn check_warns_about_an_admin_listener_beyond_loopback_without_a_token() {
    let dir = TempDir::new("status-check");
    let conf = dir.0.join("open.yaml");
    std::fs::write(&conf, "tproxyd:\n  admin:\n    address: 0.0.0.0:9187\n").unwrap();
    let out = std::process::Command::new(tproxyd_bin())
        .args(["check", "-c", conf.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("warning: ") && said.contains("token_file"),
        "{said}"
    );
    let token = dir.0.join("t");
    std::fs::write(&token, "x").unwrap();
    let closed = dir.0.join("closed.yaml");
    let yaml = format!(
        "tproxyd:\n  admin:\n    address: 0.0.0.0:9187\n    token_file: {}\n",
        token.display()
    );
    std::fs::write(&closed, yaml).unwrap();
    let out = std::process::Command::new(tproxyd_bin())
        .args(["check", "-c", closed.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warning"));
}
