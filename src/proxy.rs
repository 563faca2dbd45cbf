//! The HTTP proxy logic: Pingora's `ProxyHttp` callbacks for one listener.
//!
//! Each request goes to the connection's original destination, never to
//! where its Host header points; the Host header is passed through as is.

use crate::access_log::{AccessLog, Record};
use crate::config::{Listener, Mode, UpstreamConf};
use crate::connector::{pool_group, SockHook, SpoofConnect};
use crate::destination::{client_address, original_destination, LoopGuard};
use crate::filters::forwarding::Forwarding;
use crate::filters::{FilterChain, FilterCtx, FlowInfo, LogSummary, RequestId};
use crate::forward::split_authority;
use crate::lifecycle::Draining;
use crate::metrics::{ConnectFailure, ConnectionGuard, ListenerMetrics, Refusal, TimeoutPhase};
use async_trait::async_trait;
use bytes::Bytes;
use log::warn;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Settings shared by all listeners of one process.
pub struct Shared {
    /// Forwarding headers and the Via loop token (also first in `chain`).
    pub forwarding: Arc<Forwarding>,
    /// All filters, in order.
    pub chain: FilterChain,
    /// Our own listening addresses.
    pub loop_guard: LoopGuard,
    /// Upstream timeouts.
    pub upstream: UpstreamConf,
    /// Set when this process is being replaced or stopped.
    pub draining: Draining,
    /// The access log, unless disabled.
    pub access_log: Option<AccessLog>,
    /// Sets `SO_MARK` on Pingora's upstream sockets (`upstream.mark`).
    pub mark_hook: Option<SockHook>,
}

/// The proxy behind one transparent listener (Pingora runs one service per
/// listener, which is how a request knows its listener's mode and name).
pub struct TransparentProxy {
    listener: Listener,
    name: Arc<str>,
    shared: Arc<Shared>,
    metrics: ListenerMetrics,
}

impl TransparentProxy {
    /// A proxy for `listener`.
    pub fn new(listener: Listener, shared: Arc<Shared>) -> Self {
        let name = listener.name.as_str().into();
        let metrics = ListenerMetrics::new(&listener);
        TransparentProxy {
            listener,
            name,
            shared,
            metrics,
        }
    }

    /// This listener's metrics.
    pub fn metrics(&self) -> &ListenerMetrics {
        &self.metrics
    }
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    request_id: RequestId,
    client: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    /// Set when the proxy itself answered the request.
    refused: Option<Refusal>,
    /// The filters' context, once the flow is known.
    filter: Option<FilterCtx>,
    /// When the upstream connect started (for its duration).
    connect_started: Option<Instant>,
    /// The upstream connection: local address, reused, connect time.
    upstream_local: Option<SocketAddr>,
    upstream_reused: Option<bool>,
    connect_time: Option<std::time::Duration>,
    _in_flight: ConnectionGuard,
}

fn display_opt(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "-".to_string(), |a| a.to_string())
}

/// The authority of an absolute-form `http://` request target. Pingora
/// keeps such a target verbatim in `raw_path()` (its `uri` holds only the
/// path) and has already checked that Host equals this authority.
fn absolute_target(req: &RequestHeader) -> Option<String> {
    let target: http::Uri = std::str::from_utf8(req.raw_path()).ok()?.parse().ok()?;
    (target.scheme_str() == Some("http"))
        .then(|| target.authority().map(|a| a.as_str().to_string()))
        .flatten()
}

/// Turns an absolute-form proxy request into what an origin expects:
/// origin-form target (setting the URI drops the verbatim absolute target),
/// no proxy-only headers. Host already equals the URI's authority.
fn to_origin_form(req: &mut RequestHeader) -> Result<()> {
    let path = req.uri.clone();
    req.set_uri(path);
    req.remove_header("proxy-connection");
    req.remove_header(&http::header::PROXY_AUTHORIZATION);
    Ok(())
}

/// A short, human-readable phrase for an upstream failure.
fn upstream_reason(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectTimedout => "connect timed out",
        ErrorType::ReadTimedout => "origin did not answer in time",
        ErrorType::WriteTimedout => "origin did not accept the request in time",
        ErrorType::ConnectRefused => "connection refused",
        ErrorType::ConnectNoRoute => "no route to destination",
        ErrorType::ConnectionClosed => "origin closed the connection",
        ErrorType::ReadError | ErrorType::WriteError => "connection to origin failed",
        ErrorType::InvalidHTTPHeader | ErrorType::H1Error => "invalid response from origin",
        _ => "cannot reach destination",
    }
}

/// The status for a failed request: 504 for timeouts toward the origin, 502
/// for other origin failures, 400 for malformed requests, 0 when the client
/// is already gone.
fn status_for(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => match e.etype() {
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                    504
                }
                _ => 502,
            },
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

impl TransparentProxy {
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        code: u16,
        reason: Refusal,
        body: String,
    ) -> Result<bool> {
        ctx.refused = Some(reason);
        session
            .respond_error_with_body(code, Bytes::from(body))
            .await?;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for TransparentProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            request_id: RequestId::next(),
            client: None,
            dst: None,
            refused: None,
            filter: None,
            connect_started: None,
            upstream_local: None,
            upstream_reused: None,
            connect_time: None,
            _in_flight: ConnectionGuard::new(&self.metrics.in_flight),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if self.shared.draining.is_draining() {
            // Let the client reconnect (to the new process) after this one.
            session.set_keepalive(None);
        }
        ctx.client = client_address(session);
        ctx.dst = match &self.listener.forward {
            None => original_destination(session, self.listener.mode),
            Some(policy) => {
                if !policy.client_allowed(ctx.client) {
                    let who = display_opt(ctx.client.map(|c| SocketAddr::new(c.ip(), 0)));
                    let body = format!("403 Forbidden: client {who} may not use this proxy\n");
                    return self
                        .refuse(session, ctx, 403, Refusal::ForwardNotAllowed, body)
                        .await;
                }
                let target = absolute_target(session.req_header())
                    .and_then(|a| split_authority(&a, Some(80)));
                let Some((host, port)) = target else {
                    session
                        .respond_error_with_body(
                            400,
                            Bytes::from_static(
                                b"400 Bad Request: this is a forward proxy; send absolute http:// URIs or CONNECT\n",
                            ),
                        )
                        .await?;
                    return Ok(true);
                };
                match policy.destination(&host, port).await {
                    Ok(dst) => Some(dst),
                    Err((code, body, refusal)) => {
                        return match refusal {
                            Some(why) => self.refuse(session, ctx, code, why, body).await,
                            None => {
                                session
                                    .respond_error_with_body(code, Bytes::from(body))
                                    .await?;
                                Ok(true)
                            }
                        };
                    }
                }
            }
        };
        let Some(dst) = ctx.dst else {
            let body = format!(
                "508 Loop Detected: listener {} ({}) has no original destination for this connection; was it dialed directly?\n",
                self.listener.name,
                self.listener.mode.as_str()
            );
            return self.refuse(session, ctx, 508, Refusal::Loop, body).await;
        };
        if self.shared.loop_guard.is_own_listener(dst) {
            let body =
                format!("508 Loop Detected: destination {dst} is this proxy's own listener\n");
            return self.refuse(session, ctx, 508, Refusal::Loop, body).await;
        }
        if self.shared.forwarding.is_looping(session.req_header()) {
            let body = format!(
                "508 Loop Detected: request already passed through this proxy (Via {})\n",
                self.shared.forwarding.via_token()
            );
            return self.refuse(session, ctx, 508, Refusal::Loop, body).await;
        }

        let host = match self.listener.mode {
            // The URI's authority is where a forward request goes.
            Mode::Forward => absolute_target(session.req_header()),
            _ => session
                .req_header()
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string),
        };
        let flow = FlowInfo {
            client: ctx
                .client
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            destination: dst,
            listener: self.name.clone(),
            mode: self.listener.mode,
            request_id: ctx.request_id,
        };
        let fctx = ctx.filter.insert(FilterCtx::new(flow, host));
        match self
            .shared
            .chain
            .request(fctx, session.req_header())
            .await?
        {
            None => Ok(false),
            Some((r, by)) => {
                let why = match by {
                    "acl" => Refusal::Acl,
                    "host_check" => Refusal::HostMismatch,
                    _ => Refusal::Filter,
                };
                self.refuse(session, ctx, r.status, why, r.body).await
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.connect_started = Some(Instant::now());
        let dst = ctx
            .dst
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no original destination"))?;
        let mut peer = HttpPeer::new(dst, false, String::new());
        let u = &self.shared.upstream;
        peer.options.connection_timeout = Some(u.connect_timeout);
        peer.options.read_timeout = Some(u.read_timeout);
        peer.options.write_timeout = Some(u.write_timeout);
        peer.options.idle_timeout = Some(u.idle_timeout);
        peer.options.upstream_tcp_sock_tweak_hook = self.shared.mark_hook.clone();
        if let (true, Some(client)) = (self.listener.spoof_source, ctx.client) {
            peer.options.custom_l4 = Some(Arc::new(SpoofConnect {
                source: client.ip(),
                mark: u.mark,
                timeout: u.connect_timeout,
            }));
            // Pingora's pool key ignores the local address: keep one group
            // of pooled connections per client IP.
            peer.group_key = pool_group(client.ip());
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.listener.mode == Mode::Forward {
            to_origin_form(upstream_request)?;
        }
        match ctx.filter.as_mut() {
            Some(f) => {
                self.shared
                    .chain
                    .upstream_request(f, upstream_request)
                    .await
            }
            None => Ok(()),
        }
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        match ctx.filter.as_mut() {
            Some(f) => self.shared.chain.response(f, upstream_response).await,
            None => Ok(()),
        }
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let connect_time = (!reused)
            .then(|| ctx.connect_started.map(|t| t.elapsed()))
            .flatten();
        ctx.upstream_reused = Some(reused);
        ctx.connect_time = connect_time;
        ctx.upstream_local = digest
            .and_then(|d| d.socket_digest.as_ref())
            .and_then(|s| s.local_addr())
            .and_then(|a| a.as_inet().copied());
        self.metrics
            .upstream_connection(reused, connect_time.map(|d| d.as_secs_f64()));
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        _ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.metrics.connect_failed(match e.etype() {
            ErrorType::ConnectRefused => ConnectFailure::Refused,
            ErrorType::ConnectNoRoute => ConnectFailure::Unreachable,
            ErrorType::ConnectTimedout => ConnectFailure::Timeout,
            _ => ConnectFailure::Other,
        });
        // There is exactly one destination and it just failed on a fresh
        // connection: retrying only delays the 502/504.
        e.set_retry(false);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = status_for(e);
        if e.esource() == &ErrorSource::Upstream {
            match e.etype() {
                ErrorType::ReadTimedout => self.metrics.timeout(TimeoutPhase::Read),
                ErrorType::WriteTimedout => self.metrics.timeout(TimeoutPhase::Write),
                _ => {}
            }
        }
        if code > 0 {
            let body = match code {
                502 | 504 => format!(
                    "{code} {}: {}: {}\n",
                    if code == 502 {
                        "Bad Gateway"
                    } else {
                        "Gateway Timeout"
                    },
                    display_opt(ctx.dst),
                    upstream_reason(e)
                ),
                _ => String::new(),
            };
            if let Err(we) = session
                .respond_error_with_body(code, Bytes::from(body))
                .await
            {
                warn!(
                    "cannot send error response to {}: {we}",
                    display_opt(ctx.client)
                );
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let duration = ctx.start.elapsed();
        let (rx, tx) = (session.body_bytes_read(), session.body_bytes_sent());
        self.metrics
            .request_done(status, rx, tx, duration.as_secs_f64());
        if let Some(why) = ctx.refused {
            self.metrics.refused(why);
        }
        if let Some(f) = ctx.filter.as_ref() {
            self.shared
                .chain
                .log(f, &LogSummary { status, error: e })
                .await;
        }
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        let decision = ctx.filter.as_ref().and_then(|f| f.decision());
        let error = e.map(|e| e.etype().as_str());
        let Some(log) = &self.shared.access_log else {
            return;
        };
        let path = if log.query {
            req.uri.path_and_query().map_or("/", |p| p.as_str())
        } else {
            req.uri.path()
        };
        log.write(&Record {
            request_id: ctx.request_id,
            listener: &self.listener.name,
            mode: self.listener.mode.as_str(),
            client: ctx.client,
            dst: ctx.dst,
            upstream_local: ctx.upstream_local,
            method: req.method.as_str(),
            host,
            path,
            status,
            req_body_bytes: rx,
            resp_body_bytes: tx,
            duration,
            upstream_connect: ctx.connect_time,
            upstream_reused: ctx.upstream_reused,
            decision,
            refused: ctx.refused.map(Refusal::as_str),
            error,
            tls: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_map_to_504_and_other_upstream_errors_to_502() {
        let mut e = Error::new(ErrorType::ConnectTimedout);
        e.set_cause("x");
        let mut e = Error::because(ErrorType::ConnectTimedout, "t", e);
        e.esource = ErrorSource::Upstream;
        assert_eq!(status_for(&e), 504);
        let mut e = Error::new(ErrorType::ConnectRefused);
        e.esource = ErrorSource::Upstream;
        assert_eq!(status_for(&e), 502);
        let mut e = Error::new(ErrorType::ReadTimedout);
        e.esource = ErrorSource::Upstream;
        assert_eq!(status_for(&e), 504);
        let mut e = Error::new(ErrorType::InvalidHTTPHeader);
        e.esource = ErrorSource::Downstream;
        assert_eq!(status_for(&e), 400);
        let mut e = Error::new(ErrorType::ConnectionClosed);
        e.esource = ErrorSource::Downstream;
        assert_eq!(status_for(&e), 0);
        assert_eq!(status_for(&Error::new(ErrorType::HTTPStatus(508))), 508);
    }
}
