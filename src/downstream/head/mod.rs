//! Reading a request head with the client-side limits: an idle deadline
//! before it, a total deadline from its first byte to its end, and a cap on
//! its size.
//!
//! Pingora's HTTP/1 server bounds each *read* of a head, not the head (a
//! client trickling a byte at a time is never cut off), and only caps it at
//! a fixed 1 MiB, doubling its buffer toward that. So each head is read
//! here first and handed to Pingora as the session's "pipelined prefix",
//! which Pingora parses without reading again. While a connection waits for
//! a request it holds no buffer (it waits for readability), nor Pingora's
//! request future; while a head arrives its buffer grows to at most
//! `max_header_bytes + 1` bytes.

mod parse;

use super::idle::Idle;
use super::reclaim::Waiting;
use super::reply::HeadRefusal;
use super::Downstream;
use bytes::{BufMut, BytesMut};
use futures::FutureExt;
pub use parse::{parse_head, HeadKind, Parsed};
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_timeout::fast_timeout::fast_timeout;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// The buffer a head gets when its first bytes are there (most fit); it
/// grows by doubling up to `max_header_bytes + 1`.
const MIN_HEAD_BUF: usize = 4096;

/// What reading the next head gave.
#[derive(Debug)]
pub enum Head {
    /// A complete head, and any bytes read after it (body, more requests).
    Ready(BytesMut, HeadKind),
    /// A head refused before Pingora sees it.
    Refused(HeadRefusal),
    /// The client closed (or reset) the connection, or the process is
    /// shutting down: close quietly.
    Closed,
    /// No request within `keepalive_timeout`: close quietly.
    Idle,
}

/// How many bytes at the start of `buf` are empty lines (CR and LF),
/// which RFC 9112 §2.2 says to ignore before a request. The one place
/// they are skipped.
pub fn empty_lines(buf: &[u8]) -> usize {
    buf.iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len())
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
            self.pos += empty_lines(&buf[self.pos..]);
            if self.pos == buf.len() {
                return false;
            }
            self.content = true;
            self.newline = false;
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

/// A head whose end is at `end` in `buf`: ready, or refused as too large
/// or malformed (`kind` from a parse of the whole head when known).
fn whole(buf: BytesMut, end: usize, max: usize, parsed: Option<Parsed>) -> Head {
    // The head itself, not what came after it, must fit the cap.
    if end > max {
        return Head::Refused(HeadRefusal::TooLarge);
    }
    match parsed.unwrap_or_else(|| parse_head(&buf)).kind {
        Some(kind) => Head::Ready(buf, kind),
        None => Head::Refused(HeadRefusal::Malformed),
    }
}

/// Reads the next request head from `stream`, starting with `prefix` (bytes
/// of it already read, since `started` when known). Waits at most
/// `keepalive_timeout` for a first byte, timed by the connection's `idle`
/// timer (and gives up at once when `shutdown`, the connection's wait for
/// the shutdown signal, ends meanwhile), then at most `header_timeout` for
/// the rest, and never buffers more than `max_header_bytes + 1` bytes.
/// Under pressure both waits are the shorter pressure timeouts.
pub async fn read_head<S: Future + ?Sized>(
    stream: &mut Stream,
    prefix: Option<BytesMut>,
    started: Option<Instant>,
    limits: &Downstream,
    shutdown: Pin<&mut S>,
    idle: &mut Idle,
) -> Head {
    // Empty lines between requests leave the connection idle, not half-way
    // through a head; dropped, not cleared: the wait holds no buffer.
    let mut buf = match prefix {
        Some(p) if empty_lines(&p) < p.len() => p,
        empty => {
            drop(empty);
            match first_bytes(stream, None, limits, shutdown, idle).await {
                Ok(first) => first,
                Err(FirstRead::Closed) => return Head::Closed,
                Err(FirstRead::Silent) => return Head::Idle,
            }
        }
    };
    // Most heads are whole in their first read: then one parse finds both
    // the end and the verdict. Tried once per head, never again as more
    // bytes come, so a head that trickles in is not parsed over and over.
    let parsed = parse_head(&buf);
    if let Some(end) = parsed.end {
        return whole(buf, end, limits.max_header_bytes, Some(parsed));
    }
    let mut scan = EndScan::default();
    // Set when the head turns out to need more reads (most come whole):
    // the clock is read only then.
    let mut began = None;
    loop {
        if scan.complete(&buf) {
            return whole(buf, scan.pos, limits.max_header_bytes, None);
        }
        let began = *began.get_or_insert_with(|| started.unwrap_or_else(Instant::now));
        let max = limits.max_header_bytes;
        if let Err(head) = read_more_in_time(stream, &mut buf, began, limits, max, idle).await {
            return head;
        }
    }
}

/// Why no first byte came.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FirstRead {
    /// The client closed, the process is shutting down, or the idle
    /// connection was reclaimed for a new one.
    Closed,
    /// Nothing arrived within the wait.
    Silent,
}

/// Waits for the first bytes of a request (giving up when `shutdown` ends:
/// a wait for the shutdown signal) and returns them in a buffer sized for a
/// head. The wait is `fixed` when given, else `keepalive_timeout`, or the
/// pressure one when that is shorter and pressure is on (also when it
/// comes on meanwhile); under pressure the wait may be reclaimed.
///
/// The wait holds no buffer: it waits for the socket to become readable
/// and only then allocates, so an idle keep-alive connection costs its
/// task and socket, not a head buffer. Nor does it register a timer or a
/// shutdown waiter per request: `idle` holds the connection's running
/// timer, and `shutdown` is made once per connection ([`shutdown_wait`]).
pub(super) async fn first_bytes<S: Future + ?Sized>(
    stream: &mut Stream,
    fixed: Option<Duration>,
    limits: &Downstream,
    mut shutdown: Pin<&mut S>,
    idle: &mut Idle,
) -> Result<BytesMut, FirstRead> {
    let since = Instant::now();
    let max = limits.max_header_bytes;
    let wait = loop {
        let wait = until_readable(stream, since, fixed, limits, shutdown.as_mut(), idle).await?;
        let mut buf = BytesMut::with_capacity(MIN_HEAD_BUF.min(max + 1));
        let mut limited = (&mut buf).limit(MIN_HEAD_BUF.min(max + 1));
        // The socket is readable, so the bytes are almost always there:
        // one read, without a timer or the shutdown wait around it.
        match stream.read_buf(&mut limited).now_or_never() {
            Some(Ok(n)) if n > 0 => return Ok(buf),
            Some(_) => return Err(FirstRead::Closed),
            // Readiness was stale (a new socket starts out "readable"):
            // the failed read cleared it, so wait again, without a buffer.
            None if is_socket(stream) => {}
            None => break wait,
        }
    };
    // A stream that cannot say when it is readable: the read has to wait,
    // within what is left of `wait`.
    let mut buf = BytesMut::with_capacity(MIN_HEAD_BUF.min(max + 1));
    let mut limited = (&mut buf).limit(MIN_HEAD_BUF.min(max + 1));
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

/// The wait of [`first_bytes`] until `stream` is readable; the length of
/// the wait that applied.
async fn until_readable<S: Future + ?Sized>(
    stream: &Stream,
    since: Instant,
    fixed: Option<Duration>,
    limits: &Downstream,
    mut shutdown: Pin<&mut S>,
    idle: &mut Idle,
) -> Result<Duration, FirstRead> {
    loop {
        let pressure = idle.pressure();
        let wait = fixed.unwrap_or_else(|| limits.keepalive(pressure));
        // Reclaimable while it waits, under pressure only.
        let waiting = if pressure { idle.enter(since) } else { None };
        let reclaimed = async {
            match &waiting {
                Some(w) => w.reclaimed().await,
                None => std::future::pending().await,
            }
        };
        let Idle { timer, watch, .. } = &mut *idle;
        let woke = tokio::select! {
            biased;
            r = readable(stream) => Some(r.is_ok()),
            _ = timer.expired(since, wait) => None,
            _ = shutdown.as_mut() => Some(false),
            _ = reclaimed, if waiting.is_some() => Some(false),
            // Pressure came on: wait again, shorter and reclaimable.
            _ = &mut *watch, if !pressure => continue,
        };
        // Taken for a newcomer just as it woke: close all the same.
        if waiting.is_some_and(Waiting::leave) {
            return Err(FirstRead::Closed);
        }
        return match woke {
            Some(true) => Ok(wait),
            Some(false) => Err(FirstRead::Closed),
            None => Err(FirstRead::Silent),
        };
    }
}

/// Reads more of a head that began at `began` into `buf` (never past
/// `max + 1` bytes) within the header timeout in force: the pressure one
/// when it is shorter and pressure is on, also when it comes on meanwhile.
pub(super) async fn read_more_in_time(
    stream: &mut Stream,
    buf: &mut BytesMut,
    began: Instant,
    limits: &Downstream,
    max: usize,
    idle: &mut Idle,
) -> Result<(), Head> {
    loop {
        let pressure = idle.pressure();
        let deadline = began + limits.header_time(pressure);
        tokio::select! {
            biased;
            r = read_more(stream, buf, deadline, max) => return r,
            _ = &mut idle.watch, if !pressure => {}
        }
    }
}

/// Ends when the process starts shutting down (or the signal's sender is
/// gone). Made once per connection and polled by each wait for a request:
/// a fresh `changed()` per request registered and removed a waiter each
/// time. Once it has ended the connection closes; it is not polled again.
pub async fn shutdown_wait(mut watch: ShutdownWatch) {
    let _ = watch.changed().await;
}

type L4Stream = pingora_core::protocols::l4::stream::Stream;

/// Whether `stream` says when it is readable (a plain socket does).
fn is_socket(stream: &Stream) -> bool {
    stream.as_any().is::<L4Stream>()
}

/// Until `stream` has bytes to read (or has ended). Streams that cannot
/// say (not a plain socket) are taken as readable: the read then waits.
async fn readable(stream: &Stream) -> std::io::Result<()> {
    match stream.as_any().downcast_ref::<L4Stream>() {
        Some(l4) => std::future::poll_fn(|cx| l4.poll_read_ready(cx)).await,
        None => Ok(()),
    }
}

/// Reads more of a head into `buf` by `deadline`, never past `max + 1`
/// bytes; `Err` with how the head ended otherwise. Cancel-safe: nothing
/// read is lost when it is cut short.
async fn read_more(
    stream: &mut Stream,
    buf: &mut BytesMut,
    deadline: Instant,
    max: usize,
) -> Result<(), Head> {
    if buf.len() > max {
        return Err(Head::Refused(HeadRefusal::TooLarge));
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
        Err(_) => Err(Head::Refused(HeadRefusal::TooSlow)),
    }
}

#[cfg(test)]
mod tests;
