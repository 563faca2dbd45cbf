//! Where a request goes once it is decided: the Pingora peer for its
//! egress (the destination itself, from the client's address when the
//! listener spoofs; a parent HTTP proxy, which gets the request in
//! absolute form with its credentials; a SOCKS5 proxy, which gets the
//! name), and what happens when a parent fails (a 502/504 naming it, or,
//! with `fallback: direct`, Pingora's retry going direct).

use super::ctx::RequestCtx;
use crate::egress::metrics::Outcome;
use crate::egress::open::{direct_setup, ParentL4, SocksL4};
use crate::egress::{Egress, Fallback, Via};
use crate::shared::ListenerState;
use crate::upstream::connector::{pool_group, SetupConnect};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use std::net::SocketAddr;
use std::sync::Arc;

/// The egress a request leaves through now: its decided one, or `direct`
/// once its parent failed and it fell back.
pub fn current(ctx: &RequestCtx) -> Arc<Egress> {
    match (&ctx.egress, ctx.fell_back) {
        (Some(e), false) => e.clone(),
        _ => Egress::builtin(),
    }
}

/// Counts the request's outcome at its egress, once it ended: `ok` when it
/// reached its destination and no parent refused it (failures were
/// counted when they happened).
pub fn count_outcome(ctx: &RequestCtx) {
    if ctx.summary.upstream.is_some() && ctx.summary.parent_status.is_none() {
        current(ctx).metrics.outcome(Outcome::Ok);
    }
}

/// The Pingora peer for the request of `ctx` on `state`'s listener.
pub fn peer(state: &ListenerState, ctx: &RequestCtx) -> Result<Box<HttpPeer>> {
    let egress = current(ctx);
    let remote = &ctx.remote;
    let u = &state.shared.upstream;
    let addr: SocketAddr = match (remote.addr, egress.is_proxy()) {
        // Through a parent or SOCKS proxy the peer's address is not where
        // the socket goes: Pingora checks a pooled socket's peer against
        // it before reuse, except for 0.0.0.0, so that is what a proxied
        // peer says (the pool key is `group_key`, which names the target).
        (_, true) => SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), remote.port),
        (Some(a), false) => a.socket_addr(),
        (None, false) => {
            return Error::e_explain(ErrorType::InternalError, "no destination address")
        }
    };
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(u.connect_timeout);
    peer.options.total_connection_timeout = Some(u.connect_timeout * 2);
    peer.options.read_timeout = Some(u.read_timeout);
    peer.options.write_timeout = Some(u.write_timeout);
    peer.options.idle_timeout = Some(u.idle_timeout);
    match &egress.via {
        Via::Direct { .. } => {
            let spoofs = state.listener.spoofs();
            let spoof = ctx.summary.client.filter(|_| spoofs).map(|c| c.ip());
            let setup = direct_setup(&egress, spoof, u);
            peer.options.upstream_tcp_sock_tweak_hook = setup.hook();
            if spoof.is_some() || !egress.is_plain_direct() {
                // Pingora's pool key ignores the socket's setup: a pooled
                // connection is kept for its client (spoofed) and egress.
                peer.group_key = pool_group((&*egress.name, spoof));
            }
            if spoof.is_some() {
                peer.options.custom_l4 = Some(Arc::new(SetupConnect {
                    setup,
                    timeout: u.connect_timeout,
                }));
            }
        }
        Via::Http(..) => {
            peer.options.custom_l4 = Some(Arc::new(ParentL4 {
                egress: egress.clone(),
                conf: u.clone(),
            }));
            peer.group_key = pool_group((&*egress.name, remote));
        }
        Via::Socks5(..) => {
            peer.options.custom_l4 = Some(Arc::new(SocksL4 {
                egress: egress.clone(),
                target: remote.clone(),
                conf: u.clone(),
            }));
            peer.group_key = pool_group((&*egress.name, remote));
        }
    }
    Ok(Box::new(peer))
}

/// For a parent HTTP proxy: the request in absolute form, naming the host
/// the client asked for (its Host as sent, else the destination), with
/// the egress's credentials.
pub fn to_parent_form(req: &mut RequestHeader, ctx: &RequestCtx) -> Result<()> {
    let Via::Http(_, credentials) = &current(ctx).via else {
        return Ok(());
    };
    // The checked name (never the Host as sent: it could say more).
    let r = &ctx.remote;
    let authority = match (&r.name, r.port) {
        (Some(n), 80) if !n.contains(':') => n.clone(),
        _ => r.authority(),
    };
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = format!("http://{authority}{path}");
    req.set_raw_path(target.as_bytes())?;
    req.remove_header(&http::header::PROXY_AUTHORIZATION);
    if let Some(c) = credentials {
        req.insert_header(
            http::header::PROXY_AUTHORIZATION,
            crate::egress::open::basic(c),
        )?;
    }
    Ok(())
}

/// A failed connect: through a parent that may fall back, the request is
/// retried direct; otherwise it fails (counted either way).
pub fn connect_failed(ctx: &mut RequestCtx, e: &mut Error) {
    let egress = current(ctx);
    let refused = e.etype() == &ErrorType::ConnectProxyFailure;
    let can_fall_back = egress.is_proxy()
        && egress.fallback == Fallback::Direct
        && ctx.remote.addr.is_some()
        && !refused;
    if can_fall_back {
        log::warn!("egress {}: {e}; falling back to direct", egress.name);
        egress.metrics.outcome(Outcome::Fallback);
        ctx.fell_back = true;
        ctx.summary.egress = Some("direct".into());
        e.set_retry(true);
        return;
    }
    egress.metrics.outcome(match refused {
        true => Outcome::Refused,
        false => Outcome::Unreachable,
    });
    // There is exactly one way out and it just failed on a fresh
    // connection: retrying only delays the 502/504.
    e.set_retry(false);
}

/// A parent HTTP proxy that answers 407 refuses the request itself (not
/// the origin): the client gets a 502 naming it.
pub fn parent_refusal(ctx: &mut RequestCtx, status: u16) -> Option<Box<Error>> {
    let egress = current(ctx);
    if status != 407 || !matches!(egress.via, Via::Http(..)) {
        return None;
    }
    egress.metrics.outcome(Outcome::Refused);
    ctx.summary.parent_status = Some(status);
    ctx.summary.error = Some("ParentRefused");
    Some(Error::explain(
        ErrorType::HTTPStatus(502),
        format!(
            "parent proxy {} refused: 407 Proxy Authentication Required",
            egress.name
        ),
    ))
}

/// The body of a failure through a proxy egress, naming it; `None` for a
/// direct one (the usual body names the destination).
pub fn failure_body(ctx: &RequestCtx, code: u16, e: &Error) -> Option<String> {
    let egress = current(ctx);
    if !egress.is_proxy() || !matches!(code, 502 | 504) {
        return None;
    }
    let what = if code == 504 {
        "Gateway Timeout"
    } else {
        "Bad Gateway"
    };
    let why = match ctx.summary.parent_status {
        Some(407) => format!(
            "parent proxy {} refused: 407 Proxy Authentication Required",
            egress.name
        ),
        Some(s) => format!("parent proxy {} refused: {s}", egress.name),
        None => format!(
            "through {}: {}",
            egress.name,
            super::failure::upstream_reason(e)
        ),
    };
    Some(format!(
        "{code} {what}: {}: {why}\n",
        ctx.remote.authority()
    ))
}
