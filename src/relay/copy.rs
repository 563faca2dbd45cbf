//! The user-space relay: tokio's `copy_bidirectional`, through adaptors
//! that keep the idle clock and the exact byte counts. Used when splicing
//! is ruled out (`upstream.relay: copy`), impossible for the pair (not
//! plain sockets), or out of pipes.

use super::Meter;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Copies both ways until both directions are done or either fails.
pub(super) async fn copy<A, B>(a: &mut A, b: &mut B, meter: &Meter<'_>)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut ta = Touch {
        inner: a,
        meter,
        written: meter.down,
    };
    let mut tb = Touch {
        inner: b,
        meter,
        written: meter.up,
    };
    let _ = tokio::io::copy_bidirectional(&mut ta, &mut tb).await;
}

/// Records the time of the last successful read (for the idle timeout) and
/// counts the bytes written to its stream.
struct Touch<'a, S: ?Sized> {
    inner: &'a mut S,
    meter: &'a Meter<'a>,
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
            self.meter.touch();
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
            self.meter.sent(self.written, n);
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
