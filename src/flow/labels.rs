//! The closed sets of outcomes tproxyd counts and logs: why it refused a
//! flow, which client-side limit fired, what a non-HTTP connection was,
//! what became of a passthrough connection. Each has the label its metric
//! and its log use, and a position for per-label counters.

/// Declares a label enum: the enum itself (`Debug`, `Clone`, `Copy`,
/// `PartialEq`, `Eq`, plus the attributes given), and
/// - `ALL`: every value, in declaration order (the label order);
/// - `COUNT`: how many there are;
/// - `as_str()`: the label written after `=>`;
/// - `index()`: the position in `ALL`, taken from the declaration order,
///   for per-label counters.
///
/// ```text
/// labels! {
///     /// Doc.
///     pub enum Name {
///         /// Doc.
///         Variant => "label",
///     }
/// }
/// ```
macro_rules! labels {
    (
        $(#[$attr:meta])*
        pub enum $name:ident {
            $( $(#[$doc:meta])* $variant:ident => $label:literal, )+
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$doc])* $variant, )+
        }

        impl $name {
            /// How many there are.
            pub const COUNT: usize = [$($label),+].len();

            /// Every value, in label order.
            pub const ALL: [$name; $name::COUNT] = [$($name::$variant),+];

            /// The label: the metric label, and the access-log or config
            /// value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }

            /// Position in `ALL`, for per-label counters.
            pub fn index(self) -> usize {
                // A fieldless enum without explicit discriminants numbers
                // its variants 0, 1, … in declaration order, as `ALL`.
                self as usize
            }
        }
    };
}

labels! {
    /// Why tproxyd answered (or closed) a flow itself instead of forwarding it.
    pub enum Refusal {
        /// An `acl` rule denied it.
        Acl => "acl",
        /// Loop protection (own listener, own Via token, no destination).
        Loop => "loop",
        /// `host_check` in deny mode.
        HostMismatch => "host-mismatch",
        /// A forward-proxy request tproxyd may not carry (client, port,
        /// destination).
        ForwardNotAllowed => "forward-not-allowed",
        /// Any other filter's early answer.
        Filter => "filter",
        /// A TLS passthrough policy (SNI rules, missing SNI, non-TLS, SNI check).
        TlsPolicy => "tls-policy",
        /// The `rate_limit` filter (429).
        RateLimit => "rate-limit",
        /// The request head took longer than `downstream.header_timeout` (408).
        HeaderTimeout => "header-timeout",
        /// The request head was larger than `downstream.max_header_bytes` (431).
        HeaderTooLarge => "header-too-large",
        /// Not HTTP on an HTTP listener with `unsupported_protocol: reject`.
        UnsupportedProtocol => "unsupported-protocol",
    }
}

labels! {
    /// A client-side limit (`tproxyd.downstream`) that fired; the label is
    /// `tproxyd_downstream_limit_total{limit}`.
    pub enum DownstreamLimit {
        /// A request head not complete within `header_timeout` (408, close).
        HeaderTimeout => "header_timeout",
        /// No next request within `keepalive_timeout` (close).
        KeepaliveTimeout => "keepalive_timeout",
        /// A request head over `max_header_bytes` (431, close).
        HeaderTooLarge => "header_too_large",
        /// The process already holds `max_connections` (refused).
        MaxConnections => "max_connections",
        /// The client already holds `max_connections_per_client`, or under
        /// pressure its fair share (refused).
        PerClient => "per_client",
        /// A new connection at `max_connections` took the place of an idle
        /// one, which was closed.
        Reclaimed => "reclaimed",
    }
}

labels! {
    /// What the first bytes of a connection on an HTTP listener were, when
    /// they were not HTTP/1.x (the connection is then tunnelled or refused).
    pub enum Protocol {
        /// A TLS ClientHello.
        Tls => "tls",
        /// HTTP/2 with prior knowledge (the `PRI * HTTP/2.0` preface).
        H2PriorKnowledge => "h2-prior-knowledge",
        /// Anything else.
        Unknown => "unknown",
        /// Nothing: the client waited for the server to speak first.
        ServerFirst => "server-first",
    }
}

labels! {
    /// What became of a TLS passthrough connection.
    pub enum TlsOutcome {
        /// Relayed to the original destination.
        Spliced => "spliced",
        /// Refused by policy (SNI rules, missing SNI, SNI check, loop).
        Denied => "denied",
        /// Not TLS; the `non_tls` policy spliced or closed it (see the log's
        /// decision).
        NonTls => "non_tls",
        /// No complete, valid ClientHello in time.
        BadHello => "bad_hello",
        /// The original destination could not be reached.
        ConnectFailed => "connect_failed",
    }
}

labels! {
    /// How an opaque relay (passthrough, tunnel) moved its bytes: in the kernel
    /// with splice(2), or through user space. Also the setting
    /// `upstream.relay`, which says which to try (its values are the labels).
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum RelayKind {
        /// socket → pipe → socket, the bytes never copied to user space.
        Splice => "splice",
        /// tokio's copy loop through a user-space buffer.
        Copy => "copy",
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

    #[test]
    fn counts_labels_and_config_values_agree() {
        assert_eq!(
            [Refusal::COUNT, DownstreamLimit::COUNT, Protocol::COUNT],
            [10, 6, 4]
        );
        assert_eq!([TlsOutcome::COUNT, RelayKind::COUNT], [5, 2]);
        assert_eq!(Refusal::HostMismatch.as_str(), "host-mismatch");
        assert_eq!(TlsOutcome::ALL[4], TlsOutcome::ConnectFailed);
        // `upstream.relay` takes the labels as its values.
        for k in RelayKind::ALL {
            let parsed: RelayKind = serde_yaml::from_str(k.as_str()).unwrap();
            assert_eq!(parsed, k);
        }
    }
}
