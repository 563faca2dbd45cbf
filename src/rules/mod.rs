//! `tproxyd rules`: the host's side of interception, derived from the
//! config so the listener ports live in one file. One nftables table,
//! `table inet tproxyd`, steers each listener's `intercept` ports to it
//! (`tproxy` for tproxy listeners, `nat redirect` for redirect ones), fails
//! closed or open as `interception.on_proxy_down` says, rejects QUIC, and
//! leaves the router's own addresses and the bypass lists alone; the
//! policy routing delivers the marked packets to the local stack.
//!
//! [`Ruleset`] is the plan (pure, unit-tested); [`nft`] writes it as
//! nftables text, [`live`] reads a loaded table back for `doctor`, and
//! [`host`] applies or removes it with `nft` and `ip`.

pub mod host;
pub mod live;
pub mod nft;

use crate::config::Section;
use crate::flow::DestinationSource;
use crate::interception::Interception;
use crate::listener::{Listener, ListenerKind};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The nftables table tproxyd owns; nothing else is ever touched.
pub const TABLE: &str = "tproxyd";

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// `meta nfproto ipv4`.
    V4,
    /// `meta nfproto ipv6`.
    V6,
}

impl Family {
    /// nftables' name.
    pub fn nfproto(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// How packets reach a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    /// nftables `tproxy` (prerouting, mangle priority): the packet keeps
    /// its destination, which the listener reads as its local address.
    Tproxy,
    /// `nat redirect` / `dnat` (prerouting, dstnat): the listener reads
    /// `SO_ORIGINAL_DST`.
    Nat,
}

/// One listener's share of the table, for one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steer {
    /// The listener's name (a comment in the table).
    pub listener: String,
    /// tproxy or nat.
    pub hook: Hook,
    /// v4 or v6.
    pub family: Family,
    /// Inclusive destination port ranges.
    pub ports: Vec<(u16, u16)>,
    /// Incoming interfaces; empty: all but `lo`.
    pub interfaces: Vec<String>,
    /// The listener's address when it is not a wildcard.
    pub to: Option<IpAddr>,
    /// The listener's port.
    pub port: u16,
}

/// The whole plan: what `tproxyd rules` prints and applies.
#[derive(Debug, Clone)]
pub struct Ruleset {
    /// Per listener and family, in config order.
    pub steers: Vec<Steer>,
    /// Mark, routing table, fail mode, QUIC, bypass lists.
    pub interception: Interception,
}

/// (hook, family, destination port, listener port, incoming interface):
/// what a table does, compared between the config and the loaded table by
/// `doctor`. The interface is its name, `!lo` for "every interface but
/// lo", or `*` for no interface match.
pub type Mapping = BTreeSet<(Hook, Family, u16, u16, String)>;

impl Ruleset {
    /// The plan for `t`: every listener with an `intercept`.
    pub fn from_config(t: &Section) -> Ruleset {
        Ruleset {
            steers: t.listeners.iter().flat_map(steers).collect(),
            interception: t.interception.clone(),
        }
    }

    /// Each (port → listener port) the plan steers, port by port.
    pub fn mapping(&self) -> Mapping {
        let mut m = Mapping::new();
        for s in &self.steers {
            let ifaces = match s.interfaces.as_slice() {
                [] => vec!["!lo".to_string()],
                names => names.to_vec(),
            };
            for iface in ifaces {
                for &(lo, hi) in &s.ports {
                    m.extend((lo..=hi).map(|p| (s.hook, s.family, p, s.port, iface.clone())));
                }
            }
        }
        m
    }
}

/// The families a listener's address accepts, and the address to steer
/// to: a wildcard `[::]` is dual-stack (tproxyd binds it so), a specific
/// address only its own family, and must be named in the rule (`tproxy`
/// to `:port` finds only sockets on the incoming interface's address).
fn families(l: &Listener) -> Vec<(Family, Option<IpAddr>)> {
    let ip = l.socket_addr.ip();
    match ip {
        IpAddr::V6(v6) if v6.is_unspecified() => vec![(Family::V4, None), (Family::V6, None)],
        IpAddr::V4(v4) if v4.is_unspecified() => vec![(Family::V4, None)],
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => vec![(Family::V4, Some(IpAddr::V4(v4)))],
            None => vec![(Family::V6, Some(ip))],
        },
        IpAddr::V4(_) => vec![(Family::V4, Some(ip))],
    }
}

fn steers(l: &Listener) -> Vec<Steer> {
    let Some(intercept) = &l.intercept else {
        return Vec::new();
    };
    let source = match &l.kind {
        ListenerKind::Http { source, .. } | ListenerKind::TlsPassthrough { source, .. } => *source,
        // Refused by the config check: a forward proxy is dialed.
        ListenerKind::Forward(_) => return Vec::new(),
    };
    let hook = match source {
        DestinationSource::Tproxy => Hook::Tproxy,
        DestinationSource::Redirect => Hook::Nat,
    };
    families(l)
        .into_iter()
        .map(|(family, to)| Steer {
            listener: l.name().to_string(),
            hook,
            family,
            ports: intercept.ports.clone(),
            interfaces: intercept.interfaces.clone(),
            to,
            port: l.socket_addr.port(),
        })
        .collect()
}
