//! Connections on an HTTP listener that are not HTTP/1.x: spliced byte for
//! byte to the original destination (`unsupported_protocol: tunnel`, the
//! default) or reset (`reject`). Admission (loops) and the filters' request
//! hooks (as for a `CONNECT <destination>` without headers: rules on client,
//! destination and port apply) decide first; the connection is one
//! access-log record of kind `tunnel` and counts in `tproxyd_tunnels_total`.

use crate::access_log::TlsLog;
use crate::admission::Target;
use crate::destination::{stream_client, stream_destination};
use crate::filters::{FilterCtx, FlowInfo, LogSummary, RequestHeader};
use crate::flow::{Answer, Protocol, Refusal};
use crate::listener::{ListenerKind, UnsupportedProtocol};
use crate::relay::{relay, reset_on_close, send_within};
use crate::shared::ListenerState;
use crate::summary::{Kind, RequestLine, Summary, UpstreamUse};
use crate::tls::ClientHello;
use crate::upstream::connector::connect_raw;
use pingora_core::protocols::Stream;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A tunnel quiet both ways this long is closed.
const TUNNEL_IDLE: Duration = Duration::from_secs(300);

/// What the first bytes were, and the bytes themselves.
pub(super) struct Opening {
    /// Their class.
    pub protocol: Protocol,
    /// Read from the client so far; sent to the origin first.
    pub first: Vec<u8>,
    /// For TLS: the ClientHello.
    pub hello: Option<ClientHello>,
}

/// Tunnels (or refuses) one connection, then logs and counts it.
pub(super) async fn tunnel(state: &ListenerState, mut stream: Stream, opening: Opening) {
    let ListenerKind::Http {
        source,
        spoof_source,
        unsupported_protocol,
        ..
    } = &state.listener.kind
    else {
        return;
    };
    let mut summary = Summary::new(stream_client(&stream));
    summary.dst = stream_destination(&stream, *source);
    let mut filter = None;
    let allowed = match *unsupported_protocol {
        UnsupportedProtocol::Reject => Err(Answer::refused(Refusal::UnsupportedProtocol, 0, "")),
        UnsupportedProtocol::Tunnel => admit(state, &summary, &mut filter).await,
    };
    match allowed {
        Ok(dst) => {
            let spoof = spoof_source.then_some(summary.client).flatten();
            splice(state, &mut stream, &mut summary, dst, spoof, &opening.first).await;
        }
        Err(a) => {
            summary.answered(&a);
            summary.status = 0;
            // There is no HTTP to answer in: a reset.
            reset_on_close(&stream);
        }
    }
    if let Some(f) = &filter {
        let log = LogSummary {
            status: 0,
            error: None,
        };
        state.shared.chain.log(f, &log).await;
    }
    finish(state, &summary, &opening, filter.as_ref());
}

/// Admission and the filters' request hooks, as for `CONNECT <dst>`.
async fn admit(
    state: &ListenerState,
    summary: &Summary,
    filter: &mut Option<FilterCtx>,
) -> Result<SocketAddr, Answer> {
    let shared = &state.shared;
    let target = Target::Original(summary.dst);
    let dst = shared
        .admission
        .admit(state.rules(), summary.client, target, None)?;
    let flow = FlowInfo::new(&state.listener.id, summary.client, dst, summary.request_id);
    let fctx = filter.insert(FilterCtx::new(flow, None));
    let fail = || Answer::failed(0, "FilterError", "");
    let head =
        RequestHeader::build("CONNECT", dst.to_string().as_bytes(), None).map_err(|_| fail())?;
    match shared.chain.request(fctx, &head).await {
        Ok(None) => Ok(dst),
        Ok(Some(a)) => Err(a),
        Err(_) => Err(fail()),
    }
}

/// Connects (from the client's address when spoofing), sends the bytes
/// already read, then relays both ways.
async fn splice(
    state: &ListenerState,
    stream: &mut Stream,
    summary: &mut Summary,
    dst: SocketAddr,
    spoof: Option<SocketAddr>,
    first: &[u8],
) {
    let started = Instant::now();
    let conf = &state.shared.upstream;
    let mut upstream = match connect_raw(dst, spoof.map(|c| c.ip()), conf).await {
        Ok(s) => s,
        Err(e) => {
            summary.error = Some(e.etype().as_str());
            return;
        }
    };
    summary.upstream = Some(UpstreamUse::opened(&upstream, started));
    if !first.is_empty() && !send_within(&mut upstream, first, conf.write_timeout).await {
        summary.error = Some("WriteError");
        return;
    }
    let r = relay(stream, &mut upstream, TUNNEL_IDLE, conf.relay).await;
    summary.relayed(r, first.len());
}

fn finish(state: &ListenerState, summary: &Summary, opening: &Opening, filter: Option<&FilterCtx>) {
    let hello = opening.hello.as_ref();
    let versions: Vec<String> = hello
        .map(|h| h.versions.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    let tls = hello.map(|h| TlsLog {
        outcome: if summary.refused.is_some() {
            "denied"
        } else {
            "tunnelled"
        },
        sni: h.sni.as_deref(),
        alpn: &h.alpn,
        versions: &versions,
        ech: h.ech,
    });
    let line = RequestLine {
        method: "TUNNEL",
        host: hello.and_then(|h| h.sni.as_deref()),
        path: "-",
        decision: filter.and_then(|f| f.decision()),
    };
    summary.finish(state.outputs(), line, Kind::Tunnel(opening.protocol, tls));
}
