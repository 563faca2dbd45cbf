//! The pipes splice(2) moves bytes through, as a bounded resource.
//!
//! A spliced relay needs one pipe per direction (bytes in flight one way
//! must not wait behind the other way's). A pipe is two descriptors and
//! kernel memory, so:
//! - the process holds at most [`limit`] pipes, in use or pooled
//!   ([`set_limit`], from the descriptor reserve `config` computes); when none is
//!   left, the relay falls back to copying instead of failing;
//! - each thread keeps up to [`IDLE_PER_THREAD`] idle pipes for reuse, so a
//!   busy thread does not pay `pipe2` + `fcntl` per relay;
//! - a pipe goes back to the pool only when it is known to be empty; one
//!   that may still hold bytes (an error, a cancelled relay) is closed,
//!   so no byte of one relay can ever surface in another.

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The size asked for with `F_SETPIPE_SZ`: four times the default, so a
/// bulk transfer moves up to 256 KiB per splice pair. Best effort: above
/// `/proc/sys/fs/pipe-user-pages-soft` the kernel refuses and the pipe
/// keeps its (possibly smaller) size, which is then what is used.
pub const PIPE_SIZE: usize = 256 * 1024;

/// Idle pipes kept per thread.
pub const IDLE_PER_THREAD: usize = 16;

/// Pipes the process may hold when nobody set a limit (unit tests, the
/// library used on its own).
const DEFAULT_LIMIT: usize = 1024;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_LIMIT);
static LIVE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static IDLE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// Caps the pipes the process holds (in use and pooled); 0 disables
/// splicing. Each pipe is two descriptors.
pub fn set_limit(pipes: usize) {
    LIMIT.store(pipes, Ordering::Relaxed);
}

/// The cap set by [`set_limit`].
pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Pipes held now, in use or pooled.
pub fn held() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// A non-blocking pipe; its slot in [`LIVE`] is released when dropped.
#[derive(Debug)]
pub struct Pipe {
    /// The read end.
    pub r: OwnedFd,
    /// The write end.
    pub w: OwnedFd,
    /// Its capacity in bytes.
    pub size: usize,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pipe {
    /// A new pipe if the limit allows one.
    fn open() -> Option<Pipe> {
        if LIVE.fetch_add(1, Ordering::Relaxed) >= limit() {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let (r, w) = match nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC) {
            Ok(p) => p,
            Err(_) => {
                LIVE.fetch_sub(1, Ordering::Relaxed);
                return None;
            }
        };
        let size_arg = i32::try_from(PIPE_SIZE).unwrap_or(i32::MAX);
        let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(size_arg));
        let size = fcntl(&w, FcntlArg::F_GETPIPE_SZ).map_or(4096, |n| n.max(4096) as usize);
        Some(Pipe { r, w, size })
    }
}

/// A pipe lent to one direction of a relay; back to the pool on drop if
/// empty, else closed.
#[derive(Debug)]
pub struct Lease {
    pipe: Option<Pipe>,
    /// Bytes in the pipe now, kept by the relay.
    pub fill: usize,
}

impl Lease {
    /// A pooled pipe, or a new one within the limit; `None` when the limit
    /// is reached (or the kernel refuses a pipe).
    pub fn take() -> Option<Lease> {
        let pooled = IDLE.try_with(|idle| idle.borrow_mut().pop()).ok().flatten();
        let pipe = pooled.or_else(Pipe::open)?;
        Some(Lease {
            pipe: Some(pipe),
            fill: 0,
        })
    }

    /// The pipe.
    pub fn pipe(&self) -> &Pipe {
        self.pipe
            .as_ref()
            .expect("a lease holds its pipe until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(pipe) = self.pipe.take() else {
            return;
        };
        if self.fill != 0 {
            return; // dropped: may hold another relay's bytes
        }
        let _ = IDLE.try_with(move |idle| {
            let mut idle = idle.borrow_mut();
            if idle.len() < IDLE_PER_THREAD {
                idle.push(pipe);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_here() -> usize {
        IDLE.with(|idle| idle.borrow().len())
    }

    #[test]
    fn pipes_are_pooled_when_empty_and_closed_when_not() {
        // Its own thread: a fresh pool that no other test touches.
        std::thread::spawn(|| {
            let a = Lease::take().expect("a pipe");
            assert!(a.pipe().size >= 4096);
            drop(a);
            assert_eq!(idle_here(), 1, "an empty pipe is pooled");
            let mut b = Lease::take().expect("the pooled pipe");
            assert_eq!(idle_here(), 0, "the pooled pipe is reused");
            b.fill = 1;
            drop(b);
            assert_eq!(idle_here(), 0, "a pipe that may hold bytes is closed");
            let many: Vec<_> = (0..IDLE_PER_THREAD + 3)
                .filter_map(|_| Lease::take())
                .collect();
            drop(many);
            assert_eq!(idle_here(), IDLE_PER_THREAD, "the pool is bounded");
        })
        .join()
        .unwrap();
    }
}
