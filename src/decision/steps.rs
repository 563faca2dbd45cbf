//! The steps of [`super::Decider::decide`], each a small function that
//! either lets the flow go on or returns the refusal.

use super::{Decision, Flow, Rules, Target};
use crate::addr::is_localhost;
use crate::addr::{ClientAddr, OrigDstAddr};
use crate::egress::Egress;
use crate::filters::host_check::{CheckMode, Outcome as HostOutcome};
use crate::flow::{Answer, FlowKind, Refusal};
use crate::policy::{Action, Chosen, Facts, Outcome};
use crate::tls::policy::Policy;
use log::warn;
use std::sync::Arc;

/// What decided a flow so far.
#[derive(Debug)]
pub(super) struct By {
    pub text: Arc<str>,
}

/// The 508 for a loop.
pub(super) fn loop_answer(why: String) -> Answer {
    Answer::refused(Refusal::Loop, 508, format!("508 Loop Detected: {why}\n"))
}

/// A forward listener serves only the clients it allows.
pub(super) fn forward_client(rules: Rules<'_>, flow: &Flow<'_>) -> Result<(), Decision> {
    match rules.forward {
        Some(policy) if !policy.client_allowed(flow.client) => Err(Decision::deny(
            super::forward::ForwardPolicy::client_refused(flow.client),
        )),
        _ => Ok(()),
    }
}

/// The destination when it is known without a lookup; a CONNECT's port
/// checked.
pub(super) fn known_destination(
    rules: Rules<'_>,
    flow: &Flow<'_>,
) -> Result<Option<OrigDstAddr>, Decision> {
    match flow.target {
        Target::Original(Some(dst)) => Ok(Some(dst)),
        Target::Original(None) => {
            let l = rules.listener;
            Err(Decision::deny(loop_answer(format!(
                "listener {} ({}) has no original destination for this connection; \
                 was it dialed directly?",
                l.name,
                l.mode.as_str()
            ))))
        }
        Target::Unnamed => Err(Decision::deny(Answer::failed(
            400,
            "BadRequest",
            match flow.kind {
                FlowKind::Connect => "400 Bad Request: CONNECT needs host:port\n",
                _ => "400 Bad Request: this is a forward proxy; send absolute http:// URIs or CONNECT\n",
            },
        ))),
        Target::Named { port, .. } => {
            if flow.kind == FlowKind::Connect {
                if let Some(policy) = rules.forward {
                    policy.check_connect_port(port).map_err(Decision::deny)?;
                }
            }
            Ok(None)
        }
    }
}

fn tls_denied(by: Arc<str>) -> Decision {
    Decision::Deny {
        answer: Answer::refused(Refusal::TlsPolicy, 403, "403 Forbidden: TLS policy\n"),
        by: Some(by),
    }
}

/// A passthrough listener's policy on the ClientHello itself.
pub(super) fn tls_hello(rules: Rules<'_>, flow: &Flow<'_>) -> Result<Option<By>, Decision> {
    let Some(tls) = rules.tls else {
        return Ok(None);
    };
    let (policy, what) = match flow.hello {
        None => (tls.non_tls, "non_tls"),
        Some(h) if h.ech && tls.ech == Policy::Deny => return Err(tls_denied("ech:deny".into())),
        Some(h) if h.sni.is_none() => (tls.missing_sni, "missing_sni"),
        Some(_) => return Ok(None),
    };
    let text: Arc<str> = format!("{what}:{}", policy.as_str()).into();
    match policy {
        Policy::Allow => Ok(Some(By { text })),
        Policy::Deny => Err(tls_denied(text)),
    }
}

/// What policy sees of `flow`, with `dst` when known.
pub(super) fn facts<'a>(rules: Rules<'a>, flow: &Flow<'a>, dst: Option<OrigDstAddr>) -> Facts<'a> {
    let port = match flow.target {
        Target::Named { port, .. } => port,
        Target::Original(d) => d.map_or(0, |d| d.port()),
        Target::Unnamed => 0,
    };
    let request = flow.request;
    Facts {
        listener: &rules.listener.name,
        client: flow.client.unwrap_or(ClientAddr::UNKNOWN),
        dst,
        port,
        name: flow.name,
        method: request.map(|r| r.method.as_str()),
        path: request
            .filter(|r| r.method != http::Method::CONNECT)
            .map(|r| r.uri.path()),
    }
}

/// The route: the egress the flow leaves through, and the address when a
/// route on the destination made a lookup necessary.
pub(super) async fn route(
    rules: Rules<'_>,
    flow: &Flow<'_>,
    dst: Option<OrigDstAddr>,
) -> Result<(Chosen, Option<OrigDstAddr>), Decision> {
    let mut facts = facts(rules, flow, dst);
    if let Some(chosen) = rules.routes.choose(&facts) {
        return Ok((chosen, None));
    }
    let resolved = resolve(rules, flow).await?;
    facts.dst = Some(resolved);
    match rules.routes.choose(&facts) {
        Some(chosen) => Ok((chosen, Some(resolved))),
        None => Err(Decision::deny(internal("no route could decide"))),
    }
}

/// A name's address for the egress that will carry it: looked up for a
/// direct egress; not at all for a parent proxy, which gets the name
/// itself (an address literal is still checked, and `localhost` refused,
/// as for a direct flow: a parent on this host would reach this host).
pub(super) async fn resolve_for(
    rules: Rules<'_>,
    flow: &Flow<'_>,
    egress: &Egress,
) -> Result<Option<OrigDstAddr>, Decision> {
    if !egress.is_proxy() {
        return resolve(rules, flow).await.map(Some);
    }
    let (Target::Named { host, .. }, Some(policy)) = (flow.target, rules.forward) else {
        return Ok(None);
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return resolve(rules, flow).await.map(Some);
    }
    if is_localhost(&flow.name.unwrap_or_default().to_ascii_lowercase())
        && !policy.allow_local_destinations
    {
        return Err(Decision::deny(Answer::refused(
            Refusal::ForwardNotAllowed,
            403,
            format!("403 Forbidden: destination {host} is local to the proxy\n"),
        )));
    }
    Ok(None)
}

/// The rule sets in order: each may deny; the last allow is what decided.
/// A name is resolved here only when a rule on the destination address
/// comes first; the address is returned then.
pub(super) async fn rule_sets(
    rules: Rules<'_>,
    flow: &Flow<'_>,
    known: Option<OrigDstAddr>,
) -> Result<(Option<By>, Option<OrigDstAddr>), Decision> {
    let mut dst = known;
    let mut facts = facts(rules, flow, dst);
    let mut by = None;
    for acl in rules.acls {
        let mut outcome = acl.decide(&facts);
        if outcome == Outcome::NeedsDestination {
            let resolved = resolve(rules, flow).await?;
            (dst, facts.dst) = (Some(resolved), Some(resolved));
            outcome = acl.decide(&facts);
        }
        let Outcome::Decided(verdict) = outcome else {
            return Err(Decision::deny(internal("a rule set could not decide")));
        };
        let text = verdict.label.clone();
        if verdict.action == Action::Deny {
            let body = format!(
                "403 Forbidden: denied by gateway policy (rule {})\n",
                verdict.rule
            );
            return Err(Decision::Deny {
                answer: Answer::refused(Refusal::Acl, 403, body),
                by: Some(text),
            });
        }
        by = Some(By { text });
    }
    Ok((by, dst))
}

/// `tls.sni_check`: the SNI must resolve to the destination.
pub(super) async fn sni_check(
    rules: Rules<'_>,
    flow: &Flow<'_>,
    dst: Option<OrigDstAddr>,
) -> Result<Option<By>, Decision> {
    let (Some(check), Some(sni), Some(dst)) = (
        rules.tls.and_then(|t| t.sni_check.as_ref()),
        flow.hello.and_then(|h| h.sni.as_deref()),
        dst,
    ) else {
        return Ok(None);
    };
    let HostOutcome::Mismatch(why) = check.name_matches(sni, dst.ip()).await else {
        return Ok(None);
    };
    warn!("TLS: SNI {sni} does not match destination {dst}: {why}");
    if check.mode() == CheckMode::Deny {
        return Err(tls_denied("sni_check:deny".into()));
    }
    Ok(Some(By {
        text: "sni_check:mismatch".into(),
    }))
}

/// A named destination's address: resolved, checked by the forward
/// policy (nothing local to us unless allowed), the first one.
pub(super) async fn resolve(rules: Rules<'_>, flow: &Flow<'_>) -> Result<OrigDstAddr, Decision> {
    let (Target::Named { host, port }, Some(policy)) = (flow.target, rules.forward) else {
        return Err(Decision::deny(internal("no destination to resolve")));
    };
    let addrs = policy.resolve(host, port).await.map_err(Decision::deny)?;
    if flow.kind == FlowKind::Connect {
        policy.check_connect_port(port).map_err(Decision::deny)?;
    }
    policy.check_destinations(&addrs).map_err(Decision::deny)?;
    Ok(OrigDstAddr::new(addrs[0]))
}

/// A 500 for a state the decision should never reach.
fn internal(why: &str) -> Answer {
    Answer::failed(
        500,
        "InternalError",
        format!("500 Internal Server Error: {why}\n"),
    )
}
