//! The vocabulary of a flow through tproxyd: which kind of listener took
//! it, its id, who talks to whom, and how tproxyd answered when it answered
//! itself. Every layer above speaks these types.
//!
//! Bottom layer: imports only the address types.

mod labels;

use crate::addr::{ClientAddr, OrigDstAddr};
pub use labels::{DownstreamLimit, Protocol, Refusal, RelayKind, TlsOutcome};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

/// What a listener does with its connections; how it learns the original
/// destination follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// nftables `tproxy` / iptables `TPROXY`: the accepted socket's local
    /// address *is* the original destination.
    Tproxy,
    /// `nat ... redirect`: the kernel rewrote the destination, so it is read
    /// back from conntrack with `SO_ORIGINAL_DST`.
    Redirect,
    /// An explicit (forward) proxy: clients name the destination in the
    /// request (absolute URI, CONNECT). Not transparent.
    Forward,
    /// HTTPS without decryption: peek at the ClientHello, decide by SNI,
    /// splice to the original destination.
    #[serde(rename = "tls-passthrough")]
    TlsPassthrough,
}

impl Mode {
    /// The name used in the config file, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Tproxy => "tproxy",
            Mode::Redirect => "redirect",
            Mode::Forward => "forward",
            Mode::TlsPassthrough => "tls-passthrough",
        }
    }
}

/// The kinds of flow tproxyd decides on, each from its own path: a plain
/// HTTP request on a transparent listener, an absolute-form request on a
/// forward listener, a CONNECT tunnel, a TLS passthrough connection, and a
/// tunnel of what is not HTTP on an HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowKind {
    /// HTTP on a `tproxy` or `redirect` listener.
    Http,
    /// An absolute-form request on a `forward` listener.
    Forward,
    /// `CONNECT host:port` on a `forward` listener.
    Connect,
    /// A connection on a `tls-passthrough` listener.
    Passthrough,
    /// Not HTTP on a `tproxy` or `redirect` listener, tunnelled.
    Tunnel,
}

impl FlowKind {
    /// The name used in the flows API and in `tproxyd explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowKind::Http => "http",
            FlowKind::Forward => "forward",
            FlowKind::Connect => "connect",
            FlowKind::Passthrough => "passthrough",
            FlowKind::Tunnel => "tunnel",
        }
    }

    /// Whether the flow carries HTTP requests that filters see whole.
    pub fn is_http(self) -> bool {
        matches!(self, FlowKind::Http | FlowKind::Forward)
    }
}

/// Where a transparent listener reads the original destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationSource {
    /// The accepted socket's local address (TPROXY).
    Tproxy,
    /// `SO_ORIGINAL_DST` (REDIRECT).
    Redirect,
}

/// A process-unique request id, shown in logs and available to filters
/// (`$request_id`), so a request can be followed across log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

impl RequestId {
    /// The next id. Seeded from the start time and pid so that ids from an
    /// upgraded process do not repeat the old one's.
    pub fn next() -> RequestId {
        static NEXT: LazyLock<AtomicU64> = LazyLock::new(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            AtomicU64::new(nanos ^ (u64::from(std::process::id()) << 40))
        });
        RequestId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Which listener a flow arrived on: its configured name and mode. Cheap
/// to clone (the name is shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerId {
    /// The listener's configured name.
    pub name: Arc<str>,
    /// Its mode.
    pub mode: Mode,
}

/// What a transparent proxy knows about a request's flow.
#[derive(Debug, Clone)]
pub struct FlowInfo {
    /// The client's address (v4-mapped addresses canonicalised).
    pub client: ClientAddr,
    /// The address the client originally dialed: where the request goes.
    pub destination: OrigDstAddr,
    /// The listener's configured name.
    pub listener: Arc<str>,
    /// The listener's mode.
    pub mode: Mode,
    /// This request's id.
    pub request_id: RequestId,
}

impl FlowInfo {
    /// The flow of a request on `listener`. A TCP connection always has a
    /// peer address; should the kernel not report one, the client shows as
    /// `0.0.0.0:0` (matches no client rule) rather than failing the request.
    pub fn new(
        listener: &ListenerId,
        client: Option<ClientAddr>,
        destination: OrigDstAddr,
        request_id: RequestId,
    ) -> FlowInfo {
        FlowInfo {
            client: client.unwrap_or(ClientAddr::UNKNOWN),
            destination,
            listener: listener.name.clone(),
            mode: listener.mode,
            request_id,
        }
    }
}

/// A response tproxyd gives itself instead of forwarding: a refusal by
/// policy (`refusal` set) or a failure it explains (`error` set), with a
/// short plain-text body. Every mode turns it into a response (or, where
/// there is no HTTP, a close) and into its log record and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status, e.g. 403, 502, 508.
    pub status: u16,
    /// A short plain-text body, ending in a newline.
    pub body: String,
    /// Why it was refused, when policy refused it.
    pub refusal: Option<Refusal>,
    /// The error kind for the log, when something failed.
    pub error: Option<&'static str>,
    /// Extra response headers, e.g. `Retry-After` on a 429.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Answer {
    /// A refusal by policy.
    pub fn refused(refusal: Refusal, status: u16, body: impl Into<String>) -> Answer {
        Answer {
            status,
            body: body.into(),
            refusal: Some(refusal),
            error: None,
            headers: Vec::new(),
        }
    }

    /// The same answer with one more response header.
    pub fn with_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Answer {
        self.headers.push((name, value));
        self
    }

    /// A failure (bad request, unreachable destination, …).
    pub fn failed(status: u16, error: &'static str, body: impl Into<String>) -> Answer {
        Answer {
            status,
            body: body.into(),
            refusal: None,
            error: Some(error),
            headers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_hex() {
        let (a, b) = (RequestId::next(), RequestId::next());
        assert_ne!(a, b);
        assert_eq!(RequestId(0xab).to_string(), "00000000000000ab");
    }

    #[test]
    fn a_flow_without_client_address_gets_the_unspecified_one() {
        let l = ListenerId {
            name: "lan".into(),
            mode: Mode::Tproxy,
        };
        let dst = OrigDstAddr::new("198.51.100.10:80".parse().unwrap());
        let f = FlowInfo::new(&l, None, dst, RequestId(1));
        assert_eq!(f.client.to_string(), "0.0.0.0:0");
        assert_eq!(&*f.listener, "lan");
    }
}
