//! The kernel relay: socket → pipe → socket with splice(2), so the bytes of
//! an opaque flow are never copied to user space.
//!
//! Readiness comes from each socket's own registration with the runtime
//! ([`Socket::io`]: tokio's `async_io`, for a Pingora stream through
//! `Stream::async_io`): no duplicate descriptor, no second registration, so
//! a packet wakes the runtime once, and a relay costs no system call to set
//! up beyond its pipes (pooled).
//!
//! Each direction owns a pipe and runs fill-then-drain: it splices what
//! the source has into the *empty* pipe, then splices the pipe out until it
//! is empty again. The pipe being empty before every fill makes `EAGAIN`
//! on the fill unambiguous (the socket has nothing; a pipe can be "full"
//! with far fewer bytes than its size, one slot per socket buffer
//! fragment), and its fill level is always known, so only pipes known to
//! be empty go back to the pool.
//!
//! `SIGPIPE`: splicing to a socket the peer reset raises it; Rust's runtime
//! ignores it, so the splice fails with `EPIPE` and the relay ends.

use super::pipes::Lease;
use super::{Meter, Socket};
use nix::fcntl::{splice, SpliceFFlags};
use nix::sys::socket::{shutdown, Shutdown};
use std::io;
use std::sync::atomic::AtomicU64;
use tokio::io::Interest;

/// `SPLICE_F_MOVE` (a hint to move pages rather than copy them) and
/// `SPLICE_F_NONBLOCK` (never block on the pipe; the sockets are
/// non-blocking themselves).
const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

/// What a spliced relay holds beyond its two sockets: a pipe per
/// direction (four descriptors), back to the pool or closed on drop.
#[derive(Debug)]
pub(super) struct Splicer {
    up: Lease,
    down: Lease,
}

impl Splicer {
    /// The pipes to splice with, or `None` when none is left within the
    /// limit (or the kernel refuses one): the caller copies instead. A
    /// pipe taken before the failure is released on return.
    pub(super) fn new() -> Option<Splicer> {
        Some(Splicer {
            up: Lease::take()?,
            down: Lease::take()?,
        })
    }

    /// Relays both directions between `a` and `b` until both have ended
    /// (each passes its EOF on as a write shutdown) or either fails.
    /// Dropping the future ends it at once and releases everything.
    pub(super) async fn run(
        mut self,
        a: Socket<'_>,
        b: Socket<'_>,
        meter: &Meter<'_>,
    ) -> io::Result<()> {
        let up = pump(a, b, &mut self.up, meter, meter.up);
        let down = pump(b, a, &mut self.down, meter, meter.down);
        tokio::try_join!(up, down).map(|_| ())
    }
}

/// One direction, `src` → `pipe` → `dst`, counting into `sent` what
/// reached `dst`.
async fn pump(
    src: Socket<'_>,
    dst: Socket<'_>,
    pipe: &mut Lease,
    meter: &Meter<'_>,
    sent: &AtomicU64,
) -> io::Result<()> {
    loop {
        let n = fill(src, pipe).await?;
        if n == 0 {
            // Half-close: the peer may still answer the other way.
            return match shutdown(dst.raw_fd(), Shutdown::Write) {
                Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        meter.touch();
        pipe.fill = n;
        while pipe.fill > 0 {
            let p = pipe.pipe();
            // EAGAIN: the socket's send buffer is full; wait for room.
            let moved = dst
                .io(Interest::WRITABLE, || {
                    Ok(splice(&p.r, None, dst.fd(), None, pipe.fill, FLAGS)?)
                })
                .await?;
            pipe.fill -= moved;
            meter.sent(sent, moved);
        }
    }
}

/// Splices what `src` has into the empty `pipe`: the bytes moved, 0 at
/// end of stream. EAGAIN (the pipe being empty) means the socket has
/// nothing: its readiness is cleared and the splice waits for the next.
async fn fill(src: Socket<'_>, pipe: &Lease) -> io::Result<usize> {
    let p = pipe.pipe();
    src.io(Interest::READABLE, || {
        Ok(splice(src.fd(), None, &p.w, None, p.size, FLAGS)?)
    })
    .await
}
