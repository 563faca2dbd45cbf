//! The kernel relay: socket → pipe → socket with splice(2), so the bytes of
//! an opaque flow are never copied to user space.
//!
//! Readiness comes from tokio: each socket is `dup`ed and the duplicate
//! registered with [`AsyncFd`]. The original descriptor is already in
//! tokio's epoll through Pingora's stream, and epoll keys its entries by
//! (file, descriptor), so the same number cannot be added twice, while a
//! duplicate of the same socket can. Both duplicates are closed when the
//! relay ends, however it ends (they are owned by the [`Splicer`]).
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
use super::Meter;
use nix::fcntl::{splice, SpliceFFlags};
use nix::sys::socket::{shutdown, Shutdown};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU64;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `SPLICE_F_MOVE` (a hint to move pages rather than copy them) and
/// `SPLICE_F_NONBLOCK` (never block on the pipe; the sockets are
/// non-blocking themselves).
const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

/// Everything a spliced relay holds beyond its two sockets: two watched
/// duplicates and two pipes (six descriptors), all released on drop.
#[derive(Debug)]
pub(super) struct Splicer {
    a: AsyncFd<OwnedFd>,
    b: AsyncFd<OwnedFd>,
    up: Lease,
    down: Lease,
}

/// A duplicate of `fd` (close-on-exec) registered with the current tokio
/// runtime; `None` outside one (registering would panic) or when the
/// duplicate or its registration fails.
fn watch(fd: RawFd) -> Option<AsyncFd<OwnedFd>> {
    tokio::runtime::Handle::try_current().ok()?;
    // SAFETY: `fd` belongs to a stream the caller holds for the whole
    // call; it is borrowed only to duplicate it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let dup = borrowed.try_clone_to_owned().ok()?;
    // SAFETY: the `OwnedFd` is owned by the `AsyncFd`, so the descriptor
    // stays open and the same for the registration's whole life.
    unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE | Interest::WRITABLE) }.ok()
}

impl Splicer {
    /// The resources to splice between sockets `a` and `b`, or `None` when
    /// any is missing (no pipe left within the limit, no descriptor, no
    /// runtime to register with): the caller copies instead. Whatever was
    /// taken before the failure is released on return.
    pub(super) fn new(a: RawFd, b: RawFd) -> Option<Splicer> {
        let (up, down) = (Lease::take()?, Lease::take()?);
        Some(Splicer {
            a: watch(a)?,
            b: watch(b)?,
            up,
            down,
        })
    }

    /// Relays both directions until both have ended (each passes its EOF
    /// on as a write shutdown) or either fails. Dropping the future ends it
    /// at once and releases everything.
    pub(super) async fn run(mut self, meter: &Meter<'_>) -> io::Result<()> {
        let up = pump(&self.a, &self.b, &mut self.up, meter, meter.up);
        let down = pump(&self.b, &self.a, &mut self.down, meter, meter.down);
        tokio::try_join!(up, down).map(|_| ())
    }
}

/// One direction, `src` → `pipe` → `dst`, counting into `sent` what
/// reached `dst`.
async fn pump(
    src: &AsyncFd<OwnedFd>,
    dst: &AsyncFd<OwnedFd>,
    pipe: &mut Lease,
    meter: &Meter<'_>,
    sent: &AtomicU64,
) -> io::Result<()> {
    loop {
        let n = fill(src, pipe).await?;
        if n == 0 {
            // Half-close: the peer may still answer the other way.
            return match shutdown(dst.as_raw_fd(), Shutdown::Write) {
                Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        meter.touch();
        pipe.fill = n;
        while pipe.fill > 0 {
            let mut ready = dst.writable().await?;
            let out = ready.try_io(|d| {
                let p = pipe.pipe();
                Ok(splice(&p.r, None, d.get_ref(), None, pipe.fill, FLAGS)?)
            });
            if let Ok(moved) = out {
                let m = moved?;
                pipe.fill -= m;
                meter.sent(sent, m);
            }
        }
    }
}

/// Splices what `src` has into the empty `pipe`: the bytes moved, 0 at
/// end of stream.
async fn fill(src: &AsyncFd<OwnedFd>, pipe: &Lease) -> io::Result<usize> {
    let p = pipe.pipe();
    loop {
        let mut ready = src.readable().await?;
        // EAGAIN (the pipe being empty) means no data: readiness is cleared
        // and we wait for the next edge.
        if let Ok(r) = ready.try_io(|s| Ok(splice(s.get_ref(), None, &p.w, None, p.size, FLAGS)?)) {
            return r;
        }
    }
}
