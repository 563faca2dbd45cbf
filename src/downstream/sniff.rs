//! Telling an HTTP/1.x request from everything else at the start of a
//! connection on an HTTP listener. A gateway intercepts ports, not
//! protocols: VPNs, games, TLS and HTTP/2 with prior knowledge also use
//! port 80, and a server-first protocol (SMTP, FTP, MySQL…) sends nothing
//! until the server speaks. What is not HTTP/1.x is tunnelled (or refused),
//! never answered with a 400.
//!
//! The bytes are read, not peeked, into the same bounded buffer a head
//! uses; they go on to Pingora as the head, or to the origin first thing in
//! the tunnel. Deciding costs no extra read: a request arriving one byte at
//! a time is still HTTP as soon as its request line says so.

use super::head::{empty_lines, first_bytes, read_more_in_time, FirstRead, Head};
use super::idle::Idle;
use super::reply::HeadRefusal;
use super::Downstream;
use crate::flow::Protocol;
use crate::tls::{peek_client_hello, ClientHello, Peeked};
use bytes::BytesMut;
use pingora_core::protocols::Stream;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

/// The longest method token taken for HTTP (the registered ones are far
/// shorter).
const MAX_METHOD: usize = 32;

/// What the first bytes of a connection are, as far as they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// An HTTP/1.x request line.
    Http,
    /// Not decided yet: so far a valid start of a request line.
    NeedMore,
    /// Something else.
    Other(Protocol),
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Classifies the first bytes of a connection, resuming where it stopped
/// (so a head trickled a byte at a time costs linear, not quadratic, time).
///
/// HTTP/1.x is a method token, a space, and a line that ends in
/// `HTTP/1.<digit>` (RFC 9112 §3; empty lines before it are allowed). The
/// target in between is not judged here: Pingora accepts and escapes
/// unusual targets (spaces, non-ASCII), and answers 400 to what it cannot
/// parse, so such requests stay HTTP, under the filters and limits.
#[derive(Debug, Default)]
pub struct Classifier {
    /// How far the line has been checked for its end or for bytes no
    /// request line has.
    checked: usize,
}

impl Classifier {
    /// The class of `buf` (all bytes so far).
    pub fn classify(&mut self, buf: &[u8]) -> Class {
        let start = empty_lines(buf);
        if start == buf.len() {
            return Class::NeedMore;
        }
        let line = &buf[start..];
        if line[0] == 0x16 {
            return Class::Other(Protocol::Tls);
        }
        let method = line
            .iter()
            .take(MAX_METHOD + 1)
            .take_while(|b| is_tchar(**b))
            .count();
        match line.get(method) {
            _ if method > MAX_METHOD => return Class::Other(Protocol::Unknown),
            None => return Class::NeedMore,
            Some(b' ') if method > 0 => {}
            Some(_) => return Class::Other(Protocol::Unknown),
        }
        let preface = b"PRI * HTTP/2.0";
        let n = line.len().min(preface.len());
        if line[..n] == preface[..n] {
            if n == preface.len() {
                return Class::Other(Protocol::H2PriorKnowledge);
            }
            return Class::NeedMore;
        }
        let rest = &line[method + 1..];
        self.checked = self.checked.max(start + method + 1);
        let from = self.checked - (start + method + 1);
        for (i, &b) in rest.iter().enumerate().skip(from) {
            if b == b'\n' {
                let mut end = &rest[..i];
                if end.last() == Some(&b'\r') {
                    end = &end[..end.len() - 1];
                }
                return if is_http1_line_end(end) {
                    Class::Http
                } else {
                    Class::Other(Protocol::Unknown)
                };
            }
            if (b < 0x20 && b != b'\t' && b != b'\r') || b == 0x7f {
                return Class::Other(Protocol::Unknown);
            }
        }
        self.checked = buf.len();
        Class::NeedMore
    }
}

/// Whether a request line (after the method and its space, without the
/// line end) ends in ` HTTP/1.<digit>`.
fn is_http1_line_end(line: &[u8]) -> bool {
    let v = b" HTTP/1.";
    line.len() > v.len() + 1
        && line[line.len() - v.len() - 1..line.len() - 1] == v[..]
        && line[line.len() - 1].is_ascii_digit()
}

/// Classifies `buf` from scratch (see [`Classifier`]).
pub fn classify(buf: &[u8]) -> Class {
    Classifier::default().classify(buf)
}

/// A connection that is not HTTP/1.x: what it is, and its first bytes.
#[derive(Debug)]
pub struct Opening {
    /// What it is.
    pub protocol: Protocol,
    /// Read from the client so far; sent to the origin first.
    pub first: Vec<u8>,
    /// For TLS: the ClientHello (its SNI names the flow).
    pub hello: Option<ClientHello>,
}

/// How a new connection on an HTTP listener began.
#[derive(Debug)]
pub enum Sniff {
    /// An HTTP/1.x request: these bytes start its head, which began then.
    Http(BytesMut, Instant),
    /// Something else (a client silent for `server_first_after` is a
    /// server-first protocol, with no bytes).
    Other(Opening),
    /// The client left, or the process is shutting down.
    Closed,
    /// The client sent nothing within `keepalive_timeout`.
    Idle,
    /// A limit on heads fired while it was still undecided.
    Refused(HeadRefusal),
}

/// Reads the first bytes of a new connection until they are known to be
/// HTTP/1.x or not: within `server_first_after` (when set, silence then
/// means a server-first protocol) or else `keepalive_timeout` for the first
/// byte, then `header_timeout` and `max_header_bytes` as for any head. A TLS
/// ClientHello is read to its end (it is small) so its SNI can be logged.
/// Gives up (`Closed`) when `shutdown`, the connection's wait for the
/// shutdown signal, ends. Under pressure the waits are those of any head
/// (but `server_first_after`, which tells protocols apart, stays), and
/// the silent connection may be reclaimed.
pub async fn sniff<S: Future + ?Sized>(
    stream: &mut Stream,
    limits: &Downstream,
    server_first_after: Option<Duration>,
    shutdown: Pin<&mut S>,
    idle: &mut Idle,
) -> Sniff {
    let mut buf = match first_bytes(stream, server_first_after, limits, shutdown, idle).await {
        Ok(b) => b,
        Err(FirstRead::Closed) => return Sniff::Closed,
        Err(FirstRead::Silent) if server_first_after.is_some() => {
            return Sniff::Other(Opening {
                protocol: Protocol::ServerFirst,
                first: Vec::new(),
                hello: None,
            })
        }
        Err(FirstRead::Silent) => return Sniff::Idle,
    };
    let started = Instant::now();
    let mut classifier = Classifier::default();
    loop {
        match classifier.classify(&buf) {
            Class::Http => return Sniff::Http(buf, started),
            Class::Other(protocol) => {
                let hello = match protocol {
                    Protocol::Tls => read_hello(stream, &mut buf, started, limits, idle).await,
                    _ => None,
                };
                return Sniff::Other(Opening {
                    protocol,
                    first: Vec::from(buf),
                    hello,
                });
            }
            Class::NeedMore => {}
        }
        let max = limits.max_header_bytes;
        match read_more_in_time(stream, &mut buf, started, limits, max, idle).await {
            Ok(()) => {}
            Err(Head::Refused(r)) => return Sniff::Refused(r),
            Err(_) => return Sniff::Closed,
        }
    }
}

/// Reads the rest of a ClientHello begun at `started` (bounded by its own
/// cap and the head's time); `None` when it is not a valid one, which is
/// tunnelled too.
async fn read_hello(
    stream: &mut Stream,
    buf: &mut BytesMut,
    started: Instant,
    limits: &Downstream,
    idle: &mut Idle,
) -> Option<ClientHello> {
    let max = crate::tls::MAX_CLIENT_HELLO + 1024;
    loop {
        match peek_client_hello(buf) {
            Peeked::Hello(h) => return Some(h),
            Peeked::NeedMore => {}
            Peeked::NotTls | Peeked::Invalid(_) => return None,
        }
        if read_more_in_time(stream, buf, started, limits, max, idle)
            .await
            .is_err()
        {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let cases: &[(&[u8], Class)] = &[
            (b"GET / HTTP/1.1\r\n", Class::Http),
            (b"\r\nPOST /a?b HTTP/1.0\r\n", Class::Http),
            (b"M-SEARCH * HTTP/1.1\n", Class::Http),
            (b"GET /a b HTTP/1.1\r\n", Class::Http),
            (b"GET  / HTTP/1.1\r\n", Class::Http),
            (b"GET /caf\xc3\xa9 HTTP/1.1\r\n", Class::Http),
            (b"G", Class::NeedMore),
            (b"GET /very/long/path", Class::NeedMore),
            (b"GET / HTTP/1.1", Class::NeedMore),
            (b"", Class::NeedMore),
            (b"\r\n", Class::NeedMore),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                Class::Other(Protocol::H2PriorKnowledge),
            ),
            (b"PRI * HT", Class::NeedMore),
            (b"\x16\x03\x01\x02\x00", Class::Other(Protocol::Tls)),
            (b"\x00\x01binary", Class::Other(Protocol::Unknown)),
            (b"SSH-2.0-OpenSSH_9.6\r\n", Class::Other(Protocol::Unknown)),
            (b"HELLO WORLD\r\n", Class::Other(Protocol::Unknown)),
            (b"GET /\r\n", Class::Other(Protocol::Unknown)),
            (b"GET / FTP/1.0\r\n", Class::Other(Protocol::Unknown)),
            (b"GET / HTTP/1.x\r\n", Class::Other(Protocol::Unknown)),
            (b"GET / \x00HTTP", Class::Other(Protocol::Unknown)),
            (b" GET / HTTP/1.1", Class::Other(Protocol::Unknown)),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                classify(bytes),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let long = [b'A'; 40];
        assert_eq!(classify(&long), Class::Other(Protocol::Unknown));
    }

    #[test]
    fn one_byte_at_a_time_is_still_http_and_costs_linear_time() {
        let line = b"GET /slow HTTP/1.1\r\n";
        let mut c = Classifier::default();
        for i in 1..=line.len() {
            let got = c.classify(&line[..i]);
            let want = if i == line.len() {
                Class::Http
            } else {
                Class::NeedMore
            };
            assert_eq!(got, want, "{i}");
        }
        // The resumed scan agrees with a fresh one on a long trickled target.
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(5000));
        let mut c = Classifier::default();
        for i in (1..long.len()).step_by(7) {
            assert_eq!(c.classify(&long.as_bytes()[..i]), Class::NeedMore, "{i}");
        }
        assert_eq!(c.classify(long.as_bytes()), Class::Http);
    }
}
