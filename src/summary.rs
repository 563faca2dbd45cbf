//! One summary per request, CONNECT tunnel or passthrough connection, from
//! which both its access-log record and its metrics are made, so the two
//! can never disagree: whatever path a flow took (forwarded, answered by a
//! filter, refused by its decision, failed upstream), it ends in
//! [`Summary::finish`].

use crate::access_log::{AccessLog, Record, TlsLog};
use crate::addr::{ClientAddr, OrigDstAddr};
use crate::flow::{Answer, ListenerId, Protocol, Refusal, RelayKind, RequestId, TlsOutcome};
use crate::live::{FlowState, Live, LiveFlow};
use crate::metrics::ListenerMetrics;
use crate::relay::{Counts, Relayed};
use pingora_core::protocols::GetSocketDigest;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The upstream connection a flow used.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamUse {
    /// Its local address (shows source spoofing).
    pub local: Option<SocketAddr>,
    /// Taken from the pool rather than opened.
    pub reused: bool,
    /// Time to open it; none when reused.
    pub connect_time: Option<Duration>,
}

impl UpstreamUse {
    /// A connection just opened by one of tproxyd's own connectors (raw
    /// tunnels, passthrough), `started` when the connect began.
    pub fn opened(upstream: &impl GetSocketDigest, started: Instant) -> UpstreamUse {
        UpstreamUse {
            local: upstream
                .get_socket_digest()
                .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())
                .map(crate::addr::canonical),
            reused: false,
            connect_time: Some(started.elapsed()),
        }
    }
}

/// What is known about a flow while it runs.
#[derive(Debug)]
pub struct Summary {
    /// Its id.
    pub request_id: RequestId,
    /// When it started (for its duration).
    pub start: Instant,
    /// The client.
    pub client: Option<ClientAddr>,
    /// The (original or resolved) destination, once known.
    pub dst: Option<OrigDstAddr>,
    /// Status sent to the client; 0 when none (passthrough, gone client).
    pub status: u16,
    /// Body (or tunnel) bytes from the client.
    pub rx: u64,
    /// Body (or tunnel) bytes to the client.
    pub tx: u64,
    /// The upstream connection, once one was used.
    pub upstream: Option<UpstreamUse>,
    /// Why tproxyd refused it, if it did.
    pub refused: Option<Refusal>,
    /// Error kind when it failed, e.g. `ConnectRefused`.
    pub error: Option<&'static str>,
    /// How an opaque flow's bytes were relayed, once they were.
    pub relay: Option<RelayKind>,
    /// The egress it left through, once chosen.
    pub egress: Option<Arc<str>>,
    /// A parent proxy's status when it refused the flow.
    pub parent_status: Option<u16>,
    /// Its place on the status page: the connection task's flow
    /// ([`crate::live::current`]), none when flows are off.
    live: Option<Arc<LiveFlow>>,
}

/// The request line as logged.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    /// Method, or `TLS` for a passthrough connection.
    pub method: &'a str,
    /// Host header, CONNECT authority or SNI.
    pub host: Option<&'a str>,
    /// Path, CONNECT authority, or `-`.
    pub path: &'a str,
    /// What a filter or policy decided, e.g. `acl:deny:no-admin`.
    pub decision: Option<&'a str>,
}

/// What kind of flow it was: it decides which counters move.
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    /// An HTTP request or a CONNECT tunnel: counted by status class.
    Request,
    /// A TLS passthrough connection: counted by outcome.
    Tls(TlsOutcome, TlsLog<'a>),
    /// Not HTTP on an HTTP listener, tunnelled (or refused): counted by
    /// what it was; a TLS ClientHello's SNI is logged.
    Tunnel(Protocol, Option<TlsLog<'a>>),
}

/// Where a finished summary goes.
#[derive(Clone, Copy)]
pub struct Outputs<'a> {
    /// The listener the flow arrived on.
    pub listener: &'a ListenerId,
    /// Its metrics.
    pub metrics: &'a ListenerMetrics,
    /// The access log, unless disabled.
    pub log: Option<&'a AccessLog>,
    /// The status page's top lists.
    pub live: &'a Live,
}

impl RequestLine<'_> {
    /// No request line: for a record that is not written.
    pub const NONE: RequestLine<'static> = RequestLine {
        method: "-",
        host: None,
        path: "-",
        decision: None,
    };
}

impl Summary {
    /// A flow from `client` starting now (of the connection task's live
    /// flow, if any).
    pub fn new(client: Option<ClientAddr>) -> Summary {
        let request_id = RequestId::next();
        let live = crate::live::current();
        if let Some(f) = &live {
            f.request_started(request_id);
        }
        Summary {
            request_id,
            start: Instant::now(),
            client,
            dst: None,
            status: 0,
            rx: 0,
            tx: 0,
            upstream: None,
            refused: None,
            error: None,
            relay: None,
            egress: None,
            parent_status: None,
            live,
        }
    }

    /// Its bytes begin to flow (a response, a relay): the live flow shows
    /// it, and the relay counts into the live flow's counters.
    pub fn relaying(&self) -> Option<&Counts> {
        let f = self.live.as_deref()?;
        f.set_state(FlowState::Relaying);
        Some(f.counts())
    }

    /// `n` bytes of an HTTP response body went to the client: the live
    /// flow counts them, relaying.
    pub fn response_bytes(&self, n: usize) {
        if let Some(c) = self.relaying() {
            c.down.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Records that tproxyd answered the flow itself with `answer`.
    pub fn answered(&mut self, answer: &Answer) {
        self.status = answer.status;
        self.refused = answer.refusal;
        self.error = self.error.or(answer.error);
    }

    /// An opaque flow's relay ended: its kind, its byte counts (plus the
    /// `sent_before` client bytes written upstream ahead of it: a replayed
    /// ClientHello, early tunnel bytes), and an idle end as the error.
    pub fn relayed(&mut self, r: Relayed, sent_before: usize) {
        self.relay = Some(r.kind);
        self.rx = sent_before as u64 + r.up;
        self.tx = r.down;
        if r.idle {
            self.error = Some("IdleTimeout");
        }
    }

    /// Counts the flow (in the metrics and the status page's top lists)
    /// and writes its access-log record.
    pub fn finish(&self, out: Outputs<'_>, line: RequestLine<'_>, kind: Kind<'_>) {
        let duration = self.start.elapsed();
        let m = out.metrics;
        let (rx, tx) = (self.rx as usize, self.tx as usize);
        if let Some(f) = &self.live {
            out.live.finished(f, self.dst, self.rx + self.tx);
            // An HTTP connection reads its next head.
            f.set_state(FlowState::ReadingHead);
        }
        match kind {
            Kind::Request => m.request_done(self.status, rx, tx, duration.as_secs_f64()),
            Kind::Tls(outcome, _) => {
                m.tls_connection(outcome);
                m.transfer(rx, tx, duration.as_secs_f64());
            }
            Kind::Tunnel(protocol, _) => {
                if self.refused.is_none() {
                    m.tunnel(protocol);
                }
                m.transfer(rx, tx, duration.as_secs_f64());
            }
        }
        if let Some(why) = self.refused {
            m.refused(why);
        }
        if let Some(kind) = self.relay {
            m.relay(kind);
        }
        if let Some(u) = self.upstream {
            m.upstream_connection(u.reused, u.connect_time.map(|d| d.as_secs_f64()));
        }
        let Some(log) = out.log else {
            return;
        };
        log.write(&Record {
            request_id: self.request_id,
            listener: &out.listener.name,
            mode: out.listener.mode.as_str(),
            client: self.client,
            dst: self.dst,
            upstream_local: self.upstream.and_then(|u| u.local),
            method: line.method,
            host: line.host,
            path: line.path,
            status: self.status,
            req_body_bytes: rx,
            resp_body_bytes: tx,
            duration,
            upstream_connect: self.upstream.and_then(|u| u.connect_time),
            upstream_reused: self.upstream.map(|u| u.reused),
            decision: line.decision,
            egress: self.egress.as_deref(),
            parent_status: self.parent_status,
            refused: self.refused.map(Refusal::as_str),
            error: self.error,
            tls: match kind {
                Kind::Tls(_, t) => Some(t),
                Kind::Tunnel(_, t) => t,
                Kind::Request => None,
            },
            kind: match kind {
                Kind::Request if line.method == "CONNECT" => "connect",
                Kind::Request => "http",
                Kind::Tls(..) => "tls",
                Kind::Tunnel(..) => "tunnel",
            },
            protocol: match kind {
                Kind::Tunnel(p, _) => Some(p.as_str()),
                _ => None,
            },
        });
    }
}
