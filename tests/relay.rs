//! The opaque relay through real TPROXY and REDIRECT: multi-MiB transfers
//! both ways at once, byte-exact, through TLS passthrough (v4, v6,
//! REDIRECT, spoofed source) and through the tunnel of a non-HTTP
//! connection, each with a client that half-closes first; the relay
//! counter by kind (`splice` by default, `copy` with `upstream.relay:
//! copy`); and 2,000 relays aborted by either side leaving the process's
//! descriptors where they were.

mod harness;

use harness::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;
use tproxyd::tls::synthetic::client_hello;

/// Passthrough on 8443 (TPROXY, port 443) and 8444 (REDIRECT, port 4443,
/// spoofing the client's address), a forward proxy on 3128 (CONNECT),
/// beside the lab's HTTP listeners (whose non-HTTP connections are
/// tunnelled); `upstream` is added to the `upstream:` section.
fn config(dir: &std::path::Path, upstream: &str) -> String {
    lab_config(dir, upstream).replace(
        "  upstream:\n",
        r#"    - name: lan-tls
      address: "[::]:8443"
      mode: tls-passthrough
    - name: lan-tls-nat
      address: "[::]:8444"
      mode: tls-passthrough
      destination: redirect
      spoof_source: true
    - name: fwd
      address: "[::]:3128"
      mode: forward
      allow_clients: ["192.0.2.10/32"]
      connect_ports: [443]
  upstream:
"#,
    )
}

fn setup(test: &str, upstream: &str) -> Option<(Lab, Proxy, TempDir)> {
    if !lab_available(test) {
        return None;
    }
    let lab = Lab::up();
    let dir = TempDir::new("relay");
    let proxy = Proxy::start(&lab, &config(&dir.0, upstream), &[8888, 8443, 8444, 3128]);
    Some((lab, proxy, dir))
}

/// Deterministic bytes that show any loss, duplication or reordering.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1d ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const UP: usize = 6 << 20;
const DOWN: usize = 8 << 20;

/// What the origin got on one connection, and from whom.
struct Received {
    peer: SocketAddr,
    bytes: Vec<u8>,
}

/// An origin on `port` in the server namespace: on each connection it
/// sends `DOWN` bytes while reading everything the client sends until the
/// client half-closes, then closes; reports what it read.
fn bulk_origin(lab: &Lab, port: u16) -> mpsc::Receiver<Received> {
    let listener = server_listener(lab, port);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { break };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let peer = s.peer_addr().unwrap();
                let mut w = s.try_clone().unwrap();
                let send = std::thread::spawn(move || {
                    let _ = w.write_all(&pattern(DOWN, 2));
                    let _ = w.shutdown(Shutdown::Write);
                });
                let mut bytes = Vec::new();
                let _ = s.read_to_end(&mut bytes);
                let _ = send.join();
                let _ = tx.send(Received { peer, bytes });
            });
        }
    });
    rx
}

/// One transfer from the client namespace (from `src` when given): a
/// ClientHello and `UP` bytes while reading the origin's `DOWN` bytes,
/// half-closing after its upload. Checks both directions byte for byte
/// and returns the origin's peer address.
fn transfer(
    lab: &Lab,
    src: Option<&str>,
    dst: &str,
    origin: &mpsc::Receiver<Received>,
) -> SocketAddr {
    transfer_via(lab, src, dst, b"", b"", origin)
}

/// Like [`transfer`], with `preamble` sent first (and not expected at the
/// origin) and `head` expected before the origin's bytes: a CONNECT.
fn transfer_via(
    lab: &Lab,
    src: Option<&str>,
    dst: &str,
    preamble: &[u8],
    head: &[u8],
    origin: &mpsc::Receiver<Received>,
) -> SocketAddr {
    let s = match src {
        Some(src) => lab.client_connect_from(src, dst),
        None => lab.client_connect(dst),
    }
    .unwrap_or_else(|e| panic!("connect {dst}: {e}"));
    let mut w = s.try_clone().unwrap();
    let hello = client_hello(Some("www.lab.test"));
    let mut sent = preamble.to_vec();
    sent.extend(&hello);
    sent.extend(pattern(UP, 1));
    let upload = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    let mut r = s;
    r.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    r.read_to_end(&mut got).unwrap();
    upload.join().unwrap();
    assert!(
        got.starts_with(head),
        "{dst}: no {:?}",
        String::from_utf8_lossy(head)
    );
    let got = got.split_off(head.len());
    assert!(
        got.len() == DOWN && got == pattern(DOWN, 2),
        "{dst}: download differs ({} bytes)",
        got.len()
    );
    let at_origin = origin
        .recv_timeout(Duration::from_secs(20))
        .expect("the origin's report");
    let mut want = hello;
    want.extend(pattern(UP, 1));
    assert!(
        at_origin.bytes == want,
        "{dst}: upload differs ({} bytes)",
        at_origin.bytes.len()
    );
    at_origin.peer
}

/// `tproxyd_relay_total` of `listener` (`mode`) and `kind`.
fn relays(lab: &Lab, listener: &str, mode: &str, kind: &str) -> f64 {
    let body = admin_get(lab, "/metrics").body;
    let labels = [
        &format!("listener=\"{listener}\""),
        &format!("mode=\"{mode}\""),
        &format!("kind=\"{kind}\""),
    ];
    metric(&body, "tproxyd_relay_total", &labels.map(|l| l.as_str())).unwrap_or(-1.0)
}

#[test]
fn relays_are_spliced_byte_exact_v4_v6_redirect_spoofed_and_tunnelled() {
    let Some((lab, proxy, _dir)) = setup("relay_splice", "") else {
        return;
    };
    let tls = bulk_origin(&lab, 443);
    let nat = bulk_origin(&lab, 4443);
    let tunnel = bulk_origin(&lab, 82);

    let peer = transfer(&lab, None, &format!("{SERVER_V4}:443"), &tls);
    assert_eq!(peer.ip().to_canonical().to_string(), ROUTER_WAN_V4);
    let peer = transfer(&lab, None, &format!("[{SERVER_V6}]:443"), &tls);
    assert_eq!(peer.ip().to_string(), ROUTER_WAN_V6);
    // REDIRECT, spoofing the client's address towards the origin.
    let peer = transfer(&lab, Some(CLIENT_V4), &format!("{SERVER_V4}:4443"), &nat);
    assert_eq!(peer.ip().to_canonical().to_string(), CLIENT_V4);
    let peer = transfer(&lab, Some(CLIENT_V6), &format!("[{SERVER_V6}]:4443"), &nat);
    assert_eq!(peer.ip().to_string(), CLIENT_V6);
    // A non-HTTP connection on the HTTP listener: a tunnel.
    transfer(&lab, None, &format!("{SERVER_V4}:82"), &tunnel);
    // CONNECT, the tunnel's first bytes right behind the head.
    let connect = format!("CONNECT {SERVER_V4}:443 HTTP/1.1\r\nHost: {SERVER_V4}:443\r\n\r\n");
    let established = b"HTTP/1.1 200 Connection Established\r\n\r\n";
    let fwd = format!("{ROUTER_LAN_V4}:3128");
    let peer = transfer_via(
        &lab,
        Some(CLIENT_V4),
        &fwd,
        connect.as_bytes(),
        established,
        &tls,
    );
    assert_eq!(peer.ip().to_canonical().to_string(), ROUTER_WAN_V4);

    let line = proxy.wait_access(&["TLS www.lab.test", "tls=spliced", SERVER_V6]);
    // The bytes to the client, exact, in the access log.
    assert!(line.contains(&format!(" {DOWN}B ")), "{line}");
    let ok = poll_until(Duration::from_secs(5), || {
        relays(&lab, "lan-tls", "tls-passthrough", "splice") == 2.0
            && relays(&lab, "lan-tls-nat", "tls-passthrough", "splice") == 2.0
            && relays(&lab, "lan-http", "tproxy", "splice") == 1.0
            && relays(&lab, "fwd", "forward", "splice") == 1.0
    });
    let body = admin_get(&lab, "/metrics").body;
    assert!(
        ok,
        "relay counters:\n{}",
        grep(&body, "tproxyd_relay_total")
    );
    assert_eq!(
        relays(&lab, "lan-tls", "tls-passthrough", "copy"),
        0.0,
        "{body}"
    );
}

fn grep(body: &str, what: &str) -> String {
    body.lines()
        .filter(|l| l.contains(what))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn relay_copy_rules_splicing_out() {
    let Some((lab, _proxy, _dir)) = setup("relay_copy", "    relay: copy\n") else {
        return;
    };
    let tls = bulk_origin(&lab, 443);
    transfer(&lab, None, &format!("{SERVER_V4}:443"), &tls);
    let ok = poll_until(Duration::from_secs(5), || {
        relays(&lab, "lan-tls", "tls-passthrough", "copy") == 1.0
    });
    let body = admin_get(&lab, "/metrics").body;
    assert!(ok, "{}", grep(&body, "tproxyd_relay_total"));
    assert_eq!(relays(&lab, "lan-tls", "tls-passthrough", "splice"), 0.0);
}

/// An origin for aborted relays: reads the ClientHello and one byte that
/// says who aborts (`c`lient or `o`rigin), answers one byte (so the client
/// knows the relay is up), then resets (`o`) or waits for the end.
fn abort_origin(listener: TcpListener, hello_len: usize) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { break };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; hello_len + 1];
                if s.read_exact(&mut buf).is_err() || s.write_all(b"y").is_err() {
                    return;
                }
                if buf[hello_len] == b'o' {
                    // Wait for the client's extra byte: the relay is busy both ways.
                    let _ = s.read(&mut [0u8; 1]);
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                } else {
                    let _ = std::io::copy(&mut s, &mut std::io::sink());
                }
            });
        }
    });
}

/// One relay aborted: by the client (a reset while the relay is up) or by
/// the origin.
fn aborted(lab: &Lab, dst: &str, hello: &[u8], by_origin: bool) {
    let Ok(mut s) = lab.client_connect(dst) else {
        return;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = hello.to_vec();
    first.push(if by_origin { b'o' } else { b'c' });
    if s.write_all(&first).is_err() || s.read_exact(&mut [0u8; 1]).is_err() {
        return;
    }
    if by_origin {
        let _ = s.write_all(b"z");
        let _ = s.read(&mut [0u8; 1]);
    } else {
        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    }
}

/// (descriptors that are not pipes, pipe descriptors) of `pid`.
fn descriptors(pid: u32) -> (usize, usize) {
    let mut counts = (0, 0);
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let pipe =
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("pipe:"));
        if pipe {
            counts.1 += 1;
        } else {
            counts.0 += 1;
        }
    }
    counts
}

/// `n` aborted relays from `workers` client threads at once.
fn abort_many(lab: &Lab, n: usize, workers: usize) {
    let hello = client_hello(Some("www.lab.test"));
    let dst = format!("{SERVER_V4}:443");
    std::thread::scope(|s| {
        for w in 0..workers {
            let (hello, dst) = (&hello, &dst);
            s.spawn(move || {
                for i in (w..n).step_by(workers) {
                    aborted(lab, dst, hello, i % 2 == 1);
                }
            });
        }
    });
}

#[test]
fn two_thousand_aborted_relays_leave_the_descriptors_where_they_were() {
    let Some((lab, proxy, _dir)) = setup("relay_abort", "") else {
        return;
    };
    let hello_len = client_hello(Some("www.lab.test")).len();
    abort_origin(server_listener(&lab, 443), hello_len);
    let pid = proxy.pid();
    let settled = |want: usize| {
        poll_until(Duration::from_secs(15), || {
            relays(&lab, "lan-tls", "tls-passthrough", "splice")
                + relays(&lab, "lan-tls", "tls-passthrough", "copy")
                >= want as f64
        })
    };
    // Warm up: the per-thread pipe pools fill as they would.
    abort_many(&lab, 100, 20);
    assert!(settled(100), "{}", proxy.log_text());
    let (before, pipes_before) = descriptors(pid);
    abort_many(&lab, 2000, 20);
    assert!(
        settled(2100),
        "{}",
        grep(&admin_get(&lab, "/metrics").body, "relay")
    );
    let back = poll_until(Duration::from_secs(10), || descriptors(pid).0 <= before);
    let (after, pipes) = descriptors(pid);
    eprintln!(
        "descriptors (not pipes) {before} -> {after}, pipe descriptors {pipes_before} -> {pipes}"
    );
    assert!(
        back,
        "descriptors (not pipes): {before} before, {after} after"
    );
    // Pooled pipes stay, bounded by the pools (16 pipes per thread).
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert!(
        pipes <= pipes_before.max(2 * 16 * threads),
        "pipe descriptors: {pipes_before} before, {pipes} after"
    );
    let spliced = relays(&lab, "lan-tls", "tls-passthrough", "splice");
    assert!(spliced >= 2000.0, "spliced relays: {spliced}");
}

#[test]
fn a_spliced_relay_holds_its_two_sockets_and_nothing_more() {
    let Some((lab, proxy, _dir)) = setup("relay_fds", "") else {
        return;
    };
    let hello = client_hello(Some("www.lab.test"));
    // The origin holds every connection, answering one byte once its
    // ClientHello has come.
    let listener = server_listener(&lab, 443);
    let hello_len = hello.len();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            let Ok(mut s) = s else { break };
            let mut got = vec![0u8; hello_len];
            if s.read_exact(&mut got).is_ok() && s.write_all(b"o").is_ok() {
                held.push(s);
            }
        }
    });
    let dst = format!("{SERVER_V4}:443");
    let open = |n: usize| -> Vec<std::net::TcpStream> {
        (0..n)
            .map(|_| {
                let mut s = lab.client_connect(&dst).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.write_all(&hello).unwrap();
                // The origin's byte came through the relay: it is splicing.
                s.read_exact(&mut [0u8; 1]).unwrap();
                s
            })
            .collect()
    };
    let _warm = open(4); // threads, pools
    let pid = proxy.pid();
    let (before, _) = descriptors(pid);
    let held = open(20);
    let (during, _) = descriptors(pid);
    // Each relay: the client's socket and the origin's; no duplicate of
    // either (its readiness is the socket's own registration).
    let added = during - before;
    eprintln!("descriptors (not pipes) with 20 relays up: {before} -> {during}");
    assert!(
        (40..=44).contains(&added),
        "{added} descriptors for 20 relays"
    );
    drop(held);
}

/// The runtimes the process runs (src/app.rs): every listener's with the
/// config's `threads`, the admin endpoint's with one worker.
#[test]
fn the_admin_endpoint_runs_one_worker_beside_the_listeners() {
    let Some((_lab, proxy, _dir)) = setup("runtime_threads", "") else {
        return;
    };
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", proxy.pid()))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    let count = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    assert_eq!(count("tproxyd admin"), 1, "{names:?}");
    // Thread names are cut at 15 bytes: "tproxyd lan-tls" is whole.
    assert_eq!(
        count("tproxyd lan-tls"),
        4,
        "lan-tls and lan-tls-nat: {names:?}"
    );
}
