//! Full transparency and the other ways in: upstream source spoofing (v4,
//! v6), pool isolation per client, SO_MARK on upstream sockets, and the
//! forward proxy (absolute URIs, CONNECT) with its never-open defaults.

mod harness;

use harness::*;
use std::io::{Read, Write};

fn spoof_config(dir: &std::path::Path, mark: bool) -> String {
    let mut yaml = lab_config(dir, if mark { "    mark: 0x100\n" } else { "" }).replace(
        "      mode: tproxy\n",
        "      mode: tproxy\n      spoof_source: true\n",
    );
    if !mark {
        yaml = yaml.replace("    mark: 0x100\n", "");
    }
    yaml
}

#[test]
fn spoofed_upstream_connections_carry_the_clients_address_v4_and_v6() {
    if !lab_available("spoof_v4_v6") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("spoof");
    let proxy = Proxy::start(&lab, &spoof_config(&dir.0, true), &[8888, 8889]);
    let marked_before = lab.marked_packets();
    for (dst, client) in [
        (format!("{SERVER_V4}:80"), CLIENT_V4),
        (format!("[{SERVER_V6}]:80"), CLIENT_V6),
    ] {
        let mut c = Client::new(lab.client_connect_from(client, &dst).unwrap());
        let resp = c.get("spoof.test", "/spoofed", &[]).unwrap();
        assert_eq!(resp.status, 200, "{resp:?}\n{}", proxy.log_text());
        let s = origin.seen().pop().unwrap();
        assert_eq!(
            s.peer.ip().to_string(),
            client,
            "the origin sees the client itself"
        );
        assert_eq!(s.local.to_string(), dst);
        proxy.wait_access(&[
            "/spoofed",
            &dst,
            &format!(
                "via={}",
                if client.contains(':') {
                    format!("[{client}]")
                } else {
                    client.to_string()
                }
            ),
        ]);
    }
    assert!(
        lab.marked_packets() > marked_before,
        "spoofed upstream packets carry the mark"
    );
}

#[test]
fn pooled_spoofed_connections_never_mix_clients() {
    if !lab_available("spoof_pool_isolation") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("pool");
    let _proxy = Proxy::start(&lab, &spoof_config(&dir.0, false), &[8888, 8889]);
    for (a, b, dst) in [
        (CLIENT_V4, CLIENT2_V4, format!("{SERVER_V4}:80")),
        (CLIENT_V6, CLIENT2_V6, format!("[{SERVER_V6}]:80")),
    ] {
        let mut ca = Client::new(lab.client_connect_from(a, &dst).unwrap());
        let mut cb = Client::new(lab.client_connect_from(b, &dst).unwrap());
        let before = origin.count();
        // Alternate on keep-alive connections: a, b, a, b, ...
        for i in 0..6 {
            let (c, who) = if i % 2 == 0 {
                (&mut ca, a)
            } else {
                (&mut cb, b)
            };
            let path = format!("/pool/{who}/{i}");
            assert_eq!(c.get("pool.test", &path, &[]).unwrap().status, 200);
        }
        let seen = &origin.seen()[before..];
        assert_eq!(seen.len(), 6);
        for s in seen {
            let who = s.path.split('/').nth(2).unwrap();
            assert_eq!(
                s.peer.ip().to_string(),
                who,
                "request {} came from the wrong client",
                s.path
            );
        }
        // Connections were reused (per client), not opened per request.
        let conns: std::collections::HashSet<usize> = seen.iter().map(|s| s.conn).collect();
        assert!(conns.len() <= 4, "upstream connections: {}", conns.len());
        for conn in &conns {
            let peers: std::collections::HashSet<_> = seen
                .iter()
                .filter(|s| s.conn == *conn)
                .map(|s| s.peer.ip())
                .collect();
            assert_eq!(peers.len(), 1, "one upstream connection served two clients");
        }
    }
}

#[test]
fn upstream_mark_is_set_without_spoofing() {
    if !lab_available("upstream_mark") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("mark");
    let _proxy = Proxy::start(
        &lab,
        &lab_config(&dir.0, "    mark: 0x100\n"),
        &[8888, 8889],
    );
    let before = lab.marked_packets();
    let resp = get(&lab, &format!("{SERVER_V4}:80"), "mark.test", "/marked");
    assert_eq!(resp.status, 200);
    assert_eq!(origin.seen()[0].peer.ip().to_string(), ROUTER_WAN_V4);
    let after = lab.marked_packets();
    assert!(
        after >= before + 3,
        "SYN, request and ACKs are marked: {before} -> {after}"
    );
}

fn forward_config(dir: &std::path::Path) -> String {
    lab_config(
        dir,
        r#"  filters:
    - acl:
        rules:
          - { name: no-other, action: deny, host: ["other.lab.test"] }
"#,
    )
    .replace(
        "  upstream:",
        r#"    - name: fwd
      address: "[::]:3128"
      mode: forward
      allow_clients: ["192.0.2.10/32", "2001:db8:1::10"]
      connect_ports: [443, 80]
  upstream:"#,
    )
}

fn forward_setup(test: &str) -> Option<(Lab, Origin, Proxy)> {
    if !lab_available(test) {
        return None;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    Origin::start_echo(&lab, 443);
    let dir = TempDir::new("fwd");
    let proxy = Proxy::start(&lab, &forward_config(&dir.0), &[8888, 8889, 3128]);
    Some((lab, origin, proxy))
}

fn proxied(lab: &Lab, src: &str, proxy: &str, target: &str) -> Response {
    // RFC 9112 §3.2.2: Host must equal the absolute URI's authority.
    let host = target
        .strip_prefix("http://")
        .and_then(|t| t.split('/').next())
        .unwrap_or("relative.test");
    let mut c = Client::new(lab.client_connect_from(src, proxy).unwrap());
    c.send_raw(
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nProxy-Connection: keep-alive\r\n\r\n")
            .as_bytes(),
    )
    .unwrap()
}

#[test]
fn forward_proxy_absolute_uris_names_and_refusals() {
    let Some((lab, origin, proxy)) = forward_setup("forward_http") else {
        return;
    };
    let fwd4 = format!("{ROUTER_LAN_V4}:3128");
    let fwd6 = format!("[{ROUTER_LAN_V6}]:3128");
    // By IP and by name (resolved in the router), v4 and v6 clients.
    let r = proxied(
        &lab,
        CLIENT_V4,
        &fwd4,
        &format!("http://{SERVER_V4}/by-ip?q=1"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, format!("origin {SERVER_V4}:80 GET /by-ip?q=1\n"));
    let s = origin.seen().pop().unwrap();
    assert_eq!(s.headers["host"], SERVER_V4, "Host comes from the URI");
    assert!(!s.headers.contains_key("proxy-connection"));
    assert_eq!(s.headers["via"], "1.1 tproxyd");
    let r = proxied(&lab, CLIENT_V6, &fwd6, "http://www.lab.test/by-name");
    assert_eq!(r.status, 200, "{r:?}");
    let s = origin.seen().pop().unwrap();
    assert_eq!(s.headers["host"], "www.lab.test");
    let ip = s.local.ip().to_string();
    assert!(
        ip == SERVER_V4 || ip == SERVER_V6,
        "www.lab.test is .10 or ::10, not {ip}"
    );
    proxy.wait_access(&["fwd", "/by-name", "200"]);

    let before = origin.count();
    // A client outside allow_clients.
    let r = proxied(&lab, CLIENT2_V4, &fwd4, &format!("http://{SERVER_V4}/nope"));
    assert_eq!(r.status, 403);
    assert!(r.body.contains(CLIENT2_V4), "{}", r.body);
    // Loopback and the proxy's own address.
    for target in [
        "http://127.0.0.1/",
        "http://[::1]:8080/",
        &format!("http://{ROUTER_LAN_V4}:3128/"),
    ] {
        let r = proxied(&lab, CLIENT_V4, &fwd4, target);
        assert_eq!(r.status, 403, "{target}: {r:?}");
        assert!(r.body.contains("local"), "{}", r.body);
    }
    // Unknown names: 502 naming the name.
    let r = proxied(&lab, CLIENT_V4, &fwd4, "http://nowhere.invalid/");
    assert_eq!(r.status, 502);
    assert!(r.body.contains("nowhere.invalid"), "{}", r.body);
    // Origin-form on a forward listener.
    let r = proxied(&lab, CLIENT_V4, &fwd4, "/relative");
    assert_eq!(r.status, 400);
    // The ACL filter applies to forward traffic too.
    let r = proxied(&lab, CLIENT_V4, &fwd4, "http://other.lab.test/");
    assert_eq!(r.status, 403);
    assert!(r.body.contains("no-other"));
    assert_eq!(
        origin.count(),
        before,
        "refused requests never reach an origin"
    );
    proxy.wait_access(&["fwd", "refused=forward-not-allowed"]);
}

fn connect(lab: &Lab, src: &str, proxy: &str, target: &str) -> (std::net::TcpStream, String) {
    let mut s = lab.client_connect_from(src, proxy).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let mut rest = String::new();
    let text = String::from_utf8_lossy(&head).to_string();
    if !text.starts_with("HTTP/1.1 200") {
        let _ = s.read_to_string(&mut rest);
    }
    (s, text + &rest)
}

#[test]
fn forward_proxy_connect_tunnels_bytes_intact_and_refuses_what_it_must() {
    let Some((lab, origin, proxy)) = forward_setup("forward_connect") else {
        return;
    };
    let fwd4 = format!("{ROUTER_LAN_V4}:3128");
    for (src, fwd, target) in [
        (CLIENT_V4, fwd4.clone(), format!("{SERVER_V4}:443")),
        (
            CLIENT_V6,
            format!("[{ROUTER_LAN_V6}]:3128"),
            format!("[{SERVER_V6}]:443"),
        ),
        (CLIENT_V4, fwd4.clone(), "www.lab.test:443".to_string()),
    ] {
        let (mut s, head) = connect(&lab, src, &fwd, &target);
        assert!(head.starts_with("HTTP/1.1 200"), "{target}: {head}");
        // 256 KiB each way through the echo server, byte-exact.
        let data: Vec<u8> = (0..256 * 1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let mut writer = s.try_clone().unwrap();
        let sent = data.clone();
        let w = std::thread::spawn(move || {
            writer.write_all(&sent).unwrap();
            writer.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        w.join().unwrap();
        assert_eq!(back.len(), data.len(), "{target}");
        assert!(back == data, "{target}: tunnelled bytes differ");
    }
    proxy.wait_access(&["fwd", "\"CONNECT", "www.lab.test:443", " 200 "]);

    // Refusals: a port not in connect_ports, a client not allowed, a
    // loopback destination, an ACL'd name, an unknown name.
    let cases = [
        (CLIENT_V4, format!("{SERVER_V4}:22"), "403", "port 22"),
        (CLIENT2_V4, format!("{SERVER_V4}:443"), "403", CLIENT2_V4),
        (CLIENT_V4, "127.0.0.1:443".to_string(), "403", "local"),
        (
            CLIENT_V4,
            "other.lab.test:443".to_string(),
            "403",
            "no-other",
        ),
        (
            CLIENT_V4,
            "nowhere.invalid:443".to_string(),
            "502",
            "nowhere.invalid",
        ),
    ];
    for (src, target, code, needle) in cases {
        let (_s, text) = connect(&lab, src, &fwd4, &target);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {code}")),
            "{target}: {text}"
        );
        assert!(text.contains(needle), "{target}: {text}");
    }
    assert_eq!(origin.count(), 0);
}

#[test]
fn curl_through_the_forward_proxy() {
    let Some((lab, origin, _proxy)) = forward_setup("forward_curl") else {
        return;
    };
    let run = |args: &[&str]| {
        let mut full = vec!["curl", "-sS", "--max-time", "5"];
        full.extend_from_slice(args);
        let out = lab.exec(&lab.client_ns(), &full);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let proxy_url = format!("http://{ROUTER_LAN_V4}:3128");
    // www.lab.test has a v4 and a v6 address; either may be used.
    let from_lab = |body: &str, path: &str| {
        [
            format!("origin {SERVER_V4}:80 GET {path}\n"),
            format!("origin [{SERVER_V6}]:80 GET {path}\n"),
        ]
        .contains(&body.to_string())
    };
    let (ok, body, err) = run(&["-x", &proxy_url, "http://www.lab.test/curl-x"]);
    assert!(ok && from_lab(&body, "/curl-x"), "{err} {body}");
    // -p: tunnel through CONNECT (port 80 is in this listener's connect_ports).
    let (ok, body, err) = run(&["-p", "-x", &proxy_url, "http://www.lab.test/curl-p"]);
    assert!(ok && from_lab(&body, "/curl-p"), "{err} {body}");
    // From a client address outside allow_clients.
    let (ok, _, err) = run(&[
        "--interface",
        CLIENT2_V4,
        "-f",
        "-x",
        &proxy_url,
        "http://www.lab.test/denied",
    ]);
    assert!(!ok && err.contains("403"), "{err}");
    assert_eq!(origin.seen().len(), 2);
}

/// Pooled upstream connections are reused under concurrent keep-alive load
/// on several threads: Pingora's `reused_stream` used to give up on a
/// healthy pooled connection when the idle watcher on another thread had
/// unlocked it but not yet dropped its reference, closing it and opening a
/// new one (vendor/PATCHES.md, pingora#998). With `work_stealing: false`
/// that happened to about 1 reuse in 120 under a paced load, and to 235
/// connections for these 16 clients.
#[test]
fn pooled_upstream_connections_survive_reuse_across_threads() {
    if !lab_available("pool_reuse_threads") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("pool-threads");
    // A runtime per thread, where the race was frequent.
    let yaml = lab_config(&dir.0, "").replace("threads: 2\n", "threads: 2\nwork_stealing: false\n");
    assert!(yaml.contains("work_stealing: false"));
    let _proxy = Proxy::start(&lab, &yaml, &[8888, 8889]);
    const WORKERS: usize = 16;
    const REQUESTS: usize = 150;
    let dst: std::net::SocketAddr = format!("{SERVER_V4}:80").parse().unwrap();
    let before = origin.count();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            spawn_in_netns(&lab.client_ns(), move || {
                let stream = std::net::TcpStream::connect(dst).expect("connect");
                let mut c = Client::new(stream);
                for i in 0..REQUESTS {
                    let path = format!("/reuse/{w}/{i}");
                    let r = c.get("pool.test", &path, &[]).expect("a response");
                    assert_eq!(r.status, 200, "{path}");
                    // A pause, so that connections go idle in the pool
                    // and are picked up by other threads' requests.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker failed");
    }
    let seen = &origin.seen()[before..];
    assert_eq!(seen.len(), WORKERS * REQUESTS);
    for s in seen {
        // Through tproxyd (not routed around it), to the address dialed.
        assert_eq!(
            s.headers.get("via").map(String::as_str),
            Some("1.1 tproxyd"),
            "{}",
            s.path
        );
        assert_eq!(s.local, dst, "{} reached the wrong destination", s.path);
    }
    let conns: std::collections::HashSet<usize> = seen.iter().map(|s| s.conn).collect();
    // At most one request per client connection is in flight, so the pool
    // never needs more upstream connections than there are clients.
    assert!(
        conns.len() <= WORKERS + 2,
        "{} upstream connections for {WORKERS} keep-alive clients ({} requests): \
         pooled connections were dropped instead of reused",
        conns.len(),
        seen.len()
    );
}
