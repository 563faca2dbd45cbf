//! `CONNECT host:port` on a forward listener: read the request head
//! (bounded in size and time), admit it, run the filters' request hooks,
//! connect, answer `200 Connection Established`, then relay bytes.

use crate::addr::split_host_port;
use crate::admission::forward::ForwardPolicy;
use crate::admission::Target;
use crate::destination::stream_client;
use crate::filters::{FilterCtx, FlowInfo, LogSummary, RequestHeader};
use crate::flow::{Answer, DownstreamLimit, Refusal};
use crate::listener::ListenerKind;
use crate::metrics::ConnectionGuard;
use crate::relay::{relay, send_within};
use crate::shared::ListenerState;
use crate::summary::{Kind, RequestLine, Summary, UpstreamUse};
use crate::upstream::connector::connect_raw;
use bytes::BytesMut;
use log::debug;
use pingora_core::protocols::Stream;
use pingora_error::ErrorType;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tunnel quiet both ways this long is closed.
const TUNNEL_IDLE: Duration = Duration::from_secs(3600);

/// Serves one CONNECT connection to its end, then logs and counts it.
pub(super) async fn tunnel(state: &ListenerState, mut stream: Stream) {
    let _in_flight = ConnectionGuard::new(&state.metrics.in_flight);
    let mut t = Tunnel {
        summary: Summary::new(stream_client(&stream)),
        authority: String::new(),
        filter: None,
    };
    if let Err(a) = t.run(state, &mut stream).await {
        t.summary.answered(&a);
        if a.status > 0 {
            respond(&mut stream, &a).await;
        }
    }
    let line = RequestLine {
        method: "CONNECT",
        host: Some(&t.authority),
        path: &t.authority,
        decision: t.filter.as_ref().and_then(|f| f.decision()),
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
    filter: Option<FilterCtx>,
}

impl Tunnel {
    /// Everything up to the end of the relay; an early end is the answer
    /// to send (status 0: just close).
    async fn run(&mut self, state: &ListenerState, stream: &mut Stream) -> Result<(), Answer> {
        let limits = state.shared.downstream;
        let head = match read_head(stream, limits.max_header_bytes, limits.header_timeout).await {
            Ok(head) => head,
            Err(Some(limit)) => {
                state.metrics.limit(limit);
                return Err(limit_answer(limit));
            }
            Err(None) => return Err(Answer::failed(0, "BadRequest", "")),
        };
        let (dst, head_len) = self.admit(state, &head).await?;
        // Boxed: the relay future is large, and inline it would be carried
        // by every connection of the forward listener, idle ones included.
        Box::pin(self.relay(state, stream, dst, &head[head_len..])).await
    }

    /// Parses the head, applies the forward policy and admission, runs the
    /// filters' request hooks. Returns the destination and the head's
    /// length (bytes after it are the client's first tunnel bytes).
    async fn admit(
        &mut self,
        state: &ListenerState,
        head: &[u8],
    ) -> Result<(SocketAddr, usize), Answer> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let bad =
            |why: &str| Answer::failed(400, "BadRequest", format!("400 Bad Request: {why}\n"));
        let head_len = match req.parse(head) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return Err(bad("malformed CONNECT request")),
        };
        self.authority = req.path.unwrap_or_default().to_string();
        let ListenerKind::Forward(policy) = &state.listener.kind else {
            return Err(Answer::failed(
                500,
                "InternalError",
                "500 Internal Server Error\n",
            ));
        };
        let client = self.summary.client;
        if !policy.client_allowed(client) {
            return Err(ForwardPolicy::client_refused(client));
        }
        let Some((host, Some(port))) = split_host_port(&self.authority) else {
            return Err(bad("CONNECT needs host:port"));
        };
        policy.check_connect_port(port)?;
        let header = connect_header(&self.authority, req.headers)
            .ok_or_else(|| bad("bad CONNECT target"))?;
        let addrs = policy.resolve(host, port).await?;
        self.summary.dst = addrs.first().copied();
        let rules = state.rules();
        let target = Target::Resolved(&addrs);
        let dst = state
            .shared
            .admission
            .admit(rules, client, target, Some(&header))?;
        self.summary.dst = Some(dst);

        // The filters see CONNECT like any request, with the same context.
        let flow = FlowInfo::new(&state.listener.id, client, dst, self.summary.request_id);
        let fctx = self
            .filter
            .insert(FilterCtx::new(flow, Some(self.authority.clone())));
        match state.shared.chain.request(fctx, &header).await {
            Ok(None) => Ok((dst, head_len)),
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
        dst: SocketAddr,
        early: &[u8],
    ) -> Result<(), Answer> {
        let connect_start = Instant::now();
        let mut upstream = connect_raw(dst, None, &state.shared.upstream)
            .await
            .map_err(|e| connect_failed(dst, &e))?;
        self.summary.upstream = Some(UpstreamUse::opened(&upstream, connect_start));
        self.summary.status = 200;
        // Pingora's stream buffers writes: flush, or the client waits forever.
        let established = b"HTTP/1.1 200 Connection Established\r\n\r\n";
        let limits = &state.shared;
        if !send_within(stream, established, limits.downstream.send_timeout).await {
            return Ok(());
        }
        if !early.is_empty()
            && !send_within(&mut upstream, early, limits.upstream.write_timeout).await
        {
            return Ok(());
        }
        let r = relay(stream, &mut upstream, TUNNEL_IDLE, limits.upstream.relay).await;
        self.summary.relayed(r, early.len());
        Ok(())
    }
}

/// The 502/504 for a failed connect.
fn connect_failed(dst: SocketAddr, e: &pingora_error::Error) -> Answer {
    if e.etype() == &ErrorType::ConnectTimedout {
        return Answer::failed(
            504,
            "ConnectTimedout",
            format!("504 Gateway Timeout: {dst}: connect timed out\n"),
        );
    }
    let why = e.root_cause().to_string();
    Answer::failed(
        502,
        e.etype().as_str(),
        format!("502 Bad Gateway: {dst}: {why}\n"),
    )
}

/// The CONNECT head as a Pingora request header, for admission and filters.
fn connect_header(authority: &str, headers: &[httparse::Header<'_>]) -> Option<RequestHeader> {
    let mut header =
        RequestHeader::build("CONNECT", authority.as_bytes(), Some(headers.len())).ok()?;
    for h in headers {
        let _ = header.append_header(h.name.to_string(), h.value);
    }
    Some(header)
}

/// The 408 or 431 for a CONNECT head over a limit.
fn limit_answer(limit: DownstreamLimit) -> Answer {
    match limit {
        DownstreamLimit::HeaderTooLarge => Answer::refused(
            Refusal::HeaderTooLarge,
            431,
            "431 Request Header Fields Too Large: the request head is too big\n",
        ),
        _ => Answer::refused(
            Refusal::HeaderTimeout,
            408,
            "408 Request Timeout: the request head took too long\n",
        ),
    }
}

/// Reads a CONNECT head, at most `max` bytes within `deadline`; `Err`
/// with the limit that was hit, or `None` when the client went away.
async fn read_head(
    stream: &mut Stream,
    max: usize,
    deadline: Duration,
) -> Result<BytesMut, Option<DownstreamLimit>> {
    let mut buf = BytesMut::with_capacity(1024);
    let read = async {
        let mut scanned: usize = 0;
        loop {
            let from = scanned.saturating_sub(3);
            if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(());
            }
            scanned = buf.len();
            if buf.len() > max {
                return Err(Some(DownstreamLimit::HeaderTooLarge));
            }
            // Never buffer more than the cap (plus one byte to tell).
            let room = max + 1 - buf.len();
            let n = (&mut *stream).take(room as u64).read_buf(&mut buf).await;
            if !matches!(n, Ok(n) if n > 0) {
                return Err(None);
            }
        }
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(Ok(())) => Ok(buf),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Some(DownstreamLimit::HeaderTimeout)),
    }
}

fn reason(code: u16) -> &'static str {
    http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

async fn respond(stream: &mut Stream, a: &Answer) {
    let mut extra = String::new();
    for (name, value) in &a.headers {
        if let Ok(v) = value.to_str() {
            extra.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let resp = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{}",
        a.status,
        reason(a.status),
        a.body.len(),
        a.body
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.flush().await;
}
