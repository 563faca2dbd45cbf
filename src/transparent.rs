//! Transparent listening sockets, and the Pingora service wrapper that hands
//! them to Pingora's stock listening service.
//!
//! Pingora cannot set `IP_TRANSPARENT` on the sockets it binds, but every
//! service receives one shared listen-fd table keyed by the address string,
//! and Pingora only binds an address that is missing from it. So we bind the
//! socket ourselves, put it in the table under the same string, and let the
//! inner service adopt it. On graceful upgrade the table travels to the new
//! process, and with it our sockets, flag and all.

use crate::admin::Readiness;
use crate::listener::Listener;
use async_trait::async_trait;
use log::{error, info};
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::Service;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::IntoRawFd;

/// Kernel accept-queue length; Pingora uses the same value for its sockets.
const BACKLOG: i32 = 65535;

/// Creates a non-blocking listening socket with `IP_TRANSPARENT` (v4) or
/// `IPV6_TRANSPARENT` (v6) so that TPROXY can deliver connections addressed
/// to any destination. A `[::]` socket is dual-stack and also takes v4.
///
/// Needs `CAP_NET_ADMIN`.
pub fn bind_transparent(addr: SocketAddr) -> io::Result<Socket> {
    bind_listener(addr, true)
}

/// A listening socket as above; `transparent: false` for forward-proxy
/// listeners, which only take connections addressed to them.
pub fn bind_listener(addr: SocketAddr, transparent: bool) -> io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    match addr {
        _ if !transparent => Ok(()),
        SocketAddr::V4(_) => socket.set_ip_transparent_v4(true),
        SocketAddr::V6(_) => socket.set_ip_transparent_v6(true),
    }
    .map_err(|e| {
        if e.raw_os_error() == Some(libc_eperm()) {
            io::Error::new(
                e.kind(),
                format!("{e}: setting IP_TRANSPARENT needs CAP_NET_ADMIN (run as root or grant the capability)"),
            )
        } else {
            e
        }
    })?;
    // Pingora adopts inherited fds as they are: a blocking one stalls accept.
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// Whether this process holds `CAP_NET_ADMIN` (needed for
/// `IP_TRANSPARENT`), read from `/proc/self/status` so that the answer is
/// known before any socket is touched.
pub fn has_cap_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

fn libc_eperm() -> i32 {
    nix::errno::Errno::EPERM as i32
}

/// Reports whether the socket behind `fd` has the transparent flag set, so
/// that an inherited socket can be checked after an upgrade.
pub fn is_transparent(fd: std::os::fd::BorrowedFd<'_>, v6: bool) -> io::Result<bool> {
    let sock = socket2::SockRef::from(&fd);
    if v6 {
        sock.ip_transparent_v6()
    } else {
        sock.ip_transparent_v4()
    }
}

/// Binds a listener's socket now, so that an unusable address (in use, no
/// capability) stops start-up with a clear error while the process is still
/// in the foreground, before Pingora daemonizes. Not used with `-u`, where
/// the sockets come from the old process.
pub fn prebind(listener: &Listener) -> Result<Socket, String> {
    bind_listener(
        listener.socket_addr.socket_addr(),
        listener.is_transparent(),
    )
    .map_err(|e| {
        format!(
            "listener {} cannot listen on {}: {e}",
            listener.name(),
            listener.address
        )
    })
}

/// Makes sure the fd table holds a transparent socket for `listener`: an
/// inherited one (graceful upgrade) is kept as it is, otherwise the
/// pre-bound socket is used, or one is bound now (a listener added by a
/// reload).
pub fn ensure_listener(
    fds: &ListenFds,
    listener: &Listener,
    prebound: Option<Socket>,
) -> Result<(), String> {
    let mut table = fds.lock();
    if let Some(fd) = table.get(&listener.address) {
        // SAFETY: the table owns the fd and keeps it open while we look.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
        let transparent = is_transparent(fd, listener.socket_addr.ip().is_ipv6()).unwrap_or(false);
        info!(
            "listener {} ({}) inherited {} (transparent: {})",
            listener.name(),
            listener.id.mode.as_str(),
            listener.address,
            transparent
        );
        return Ok(());
    }
    let socket = match prebound {
        Some(s) => s,
        None => prebind(listener)?,
    };
    info!(
        "listener {} ({}) bound {}{}",
        listener.name(),
        listener.id.mode.as_str(),
        listener.address,
        if listener.is_transparent() {
            " with IP_TRANSPARENT"
        } else {
            ""
        }
    );
    table.add(listener.address.clone(), socket.into_raw_fd());
    Ok(())
}

/// Wraps a Pingora listening service so that its addresses are served by our
/// transparent sockets.
///
/// The inner service is given the same address strings (`add_tcp`), finds
/// our fds in the table and adopts them instead of binding.
pub struct TransparentService<S> {
    inner: S,
    listener: Listener,
    prebound: Option<Socket>,
    readiness: Readiness,
}

impl<S> TransparentService<S> {
    /// `inner` must already have `add_tcp(&listener.address)`; `prebound`
    /// is the socket from [`prebind`], if start-up made one.
    pub fn new(
        inner: S,
        listener: Listener,
        prebound: Option<Socket>,
        readiness: Readiness,
    ) -> Self {
        TransparentService {
            inner,
            listener,
            prebound,
            readiness,
        }
    }
}

#[async_trait]
impl<S: Service> Service for TransparentService<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let Some(table) = fds.as_ref() else {
            error!("no listen-fd table from Pingora; cannot install transparent listeners");
            std::process::exit(1);
        };
        if let Err(e) = ensure_listener(table, &self.listener, self.prebound.take()) {
            // A service task that panics leaves a process without a listener,
            // which under TPROXY means traffic silently bypasses the proxy.
            error!("{e}; exiting");
            eprintln!("tproxyd: {e}");
            std::process::exit(1);
        }
        self.readiness.listener_bound();
        self.inner
            .start_service(fds, shutdown, listeners_per_fd)
            .await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    /// Delegated so that Pingora's pruning of unclaimed inherited fds keeps
    /// ours and closes listeners removed from the config.
    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}
