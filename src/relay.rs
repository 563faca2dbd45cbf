//! The byte relay for every opaque path (TLS passthrough after the
//! replayed ClientHello, CONNECT tunnels): both directions until both are
//! done, half-close passed on, and an idle timeout so a silent pair does
//! not hold two sockets forever.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
}

/// Relays both directions between client `a` and origin `b` until both
/// are done (half-close is passed on), an error ends it, or neither side
/// has sent anything for `idle`. The byte counts are what was written to
/// each side, exact however the relay ended.
pub async fn relay<A, B>(a: &mut A, b: &mut B, idle: Duration) -> Relayed
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let epoch = Instant::now();
    let last = AtomicU64::new(0);
    let (to_client, to_origin) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut ta, mut tb) = (
        Touch {
            inner: a,
            epoch,
            last: &last,
            written: &to_client,
        },
        Touch {
            inner: b,
            epoch,
            last: &last,
            written: &to_origin,
        },
    );
    let copy = tokio::io::copy_bidirectional(&mut ta, &mut tb);
    tokio::pin!(copy);
    let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let timed_out = loop {
        tokio::select! {
            _ = &mut copy => break false,
            _ = tokio::time::sleep(tick) => {
                let quiet = epoch.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if quiet >= idle {
                    break true;
                }
            }
        }
    };
    Relayed {
        up: to_origin.load(Ordering::Relaxed),
        down: to_client.load(Ordering::Relaxed),
        idle: timed_out,
    }
}

/// Records the time of the last successful read (for the idle timeout) and
/// counts the bytes written to its stream.
struct Touch<'a, S: ?Sized> {
    inner: &'a mut S,
    epoch: Instant,
    last: &'a AtomicU64,
    written: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Touch<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last
                .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Touch<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn relays_both_ways_with_half_close_and_counts_exactly() {
        rt().block_on(async {
            let (mut client, mut a) = tokio::io::duplex(64);
            let (mut b, mut origin) = tokio::io::duplex(64);
            let relay =
                tokio::spawn(async move { relay(&mut a, &mut b, Duration::from_secs(5)).await });
            client.write_all(&[7u8; 1000]).await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            origin.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, vec![7u8; 1000]);
            origin.write_all(b"reply").await.unwrap();
            origin.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"reply");
            let r = relay.await.unwrap();
            assert_eq!(
                r,
                Relayed {
                    up: 1000,
                    down: 5,
                    idle: false
                }
            );
        });
    }

    #[test]
    fn a_silent_pair_is_ended_by_the_idle_timeout_with_its_counts() {
        rt().block_on(async {
            let (mut client, mut a) = tokio::io::duplex(64);
            let (mut b, mut origin) = tokio::io::duplex(64);
            client.write_all(b"hello").await.unwrap();
            let r = relay(&mut a, &mut b, Duration::from_millis(200)).await;
            assert_eq!(
                r,
                Relayed {
                    up: 5,
                    down: 0,
                    idle: true
                }
            );
            let mut got = [0u8; 5];
            origin.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hello");
        });
    }
}
