//! The HTTP proxy: Pingora's `ProxyHttp` callbacks for one `tproxy`,
//! `redirect` or `forward` listener.
//!
//! Each request goes to the connection's original destination (or, on a
//! forward listener, to the absolute URI's host), never to where its Host
//! header points; the Host header is passed through as is. Admission runs
//! first, then the filters; every request ends in one [`Summary`].

mod connection;
mod failure;
mod tunnel;

pub use connection::HttpConnections;

use crate::addr::split_host_port;
use crate::admission::forward::ForwardPolicy;
use crate::admission::Target;
use crate::destination::{client_address, original_destination};
use crate::filters::{FilterCtx, FlowInfo, LogSummary};
use crate::flow::Answer;
use crate::listener::ListenerKind;
use crate::metrics::{ConnectFailure, ConnectionGuard, TimeoutPhase};
use crate::shared::ListenerState;
use crate::summary::{Kind, RequestLine, Summary, UpstreamUse};
use crate::upstream::connector::{pool_group, SpoofConnect};
use async_trait::async_trait;
use failure::{failure_body, respond, status_for};
use log::warn;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The proxy behind one listener (Pingora runs one service per listener,
/// which is how a request knows its listener's kind and name).
pub struct TransparentProxy {
    state: Arc<ListenerState>,
}

impl TransparentProxy {
    /// A proxy for the listener of `state` (an HTTP or forward listener).
    pub fn new(state: Arc<ListenerState>) -> Self {
        TransparentProxy { state }
    }
}

/// Per-request state.
pub struct RequestCtx {
    summary: Summary,
    /// The filters' context, once the request is admitted.
    filter: Option<FilterCtx>,
    /// When the upstream connect started (for its duration).
    connect_started: Option<Instant>,
    /// The connection's client and original destination, as its loop
    /// looked them up (none if Pingora did not hand them over).
    peers: Option<connection::Peers>,
    /// Whether the client sent a Host header (the upstream request, a
    /// copy of the client's, has one then too).
    has_host: bool,
    _in_flight: ConnectionGuard,
}

/// The host and port of an absolute-form `http://` request target. Pingora
/// keeps such a target verbatim in `raw_path()` (its `uri` holds only the
/// path) and has already checked that Host equals this authority.
fn absolute_target(req: &RequestHeader) -> Option<(String, u16)> {
    let target: http::Uri = std::str::from_utf8(req.raw_path()).ok()?.parse().ok()?;
    if target.scheme_str() != Some("http") {
        return None;
    }
    let (host, port) = split_host_port(target.authority()?.as_str())?;
    Some((host.to_string(), port.unwrap_or(80)))
}

/// Turns an absolute-form proxy request into what an origin expects:
/// origin-form target (setting the URI drops the verbatim absolute target),
/// no proxy-only headers. Host already equals the URI's authority.
fn to_origin_form(req: &mut RequestHeader) {
    let path = req.uri.clone();
    req.set_uri(path);
    req.remove_header("proxy-connection");
    req.remove_header(&http::header::PROXY_AUTHORIZATION);
}

impl TransparentProxy {
    /// Where this request goes, if admission lets it (`known_dst`: the
    /// connection's original destination, when already looked up).
    /// The destination is noted in `summary` as soon as it is known, so a
    /// refusal is logged with it.
    async fn admitted_destination(
        &self,
        session: &Session,
        summary: &mut Summary,
        known_dst: Option<Option<SocketAddr>>,
    ) -> std::result::Result<SocketAddr, Answer> {
        let shared = &self.state.shared;
        let req = session.req_header();
        let client = summary.client;
        let target = match &self.state.listener.kind {
            ListenerKind::Http { source, .. } => {
                summary.dst = known_dst.unwrap_or_else(|| original_destination(session, *source));
                Target::Original(summary.dst)
            }
            ListenerKind::Forward(policy) => {
                if !policy.client_allowed(client) {
                    return Err(ForwardPolicy::client_refused(client));
                }
                let Some((host, port)) = absolute_target(req) else {
                    return Err(Answer::failed(
                        400,
                        "BadRequest",
                        "400 Bad Request: this is a forward proxy; send absolute http:// URIs or CONNECT\n",
                    ));
                };
                let addrs = policy.resolve(&host, port).await?;
                summary.dst = addrs.first().copied();
                return shared.admission.admit(
                    self.state.rules(),
                    client,
                    Target::Resolved(&addrs),
                    Some(req),
                );
            }
            ListenerKind::TlsPassthrough { .. } => Target::Original(None),
        };
        shared
            .admission
            .admit(self.state.rules(), client, target, Some(req))
    }

    /// Sends tproxyd's own answer and records it.
    async fn answer(&self, session: &mut Session, ctx: &mut RequestCtx, a: Answer) -> Result<bool> {
        ctx.summary.answered(&a);
        respond(session, &a).await?;
        Ok(true)
    }

    /// The Host for a request that came without one: a forward request's
    /// authority, else the original destination (port only when not 80).
    fn host_for(&self, ctx: &RequestCtx) -> Option<String> {
        if self.is_forward() {
            return ctx.filter.as_ref().and_then(|f| f.host.clone());
        }
        let dst = ctx.summary.dst?;
        let ip = match dst.ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        Some(match dst.port() {
            80 => ip,
            port => format!("{ip}:{port}"),
        })
    }

    fn is_forward(&self) -> bool {
        matches!(self.state.listener.kind, ListenerKind::Forward(_))
    }
}

#[async_trait]
impl ProxyHttp for TransparentProxy {
    /// Boxed: Pingora keeps the context inside its per-request future,
    /// which is copied into a fresh `Box` for every request; a pointer there
    /// instead of the context itself makes that copy smaller.
    type CTX = Box<RequestCtx>;

    /// No downstream modules. Pingora's default adds its response
    /// compression module switched off (level 0), and even off its hooks
    /// run for every request: a context built, the request and response
    /// headers and every body chunk handed to it (about 1k instructions per
    /// request). tproxyd passes bodies through as the origin encoded them,
    /// and its filters never see Pingora's `Session`, so nothing could turn
    /// the module on.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::new(RequestCtx {
            summary: Summary::new(None),
            filter: None,
            connect_started: None,
            peers: None,
            has_host: false,
            _in_flight: ConnectionGuard::new(&self.state.metrics.in_flight),
        })
    }

    /// Admission, then the filters' request hooks.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<bool> {
        if self.state.shared.draining.is_draining() {
            // Let the client reconnect (to the new process) after this one.
            session.set_keepalive(None);
        }
        let client = match ctx.peers {
            Some((client, _)) => client,
            None => client_address(session),
        };
        ctx.summary.client = client;
        let req = session.req_header();
        let version = req.version;
        // Host is looked up once here: the filters, the upstream request
        // and the access log take it from the context.
        let host_header = req.headers.get(http::header::HOST);
        ctx.has_host = host_header.is_some();
        let host_header = host_header
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        if version == http::Version::HTTP_11 && !ctx.has_host {
            // RFC 9112 §3.2: a server must answer 400.
            let a = Answer::failed(
                400,
                "MissingHost",
                "400 Bad Request: an HTTP/1.1 request needs a Host header\n",
            );
            return self.answer(session, ctx, a).await;
        }
        let known_dst = ctx.peers.map(|(_, dst)| dst);
        let dst = match self
            .admitted_destination(session, &mut ctx.summary, known_dst)
            .await
        {
            Ok(dst) => dst,
            Err(a) => return self.answer(session, ctx, a).await,
        };
        ctx.summary.dst = Some(dst);
        let req = session.req_header();
        let host = if self.is_forward() {
            // The URI's authority is where a forward request goes.
            let target: Option<http::Uri> = std::str::from_utf8(req.raw_path())
                .ok()
                .and_then(|t| t.parse().ok());
            target.and_then(|t| t.authority().map(|a| a.as_str().to_string()))
        } else {
            host_header
        };
        let id = &self.state.listener.id;
        let flow = FlowInfo::new(id, client, dst, ctx.summary.request_id);
        let fctx = ctx.filter.insert(FilterCtx::new(flow, host));
        fctx.version = version;
        match self.state.shared.chain.request(fctx, req).await? {
            None => Ok(false),
            Some(a) => self.answer(session, ctx, a).await,
        }
    }

    /// Right after Pingora accepted a head (see [`connection`]): the
    /// request is ours from here on, and logged by [`Self::logging`].
    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Box<RequestCtx>,
        token: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Some(token) = token.downcast_ref::<connection::RequestSeen>() {
            token.seen.store(true, std::sync::atomic::Ordering::Relaxed);
            ctx.peers = Some(token.peers);
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Box<HttpPeer>> {
        ctx.connect_started = Some(Instant::now());
        let dst = ctx
            .summary
            .dst
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no original destination"))?;
        let mut peer = HttpPeer::new(dst, false, String::new());
        let u = &self.state.shared.upstream;
        peer.options.connection_timeout = Some(u.connect_timeout);
        peer.options.read_timeout = Some(u.read_timeout);
        peer.options.write_timeout = Some(u.write_timeout);
        peer.options.idle_timeout = Some(u.idle_timeout);
        peer.options.upstream_tcp_sock_tweak_hook = self.state.shared.mark_hook.clone();
        let spoof = matches!(
            self.state.listener.kind,
            ListenerKind::Http {
                spoof_source: true,
                ..
            }
        );
        if let (true, Some(client)) = (spoof, ctx.summary.client) {
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
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        if self.is_forward() {
            to_origin_form(upstream_request);
        }
        if !ctx.has_host && !upstream_request.headers.contains_key(http::header::HOST) {
            // An HTTP/1.0 request may come without Host; the origin gets
            // the authority it was really sent to.
            if let Some(host) = self.host_for(ctx) {
                upstream_request.insert_header(http::header::HOST, host)?;
            }
        }
        match ctx.filter.as_mut() {
            Some(f) => {
                self.state
                    .shared
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
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        match ctx.filter.as_mut() {
            Some(f) => self.state.shared.chain.response(f, upstream_response).await,
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
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        ctx.summary.upstream = Some(UpstreamUse {
            local: digest
                .and_then(|d| d.socket_digest.as_ref())
                .and_then(|s| s.local_addr())
                .and_then(|a| a.as_inet().copied()),
            reused,
            connect_time: (!reused)
                .then(|| ctx.connect_started.map(|t| t.elapsed()))
                .flatten(),
        });
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        _ctx: &mut Box<RequestCtx>,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.state.metrics.connect_failed(match e.etype() {
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
        ctx: &mut Box<RequestCtx>,
    ) -> FailToProxy {
        let code = status_for(e);
        if e.esource() == &ErrorSource::Upstream {
            match e.etype() {
                ErrorType::ReadTimedout => self.state.metrics.timeout(TimeoutPhase::Read),
                ErrorType::WriteTimedout => self.state.metrics.timeout(TimeoutPhase::Write),
                _ => {}
            }
        }
        if code > 0 {
            let answer = Answer::failed(code, "", failure_body(code, ctx.summary.dst, e));
            if let Err(we) = respond(session, &answer).await {
                warn!(
                    "cannot send error response to {:?}: {we}",
                    ctx.summary.client
                );
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// The filters' log hooks, then the one summary: metrics and the
    /// access-log record.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Box<RequestCtx>) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let s = &mut ctx.summary;
        s.status = status;
        s.rx = session.body_bytes_read() as u64;
        s.tx = session.body_bytes_sent() as u64;
        if s.error.is_none() {
            s.error = e.map(|e| e.etype().as_str());
        }
        let shared = &self.state.shared;
        if let Some(f) = ctx.filter.as_ref() {
            shared.chain.log(f, &LogSummary { status, error: e }).await;
        }
        let outputs = self.state.outputs();
        let req = session.req_header();
        // The request line is for the access log only.
        let line = match outputs.log {
            None => RequestLine::NONE,
            Some(log) => RequestLine {
                method: req.method.as_str(),
                // As the client sent it (filters may rewrite the
                // context's copy).
                host: req
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok()),
                path: if log.query {
                    req.uri.path_and_query().map_or("/", |p| p.as_str())
                } else {
                    req.uri.path()
                },
                decision: ctx.filter.as_ref().and_then(|f| f.decision()),
            },
        };
        ctx.summary.finish(outputs, line, Kind::Request);
    }
}
