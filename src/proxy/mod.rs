//! The HTTP listeners' app (`tproxy`, `redirect`, `forward`): the
//! keep-alive loop of each connection ([`connection`]), Pingora's
//! `ProxyHttp` callbacks for the requests it hands to Pingora (here), the
//! CONNECT tunnels of forward listeners ([`connect`]) and the tunnels of
//! what is not HTTP ([`tunnel`]).
//!
//! Each request goes to the connection's original destination (or, on a
//! forward listener, to the absolute URI's host), never to where its Host
//! header points; the Host header is passed through as is. The flow's
//! decision comes first (`crate::decision`), then the filters; every
//! request ends in one [`Summary`].

mod connect;
mod connection;
mod ctx;
mod failure;
mod tunnel;
mod upstream;

pub use connection::HttpConnections;

use crate::addr::flow_name;
use crate::decision::{Flow, Target};
use crate::destination::{client_address, original_destination};
use crate::egress::open::Remote;
use crate::filters::{FilterCtx, FlowInfo, LogSummary};
use crate::flow::{Answer, FlowKind};
use crate::listener::ListenerKind;
use crate::metrics::ConnectionGuard;
use crate::shared::ListenerState;
use crate::summary::{Kind, RequestLine, Summary, UpstreamUse};
use async_trait::async_trait;
use ctx::{absolute_authority, absolute_target, host_of, to_origin_form, RequestCtx};
use failure::{connect_failure, count_timeout, failure_body, respond, status_for};
use log::warn;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
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

    fn is_forward(&self) -> bool {
        matches!(self.state.listener.kind, ListenerKind::Forward(_))
    }

    /// Sends tproxyd's own answer and records it.
    async fn answer(&self, session: &mut Session, ctx: &mut RequestCtx, a: Answer) -> Result<bool> {
        ctx.summary.answered(&a);
        respond(session, &a).await?;
        Ok(true)
    }

    /// The request's decision; on a forward listener the absolute target
    /// names where it goes (400 when there is none). Returns the filters'
    /// context when it may go on, else the answer that refuses it.
    async fn decide(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        host_header: Option<&str>,
    ) -> std::result::Result<FilterCtx, Answer> {
        let req = session.req_header();
        let forward = self.is_forward().then(|| absolute_target(req));
        // The name is worked out only when something looks at it: a rule,
        // a route (and then a parent egress).
        let wants_name = self.state.wants_names();
        let (kind, target, name) = match &forward {
            Some(Some((host, port))) => match flow_name(host) {
                Some(name) => (
                    FlowKind::Forward,
                    Target::Named { host, port: *port },
                    Some(name),
                ),
                None => (FlowKind::Forward, Target::Unnamed, None),
            },
            Some(None) => (FlowKind::Forward, Target::Unnamed, None),
            None => {
                let dst = match (ctx.peers, self.state.listener.destination_source()) {
                    (Some(p), _) => p.dst,
                    (None, source) => source.and_then(|s| original_destination(session, s)),
                };
                ctx.summary.dst = dst;
                // An absolute-form target names the host (RFC 9112 §3.2.2).
                let absolute = match wants_name && req.raw_path().starts_with(b"http://") {
                    true => absolute_target(req).map(|(h, _)| h),
                    false => None,
                };
                let name = match wants_name {
                    true => absolute.as_deref().or(host_header).and_then(flow_name),
                    false => None,
                };
                (FlowKind::Http, Target::Original(dst), name)
            }
        };
        let flow = Flow {
            kind,
            client: ctx.summary.client,
            target,
            name: name.as_deref(),
            request: Some(req),
            hello: None,
        };
        let (verdict, by) = self.state.decide(&flow).await.split();
        ctx.decided_by = by;
        let admitted = verdict?;
        let host = match forward {
            Some(_) => absolute_authority(req),
            None => host_header.map(str::to_string),
        };
        let port = match (&forward, admitted.dst) {
            (Some(Some((_, port))), _) => *port,
            (_, Some(d)) => d.port(),
            _ => 80,
        };
        let info = FlowInfo::new(
            &self.state.listener.id,
            ctx.summary.client,
            admitted.flow_dst(port),
            ctx.summary.request_id,
        );
        ctx.summary.dst = admitted.dst;
        ctx.summary.egress = Some(admitted.egress.name.clone());
        if admitted.egress.is_proxy() {
            ctx.remote.name = name;
        }
        ctx.remote.addr = admitted.dst;
        ctx.remote.port = port;
        ctx.egress = Some(admitted.egress);
        let mut fctx = self.state.filter_ctx(info, host, ctx.decided_by.as_deref());
        fctx.version = req.version;
        Ok(fctx)
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

    /// Called once Pingora has accepted a request head, in the connection's
    /// task: the connection's loop hands over its peers (see [`connection`]).
    fn new_ctx(&self) -> Box<RequestCtx> {
        let peers = connection::request_seen();
        Box::new(RequestCtx {
            summary: Summary::new(peers.and_then(|p| p.client)),
            filter: None,
            decided_by: None,
            connect_started: None,
            peers,
            has_host: false,
            egress: None,
            remote: Remote::default(),
            fell_back: false,
            _in_flight: ConnectionGuard::new(&self.state.metrics.in_flight),
        })
    }

    /// The decision, then the filters' request hooks.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<bool> {
        if self.state.shared.draining.is_draining() {
            // Let the client reconnect (to the new process) after this one.
            session.set_keepalive(None);
        }
        if ctx.peers.is_none() {
            ctx.summary.client = client_address(session);
        }
        // Host is looked up once here: the decision, the filters, the
        // upstream request and the access log take it from the context.
        let req = session.req_header();
        let host_header = req.headers.get(http::header::HOST);
        ctx.has_host = host_header.is_some();
        let host_header = host_header
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        if req.version == http::Version::HTTP_11 && !ctx.has_host {
            // RFC 9112 §3.2: a server must answer 400.
            let a = Answer::failed(
                400,
                "MissingHost",
                "400 Bad Request: an HTTP/1.1 request needs a Host header\n",
            );
            return self.answer(session, ctx, a).await;
        }
        let fctx = match self.decide(session, ctx, host_header.as_deref()).await {
            Ok(f) => ctx.filter.insert(f),
            Err(a) => return self.answer(session, ctx, a).await,
        };
        match self
            .state
            .shared
            .chain
            .request(fctx, session.req_header())
            .await?
        {
            None => Ok(false),
            Some(a) => self.answer(session, ctx, a).await,
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Box<HttpPeer>> {
        ctx.connect_started = Some(Instant::now());
        upstream::peer(&self.state, ctx)
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
        upstream::to_parent_form(upstream_request, ctx)?;
        if !ctx.has_host && !upstream_request.headers.contains_key(http::header::HOST) {
            // An HTTP/1.0 request may come without Host; the origin gets
            // the authority it was really sent to.
            let host = match self.is_forward() {
                true => ctx.filter.as_ref().and_then(|f| f.host.clone()),
                false => ctx.summary.dst.map(host_of),
            };
            if let Some(host) = host {
                upstream_request.insert_header(http::header::HOST, host)?;
            }
        }
        match ctx.filter.as_mut() {
            Some(f) => {
                let chain = &self.state.shared.chain;
                chain.upstream_request(f, upstream_request).await
            }
            None => Ok(()),
        }
    }

    /// The status page sees the response's bytes as they pass.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Option<std::time::Duration>> {
        ctx.summary
            .response_bytes(body.as_ref().map_or(0, |b| b.len()));
        Ok(None)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        if let Some(e) = upstream::parent_refusal(ctx, upstream_response.status.as_u16()) {
            return Err(e);
        }
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
        if let (false, Some(t)) = (reused, ctx.connect_started) {
            upstream::current(ctx).metrics.connected(t.elapsed());
        }
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
        ctx: &mut Box<RequestCtx>,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.state.metrics.connect_failed(connect_failure(&e));
        upstream::connect_failed(ctx, &mut e);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<RequestCtx>,
    ) -> FailToProxy {
        let code = status_for(e);
        count_timeout(&self.state.metrics, e);
        if code > 0 {
            let dst = ctx.summary.dst.map(Into::into);
            let body =
                upstream::failure_body(ctx, code, e).unwrap_or_else(|| failure_body(code, dst, e));
            let answer = Answer::failed(code, "", body);
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
        upstream::count_outcome(ctx);
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
                decision: ctx.decision(),
            },
        };
        ctx.summary.finish(outputs, line, Kind::Request);
    }
}
