//! Policy on flows: the conditions a rule can set on a flow (client,
//! destination, port, the name the client asked for, method, path), the
//! `acl` rule sets built from them, and the routes that choose each flow's
//! egress. Every kind of flow is judged the same
//! way, by the [`Facts`] tproxyd knows of it when it decides; the decision
//! itself (which rule sets apply, in which order, what else is checked) is
//! `crate::decision`'s.
//!
//! A rule set is pure data: it does no I/O, so `tproxyd explain` runs the
//! very code the proxy runs, with a trace of why each rule matched or not.

mod acl;
mod conditions;
mod host;
mod path;
mod routes;

pub use acl::{Acl, AclSettings, Action, Outcome, RuleTrace, Verdict};
pub use conditions::{Conditions, ConditionsSettings};
pub use host::HostPattern;
pub use routes::{Chosen, RouteSettings, RouteTrace, Routes};

use crate::addr::{ClientAddr, OrigDstAddr};

/// What policy knows of a flow when it decides.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The listener it arrived on (its configured name).
    pub listener: &'a str,
    /// The client.
    pub client: ClientAddr,
    /// Where it goes, when known: a transparent flow's original
    /// destination; for a forward request or CONNECT, the address its name
    /// resolved to, or `None` before the name is resolved.
    pub dst: Option<OrigDstAddr>,
    /// The destination port (known even before a name is resolved).
    pub port: u16,
    /// The name the client asked for: Host, SNI or CONNECT authority,
    /// lower-case, without port or trailing dot. `None` when there is none
    /// (a tunnel of what is not TLS, a ClientHello without SNI, HTTP/1.0
    /// without Host).
    pub name: Option<&'a str>,
    /// The request method, where there is a request (HTTP, CONNECT).
    pub method: Option<&'a str>,
    /// The request path, for HTTP requests.
    pub path: Option<&'a str>,
}

/// Whether a rule's conditions hold for a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Every condition holds.
    Match,
    /// At least one does not.
    NoMatch,
    /// Only the destination address can tell, and it is not known yet: the
    /// caller resolves the name and asks again.
    NeedsDestination,
}
