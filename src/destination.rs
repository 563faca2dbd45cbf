//! Where a client's connection was really going.
//!
//! Under TPROXY the kernel hands us a socket whose *local* address is the
//! address the client dialed; under REDIRECT the local address is our own
//! and the original one is kept by conntrack (`SO_ORIGINAL_DST`). Either way
//! the destination is a property of the connection, never of the Host header.

use crate::config::{Listener, Mode};
use pingora_core::protocols::l4::socket::SocketAddr as PSocketAddr;

use pingora_proxy::Session;
use std::net::{IpAddr, SocketAddr};

/// Canonicalises v4-mapped v6 addresses (`::ffff:a.b.c.d`), which a
/// dual-stack `[::]` listener reports for v4 clients.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn inet(addr: Option<&PSocketAddr>) -> Option<SocketAddr> {
    addr.and_then(|a| a.as_inet()).copied().map(canonical)
}

/// The original destination of the connection behind `session`, or `None`
/// when the kernel cannot tell (a redirect-mode listener reached without
/// NAT, i.e. a client dialing the proxy port directly).
pub fn original_destination(session: &Session, mode: Mode) -> Option<SocketAddr> {
    match mode {
        Mode::Tproxy => inet(session.server_addr()),
        // Forward requests name their destination; see `crate::forward`.
        // TLS passthrough listeners do not run HTTP; see `crate::passthrough`.
        Mode::Forward | Mode::TlsPassthrough => None,
        Mode::Redirect => {
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
    }
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
pub fn stream_destination(
    stream: &pingora_core::protocols::Stream,
    redirect: bool,
) -> Option<SocketAddr> {
    let digest = stream.get_socket_digest()?;
    let local = inet(digest.local_addr())?;
    if redirect {
        so_original_dst(stream.id(), local)
    } else {
        Some(local)
    }
}

/// The client's address, canonicalised.
pub fn client_address(session: &Session) -> Option<SocketAddr> {
    inet(session.client_addr())
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
    /// Guards against all of this process's listeners.
    pub fn new(listeners: &[Listener]) -> Self {
        LoopGuard {
            own: listeners.iter().map(|l| canonical(l.socket_addr)).collect(),
        }
    }

    /// True when forwarding to `dst` would reach one of our own listeners.
    pub fn is_own_listener(&self, dst: SocketAddr) -> bool {
        // Runs on every request: no allocation, and the kernel is asked
        // about interface addresses only on a port match.
        let dst = canonical(dst);
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

/// Whether `ip` is assigned to an interface of this host (network namespace).
/// Asks the kernel each time (addresses change); only used off the hot path.
pub fn is_local_ip(ip: IpAddr) -> bool {
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs.into_iter().any(|ifa| {
            ifa.address.is_some_and(|a| {
                let found = if let Some(v4) = a.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                };
                found.map(|f| f.to_canonical()) == Some(ip)
            })
        }),
        // If we cannot tell, err on the side of not looping.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(addrs: &[&str]) -> LoopGuard {
        let listeners: Vec<Listener> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Listener::new(&format!("l{i}"), a, Mode::Tproxy).unwrap())
            .collect();
        LoopGuard::new(&listeners)
    }

    #[test]
    fn canonicalises_v4_mapped() {
        let a: SocketAddr = "[::ffff:192.0.2.7]:80".parse().unwrap();
        assert_eq!(canonical(a), "192.0.2.7:80".parse().unwrap());
        let b: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        assert_eq!(canonical(b), b);
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
