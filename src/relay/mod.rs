//! The byte relay for every opaque path (TLS passthrough after the
//! replayed ClientHello, CONNECT tunnels, the tunnels of non-HTTP
//! connections): both directions until both are done, half-close passed
//! on, an idle timeout so a silent pair does not hold two sockets forever,
//! and exact byte counts however it ends.
//!
//! Between two plain sockets the bytes move in the kernel with splice(2)
//! ([`splice`], pipes from a bounded pool in [`pipes`]); otherwise, when
//! `upstream.relay: copy` rules splicing out, or when no pipe is left,
//! through user space ([`copy`]). [`Relayed::kind`] says which, for the
//! `tproxyd_relay_total` counter.
//!
//! Descriptors: a spliced relay holds six beyond its two sockets (two
//! pipes and two watched duplicates). The pipes are capped by
//! [`pipes::set_limit`]; [`fd_budget`] is the arithmetic the connection
//! limit uses.

mod copy;
pub mod pipes;
mod splice;

use crate::flow::RelayKind;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Writes `bytes` and flushes, within `limit`: the first bytes of a relay
/// (a replayed ClientHello, early tunnel bytes, `200 Connection
/// Established`), so that a peer that never reads cannot hold the
/// connection before the relay's idle timeout applies. False if they could
/// not be sent.
pub async fn send_within<S: AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    bytes: &[u8],
    limit: Duration,
) -> bool {
    use tokio::io::AsyncWriteExt;
    let send = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    matches!(
        pingora_timeout::fast_timeout::fast_timeout(limit, send).await,
        Ok(Ok(()))
    )
}

/// Makes the coming close of `stream` a TCP reset (`SO_LINGER` 0): the
/// cheapest refusal, and the peer learns at once instead of waiting.
pub fn reset_on_close(stream: &pingora_core::protocols::Stream) {
    // SAFETY: the fd belongs to the live `stream`, borrowed only here.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.id()) };
    let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
}

/// How a relay ended, with the bytes moved each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// Bytes client → origin.
    pub up: u64,
    /// Bytes origin → client.
    pub down: u64,
    /// Ended by the idle timeout.
    pub idle: bool,
    /// How the bytes moved.
    pub kind: RelayKind,
}

/// A stream the relay can carry: any async stream, and for plain sockets
/// the descriptor splice(2) may use.
pub trait Endpoint: AsyncRead + AsyncWrite + Unpin {
    /// The socket to splice from and to, when the stream is a plain socket
    /// whose only user-space state is a read buffer (which the relay
    /// drains first) and a write buffer (which it flushes first). `None`
    /// for anything else (TLS, virtual sockets, in-memory streams).
    fn splice_fd(&self) -> Option<RawFd>;
}

/// A Pingora L4 stream: a socket with a rewind buffer, a read buffer and a
/// write buffer in front of it.
type L4Stream = pingora_core::protocols::l4::stream::Stream;

impl Endpoint for L4Stream {
    fn splice_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd()).filter(|fd| *fd >= 0)
    }
}

/// Pingora's boxed stream: spliced only when it is a plain L4 stream (a
/// TLS stream, say, must be read through its session).
impl Endpoint for pingora_core::protocols::Stream {
    fn splice_fd(&self) -> Option<RawFd> {
        self.as_any().downcast_ref::<L4Stream>()?.splice_fd()
    }
}

impl Endpoint for tokio::net::TcpStream {
    fn splice_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

impl Endpoint for tokio::io::DuplexStream {
    fn splice_fd(&self) -> Option<RawFd> {
        None
    }
}

/// The idle clock and the byte counts, shared by both directions.
#[derive(Debug)]
struct Meter {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last byte read.
    last: AtomicU64,
    /// Bytes written to the origin.
    up: AtomicU64,
    /// Bytes written to the client.
    down: AtomicU64,
}

impl Meter {
    fn new() -> Meter {
        Meter {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    /// Something was read: the pair is not idle.
    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// `n` bytes reached the side `counter` counts.
    fn sent(&self, counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// How long nothing has been read.
    fn quiet(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// Relays both directions between client `a` and origin `b` until both
/// are done (half-close is passed on), an error ends it, or neither side
/// has sent anything for `idle`. `prefer` is `upstream.relay`: with
/// `Splice`, two plain sockets are spliced when a pipe pair is available;
/// everything else is copied. The byte counts are what was written to
/// each side, exact however the relay ended.
pub async fn relay<A, B>(a: &mut A, b: &mut B, idle: Duration, prefer: RelayKind) -> Relayed
where
    A: Endpoint + ?Sized,
    B: Endpoint + ?Sized,
{
    let meter = Meter::new();
    let spliced = AtomicBool::new(false);
    let work = async {
        if prefer == RelayKind::Splice {
            if let Some(splicer) = splicer_for(a, b) {
                match drain_both(a, b, &meter).await {
                    Ok(true) => {
                        spliced.store(true, Ordering::Relaxed);
                        let _ = splicer.run(&meter).await;
                        return;
                    }
                    Ok(false) => {} // a flood of buffered bytes: copy them
                    Err(_) => return,
                }
            }
        }
        copy::copy(a, b, &meter).await
    };
    let timed_out = until_idle(work, idle, &meter).await;
    Relayed {
        up: meter.up.load(Ordering::Relaxed),
        down: meter.down.load(Ordering::Relaxed),
        idle: timed_out,
        kind: if spliced.load(Ordering::Relaxed) {
            RelayKind::Splice
        } else {
            RelayKind::Copy
        },
    }
}

/// The splice resources for the pair, if both are plain sockets and they
/// are available.
fn splicer_for<A, B>(a: &A, b: &B) -> Option<splice::Splicer>
where
    A: Endpoint + ?Sized,
    B: Endpoint + ?Sized,
{
    splice::Splicer::new(a.splice_fd()?, b.splice_fd()?)
}

/// Runs `work` to its end, or until nothing has been read for `idle`
/// (true then).
async fn until_idle(
    work: impl std::future::Future<Output = ()>,
    idle: Duration,
    meter: &Meter,
) -> bool {
    tokio::pin!(work);
    let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut work => return false,
            _ = tokio::time::sleep(tick) => {
                if meter.quiet() >= idle {
                    return true;
                }
            }
        }
    }
}

/// Bytes a stream may still hold in user space before splicing starts
/// (rewound bytes, a read buffer) are bounded by Pingora's buffer sizes;
/// more than this means a client is pouring data in faster than it is
/// drained, and the relay stays in user space.
const DRAIN_LIMIT: usize = 1 << 20;

/// Before splicing: writes what each side holds in user space to the
/// other and flushes both, so that no byte is left behind or overtaken.
/// False when a side kept producing (copy instead).
async fn drain_both<A, B>(a: &mut A, b: &mut B, meter: &Meter) -> std::io::Result<bool>
where
    A: Endpoint + ?Sized,
    B: Endpoint + ?Sized,
{
    a.flush().await?;
    b.flush().await?;
    let up = drain(a, b, &meter.up, meter).await?;
    let down = drain(b, a, &meter.down, meter).await?;
    Ok(up && down)
}

/// Moves what `from` can give without waiting to `to`. A read that would
/// wait proves the read buffers empty (a buffered stream answers from its
/// buffer first); end of stream is left for the splice to see again.
async fn drain<R, W>(
    from: &mut R,
    to: &mut W,
    sent: &AtomicU64,
    meter: &Meter,
) -> std::io::Result<bool>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        match read_now(from, &mut buf) {
            Poll::Pending => return Ok(true),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Ready(Ok(0)) => return Ok(true),
            Poll::Ready(Ok(n)) => {
                meter.touch();
                to.write_all(&buf[..n]).await?;
                to.flush().await?;
                meter.sent(sent, n);
                total += n;
                if total > DRAIN_LIMIT {
                    return Ok(false);
                }
            }
        }
    }
}

/// One read that does not wait: what `from` has now, in user space or in
/// the socket.
fn read_now<R: AsyncRead + Unpin + ?Sized>(
    from: &mut R,
    buf: &mut [u8],
) -> Poll<std::io::Result<usize>> {
    let mut rb = ReadBuf::new(buf);
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(from)
        .poll_read(&mut cx, &mut rb)
        .map_ok(|()| rb.filled().len())
}

/// The descriptors splicing may hold with at most `pipes` pipes: at most
/// `pipes / 2` relays splice at once, each holding two pipes (four
/// descriptors) and two socket duplicates, and pooled pipes count within
/// `pipes`; so never more than `3 * pipes` beyond the sockets.
pub fn fd_budget(pipes: usize) -> u64 {
    3 * pipes as u64
}

/// How many pipes to allow, out of `fds` descriptors left for
/// connections, with at most `max_connections` of them: enough for every
/// connection to splice (`2 * max_connections`), but splicing takes at
/// most half of the descriptors (`fd_budget(pipes) <= fds / 2`), so that a
/// low open-file limit still leaves room for connections; relays beyond
/// the pipes copy.
pub fn pipe_limit(fds: u64, max_connections: usize) -> usize {
    let half = usize::try_from(fds / 6).unwrap_or(usize::MAX);
    half.min(max_connections.saturating_mul(2))
}

#[cfg(test)]
mod tests;
