//! `tproxyd explain`: how the policy decides one flow, rule by rule,
//! without sending any traffic. It builds the flow tproxyd would see from
//! the command line, prints each rule set's rules in order with why each
//! matched or not (which condition, which set, which entry and line), then
//! runs the very decision the proxy runs and prints its outcome. Exit
//! status: 0 allowed, 1 denied, 2 when the flow or the config is unusable.

use crate::addr::{flow_name, ClientAddr, OrigDstAddr};
use crate::config::Config;
use crate::decision::{Decision, Flow, Rules, Target};
use crate::flow::FlowKind;
use crate::listener::{Listener, ListenerKind};
use crate::policy::{Action, Facts};
use crate::tls::ClientHello;
use pingora_http::RequestHeader;
use std::fmt::Write;
use std::net::SocketAddr;

/// One flow to explain, as the command line gives it.
#[derive(Debug, Clone, Default)]
pub struct Question {
    /// The client's IP (or IP:port).
    pub client: String,
    /// The destination `IP:PORT`.
    pub dst: String,
    /// The Host or CONNECT authority.
    pub host: Option<String>,
    /// The TLS SNI.
    pub sni: Option<String>,
    /// The listener's name; by default the one that intercepts the port.
    pub listener: Option<String>,
    /// The method of an HTTP flow.
    pub method: String,
    /// The path of an HTTP flow.
    pub path: String,
}

/// The explanation: the text to print and whether the flow is allowed.
#[derive(Debug)]
pub struct Answer {
    /// What to print.
    pub text: String,
    /// Allowed (exit 0) or denied (exit 1).
    pub allowed: bool,
}

fn parse_client(s: &str) -> Result<ClientAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 0))
        })
        .map(ClientAddr::new)
        .map_err(|_| format!("--client {s:?} is not an IP address"))
}

/// The listener the flow arrives on: named, or the first that intercepts
/// the port for this kind of flow (TLS: passthrough before HTTP), or the
/// first of the right kind.
fn pick<'c>(config: &'c Config, q: &Question, port: u16) -> Result<&'c Listener, String> {
    let listeners = &config.tproxyd.listeners;
    if let Some(name) = &q.listener {
        return listeners
            .iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| format!("no listener named {name:?}"));
    }
    let tls = |l: &&Listener| matches!(l.kind, ListenerKind::TlsPassthrough { .. });
    let http = |l: &&Listener| matches!(l.kind, ListenerKind::Http { .. });
    let steers = |l: &&Listener| l.intercept.as_ref().is_some_and(|i| i.has_port(port));
    let order: [&dyn Fn(&&Listener) -> bool; 4] = match q.sni.is_some() {
        true => [
            &|l| tls(l) && steers(l),
            &|l| http(l) && steers(l),
            &tls,
            &http,
        ],
        false => [&|l| http(l) && steers(l), &http, &|l| !tls(l), &|_| false],
    };
    order
        .iter()
        .find_map(|f| listeners.iter().find(|l| f(l)))
        .ok_or_else(|| "no listener takes this kind of flow; name one with --listener".into())
}

/// Explains `q` under `config` (its sets loaded).
pub async fn explain(config: &Config, q: &Question) -> Result<Answer, String> {
    let client = parse_client(&q.client)?;
    let dst: SocketAddr = q
        .dst
        .parse()
        .map_err(|_| format!("--dst {:?} is not IP:PORT", q.dst))?;
    let dst = OrigDstAddr::new(dst);
    let listener = pick(config, q, dst.port())?;
    let t = &config.tproxyd;
    let rules = listener.rules(&t.filters.acls, &t.routes);
    let name = q.host.as_deref().or(q.sni.as_deref()).and_then(flow_name);
    let (kind, request) = flow_kind(listener, q, dst)?;
    let hello = ClientHello {
        sni: q.sni.clone(),
        ..Default::default()
    };
    let ip = dst.ip().to_string();
    let flow = Flow {
        kind,
        client: Some(client),
        target: match kind {
            FlowKind::Forward | FlowKind::Connect => Target::Named {
                host: &ip,
                port: dst.port(),
            },
            _ => Target::Original(Some(dst)),
        },
        name: name.as_deref(),
        request: request.as_ref(),
        hello: (kind == FlowKind::Passthrough).then_some(&hello),
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "flow: {} on listener {} ({}): client {} -> {dst}, name {}",
        kind.as_str(),
        listener.name(),
        listener.id.mode.as_str(),
        client.ip(),
        name.as_deref().unwrap_or("(none)")
    );
    let denied_by_rules = trace_rule_sets(&mut text, rules, &flow, dst);
    if !denied_by_rules {
        trace_routes(&mut text, rules, &flow, dst);
    }
    let decision = config.tproxyd.decider().decide(rules, &flow).await;
    let allowed = matches!(decision, Decision::Allow(_));
    let by = decision.by().unwrap_or("no rule set decided").to_string();
    let _ = match decision {
        Decision::Allow(a) => {
            let to = a.dst.map_or_else(
                || "(the name, resolved by the parent)".into(),
                |d| d.to_string(),
            );
            let route = a
                .route
                .map_or_else(|| "no route matched".into(), |r| format!("route {r}"));
            writeln!(
                text,
                "decision: allow ({by}), to {to} through egress {} ({route})",
                a.egress.name
            )
        }
        Decision::Deny { answer, .. } => {
            writeln!(text, "decision: deny ({by}): {}", answer.body.trim_end())
        }
    };
    Ok(Answer { text, allowed })
}

/// The kind of flow `q` is on `listener`, and its request head if any.
fn flow_kind(
    listener: &Listener,
    q: &Question,
    dst: OrigDstAddr,
) -> Result<(FlowKind, Option<RequestHeader>), String> {
    let bad = |e: pingora_error::BError| e.to_string();
    match (&listener.kind, q.sni.is_some()) {
        (ListenerKind::TlsPassthrough { .. }, _) => Ok((FlowKind::Passthrough, None)),
        (ListenerKind::Http { .. }, true) => Ok((FlowKind::Tunnel, None)),
        (ListenerKind::Forward(_), _) if q.method.eq_ignore_ascii_case("CONNECT") => {
            let target = format!(
                "{}:{}",
                q.host.as_deref().unwrap_or(&dst.ip().to_string()),
                dst.port()
            );
            let req = RequestHeader::build("CONNECT", target.as_bytes(), None).map_err(bad)?;
            Ok((FlowKind::Connect, Some(req)))
        }
        (kind, false) => {
            let mut req = RequestHeader::build(
                q.method.to_ascii_uppercase().as_str(),
                q.path.as_bytes(),
                None,
            )
            .map_err(bad)?;
            if let Some(h) = &q.host {
                req.insert_header(http::header::HOST, h.as_str())
                    .map_err(bad)?;
            }
            let kind = match kind {
                ListenerKind::Forward(_) => FlowKind::Forward,
                _ => FlowKind::Http,
            };
            Ok((kind, Some(req)))
        }
        (ListenerKind::Forward(_), true) => Err("--sni on a forward listener: use --host".into()),
    }
}

/// What policy sees of `flow` going to `dst`.
fn facts<'a>(rules: Rules<'a>, flow: &Flow<'a>, dst: OrigDstAddr) -> Facts<'a> {
    let request = flow.request;
    Facts {
        listener: &rules.listener.name,
        client: flow.client.unwrap_or(ClientAddr::UNKNOWN),
        dst: Some(dst),
        port: dst.port(),
        name: flow.name,
        method: request.map(|r| r.method.as_str()),
        path: request
            .filter(|r| r.method != http::Method::CONNECT)
            .map(|r| r.uri.path()),
    }
}

/// Every route in order up to the one that chooses the egress.
fn trace_routes(out: &mut String, rules: Rules<'_>, flow: &Flow<'_>, dst: OrigDstAddr) {
    let facts = facts(rules, flow, dst);
    let _ = writeln!(out, "routes:");
    for t in rules.routes.explain(&facts) {
        let verdict = if t.matched { "matched" } else { "not matched" };
        let _ = writeln!(out, "  route {} (egress {}): {verdict}", t.route, t.egress);
        for why in &t.why {
            let _ = writeln!(out, "    {why}");
        }
    }
}

/// Every rule set of `rules`, each rule in order with why it did or did
/// not match, up to the one that decides; whether one denied.
fn trace_rule_sets(out: &mut String, rules: Rules<'_>, flow: &Flow<'_>, dst: OrigDstAddr) -> bool {
    if rules.acls.is_empty() {
        let _ = writeln!(out, "rule sets: none on this listener");
    }
    let facts = facts(rules, flow, dst);
    for acl in rules.acls {
        let _ = writeln!(out, "rule set {}:", acl.key);
        for t in acl.explain(&facts) {
            let verdict = if t.matched { "matched" } else { "not matched" };
            let _ = writeln!(out, "  rule {} ({}): {verdict}", t.rule, t.action.as_str());
            for why in &t.why {
                let _ = writeln!(out, "    {why}");
            }
            if t.matched && t.action == Action::Deny {
                return true;
            }
        }
    }
    false
}
