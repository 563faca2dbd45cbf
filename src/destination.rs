//! Where a client's connection was really going.
//!
//! Under TPROXY the kernel hands us a socket whose *local* address is the
//! address the client dialed; under REDIRECT the local address is our own
//! and the original one is kept by conntrack (`SO_ORIGINAL_DST`). Either way
//! the destination is a property of the connection, never of the Host header.

use crate::addr::{canonical, is_local_ip, ClientAddr, ListenAddr, OrigDstAddr, Peers};
use crate::flow::DestinationSource;
use pingora_core::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora_core::protocols::Stream;
use pingora_proxy::Session;
use std::net::SocketAddr;

fn inet(addr: Option<&PSocketAddr>) -> Option<SocketAddr> {
    addr.and_then(|a| a.as_inet()).copied().map(canonical)
}

/// The original destination of the connection behind `session`, or `None`
/// when the kernel cannot tell (a redirect-mode listener reached without
/// NAT, i.e. a client dialing the proxy port directly).
pub fn original_destination(session: &Session, source: DestinationSource) -> Option<OrigDstAddr> {
    let found = match source {
        DestinationSource::Tproxy => inet(session.server_addr()),
        DestinationSource::Redirect => {
            // Looked up once per connection and cached in Pingora's socket
            // digest, so keep-alive requests cost no syscall.
            let digest = session.digest()?.socket_digest.as_ref()?;
            let local = inet(session.server_addr())?;
            let fd = session.stream()?.id();
            let cached = digest
                .original_dst
                .get_or_init(|| so_original_dst(fd, local).map(PSocketAddr::Inet));
            inet(cached.as_ref())
        }
    };
    found.map(OrigDstAddr::new)
}

/// `SO_ORIGINAL_DST` for v4 (also on a v4-mapped connection of a dual-stack
/// socket, where Pingora would ask the v6 option and fail), and
/// `IP6T_SO_ORIGINAL_DST` for v6.
fn so_original_dst(fd: std::os::fd::RawFd, local: SocketAddr) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    // SAFETY: the fd belongs to the live downstream stream of this session.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if local.is_ipv4() {
        let a = getsockopt(&fd, sockopt::OriginalDst).ok()?;
        Some(SocketAddr::new(
            std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
            u16::from_be(a.sin_port),
        ))
    } else {
        let a = getsockopt(&fd, sockopt::Ip6tOriginalDst).ok()?;
        Some(canonical(SocketAddr::new(
            std::net::Ipv6Addr::from(a.sin6_addr.s6_addr).into(),
            u16::from_be(a.sin6_port),
        )))
    }
}

/// The original destination of a raw (non-HTTP) connection: its local
/// address under TPROXY, `SO_ORIGINAL_DST` under REDIRECT.
pub fn stream_destination(stream: &Stream, source: DestinationSource) -> Option<OrigDstAddr> {
    let digest = stream.get_socket_digest()?;
    let local = inet(digest.local_addr())?;
    let found = match source {
        DestinationSource::Tproxy => Some(local),
        // The same per-connection cache the HTTP path reads.
        DestinationSource::Redirect => inet(
            digest
                .original_dst
                .get_or_init(|| so_original_dst(stream.id(), local).map(PSocketAddr::Inet))
                .as_ref(),
        ),
    };
    found.map(OrigDstAddr::new)
}

/// The client's address of a Pingora session.
pub fn client_address(session: &Session) -> Option<ClientAddr> {
    inet(session.client_addr()).map(ClientAddr::new)
}

/// The client's address of a raw stream.
pub fn stream_client(stream: &Stream) -> Option<ClientAddr> {
    inet(stream.get_socket_digest()?.peer_addr()).map(ClientAddr::new)
}

/// Both ends of an accepted connection, looked up once: its client, and
/// its original destination where the listener has one (`source`).
pub fn connection_peers(stream: &Stream, source: Option<DestinationSource>) -> Peers {
    Peers {
        client: stream_client(stream),
        dst: source.and_then(|s| stream_destination(stream, s)),
    }
}

/// Detects destinations that would make the proxy connect to itself.
///
/// A destination is a loop when its port is one of our listening ports and
/// its IP is either that listener's own IP or, for wildcard listeners, any
/// address of this host (loopback included). Interface addresses are only
/// looked up on a port match, which legitimate traffic almost never hits.
#[derive(Debug, Clone)]
pub struct LoopGuard {
    own: Vec<SocketAddr>,
}

impl LoopGuard {
    /// Guards against this process's listening addresses.
    pub fn new(listening: impl IntoIterator<Item = ListenAddr>) -> Self {
        LoopGuard {
            own: listening.into_iter().map(|l| l.socket_addr()).collect(),
        }
    }

    /// True when forwarding to `dst` would reach one of our own listeners.
    pub fn is_own_listener(&self, dst: OrigDstAddr) -> bool {
        // Runs on every request: no allocation, and the kernel is asked
        // about interface addresses only on a port match.
        let mut same_port = self
            .own
            .iter()
            .filter(|l| l.port() == dst.port())
            .peekable();
        if same_port.peek().is_none() {
            return false;
        }
        if dst.ip().is_loopback() || dst.ip().is_unspecified() {
            return true;
        }
        let mut wildcard = false;
        for l in same_port {
            if l.ip() == dst.ip() {
                return true;
            }
            wildcard |= l.ip().is_unspecified();
        }
        wildcard && is_local_ip(dst.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(addrs: &[&str]) -> LoopGuard {
        LoopGuard::new(addrs.iter().map(|a| a.parse().unwrap()))
    }

    #[test]
    fn loop_guard() {
        let g = guard(&["[::]:8888", "192.0.2.1:9999"]);
        assert!(g.is_own_listener("127.0.0.1:8888".parse().unwrap()));
        assert!(g.is_own_listener("[::1]:8888".parse().unwrap()));
        assert!(g.is_own_listener("[::ffff:127.0.0.1]:8888".parse().unwrap()));
        assert!(g.is_own_listener("192.0.2.1:9999".parse().unwrap()));
        // Same port on a remote host is legitimate traffic.
        assert!(!g.is_own_listener("198.51.100.2:8888".parse().unwrap()));
        assert!(!g.is_own_listener("198.51.100.2:9999".parse().unwrap()));
        assert!(!g.is_own_listener("127.0.0.1:80".parse().unwrap()));
    }
}
