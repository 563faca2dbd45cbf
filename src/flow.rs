//! The vocabulary of a flow through tproxyd: which kind of listener took
//! it, its id, who talks to whom, and how tproxyd answered when it answered
//! itself. Every layer above speaks these types.
//!
//! Bottom layer: imports nothing from the crate.

use serde::Deserialize;
use std::net::SocketAddr;
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
    pub client: SocketAddr,
    /// The address the client originally dialed: where the request goes.
    pub destination: SocketAddr,
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
        client: Option<SocketAddr>,
        destination: SocketAddr,
        request_id: RequestId,
    ) -> FlowInfo {
        FlowInfo {
            client: client.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            destination,
            listener: listener.name.clone(),
            mode: listener.mode,
            request_id,
        }
    }
}

/// Why tproxyd answered (or closed) a flow itself instead of forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An `acl` rule denied it.
    Acl,
    /// Loop protection (own listener, own Via token, no destination).
    Loop,
    /// `host_check` in deny mode.
    HostMismatch,
    /// A forward-proxy request tproxyd may not carry (client, port,
    /// destination).
    ForwardNotAllowed,
    /// Any other filter's early answer.
    Filter,
    /// A TLS passthrough policy (SNI rules, missing SNI, non-TLS, SNI check).
    TlsPolicy,
    /// The `rate_limit` filter (429).
    RateLimit,
    /// The request head took longer than `downstream.header_timeout` (408).
    HeaderTimeout,
    /// The request head was larger than `downstream.max_header_bytes` (431).
    HeaderTooLarge,
    /// Not HTTP on an HTTP listener with `unsupported_protocol: reject`.
    UnsupportedProtocol,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 10] = [
        Refusal::Acl,
        Refusal::Loop,
        Refusal::HostMismatch,
        Refusal::ForwardNotAllowed,
        Refusal::Filter,
        Refusal::TlsPolicy,
        Refusal::RateLimit,
        Refusal::HeaderTimeout,
        Refusal::HeaderTooLarge,
        Refusal::UnsupportedProtocol,
    ];

    /// The metric label and access-log value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Acl => "acl",
            Refusal::Loop => "loop",
            Refusal::HostMismatch => "host-mismatch",
            Refusal::ForwardNotAllowed => "forward-not-allowed",
            Refusal::Filter => "filter",
            Refusal::TlsPolicy => "tls-policy",
            Refusal::RateLimit => "rate-limit",
            Refusal::HeaderTimeout => "header-timeout",
            Refusal::HeaderTooLarge => "header-too-large",
            Refusal::UnsupportedProtocol => "unsupported-protocol",
        }
    }

    /// Position in [`Refusal::ALL`], for per-reason counters.
    pub fn index(self) -> usize {
        match self {
            Refusal::Acl => 0,
            Refusal::Loop => 1,
            Refusal::HostMismatch => 2,
            Refusal::ForwardNotAllowed => 3,
            Refusal::Filter => 4,
            Refusal::TlsPolicy => 5,
            Refusal::RateLimit => 6,
            Refusal::HeaderTimeout => 7,
            Refusal::HeaderTooLarge => 8,
            Refusal::UnsupportedProtocol => 9,
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

/// A client-side limit (`tproxyd.downstream`) that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownstreamLimit {
    /// A request head not complete within `header_timeout` (408, close).
    HeaderTimeout,
    /// No next request within `keepalive_timeout` (close).
    KeepaliveTimeout,
    /// A request head over `max_header_bytes` (431, close).
    HeaderTooLarge,
    /// The process already holds `max_connections` (refused).
    MaxConnections,
    /// The client already holds `max_connections_per_client` (refused).
    PerClient,
}

impl DownstreamLimit {
    /// Every limit, in label order.
    pub const ALL: [DownstreamLimit; 5] = [
        DownstreamLimit::HeaderTimeout,
        DownstreamLimit::KeepaliveTimeout,
        DownstreamLimit::HeaderTooLarge,
        DownstreamLimit::MaxConnections,
        DownstreamLimit::PerClient,
    ];

    /// The metric label (`tproxyd_downstream_limit_total{limit}`).
    pub fn as_str(self) -> &'static str {
        match self {
            DownstreamLimit::HeaderTimeout => "header_timeout",
            DownstreamLimit::KeepaliveTimeout => "keepalive_timeout",
            DownstreamLimit::HeaderTooLarge => "header_too_large",
            DownstreamLimit::MaxConnections => "max_connections",
            DownstreamLimit::PerClient => "per_client",
        }
    }

    /// Position in [`DownstreamLimit::ALL`].
    pub fn index(self) -> usize {
        match self {
            DownstreamLimit::HeaderTimeout => 0,
            DownstreamLimit::KeepaliveTimeout => 1,
            DownstreamLimit::HeaderTooLarge => 2,
            DownstreamLimit::MaxConnections => 3,
            DownstreamLimit::PerClient => 4,
        }
    }
}

/// What the first bytes of a connection on an HTTP listener were, when
/// they were not HTTP/1.x (the connection is then tunnelled or refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A TLS ClientHello.
    Tls,
    /// HTTP/2 with prior knowledge (the `PRI * HTTP/2.0` preface).
    H2PriorKnowledge,
    /// Anything else.
    Unknown,
    /// Nothing: the client waited for the server to speak first.
    ServerFirst,
}

impl Protocol {
    /// Every class, in label order.
    pub const ALL: [Protocol; 4] = [
        Protocol::Tls,
        Protocol::H2PriorKnowledge,
        Protocol::Unknown,
        Protocol::ServerFirst,
    ];

    /// The metric label and access-log value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tls => "tls",
            Protocol::H2PriorKnowledge => "h2-prior-knowledge",
            Protocol::Unknown => "unknown",
            Protocol::ServerFirst => "server-first",
        }
    }

    /// Position in [`Protocol::ALL`].
    pub fn index(self) -> usize {
        match self {
            Protocol::Tls => 0,
            Protocol::H2PriorKnowledge => 1,
            Protocol::Unknown => 2,
            Protocol::ServerFirst => 3,
        }
    }
}

/// What became of a TLS passthrough connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsOutcome {
    /// Relayed to the original destination.
    Spliced,
    /// Refused by policy (SNI rules, missing SNI, SNI check, loop).
    Denied,
    /// Not TLS; the `non_tls` policy spliced or closed it (see the log's
    /// decision).
    NonTls,
    /// No complete, valid ClientHello in time.
    BadHello,
    /// The original destination could not be reached.
    ConnectFailed,
}

impl TlsOutcome {
    /// Every outcome, in label order.
    pub const ALL: [TlsOutcome; 5] = [
        TlsOutcome::Spliced,
        TlsOutcome::Denied,
        TlsOutcome::NonTls,
        TlsOutcome::BadHello,
        TlsOutcome::ConnectFailed,
    ];

    /// The metric label and access-log value.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsOutcome::Spliced => "spliced",
            TlsOutcome::Denied => "denied",
            TlsOutcome::NonTls => "non_tls",
            TlsOutcome::BadHello => "bad_hello",
            TlsOutcome::ConnectFailed => "connect_failed",
        }
    }

    /// Position in [`TlsOutcome::ALL`].
    pub fn index(self) -> usize {
        match self {
            TlsOutcome::Spliced => 0,
            TlsOutcome::Denied => 1,
            TlsOutcome::NonTls => 2,
            TlsOutcome::BadHello => 3,
            TlsOutcome::ConnectFailed => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_label_order() {
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        for (i, o) in TlsOutcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i, "{o:?}");
        }
        for (i, l) in DownstreamLimit::ALL.iter().enumerate() {
            assert_eq!(l.index(), i, "{l:?}");
        }
        for (i, p) in Protocol::ALL.iter().enumerate() {
            assert_eq!(p.index(), i, "{p:?}");
        }
    }

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
        let f = FlowInfo::new(&l, None, "198.51.100.10:80".parse().unwrap(), RequestId(1));
        assert_eq!(f.client, "0.0.0.0:0".parse().unwrap());
        assert_eq!(&*f.listener, "lan");
    }
}
