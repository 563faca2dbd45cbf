//! Upstream sockets: source-address spoofing ("full transparency") and the
//! `SO_MARK` that keeps the proxy's own traffic out of interception.
//!
//! Pingora binds an upstream socket before its socket hook runs, too late to
//! bind to a non-local (the client's) address. For spoofing we therefore
//! replace the whole TCP connect ([`SpoofConnect`], Pingora's `custom_l4`):
//! `IP_TRANSPARENT`, `IP_BIND_ADDRESS_NO_PORT`, bind to the client's IP with
//! an ephemeral port, connect with the configured timeout. The kernel routes
//! the origin's replies back to us thanks to the `socket transparent` rule
//! (the `socket transparent` rule `tproxyd rules` writes). The mark alone only needs Pingora's socket hook.

use crate::addr::OrigDstAddr;
use crate::flow::Answer;
use async_trait::async_trait;
use pingora_core::connectors::L4Connect;
use pingora_core::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_error::{Error, ErrorType, OrErr, Result};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// A hook for Pingora's own connector that sets `SO_MARK` on every
/// upstream socket (`tproxyd.upstream.mark`).
pub type SockHook = Arc<dyn Fn(&tokio::net::TcpSocket) -> Result<()> + Send + Sync>;

/// Builds the `SO_MARK` hook.
pub fn mark_hook(mark: u32) -> SockHook {
    Arc::new(move |sock: &tokio::net::TcpSocket| {
        SockRef::from(sock).set_mark(mark).or_err(
            ErrorType::SocketError,
            "setting SO_MARK on an upstream socket",
        )
    })
}

/// Connects to the origin *from the client's address*.
#[derive(Debug, Clone)]
pub struct SpoofConnect {
    /// The client's IP: the upstream connection's source.
    pub source: IpAddr,
    /// `SO_MARK`, if configured.
    pub mark: Option<u32>,
    /// Bound on the TCP handshake (Pingora does not apply its own
    /// `connection_timeout` to custom connectors).
    pub timeout: Duration,
}

fn connect_error(e: std::io::Error, dst: SocketAddr) -> Box<Error> {
    let etype = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
        std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => {
            ErrorType::ConnectNoRoute
        }
        _ => ErrorType::ConnectError,
    };
    Error::because(etype, format!("connecting to {dst}"), e)
}

/// A connected socket as a Pingora stream, with nodelay and the socket
/// digest Pingora's own connector would attach (so its local and peer
/// addresses can be read, e.g. for the access log's `upstream_local`).
fn into_stream(tcp: tokio::net::TcpStream) -> Stream {
    let _ = tcp.set_nodelay(true);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    let mut stream: Stream = tcp.into();
    stream.set_socket_digest(SocketDigest::from_raw_fd(fd));
    stream
}

/// A socket with the client's address as its source.
fn spoofed_socket(source: IpAddr, dst: SocketAddr, mark: Option<u32>) -> std::io::Result<Socket> {
    // A v4 client on a dual-stack listener talks v4 to a v4 origin.
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    match dst {
        SocketAddr::V4(_) => socket.set_ip_transparent_v4(true)?,
        SocketAddr::V6(_) => socket.set_ip_transparent_v6(true)?,
    }
    // Pick the port at connect() time, so binding many connections to one
    // client IP does not exhaust ports per (ip, 0) bind.
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    )
    .map_err(std::io::Error::from)?;
    if let Some(m) = mark {
        socket.set_mark(m)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    Ok(socket)
}

#[async_trait]
impl L4Connect for SpoofConnect {
    async fn connect(&self, addr: &PSocketAddr) -> Result<Stream> {
        let dst = *addr
            .as_inet()
            .ok_or_else(|| Error::explain(ErrorType::ConnectError, "not an IP destination"))?;
        if self.source.is_ipv4() != dst.is_ipv4() {
            return Error::e_explain(
                ErrorType::ConnectError,
                format!(
                    "cannot spoof {} towards {dst}: address families differ",
                    self.source
                ),
            );
        }
        let socket = spoofed_socket(self.source, dst, self.mark).map_err(|e| {
            Error::because(
                ErrorType::SocketError,
                format!(
                    "preparing a socket from {} (needs CAP_NET_ADMIN)",
                    self.source
                ),
                e,
            )
        })?;
        let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
        match tokio::time::timeout(self.timeout, socket.connect(dst)).await {
            Ok(Ok(stream)) => Ok(into_stream(stream)),
            Ok(Err(e)) => Err(connect_error(e, dst)),
            Err(_) => Error::e_explain(
                ErrorType::ConnectTimedout,
                format!("connecting to {dst} from {}", self.source),
            ),
        }
    }
}

/// A plain TCP connection to `dst` (with `SO_MARK` if set), bounded by
/// `timeout`: for the raw tunnels (CONNECT, TLS passthrough) that do not go
/// through Pingora's HTTP connector. Errors carry Pingora's error types.
pub async fn connect_plain(
    dst: SocketAddr,
    mark: Option<u32>,
    timeout: Duration,
) -> Result<Stream> {
    let connect = async {
        let sock = match dst {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }?;
        if let Some(m) = mark {
            SockRef::from(&sock).set_mark(m)?;
        }
        sock.connect(dst).await
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(s)) => Ok(into_stream(s)),
        Ok(Err(e)) => Err(connect_error(e, dst)),
        Err(_) => Error::e_explain(ErrorType::ConnectTimedout, format!("connecting to {dst}")),
    }
}

/// The pool group for a spoofed connection: one per client IP, so that a
/// pooled connection bound to client A never carries client B's request.
pub fn pool_group(source: IpAddr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    h.finish()
}

/// A raw TCP connection to `dst` for the byte relays (CONNECT tunnels, TLS
/// passthrough): from the client's address `spoof_from` when set, with
/// `SO_MARK` and the connect timeout of `conf` either way.
pub async fn connect_raw(
    dst: SocketAddr,
    spoof_from: Option<IpAddr>,
    conf: &super::Upstream,
) -> Result<Stream> {
    match spoof_from {
        Some(source) => {
            let spoof = SpoofConnect {
                source,
                mark: conf.mark,
                timeout: conf.connect_timeout,
            };
            spoof.connect(&PSocketAddr::Inet(dst)).await
        }
        None => connect_plain(dst, conf.mark, conf.connect_timeout).await,
    }
}

/// The 502 or 504 for a failed connect of an opaque flow (CONNECT).
pub fn connect_failed(dst: OrigDstAddr, e: &Error) -> Answer {
    if e.etype() == &ErrorType::ConnectTimedout {
        return Answer::failed(
            504,
            "ConnectTimedout",
            format!("504 Gateway Timeout: {dst}: connect timed out\n"),
        );
    }
    let why = e.root_cause().to_string();
    Answer::failed(
        502,
        e.etype().as_str(),
        format!("502 Bad Gateway: {dst}: {why}\n"),
    )
}
