//! HTTPS on the transparent gateway without decrypting it: a
//! `mode: tls-passthrough` listener peeks at the TLS ClientHello, decides by
//! SNI ([`crate::tls::policy`]), then splices the untouched bytes to the
//! original destination ("peek and splice"). The proxy never holds a key:
//! it only reads the cleartext ClientHello, which it replays to the origin
//! byte for byte.
//!
//! It is a Pingora L4 app ([`ServerApp`]) behind the same transparent
//! listener and fd table as the HTTP listeners, so graceful upgrade keeps it.

use crate::access_log::TlsLog;
use crate::addr::{flow_name, OrigDstAddr};
use crate::decision::{Admitted, Decision, Flow, Target};
use crate::destination::connection_peers;
use crate::flow::{FlowKind, Refusal, TlsOutcome};
use crate::listener::ListenerKind;
use crate::metrics::ConnectionGuard;
use crate::relay::reset_on_close;
use crate::shared::ListenerState;
use crate::summary::{Kind, RequestLine, Summary, UpstreamUse};
use crate::tls::policy::DenyAction;
use crate::tls::{peek_client_hello, ClientHello, Peeked};
use crate::upstream::relay_opened;
use async_trait::async_trait;
use bytes::BytesMut;
use log::debug;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The passthrough app of one listener.
pub struct PassthroughApp {
    state: Arc<ListenerState>,
}

impl PassthroughApp {
    /// An app for the (tls-passthrough) listener of `state`.
    pub fn new(state: Arc<ListenerState>) -> Self {
        PassthroughApp { state }
    }
}

/// What happened to one connection, for its summary.
struct Conn {
    summary: Summary,
    hello: Option<ClientHello>,
    outcome: TlsOutcome,
    decision: Option<std::sync::Arc<str>>,
}

/// The TLS `access_denied` fatal alert (RFC 8446 §6).
const ACCESS_DENIED: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];

#[async_trait]
impl ServerApp for PassthroughApp {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = ConnectionGuard::new(&self.state.metrics.in_flight);
        let peers = connection_peers(&stream, self.state.listener.destination_source());
        // On the status page while it lasts (see `crate::live`).
        let live = self
            .state
            .shared
            .live
            .register(&self.state.listener.id, peers.client);
        let flow = live.as_ref().map(|r| r.flow().clone());
        crate::live::scope(flow, async {
            let mut conn = Conn {
                summary: Summary::new(peers.client),
                hello: None,
                outcome: TlsOutcome::BadHello,
                decision: None,
            };
            conn.summary.dst = peers.dst;
            self.handle(&mut stream, &mut conn).await;
            self.finish(&conn);
        })
        .await;
        None
    }
}

impl PassthroughApp {
    async fn handle(&self, stream: &mut Stream, conn: &mut Conn) {
        let ListenerKind::TlsPassthrough { policy, .. } = &self.state.listener.kind else {
            return;
        };
        let Some(dst) = conn.summary.dst else {
            conn.summary.error = Some("NoDestination");
            return;
        };
        // A loop is refused before a ClientHello is awaited (the decision
        // below refuses it too: the same first steps).
        let early = Flow {
            kind: FlowKind::Passthrough,
            client: conn.summary.client,
            target: Target::Original(Some(dst)),
            name: None,
            request: None,
            hello: None,
        };
        if let Err(Decision::Deny { answer, .. }) =
            self.state.shared.decider.admit(self.state.rules(), &early)
        {
            conn.outcome = TlsOutcome::Denied;
            conn.decision = Some("loop".into());
            conn.summary.refused = answer.refusal;
            return;
        }
        // Peek: read until the ClientHello is complete, keeping every byte.
        let mut buf = BytesMut::with_capacity(4096);
        let peeked =
            match tokio::time::timeout(policy.client_hello_timeout, read_hello(stream, &mut buf))
                .await
            {
                Ok(p) => p,
                Err(_) => {
                    conn.summary.error = Some("ClientHelloTimeout");
                    return;
                }
            };
        let hello = match peeked {
            Peeked::Invalid(why) => {
                conn.decision = Some(format!("invalid:{why}").into());
                close_denied(stream, policy.deny_action, true).await;
                return;
            }
            Peeked::NotTls => {
                conn.outcome = TlsOutcome::NonTls;
                None
            }
            Peeked::Hello(hello) => {
                conn.outcome = TlsOutcome::Denied;
                Some(hello)
            }
            Peeked::NeedMore => return,
        };
        conn.hello = hello;
        let Some(admitted) = self.decide(conn, dst).await else {
            let tls = conn.outcome != TlsOutcome::NonTls;
            close_denied(stream, policy.deny_action, tls).await;
            return;
        };
        self.splice(stream, conn, &buf, &admitted, policy.idle_timeout)
            .await;
    }

    /// The flow's decision; the destination when it may go on.
    async fn decide(&self, conn: &mut Conn, dst: OrigDstAddr) -> Option<Admitted> {
        let hello = conn.hello.as_ref();
        let name = hello.and_then(|h| h.sni.as_deref()).and_then(flow_name);
        let flow = Flow {
            kind: FlowKind::Passthrough,
            client: conn.summary.client,
            target: Target::Original(Some(dst)),
            name: name.as_deref(),
            request: None,
            hello,
        };
        match self.state.decide(&flow).await {
            Decision::Allow(a) => {
                conn.decision = a.by.clone();
                conn.summary.egress = Some(a.egress.name.clone());
                Some(a)
            }
            Decision::Deny { answer, by } => {
                conn.decision = by.or_else(|| answer.refusal.map(|r| r.as_str().into()));
                // Counted as `tls-policy` whatever decided (rule sets
                // included), as passthrough refusals always were.
                conn.summary.refused = match answer.refusal {
                    Some(Refusal::Loop) => {
                        conn.outcome = TlsOutcome::Denied;
                        Some(Refusal::Loop)
                    }
                    _ => Some(Refusal::TlsPolicy),
                };
                None
            }
        }
    }

    /// Connects, replays what was read, then relays both ways.
    async fn splice(
        &self,
        stream: &mut Stream,
        conn: &mut Conn,
        peeked: &[u8],
        admitted: &Admitted,
        idle: Duration,
    ) {
        let connect_start = Instant::now();
        let conf = &self.state.shared.upstream;
        let sni = conn.hello.as_ref().and_then(|h| h.sni.as_deref());
        let port = admitted.dst.map_or(443, |d| d.port());
        let client = conn.summary.client;
        let mut upstream = match self.state.open_upstream(admitted, sni, port, client).await {
            Ok(o) => {
                conn.summary.egress = Some(o.egress);
                o.stream
            }
            Err(e) => {
                conn.outcome = TlsOutcome::ConnectFailed;
                conn.summary.error = Some(e.kind());
                conn.summary.parent_status = e.parent_status();
                // No HTTP to answer in: a reset.
                reset_on_close(stream);
                return;
            }
        };
        conn.summary.upstream = Some(UpstreamUse::opened(&upstream, connect_start));
        if conn.outcome != TlsOutcome::NonTls {
            conn.outcome = TlsOutcome::Spliced;
        }
        let live = conn.summary.relaying();
        match relay_opened(stream, &mut upstream, peeked, conf, idle, live).await {
            Ok(r) => conn.summary.relayed(r, peeked.len()),
            Err(e) => conn.summary.error = Some(e),
        }
    }

    fn finish(&self, conn: &Conn) {
        let hello = conn.hello.as_ref();
        let sni = hello.and_then(|h| h.sni.as_deref());
        let versions: Vec<String> = hello
            .map(|h| h.versions.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        let tls = TlsLog {
            outcome: conn.outcome.as_str(),
            sni,
            alpn: hello.map(|h| h.alpn.as_slice()).unwrap_or_default(),
            versions: &versions,
            ech: hello.is_some_and(|h| h.ech),
        };
        let line = RequestLine {
            method: "TLS",
            host: sni,
            path: "-",
            decision: conn.decision.as_deref(),
        };
        conn.summary
            .finish(self.state.outputs(), line, Kind::Tls(conn.outcome, tls));
        debug!("TLS {} {:?} done", conn.summary.request_id, conn.outcome);
    }
}

/// Reads until the bytes in `buf` are a complete ClientHello, or can never
/// be one.
async fn read_hello(stream: &mut Stream, buf: &mut BytesMut) -> Peeked {
    loop {
        match peek_client_hello(buf) {
            Peeked::NeedMore => {}
            other => return other,
        }
        match stream.read_buf(buf).await {
            Ok(n) if n > 0 => {}
            _ => return Peeked::Invalid("connection closed before a complete ClientHello"),
        }
    }
}

/// Closes a denied connection: a TLS alert where the client speaks TLS and
/// the policy says so, else a TCP reset.
async fn close_denied(stream: &mut Stream, action: DenyAction, tls: bool) {
    match action {
        DenyAction::Alert if tls => {
            let _ = stream.write_all(&ACCESS_DENIED).await;
            let _ = stream.flush().await;
            stream.shutdown().await.ok();
        }
        _ => reset_on_close(stream),
    }
}
