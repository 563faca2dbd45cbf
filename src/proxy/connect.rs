//! `CONNECT host:port` on a forward listener: the flow's decision, the
//! filters' request hooks, then connect, answer `200 Connection
//! Established`, and relay bytes. The head was read (bounded in size and
//! time) by the connection loop.

use crate::addr::{flow_name, split_host_port, Peers};
use crate::decision::{Admitted, Flow, Target};
use crate::downstream::reply;
use crate::egress::open::Remote;
use crate::filters::{FilterCtx, FlowInfo, LogSummary, RequestHeader};
use crate::flow::{Answer, FlowKind};
use crate::metrics::ConnectionGuard;
use crate::relay::send_within;
use crate::shared::ListenerState;
use crate::summary::{Kind, RequestLine, Summary, UpstreamUse};
use crate::upstream::relay_opened;
use bytes::BytesMut;
use log::debug;
use pingora_core::protocols::Stream;
use std::time::{Duration, Instant};

/// A tunnel quiet both ways this long is closed.
const TUNNEL_IDLE: Duration = Duration::from_secs(3600);

/// Serves one CONNECT (whose head, and maybe the client's first tunnel
/// bytes, are in `head`) to its end, then logs and counts it.
pub(super) async fn tunnel(
    state: &ListenerState,
    mut stream: Stream,
    peers: Peers,
    head: BytesMut,
) {
    let _in_flight = ConnectionGuard::new(&state.metrics.in_flight);
    let mut t = Tunnel {
        summary: Summary::new(peers.client),
        authority: String::new(),
        name: None,
        port: 0,
        filter: None,
        decided_by: None,
    };
    if let Err(a) = t.run(state, &mut stream, &head).await {
        t.summary.answered(&a);
        if a.status > 0 {
            reply::send(&mut stream, &reply::render(&a)).await;
        }
    }
    let decision = t.filter.as_ref().and_then(|f| f.decision());
    let line = RequestLine {
        method: "CONNECT",
        host: Some(&t.authority),
        path: &t.authority,
        decision: decision.or(t.decided_by.as_deref()),
    };
    if let Some(f) = &t.filter {
        let summary = LogSummary {
            status: t.summary.status,
            error: None,
        };
        state.shared.chain.log(f, &summary).await;
    }
    t.summary.finish(state.outputs(), line, Kind::Request);
}

/// One CONNECT request while it runs.
struct Tunnel {
    summary: Summary,
    authority: String,
    /// The authority's host as a name (lower case) and its port.
    name: Option<String>,
    port: u16,
    filter: Option<FilterCtx>,
    decided_by: Option<std::sync::Arc<str>>,
}

fn bad(why: &str) -> Answer {
    Answer::failed(400, "BadRequest", format!("400 Bad Request: {why}\n"))
}

impl Tunnel {
    /// Everything up to the end of the relay; an early end is the answer
    /// to send (status 0: just close).
    async fn run(
        &mut self,
        state: &ListenerState,
        stream: &mut Stream,
        head: &[u8],
    ) -> Result<(), Answer> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(head) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return Err(bad("malformed CONNECT request")),
        };
        self.authority = req.path.unwrap_or_default().to_string();
        let header = connect_header(&self.authority, req.headers)
            .ok_or_else(|| bad("bad CONNECT target"))?;
        let admitted = self.decide(state, &header).await?;
        // Boxed: the relay future is large, and inline it would be carried
        // by every connection of the forward listener, idle ones included.
        Box::pin(self.relay(state, stream, &admitted, &head[head_len..])).await
    }

    /// The flow's decision, then the filters' request hooks (they see
    /// CONNECT like any request, with the authority as Host).
    async fn decide(
        &mut self,
        state: &ListenerState,
        header: &RequestHeader,
    ) -> Result<Admitted, Answer> {
        let named = split_host_port(&self.authority)
            .and_then(|(host, port)| Some((host, port?, flow_name(host)?)));
        let (target, name, port) = match named {
            Some((host, port, name)) => (Target::Named { host, port }, Some(name), port),
            None => (Target::Unnamed, None, 0),
        };
        let flow = Flow {
            kind: FlowKind::Connect,
            client: self.summary.client,
            target,
            name: name.as_deref(),
            request: Some(header),
            hello: None,
        };
        let (verdict, by) = state.decide(&flow).await.split();
        self.decided_by = by;
        let admitted = verdict?;
        self.summary.dst = admitted.dst;
        self.summary.egress = Some(admitted.egress.name.clone());
        self.name = name;
        self.port = port;
        let info = FlowInfo::new(
            &state.listener.id,
            self.summary.client,
            admitted.flow_dst(port),
            self.summary.request_id,
        );
        let by = self.decided_by.as_deref();
        let fctx = self
            .filter
            .insert(state.filter_ctx(info, Some(self.authority.clone()), by));
        match state.shared.chain.request(fctx, header).await {
            Ok(None) => Ok(admitted),
            Ok(Some(a)) => Err(a),
            Err(e) => {
                debug!("CONNECT {}: {e}", self.authority);
                Err(Answer::failed(
                    500,
                    "FilterError",
                    "500 Internal Server Error\n",
                ))
            }
        }
    }

    /// Connects, answers 200, sends `early` (bytes the client sent right
    /// after its head) first, then relays both ways.
    async fn relay(
        &mut self,
        state: &ListenerState,
        stream: &mut Stream,
        admitted: &Admitted,
        early: &[u8],
    ) -> Result<(), Answer> {
        let connect_start = Instant::now();
        let conf = &state.shared.upstream;
        let name = self.name.as_deref();
        let opened = state.open_upstream(admitted, name, self.port, None).await;
        let mut upstream = match opened {
            Ok(o) => {
                self.summary.egress = Some(o.egress);
                o.stream
            }
            Err(e) => {
                self.summary.parent_status = e.parent_status();
                let target = Remote {
                    name: self.name.clone(),
                    addr: admitted.dst,
                    port: self.port,
                };
                return Err(e.answer(&target));
            }
        };
        self.summary.upstream = Some(UpstreamUse::opened(&upstream, connect_start));
        self.summary.status = 200;
        // Pingora's stream buffers writes: flush, or the client waits forever.
        let established = b"HTTP/1.1 200 Connection Established\r\n\r\n";
        if !send_within(stream, established, state.shared.downstream.send_timeout).await {
            return Ok(());
        }
        let live = self.summary.relaying();
        match relay_opened(stream, &mut upstream, early, conf, TUNNEL_IDLE, live).await {
            Ok(r) => self.summary.relayed(r, early.len()),
            Err(e) => self.summary.error = Some(e),
        }
        Ok(())
    }
}

/// The CONNECT head as a Pingora request header, for the decision and the
/// filters.
fn connect_header(authority: &str, headers: &[httparse::Header<'_>]) -> Option<RequestHeader> {
    let mut header =
        RequestHeader::build("CONNECT", authority.as_bytes(), Some(headers.len())).ok()?;
    for h in headers {
        let _ = header.append_header(h.name.to_string(), h.value);
    }
    Some(header)
}
