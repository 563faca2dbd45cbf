//! The SOCKS5 handshake (RFC 1928, with RFC 1929 username/password), by
//! the `tokio-socks` crate: the destination as a name (address type 3)
//! when the flow has one, as an address otherwise.

use super::Credentials;
use tokio::net::TcpStream;
use tokio_socks::tcp::Socks5Stream;

/// Asks the SOCKS5 proxy behind `tcp` to connect to `name` (or `addr`)
/// on `port`; the stream to the destination, or why not.
pub async fn connect(
    tcp: TcpStream,
    name: Option<&str>,
    addr: Option<std::net::IpAddr>,
    port: u16,
    credentials: Option<&Credentials>,
) -> Result<TcpStream, String> {
    let target: tokio_socks::TargetAddr<'_> = match (name, addr) {
        // A checked name is at most 253 bytes; the protocol allows 255.
        (Some(n), _) if n.len() > 255 => return Err("a name over 255 bytes".into()),
        (Some(n), _) => tokio_socks::TargetAddr::Domain(n.into(), port),
        (None, Some(ip)) => tokio_socks::TargetAddr::Ip((ip, port).into()),
        (None, None) => return Err("no destination".into()),
    };
    let stream = match credentials {
        Some(c) => {
            Socks5Stream::connect_with_password_and_socket(tcp, target, &c.username, &c.password)
                .await
        }
        None => Socks5Stream::connect_with_socket(tcp, target).await,
    };
    stream
        .map(Socks5Stream::into_inner)
        .map_err(|e| e.to_string())
}
