//! The closed sets of outcomes tproxyd counts and logs: why it refused a
//! flow, which client-side limit fired, what a non-HTTP connection was,
//! what became of a passthrough connection. Each has the label its metric
//! and its log use, and a position for per-label counters.

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

/// How an opaque relay (passthrough, tunnel) moved its bytes: in the kernel
/// with splice(2), or through user space. Also the setting
/// `upstream.relay`, which says which to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayKind {
    /// socket → pipe → socket, the bytes never copied to user space.
    Splice,
    /// tokio's copy loop through a user-space buffer.
    Copy,
}

impl RelayKind {
    /// Every kind, in label order.
    pub const ALL: [RelayKind; 2] = [RelayKind::Splice, RelayKind::Copy];

    /// The config value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayKind::Splice => "splice",
            RelayKind::Copy => "copy",
        }
    }

    /// Position in [`RelayKind::ALL`].
    pub fn index(self) -> usize {
        match self {
            RelayKind::Splice => 0,
            RelayKind::Copy => 1,
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
        for (i, k) in RelayKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{k:?}");
        }
    }
}
