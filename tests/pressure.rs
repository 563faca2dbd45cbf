//! Under pressure, through real TPROXY: at `max_connections` a new client
//! takes the place of an idle keep-alive connection of the heaviest client;
//! requests, tunnels and relays in use are never reclaimed (when only they
//! remain, a newcomer is reset); above the watermark idle connections and
//! slow heads get the shorter timeouts; a flood at the cap loses no request
//! in flight and writes no log line per connection.

mod harness;

use harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn dst80() -> String {
    format!("{SERVER_V4}:80")
}

/// Lab, origin on port 80 and an echo server on 82 and 443, tproxyd with
/// `extra` in `tproxyd:` (and `listeners` added to the lab's).
fn setup(
    test: &str,
    extra: &str,
    listeners: &str,
    ports: &[u16],
) -> Option<(Lab, Origin, Proxy, TempDir)> {
    if !lab_available(test) {
        return None;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    Origin::start_echo(&lab, 82);
    Origin::start_echo(&lab, 443);
    let dir = TempDir::new("pressure");
    let yaml = lab_config(&dir.0, extra)
        .replace("  upstream:\n", &format!("{listeners}  upstream:\n"))
        .replace("read_timeout: 3s", "read_timeout: 20s");
    let proxy = Proxy::start(&lab, &yaml, ports);
    wait_until("no open client connection", Duration::from_secs(10), || {
        open_connections(&lab) == 0.0
    });
    Some((lab, origin, proxy, dir))
}

/// `tproxyd_downstream_pressure`.
fn pressure(lab: &Lab) -> f64 {
    metric(
        &admin_get(lab, "/metrics").body,
        "tproxyd_downstream_pressure",
        &[],
    )
    .unwrap_or(-1.0)
}

/// A keep-alive connection from `src` that has had one answered request:
/// idle from now on.
fn idle_connection(lab: &Lab, src: &str, path: &str) -> TcpStream {
    let s = lab.client_connect_from(src, &dst80()).unwrap();
    let resp = Client::new(s.try_clone().unwrap()).get("x.test", path, &[]);
    assert_eq!(resp.map(|r| r.status).ok(), Some(200), "{src} {path}");
    s
}

/// Whether the server closed `s` (EOF or reset), without waiting.
fn closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let r = (&*s).read(&mut b);
    s.set_nonblocking(false).unwrap();
    !matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Waits (up to `limit`) until the server has closed `s`.
fn wait_closed(s: &TcpStream, limit: Duration) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match (&*s).read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("not closed within {limit:?}")
            }
            Err(_) => return,
        }
    }
}

/// Whether a connection is refused: no HTTP answer, just a reset or EOF.
fn refused(s: std::io::Result<TcpStream>) -> bool {
    let Ok(mut s) = s else {
        return true;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"GET /refused HTTP/1.1\r\nHost: x.test\r\n\r\n");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got.is_empty()
}

#[test]
fn at_the_cap_a_new_client_takes_an_idle_place_of_the_heaviest() {
    let extra = "  downstream: { max_connections: 200, pressure_keepalive_timeout: 60s }\n";
    let Some((lab, _origin, proxy, _dir)) = setup("reclaim_heaviest", extra, "", &[8888]) else {
        return;
    };
    // Eight hosts hold the 200 places with idle keep-alive connections,
    // the heaviest first (so each stays within its fair share as
    // pressure comes on at 160).
    let shares = [60, 40, 17, 17, 17, 17, 16, 16];
    let mut held: Vec<(usize, TcpStream)> = Vec::new();
    for (h, n) in shares.iter().enumerate() {
        let src = format!("192.0.2.{}", 20 + h);
        lab.add_client_v4(&src);
        for i in 0..*n {
            held.push((h, idle_connection(&lab, &src, &format!("/hold/{h}/{i}"))));
        }
    }
    assert_eq!(open_connections(&lab), 200.0);
    assert_eq!(pressure(&lab), 1.0);
    // A ninth host: each new connection is answered at once, the place
    // taken from the heaviest host's longest-idle connection.
    let ninth = "192.0.2.30";
    lab.add_client_v4(ninth);
    let mut kept = Vec::new();
    for i in 0..10 {
        let start = Instant::now();
        let s = idle_connection(&lab, ninth, &format!("/ninth/{i}"));
        let took = start.elapsed();
        assert!(took < Duration::from_secs(1), "request {i} took {took:?}");
        kept.push(s);
    }
    assert_eq!(downstream_limit(&lab, "reclaimed"), 10.0);
    assert_eq!(downstream_limit(&lab, "max_connections"), 0.0);
    for (_, s) in &held[..10] {
        wait_closed(s, Duration::from_secs(5));
    }
    let others: Vec<usize> = held[10..]
        .iter()
        .enumerate()
        .filter(|(_, (_, s))| closed(s))
        .map(|(i, (h, _))| i * 100 + h)
        .collect();
    assert!(
        others.is_empty(),
        "also closed (index*100+host): {others:?}"
    );
    assert!(kept.iter().all(|s| !closed(s)));
    assert_eq!(open_connections(&lab), 200.0);
    let warnings: Vec<String> = proxy
        .log_text()
        .lines()
        .filter(|l| l.starts_with('[') && (l.contains("WARN") || l.contains("ERROR")))
        .map(str::to_string)
        .collect();
    assert!(warnings.len() <= 2, "{warnings:#?}");
}

/// CONNECT through the forward listener to the echo server on 443: the
/// tunnel is up.
fn connect_tunnel(lab: &Lab) -> TcpStream {
    let mut s = lab
        .client_connect_from(CLIENT_V4, &format!("{ROUTER_LAN_V4}:3128"))
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!("CONNECT {SERVER_V4}:443 HTTP/1.1\r\nHost: {SERVER_V4}:443\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let want = b"HTTP/1.1 200 Connection Established\r\n\r\n";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    echoes(&mut s, b"through CONNECT");
    s
}

/// `s` carries `bytes` to an echo server and back.
fn echoes(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).unwrap();
    let mut got = vec![0u8; bytes.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, bytes);
}

/// A relay to the echo server on `dst`, opened with `first` (echoed).
fn relay(lab: &Lab, dst: &str, first: &[u8]) -> TcpStream {
    let mut s = lab.client_connect_from(CLIENT_V4, dst).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    echoes(&mut s, first);
    s
}

#[test]
fn what_is_in_use_is_never_reclaimed() {
    let extra = "  downstream: { max_connections: 6, pressure_keepalive_timeout: 60s }\n";
    let listeners = r#"    - name: lan-tls
      address: "[::]:8443"
      mode: tls-passthrough
    - name: fwd
      address: "[::]:3128"
      mode: forward
      allow_clients: ["192.0.2.10/32"]
      connect_ports: [443]
"#;
    let Some((lab, origin, _proxy, _dir)) =
        setup("in_use_kept", extra, listeners, &[8888, 8443, 3128])
    else {
        return;
    };
    // Five connections in use, all of one client (the heaviest): a slow
    // download, a request waiting for a slow origin, a CONNECT tunnel, a
    // passthrough relay and the tunnel of a non-HTTP connection.
    let download = {
        let s = lab.client_connect_from(CLIENT_V4, &dst80()).unwrap();
        std::thread::spawn(move || Client::new(s).get("x.test", "/slow/80", &[]))
    };
    let waiting = {
        let s = lab.client_connect_from(CLIENT_V4, &dst80()).unwrap();
        std::thread::spawn(move || Client::new(s).get("x.test", "/delay/8000/a", &[]))
    };
    origin.wait_request("/slow/80");
    origin.wait_request("/delay/8000/a");
    let mut tunnels = [
        connect_tunnel(&lab),
        relay(
            &lab,
            &format!("{SERVER_V4}:443"),
            &tproxyd::tls::synthetic::client_hello(Some("www.lab.test")),
        ),
        relay(&lab, &format!("{SERVER_V4}:82"), b"SSH-2.0-lab\r\n"),
    ];
    // The sixth, and only idle, connection: another client's.
    let idle = idle_connection(&lab, CLIENT2_V4, "/idle");
    assert_eq!(open_connections(&lab), 6.0);
    // A newcomer takes the idle place, not one in use; its own request
    // is in flight while the next one comes.
    let v6 = format!("[{SERVER_V6}]:80");
    let newcomer = {
        let s = lab.client_connect_from(CLIENT_V6, &v6).unwrap();
        std::thread::spawn(move || Client::new(s).get("x.test", "/delay/1500/n", &[]))
    };
    wait_closed(&idle, Duration::from_secs(5));
    origin.wait_request("/delay/1500/n");
    assert_eq!(downstream_limit(&lab, "reclaimed"), 1.0);
    // Only connections in use remain: the next one is reset.
    assert!(refused(lab.client_connect_from(CLIENT_V6, &v6)));
    assert_eq!(downstream_limit(&lab, "max_connections"), 1.0);
    assert_eq!(downstream_limit(&lab, "reclaimed"), 1.0);
    // Everything in use carried on.
    let resp = newcomer.join().unwrap().unwrap();
    assert_eq!(resp.status, 200);
    for (s, b) in tunnels.iter_mut().zip([&b"a"[..], b"b", b"c"]) {
        echoes(s, b);
    }
    let resp = waiting.join().unwrap().unwrap();
    assert_eq!((resp.status, resp.body.is_empty()), (200, false));
    let resp = download.join().unwrap().unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.body == slow_body(80), "the download was cut");
}

#[test]
fn above_the_watermark_idle_connections_and_slow_heads_get_the_short_timeouts() {
    // Pressure from 8 open connections, off again below 7.
    let extra = "  downstream: { max_connections: 10, keepalive_timeout: 6s, header_timeout: 6s, \
                 pressure_keepalive_timeout: 1s, pressure_header_timeout: 1s }\n";
    let Some((lab, _origin, _proxy, _dir)) = setup("short_waits", extra, "", &[8888]) else {
        return;
    };
    // Idle before pressure: its 6 s wait is cut short when pressure comes.
    let early = idle_connection(&lab, CLIENT_V4, "/early");
    let early_at = Instant::now();
    // Seven requests waiting 5 s for the origin hold the pressure on.
    let busy: Vec<_> = (0..7)
        .map(|i| {
            let s = lab.client_connect_from(CLIENT2_V4, &dst80()).unwrap();
            std::thread::spawn(move || {
                Client::new(s).get("x.test", &format!("/delay/5000/{i}"), &[])
            })
        })
        .collect();
    wait_until("pressure", Duration::from_secs(5), || pressure(&lab) == 1.0);
    wait_closed(&early, Duration::from_secs(10));
    let took = early_at.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "idle before pressure: {took:?}"
    );
    // Idle under pressure: closed after about a second.
    let idle = idle_connection(&lab, CLIENT_V4, "/idle");
    let idle_at = Instant::now();
    // A head that trickles in under pressure: 408 after about a second.
    let mut slow = lab.client_connect_from(CLIENT_V4, &dst80()).unwrap();
    let slow_at = Instant::now();
    slow.write_all(b"GET /slow-head HTTP/1.1\r\nHost: x.test\r\n")
        .unwrap();
    let mut writer = slow.try_clone().unwrap();
    std::thread::spawn(move || {
        while writer.write_all(b"X-A: b\r\n").is_ok() {
            // The trickle itself: a header line every 200 ms.
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    wait_closed(&idle, Duration::from_secs(10));
    let took = idle_at.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "idle under pressure: {took:?}"
    );
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let _ = slow.read_to_end(&mut got);
    let took = slow_at.elapsed();
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        took < Duration::from_secs(4),
        "a slow head under pressure: {took:?}"
    );
    assert_eq!(downstream_limit(&lab, "keepalive_timeout"), 2.0);
    assert_eq!(downstream_limit(&lab, "header_timeout"), 1.0);
    for b in busy {
        assert_eq!(b.join().unwrap().map(|r| r.status).ok(), Some(200));
    }
    // Below the watermark again: the configured wait.
    wait_until("pressure to end", Duration::from_secs(5), || {
        pressure(&lab) == 0.0
    });
    let s = idle_connection(&lab, CLIENT_V4, "/below");
    let at = Instant::now();
    wait_closed(&s, Duration::from_secs(15));
    let took = at.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(12),
        "idle below the watermark: {took:?}"
    );
}

#[test]
fn a_flood_at_the_cap_loses_no_request_in_flight_and_logs_nothing_per_connection() {
    let extra = "  access_log: { enabled: false }\n  downstream: { max_connections: 64 }\n";
    let Some((lab, origin, proxy, _dir)) = setup("flood", extra, "", &[8888]) else {
        return;
    };
    // Requests in flight before the flood: slow downloads of 3 s.
    let downloads: Vec<_> = (0..5)
        .map(|_| {
            let s = lab.client_connect_from(CLIENT_V4, &dst80()).unwrap();
            std::thread::spawn(move || {
                let r = Client::new(s).get("x.test", "/slow/30", &[]);
                r.map(|r| (r.status, r.body == slow_body(30)))
            })
        })
        .collect();
    wait_until("5 downloads at the origin", Duration::from_secs(10), || {
        origin
            .seen()
            .iter()
            .filter(|s| s.path == "/slow/30")
            .count()
            == 5
    });
    // Eight hosts hold 7 idle connections each, within the smallest fair
    // share: 61 of the 64 places are taken.
    let mut held = Vec::new();
    for h in 0..8 {
        let src = format!("192.0.2.{}", 20 + h);
        lab.add_client_v4(&src);
        for i in 0..7 {
            held.push(idle_connection(&lab, &src, &format!("/hold/{h}/{i}")));
        }
    }
    // Four hosts open connections as fast as they can for 3 s, each
    // making one request and keeping the last 30 open: at the cap, and
    // over their fair shares.
    let cpu_before = proxy.cpu_time();
    let flooders: Vec<_> = (0..4)
        .map(|h| {
            let src = format!("192.0.2.{}", 40 + h);
            lab.add_client_v4(&src);
            let dst: std::net::SocketAddr = dst80().parse().unwrap();
            spawn_in_netns(&lab.client_ns(), move || {
                let (mut opened, mut kept) = (0usize, std::collections::VecDeque::new());
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(3) {
                    let sock =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                            .unwrap();
                    sock.bind(
                        &format!("{src}:0")
                            .parse::<std::net::SocketAddr>()
                            .unwrap()
                            .into(),
                    )
                    .unwrap();
                    if sock
                        .connect_timeout(&dst.into(), Duration::from_secs(2))
                        .is_err()
                    {
                        continue;
                    }
                    opened += 1;
                    let s: TcpStream = sock.into();
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let _ = (&s).write_all(b"GET /flood HTTP/1.1\r\nHost: x.test\r\n\r\n");
                    let _ = (&s).read(&mut [0u8; 512]);
                    kept.push_back(s);
                    if kept.len() > 30 {
                        kept.pop_front();
                    }
                }
                opened
            })
        })
        .collect();
    // Meanwhile a light client's new connections are all served.
    let mut served = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let s = lab.client_connect_from(CLIENT2_V4, &dst80()).unwrap();
        let r = Client::new(s).get("x.test", &format!("/light/{served}"), &[]);
        assert_eq!(r.map(|r| r.status).ok(), Some(200), "request {served}");
        served += 1;
    }
    let opened: usize = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    let cpu = proxy.cpu_time() - cpu_before;
    for d in downloads {
        assert_eq!(
            d.join().unwrap().ok(),
            Some((200, true)),
            "a download was cut"
        );
    }
    let reclaimed = downstream_limit(&lab, "reclaimed");
    let reset = downstream_limit(&lab, "max_connections") + downstream_limit(&lab, "per_client");
    let per_conn = cpu / (opened + served).max(1) as u32;
    eprintln!(
        "flood: {opened} connections in 3 s ({reclaimed} reclaimed, {reset} reset), \
         {served} light requests, proxy CPU {cpu:?} ({per_conn:?} per connection)"
    );
    assert!(reclaimed > 0.0, "the flood never reached the cap");
    // Debug build on a shared machine: generous, but far below a spin.
    assert!(
        per_conn < Duration::from_millis(5),
        "{per_conn:?} CPU per connection"
    );
    let lines: Vec<String> = proxy
        .log_text()
        .lines()
        .filter(|l| l.starts_with('['))
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(str::to_string)
        .collect();
    assert!(
        lines.len() <= 3,
        "{} warnings or errors: {lines:#?}",
        lines.len()
    );
}
