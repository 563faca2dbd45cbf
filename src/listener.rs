//! A listener as configured (`tproxyd.listeners[i]`): its name, address and
//! kind, where the kind carries the policy only that kind has, so a forward
//! listener without its policy, or a passthrough one without its TLS
//! settings, cannot be represented.

use crate::addr::ListenAddr;
use crate::decision::forward::{ForwardKeys, ForwardPolicy};
use crate::decision::Rules;
use crate::error::{invalid, parse_duration, ConfigError};
use crate::flow::{DestinationSource, ListenerId, Mode};
use crate::interception::{show_range, Intercept, InterceptSettings};
use crate::policy::{Acl, Routes};
use crate::sets::Catalog;
use crate::tls::policy::TlsPolicy;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// One entry of `tproxyd.listeners` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSettings {
    /// Shown in logs and metrics; must be unique.
    pub name: String,
    /// `ip:port`. The exact string is the key of the socket in Pingora's
    /// listen-fd table, which is how an upgraded process finds it again.
    pub address: String,
    /// What the listener does.
    pub mode: Mode,
    /// Connect upstream from the client's IP (tproxy, redirect,
    /// tls-passthrough).
    #[serde(default)]
    pub spoof_source: bool,
    /// Forward only: client CIDRs allowed to use the proxy (default none).
    #[serde(default)]
    pub allow_clients: Option<Vec<String>>,
    /// Forward only: ports CONNECT may reach (default `[443]`).
    #[serde(default)]
    pub connect_ports: Option<Vec<u16>>,
    /// Forward only: allow loopback / link-local / own addresses.
    #[serde(default)]
    pub allow_local_destinations: Option<bool>,
    /// TLS passthrough: `tproxy` (default) or `redirect`.
    #[serde(default)]
    pub destination: Option<DestinationSource>,
    /// TLS passthrough policy.
    #[serde(default)]
    pub tls: Option<serde_yaml::Value>,
    /// tproxy/redirect: what to do with connections that are not HTTP/1.x.
    #[serde(default)]
    pub unsupported_protocol: Option<UnsupportedProtocol>,
    /// tproxy/redirect: `off`, or how long a silent client waits before its
    /// connection is spliced (for protocols where the server speaks first).
    #[serde(default)]
    pub server_first_after: Option<String>,
    /// What `tproxyd rules` steers here (every mode but forward).
    #[serde(default)]
    pub intercept: Option<InterceptSettings>,
}

/// What an HTTP listener does with a connection whose first bytes are not
/// an HTTP/1.x request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnsupportedProtocol {
    /// Splice it, byte for byte, to the original destination.
    Tunnel,
    /// Reset it; nothing reaches the origin.
    Reject,
}

impl ListenerSettings {
    /// Keys set for a mode they do not apply to are errors that say so.
    fn check_mode_keys(&self, key: &str) -> Result<(), ConfigError> {
        let (forward, tls, http) = (
            self.mode == Mode::Forward,
            self.mode == Mode::TlsPassthrough,
            matches!(self.mode, Mode::Tproxy | Mode::Redirect),
        );
        let misplaced = [
            (
                "allow_clients",
                self.allow_clients.is_some() && !forward,
                "forward",
            ),
            (
                "connect_ports",
                self.connect_ports.is_some() && !forward,
                "forward",
            ),
            (
                "allow_local_destinations",
                self.allow_local_destinations.is_some() && !forward,
                "forward",
            ),
            (
                "destination",
                self.destination.is_some() && !tls,
                "tls-passthrough",
            ),
            ("tls", self.tls.is_some() && !tls, "tls-passthrough"),
            (
                "unsupported_protocol",
                self.unsupported_protocol.is_some() && !http,
                "tproxy or redirect",
            ),
            (
                "server_first_after",
                self.server_first_after.is_some() && !http,
                "tproxy or redirect",
            ),
            (
                "intercept",
                self.intercept.is_some() && forward,
                "tproxy, redirect or tls-passthrough (a forward proxy is dialed, not intercepted)",
            ),
        ];
        match misplaced.iter().find(|(_, wrong, _)| *wrong) {
            Some((k, _, mode)) => Err(invalid(
                format!("{key}.{k}"),
                format!("only applies to mode: {mode}"),
            )),
            None => Ok(()),
        }
    }

    /// Validates entry `i` in `cx`.
    pub fn validate(self, i: usize, cx: Context<'_>) -> Result<Listener, ConfigError> {
        let resolve_timeout = cx.resolve_timeout;
        let l = self;
        let key = format!("tproxyd.listeners[{i}]");
        if l.name.trim().is_empty() {
            return Err(invalid(format!("{key}.name"), "must not be empty"));
        }
        let socket_addr: SocketAddr = l.address.parse().map_err(|_| {
            invalid(
                format!("{key}.address"),
                format!(
                    "{:?} is not an IP:port address (e.g. \"[::]:8888\" or \"0.0.0.0:8888\")",
                    l.address
                ),
            )
        })?;
        if socket_addr.port() == 0 {
            return Err(invalid(format!("{key}.address"), "port must not be 0"));
        }
        l.check_mode_keys(&key)?;
        let intercept = match l.intercept {
            Some(i) => Some(i.validate(&format!("{key}.intercept"))?),
            None => None,
        };
        let forward = ForwardKeys {
            allow_clients: l.allow_clients.as_deref(),
            connect_ports: l.connect_ports.as_deref(),
            allow_local_destinations: l.allow_local_destinations,
        };
        let server_first_after = match l.server_first_after.as_deref().map(str::trim) {
            None | Some("off") => None,
            Some(d) => Some(parse_duration(&format!("{key}.server_first_after"), d)?),
        };
        let kind = match l.mode {
            Mode::Tproxy | Mode::Redirect => ListenerKind::Http {
                source: if l.mode == Mode::Tproxy {
                    DestinationSource::Tproxy
                } else {
                    DestinationSource::Redirect
                },
                spoof_source: l.spoof_source,
                unsupported_protocol: l
                    .unsupported_protocol
                    .unwrap_or(UnsupportedProtocol::Tunnel),
                server_first_after,
            },
            Mode::Forward if l.spoof_source => {
                return Err(invalid(
                    format!("{key}.spoof_source"),
                    "only tproxy and redirect listeners can spoof the client's address",
                ))
            }
            Mode::Forward => ListenerKind::Forward(forward.validate(&key, resolve_timeout)?),
            Mode::TlsPassthrough => ListenerKind::TlsPassthrough {
                source: l.destination.unwrap_or(DestinationSource::Tproxy),
                spoof_source: l.spoof_source,
                policy: TlsPolicy::from_settings(
                    l.tls.as_ref(),
                    &format!("{key}.tls"),
                    resolve_timeout,
                    cx.sets,
                )?,
            },
        };
        Ok(Listener {
            id: ListenerId {
                name: l.name.as_str().into(),
                mode: l.mode,
            },
            address: l.address,
            socket_addr: ListenAddr::new(socket_addr),
            kind,
            intercept,
        })
    }

    /// What an operator who configures no listener gets: TPROXY on
    /// `[::]:8888`.
    pub fn default_list() -> Vec<ListenerSettings> {
        vec![ListenerSettings {
            name: "lan-http".into(),
            address: "[::]:8888".into(),
            mode: Mode::Tproxy,
            spoof_source: false,
            allow_clients: None,
            connect_ports: None,
            allow_local_destinations: None,
            destination: None,
            tls: None,
            unsupported_protocol: None,
            server_first_after: None,
            intercept: None,
        }]
    }
}

/// What listeners are validated against: settings of other parts.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// `tproxyd.upstream.resolve_timeout` (forward names, SNI checks).
    pub resolve_timeout: Duration,
    /// `tproxyd.sets`, which rules may name.
    pub sets: &'a Catalog,
}

/// What a listener does, with the settings only that kind has.
#[derive(Debug, Clone)]
pub enum ListenerKind {
    /// `tproxy` / `redirect`: plain HTTP to the original destination.
    Http {
        /// Where the original destination comes from.
        source: DestinationSource,
        /// Connect upstream from the client's address.
        spoof_source: bool,
        /// What happens to connections that are not HTTP/1.x.
        unsupported_protocol: UnsupportedProtocol,
        /// A client silent this long gets its connection spliced (`None`:
        /// never; it is closed after `downstream.keepalive_timeout`).
        server_first_after: Option<Duration>,
    },
    /// `forward`: an explicit proxy, never an open one.
    Forward(ForwardPolicy),
    /// `tls-passthrough`: decide by SNI, splice.
    TlsPassthrough {
        /// Where the original destination comes from.
        source: DestinationSource,
        /// Connect upstream from the client's address.
        spoof_source: bool,
        /// What to splice and how to refuse.
        policy: TlsPolicy,
    },
}

/// A validated listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Name and mode.
    pub id: ListenerId,
    /// The address string exactly as configured (the fd-table key).
    pub address: String,
    /// The parsed form of `address`.
    pub socket_addr: ListenAddr,
    /// Kind and its policy.
    pub kind: ListenerKind,
    /// What the firewall steers here, if `tproxyd rules` writes its rules.
    pub intercept: Option<Intercept>,
}

impl Listener {
    /// Its configured name.
    pub fn name(&self) -> &str {
        &self.id.name
    }

    /// What this listener brings to its flows' decision, where `acls` are
    /// the rule sets of `tproxyd.filters` (passthrough listeners have their
    /// own, under `tls.acl`) and `routes` choose the egress.
    pub fn rules<'a>(&'a self, acls: &'a [Acl], routes: &'a Routes) -> Rules<'a> {
        let (forward, tls, acls) = match &self.kind {
            ListenerKind::Forward(p) => (Some(p), None, acls),
            ListenerKind::Http { .. } => (None, None, acls),
            ListenerKind::TlsPassthrough { policy, .. } => {
                (None, Some(policy), policy.acl.as_slice())
            }
        };
        Rules {
            listener: &self.id,
            forward,
            tls,
            acls,
            routes,
        }
    }

    /// Whether it connects upstream from the client's address.
    pub fn spoofs(&self) -> bool {
        matches!(
            self.kind,
            ListenerKind::Http {
                spoof_source: true,
                ..
            } | ListenerKind::TlsPassthrough {
                spoof_source: true,
                ..
            }
        )
    }

    /// Where its connections' original destination comes from (none on
    /// forward listeners, where each request names its own).
    pub fn destination_source(&self) -> Option<DestinationSource> {
        match &self.kind {
            ListenerKind::Http { source, .. } | ListenerKind::TlsPassthrough { source, .. } => {
                Some(*source)
            }
            ListenerKind::Forward(_) => None,
        }
    }

    /// Whether its socket needs `IP_TRANSPARENT` (every kind but forward),
    /// and so the process `CAP_NET_ADMIN`.
    pub fn is_transparent(&self) -> bool {
        !matches!(self.kind, ListenerKind::Forward(_))
    }

    /// Validates the whole list: at least one, names and addresses unique.
    pub fn validate_list(
        list: Vec<ListenerSettings>,
        cx: Context<'_>,
    ) -> Result<Vec<Listener>, ConfigError> {
        if list.is_empty() {
            return Err(invalid(
                "tproxyd.listeners",
                "at least one listener is required",
            ));
        }
        let mut out: Vec<Listener> = Vec::with_capacity(list.len());
        for (i, l) in list.into_iter().enumerate() {
            let l = l.validate(i, cx)?;
            let key = format!("tproxyd.listeners[{i}]");
            if out.iter().any(|o| o.id.name == l.id.name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate listener name {:?}", l.name()),
                ));
            }
            if out.iter().any(|o| o.socket_addr == l.socket_addr) {
                return Err(invalid(
                    format!("{key}.address"),
                    format!("address {} is used by another listener", l.address),
                ));
            }
            let steered = |o: &Listener| match (&o.intercept, &l.intercept) {
                (Some(theirs), Some(ours)) => ours.overlaps(theirs),
                _ => None,
            };
            if let Some((o, port)) = out.iter().find_map(|o| steered(o).map(|p| (o, p))) {
                return Err(invalid(
                    format!("{key}.intercept.ports"),
                    format!(
                        "port {} is already intercepted for listener {:?} on the same interface",
                        show_range(port),
                        o.name()
                    ),
                ));
            }
            out.push(l);
        }
        Ok(out)
    }
}
