//! One client connection of an HTTP listener: the keep-alive loop around
//! Pingora's HTTP proxy.
//!
//! Pingora's own loop (its `ServerApp` for HTTP apps) is replaced by this
//! one, which does the same for HTTP/1 (a session per request, persistent
//! settings carried over, keep-alive off while shutting down) and reads
//! each request head first, within tproxyd's limits, through a
//! [`Connection`]. Pipelined requests are kept (Pingora's pipelining
//! switch, and the carried-over bytes come back to the next read) and
//! answered in order. A refused head is answered, counted and logged here;
//! a CONNECT (forward listeners) and what is not HTTP (tunnels) leave the
//! loop for their own paths.

use super::connect;
use super::tunnel::tunnel;
use crate::addr::Peers;
use crate::destination::connection_peers;
use crate::downstream::connection::{Accepts, Connection, Next};
use crate::downstream::reply::HeadRefusal;
use crate::flow::DownstreamLimit;
use crate::listener::ListenerKind;
use crate::shared::ListenerState;
use crate::summary::{Kind, RequestLine, Summary};
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What a request learns of its connection. Pingora calls
/// `ProxyHttp::new_ctx` only once it has accepted a request head, in this
/// connection's task: the loop scopes this around each request, and
/// [`request_seen`] marks it seen and hands over the connection's peers.
/// A head Pingora refused before any hook ran (400) is then still logged.
#[derive(Clone)]
struct RequestOrigin {
    peers: Peers,
    seen: Arc<AtomicBool>,
}

tokio::task_local! {
    static ORIGIN: RequestOrigin;
}

/// Called by `new_ctx`: the request was accepted; its connection's peers
/// (none outside this loop, which never happens in tproxyd).
pub(super) fn request_seen() -> Option<Peers> {
    ORIGIN
        .try_with(|o| {
            o.seen.store(true, Ordering::Relaxed);
            o.peers
        })
        .ok()
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

    /// What this listener's connections may carry besides requests.
    fn accepts(&self) -> Accepts {
        match &self.state.listener.kind {
            ListenerKind::Http {
                server_first_after, ..
            } => Accepts {
                tunnels: Some(*server_first_after),
                connect: false,
            },
            ListenerKind::Forward(_) => Accepts {
                tunnels: None,
                connect: true,
            },
            ListenerKind::TlsPassthrough { .. } => Accepts::default(),
        }
    }

    /// Counts and logs a head refused before Pingora saw it (`sent`: the
    /// client took the reply).
    fn record_refused(&self, refusal: HeadRefusal, sent: bool, peers: Peers) {
        if let Some(limit) = refusal.limit() {
            self.state.metrics.limit(limit);
        }
        let mut summary = Summary::new(peers.client);
        summary.dst = peers.dst;
        summary.status = if sent { refusal.status() } else { 0 };
        summary.refused = refusal.refusal();
        summary.error = refusal.error();
        let line = RequestLine {
            method: refusal.method(),
            host: None,
            path: "-",
            decision: None,
        };
        summary.finish(self.state.outputs(), line, Kind::Request);
    }
}

impl<P: HttpServerApp + Send + Sync + 'static> HttpConnections<P> {
    /// Hands one request to Pingora; the connection again if it stays
    /// open.
    async fn serve<'c>(
        &self,
        conn: Connection<'c>,
        head: bytes::BytesMut,
        shutdown: &ShutdownWatch,
    ) -> Option<Connection<'c>> {
        let (session, parked) = conn.into_session(head);
        let origin = RequestOrigin {
            peers: parked.peers(),
            seen: Arc::new(AtomicBool::new(false)),
        };
        let seen = origin.seen.clone();
        let served = ORIGIN.scope(origin, self.proxy.process_new_http(session, shutdown));
        match served.await {
            Some(reused) => Some(parked.resume(reused)),
            None => {
                if !seen.load(Ordering::Relaxed) {
                    // Pingora answered 400 itself (a head it cannot parse
                    // even with its target escaped).
                    self.record_refused(HeadRefusal::Malformed, true, parked.peers());
                }
                None
            }
        }
    }
}

#[async_trait]
impl<P: HttpServerApp + Send + Sync + 'static> ServerApp for HttpConnections<P> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let state = &self.state;
        let peers = connection_peers(&stream, state.listener.destination_source());
        // On the status page while it lasts (see `crate::live`).
        let live = state.shared.live.register(&state.listener.id, peers.client);
        let flow = live.as_ref().map(|r| r.flow().clone());
        crate::live::scope(flow, self.connection(stream, peers, shutdown)).await
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await
    }
}

impl<P: HttpServerApp + Send + Sync + 'static> HttpConnections<P> {
    /// Serves one client connection to its end.
    ///
    /// Its future is what every connection carries for its whole life, so
    /// whatever only some paths need is boxed (a request, a tunnel, a
    /// refusal) and nothing is kept across an await that the wait for the
    /// next request does not need (`Next` is matched and dropped first).
    async fn connection(
        &self,
        stream: Stream,
        peers: Peers,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = &self.state.shared.downstream;
        // Before any await: the connection takes its place from the gate.
        let mut conn = Connection::new(stream, peers, limits, self.accepts(), shutdown);
        loop {
            let head = match conn.next().await {
                Next::Request(head) => head,
                Next::Idle => {
                    self.state.metrics.limit(DownstreamLimit::KeepaliveTimeout);
                    return None;
                }
                Next::Closed => return None,
                other => {
                    let end = Box::pin(self.end(conn, other));
                    end.await;
                    return None;
                }
            };
            let served = Box::pin(self.serve(conn, head, shutdown));
            conn = served.await?;
        }
    }

    /// Ends a connection whose `next` is not a request: a CONNECT and what
    /// is not HTTP leave for their own paths, a refused head is answered.
    async fn end(&self, mut conn: Connection<'_>, next: Next) {
        let (state, peers) = (&self.state, conn.peers());
        match next {
            Next::Connect(head) => connect::tunnel(state, conn.into_stream(), peers, head).await,
            Next::Tunnel(opening) => tunnel(state, conn.into_stream(), peers, opening).await,
            Next::Refused(refusal) => {
                let sent = conn.reply(refusal).await;
                self.record_refused(refusal, sent, peers);
            }
            Next::Request(_) | Next::Idle | Next::Closed => {}
        }
    }
}
