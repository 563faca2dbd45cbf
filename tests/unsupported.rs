//! What an HTTP listener does with what is not HTTP/1.x, through real
//! TPROXY: binary protocols and TLS tunnelled byte-exact (or reset with
//! `reject`), server-first protocols spliced after `server_first_after`, an
//! ACL on the destination applied to tunnels, HTTP still HTTP when it
//! arrives a byte at a time.

mod harness;

use harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lab config with `listener` added to the tproxy listener and `extra`
/// to the `tproxyd:` section.
fn config(dir: &std::path::Path, listener: &str, extra: &str) -> String {
    lab_config(dir, extra).replacen(
        "      mode: tproxy\n",
        &format!("      mode: tproxy\n{listener}"),
        1,
    )
}

fn setup(test: &str, listener: &str, extra: &str) -> Option<(Lab, Origin, Proxy, TempDir)> {
    if !lab_available(test) {
        return None;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("unsupported");
    let proxy = Proxy::start(&lab, &config(&dir.0, listener, extra), &[8888, 8889]);
    Some((lab, origin, proxy, dir))
}

/// An echo server on `port` that counts its connections; `banner` is sent
/// first on each (a server-first protocol) when given.
fn echo(lab: &Lab, port: u16, banner: Option<&'static [u8]>) -> Arc<AtomicUsize> {
    let listener = server_listener(lab, port);
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            seen.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                if let Some(b) = banner {
                    let _ = stream.write_all(b);
                }
                let mut reader = stream.try_clone().unwrap();
                let _ = std::io::copy(&mut reader, &mut stream);
                let _ = stream.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    count
}

/// Pseudo-random bytes that are not HTTP (they start with a zero byte).
fn binary(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    v[0] = 0;
    v
}

/// Sends `data`, half-closes, and reads everything back.
fn round_trip(mut s: TcpStream, data: &[u8]) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let data = data.to_vec();
    // A refused connection may be reset before all is written: the bytes
    // that come back are what the test looks at.
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&data);
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    sender.join().unwrap();
    back
}

fn tunnels(lab: &Lab, reason: &str) -> f64 {
    let body = admin_get(lab, "/metrics").body;
    let r = format!("reason=\"{reason}\"");
    metric(
        &body,
        "tproxyd_tunnels_total",
        &[r#"listener="lan-http""#, r#"mode="tproxy""#, &r],
    )
    .unwrap_or(0.0)
}

#[test]
fn a_binary_protocol_is_tunnelled_byte_exact_v4_and_v6() {
    let Some((lab, _origin, proxy, _dir)) = setup("tunnel_binary", "", "") else {
        return;
    };
    let count = echo(&lab, 85, None);
    let data = binary(256 * 1024);
    for dst in [format!("{SERVER_V4}:85"), format!("[{SERVER_V6}]:85")] {
        let back = round_trip(lab.client_connect(&dst).unwrap(), &data);
        assert!(
            back == data,
            "{dst}: {} bytes back, not the same",
            back.len()
        );
        let line = proxy.wait_access(&[&format!("-> {dst}"), "TUNNEL", "tunnel=unknown"]);
        assert!(line.contains(&format!("{}B", data.len())), "{line}");
    }
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(tunnels(&lab, "unknown"), 2.0);
}

#[test]
fn reject_resets_and_the_origin_never_sees_a_connection() {
    let listener = "      unsupported_protocol: reject\n";
    let Some((lab, _origin, proxy, _dir)) = setup("tunnel_reject", listener, "") else {
        return;
    };
    let count = echo(&lab, 85, None);
    let back = round_trip(
        lab.client_connect(&format!("{SERVER_V4}:85")).unwrap(),
        &binary(100),
    );
    assert!(back.is_empty(), "{back:?}");
    proxy.wait_access(&["TUNNEL", "refused=unsupported-protocol"]);
    assert_eq!(count.load(Ordering::SeqCst), 0);
    // HTTP on the same listener is served as ever.
    assert_eq!(
        get(&lab, &format!("{SERVER_V4}:80"), "x.test", "/h").status,
        200
    );
}

#[test]
fn an_acl_on_the_destination_stops_a_tunnel() {
    let extra = format!(
        "  filters:\n    - acl: {{ rules: [ {{ name: no-two, action: deny, dst: [\"{SERVER2_V4}\"] }} ] }}\n"
    );
    let Some((lab, _origin, proxy, _dir)) = setup("tunnel_acl", "", &extra) else {
        return;
    };
    let count = echo(&lab, 85, None);
    let data = binary(1000);
    let refused = round_trip(
        lab.client_connect(&format!("{SERVER2_V4}:85")).unwrap(),
        &data,
    );
    assert!(refused.is_empty());
    let line = proxy.wait_access(&["TUNNEL", "refused=acl"]);
    assert!(line.contains("decision=acl:deny:no-two"), "{line}");
    assert_eq!(count.load(Ordering::SeqCst), 0);
    let back = round_trip(
        lab.client_connect(&format!("{SERVER_V4}:85")).unwrap(),
        &data,
    );
    assert_eq!(back, data);
}

#[test]
fn a_silent_client_gets_the_server_banner_after_server_first_after() {
    let listener = "      server_first_after: 500ms\n";
    let Some((lab, _origin, proxy, _dir)) = setup("server_first", listener, "") else {
        return;
    };
    echo(&lab, 86, Some(b"220 banner.lab.test ESMTP\r\n"));
    let mut s = lab.client_connect(&format!("{SERVER_V4}:86")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut banner = [0u8; 27];
    s.read_exact(&mut banner).unwrap();
    let waited = started.elapsed();
    assert_eq!(&banner, b"220 banner.lab.test ESMTP\r\n");
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    // Then it is a plain tunnel both ways.
    s.write_all(b"EHLO client\r\n").unwrap();
    let mut echoed = [0u8; 13];
    s.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"EHLO client\r\n");
    drop(s);
    proxy.wait_access(&["TUNNEL", "tunnel=server-first"]);
    // HTTP clients, which speak first, are not affected.
    assert_eq!(
        get(&lab, &format!("{SERVER_V4}:80"), "x.test", "/h").status,
        200
    );
}

#[test]
fn http_arriving_one_byte_per_segment_is_still_http() {
    let Some((lab, origin, _proxy, _dir)) = setup("http_bytewise", "", "") else {
        return;
    };
    let mut s = lab.client_connect(&format!("{SERVER_V4}:80")).unwrap();
    s.set_nodelay(true).unwrap();
    for b in b"GET /bytewise HTTP/1.1\r\nHost: x.test\r\n\r\n" {
        s.write_all(&[*b]).unwrap();
        // Deliberate pause, not a wait: one segment per byte.
        std::thread::sleep(Duration::from_millis(5));
    }
    let resp = Client::new(s).read_response().unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        origin.wait_request("/bytewise").headers["via"],
        "1.1 tproxyd"
    );
}

#[test]
fn tls_to_an_intercepted_http_port_is_tunnelled_and_its_sni_logged() {
    let Some((lab, _origin, proxy, dir)) = setup("tunnel_tls", "", "") else {
        return;
    };
    // A TLS origin on port 84 (intercepted as HTTP), with a fresh cert.
    let d = &dir.0;
    self_signed_cert(d, "DNS:www.lab.test");
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello over TLS on port 84\n").unwrap();
    let origin = TlsOrigin::start(&lab, d, "84", &www);
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns(),
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(d.join("cert.pem"))
        .args([
            "--resolve",
            &format!("www.lab.test:84:{SERVER_V4}"),
            "https://www.lab.test:84/hello.txt",
        ])
        .output()
        .unwrap();
    drop(origin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello over TLS on port 84\n"
    );
    let line = proxy.wait_access(&["TUNNEL www.lab.test", "tunnel=tls", "tls=tunnelled"]);
    assert!(line.contains(&format!("-> {SERVER_V4}:84")), "{line}");
    assert_eq!(tunnels(&lab, "tls"), 1.0);
}
