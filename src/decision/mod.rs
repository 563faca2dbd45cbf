//! Admission: may this request (or tunnel, or connection) go on to its
//! destination at all? One pure decision for every mode, made before any
//! filter runs and before anything is connected, so that loops and forward
//! proxy abuse are refused the same way everywhere and counted once.
//!
//! [`Admission::admit`] needs no root and no network (it only asks the
//! kernel for this host's addresses when a destination port equals one of
//! our listening ports), so it is unit-tested directly.

pub mod forward;

use crate::destination::LoopGuard;
use crate::filters::forwarding::Forwarding;
use crate::flow::{Answer, ListenerId, Refusal};
use forward::ForwardPolicy;
use pingora_http::RequestHeader;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where a flow wants to go, as far as tproxyd could tell.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A transparent listener's original destination; `None` when the
    /// kernel knew none (a redirect listener dialed directly).
    Original(Option<SocketAddr>),
    /// A forward listener's destination: every address its name resolved
    /// to (the first one is used).
    Resolved(&'a [SocketAddr]),
}

/// The listener-specific part of the decision.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Which listener (named in answers).
    pub listener: &'a ListenerId,
    /// The forward-proxy policy, on forward listeners.
    pub forward: Option<&'a ForwardPolicy>,
}

/// What is the same for every listener of the process: our own listening
/// addresses and our Via token.
#[derive(Clone)]
pub struct Admission {
    loop_guard: LoopGuard,
    forwarding: Arc<Forwarding>,
}

impl Admission {
    /// Refuses loops to `loop_guard`'s addresses and requests whose Via
    /// already carries `forwarding`'s token.
    pub fn new(loop_guard: LoopGuard, forwarding: Arc<Forwarding>) -> Self {
        Admission {
            loop_guard,
            forwarding,
        }
    }

    /// The decision, in this order: a forward listener's client allowance,
    /// a destination at all, a CONNECT's port, a forward destination that
    /// is local to us, a destination that is one of our own listeners, a
    /// request that already passed through us (Via). `request` is the
    /// request head where there is one (HTTP, CONNECT); none for TLS
    /// passthrough. Returns the destination to connect to, or the answer.
    pub fn admit(
        &self,
        rules: Rules<'_>,
        client: Option<SocketAddr>,
        target: Target<'_>,
        request: Option<&RequestHeader>,
    ) -> Result<SocketAddr, Answer> {
        if let Some(policy) = rules.forward {
            if !policy.client_allowed(client) {
                return Err(ForwardPolicy::client_refused(client));
            }
        }
        let dst = match target {
            Target::Original(Some(dst)) => dst,
            Target::Original(None) => {
                let l = rules.listener;
                return Err(Answer::refused(
                    Refusal::Loop,
                    508,
                    format!(
                        "508 Loop Detected: listener {} ({}) has no original destination for this connection; was it dialed directly?\n",
                        l.name,
                        l.mode.as_str()
                    ),
                ));
            }
            Target::Resolved([]) => {
                return Err(Answer::failed(
                    502,
                    "ResolveError",
                    "502 Bad Gateway: no address\n",
                ))
            }
            Target::Resolved(addrs) => {
                let policy = rules
                    .forward
                    .expect("resolved targets are a forward listener's");
                if request.is_some_and(|r| r.method == http::Method::CONNECT) {
                    policy.check_connect_port(addrs[0].port())?;
                }
                policy.check_destinations(addrs)?;
                addrs[0]
            }
        };
        if self.loop_guard.is_own_listener(dst) {
            return Err(Answer::refused(
                Refusal::Loop,
                508,
                format!("508 Loop Detected: destination {dst} is this proxy's own listener\n"),
            ));
        }
        if request.is_some_and(|r| self.forwarding.is_looping(r)) {
            return Err(Answer::refused(
                Refusal::Loop,
                508,
                format!(
                    "508 Loop Detected: request already passed through this proxy (Via {})\n",
                    self.forwarding.via_token()
                ),
            ));
        }
        Ok(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::forwarding::ForwardingRaw;
    use crate::flow::Mode;
    use std::time::Duration;

    fn admission() -> Admission {
        let guard = LoopGuard::new([
            "[::]:8888".parse().unwrap(),
            "192.0.2.1:9999".parse().unwrap(),
        ]);
        let fwd = Forwarding::new(ForwardingRaw::default(), None).unwrap();
        Admission::new(guard, Arc::new(fwd))
    }

    fn id(mode: Mode) -> ListenerId {
        ListenerId {
            name: "lan".into(),
            mode,
        }
    }

    fn forward_policy() -> ForwardPolicy {
        let s: forward::ForwardSettings =
            serde_yaml::from_str("{allow_clients: [192.0.2.0/24], connect_ports: [443]}").unwrap();
        s.validate("l", Duration::from_secs(1)).unwrap()
    }

    fn req(method: &str, target: &str, via: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        if let Some(v) = via {
            r.append_header("Via", v).unwrap();
        }
        r
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// One row: listener mode, forward policy?, client, target, request,
    /// expected destination or (status, refusal).
    type Row<'a> = (
        &'a str,
        Mode,
        bool,
        &'a str,
        Target<'a>,
        Option<RequestHeader>,
        Result<&'a str, (u16, Option<Refusal>)>,
    );

    #[test]
    fn decisions() {
        let a = admission();
        let p = forward_policy();
        let public = [addr("198.51.100.10:443")];
        let mixed = [addr("198.51.100.10:80"), addr("127.0.0.1:80")];
        let own = [addr("127.0.0.1:8888")];
        let loop_508 = Err((508, Some(Refusal::Loop)));
        let fwd_403 = Err((403, Some(Refusal::ForwardNotAllowed)));
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("transparent ok", Mode::Tproxy, false, "192.0.2.10:1", Target::Original(Some(addr("198.51.100.10:80"))), Some(req("GET", "/", None)), Ok("198.51.100.10:80")),
            ("no destination", Mode::Redirect, false, "192.0.2.10:1", Target::Original(None), Some(req("GET", "/", None)), loop_508),
            ("own listener, loopback", Mode::Tproxy, false, "192.0.2.10:1", Target::Original(Some(addr("127.0.0.1:8888"))), Some(req("GET", "/", None)), loop_508),
            ("own listener, exact", Mode::Tproxy, false, "192.0.2.10:1", Target::Original(Some(addr("192.0.2.1:9999"))), None, loop_508),
            ("same port elsewhere", Mode::Tproxy, false, "192.0.2.10:1", Target::Original(Some(addr("198.51.100.2:8888"))), None, Ok("198.51.100.2:8888")),
            ("our Via token", Mode::Tproxy, false, "192.0.2.10:1", Target::Original(Some(addr("198.51.100.10:80"))), Some(req("GET", "/", Some("1.0 a, 1.1 tproxyd"))), loop_508),
            ("another proxy's Via", Mode::Tproxy, false, "192.0.2.10:1", Target::Original(Some(addr("198.51.100.10:80"))), Some(req("GET", "/", Some("1.1 squid"))), Ok("198.51.100.10:80")),
            ("no Via check without a request", Mode::TlsPassthrough, false, "192.0.2.10:1", Target::Original(Some(addr("198.51.100.10:443"))), None, Ok("198.51.100.10:443")),
            ("forward, stranger", Mode::Forward, true, "203.0.113.5:1", Target::Resolved(&public), Some(req("CONNECT", "x:443", None)), fwd_403),
            ("forward, CONNECT ok", Mode::Forward, true, "192.0.2.10:1", Target::Resolved(&public), Some(req("CONNECT", "x:443", None)), Ok("198.51.100.10:443")),
            ("forward, CONNECT port", Mode::Forward, true, "192.0.2.10:1", Target::Resolved(&mixed), Some(req("CONNECT", "x:80", None)), fwd_403),
            ("forward, a local address among others", Mode::Forward, true, "192.0.2.10:1", Target::Resolved(&mixed), Some(req("GET", "http://x/", None)), fwd_403),
            ("forward, no address", Mode::Forward, true, "192.0.2.10:1", Target::Resolved(&[]), None, Err((502, None))),
            ("forward, GET ok on any port", Mode::Forward, true, "192.0.2.10:1", Target::Resolved(&mixed[..1]), Some(req("GET", "http://x/", None)), Ok("198.51.100.10:80")),
            ("forward, no client address", Mode::Forward, true, "0.0.0.0:0", Target::Resolved(&public), None, fwd_403),
            ("forward to own listener (allowed locals)", Mode::Forward, false, "192.0.2.10:1", Target::Original(Some(own[0])), None, loop_508),
        ];
        let mut failures = Vec::new();
        for (name, mode, forward, client, target, request, want) in rows {
            let listener = id(mode);
            let rules = Rules {
                listener: &listener,
                forward: forward.then_some(&p),
            };
            let client = Some(addr(client)).filter(|c| !c.ip().is_unspecified());
            let got = a
                .admit(rules, client, target, request.as_ref())
                .map(|d| d.to_string())
                .map_err(|e| (e.status, e.refusal));
            let want = want.map(str::to_string);
            if got != want {
                failures.push(format!("{name}: got {got:?}, want {want:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
