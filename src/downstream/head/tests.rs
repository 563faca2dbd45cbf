use super::*;
use crate::downstream::reply;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn limits(head_ms: u64, idle_ms: u64, max: usize) -> Downstream {
    Downstream {
        header_timeout: Duration::from_millis(head_ms),
        keepalive_timeout: Duration::from_millis(idle_ms),
        max_header_bytes: max,
        ..Downstream::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn watch() -> (tokio::sync::watch::Sender<bool>, ShutdownWatch) {
    tokio::sync::watch::channel(false)
}

/// [`read_head`] with no start time and a connection's fresh timer.
async fn head_of(
    stream: &mut Stream,
    prefix: Option<BytesMut>,
    limits: &Downstream,
    w: &ShutdownWatch,
) -> Head {
    let wait = std::pin::pin!(shutdown_wait(w.clone()));
    read_head(stream, prefix, None, limits, wait, &mut Idle::default()).await
}

#[test]
fn heads_end_at_an_empty_line_after_content() {
    let cases: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        (b"GET / HTTP/1.1\nHost: a\n\n", true),
        (b"GET / HTTP/1.1\r\nHost: a\r\n", false),
        (b"\r\n\r\n\r\n", false),
        (b"\r\nGET / HTTP/1.0\r\n\r\n", true),
        (b"GET / HTTP/1.1\r\nX: a\r\n \r\n", false),
    ];
    for (bytes, want) in cases {
        assert_eq!(EndScan::default().complete(bytes), *want, "{bytes:?}");
    }
    // Resumable across reads, also inside the terminator.
    let mut s = EndScan::default();
    assert!(!s.complete(b"GET / HTTP/1.1\r\n\r"));
    assert!(s.complete(b"GET / HTTP/1.1\r\n\r\n"));
}

/// The scan as first written, a byte at a time: the reference.
fn reference_end(buf: &[u8]) -> Option<usize> {
    let (mut content, mut newline) = (false, false);
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'\n' if content && newline => return Some(i + 1),
            b'\n' => newline = true,
            b'\r' => {}
            _ => {
                content = true;
                newline = false;
            }
        }
    }
    None
}

#[test]
fn the_scan_finds_the_same_end_as_a_byte_at_a_time_in_any_split() {
    // Every string of up to 7 bytes over these, split at every point.
    let alphabet = [b'\r', b'\n', b'a', b' '];
    let mut checked = 0;
    for len in 0..=7u32 {
        for mut code in 0..4usize.pow(len) {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    let b = alphabet[code % 4];
                    code /= 4;
                    b
                })
                .collect();
            let want = reference_end(&buf);
            for split in 0..=buf.len() {
                let mut s = EndScan::default();
                let found = if s.complete(&buf[..split]) {
                    Some(s.pos)
                } else {
                    s.complete(&buf).then_some(s.pos)
                };
                assert_eq!(found, want, "{buf:?} split at {split}");
                checked += 1;
            }
        }
    }
    assert!(checked > 20_000);
}

#[test]
fn a_head_parsed_whole_ends_where_the_scan_ends_it() {
    // Every sequence of up to 6 of these pieces: request lines, fields,
    // bare and doubled line ends, stray bytes.
    let pieces: [&[u8]; 8] = [
        b"GET / HTTP/1.1",
        b"CONNECT a:1 HTTP/1.1",
        b"H: v",
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"x",
    ];
    let (mut parsed, mut checked) = (0, 0);
    for len in 0..=6u32 {
        for mut code in 0..8usize.pow(len) {
            let mut buf = Vec::new();
            for _ in 0..len {
                buf.extend_from_slice(pieces[code % 8]);
                code /= 8;
            }
            checked += 1;
            let Parsed {
                end: Some(end),
                kind,
            } = parse_head(&buf)
            else {
                continue;
            };
            parsed += 1;
            assert_eq!(Some(end), reference_end(&buf), "{buf:?}");
            assert_eq!(kind, refused_head(&buf), "{buf:?}");
        }
    }
    assert!(checked > 200_000 && parsed > 1_000, "{checked} {parsed}");
}

#[test]
fn a_head_and_what_follows_it_is_handed_over() {
    rt().block_on(async {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut stream: Stream = Box::new(server);
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
            .await
            .unwrap();
        let (_tx, w) = watch();
        let head = head_of(&mut stream, None, &limits(1000, 1000, 1024), &w).await;
        let Head::Ready(bytes, HeadKind::Request) = head else {
            panic!("{head:?}")
        };
        assert!(bytes.ends_with(b"\r\n\r\nhi"));
        // A complete head in the prefix needs no read at all.
        let prefix = BytesMut::from(&b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"[..]);
        let head = head_of(&mut stream, Some(prefix), &limits(1, 1, 1024), &w).await;
        assert!(
            matches!(head, Head::Ready(_, HeadKind::Request)),
            "{head:?}"
        );
        // A head over the cap is refused even when it came whole.
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        let prefix = BytesMut::from(big.as_bytes());
        let head = head_of(&mut stream, Some(prefix), &limits(1, 1, 1024), &w).await;
        assert!(
            matches!(head, Head::Refused(HeadRefusal::TooLarge)),
            "{head:?}"
        );
        // Only empty lines carried over: idle, not a head (the idle
        // deadline applies, and it is quiet).
        let prefix = BytesMut::from(&b"\r\n"[..]);
        let head = head_of(&mut stream, Some(prefix), &limits(1000, 50, 1024), &w).await;
        assert!(matches!(head, Head::Idle), "{head:?}");
    });
}

#[test]
fn a_trickled_head_hits_the_deadline() {
    rt().block_on(async {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut stream: Stream = Box::new(server);
        client.write_all(b"GET / HT").await.unwrap();
        let (_tx, w) = watch();
        let started = Instant::now();
        let head = head_of(&mut stream, None, &limits(200, 5000, 1024), &w).await;
        assert!(
            matches!(head, Head::Refused(HeadRefusal::TooSlow)),
            "{head:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(190));
        assert_eq!(HeadRefusal::TooSlow.status(), 408);
        assert!(reply::send(&mut stream, HeadRefusal::TooSlow.reply()).await);
        drop(stream);
        let mut reply = String::new();
        client.read_to_string(&mut reply).await.unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 408 "), "{reply}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{reply}"
        );
    });
}

#[test]
fn a_growing_head_buffer_never_outgrows_the_cap() {
    rt().block_on(async {
        // 10,000 is not a power-of-two multiple of the first 4 KiB, so
        // the last doubling step is the one that could overshoot.
        let max = 10_000;
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut stream: Stream = Box::new(server);
        client.write_all(&[b'a'; 20_000]).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = BytesMut::new();
        while read_more(&mut stream, &mut buf, deadline, max)
            .await
            .is_ok()
        {
            assert!(buf.capacity() <= max + 1, "capacity {}", buf.capacity());
        }
        assert_eq!(buf.len(), max + 1);
        assert_eq!(buf.capacity(), max + 1);
    });
}

#[test]
fn a_head_over_the_cap_is_refused_holding_at_most_cap_plus_one_bytes() {
    rt().block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut stream: Stream = Box::new(server);
        client.write_all(&[b'a'; 40_000]).await.unwrap();
        let (_tx, w) = watch();
        let head = head_of(&mut stream, None, &limits(5000, 5000, 10_000), &w).await;
        assert!(
            matches!(head, Head::Refused(HeadRefusal::TooLarge)),
            "{head:?}"
        );
        // What is left unread is what was never buffered.
        drop(client.write_all(b"").await);
        let mut rest = vec![0u8; 40_000];
        let left = stream.read(&mut rest).await.unwrap();
        assert_eq!(left, 40_000 - 10_001);
    });
}

#[test]
fn idle_and_shutdown_close_quietly() {
    rt().block_on(async {
        let (_client, server) = tokio::io::duplex(4096);
        let mut stream: Stream = Box::new(server);
        let (tx, w) = watch();
        let long = limits(5000, 5000, 1024);
        let head = head_of(&mut stream, None, &limits(5000, 100, 1024), &w).await;
        assert!(matches!(head, Head::Idle), "{head:?}");
        // An idle connection has no refusal, so no reply: it closes quietly.
        let waiting = head_of(&mut stream, None, &long, &w);
        let stop = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(true).unwrap();
        };
        let (head, ()) = tokio::join!(waiting, stop);
        assert!(matches!(head, Head::Closed), "{head:?}");
    });
}

/// One shutdown waiter for a connection's whole life: it is polled
/// (and left waiting) during one request's wait, not polled while the
/// signal comes, and still ends the wait after that.
#[test]
fn one_shutdown_waiter_serves_every_request_of_a_connection() {
    rt().block_on(async {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut stream: Stream = Box::new(server);
        let (tx, w) = watch();
        let long = limits(5000, 5000, 1024);
        let mut wait = std::pin::pin!(shutdown_wait(w.clone()));
        let mut idle = Idle::default();
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        // The second head comes late: the waiter is polled meanwhile.
        for delay in [0, 50] {
            let head = read_head(&mut stream, None, None, &long, wait.as_mut(), &mut idle);
            let send = async {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                client.write_all(req).await.unwrap();
            };
            let (head, ()) = tokio::join!(head, send);
            assert!(
                matches!(head, Head::Ready(_, HeadKind::Request)),
                "{head:?}"
            );
        }
        tx.send(true).unwrap();
        let head = tokio::time::timeout(
            Duration::from_secs(2),
            read_head(&mut stream, None, None, &long, wait.as_mut(), &mut idle),
        )
        .await
        .expect("the signal, sent between waits, ends the next one");
        assert!(matches!(head, Head::Closed), "{head:?}");
    });
}

/// The kind of a whole head, as [`whole`] takes it.
fn refused_head(head: &[u8]) -> Option<HeadKind> {
    parse_head(head).kind
}

#[test]
fn heads_pingora_would_refuse_are_told_apart() {
    let request = Some(HeadKind::Request);
    assert_eq!(refused_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), request);
    assert_eq!(
        refused_head(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
        Some(HeadKind::Connect)
    );
    assert_eq!(refused_head(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"), None);
    let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(257));
    assert_eq!(refused_head(many.as_bytes()), None);
    // Left to Pingora, which retries it with the target escaped.
    assert_eq!(
        refused_head(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
        request
    );
}
