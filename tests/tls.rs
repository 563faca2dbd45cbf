//! TLS passthrough through real TPROXY: a real TLS origin (Python's ssl,
//! self-signed certificate) in the server namespace, curl and raw sockets in
//! the client namespace, tproxyd peeking at ClientHellos in between. The
//! proxy never holds a key: the handshake completes end to end.

mod harness;

use harness::*;
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

/// The TLS origin process; killed on drop.
struct TlsLab {
    lab: Lab,
    dir: TempDir,
    _origin: TlsOrigin,
    proxy: Proxy,
    sha256: String,
}

fn tls_config(dir: &std::path::Path, tls: &str) -> String {
    lab_config(dir, "").replace(
        "  upstream:",
        &format!(
            r#"    - name: lan-tls
      address: "[::]:8443"
      mode: tls-passthrough
      tls:
{tls}
    - name: lan-tls-nat
      address: "[::]:8444"
      mode: tls-passthrough
      destination: redirect
  upstream:"#
        ),
    )
}

const DEFAULT_TLS: &str = r#"        client_hello_timeout: 1s
        acl:
          rules:
            - { name: no-other, action: deny, sni: [other.lab.test] }
"#;

fn setup(test: &str, tls: &str) -> Option<TlsLab> {
    if !lab_available(test) {
        return None;
    }
    let lab = Lab::up();
    let dir = TempDir::new("tls");
    let d = &dir.0;
    let san = format!("DNS:www.lab.test,DNS:other.lab.test,IP:{SERVER_V4}");
    self_signed_cert(d, &san);
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    // 8 MiB of incompressible bytes, and their checksum.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let big: Vec<u8> = (0..8 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(www.join("big.bin"), &big).unwrap();
    std::fs::write(www.join("hello.txt"), "hello over TLS\n").unwrap();
    let sum = run_ok(Command::new("sha256sum").arg(www.join("big.bin")));
    let sha256 = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let origin = TlsOrigin::start(&lab, d, "443,4443", &www);
    let proxy = Proxy::start(&lab, &tls_config(d, tls), &[8888, 8889, 8443, 8444]);
    Some(TlsLab {
        lab,
        dir,
        _origin: origin,
        proxy,
        sha256,
    })
}

impl TlsLab {
    /// curl from the client namespace; returns (success, stdout, stderr).
    fn curl(&self, args: &[&str]) -> (bool, String, String) {
        let cacert = self.dir.0.join("cert.pem");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.lab.client_ns(),
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(&cacert)
        .args(args);
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    fn download_sha256(&self, resolve: &str, url: &str) -> String {
        let out = self.dir.0.join("download.bin");
        let (ok, _, err) = self.curl(&["--resolve", resolve, "-o", out.to_str().unwrap(), url]);
        assert!(ok, "{url}: {err}\n{}", self.proxy.log_text());
        let sum = run_ok(Command::new("sha256sum").arg(&out));
        String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
}

#[test]
fn https_is_spliced_byte_exact_v4_v6_and_redirect() {
    let Some(t) = setup("tls_splice", DEFAULT_TLS) else {
        return;
    };
    // The handshake completes end to end (curl verifies the origin's
    // certificate): the proxy never held a key.
    let (ok, body, err) = t.curl(&[
        "--resolve",
        &format!("www.lab.test:443:{SERVER_V4}"),
        "https://www.lab.test/hello.txt",
    ]);
    assert!(ok, "{err}");
    assert_eq!(body, "hello over TLS\n");
    for (resolve, url) in [
        (
            format!("www.lab.test:443:{SERVER_V4}"),
            "https://www.lab.test/big.bin",
        ),
        (
            format!("www.lab.test:443:[{SERVER_V6}]"),
            "https://www.lab.test/big.bin",
        ),
        // Port 4443 is steered with nat redirect to the redirect-mode
        // listener, which reads SO_ORIGINAL_DST.
        (
            format!("www.lab.test:4443:{SERVER_V4}"),
            "https://www.lab.test:4443/big.bin",
        ),
        (
            format!("www.lab.test:4443:[{SERVER_V6}]"),
            "https://www.lab.test:4443/big.bin",
        ),
    ] {
        assert_eq!(t.download_sha256(&resolve, url), t.sha256, "{resolve}");
    }
    t.proxy.wait_access(&[
        "lan-tls-nat",
        "TLS www.lab.test",
        &format!("-> {SERVER_V4}:4443"),
        "tls=spliced",
        // The upstream connection leaves from the router's WAN address.
        &format!("via={ROUTER_WAN_V4}:"),
    ]);
    let line = t
        .proxy
        .wait_access(&["TLS www.lab.test", "tls=spliced", SERVER_V6]);
    assert!(
        line.contains("alpn=http/1.1") || line.contains("alpn=h2,http/1.1"),
        "{line}"
    );
    assert!(line.contains("versions=1.3"), "{line}");
}

#[test]
fn denied_sni_missing_sni_and_plain_http_follow_their_policies() {
    let Some(t) = setup("tls_policies", DEFAULT_TLS) else {
        return;
    };
    // Denied by SNI: a TLS access_denied alert, at once.
    let start = Instant::now();
    let (ok, _, err) = t.curl(&[
        "--resolve",
        &format!("other.lab.test:443:{SERVER_V4}"),
        "https://other.lab.test/hello.txt",
    ]);
    assert!(!ok);
    assert!(err.to_lowercase().contains("access denied"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(3));
    t.proxy.wait_access(&[
        "TLS other.lab.test",
        "tls=denied",
        "decision=acl:deny:no-other",
    ]);
    // No SNI (curl sends none for an IP literal): allowed by default.
    let (ok, body, err) = t.curl(&[&format!("https://{SERVER_V4}/hello.txt")]);
    assert!(ok, "{err}");
    assert_eq!(body, "hello over TLS\n");
    t.proxy
        .wait_access(&["decision=missing_sni:allow", "tls=spliced"]);
    // Plain HTTP sent to 443: denied by default, closed without hanging.
    let start = Instant::now();
    let (ok, _, _) = t.curl(&[&format!("http://{SERVER_V4}:443/")]);
    assert!(!ok);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "plain HTTP to 443 hung"
    );
    t.proxy
        .wait_access(&["tls=non_tls", "decision=non_tls:deny"]);
}

#[test]
fn missing_sni_can_be_denied_and_non_tls_allowed() {
    let tls = "        missing_sni: deny\n        non_tls: allow\n        deny_action: reset\n";
    let Some(t) = setup("tls_policies_inverted", tls) else {
        return;
    };
    let (ok, _, err) = t.curl(&[&format!("https://{SERVER_V4}/hello.txt")]);
    assert!(!ok, "no SNI must be refused");
    assert!(
        err.contains("reset") || err.contains("(35)") || err.contains("(56)"),
        "{err}"
    );
    t.proxy
        .wait_access(&["decision=missing_sni:deny", "tls=denied"]);
    // Non-TLS is spliced: the origin (a TLS server) gets the bytes.
    let _ = t.curl(&["--max-time", "3", &format!("http://{SERVER_V4}:443/")]);
    t.proxy
        // `via=` (the upstream connection's local address) is logged only
        // once the proxy connected to the origin: the bytes were spliced.
        .wait_access(&["tls=non_tls", "decision=non_tls:allow", " via="]);
    // SNI present: fine.
    assert_eq!(
        t.download_sha256(
            &format!("www.lab.test:443:{SERVER_V4}"),
            "https://www.lab.test/big.bin"
        ),
        t.sha256
    );
}

/// A real ClientHello (Python's ssl, i.e. OpenSSL) for `sni`.
fn real_client_hello(sni: &str) -> Vec<u8> {
    let script = format!(
        "import ssl,sys\nc=ssl.create_default_context()\nc.check_hostname=False\nc.verify_mode=ssl.CERT_NONE\n\
         i=ssl.MemoryBIO();o=ssl.MemoryBIO();s=c.wrap_bio(i,o,server_hostname='{sni}')\n\
         try:\n s.do_handshake()\nexcept ssl.SSLWantReadError:\n pass\nsys.stdout.buffer.write(o.read())\n"
    );
    let out = run_ok(Command::new("python3").args(["-c", &script]));
    assert_eq!(out.stdout[0], 0x16);
    out.stdout
}

#[test]
fn a_client_hello_split_across_segments_and_records_still_parses() {
    let Some(t) = setup("tls_split_hello", DEFAULT_TLS) else {
        return;
    };
    let hello = real_client_hello("www.lab.test");
    // Re-frame the handshake message into records of at most 100 bytes.
    let hs = &hello[5..];
    let mut framed = Vec::new();
    for chunk in hs.chunks(100) {
        framed.extend_from_slice(&[0x16, 0x03, 0x01]);
        framed.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        framed.extend_from_slice(chunk);
    }
    let mut s = t.lab.client_connect(&format!("{SERVER_V4}:443")).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for piece in framed.chunks(37) {
        s.write_all(piece).unwrap();
        // Deliberate pause, not a wait: each piece goes out as a segment of
        // its own, so the proxy has to reassemble the hello.
        std::thread::sleep(Duration::from_millis(20));
    }
    // The origin answers with a ServerHello: the proxy parsed and spliced.
    let mut first = [0u8; 5];
    s.read_exact(&mut first)
        .expect("a ServerHello from the origin");
    assert_eq!(first[0], 0x16, "handshake record");
    drop(s); // the record is written when the connection ends
    t.proxy.wait_access(&["TLS www.lab.test", "tls=spliced"]);
}

#[test]
fn a_slow_client_hello_is_dropped() {
    let Some(t) = setup("tls_slowloris", DEFAULT_TLS) else {
        return;
    };
    let hello = real_client_hello("www.lab.test");
    let mut s = t.lab.client_connect(&format!("{SERVER_V4}:443")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&hello[..20]).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
    t.proxy
        .wait_access(&["tls=bad_hello", "error=ClientHelloTimeout"]);
}

#[test]
fn sni_check_denies_a_name_that_is_not_the_destination() {
    let tls = "        sni_check: deny\n";
    let Some(t) = setup("tls_sni_check", tls) else {
        return;
    };
    // www.lab.test resolves (in the router) to .10 and ::10.
    let (ok, body, err) = t.curl(&[
        "--resolve",
        &format!("www.lab.test:443:{SERVER_V4}"),
        "https://www.lab.test/hello.txt",
    ]);
    assert!(ok, "{err}");
    assert_eq!(body, "hello over TLS\n");
    let (ok, _, err) = t.curl(&[
        "--resolve",
        &format!("www.lab.test:443:{SERVER2_V4}"),
        "https://www.lab.test/hello.txt",
    ]);
    assert!(!ok && err.to_lowercase().contains("access denied"), "{err}");
    t.proxy.wait_access(&[
        &format!("-> {SERVER2_V4}:443"),
        "tls=denied",
        "decision=sni_check:deny",
    ]);
    // A connection is counted just before its record is written: once both
    // records are there, both counts are.
    t.proxy
        .wait_access(&[&format!("-> {SERVER_V4}:443"), "tls=spliced"]);
    let metrics = admin_get(&t.lab, "/metrics").body;
    let spliced = metric(
        &metrics,
        "tproxyd_tls_connections_total",
        &[
            r#"listener="lan-tls""#,
            r#"mode="tls-passthrough""#,
            r#"outcome="spliced""#,
        ],
    );
    let denied = metric(
        &metrics,
        "tproxyd_tls_connections_total",
        &[
            r#"listener="lan-tls""#,
            r#"mode="tls-passthrough""#,
            r#"outcome="denied""#,
        ],
    );
    assert_eq!(spliced, Some(1.0), "{metrics}");
    // The harness's readiness probe (a connect to the proxy port itself) is
    // refused as a loop, and counts as denied too.
    assert!(denied.unwrap_or(0.0) >= 1.0);
}

/// Sends `hello` in two segments and returns the first bytes that come
/// back (a ServerHello or an alert), or none when the connection just ends.
fn send_hello_in_two_segments(t: &TlsLab, hello: &[u8]) -> Vec<u8> {
    let mut s = t.lab.client_connect(&format!("{SERVER_V4}:443")).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (a, b) = hello.split_at(1000);
    s.write_all(a).unwrap();
    // Deliberate pause, not a wait: the second segment comes later.
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b).unwrap();
    let mut first = [0u8; 7];
    match s.read_exact(&mut first) {
        Ok(()) => first.to_vec(),
        Err(_) => Vec::new(),
    }
}

/// The fatal `access_denied` alert tproxyd sends for a denied ClientHello.
const ACCESS_DENIED: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];

#[test]
fn post_quantum_sized_and_ech_client_hellos_are_decided_as_configured() {
    use tproxyd::tls::synthetic::{client_hello_with, extension, post_quantum_key_share};
    let tls = format!("{DEFAULT_TLS}        ech: deny\n");
    let Some(t) = setup("tls_pq_ech", &tls) else {
        return;
    };
    // About 1.9 KB: two TCP segments, reassembled and decided by SNI.
    let pq = post_quantum_key_share();
    let allowed = client_hello_with(Some("www.lab.test"), &pq);
    assert!(allowed.len() > 1700);
    // The origin answers it (with an alert of its own: the key shares are
    // not real); the proxy does not refuse it.
    let back = send_hello_in_two_segments(&t, &allowed);
    assert!(back != ACCESS_DENIED, "refused by the proxy: {back:?}");
    t.proxy.wait_access(&[
        "TLS www.lab.test",
        "tls=spliced",
        "decision=acl:allow:default",
    ]);
    let denied = client_hello_with(Some("other.lab.test"), &pq);
    let back = send_hello_in_two_segments(&t, &denied);
    assert_eq!(back, ACCESS_DENIED);
    t.proxy.wait_access(&[
        "TLS other.lab.test",
        "tls=denied",
        "decision=acl:deny:no-other",
    ]);
    // Encrypted Client Hello: the outer name would be allowed, `ech: deny`
    // refuses it; the log marks it.
    let mut ext = pq.clone();
    ext.extend_from_slice(&extension(0xfe0d, &[0x11; 200]));
    let ech = client_hello_with(Some("www.lab.test"), &ext);
    let back = send_hello_in_two_segments(&t, &ech);
    assert_eq!(back, ACCESS_DENIED);
    let line = t.proxy.wait_access(&["tls=denied", "decision=ech:deny"]);
    assert!(line.contains(" ech"), "{line}");
}
