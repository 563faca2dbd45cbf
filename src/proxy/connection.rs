//! One client connection of an HTTP listener: the keep-alive loop around
//! Pingora's HTTP proxy, with tproxyd's request-head limits.
//!
//! Pingora's own loop (its `ServerApp` for HTTP apps) is replaced by this
//! one, which does the same for HTTP/1 (a session per request, persistent
//! settings carried over, keep-alive off while shutting down) and adds:
//! each request head is read first by [`read_head`] (idle deadline, head
//! deadline, size cap) and handed to Pingora as the session's prefix;
//! pipelined requests are kept (Pingora's pipelining switch, and the
//! carried-over bytes come back to [`read_head`]) and answered in order; a
//! limit that ends the connection is counted and, for 408/431, logged.

use super::tunnel::{tunnel, Opening};
use crate::destination::{stream_client, stream_destination};
use crate::downstream::head::{answer_limit, answer_refused, read_head, shutdown_wait, Head};
use crate::downstream::idle::IdleTimer;
use crate::downstream::sniff::{sniff, Sniff};
use crate::downstream::wake::Gated;
use crate::flow::{DownstreamLimit, Protocol, Refusal};
use crate::listener::ListenerKind;
use crate::shared::ListenerState;
use crate::summary::{Kind, RequestLine, Summary};
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// Handed to Pingora as the connection's user context with each request:
/// Pingora gives it back to `ProxyHttp::on_connection_reuse` once it has
/// accepted the head, so a request it refused before any hook ran (a head
/// it cannot parse: 400; `CONNECT` on a transparent listener: 405) can
/// still be logged and counted here. It also carries the connection's
/// addresses, so a request does not look them up again.
pub(super) struct RequestSeen {
    pub(super) seen: Arc<AtomicBool>,
    pub(super) peers: Peers,
}

/// The client and (on transparent listeners) the original destination of
/// a connection, looked up once for its records.
pub(super) type Peers = (Option<SocketAddr>, Option<SocketAddr>);

/// Whether a head's request line (after any empty lines) is a CONNECT.
fn is_connect(head: &[u8]) -> bool {
    let start = head.iter().position(|b| !matches!(b, b'\r' | b'\n'));
    start.is_some_and(|s| head[s..].starts_with(b"CONNECT "))
}

/// An HTTP listener's app: Pingora's proxy `P` behind the head limits.
pub struct HttpConnections<P> {
    proxy: Arc<P>,
    state: Arc<ListenerState>,
}

impl<P> HttpConnections<P> {
    /// Serves the connections of `state`'s listener with `proxy`.
    pub fn new(proxy: P, state: Arc<ListenerState>) -> Self {
        HttpConnections {
            proxy: Arc::new(proxy),
            state,
        }
    }

    /// Counts a limit that ended a connection; a 408 or 431 that the client
    /// was sent also gets its access-log record.
    fn record_limit(&self, limit: DownstreamLimit, status: u16, peers: Peers) {
        self.state.metrics.limit(limit);
        let refusal = match limit {
            DownstreamLimit::HeaderTimeout => Refusal::HeaderTimeout,
            DownstreamLimit::HeaderTooLarge => Refusal::HeaderTooLarge,
            _ => return,
        };
        self.log_answered(peers, "-", status, Some(refusal), None);
    }

    /// Logs and counts a request Pingora answered itself before any hook
    /// ran (it did not accept the head): 405 for CONNECT, else 400.
    fn record_rejected(&self, connect: bool, peers: Peers) {
        match connect {
            true => self.log_answered(peers, "CONNECT", 405, None, Some("MethodNotAllowed")),
            false => self.log_answered(peers, "-", 400, None, Some("InvalidHTTPHeader")),
        }
    }

    /// One record for an answer given outside Pingora's request hooks.
    fn log_answered(
        &self,
        (client, dst): Peers,
        method: &str,
        status: u16,
        refused: Option<Refusal>,
        error: Option<&'static str>,
    ) {
        let mut summary = Summary::new(client);
        summary.dst = dst;
        summary.status = status;
        summary.refused = refused;
        summary.error = error;
        let line = RequestLine {
            method,
            host: None,
            path: "-",
            decision: None,
        };
        summary.finish(self.state.outputs(), line, Kind::Request);
    }

    /// How the connection starts, on listeners that tunnel what is not
    /// HTTP: `Ok` with the first bytes of an HTTP request (none where there
    /// is nothing to tell), `Err` with what to tunnel, or `Err(None)` when
    /// the connection is over (closed, or a limit fired and was handled).
    async fn first_request<S: Future + ?Sized>(
        &self,
        stream: &mut Stream,
        stopping: Pin<&mut S>,
        peers: Peers,
    ) -> Result<Option<(BytesMut, Instant)>, Option<Opening>> {
        let ListenerKind::Http {
            server_first_after, ..
        } = &self.state.listener.kind
        else {
            return Ok(None);
        };
        let limits = self.state.shared.downstream;
        let (protocol, first, hello) =
            match sniff(stream, &limits, *server_first_after, stopping).await {
                Sniff::Http(head, started) => return Ok(Some((head, started))),
                Sniff::Other(p, first, hello) => (p, first, hello),
                Sniff::Silent => (Protocol::ServerFirst, Vec::new(), None),
                Sniff::Closed => return Err(None),
                Sniff::Limit(limit) => {
                    let status = answer_limit(stream, limit).await;
                    self.record_limit(limit, status, peers);
                    return Err(None);
                }
            };
        Err(Some(Opening {
            protocol,
            first,
            hello,
        }))
    }

    /// The connection's original destination (none on forward listeners,
    /// where each request names its own).
    fn destination(&self, stream: &Stream) -> Option<SocketAddr> {
        match &self.state.listener.kind {
            ListenerKind::Http { source, .. } => stream_destination(stream, *source),
            _ => None,
        }
    }
}

#[async_trait]
impl<P: HttpServerApp + Send + Sync + 'static> ServerApp for HttpConnections<P> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = self.state.shared.downstream;
        let mut watch = shutdown.clone();
        let mut persistent: Option<HttpPersistentSettings> = None;
        let seen = Arc::new(AtomicBool::new(false));
        let peers = (stream_client(&stream), self.destination(&stream));
        // The connection's one wait for the shutdown signal, polled by
        // every wait for a request after the first. Gated: polled again
        // only once the signal came, not on each wait.
        let mut stopping = std::pin::pin!(Gated::new(shutdown_wait(&mut watch)));
        // The first request is awaited even once shutdown has begun: the
        // client of a connection accepted at that moment has sent it or is
        // about to, and must get an answer, not a close (the process still
        // serves it; keep-alive is then off). Its wait is bounded in time.
        let mut never = std::pin::pin!(std::future::pending::<()>());
        let first = self.first_request(&mut stream, never.as_mut(), peers);
        let mut first = match first.await {
            Ok(prefix) => prefix,
            Err(Some(opening)) => {
                // Boxed: the tunnel's relay future is large, and inline it
                // would be carried by every idle keep-alive connection.
                Box::pin(tunnel(&self.state, stream, opening)).await;
                return None;
            }
            Err(None) => return None,
        };
        // Pingora's own idle bound per read, kept above ours: it only
        // matters if Pingora ever reads a head itself.
        let keepalive = limits.keepalive_timeout.as_secs() + 1;
        let mut idle = IdleTimer::default();
        let mut first_wait = true;
        loop {
            let (prefix, started) = match first.take() {
                Some((head, started)) => (Some(head), Some(started)),
                None => (
                    persistent.as_mut().and_then(|p| p.take_pipelined_prefix()),
                    None,
                ),
            };
            // The first wait ignores shutdown (see above); later ones end on it.
            let wait: Pin<&mut (dyn Future<Output = ()> + Send)> = if first_wait {
                never.as_mut()
            } else {
                stopping.as_mut()
            };
            first_wait = false;
            let read = read_head(&mut stream, prefix, started, &limits, wait, &mut idle).await;
            let (head, refused) = match read {
                Head::Ready(head, refused) => (head, refused),
                Head::Closed => break,
                Head::Limit(limit) => {
                    let status = answer_limit(&mut stream, limit).await;
                    self.record_limit(limit, status, peers);
                    break;
                }
            };
            if let Some(status) = refused {
                answer_refused(&mut stream, status).await;
                self.record_rejected(status == 405, peers);
                break;
            }
            let mut session = ServerSession::new_http1(stream);
            if let Some(p) = persistent.take() {
                p.apply_to_session(&mut session);
            }
            session.set_keepalive((!*shutdown.borrow()).then_some(keepalive));
            session.set_pipelining_enabled(true);
            session.set_write_timeout(Some(limits.send_timeout));
            // Pingora consumes the prefix: note now whether it is a CONNECT
            // (405 rather than 400 should Pingora refuse the head).
            let connect = is_connect(&head);
            session.set_pipelined_prefix(head);
            seen.store(false, Ordering::Relaxed);
            session.set_connection_user_context(Some(Box::new(RequestSeen {
                seen: seen.clone(),
                peers,
            })));
            match self.proxy.process_new_http(session, shutdown).await {
                Some(reused) => (stream, persistent) = reused.consume(),
                None => {
                    if !seen.load(Ordering::Relaxed) {
                        self.record_rejected(connect, peers);
                    }
                    break;
                }
            }
        }
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await
    }
}
