//! Forward (explicit) proxy mode: `mode: forward` listeners take requests
//! from clients configured with `http_proxy` — absolute-form requests
//! (`GET http://host/path`), forwarded to the host in the URL, and
//! `CONNECT host:port`, tunnelled (how browsers reach HTTPS through a proxy).
//!
//! This mode resolves names and connects wherever a client asks, so it is
//! **never an open proxy**: clients must match the listener's
//! `allow_clients` (default: nobody), CONNECT is limited to `connect_ports`
//! (default 443), and destinations on this host, loopback, link-local or
//! unspecified addresses are refused unless `allow_local_destinations`.

use crate::config::Listener;
use crate::connector::connect_plain;
use crate::destination::{canonical, is_local_ip};
use crate::filters::{FilterCtx, FlowInfo, RequestHeader, RequestId};
use crate::metrics::{ListenerMetrics, Refusal};
use crate::proxy::Shared;
use async_trait::async_trait;
use bytes::BytesMut;
use ipnet::IpNet;
use log::debug;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The forward-proxy settings of one listener.
#[derive(Debug, Clone)]
pub struct ForwardPolicy {
    /// Clients allowed to use the proxy.
    pub allow_clients: Vec<IpNet>,
    /// Ports CONNECT may reach.
    pub connect_ports: Vec<u16>,
    /// Whether loopback / link-local / this host's addresses may be reached.
    pub allow_local_destinations: bool,
    /// Bound on resolving a destination name.
    pub resolve_timeout: Duration,
}

impl ForwardPolicy {
    /// Whether `client` may use this forward proxy.
    pub fn client_allowed(&self, client: Option<SocketAddr>) -> bool {
        client.is_some_and(|c| self.allow_clients.iter().any(|n| n.contains(&c.ip())))
    }

    /// Resolves `host` (a name or a literal IP, brackets allowed) to one
    /// destination this proxy may connect to.
    pub async fn destination(
        &self,
        host: &str,
        port: u16,
    ) -> Result<SocketAddr, (u16, String, Option<Refusal>)> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::time::timeout(
                self.resolve_timeout,
                tokio::net::lookup_host((bare, port)),
            )
            .await
            {
                Ok(Ok(it)) => it.map(canonical).collect(),
                Ok(Err(e)) => {
                    return Err((
                        502,
                        format!("502 Bad Gateway: cannot resolve {bare}: {e}\n"),
                        None,
                    ))
                }
                Err(_) => {
                    return Err((
                        502,
                        format!("502 Bad Gateway: cannot resolve {bare}: timed out\n"),
                        None,
                    ))
                }
            },
        };
        let Some(first) = addrs.first().copied() else {
            return Err((
                502,
                format!("502 Bad Gateway: {bare} has no address\n"),
                None,
            ));
        };
        // Refuse when any address is local: a name that mixes public and
        // local addresses is a classic way around such checks.
        if !self.allow_local_destinations {
            if let Some(bad) = addrs.iter().find(|a| is_local_destination(a.ip())) {
                return Err((
                    403,
                    format!("403 Forbidden: destination {bad} is local to the proxy\n"),
                    Some(Refusal::ForwardNotAllowed),
                ));
            }
        }
        Ok(first)
    }
}

/// Loopback, unspecified, link-local, multicast or one of this host's own
/// addresses.
pub fn is_local_destination(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let special = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    special || is_local_ip(ip)
}

/// Splits `host:port` (also `[v6]:port`); `default` when there is no port.
pub fn split_authority(authority: &str, default: Option<u16>) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default?,
            None => return None,
        };
        return Some((format!("[{host}]"), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        Some(_) => None,
        None => Some((authority.to_string(), default?)),
    }
}

/// Wraps a forward listener's HTTP app: connections whose next request is
/// `CONNECT` are tunnelled here, everything else goes to Pingora's HTTP
/// proxy (which handles absolute-form requests through `ProxyHttp`).
pub struct ForwardApp<A> {
    inner: Arc<A>,
    tunnel: Arc<Tunnel>,
}

impl<A> ForwardApp<A> {
    /// `inner` serves the non-CONNECT requests.
    pub fn new(
        inner: A,
        listener: Listener,
        policy: ForwardPolicy,
        shared: Arc<Shared>,
        metrics: ListenerMetrics,
    ) -> Self {
        ForwardApp {
            inner: Arc::new(inner),
            tunnel: Arc::new(Tunnel {
                listener,
                policy,
                shared,
                metrics,
            }),
        }
    }
}

/// How long a client connection may sit idle before its next request.
const IDLE: Duration = Duration::from_secs(60);

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ForwardApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut first = [0u8; 8];
        let mut down = shutdown.clone();
        let peeked = tokio::select! {
            r = tokio::time::timeout(IDLE, stream.try_peek(&mut first)) => r,
            _ = down.changed() => return None,
        };
        match peeked {
            Ok(Ok(true)) if &first == b"CONNECT " => {
                self.tunnel.handle(stream).await;
                None
            }
            Ok(Ok(_)) => self.inner.process_new(stream, shutdown).await,
            _ => None,
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// The CONNECT side of a forward listener.
struct Tunnel {
    listener: Listener,
    policy: ForwardPolicy,
    shared: Arc<Shared>,
    metrics: ListenerMetrics,
}

/// The longest CONNECT request head we read.
const MAX_HEAD: usize = 8 * 1024;

async fn read_head(stream: &mut Stream) -> Option<BytesMut> {
    let mut buf = BytesMut::with_capacity(1024);
    let read = async {
        loop {
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return true;
            }
            if buf.len() >= MAX_HEAD || !matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
                return false;
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(true) => Some(buf),
        _ => None,
    }
}

fn reason(code: u16) -> &'static str {
    http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

async fn respond(stream: &mut Stream, code: u16, body: &str) {
    let resp = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(code),
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.flush().await;
}

impl Tunnel {
    async fn handle(&self, mut stream: Stream) {
        let start = Instant::now();
        let request_id = RequestId::next();
        let _in_flight = crate::metrics::ConnectionGuard::new(&self.metrics.in_flight);
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied())
            .map(canonical);
        let mut log = TunnelLog {
            request_id,
            client,
            dst: None,
            authority: String::new(),
            status: 0,
            refused: None,
            decision: None,
            error: None,
            up: 0,
            down: 0,
        };
        self.run(&mut stream, &mut log).await;
        self.metrics.request_done(
            log.status,
            log.up as usize,
            log.down as usize,
            start.elapsed().as_secs_f64(),
        );
        if let Some(r) = log.refused {
            self.metrics.refused(r);
        }
        if let Some(access) = &self.shared.access_log {
            access.write(&crate::access_log::Record {
                request_id,
                listener: &self.listener.name,
                mode: self.listener.mode.as_str(),
                client,
                dst: log.dst,
                upstream_local: None,
                method: "CONNECT",
                host: Some(&log.authority),
                path: &log.authority,
                status: log.status,
                req_body_bytes: log.up as usize,
                resp_body_bytes: log.down as usize,
                duration: start.elapsed(),
                upstream_connect: None,
                upstream_reused: None,
                decision: log.decision.as_deref(),
                refused: log.refused.map(Refusal::as_str),
                error: log.error,
                tls: None,
            });
        }
    }

    async fn run(&self, stream: &mut Stream, log: &mut TunnelLog) {
        let Some(head) = read_head(stream).await else {
            log.error = Some("BadRequest");
            return;
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(&head) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => {
                log.status = 400;
                respond(stream, 400, "400 Bad Request: malformed CONNECT request\n").await;
                return;
            }
        };
        let authority = req.path.unwrap_or_default().to_string();
        log.authority = authority.clone();
        if !self.policy.client_allowed(log.client) {
            log.status = 403;
            log.refused = Some(Refusal::ForwardNotAllowed);
            let who = log.client.map_or("-".to_string(), |c| c.ip().to_string());
            respond(
                stream,
                403,
                &format!("403 Forbidden: client {who} may not use this proxy\n"),
            )
            .await;
            return;
        }
        let Some((host, port)) = split_authority(&authority, None) else {
            log.status = 400;
            respond(stream, 400, "400 Bad Request: CONNECT needs host:port\n").await;
            return;
        };
        if !self.policy.connect_ports.contains(&port) {
            log.status = 403;
            log.refused = Some(Refusal::ForwardNotAllowed);
            respond(
                stream,
                403,
                &format!("403 Forbidden: CONNECT to port {port} is not allowed\n"),
            )
            .await;
            return;
        }
        let dst = match self.policy.destination(&host, port).await {
            Ok(d) => d,
            Err((code, body, refusal)) => {
                log.status = code;
                log.refused = refusal;
                respond(stream, code, &body).await;
                return;
            }
        };
        log.dst = Some(dst);
        if self.shared.loop_guard.is_own_listener(dst) {
            log.status = 508;
            log.refused = Some(Refusal::Loop);
            respond(
                stream,
                508,
                &format!("508 Loop Detected: {dst} is this proxy's own listener\n"),
            )
            .await;
            return;
        }

        // The filters see CONNECT like any request, with the same context.
        let mut header =
            match RequestHeader::build("CONNECT", authority.as_bytes(), Some(req.headers.len())) {
                Ok(h) => h,
                Err(_) => {
                    log.status = 400;
                    respond(stream, 400, "400 Bad Request: bad CONNECT target\n").await;
                    return;
                }
            };
        for h in req.headers.iter() {
            let _ = header.append_header(h.name.to_string(), h.value);
        }
        let mut fctx = FilterCtx::new(
            FlowInfo {
                client: log
                    .client
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                destination: dst,
                listener: self.listener.name.as_str().into(),
                mode: self.listener.mode,
                request_id: log.request_id,
            },
            Some(authority.clone()),
        );
        let verdict = self.shared.chain.request(&mut fctx, &header).await;
        log.decision = fctx.decision().map(str::to_string);
        match verdict {
            Ok(None) => {}
            Ok(Some((r, by))) => {
                log.status = r.status;
                log.refused = Some(if by == "acl" {
                    Refusal::Acl
                } else {
                    Refusal::Filter
                });
                respond(stream, r.status, &r.body).await;
                return;
            }
            Err(e) => {
                log.status = 500;
                log.error = Some("FilterError");
                debug!("CONNECT {authority}: {e}");
                respond(stream, 500, "500 Internal Server Error\n").await;
                return;
            }
        }

        let u = &self.shared.upstream;
        let mut upstream = match connect_plain(dst, u.mark, u.connect_timeout).await {
            Ok(s) => s,
            Err(e) if e.etype() == &pingora_error::ErrorType::ConnectTimedout => {
                log.status = 504;
                log.error = Some("ConnectTimedout");
                respond(
                    stream,
                    504,
                    &format!("504 Gateway Timeout: {dst}: connect timed out\n"),
                )
                .await;
                return;
            }
            Err(e) => {
                log.status = 502;
                log.error = Some(e.etype().as_str());
                let why = e.root_cause().to_string();
                respond(stream, 502, &format!("502 Bad Gateway: {dst}: {why}\n")).await;
                return;
            }
        };
        log.status = 200;
        // Pingora's stream buffers writes: flush, or the client waits forever.
        let established = b"HTTP/1.1 200 Connection Established\r\n\r\n";
        if stream.write_all(established).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        // Bytes the client sent right after its request head go first.
        if head.len() > head_len && upstream.write_all(&head[head_len..]).await.is_err() {
            return;
        }
        match tokio::io::copy_bidirectional(stream, &mut upstream).await {
            Ok((up, down)) => {
                log.up = up + (head.len() - head_len) as u64;
                log.down = down;
            }
            Err(e) => debug!("CONNECT {authority} tunnel ended: {e}"),
        }
    }
}

struct TunnelLog {
    request_id: RequestId,
    client: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    authority: String,
    status: u16,
    refused: Option<Refusal>,
    decision: Option<String>,
    error: Option<&'static str>,
    up: u64,
    down: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(
            split_authority("example.org:443", None),
            Some(("example.org".into(), 443))
        );
        assert_eq!(
            split_authority("example.org", Some(80)),
            Some(("example.org".into(), 80))
        );
        assert_eq!(split_authority("example.org", None), None);
        assert_eq!(
            split_authority("[2001:db8::1]:8443", None),
            Some(("[2001:db8::1]".into(), 8443))
        );
        assert_eq!(
            split_authority("[2001:db8::1]", Some(80)),
            Some(("[2001:db8::1]".into(), 80))
        );
        assert_eq!(split_authority("2001:db8::1:443", None), None);
        assert_eq!(split_authority("host:99999", None), None);
    }

    #[test]
    fn local_destinations() {
        for ip in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "169.254.1.1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(is_local_destination(ip.parse().unwrap()), "{ip}");
        }
        assert!(!is_local_destination("198.51.100.10".parse().unwrap()));
        assert!(!is_local_destination("2001:db8:2::10".parse().unwrap()));
    }
}
