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
//! Descriptors: a spliced relay holds four beyond its two sockets (two
//! pipes); it waits on the sockets' own registrations ([`Socket`]). The
//! pipes are capped by [`pipes::set_limit`]; [`fd_budget`] is the
//! arithmetic the connection limit uses.

mod copy;
pub mod pipes;
mod splice;

use crate::flow::RelayKind;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};

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

/// A plain socket the relay may splice from and to, waited on through its
/// own registration with the runtime.
#[derive(Clone, Copy)]
pub enum Socket<'a> {
    /// A Pingora L4 stream's socket.
    Pingora(&'a L4Stream),
    /// A tokio socket.
    Tokio(&'a tokio::net::TcpStream),
}

impl Socket<'_> {
    fn raw_fd(&self) -> RawFd {
        match self {
            Socket::Pingora(s) => s.as_raw_fd(),
            Socket::Tokio(s) => s.as_raw_fd(),
        }
    }

    /// The descriptor, for a system call that runs while the socket is
    /// borrowed.
    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor belongs to the stream borrowed by `self`,
        // open for at least as long as the returned borrow.
        unsafe { BorrowedFd::borrow_raw(self.raw_fd()) }
    }

    /// Runs `f` when the socket is ready for `interest`; when `f` fails
    /// with `WouldBlock`, the readiness is cleared and `f` runs again once
    /// the socket is ready.
    async fn io<R>(
        &self,
        interest: Interest,
        f: impl FnMut() -> std::io::Result<R>,
    ) -> std::io::Result<R> {
        match self {
            Socket::Pingora(s) => s.async_io(interest, f).await,
            Socket::Tokio(s) => s.async_io(interest, f).await,
        }
    }
}

/// A stream the relay can carry: any async stream, and for plain sockets
/// the socket splice(2) may use.
pub trait Endpoint: AsyncRead + AsyncWrite + Unpin {
    /// The socket to splice from and to, when the stream is a plain socket
    /// whose only user-space state is a read buffer (which the relay
    /// drains first) and a write buffer (which it flushes first). `None`
    /// for anything else (TLS, virtual sockets, in-memory streams).
    fn splice_socket(&self) -> Option<Socket<'_>>;

    /// Bytes read from the socket but still held in user space, which
    /// must be relayed before the socket's.
    fn buffered(&self) -> usize {
        0
    }
}

/// A Pingora L4 stream: a socket with a rewind buffer, a read buffer and a
/// write buffer in front of it.
type L4Stream = pingora_core::protocols::l4::stream::Stream;

impl Endpoint for L4Stream {
    fn splice_socket(&self) -> Option<Socket<'_>> {
        (self.as_raw_fd() >= 0).then_some(Socket::Pingora(self))
    }
    fn buffered(&self) -> usize {
        self.buffered_read_len()
    }
}

/// Pingora's boxed stream: spliced only when it is a plain L4 stream (a
/// TLS stream, say, must be read through its session).
impl Endpoint for pingora_core::protocols::Stream {
    fn splice_socket(&self) -> Option<Socket<'_>> {
        self.as_any().downcast_ref::<L4Stream>()?.splice_socket()
    }
    fn buffered(&self) -> usize {
        self.as_any()
            .downcast_ref::<L4Stream>()
            .map_or(0, L4Stream::buffered_read_len)
    }
}

impl Endpoint for tokio::net::TcpStream {
    fn splice_socket(&self) -> Option<Socket<'_>> {
        Some(Socket::Tokio(self))
    }
}

impl Endpoint for tokio::io::DuplexStream {
    fn splice_socket(&self) -> Option<Socket<'_>> {
        None
    }
}

/// Bytes a relay wrote each way, readable while it runs (the status page's
/// live flows share them with the relay).
#[derive(Debug, Default)]
pub struct Counts {
    /// Bytes written to the origin.
    pub up: AtomicU64,
    /// Bytes written to the client.
    pub down: AtomicU64,
}

/// The idle clock, and the byte counts shared by both directions.
#[derive(Debug)]
struct Meter<'a> {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last byte read.
    last: AtomicU64,
    /// Bytes written to the origin.
    up: &'a AtomicU64,
    /// Bytes written to the client.
    down: &'a AtomicU64,
}

impl Meter<'_> {
    fn new(counts: &Counts) -> Meter<'_> {
        Meter {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            up: &counts.up,
            down: &counts.down,
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
    relay_counted(a, b, idle, prefer, &Counts::default()).await
}

/// [`relay`], counting into `counts` as the bytes move, so that others can
/// read them meanwhile. The [`Relayed`] counts are this relay's own (what
/// `counts` held before is not in them).
pub async fn relay_counted<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
    prefer: RelayKind,
    counts: &Counts,
) -> Relayed
where
    A: Endpoint + ?Sized,
    B: Endpoint + ?Sized,
{
    let before = (
        counts.up.load(Ordering::Relaxed),
        counts.down.load(Ordering::Relaxed),
    );
    let meter = Meter::new(counts);
    let splicer = match prefer {
        RelayKind::Splice => splicer_for(a, b),
        RelayKind::Copy => None,
    };
    let kind = match splicer {
        Some(_) => RelayKind::Splice,
        None => RelayKind::Copy,
    };
    let work = async {
        match splicer {
            Some(splicer) => {
                if drain_both(a, b, &meter).await.is_ok() {
                    if let (Some(sa), Some(sb)) = (a.splice_socket(), b.splice_socket()) {
                        let _ = splicer.run(sa, sb, &meter).await;
                    }
                }
            }
            None => copy::copy(a, b, &meter).await,
        }
    };
    let timed_out = until_idle(work, idle, &meter).await;
    Relayed {
        up: meter.up.load(Ordering::Relaxed).wrapping_sub(before.0),
        down: meter.down.load(Ordering::Relaxed).wrapping_sub(before.1),
        idle: timed_out,
        kind,
    }
}

/// The splice resources for the pair, if both are plain sockets and they
/// are available.
fn splicer_for<A, B>(a: &A, b: &B) -> Option<splice::Splicer>
where
    A: Endpoint + ?Sized,
    B: Endpoint + ?Sized,
{
    a.splice_socket()?;
    b.splice_socket()?;
    splice::Splicer::new()
}

/// Runs `work` to its end, or until nothing has been read for `idle`
/// (true then).
async fn until_idle(
    work: impl std::future::Future<Output = ()>,
    idle: Duration,
    meter: &Meter<'_>,
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

/// Before splicing: flushes both sides' write buffers and writes what
/// each side holds in user space (read but not yet relayed) to the other,
/// so that no byte is left behind or overtaken by the kernel's.
async fn drain_both<A, B>(a: &mut A, b: &mut B, meter: &Meter<'_>) -> std::io::Result<()>
where
    A: Endpoint + ?Sized,
    B: Endpoint + ?Sized,
{
    a.flush().await?;
    b.flush().await?;
    drain(a, b, meter.up, meter).await?;
    drain(b, a, meter.down, meter).await
}

/// Moves the bytes `from` holds in user space to `to`. Reads return those
/// bytes before touching the socket, so reading no more than
/// [`Endpoint::buffered`] never takes a byte the splice should move.
async fn drain<R, W>(
    from: &mut R,
    to: &mut W,
    sent: &AtomicU64,
    meter: &Meter<'_>,
) -> std::io::Result<()>
where
    R: Endpoint + ?Sized,
    W: Endpoint + ?Sized,
{
    let mut buf = Vec::new();
    loop {
        let left = from.buffered();
        if left == 0 {
            return Ok(());
        }
        buf.resize(left.min(64 * 1024), 0);
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        meter.touch();
        // Counted write by write, so the count is exact if one fails.
        let mut done = 0;
        while done < n {
            let w = to.write(&buf[done..n]).await?;
            if w == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            done += w;
            meter.sent(sent, w);
        }
        to.flush().await?;
    }
}

/// The descriptors splicing may hold with at most `pipes` pipes: two per
/// pipe, in use or pooled; a relay holds nothing else beyond its sockets.
pub fn fd_budget(pipes: usize) -> u64 {
    2 * pipes as u64
}

/// How many pipes to allow, out of `fds` descriptors left for
/// connections, with at most `max_connections` of them: enough for every
/// connection to splice (`2 * max_connections`), but splicing takes at
/// most a quarter of the descriptors (`fd_budget(pipes) <= fds / 4`), so
/// that a low open-file limit still leaves most of them to connections
/// (relays beyond the pipes copy, which costs CPU, not connections).
pub fn pipe_limit(fds: u64, max_connections: usize) -> usize {
    let quarter = usize::try_from(fds / 8).unwrap_or(usize::MAX);
    quarter.min(max_connections.saturating_mul(2))
}

#[cfg(test)]
mod tests;
