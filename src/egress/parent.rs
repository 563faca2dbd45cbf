//! The CONNECT handshake with a parent HTTP proxy: `CONNECT name:port`
//! (with `Proxy-Authorization: Basic` when the egress has credentials),
//! then the parent's answer, read to the end of its head and not a byte
//! further, so whatever the destination sends first stays in the socket.

use super::Credentials;
use base64::Engine;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The longest answer head accepted from a parent.
const MAX_HEAD: usize = 8 * 1024;

/// Why a handshake with a parent failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentError {
    /// It answered with this status and reason (407, 403, 502 …).
    Refused(u16, String),
    /// It answered something that is not HTTP, or not in time, or closed.
    Broken(String),
}

/// The `Proxy-Authorization` value for `c`.
pub fn basic(c: &Credentials) -> String {
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
    format!("Basic {token}")
}

/// Asks the parent behind `tcp` to open a tunnel to `authority`.
pub async fn connect(
    tcp: &mut TcpStream,
    authority: &str,
    credentials: Option<&Credentials>,
) -> Result<(), ParentError> {
    // The authority is a checked name or an address; refuse anything else
    // rather than put it on the parent's request line.
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b);
    if authority.is_empty() || !authority.bytes().all(allowed) {
        return Err(ParentError::Broken(format!(
            "{authority:?} is no host:port"
        )));
    }
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(c) = credentials {
        req.push_str(&format!("Proxy-Authorization: {}\r\n", basic(c)));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes())
        .await
        .map_err(|e| ParentError::Broken(format!("sending CONNECT: {e}")))?;
    let head = read_head(tcp).await?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(ParentError::Broken("its answer is not HTTP".into())),
    }
    let code = resp.code.unwrap_or(0);
    if (200..300).contains(&code) {
        return Ok(());
    }
    Err(ParentError::Refused(
        code,
        resp.reason.unwrap_or("").to_string(),
    ))
}

/// Reads the answer's head: peeks for its end, then takes exactly it.
/// (An answer usually comes in one segment; while it trickles in, a peek
/// that shows nothing new waits a little longer each time, up to 50 ms;
/// the caller's deadline bounds it all.)
async fn read_head(tcp: &mut TcpStream) -> Result<Vec<u8>, ParentError> {
    let broken = |e: std::io::Error| ParentError::Broken(format!("reading its answer: {e}"));
    let mut buf = vec![0u8; MAX_HEAD];
    let (mut seen, mut nap) = (0, 1);
    loop {
        let n = tcp.peek(&mut buf).await.map_err(broken)?;
        if n == 0 {
            return Err(ParentError::Broken("it closed the connection".into()));
        }
        if let Some(end) = memchr::memmem::find(&buf[..n], b"\r\n\r\n") {
            let mut head = vec![0u8; end + 4];
            tokio::io::AsyncReadExt::read_exact(tcp, &mut head)
                .await
                .map_err(broken)?;
            return Ok(head);
        }
        if n == MAX_HEAD {
            return Err(ParentError::Broken("its answer's head is too long".into()));
        }
        if n == seen {
            tokio::time::sleep(std::time::Duration::from_millis(nap)).await;
            nap = (nap * 2).min(50);
        } else {
            nap = 1;
        }
        seen = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn parent(
        answer: &'static [u8],
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = vec![0u8; 1024];
            let n = s.read(&mut got).await.unwrap();
            s.write_all(answer).await.unwrap();
            got.truncate(n);
            got
        });
        (addr, h)
    }

    #[tokio::test]
    async fn a_tunnel_by_name_with_credentials_and_the_first_bytes_kept() {
        let (addr, h) = parent(b"HTTP/1.1 200 Connection established\r\n\r\nBANNER").await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let c = Credentials {
            username: "gw".into(),
            password: "s3cret".into(),
        };
        connect(&mut tcp, "www.example.org:443", Some(&c))
            .await
            .unwrap();
        let sent = String::from_utf8(h.await.unwrap()).unwrap();
        assert!(
            sent.starts_with("CONNECT www.example.org:443 HTTP/1.1\r\n"),
            "{sent}"
        );
        assert!(
            sent.contains("Proxy-Authorization: Basic Z3c6czNjcmV0\r\n"),
            "{sent}"
        );
        let mut banner = [0u8; 6];
        tcp.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"BANNER");
    }

    #[tokio::test]
    async fn refusals_and_garbage() {
        let (addr, _h) =
            parent(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                .await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let e = connect(&mut tcp, "a:443", None).await.unwrap_err();
        assert_eq!(
            e,
            ParentError::Refused(407, "Proxy Authentication Required".into())
        );
        let (addr, _h) = parent(b"SSH-2.0-x\r\n\r\n").await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        assert!(matches!(
            connect(&mut tcp, "a:443", None).await,
            Err(ParentError::Broken(_))
        ));
    }
}
