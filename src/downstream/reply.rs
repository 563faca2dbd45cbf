//! Replies tproxyd writes itself on a client connection outside Pingora
//! (a refused head, a CONNECT's answers): rendered by one function and
//! sent by one bounded writer, so a client that does not read its answer
//! cannot hold the connection.

use crate::flow::{Answer, DownstreamLimit, Refusal};
use crate::relay::send_within;
use pingora_core::protocols::Stream;
use std::sync::LazyLock;
use std::time::Duration;

/// How long a reply may take to be taken by the client.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// The complete, close-delimited HTTP/1.1 response for `answer` (tproxyd's
/// own answers name no server).
pub fn render(answer: &Answer) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(answer.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        answer.status,
        answer.body.len()
    )
    .into_bytes();
    for (name, value) in &answer.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(answer.body.as_bytes());
    out
}

/// Sends `bytes` within [`REPLY_TIMEOUT`]; whether they were taken.
pub async fn send(stream: &mut Stream, bytes: &[u8]) -> bool {
    send_within(stream, bytes, REPLY_TIMEOUT).await
}

/// Why a request head was refused before Pingora saw it. The connection
/// is answered and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadRefusal {
    /// A head Pingora's parser cannot take (400).
    Malformed,
    /// `CONNECT` on a listener that is not a forward proxy (405).
    ConnectNotAllowed,
    /// Longer than `downstream.max_header_bytes` (431).
    TooLarge,
    /// Not complete within `downstream.header_timeout` (408).
    TooSlow,
}

fn answer(status: u16, body: &str) -> Vec<u8> {
    render(&Answer::failed(status, "", body))
}

static REPLIES: LazyLock<[Vec<u8>; 4]> = LazyLock::new(|| {
    [
        answer(400, "400 Bad Request: the request head is malformed\n"),
        answer(
            405,
            "405 Method Not Allowed: CONNECT is for forward listeners\n",
        ),
        answer(
            431,
            "431 Request Header Fields Too Large: the request head is too big\n",
        ),
        answer(408, "408 Request Timeout: the request head took too long\n"),
    ]
});

impl HeadRefusal {
    /// The HTTP status it is answered with.
    pub fn status(self) -> u16 {
        match self {
            HeadRefusal::Malformed => 400,
            HeadRefusal::ConnectNotAllowed => 405,
            HeadRefusal::TooLarge => 431,
            HeadRefusal::TooSlow => 408,
        }
    }

    /// The whole reply, made once.
    pub fn reply(self) -> &'static [u8] {
        &REPLIES[self as usize]
    }

    /// The client-side limit it counts as, if it is one.
    pub fn limit(self) -> Option<DownstreamLimit> {
        match self {
            HeadRefusal::TooLarge => Some(DownstreamLimit::HeaderTooLarge),
            HeadRefusal::TooSlow => Some(DownstreamLimit::HeaderTimeout),
            _ => None,
        }
    }

    /// The refusal reason it is logged and counted with, if any.
    pub fn refusal(self) -> Option<Refusal> {
        match self {
            HeadRefusal::TooLarge => Some(Refusal::HeaderTooLarge),
            HeadRefusal::TooSlow => Some(Refusal::HeaderTimeout),
            _ => None,
        }
    }

    /// The error kind it is logged with, if any (Pingora's names).
    pub fn error(self) -> Option<&'static str> {
        match self {
            HeadRefusal::Malformed => Some("InvalidHTTPHeader"),
            HeadRefusal::ConnectNotAllowed => Some("MethodNotAllowed"),
            _ => None,
        }
    }

    /// The method shown in its log record.
    pub fn method(self) -> &'static str {
        match self {
            HeadRefusal::ConnectNotAllowed => "CONNECT",
            _ => "-",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_whole_and_match_their_status() {
        for r in [
            HeadRefusal::Malformed,
            HeadRefusal::ConnectNotAllowed,
            HeadRefusal::TooLarge,
            HeadRefusal::TooSlow,
        ] {
            let text = String::from_utf8(r.reply().to_vec()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {} ", r.status())),
                "{text}"
            );
            assert!(
                head.contains(&format!("Content-Length: {}", body.len())),
                "{text}"
            );
            assert!(body.starts_with(&r.status().to_string()), "{text}");
        }
        let a = Answer::failed(429, "", "slow down\n").with_header(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        let text = String::from_utf8(render(&a)).unwrap();
        assert!(
            text.contains("429 Too Many Requests\r\n") && text.contains("\r\nretry-after: 1\r\n"),
            "{text}"
        );
    }
}
