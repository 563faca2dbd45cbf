//! Reading a request head with the client-side limits: an idle deadline
//! before it, a total deadline from its first byte to its end, and a cap on
//! its size.
//!
//! Pingora's HTTP/1 server bounds each *read* of a head, not the head (a
//! client trickling a byte at a time is never cut off), and only caps it at
//! a fixed 1 MiB, doubling its buffer toward that. So the connection loop
//! (`crate::proxy`) reads each head here first and hands the bytes to
//! Pingora as the session's "pipelined prefix", which Pingora parses
//! without reading again. While a connection waits for a request it holds
//! no buffer (it waits for readability), nor Pingora's request future; while a head
//! arrives its buffer grows to at most `max_header_bytes + 1` bytes.

use super::idle::IdleTimer;
use super::Downstream;
use crate::flow::DownstreamLimit;
use bytes::{BufMut, BytesMut};
use futures::FutureExt;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_timeout::fast_timeout::fast_timeout;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// The buffer a head gets when its first bytes are there (most fit); it
/// grows by doubling up to `max_header_bytes + 1`.
const MIN_HEAD_BUF: usize = 4096;

/// What reading the next head gave.
#[derive(Debug)]
pub enum Head {
    /// A complete head, and any bytes read after it (body, more requests);
    /// with the answer Pingora would give it before any hook runs, if any
    /// ([`refused_head`]).
    Ready(BytesMut, Option<u16>),
    /// The client closed (or reset) the connection, or the process is
    /// shutting down: close quietly.
    Closed,
    /// A limit ended the connection; [`answer_limit`] says what to send.
    Limit(DownstreamLimit),
}

/// Finds the end of a request head (an empty line after some content; bare
/// LF line ends count, as in Pingora's parser), resuming where it stopped.
#[derive(Debug, Default)]
struct EndScan {
    pos: usize,
    content: bool,
    newline: bool,
}

impl EndScan {
    /// Whether `buf` (which starts with what earlier calls saw) holds a
    /// whole head; `pos` is then just past its end. The end is a line
    /// feed, any carriage returns, and another line feed; line feeds are
    /// found with `memchr`, since a browser's head is several hundred bytes.
    fn complete(&mut self, buf: &[u8]) -> bool {
        if !self.content {
            // Empty lines before a request are skipped.
            let rest = &buf[self.pos..];
            match rest.iter().position(|b| !matches!(b, b'\r' | b'\n')) {
                Some(i) => {
                    self.pos += i;
                    self.content = true;
                    self.newline = false;
                }
                None => {
                    self.pos = buf.len();
                    return false;
                }
            }
        }
        loop {
            if self.newline {
                while buf.get(self.pos) == Some(&b'\r') {
                    self.pos += 1;
                }
                match buf.get(self.pos) {
                    None => return false,
                    Some(b'\n') => {
                        self.pos += 1;
                        return true;
                    }
                    Some(_) => self.newline = false,
                }
            }
            match memchr::memchr(b'\n', &buf[self.pos..]) {
                Some(i) => {
                    self.pos += i + 1;
                    self.newline = true;
                }
                None => {
                    self.pos = buf.len();
                    return false;
                }
            }
        }
    }
}

/// Reads the next request head from `stream`, starting with `prefix` (bytes
/// of it already read, since `started` when known). Waits at most
/// `keepalive_timeout` for a first byte, timed by the connection's `idle`
/// timer (and gives up at once when `shutdown`, the connection's wait for
/// the shutdown signal, ends meanwhile), then at most `header_timeout` for
/// the rest, and never buffers more than `max_header_bytes + 1` bytes.
pub async fn read_head<S: Future + ?Sized>(
    stream: &mut Stream,
    prefix: Option<BytesMut>,
    started: Option<Instant>,
    limits: &Downstream,
    shutdown: Pin<&mut S>,
    idle: &mut IdleTimer,
) -> Head {
    let mut buf = prefix.unwrap_or_default();
    // Empty lines between requests (RFC 9112 §2.2: to be ignored) leave the
    // connection idle, not half-way through a head.
    if buf.iter().all(|b| matches!(b, b'\r' | b'\n')) {
        // Dropped, not cleared: the wait that follows holds no buffer.
        buf = BytesMut::new();
    }
    let mut scan = EndScan::default();
    if buf.is_empty() {
        match first_bytes(stream, limits.keepalive_timeout, limits, shutdown, idle).await {
            Ok(first) => buf = first,
            Err(FirstRead::Closed) => return Head::Closed,
            Err(FirstRead::Silent) => return Head::Limit(DownstreamLimit::KeepaliveTimeout),
        }
    }
    // Most heads are whole in their first read: then one parse finds both
    // the end and the verdict. Tried once per head, never again as more
    // bytes come, so a head that trickles in is not parsed over and over.
    if let (Some(end), refused) = parse_head(&buf) {
        if end > limits.max_header_bytes {
            return Head::Limit(DownstreamLimit::HeaderTooLarge);
        }
        return Head::Ready(buf, refused);
    }
    // Set when the head turns out to need more reads (most come whole):
    // the clock is read only then.
    let mut deadline = None;
    loop {
        if scan.complete(&buf) {
            // The head itself, not what came after it, must fit the cap.
            if scan.pos > limits.max_header_bytes {
                return Head::Limit(DownstreamLimit::HeaderTooLarge);
            }
            let refused = refused_head(&buf);
            return Head::Ready(buf, refused);
        }
        let deadline = *deadline
            .get_or_insert_with(|| started.unwrap_or_else(Instant::now) + limits.header_timeout);
        if let Err(head) = read_more(stream, &mut buf, deadline, limits.max_header_bytes).await {
            return head;
        }
    }
}

/// Why no first byte came.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FirstRead {
    /// The client closed, or the process is shutting down.
    Closed,
    /// Nothing arrived within the wait.
    Silent,
}

/// Waits at most `wait` for the first bytes of a request (giving up when
/// `shutdown` ends: a wait for the shutdown signal) and returns them in a
/// buffer sized for a head.
///
/// The wait holds no buffer: it waits for the socket to become readable
/// and only then allocates, so an idle keep-alive connection costs its
/// task and socket, not a head buffer. Nor does it register a timer or a
/// shutdown waiter per request: `idle` is the connection's running timer,
/// and `shutdown` is made once per connection ([`shutdown_wait`]).
pub(super) async fn first_bytes<S: Future + ?Sized>(
    stream: &mut Stream,
    wait: std::time::Duration,
    limits: &Downstream,
    mut shutdown: Pin<&mut S>,
    idle: &mut IdleTimer,
) -> Result<BytesMut, FirstRead> {
    let since = Instant::now();
    tokio::select! {
        biased;
        r = readable(stream) => if r.is_err() {
            return Err(FirstRead::Closed);
        },
        _ = idle.expired(since, wait) => return Err(FirstRead::Silent),
        _ = shutdown.as_mut() => return Err(FirstRead::Closed),
    }
    let max = limits.max_header_bytes;
    let mut buf = BytesMut::with_capacity(MIN_HEAD_BUF.min(max + 1));
    let mut limited = (&mut buf).limit(MIN_HEAD_BUF.min(max + 1));
    // The socket is readable, so the bytes are almost always there: one
    // read, without a timer or the shutdown wait around it.
    match stream.read_buf(&mut limited).now_or_never() {
        Some(Ok(n)) if n > 0 => return Ok(buf),
        Some(_) => return Err(FirstRead::Closed),
        None => {}
    }
    // Readiness was stale: the read has to wait, within what is left of
    // `wait`.
    let left = wait.saturating_sub(since.elapsed());
    tokio::select! {
        biased;
        r = fast_timeout(left, stream.read_buf(&mut limited)) => match r {
            Ok(Ok(n)) if n > 0 => Ok(buf),
            Ok(_) => Err(FirstRead::Closed),
            Err(_) => Err(FirstRead::Silent),
        },
        _ = shutdown.as_mut() => Err(FirstRead::Closed),
    }
}

/// Ends when the process starts shutting down (or the signal's sender is
/// gone). Made once per connection and polled by each wait for a request:
/// a fresh `changed()` per request registered and removed a waiter each
/// time. Once it has ended the connection closes; it is not polled again.
pub async fn shutdown_wait(watch: &mut ShutdownWatch) {
    let _ = watch.changed().await;
}

/// Until `stream` has bytes to read (or has ended). Streams that cannot
/// say (not a plain socket) are taken as readable: the read then waits.
async fn readable(stream: &Stream) -> std::io::Result<()> {
    type L4Stream = pingora_core::protocols::l4::stream::Stream;
    match stream.as_any().downcast_ref::<L4Stream>() {
        Some(l4) => std::future::poll_fn(|cx| l4.poll_read_ready(cx)).await,
        None => Ok(()),
    }
}

/// Reads more of a head into `buf` by `deadline`, never past `max + 1`
/// bytes; `Err` with how the head ended otherwise.
pub(super) async fn read_more(
    stream: &mut Stream,
    buf: &mut BytesMut,
    deadline: Instant,
    max: usize,
) -> Result<(), Head> {
    if buf.len() > max {
        return Err(Head::Limit(DownstreamLimit::HeaderTooLarge));
    }
    // Grow by doubling, but never past the cap (plus one byte to tell).
    let room = max + 1 - buf.len();
    if buf.capacity() == buf.len() {
        // Exactly this much: `BytesMut::reserve` may double past the cap.
        let grow = buf.capacity().max(MIN_HEAD_BUF).min(room);
        let mut bigger = BytesMut::with_capacity(buf.len() + grow);
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    let spare = (buf.capacity() - buf.len()).min(room);
    let mut limited = buf.limit(spare);
    let left = deadline.saturating_duration_since(Instant::now());
    match fast_timeout(left, stream.read_buf(&mut limited)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(_) => Err(Head::Closed),
        Err(_) => Err(Head::Limit(DownstreamLimit::HeaderTimeout)),
    }
}

/// A complete close-delimited answer, made once.
fn reply(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

static REPLY_408: LazyLock<Vec<u8>> = LazyLock::new(|| {
    reply(
        "408 Request Timeout",
        "408 Request Timeout: the request head took too long\n",
    )
});
static REPLY_431: LazyLock<Vec<u8>> = LazyLock::new(|| {
    reply(
        "431 Request Header Fields Too Large",
        "431 Request Header Fields Too Large: the request head is too big\n",
    )
});

static REPLY_400: LazyLock<Vec<u8>> = LazyLock::new(|| {
    reply(
        "400 Bad Request",
        "400 Bad Request: the request head is malformed\n",
    )
});
static REPLY_405: LazyLock<Vec<u8>> = LazyLock::new(|| {
    reply(
        "405 Method Not Allowed",
        "405 Method Not Allowed: CONNECT is for forward listeners\n",
    )
});

/// The answer Pingora would give `head` before any hook runs (400 for a
/// head it cannot parse, 405 for CONNECT), or `None`. Pingora's own
/// answers name it in `Server:`; tproxyd's own answers name no server, so
/// these are given here instead, with the same parser and header bound.
pub fn refused_head(head: &[u8]) -> Option<u16> {
    parse_head(head).1
}

/// Parses `head` as Pingora does (its header bound): where it ends if it
/// is whole, and the answer Pingora would give it, if any. No end when the
/// parser cannot say yet (more bytes needed) or its verdict waits for the
/// whole head (an error): the incremental [`EndScan`] then finds the end.
/// Where the parser finds an end, the scan finds the same (a test checks).
fn parse_head(head: &[u8]) -> (Option<usize>, Option<u16>) {
    // Uninitialised slots: this runs for every request, and 256 zeroed
    // headers would be 8 KiB written each time.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 256];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(status) => (
            match status {
                httparse::Status::Complete(end) => Some(end),
                httparse::Status::Partial => None,
            },
            (req.method == Some("CONNECT")).then_some(405),
        ),
        // Pingora retries these with the target escaped: its call.
        Err(httparse::Error::Token | httparse::Error::Version) => (None, None),
        Err(_) => (None, Some(400)),
    }
}

/// Sends the 400 or 405 of [`refused_head`], then the connection closes.
/// Returns the status sent (0 if it could not be).
pub async fn answer_refused(stream: &mut Stream, status: u16) -> u16 {
    let reply: &[u8] = if status == 405 {
        &REPLY_405
    } else {
        &REPLY_400
    };
    match fast_timeout(std::time::Duration::from_secs(1), async {
        stream.write_all(reply).await?;
        stream.flush().await
    })
    .await
    {
        Ok(Ok(())) => status,
        _ => 0,
    }
}

/// What the client is told when `limit` ends its connection: 408 or 431
/// (then close); nothing for an idle connection. Returns the status sent.
pub async fn answer_limit(stream: &mut Stream, limit: DownstreamLimit) -> u16 {
    let (status, reply): (u16, &[u8]) = match limit {
        DownstreamLimit::HeaderTimeout => (408, &REPLY_408),
        DownstreamLimit::HeaderTooLarge => (431, &REPLY_431),
        _ => return 0,
    };
    let sent = async {
        stream.write_all(reply).await?;
        stream.flush().await
    };
    // A client that does not read its answer does not hold us either.
    match fast_timeout(std::time::Duration::from_secs(1), sent).await {
        Ok(Ok(())) => status,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        w: &mut ShutdownWatch,
    ) -> Head {
        let wait = std::pin::pin!(shutdown_wait(w));
        read_head(
            stream,
            prefix,
            None,
            limits,
            wait,
            &mut IdleTimer::default(),
        )
        .await
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
                let (Some(end), refused) = parse_head(&buf) else {
                    continue;
                };
                parsed += 1;
                assert_eq!(Some(end), reference_end(&buf), "{buf:?}");
                assert_eq!(refused, refused_head(&buf), "{buf:?}");
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
            let (_tx, mut w) = watch();
            let head = head_of(&mut stream, None, &limits(1000, 1000, 1024), &mut w).await;
            let Head::Ready(bytes, None) = head else {
                panic!("{head:?}")
            };
            assert!(bytes.ends_with(b"\r\n\r\nhi"));
            // A complete head in the prefix needs no read at all.
            let prefix = BytesMut::from(&b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"[..]);
            let head = head_of(&mut stream, Some(prefix), &limits(1, 1, 1024), &mut w).await;
            assert!(matches!(head, Head::Ready(_, None)), "{head:?}");
            // A head over the cap is refused even when it came whole.
            let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
            let prefix = BytesMut::from(big.as_bytes());
            let head = head_of(&mut stream, Some(prefix), &limits(1, 1, 1024), &mut w).await;
            assert!(
                matches!(head, Head::Limit(DownstreamLimit::HeaderTooLarge)),
                "{head:?}"
            );
            // Only empty lines carried over: idle, not a head (the idle
            // deadline applies, and it is quiet).
            let prefix = BytesMut::from(&b"\r\n"[..]);
            let head = head_of(&mut stream, Some(prefix), &limits(1000, 50, 1024), &mut w).await;
            assert!(
                matches!(head, Head::Limit(DownstreamLimit::KeepaliveTimeout)),
                "{head:?}"
            );
        });
    }

    #[test]
    fn a_trickled_head_hits_the_deadline() {
        rt().block_on(async {
            let (mut client, server) = tokio::io::duplex(4096);
            let mut stream: Stream = Box::new(server);
            client.write_all(b"GET / HT").await.unwrap();
            let (_tx, mut w) = watch();
            let started = Instant::now();
            let head = head_of(&mut stream, None, &limits(200, 5000, 1024), &mut w).await;
            assert!(
                matches!(head, Head::Limit(DownstreamLimit::HeaderTimeout)),
                "{head:?}"
            );
            assert!(started.elapsed() >= Duration::from_millis(190));
            assert_eq!(
                answer_limit(&mut stream, DownstreamLimit::HeaderTimeout).await,
                408
            );
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
            let (_tx, mut w) = watch();
            let head = head_of(&mut stream, None, &limits(5000, 5000, 10_000), &mut w).await;
            assert!(
                matches!(head, Head::Limit(DownstreamLimit::HeaderTooLarge)),
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
            let (tx, mut w) = watch();
            let long = limits(5000, 5000, 1024);
            let head = head_of(&mut stream, None, &limits(5000, 100, 1024), &mut w).await;
            assert!(
                matches!(head, Head::Limit(DownstreamLimit::KeepaliveTimeout)),
                "{head:?}"
            );
            assert_eq!(
                answer_limit(&mut stream, DownstreamLimit::KeepaliveTimeout).await,
                0
            );
            let waiting = head_of(&mut stream, None, &long, &mut w);
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
            let (tx, mut w) = watch();
            let long = limits(5000, 5000, 1024);
            let mut wait = std::pin::pin!(shutdown_wait(&mut w));
            let mut idle = IdleTimer::default();
            let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
            // The second head comes late: the waiter is polled meanwhile.
            for delay in [0, 50] {
                let head = read_head(&mut stream, None, None, &long, wait.as_mut(), &mut idle);
                let send = async {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    client.write_all(req).await.unwrap();
                };
                let (head, ()) = tokio::join!(head, send);
                assert!(matches!(head, Head::Ready(_, None)), "{head:?}");
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

    #[test]
    fn heads_pingora_would_refuse_are_told_apart() {
        assert_eq!(refused_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None);
        assert_eq!(
            refused_head(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(405)
        );
        assert_eq!(
            refused_head(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
            Some(400)
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(257));
        assert_eq!(refused_head(many.as_bytes()), Some(400));
        // Left to Pingora, which retries it with the target escaped.
        assert_eq!(refused_head(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), None);
    }
}
