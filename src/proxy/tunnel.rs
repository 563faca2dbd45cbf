//! Connections on an HTTP listener that are not HTTP/1.x: spliced byte for
//! byte to the original destination (`unsupported_protocol: tunnel`, the
//! default) or reset (`reject`). The flow's decision comes first (loops,
//! and the rule sets: by the SNI when it is TLS, by client, destination
//! and port otherwise), then the filters' request hooks (as for a
//! `CONNECT <destination>` without headers). The connection is one
//! access-log record of kind `tunnel` and counts in `tproxyd_tunnels_total`.

use crate::access_log::TlsLog;
use crate::addr::{flow_name, Peers};
use crate::decision::{Admitted, Flow, Target};
use crate::downstream::sniff::Opening;
use crate::filters::{FilterCtx, FlowInfo, LogSummary, RequestHeader};
use crate::flow::{Answer, FlowKind, Refusal};
use crate::listener::{ListenerKind, UnsupportedProtocol};
use crate::relay::reset_on_close;
use crate::shared::ListenerState;
use crate::summary::{Kind, RequestLine, Summary, UpstreamUse};
use crate::upstream::relay_opened;
use pingora_core::protocols::Stream;
use std::time::{Duration, Instant};

/// A tunnel quiet both ways this long is closed.
const TUNNEL_IDLE: Duration = Duration::from_secs(300);

/// What one tunnel decided and did, for its record.
struct Tunnel {
    summary: Summary,
    filter: Option<FilterCtx>,
    decided_by: Option<std::sync::Arc<str>>,
}

/// Tunnels (or refuses) one connection, then logs and counts it.
pub(super) async fn tunnel(
    state: &ListenerState,
    mut stream: Stream,
    peers: Peers,
    opening: Opening,
) {
    let ListenerKind::Http {
        unsupported_protocol,
        ..
    } = &state.listener.kind
    else {
        return;
    };
    let mut t = Tunnel {
        summary: Summary::new(peers.client),
        filter: None,
        decided_by: None,
    };
    t.summary.dst = peers.dst;
    let allowed = match *unsupported_protocol {
        UnsupportedProtocol::Reject => Err(Answer::refused(Refusal::UnsupportedProtocol, 0, "")),
        UnsupportedProtocol::Tunnel => t.decide(state, &opening).await,
    };
    match allowed {
        Ok((admitted, name)) => {
            t.splice(
                state,
                &mut stream,
                &admitted,
                name.as_deref(),
                &opening.first,
            )
            .await;
        }
        Err(a) => {
            t.summary.answered(&a);
            t.summary.status = 0;
            // There is no HTTP to answer in: a reset.
            reset_on_close(&stream);
        }
    }
    if let Some(f) = &t.filter {
        let log = LogSummary {
            status: 0,
            error: None,
        };
        state.shared.chain.log(f, &log).await;
    }
    t.finish(state, &opening);
}

impl Tunnel {
    /// The flow's decision, then the filters' request hooks, as for
    /// `CONNECT <dst>`.
    async fn decide(
        &mut self,
        state: &ListenerState,
        opening: &Opening,
    ) -> Result<(Admitted, Option<String>), Answer> {
        let name = opening
            .hello
            .as_ref()
            .and_then(|h| h.sni.as_deref())
            .and_then(flow_name);
        let flow = Flow {
            kind: FlowKind::Tunnel,
            client: self.summary.client,
            target: Target::Original(self.summary.dst),
            name: name.as_deref(),
            request: None,
            hello: None,
        };
        let (verdict, by) = state.decide(&flow).await.split();
        self.decided_by = by;
        let admitted = verdict?;
        self.summary.egress = Some(admitted.egress.name.clone());
        let dst = admitted.flow_dst(0);
        let info = FlowInfo::new(
            &state.listener.id,
            self.summary.client,
            dst,
            self.summary.request_id,
        );
        let fctx = state.filter_ctx(info, name.clone(), self.decided_by.as_deref());
        let fctx = self.filter.insert(fctx);
        let fail = || Answer::failed(0, "FilterError", "");
        let head = RequestHeader::build("CONNECT", dst.to_string().as_bytes(), None)
            .map_err(|_| fail())?;
        match state.shared.chain.request(fctx, &head).await {
            Ok(None) => Ok((admitted, name)),
            Ok(Some(a)) => Err(a),
            Err(_) => Err(fail()),
        }
    }

    /// Connects (from the client's address when spoofing), sends the bytes
    /// already read, then relays both ways.
    async fn splice(
        &mut self,
        state: &ListenerState,
        stream: &mut Stream,
        admitted: &Admitted,
        name: Option<&str>,
        first: &[u8],
    ) {
        let started = Instant::now();
        let conf = &state.shared.upstream;
        let port = admitted.dst.map_or(0, |d| d.port());
        let client = self.summary.client;
        let mut upstream = match state.open_upstream(admitted, name, port, client).await {
            Ok(o) => {
                self.summary.egress = Some(o.egress);
                o.stream
            }
            Err(e) => {
                self.summary.error = Some(e.kind());
                self.summary.parent_status = e.parent_status();
                reset_on_close(stream);
                return;
            }
        };
        self.summary.upstream = Some(UpstreamUse::opened(&upstream, started));
        let live = self.summary.relaying();
        match relay_opened(stream, &mut upstream, first, conf, TUNNEL_IDLE, live).await {
            Ok(r) => self.summary.relayed(r, first.len()),
            Err(e) => self.summary.error = Some(e),
        }
    }

    fn finish(&self, state: &ListenerState, opening: &Opening) {
        let hello = opening.hello.as_ref();
        let versions: Vec<String> = hello
            .map(|h| h.versions.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        let tls = hello.map(|h| TlsLog {
            outcome: if self.summary.refused.is_some() {
                "denied"
            } else {
                "tunnelled"
            },
            sni: h.sni.as_deref(),
            alpn: &h.alpn,
            versions: &versions,
            ech: h.ech,
        });
        let decision = self.filter.as_ref().and_then(|f| f.decision());
        let line = RequestLine {
            method: "TUNNEL",
            host: hello.and_then(|h| h.sni.as_deref()),
            path: "-",
            decision: decision.or(self.decided_by.as_deref()),
        };
        let kind = Kind::Tunnel(opening.protocol, tls);
        self.summary.finish(state.outputs(), line, kind);
    }
}
