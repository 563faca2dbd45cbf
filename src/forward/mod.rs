//! Forward (explicit) proxy listeners (`mode: forward`): clients configured
//! with `http_proxy` send absolute-form requests (`GET http://host/path`),
//! which Pingora's HTTP proxy handles through [`crate::proxy`], and
//! `CONNECT host:port` (how browsers reach HTTPS through a proxy), which
//! [`connect`] tunnels. The policy that keeps this from being an open proxy
//! is [`crate::admission::forward`].

mod connect;

use crate::shared::ListenerState;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::sync::Arc;

/// Wraps a forward listener's HTTP app: connections whose next request is
/// `CONNECT` are tunnelled here, everything else goes to the inner app.
pub struct ForwardApp<A> {
    inner: Arc<A>,
    state: Arc<ListenerState>,
}

impl<A> ForwardApp<A> {
    /// `inner` serves the non-CONNECT requests of the listener of `state`.
    pub fn new(inner: A, state: Arc<ListenerState>) -> Self {
        ForwardApp {
            inner: Arc::new(inner),
            state,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ForwardApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut first = [0u8; 8];
        // Idle before the first request: the keep-alive bound applies. Not
        // cut short by a shutdown: a connection accepted as it begins still
        // gets its first request answered (see `proxy::connection`).
        let idle = self.state.shared.downstream.keepalive_timeout;
        let peeked = tokio::time::timeout(idle, stream.try_peek(&mut first)).await;
        match peeked {
            Ok(Ok(true)) if &first == b"CONNECT " => {
                connect::tunnel(&self.state, stream).await;
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
