//! A request's state while Pingora proxies it, and the small translations
//! between a forward proxy's request and an origin's.

use crate::addr::{split_host_port, OrigDstAddr, Peers};
use crate::egress::open::Remote;
use crate::egress::Egress;
use crate::filters::FilterCtx;
use crate::metrics::ConnectionGuard;
use crate::summary::Summary;
use pingora_http::RequestHeader;
use std::sync::Arc;
use std::time::Instant;

/// Per-request state.
pub struct RequestCtx {
    /// The one record of this request.
    pub summary: Summary,
    /// The filters' context, once the request is admitted.
    pub filter: Option<FilterCtx>,
    /// What decided the request's fate (logged when no filter ran).
    pub decided_by: Option<std::sync::Arc<str>>,
    /// When the upstream connect started (for its duration).
    pub connect_started: Option<Instant>,
    /// The connection's client and original destination, from its loop.
    pub peers: Option<Peers>,
    /// Whether the client sent a Host header (the upstream request, a
    /// copy of the client's, has one then too).
    pub has_host: bool,
    /// The egress the decision chose.
    pub egress: Option<Arc<Egress>>,
    /// Where the request goes, as its egress needs it.
    pub remote: Remote,
    /// Its parent failed and it is going direct instead.
    pub fell_back: bool,
    /// Counts the request as in flight while it lives.
    pub _in_flight: ConnectionGuard,
}

impl RequestCtx {
    /// What decided, for the access log: the last filter's decision, else
    /// the flow's decision.
    pub fn decision(&self) -> Option<&str> {
        self.filter
            .as_ref()
            .and_then(|f| f.decision())
            .or(self.decided_by.as_deref())
    }
}

/// The host and port of an absolute-form `http://` request target. Pingora
/// keeps such a target verbatim in `raw_path()` (its `uri` holds only the
/// path) and has already checked that Host equals this authority.
pub fn absolute_target(req: &RequestHeader) -> Option<(String, u16)> {
    let target: http::Uri = std::str::from_utf8(req.raw_path()).ok()?.parse().ok()?;
    if target.scheme_str() != Some("http") {
        return None;
    }
    let (host, port) = split_host_port(target.authority()?.as_str())?;
    Some((host.to_string(), port.unwrap_or(80)))
}

/// The authority of an absolute-form target as written (`host[:port]`):
/// what a forward request's filters see as its Host.
pub fn absolute_authority(req: &RequestHeader) -> Option<String> {
    let target: http::Uri = std::str::from_utf8(req.raw_path()).ok()?.parse().ok()?;
    target.authority().map(|a| a.as_str().to_string())
}

/// Turns an absolute-form proxy request into what an origin expects:
/// origin-form target (setting the URI drops the verbatim absolute target),
/// no proxy-only headers. Host already equals the URI's authority.
pub fn to_origin_form(req: &mut RequestHeader) {
    let path = req.uri.clone();
    req.set_uri(path);
    req.remove_header("proxy-connection");
    req.remove_header(&http::header::PROXY_AUTHORIZATION);
}

/// The Host for a transparent request that came without one (HTTP/1.0):
/// the original destination, its port only when not 80.
pub fn host_of(dst: OrigDstAddr) -> String {
    let ip = match dst.ip() {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    match dst.port() {
        80 => ip,
        port => format!("{ip}:{port}"),
    }
}
