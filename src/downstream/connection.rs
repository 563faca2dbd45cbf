//! One client connection of an HTTP listener, between its requests: the
//! keep-alive connection as a type, the way mini-redis has its `Handler`.
//!
//! A [`Connection`] owns the client stream, its [`Peers`], the idle timer
//! and the one wait for the shutdown signal it keeps for its whole life.
//! [`Connection::next`] says what comes next: a request head to hand to
//! Pingora, a CONNECT, something that is not HTTP to tunnel, a refused
//! head, or the end. Between requests the stream lives in Pingora's
//! session; [`Connection::into_session`] and [`Parked::resume`] move it
//! there and back, with the settings Pingora keeps across requests.

use super::head::{read_head, shutdown_wait, Head, HeadKind};
use super::idle::Idle;
use super::reclaim::Place;
use super::reply::{self, HeadRefusal};
use super::sniff::{sniff, Opening, Sniff};
use super::wake::Gated;
use super::Downstream;
use crate::addr::Peers;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

/// The connection's wait for the shutdown signal, made once.
type ShutdownWait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a listener's connections may carry besides HTTP requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accepts {
    /// Tell what is not HTTP/1.x at the start and tunnel it (tproxy and
    /// redirect listeners); with the wait after which a silent client is
    /// taken for a server-first protocol.
    pub tunnels: Option<Option<Duration>>,
    /// `CONNECT` requests (forward listeners); elsewhere they get 405.
    pub connect: bool,
}

/// What comes next on a connection.
#[derive(Debug)]
pub enum Next {
    /// A request head, whole, with any bytes after it: for Pingora.
    Request(BytesMut),
    /// A CONNECT head, with any bytes after it.
    Connect(BytesMut),
    /// Not HTTP: what to tunnel.
    Tunnel(Opening),
    /// A head refused before Pingora saw it: reply, then close.
    Refused(HeadRefusal),
    /// No request within `keepalive_timeout`: close.
    Idle,
    /// The client left, or the process is shutting down: close.
    Closed,
}

/// A client connection between requests; see the module docs.
pub struct Connection<'a> {
    stream: Stream,
    persistent: Option<HttpPersistentSettings>,
    kept: Kept<'a>,
}

/// A connection whose stream is in a Pingora session for one request.
pub struct Parked<'a>(Kept<'a>);

/// What a connection keeps while its stream is in a Pingora session.
struct Kept<'a> {
    peers: Peers,
    limits: &'a Downstream,
    accepts: Accepts,
    idle: Idle,
    shutdown: ShutdownWatch,
    stopping: Gated<ShutdownWait>,
    served: bool,
}

impl<'a> Connection<'a> {
    /// A new connection from `peers` on a listener that `accepts`; its
    /// place among the open ones is its task's ([`Place::current`]), so it
    /// is made in the first poll of that task, before anything is awaited.
    pub fn new(
        stream: Stream,
        peers: Peers,
        limits: &'a Downstream,
        accepts: Accepts,
        shutdown: &ShutdownWatch,
    ) -> Self {
        Connection {
            stream,
            persistent: None,
            kept: Kept {
                peers,
                limits,
                accepts,
                idle: Idle::new(Place::current()),
                shutdown: shutdown.clone(),
                stopping: Gated::new(Box::pin(shutdown_wait(shutdown.clone()))),
                served: false,
            },
        }
    }

    /// Its client and original destination.
    pub fn peers(&self) -> Peers {
        self.kept.peers
    }

    /// What comes next. The first request is awaited even once shutdown
    /// has begun: the client of a connection accepted at that moment has
    /// sent it or is about to, and gets an answer (keep-alive then off),
    /// within the usual bounds. Later waits end with the shutdown.
    pub async fn next(&mut self) -> Next {
        let k = &mut self.kept;
        let first = !k.served;
        k.served = true;
        let mut never = std::future::pending::<()>();
        let (prefix, started) = match (first, k.accepts.tunnels) {
            (true, Some(server_first_after)) => {
                let wait = Pin::new(&mut never);
                let (stream, limits, idle) = (&mut self.stream, k.limits, &mut k.idle);
                match sniff(stream, limits, server_first_after, wait, idle).await {
                    Sniff::Http(head, started) => (Some(head), Some(started)),
                    Sniff::Other(opening) => return Next::Tunnel(opening),
                    Sniff::Closed => return Next::Closed,
                    Sniff::Idle => return Next::Idle,
                    Sniff::Refused(r) => return Next::Refused(r),
                }
            }
            _ => (
                self.persistent
                    .as_mut()
                    .and_then(|p| p.take_pipelined_prefix()),
                None::<Instant>,
            ),
        };
        type Wait<'w> = Pin<&'w mut (dyn Future<Output = ()> + Send)>;
        let wait: Wait<'_> = if first {
            Pin::new(&mut never) as Wait<'_>
        } else {
            Pin::new(&mut k.stopping) as Wait<'_>
        };
        match read_head(
            &mut self.stream,
            prefix,
            started,
            k.limits,
            wait,
            &mut k.idle,
        )
        .await
        {
            Head::Ready(head, HeadKind::Request) => Next::Request(head),
            Head::Ready(head, HeadKind::Connect) if k.accepts.connect => Next::Connect(head),
            Head::Ready(_, HeadKind::Connect) => Next::Refused(HeadRefusal::ConnectNotAllowed),
            Head::Refused(r) => Next::Refused(r),
            Head::Closed => Next::Closed,
            Head::Idle => Next::Idle,
        }
    }

    /// Sends the reply of `refusal`; whether the client took it.
    pub async fn reply(&mut self, refusal: HeadRefusal) -> bool {
        reply::send(&mut self.stream, refusal.reply()).await
    }

    /// The client stream, for a tunnel or a CONNECT.
    pub fn into_stream(self) -> Stream {
        self.stream
    }

    /// A Pingora session for the request whose head is `head`, with the
    /// settings carried over from the previous one; keep-alive is off once
    /// shutdown has begun.
    pub fn into_session(self, head: BytesMut) -> (ServerSession, Parked<'a>) {
        let mut session = ServerSession::new_http1(self.stream);
        if let Some(p) = self.persistent {
            p.apply_to_session(&mut session);
        }
        // Pingora's own idle bound per read, kept above ours: it only
        // matters if Pingora ever reads a head itself.
        let limits = self.kept.limits;
        let keepalive = limits.keepalive_timeout.as_secs() + 1;
        session.set_keepalive((!*self.kept.shutdown.borrow()).then_some(keepalive));
        session.set_pipelining_enabled(true);
        session.set_write_timeout(Some(limits.send_timeout));
        session.set_pipelined_prefix(head);
        (session, Parked(self.kept))
    }
}

impl<'a> Parked<'a> {
    /// Its client and original destination.
    pub fn peers(&self) -> Peers {
        self.0.peers
    }

    /// The connection again, after Pingora gave its stream back.
    pub fn resume(self, reused: ReusedHttpStream) -> Connection<'a> {
        let (stream, persistent) = reused.consume();
        Connection {
            stream,
            persistent,
            kept: self.0,
        }
    }
}
