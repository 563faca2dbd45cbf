//! The first thing every client connection meets: the connection caps.
//! Wraps a listener's Pingora app; a connection over a cap is reset at once
//! (counted, never queued), unless it takes the place of an idle one
//! (counted as `reclaimed`); the others are counted as open while they
//! live, and their task knows its place ([`Place::current`]).

use super::connections::{Admission, ConnectionLimiter};
use super::reclaim::Place;
use crate::flow::DownstreamLimit;
use crate::metrics::{ConnectionGuard, ListenerMetrics};
use crate::relay::reset_on_close;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

/// A listener's app behind the connection caps.
pub struct ConnectionGate<A> {
    inner: Arc<A>,
    limiter: Arc<ConnectionLimiter>,
    metrics: ListenerMetrics,
}

impl<A> ConnectionGate<A> {
    /// `inner` serves the connections `limiter` lets in; `metrics` counts
    /// open ones and refusals.
    pub fn new(inner: A, limiter: Arc<ConnectionLimiter>, metrics: ListenerMetrics) -> Self {
        ConnectionGate {
            inner: Arc::new(inner),
            limiter,
            metrics,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ConnectionGate<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let client = crate::destination::stream_client(&stream).map(|c| c.ip());
        let permit = match self.limiter.try_acquire(client) {
            Ok((permit, Admission::Free)) => permit,
            Ok((permit, Admission::Reclaimed)) => {
                self.metrics.limit(DownstreamLimit::Reclaimed);
                permit
            }
            Err(limit) => {
                self.metrics.limit(limit);
                reset_on_close(&stream);
                return None;
            }
        };
        let _open = ConnectionGuard::new(&self.metrics.downstream_active);
        let mut served = self.inner.process_new(stream, shutdown);
        let mut place = Some(permit.place());
        let first = poll_fn(|cx| match place.take() {
            Some(p) => Poll::Ready(Place::first_poll(p, served.as_mut(), cx)),
            None => Poll::Pending,
        });
        match first.await {
            Poll::Ready(done) => done,
            Poll::Pending => served.await,
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}
