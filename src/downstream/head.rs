//! Request-head limits on the client stream: a total deadline for each
//! request head (from its first byte to its end), an idle deadline before
//! each request, and a cap on the head's size.
//!
//! Pingora's HTTP/1 server bounds each *read* of a head, not the head (a
//! client trickling a byte at a time is never cut off), and only caps it at
//! a fixed 1 MiB, growing its buffer toward that. So the client stream is
//! wrapped in a [`HeadGuard`]: armed by the connection loop before each
//! request (see `crate::proxy`), disarmed once Pingora has parsed the head.
//! While armed it hands Pingora at most `max_header_bytes + 1` bytes, so
//! Pingora's head buffer stays within about that; a read attempt beyond it,
//! or past a deadline, is answered here (431 / 408, `Connection: close`)
//! and the stream reports an error, which ends the connection.

use super::Downstream;
use crate::flow::DownstreamLimit;
use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

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

/// Shared between a connection's loop (which arms it before each request
/// and reads what fired) and its [`HeadGuard`].
#[derive(Debug, Default)]
pub struct HeadWatch {
    generation: AtomicU32,
    armed: AtomicBool,
    fired: AtomicU8,
}

impl HeadWatch {
    /// A new watch, disarmed.
    pub fn new() -> Arc<HeadWatch> {
        Arc::new(HeadWatch::default())
    }

    /// A new request may start: the idle deadline runs from the next read.
    pub fn arm(&self) {
        self.fired.store(0, Ordering::Relaxed);
        self.armed.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The head is complete: the rest is body and responses.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::Release);
    }

    /// The limit that ended the connection, if one did.
    pub fn fired(&self) -> Option<DownstreamLimit> {
        match self.fired.load(Ordering::Acquire) {
            0 => None,
            n => DownstreamLimit::ALL.get(usize::from(n) - 1).copied(),
        }
    }

    fn fire(&self, limit: DownstreamLimit) {
        self.fired.store(limit.index() as u8 + 1, Ordering::Release);
    }
}

/// Handed to Pingora as the connection's user context with each request,
/// so the proxy can disarm the guard as soon as the head is parsed (Pingora
/// passes it to `ProxyHttp::on_connection_reuse` right after reading the
/// head, before any body byte is read).
pub struct HeadToken(pub Arc<HeadWatch>);

/// Where a guarded stream is in the current request's head.
#[derive(Debug)]
enum Phase {
    /// Not armed: bytes pass untouched.
    Pass,
    /// Armed, nothing of the head yet: the idle deadline runs.
    Idle,
    /// Reading a head: the head deadline runs, bytes are counted.
    Head,
    /// A limit fired: sending its answer (`written` bytes so far).
    Replying(&'static [u8], usize),
    /// A limit fired and was answered: every read fails.
    Closed,
}

/// A client stream with request-head limits; see the module docs.
#[derive(Debug)]
pub struct HeadGuard {
    inner: Stream,
    watch: Arc<HeadWatch>,
    seen: u32,
    phase: Phase,
    count: usize,
    deadline: Pin<Box<Sleep>>,
    limits: Downstream,
}

impl HeadGuard {
    /// Wraps `inner`; `watch` arms and disarms it.
    pub fn wrap(inner: Stream, watch: Arc<HeadWatch>, limits: Downstream) -> Stream {
        Box::new(HeadGuard {
            inner,
            seen: watch.generation.load(Ordering::Acquire),
            watch,
            phase: Phase::Pass,
            count: 0,
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
            limits,
        })
    }

    /// Follows arm / disarm of the watch.
    fn sync(&mut self) {
        let generation = self.watch.generation.load(Ordering::Acquire);
        if generation != self.seen {
            self.seen = generation;
            self.phase = Phase::Idle;
            self.count = 0;
            let idle = self.limits.keepalive_timeout;
            self.deadline.as_mut().reset(Instant::now() + idle);
        }
        if matches!(self.phase, Phase::Idle | Phase::Head)
            && !self.watch.armed.load(Ordering::Acquire)
        {
            self.phase = Phase::Pass;
        }
    }

    fn fire(&mut self, limit: DownstreamLimit) {
        self.watch.fire(limit);
        self.phase = match limit {
            DownstreamLimit::HeaderTimeout => Phase::Replying(&REPLY_408, 0),
            DownstreamLimit::HeaderTooLarge => Phase::Replying(&REPLY_431, 0),
            _ => Phase::Closed,
        };
    }

    /// Writes the pending answer; ready once it is out (or cannot be).
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while let Phase::Replying(reply, written) = self.phase {
            if written == reply.len() {
                let _ = ready!(Pin::new(&mut self.inner).poll_flush(cx));
                self.phase = Phase::Closed;
                break;
            }
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &reply[written..])) {
                Ok(n) if n > 0 => self.phase = Phase::Replying(reply, written + n),
                _ => self.phase = Phase::Closed,
            }
        }
        Poll::Ready(())
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "request head limit reached")
}

impl AsyncRead for HeadGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.sync();
        loop {
            match this.phase {
                Phase::Pass => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Phase::Closed => return Poll::Ready(Err(closed())),
                Phase::Replying(..) => ready!(this.poll_reply(cx)),
                Phase::Idle | Phase::Head => {
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        let limit = match this.phase {
                            Phase::Idle => DownstreamLimit::KeepaliveTimeout,
                            _ => DownstreamLimit::HeaderTimeout,
                        };
                        this.fire(limit);
                        continue;
                    }
                    // More than max bytes were handed over and Pingora still
                    // wants more: the head is too large.
                    let max = this.limits.max_header_bytes;
                    if this.count > max {
                        this.fire(DownstreamLimit::HeaderTooLarge);
                        continue;
                    }
                    let n = {
                        let mut limited = buf.take(max + 1 - this.count);
                        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
                        limited.filled().len()
                    };
                    // SAFETY: the inner stream initialised and filled these
                    // `n` bytes of `buf`'s unfilled part (as in tokio's Take).
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    if n > 0 && matches!(this.phase, Phase::Idle) {
                        this.phase = Phase::Head;
                        let head = this.limits.header_timeout;
                        this.deadline.as_mut().reset(Instant::now() + head);
                    }
                    this.count += n;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeadGuard {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadGuard {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadGuard {}

impl GetTimingDigest for HeadGuard {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadGuard {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadGuard {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeadGuard {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    #[test]
    fn a_trickled_head_gets_408_at_the_deadline() {
        rt().block_on(async {
            let (mut client, server) = tokio::io::duplex(4096);
            let watch = HeadWatch::new();
            let mut guarded =
                HeadGuard::wrap(Box::new(server), watch.clone(), limits(200, 5000, 1024));
            watch.arm();
            client.write_all(b"GET / HT").await.unwrap();
            let mut buf = [0u8; 64];
            let started = Instant::now();
            assert_eq!(guarded.read(&mut buf).await.unwrap(), 8);
            let e = guarded.read(&mut buf).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert!(started.elapsed() >= Duration::from_millis(190));
            assert_eq!(watch.fired(), Some(DownstreamLimit::HeaderTimeout));
            let mut reply = Vec::new();
            drop(guarded);
            client.read_to_end(&mut reply).await.unwrap();
            assert!(reply.starts_with(b"HTTP/1.1 408 "), "{reply:?}");
            let text = String::from_utf8(reply).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.contains(&format!("Content-Length: {}", body.len())),
                "{text}"
            );
        });
    }

    #[test]
    fn a_head_over_the_cap_gets_431_and_no_more_than_cap_plus_one_bytes() {
        rt().block_on(async {
            let (mut client, server) = tokio::io::duplex(8192);
            let watch = HeadWatch::new();
            let mut guarded =
                HeadGuard::wrap(Box::new(server), watch.clone(), limits(5000, 5000, 1024));
            watch.arm();
            client.write_all(&[b'a'; 4000]).await.unwrap();
            let mut got = 0;
            let mut buf = [0u8; 512];
            let e = loop {
                match guarded.read(&mut buf).await {
                    Ok(n) => got += n,
                    Err(e) => break e,
                }
            };
            assert_eq!(got, 1025);
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert_eq!(watch.fired(), Some(DownstreamLimit::HeaderTooLarge));
            drop(guarded);
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            let text = String::from_utf8(reply).unwrap();
            assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.contains(&format!("Content-Length: {}", body.len())),
                "{text}"
            );
        });
    }

    #[test]
    fn idle_before_a_request_closes_quietly_and_disarmed_streams_pass() {
        rt().block_on(async {
            let (mut client, server) = tokio::io::duplex(4096);
            let watch = HeadWatch::new();
            let mut guarded =
                HeadGuard::wrap(Box::new(server), watch.clone(), limits(5000, 100, 16));
            // Disarmed: no limits at all.
            client.write_all(&[b'x'; 100]).await.unwrap();
            let mut buf = [0u8; 200];
            assert_eq!(guarded.read(&mut buf).await.unwrap(), 100);
            watch.arm();
            let e = guarded.read(&mut buf).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert_eq!(watch.fired(), Some(DownstreamLimit::KeepaliveTimeout));
            drop(guarded);
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            assert!(reply.is_empty(), "an idle close says nothing");
        });
    }
}
