//! Transparent listening sockets, and the Pingora service wrapper that hands
//! them to Pingora's stock listening service.
//!
//! Pingora cannot set `IP_TRANSPARENT` on the sockets it binds, but every
//! service receives one shared listen-fd table keyed by the address string,
//! and Pingora only binds an address that is missing from it. So we bind the
//! socket ourselves, put it in the table under the same string, and let the
//! inner service adopt it. On graceful upgrade the table travels to the new
//! process, and with it our sockets, flag and all.

use crate::config::Listener;
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
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    match addr {
        SocketAddr::V4(_) => socket.set_ip_transparent_v4(true),
        SocketAddr::V6(_) => {
            socket.set_only_v6(false)?;
            socket.set_ip_transparent_v6(true)
        }
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

/// Makes sure the fd table holds a transparent socket for each listener:
/// inherited ones (graceful upgrade) are kept as they are, missing ones are
/// bound now.
pub fn ensure_listeners(fds: &ListenFds, listeners: &[Listener]) -> Result<(), String> {
    for l in listeners {
        let mut table = fds.lock();
        if let Some(fd) = table.get(&l.address) {
            // SAFETY: the table owns the fd and keeps it open while we look.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
            let transparent = is_transparent(fd, l.socket_addr.is_ipv6()).unwrap_or(false);
            info!(
                "listener {} ({}) inherited {} (transparent: {})",
                l.name,
                l.mode.as_str(),
                l.address,
                transparent
            );
            continue;
        }
        let socket = bind_transparent(l.socket_addr)
            .map_err(|e| format!("listener {} cannot listen on {}: {e}", l.name, l.address))?;
        info!(
            "listener {} ({}) bound {} with IP_TRANSPARENT",
            l.name,
            l.mode.as_str(),
            l.address
        );
        table.add(l.address.clone(), socket.into_raw_fd());
    }
    Ok(())
}

/// Wraps a Pingora listening service so that its addresses are served by our
/// transparent sockets.
///
/// The inner service is given the same address strings (`add_tcp`), finds
/// our fds in the table and adopts them instead of binding.
pub struct TransparentService<S> {
    inner: S,
    listeners: Vec<Listener>,
}

impl<S> TransparentService<S> {
    /// `inner` must already have `add_tcp(&l.address)` for each listener.
    pub fn new(inner: S, listeners: Vec<Listener>) -> Self {
        TransparentService { inner, listeners }
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
        if let Err(e) = ensure_listeners(table, &self.listeners) {
            // A service task that panics leaves a process without a listener,
            // which under TPROXY means traffic silently bypasses the proxy.
            error!("{e}; exiting");
            eprintln!("tproxyd: {e}");
            std::process::exit(1);
        }
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
