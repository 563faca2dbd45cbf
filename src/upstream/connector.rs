//! Upstream sockets: source-address spoofing ("full transparency"), the
//! `SO_MARK` that keeps the proxy's own traffic out of interception, and
//! leaving from a given interface (`SO_BINDTODEVICE`).
//!
//! Pingora binds an upstream socket before its socket hook runs, too late to
//! bind to a non-local (the client's) address. For spoofing we therefore
//! replace the whole TCP connect ([`SetupConnect`], Pingora's `custom_l4`):
//! `IP_TRANSPARENT`, `IP_BIND_ADDRESS_NO_PORT`, bind to the client's IP with
//! an ephemeral port, connect with the configured timeout. The kernel routes
//! the origin's replies back to us thanks to the `socket transparent` rule
//! `tproxyd rules` writes. A mark and an interface alone only need
//! Pingora's socket hook ([`sock_hook`]).

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

/// A hook for Pingora's own connector that sets up every upstream socket
/// (`SO_MARK`, `SO_BINDTODEVICE`).
pub type SockHook = Arc<dyn Fn(&tokio::net::TcpSocket) -> Result<()> + Send + Sync>;

/// How an upstream socket is set up before it connects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketSetup {
    /// Bind to this (the client's) address: spoofing.
    pub source: Option<IpAddr>,
    /// `SO_MARK`.
    pub mark: Option<u32>,
    /// `SO_BINDTODEVICE`: leave from this interface.
    pub interface: Option<Arc<str>>,
}

impl SocketSetup {
    /// Mark and interface on `sock` (the source is bound separately).
    fn apply(&self, sock: SockRef<'_>) -> std::io::Result<()> {
        if let Some(m) = self.mark {
            sock.set_mark(m)?;
        }
        if let Some(i) = &self.interface {
            sock.bind_device(Some(i.as_bytes()))?;
        }
        Ok(())
    }

    /// Pingora's socket hook for the mark and the interface, when there is
    /// anything to set.
    pub fn hook(&self) -> Option<SockHook> {
        if self.mark.is_none() && self.interface.is_none() {
            return None;
        }
        let setup = self.clone();
        Some(Arc::new(move |sock: &tokio::net::TcpSocket| {
            setup
                .apply(SockRef::from(sock))
                .or_err(ErrorType::SocketError, "setting up an upstream socket")
        }))
    }
}

/// Connects as a [`SocketSetup`] says: Pingora's `custom_l4` for spoofed
/// connections.
#[derive(Debug, Clone)]
pub struct SetupConnect {
    /// How the socket is set up.
    pub setup: SocketSetup,
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
pub fn into_stream(tcp: tokio::net::TcpStream) -> Stream {
    let _ = tcp.set_nodelay(true);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    let mut stream: Stream = tcp.into();
    stream.set_socket_digest(SocketDigest::from_raw_fd(fd));
    stream
}

/// A socket for `dst` as `setup` says.
fn socket(dst: SocketAddr, setup: &SocketSetup) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    setup.apply(SockRef::from(&socket))?;
    if let Some(source) = setup.source {
        match dst {
            SocketAddr::V4(_) => socket.set_ip_transparent_v4(true)?,
            SocketAddr::V6(_) => socket.set_ip_transparent_v6(true)?,
        }
        // Pick the port at connect() time, so binding many connections to
        // one client IP does not exhaust ports per (ip, 0) bind.
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        )
        .map_err(std::io::Error::from)?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A TCP connection to `dst` set up as `setup` says, within `timeout`;
/// errors carry Pingora's error types.
pub async fn connect_tcp(
    dst: SocketAddr,
    setup: &SocketSetup,
    timeout: Duration,
) -> Result<tokio::net::TcpStream> {
    if let Some(source) = setup.source.filter(|s| s.is_ipv4() != dst.is_ipv4()) {
        return Error::e_explain(
            ErrorType::ConnectError,
            format!("cannot spoof {source} towards {dst}: address families differ"),
        );
    }
    let socket = socket(dst, setup).map_err(|e| {
        let why = match setup.source {
            Some(s) => format!("preparing a socket from {s} (needs CAP_NET_ADMIN)"),
            None => "preparing an upstream socket".to_string(),
        };
        Error::because(ErrorType::SocketError, why, e)
    })?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    match tokio::time::timeout(timeout, socket.connect(dst)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(connect_error(e, dst)),
        Err(_) => Error::e_explain(ErrorType::ConnectTimedout, format!("connecting to {dst}")),
    }
}

#[async_trait]
impl L4Connect for SetupConnect {
    async fn connect(&self, addr: &PSocketAddr) -> Result<Stream> {
        let dst = *addr
            .as_inet()
            .ok_or_else(|| Error::explain(ErrorType::ConnectError, "not an IP destination"))?;
        Ok(into_stream(
            connect_tcp(dst, &self.setup, self.timeout).await?,
        ))
    }
}

/// The pool group of an upstream connection: per egress and, when the
/// connection carries something only some requests may use (a spoofed
/// source, a parent's target), per that too, so that a pooled
/// connection never carries the wrong request.
pub fn pool_group(parts: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// A raw TCP connection to `dst` for the byte relays (CONNECT tunnels, TLS
/// passthrough), set up as `setup` says, within `conf`'s connect timeout.
pub async fn connect_raw(
    dst: SocketAddr,
    setup: &SocketSetup,
    conf: &super::Upstream,
) -> Result<Stream> {
    Ok(into_stream(
        connect_tcp(dst, setup, conf.connect_timeout).await?,
    ))
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
