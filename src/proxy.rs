//! The HTTP proxy logic: Pingora's `ProxyHttp` callbacks for one listener.
//!
//! Each request goes to the connection's original destination, never to
//! where its Host header points; the Host header is passed through as is.

use crate::config::{Listener, UpstreamConf};
use crate::destination::{client_address, original_destination, LoopGuard};
use crate::filters::RequestHeaderAdder;
use crate::lifecycle::Draining;
use async_trait::async_trait;
use bytes::Bytes;
use log::{info, warn};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Settings shared by all listeners of one process.
#[derive(Debug)]
pub struct Shared {
    /// Headers to add, and the Via loop token.
    pub headers: RequestHeaderAdder,
    /// Our own listening addresses.
    pub loop_guard: LoopGuard,
    /// Upstream timeouts.
    pub upstream: UpstreamConf,
    /// Set when this process is being replaced or stopped.
    pub draining: Draining,
}

/// The proxy behind one transparent listener (Pingora runs one service per
/// listener, which is how a request knows its listener's mode and name).
pub struct TransparentProxy {
    listener: Listener,
    shared: Arc<Shared>,
}

impl TransparentProxy {
    /// A proxy for `listener`.
    pub fn new(listener: Listener, shared: Arc<Shared>) -> Self {
        TransparentProxy { listener, shared }
    }
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    client: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    /// Set when the proxy itself refused the request (e.g. "loop").
    refused: Option<&'static str>,
}

impl RequestCtx {
    /// The original destination, once known.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.dst
    }
}

fn display_opt(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "-".to_string(), |a| a.to_string())
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
        reason: &'static str,
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
            client: None,
            dst: None,
            refused: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if self.shared.draining.is_draining() {
            // Let the client reconnect (to the new process) after this one.
            session.set_keepalive(None);
        }
        ctx.client = client_address(session);
        ctx.dst = original_destination(session, self.listener.mode);
        let Some(dst) = ctx.dst else {
            let body = format!(
                "508 Loop Detected: listener {} ({}) has no original destination for this connection; was it dialed directly?\n",
                self.listener.name,
                self.listener.mode.as_str()
            );
            return self.refuse(session, ctx, 508, "loop", body).await;
        };
        if self.shared.loop_guard.is_own_listener(dst) {
            let body =
                format!("508 Loop Detected: destination {dst} is this proxy's own listener\n");
            return self.refuse(session, ctx, 508, "loop", body).await;
        }
        if self.shared.headers.is_looping(session.req_header()) {
            let body = format!(
                "508 Loop Detected: request already passed through this proxy (Via {})\n",
                self.shared.headers.via_token().unwrap_or_default()
            );
            return self.refuse(session, ctx, 508, "loop", body).await;
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let dst = ctx
            .dst
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no original destination"))?;
        let mut peer = HttpPeer::new(dst, false, String::new());
        let u = &self.shared.upstream;
        peer.options.connection_timeout = Some(u.connect_timeout);
        peer.options.read_timeout = Some(u.read_timeout);
        peer.options.write_timeout = Some(u.write_timeout);
        peer.options.idle_timeout = Some(u.idle_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.shared.headers.apply(upstream_request)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        _ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
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
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-");
        let error = match (ctx.refused, e) {
            (Some(reason), _) => format!(" refused={reason}"),
            (None, Some(e)) => format!(" error=\"{}: {}\"", e.etype().as_str(), upstream_reason(e)),
            (None, None) => String::new(),
        };
        info!(
            target: "tproxyd::access",
            "{} {} -> {} \"{} {} {}\" {} {}B {}ms{}",
            self.listener.name,
            display_opt(ctx.client),
            display_opt(ctx.dst),
            req.method,
            host,
            req.uri.path(),
            status,
            session.body_bytes_sent(),
            ctx.start.elapsed().as_millis(),
            error
        );
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
