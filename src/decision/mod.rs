//! The decision: what becomes of a flow. One function, [`Decider::decide`],
//! decides every kind of flow (an HTTP request, a forward request, a
//! CONNECT, a TLS passthrough connection, a tunnel of what is not HTTP)
//! from what tproxyd knows of it, and returns a [`Decision`]: go on to a
//! destination, or the answer that refuses it, with what decided either
//! way (for the access log and `tproxyd explain`).
//!
//! In this order:
//! 1. a forward listener's client allowance (before anything is looked
//!    up, so strangers cost no DNS lookup);
//! 2. a destination at all, and a CONNECT's port;
//! 3. loops: a destination that is one of our own listeners, a request
//!    whose `Via` already carries our token;
//! 4. on passthrough listeners, the ClientHello's own policy (ECH, no SNI,
//!    not TLS at all: `tls.ech`, `tls.missing_sni`, `tls.non_tls`);
//! 5. the rule sets (`acl`), by the name the client asked for **before**
//!    any DNS lookup; a name is resolved only when a rule on the
//!    destination address must be consulted, or to connect;
//! 6. on passthrough listeners, `tls.sni_check`;
//! 7. the route: which egress the flow leaves through (`tproxyd.routes`);
//! 8. for a name (forward, CONNECT): its addresses, none of them local to
//!    us unless allowed, and not one of our own listeners — unless the
//!    flow leaves through a parent proxy, which gets the name itself and
//!    resolves it (an address literal is still checked, `localhost`
//!    refused).
//!
//! Pure but for the lookups (names, and this host's addresses on a port
//! match), so it is unit-tested as a table.

pub mod forward;
mod steps;

use crate::addr::{ClientAddr, OrigDstAddr};
use crate::destination::LoopGuard;
use crate::egress::Egress;
use crate::filters::forwarding::Forwarding;
use crate::flow::{Answer, FlowKind, ListenerId};
use crate::policy::{Acl, Routes};
use crate::tls::policy::TlsPolicy;
use crate::tls::ClientHello;
use forward::ForwardPolicy;
use pingora_http::RequestHeader;
use std::sync::Arc;

/// Where a flow wants to go, as far as tproxyd can tell before deciding.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A transparent listener's original destination; `None` when the
    /// kernel knew none (a redirect listener dialed directly).
    Original(Option<OrigDstAddr>),
    /// A forward request's or CONNECT's host (a name or a literal IP) and
    /// port, not resolved yet.
    Named {
        /// As the client wrote it, without brackets.
        host: &'a str,
        /// The port.
        port: u16,
    },
    /// A request on a forward listener that names no destination (not an
    /// absolute `http://` URI, a CONNECT without `host:port`): 400.
    Unnamed,
}

/// What is known of a flow when it is decided.
#[derive(Debug, Clone, Copy)]
pub struct Flow<'a> {
    /// Which kind of flow.
    pub kind: FlowKind,
    /// Its client.
    pub client: Option<ClientAddr>,
    /// Where it goes.
    pub target: Target<'a>,
    /// The name the client asked for (Host, SNI, CONNECT authority), as
    /// [`crate::addr::flow_name`] checks and normalises it; `None` when
    /// there is none (or it is no host name).
    pub name: Option<&'a str>,
    /// The request head, where there is one (HTTP, forward, CONNECT).
    pub request: Option<&'a RequestHeader>,
    /// The ClientHello, on passthrough listeners (`None`: not TLS).
    pub hello: Option<&'a ClientHello>,
}

/// What one listener brings to the decision.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    /// Which listener (named in answers and rules).
    pub listener: &'a ListenerId,
    /// The forward-proxy policy, on forward listeners.
    pub forward: Option<&'a ForwardPolicy>,
    /// The ClientHello policy, on passthrough listeners.
    pub tls: Option<&'a TlsPolicy>,
    /// The rule sets that judge this listener's flows, in order.
    pub acls: &'a [Acl],
    /// The routes that choose each flow's egress.
    pub routes: &'a Routes,
}

/// A flow let through: where it goes and how it leaves.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// Where to connect: the original destination, or a name's address;
    /// `None` for a name left to a parent proxy to resolve.
    pub dst: Option<OrigDstAddr>,
    /// The egress it leaves through.
    pub egress: Arc<Egress>,
    /// The route that chose the egress (`None`: no route matched).
    pub route: Option<Arc<str>>,
    /// What decided, e.g. `acl:allow:lan`, `missing_sni:allow`.
    pub by: Option<Arc<str>>,
}

impl Admitted {
    /// The destination as the filters see it: unspecified (`0.0.0.0`)
    /// with the port when a parent proxy resolves the name.
    pub fn flow_dst(&self, port: u16) -> OrigDstAddr {
        self.dst.unwrap_or_else(|| {
            OrigDstAddr::new(std::net::SocketAddr::new(
                std::net::Ipv4Addr::UNSPECIFIED.into(),
                port,
            ))
        })
    }
}

/// What becomes of a flow.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Go on.
    Allow(Admitted),
    /// Refuse it with `answer` (on flows without HTTP: close or reset).
    Deny {
        /// The refusal: status, body, reason.
        answer: Answer,
        /// What decided, e.g. `acl:deny:ads`.
        by: Option<Arc<str>>,
    },
}

impl Decision {
    /// A refusal decided by no rule (loops, forward policy, lookups).
    pub fn deny(answer: Answer) -> Decision {
        Decision::Deny { answer, by: None }
    }

    /// Where the flow goes, or the refusal; and what decided.
    pub fn split(self) -> (Result<Admitted, Answer>, Option<Arc<str>>) {
        match self {
            Decision::Allow(a) => {
                let by = a.by.clone();
                (Ok(a), by)
            }
            Decision::Deny { answer, by } => (Err(answer), by),
        }
    }

    /// What decided, for the access log.
    pub fn by(&self) -> Option<&str> {
        match self {
            Decision::Allow(a) => a.by.as_deref(),
            Decision::Deny { by, .. } => by.as_deref(),
        }
    }
}

/// What is the same for every listener of the process: our own listening
/// addresses and our Via token.
#[derive(Clone)]
pub struct Decider {
    loop_guard: LoopGuard,
    forwarding: Arc<Forwarding>,
}

impl Decider {
    /// Refuses loops to `loop_guard`'s addresses and requests whose Via
    /// already carries `forwarding`'s token.
    pub fn new(loop_guard: LoopGuard, forwarding: Arc<Forwarding>) -> Self {
        Decider {
            loop_guard,
            forwarding,
        }
    }

    /// Decides `flow` under `rules`, in the order of the module docs.
    pub async fn decide(&self, rules: Rules<'_>, flow: &Flow<'_>) -> Decision {
        match self.decide_steps(rules, flow).await {
            Ok(d) | Err(d) => d,
        }
    }

    /// Steps 1 to 3 alone, for a path that can save work by refusing
    /// early: a passthrough listener refuses a loop before it reads a
    /// ClientHello. [`Self::decide`] runs the same steps first, so the two
    /// always agree.
    pub fn admit(
        &self,
        rules: Rules<'_>,
        flow: &Flow<'_>,
    ) -> Result<Option<OrigDstAddr>, Decision> {
        steps::forward_client(rules, flow)?;
        let known = steps::known_destination(rules, flow)?;
        if let Some(dst) = known {
            self.check_own_listener(dst)?;
        }
        self.check_via(flow)?;
        Ok(known)
    }

    /// [`Self::decide`] with `?` for the refusals.
    async fn decide_steps(&self, rules: Rules<'_>, flow: &Flow<'_>) -> Result<Decision, Decision> {
        let known = self.admit(rules, flow)?;
        let hello_by = steps::tls_hello(rules, flow)?;
        let (acl_by, resolved) = steps::rule_sets(rules, flow, known).await?;
        let dst = resolved.or(known);
        // What the log says decided: a rule that matched, else the hello's
        // own policy (`missing_sni:allow`), else the rule sets' default.
        let mut by = match (acl_by, hello_by) {
            (Some(a), Some(h)) if a.text.ends_with(":default") => Some(h),
            (a, h) => a.or(h),
        };
        if let Some(check) = steps::sni_check(rules, flow, dst).await? {
            by = Some(check);
        }
        let (chosen, resolved) = steps::route(rules, flow, dst).await?;
        let dst = match resolved.or(dst) {
            Some(d) => Some(d),
            None => steps::resolve_for(rules, flow, &chosen.egress).await?,
        };
        if let Some(dst) = dst {
            self.check_own_listener(dst)?;
        }
        Ok(Decision::Allow(Admitted {
            dst,
            egress: chosen.egress,
            route: chosen.route,
            by: by.map(|b| b.text),
        }))
    }

    fn check_own_listener(&self, dst: OrigDstAddr) -> Result<(), Decision> {
        match self.loop_guard.is_own_listener(dst) {
            false => Ok(()),
            true => Err(Decision::deny(steps::loop_answer(format!(
                "destination {dst} is this proxy's own listener"
            )))),
        }
    }

    fn check_via(&self, flow: &Flow<'_>) -> Result<(), Decision> {
        match flow.request.is_some_and(|r| self.forwarding.is_looping(r)) {
            false => Ok(()),
            true => Err(Decision::deny(steps::loop_answer(format!(
                "request already passed through this proxy (Via {})",
                self.forwarding.via_token()
            )))),
        }
    }
}

#[cfg(test)]
mod tests;
