//! One client connection of an HTTP listener: the keep-alive loop around
//! Pingora's HTTP proxy, with tproxyd's request-head limits.
//!
//! Pingora's own loop (its `ServerApp` for HTTP apps) is replaced by this
//! one, which does the same for HTTP/1 (a session per request, persistent
//! settings carried over, keep-alive off while shutting down) and adds:
//! the stream is wrapped in a [`HeadGuard`] armed before each request; the
//! idle time between requests is `downstream.keepalive_timeout`; pipelined
//! requests are kept (Pingora's pipelining switch) and answered in order;
//! a limit that ends the connection is counted and, for 408/431, logged.

use crate::destination::{stream_client, stream_destination};
use crate::downstream::head::{HeadGuard, HeadToken, HeadWatch};
use crate::flow::{DownstreamLimit, Refusal};
use crate::listener::ListenerKind;
use crate::shared::ListenerState;
use crate::summary::{Kind, RequestLine, Summary};
use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::net::SocketAddr;
use std::sync::Arc;

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
}

impl<P> HttpConnections<P> {
    /// Counts a limit that ended a connection; a 408 or 431 (which the
    /// client was sent) also gets its access-log record.
    fn record(&self, limit: DownstreamLimit, client: Option<SocketAddr>, dst: Option<SocketAddr>) {
        self.state.metrics.limit(limit);
        let (status, refusal) = match limit {
            DownstreamLimit::HeaderTimeout => (408, Refusal::HeaderTimeout),
            DownstreamLimit::HeaderTooLarge => (431, Refusal::HeaderTooLarge),
            _ => return,
        };
        let mut summary = Summary::new(client);
        summary.dst = dst;
        summary.status = status;
        summary.refused = Some(refusal);
        let line = RequestLine {
            method: "-",
            host: None,
            path: "-",
            decision: None,
        };
        summary.finish(self.state.outputs(), line, Kind::Request);
    }
}

#[async_trait]
impl<P: HttpServerApp + Send + Sync + 'static> ServerApp for HttpConnections<P> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = self.state.shared.downstream;
        let client = stream_client(&stream);
        let dst = match &self.state.listener.kind {
            ListenerKind::Http { source, .. } => stream_destination(&stream, *source),
            _ => None,
        };
        let watch = HeadWatch::new();
        let mut stream = HeadGuard::wrap(stream, watch.clone(), limits);
        let mut persistent: Option<HttpPersistentSettings> = None;
        // Pingora's own idle bound per read, kept just above ours so that
        // ours (which counts) is the one that fires.
        let keepalive = limits.keepalive_timeout.as_secs() + 1;
        loop {
            let mut session = ServerSession::new_http1(stream);
            if let Some(p) = persistent.take() {
                p.apply_to_session(&mut session);
            }
            session.set_keepalive((!*shutdown.borrow()).then_some(keepalive));
            session.set_pipelining_enabled(true);
            session.set_connection_user_context(Some(Box::new(HeadToken(watch.clone()))));
            watch.arm();
            match self.proxy.process_new_http(session, shutdown).await {
                Some(reused) => (stream, persistent) = reused.consume(),
                None => break,
            }
        }
        if let Some(limit) = watch.fired() {
            self.record(limit, client, dst);
        }
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await
    }
}
