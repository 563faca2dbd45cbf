//! Client-side limits through real TPROXY: request-head deadline, idle
//! keep-alive timeout, head size cap and the memory an unfinished head
//! holds, connection caps, per-client rate limits, pipelining, Host.

mod harness;

use harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Lab, origin on ports 80 and 83, tproxyd with `extra` in `tproxyd:`.
fn setup(test: &str, extra: &str) -> Option<(Lab, Origin, Proxy, TempDir)> {
    if !lab_available(test) {
        return None;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80, 83]);
    let dir = TempDir::new("limits");
    let proxy = Proxy::start(&lab, &lab_config(&dir.0, extra), &[8888, 8889]);
    Some((lab, origin, proxy, dir))
}

fn dst80() -> String {
    format!("{SERVER_V4}:80")
}

/// Reads until EOF or error (a reset), returning what arrived.
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn trickled_heads_get_408_at_the_deadline_while_others_are_served() {
    let extra = "  downstream: { header_timeout: 2s, keepalive_timeout: 20s }\n";
    let Some((lab, origin, proxy, _dir)) = setup("trickled_heads_408", extra) else {
        return;
    };
    // Tricklers: one byte every 200 ms, which restarts any per-read timeout.
    // The last one is a keep-alive connection's second request.
    let mut tricklers = Vec::new();
    for i in 0..6 {
        let mut s = lab.client_connect(&dst80()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let second = i == 5;
        tricklers.push(std::thread::spawn(move || {
            if second {
                let mut c = Client::new(s.try_clone().unwrap());
                assert_eq!(c.get("x.test", "/first", &[]).unwrap().status, 200);
            }
            let start = Instant::now();
            s.write_all(b"GET /trickle HTTP/1.1\r\nHost: x.test\r\nX-Slow: ")
                .unwrap();
            let mut writer = s.try_clone().unwrap();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stop2 = stop.clone();
            let t = std::thread::spawn(move || {
                while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    if writer.write_all(b"a").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200)); // the trickle itself
                }
            });
            let got = read_all(&mut s);
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = t.join();
            (start.elapsed(), String::from_utf8_lossy(&got).into_owned())
        }));
    }
    // Meanwhile another client is served as usual.
    std::thread::sleep(Duration::from_millis(500)); // let the tricklers start
    let started = Instant::now();
    let resp = get(&lab, &dst80(), "fast.test", "/fast");
    let fast = started.elapsed();
    assert_eq!(resp.status, 200);
    assert!(
        fast < Duration::from_secs(1),
        "a normal request took {fast:?}"
    );
    eprintln!("normal request while 6 clients trickle: {fast:?}");

    for t in tricklers {
        let (took, got) = t.join().unwrap();
        assert!(got.starts_with("HTTP/1.1 408 "), "{got:?}");
        assert!(
            got.to_ascii_lowercase().contains("connection: close"),
            "{got}"
        );
        assert!(
            took >= Duration::from_millis(1800) && took < Duration::from_secs(8),
            "closed after {took:?}"
        );
    }
    assert!(!origin.seen().iter().any(|s| s.path == "/trickle"));
    proxy.wait_access(&["408", "refused=header-timeout"]);
    wait_until("the header_timeout count", Duration::from_secs(5), || {
        downstream_limit(&lab, "header_timeout") == 6.0
    });
}

#[test]
fn idle_keepalive_connections_are_closed() {
    let extra = "  downstream: { keepalive_timeout: 2s }\n";
    let Some((lab, _origin, _proxy, _dir)) = setup("idle_keepalive_closed", extra) else {
        return;
    };
    let s = lab.client_connect(&dst80()).unwrap();
    let mut c = Client::new(s.try_clone().unwrap());
    assert_eq!(c.get("x.test", "/one", &[]).unwrap().status, 200);
    let silent = lab.client_connect(&dst80()).unwrap();
    let start = Instant::now();
    for mut conn in [s, silent] {
        conn.set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let got = read_all(&mut conn);
        assert!(got.is_empty(), "an idle close says nothing: {got:?}");
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "idle connections closed after {took:?}"
    );
    wait_until(
        "the keepalive_timeout count",
        Duration::from_secs(5),
        || downstream_limit(&lab, "keepalive_timeout") >= 2.0,
    );
}

/// The idle timer is armed once per connection and re-armed when it fires
/// (`src/downstream/idle.rs`): a connection whose requests keep coming
/// within the timeout stays open past the first request's deadline, and is
/// closed a full timeout after its last request.
#[test]
fn the_idle_deadline_counts_from_the_last_request() {
    let extra = "  downstream: { keepalive_timeout: 2s }\n";
    let Some((lab, _origin, _proxy, _dir)) = setup("idle_deadline_last", extra) else {
        return;
    };
    let mut s = lab.client_connect(&dst80()).unwrap();
    let mut c = Client::new(s.try_clone().unwrap());
    let start = Instant::now();
    for (i, at) in [0u64, 1300, 2600, 3900].into_iter().enumerate() {
        let due = Duration::from_millis(at);
        std::thread::sleep(due.saturating_sub(start.elapsed()));
        let r = c.get("x.test", &format!("/r{i}"), &[]);
        assert_eq!(
            r.map(|r| r.status).ok(),
            Some(200),
            "request {i} at {:?} on a connection idle less than 2 s",
            start.elapsed()
        );
    }
    let last = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let got = read_all(&mut s);
    assert!(got.is_empty(), "an idle close says nothing: {got:?}");
    let idle = last.elapsed();
    assert!(
        idle >= Duration::from_millis(1800) && idle < Duration::from_secs(6),
        "closed {idle:?} after the last request (keepalive_timeout 2s)"
    );
}

#[test]
fn a_head_over_the_limit_gets_431_and_one_under_passes() {
    let extra = "  downstream: { max_header_bytes: 4096 }\n";
    let Some((lab, origin, proxy, _dir)) = setup("head_431", extra) else {
        return;
    };
    let ok = format!(
        "GET /under HTTP/1.1\r\nHost: x.test\r\nX-Big: {}\r\n\r\n",
        "b".repeat(3000)
    );
    let mut c = Client::new(lab.client_connect(&dst80()).unwrap());
    let resp = c.send_raw(ok.as_bytes()).unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(origin.wait_request("/under").headers["x-big"].len(), 3000);

    // A 64 KiB header line, sent at once.
    let big = format!(
        "GET /over HTTP/1.1\r\nHost: x.test\r\nX-Big: {}\r\n\r\n",
        "b".repeat(64 * 1024)
    );
    let mut s = lab.client_connect(&dst80()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(big.as_bytes());
    let got = String::from_utf8_lossy(&read_all(&mut s)).into_owned();
    assert!(got.starts_with("HTTP/1.1 431 "), "{got:?}");
    assert!(!origin.seen().iter().any(|s| s.path == "/over"));
    proxy.wait_access(&["431", "refused=header-too-large"]);
    assert_eq!(downstream_limit(&lab, "header_too_large"), 1.0);
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn unfinished_heads_just_under_the_limit_hold_bounded_memory() {
    let extra = "  access_log: { enabled: false }\n  downstream: { header_timeout: 60s, max_header_bytes: 32768, max_connections_per_client: 1000 }\n";
    let Some((lab, _origin, proxy, _dir)) = setup("unfinished_heads_memory", extra) else {
        return;
    };
    // Warm up the runtime's threads and pools first.
    for _ in 0..20 {
        assert_eq!(get(&lab, &dst80(), "x.test", "/warm").status, 200);
    }
    let before = rss(proxy.pid());
    let head = format!(
        "GET /held HTTP/1.1\r\nHost: x.test\r\nX-Big: {}",
        "h".repeat(32_000)
    );
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut s = lab.client_connect(&dst80()).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        held.push(s);
    }
    // Wait until the proxy has read what was sent: memory stops growing.
    let mut last = rss(proxy.pid());
    wait_until("memory to settle", Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(500)); // between two samples
        let now = rss(proxy.pid());
        let settled = now == last && now > before;
        last = now;
        settled
    });
    let grown = last.saturating_sub(before);
    // The cap plus 16 KiB per connection, plus one 2 MiB step: RSS grows by
    // whole allocator segments. Without the limits such a connection held
    // about 2 MiB (400 MiB for 200).
    let bound = 200 * (32 * 1024 + 16 * 1024) + 2 * 1024 * 1024;
    eprintln!(
        "200 unfinished 32000-byte heads: RSS +{} KiB ({} KiB per connection), bound {} KiB",
        grown / 1024,
        grown / 1024 / 200,
        bound / 1024
    );
    assert!(grown < bound, "RSS grew by {grown} bytes, bound {bound}");
    // They are all still open: the bound is not from closing them.
    for s in &mut held {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a held connection was closed early"
        );
    }
}

/// Whether a connection is refused: no HTTP answer, just a reset or EOF
/// (the reset may even beat the end of `connect`).
fn refused(s: std::io::Result<TcpStream>) -> bool {
    let Ok(mut s) = s else {
        return true;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"GET /refused HTTP/1.1\r\nHost: x.test\r\n\r\n");
    read_all(&mut s).is_empty()
}

/// Whether the server closed `s` (EOF or reset), without waiting.
fn closed_by_server(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let closed =
        !matches!((&*s).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn connection_caps_per_client_and_global() {
    // Pressure from 5 of 6; its shorter idle timeout is kept long here.
    let extra = "  downstream: { max_connections: 6, max_connections_per_client: 3, pressure_keepalive_timeout: 60s }\n";
    let Some((lab, origin, _proxy, _dir)) = setup("connection_caps", extra) else {
        return;
    };
    let active = || {
        let body = admin_get(&lab, "/metrics").body;
        metric(
            &body,
            "tproxyd_downstream_connections_active",
            &[r#"listener="lan-http""#, r#"mode="tproxy""#],
        )
        .unwrap_or(-1.0)
    };
    wait_until(
        "the readiness probes to be gone",
        Duration::from_secs(10),
        || active() == 0.0,
    );
    let dst = dst80();
    // Client 1 holds three served keep-alive connections: its cap.
    let mut first: Vec<Client> = (0..3)
        .map(|i| {
            let mut c = Client::new(lab.client_connect_from(CLIENT_V4, &dst).unwrap());
            assert_eq!(
                c.get("x.test", &format!("/c1/{i}"), &[]).unwrap().status,
                200
            );
            c
        })
        .collect();
    assert!(refused(lab.client_connect_from(CLIENT_V4, &dst)));
    assert_eq!(downstream_limit(&lab, "per_client"), 1.0);
    // Another client is still served, up to the global cap of six.
    let second: Vec<TcpStream> = (0..3)
        .map(|i| {
            let s = lab.client_connect_from(CLIENT2_V4, &dst).unwrap();
            let mut c = Client::new(s.try_clone().unwrap());
            assert_eq!(
                c.get("x.test", &format!("/c2/{i}"), &[]).unwrap().status,
                200
            );
            s
        })
        .collect();
    // At the cap, a third client takes the place of an idle connection
    // (the details are tests/pressure.rs's): the heaviest clients hold
    // three each, the tie goes to the higher address, and its
    // longest-idle connection is the first.
    let v6 = format!("[{SERVER_V6}]:80");
    let mut c = Client::new(lab.client_connect_from(CLIENT_V6, &v6).unwrap());
    assert_eq!(c.get("x.test", "/reclaimed", &[]).unwrap().status, 200);
    assert_eq!(downstream_limit(&lab, "reclaimed"), 1.0);
    assert_eq!(downstream_limit(&lab, "max_connections"), 0.0);
    wait_until("the idle connection closed", Duration::from_secs(5), || {
        closed_by_server(&second[0])
    });
    assert!(!closed_by_server(&second[1]) && !closed_by_server(&second[2]));
    assert!(!origin.seen().iter().any(|s| s.path == "/refused"));
    // Places are given back when connections close.
    first.truncate(1);
    drop(second);
    wait_until(
        "closed connections released",
        Duration::from_secs(10),
        || active() == 2.0,
    );
    let mut c = Client::new(lab.client_connect_from(CLIENT_V6, &v6).unwrap());
    assert_eq!(c.get("x.test", "/again", &[]).unwrap().status, 200);
    assert_eq!(first[0].get("x.test", "/still", &[]).unwrap().status, 200);
    assert_eq!(downstream_limit(&lab, "reclaimed"), 1.0);
}

#[test]
fn rate_limit_answers_429_with_retry_after_per_client() {
    let extra =
        "  filters:\n    - rate_limit: { per: client_ip, requests_per_second: 1, burst: 3 }\n";
    let Some((lab, origin, proxy, _dir)) = setup("rate_limit_429", extra) else {
        return;
    };
    let dst = dst80();
    let mut c = Client::new(lab.client_connect_from(CLIENT_V4, &dst).unwrap());
    for i in 0..3 {
        assert_eq!(
            c.get("x.test", &format!("/rl/{i}"), &[]).unwrap().status,
            200
        );
    }
    let resp = c.get("x.test", "/rl/limited", &[]).unwrap();
    assert_eq!(resp.status, 429, "{resp:?}");
    let wait: u64 = resp.headers["retry-after"].parse().unwrap();
    assert!((1..=3).contains(&wait), "Retry-After {wait}");
    assert!(!resp.headers.contains_key("server"), "{resp:?}");
    assert!(!origin.seen().iter().any(|s| s.path == "/rl/limited"));
    // Another client is not limited.
    let mut other = Client::new(lab.client_connect_from(CLIENT2_V4, &dst).unwrap());
    assert_eq!(other.get("x.test", "/rl/other", &[]).unwrap().status, 200);
    proxy.wait_access(&["429", "/rl/limited", "refused=rate-limit"]);
    let body = admin_get(&lab, "/metrics").body;
    let refused = metric(
        &body,
        "tproxyd_requests_refused_total",
        &[
            r#"listener="lan-http""#,
            r#"mode="tproxy""#,
            r#"reason="rate-limit""#,
        ],
    );
    assert_eq!(refused, Some(1.0), "{body}");
}

/// Reads `n` responses from one connection, in order.
fn responses(c: &mut Client, n: usize) -> Vec<Response> {
    (0..n).map(|_| c.read_response().unwrap()).collect()
}

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    let Some((lab, origin, _proxy, _dir)) = setup("pipelining", "") else {
        return;
    };
    let dst = dst80();
    let mut c = Client::new(lab.client_connect(&dst).unwrap());
    c.send_raw_only(
        b"GET /p1 HTTP/1.1\r\nHost: x.test\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x.test\r\n\r\nGET /p3 HTTP/1.1\r\nHost: x.test\r\n\r\n",
    );
    let bodies: Vec<String> = responses(&mut c, 3).into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies,
        ["/p1", "/p2", "/p3"].map(|p| format!("origin {dst} GET {p}\n"))
    );
    let seen: Vec<String> = origin.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(seen, ["/p1", "/p2", "/p3"]);

    // POST with a body, GET, chunked POST, all in one write.
    c.send_raw_only(
        b"POST /q1 HTTP/1.1\r\nHost: x.test\r\nContent-Length: 5\r\n\r\nhelloGET /q2 HTTP/1.1\r\nHost: x.test\r\n\r\nPOST /q3 HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    let bodies: Vec<String> = responses(&mut c, 3).into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies,
        [("POST", "/q1"), ("GET", "/q2"), ("POST", "/q3")]
            .map(|(m, p)| format!("origin {dst} {m} {p}\n"))
    );
    let seen = origin.seen();
    let tail: Vec<(String, String)> = seen[3..]
        .iter()
        .map(|s| (s.path.clone(), s.body.clone()))
        .collect();
    assert_eq!(
        tail,
        [("/q1", "hello"), ("/q2", ""), ("/q3", "abcde")]
            .map(|(p, b)| (p.to_string(), b.to_string()))
    );
}

#[test]
fn http10_without_host_gets_the_destination_and_http11_without_host_400() {
    let Some((lab, origin, _proxy, _dir)) = setup("host_handling", "") else {
        return;
    };
    for (dst, host) in [
        (dst80(), SERVER_V4.to_string()),
        (format!("{SERVER_V4}:83"), format!("{SERVER_V4}:83")),
        (format!("[{SERVER_V6}]:80"), format!("[{SERVER_V6}]")),
    ] {
        let path = format!("/h10/{}", dst.replace([':', '[', ']', '.'], "-"));
        let mut c = Client::new(lab.client_connect(&dst).unwrap());
        let resp = c
            .send_raw(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(resp.status, 200, "{resp:?}");
        let seen = origin.wait_request(&path);
        assert_eq!(seen.headers["host"], host, "{dst}");
        assert_eq!(seen.headers["via"], "1.0 tproxyd");
    }
    let mut c = Client::new(lab.client_connect(&dst80()).unwrap());
    let resp = c.send_raw(b"GET /nohost HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(resp.status, 400, "{resp:?}");
    assert!(!origin.seen().iter().any(|s| s.path == "/nohost"));
}
