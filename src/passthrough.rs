//! HTTPS on the transparent gateway without decrypting it: a
//! `mode: tls-passthrough` listener peeks at the TLS ClientHello, decides by
//! SNI, then splices the untouched bytes to the original destination
//! ("peek and splice"). The proxy never holds a key: it only reads the
//! cleartext ClientHello, which it replays to the origin byte for byte.
//!
//! It is a Pingora L4 app ([`ServerApp`]) behind the same transparent
//! listener and fd table as the HTTP listeners, so graceful upgrade keeps it.

use crate::access_log::{Record, TlsLog};
use crate::config::Listener;
use crate::connector::{connect_plain, SpoofConnect};
use crate::destination::{canonical, stream_destination};
use crate::filters::acl::{AclFilter, Action};
use crate::filters::host_check::{CheckMode, HostCheckFilter, Outcome};
use crate::filters::{FilterCtx, FlowInfo, RequestHeader, RequestId};
use crate::metrics::{ListenerMetrics, TlsOutcome};
use crate::proxy::Shared;
use crate::tls::{peek_client_hello, ClientHello, Peeked};
use async_trait::async_trait;
use bytes::BytesMut;
use log::{debug, warn};
use pingora_core::apps::ServerApp;
use pingora_core::connectors::L4Connect;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, Stream};
use pingora_core::server::ShutdownWatch;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Allow or deny, for the two cases without a usable SNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Splice it.
    Allow,
    /// Close it.
    Deny,
}

/// How a denied connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DenyAction {
    /// A TLS fatal `access_denied` alert, then close: the client's error
    /// message says what happened.
    Alert,
    /// A TCP reset.
    Reset,
}

/// A passthrough listener's settings (`listeners[].tls`).
#[derive(Clone)]
pub struct TlsPolicy {
    /// Where the original destination comes from: `tproxy` or `redirect`.
    pub redirect: bool,
    /// A ClientHello must be complete within this (slowloris guard).
    pub client_hello_timeout: Duration,
    /// A spliced connection idle this long in both directions is closed.
    pub idle_timeout: Duration,
    /// ClientHello without SNI.
    pub missing_sni: Policy,
    /// First bytes that are not TLS (plain HTTP to 443, SSLv2 hellos).
    pub non_tls: Policy,
    /// How denials close the connection.
    pub deny_action: DenyAction,
    /// SNI vs destination check (`off` = none).
    pub sni_check: Option<Arc<HostCheckFilter>>,
    /// Allow/deny rules; `host`/`sni` patterns match the SNI.
    pub acl: Option<Arc<AclFilter>>,
}

impl std::fmt::Debug for TlsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPolicy")
            .field("redirect", &self.redirect)
            .field("missing_sni", &self.missing_sni)
            .field("non_tls", &self.non_tls)
            .finish_non_exhaustive()
    }
}

/// The passthrough app of one listener.
pub struct PassthroughApp {
    listener: Listener,
    policy: TlsPolicy,
    shared: Arc<Shared>,
    metrics: ListenerMetrics,
}

impl PassthroughApp {
    /// An app for `listener` (whose `tls` policy is `policy`).
    pub fn new(listener: Listener, policy: TlsPolicy, shared: Arc<Shared>) -> Self {
        let metrics = ListenerMetrics::new(&listener);
        PassthroughApp {
            listener,
            policy,
            shared,
            metrics,
        }
    }

    /// This listener's metrics.
    pub fn metrics(&self) -> &ListenerMetrics {
        &self.metrics
    }
}

/// What happened to one connection, for the log and the metrics.
struct Conn {
    request_id: RequestId,
    client: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    hello: Option<ClientHello>,
    outcome: TlsOutcome,
    decision: Option<String>,
    upstream_local: Option<SocketAddr>,
    connect_time: Option<Duration>,
    up: u64,
    down: u64,
    error: Option<&'static str>,
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
        let start = Instant::now();
        let _open = crate::metrics::ConnectionGuard::new(&self.metrics.in_flight);
        let mut conn = Conn {
            request_id: RequestId::next(),
            client: stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied())
                .map(canonical),
            dst: stream_destination(&stream, self.policy.redirect),
            hello: None,
            outcome: TlsOutcome::BadHello,
            decision: None,
            upstream_local: None,
            connect_time: None,
            up: 0,
            down: 0,
            error: None,
        };
        self.handle(&mut stream, &mut conn).await;
        self.finish(&conn, start.elapsed());
        None
    }
}

impl PassthroughApp {
    async fn handle(&self, stream: &mut Stream, conn: &mut Conn) {
        let Some(dst) = conn.dst else {
            conn.error = Some("NoDestination");
            return;
        };
        if self.shared.loop_guard.is_own_listener(dst) {
            conn.outcome = TlsOutcome::Denied;
            conn.decision = Some("loop".into());
            return;
        }

        // Peek: read until the ClientHello is complete, keeping every byte.
        let mut buf = BytesMut::with_capacity(4096);
        let read_hello = async {
            loop {
                match peek_client_hello(&buf) {
                    Peeked::NeedMore => {}
                    other => return other,
                }
                match stream.read_buf(&mut buf).await {
                    Ok(n) if n > 0 => {}
                    _ => return Peeked::Invalid("connection closed before a complete ClientHello"),
                }
            }
        };
        let peeked = match tokio::time::timeout(self.policy.client_hello_timeout, read_hello).await
        {
            Ok(p) => p,
            Err(_) => {
                conn.outcome = TlsOutcome::BadHello;
                conn.error = Some("ClientHelloTimeout");
                return;
            }
        };

        let allowed = match peeked {
            Peeked::NeedMore => unreachable!("the loop only ends on a verdict"),
            Peeked::Invalid(why) => {
                conn.outcome = TlsOutcome::BadHello;
                conn.decision = Some(format!("invalid:{why}"));
                false
            }
            Peeked::NotTls => {
                conn.outcome = TlsOutcome::NonTls;
                conn.decision = Some(format!("non_tls:{}", policy_str(self.policy.non_tls)));
                self.policy.non_tls == Policy::Allow
            }
            Peeked::Hello(hello) => {
                let ok = self.decide(&hello, dst, conn).await;
                conn.hello = Some(hello);
                conn.outcome = TlsOutcome::Denied;
                ok
            }
        };
        if !allowed {
            self.close_denied(stream, conn.outcome != TlsOutcome::NonTls)
                .await;
            return;
        }

        // Splice: connect, replay what was read, then relay both ways.
        let connect_start = Instant::now();
        let mut upstream = match self.connect(conn.client, dst).await {
            Ok(s) => s,
            Err(e) => {
                conn.outcome = TlsOutcome::ConnectFailed;
                conn.error = Some(e);
                return;
            }
        };
        conn.connect_time = Some(connect_start.elapsed());
        conn.upstream_local = upstream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())
            .map(canonical);
        if conn.outcome != TlsOutcome::NonTls {
            conn.outcome = TlsOutcome::Spliced;
        }
        if upstream.write_all(&buf).await.is_err() || upstream.flush().await.is_err() {
            conn.error = Some("WriteError");
            return;
        }
        conn.up = buf.len() as u64;
        let (up, down, idle) = splice(stream, &mut upstream, self.policy.idle_timeout).await;
        conn.up += up;
        conn.down = down;
        if idle {
            conn.error = Some("IdleTimeout");
        }
    }

    /// The verdict for a parsed ClientHello: SNI presence, ACL, SNI check.
    async fn decide(&self, hello: &ClientHello, dst: SocketAddr, conn: &mut Conn) -> bool {
        let Some(sni) = hello.sni.as_deref() else {
            conn.decision = Some(format!(
                "missing_sni:{}",
                policy_str(self.policy.missing_sni)
            ));
            return self.policy.missing_sni == Policy::Allow;
        };
        if let Some(acl) = &self.policy.acl {
            let ctx = FilterCtx::new(
                FlowInfo {
                    client: conn
                        .client
                        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                    destination: dst,
                    listener: self.listener.name.as_str().into(),
                    mode: self.listener.mode,
                    request_id: conn.request_id,
                },
                Some(sni.to_string()),
            );
            let Ok(req) =
                RequestHeader::build("CONNECT", format!("{sni}:{}", dst.port()).as_bytes(), None)
            else {
                return false;
            };
            let (action, rule) = acl.decide(&ctx, &req);
            let rule = rule.unwrap_or("default");
            if action == Action::Deny {
                conn.decision = Some(format!("acl:deny:{rule}"));
                return false;
            }
            conn.decision = Some(format!("acl:allow:{rule}"));
        }
        if let Some(check) = &self.policy.sni_check {
            if let Outcome::Mismatch(why) = check.name_matches(sni, dst.ip()).await {
                warn!(
                    "TLS {}: SNI {sni} does not match destination {dst}: {why}",
                    conn.request_id
                );
                if check.mode() == CheckMode::Deny {
                    conn.decision = Some("sni_check:deny".into());
                    return false;
                }
                conn.decision = Some("sni_check:mismatch".into());
            }
        }
        true
    }

    async fn close_denied(&self, stream: &mut Stream, tls: bool) {
        match self.policy.deny_action {
            DenyAction::Alert if tls => {
                let _ = stream.write_all(&ACCESS_DENIED).await;
                let _ = stream.flush().await;
                stream.shutdown().await.ok();
            }
            _ => {
                // SAFETY: the fd is the live client stream's; SO_LINGER 0
                // makes the coming close send a reset.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.id()) };
                let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
            }
        }
    }

    async fn connect(
        &self,
        client: Option<SocketAddr>,
        dst: SocketAddr,
    ) -> Result<L4Stream, &'static str> {
        let u = &self.shared.upstream;
        let addr = pingora_core::protocols::l4::socket::SocketAddr::Inet(dst);
        if let (true, Some(c)) = (self.listener.spoof_source, client) {
            let spoof = SpoofConnect {
                source: c.ip(),
                mark: u.mark,
                timeout: u.connect_timeout,
            };
            return spoof.connect(&addr).await.map_err(|e| e.etype().as_str());
        }
        connect_plain(dst, u.mark, u.connect_timeout)
            .await
            .map_err(|e| e.etype().as_str())
    }

    fn finish(&self, conn: &Conn, duration: Duration) {
        self.metrics.tls_connection(conn.outcome);
        self.metrics
            .transfer(conn.up as usize, conn.down as usize, duration.as_secs_f64());
        if let Some(c) = conn.connect_time {
            self.metrics
                .upstream_connection(false, Some(c.as_secs_f64()));
        }
        let Some(log) = &self.shared.access_log else {
            return;
        };
        let hello = conn.hello.as_ref();
        let versions: Vec<String> = hello
            .map(|h| h.versions.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        log.write(&Record {
            request_id: conn.request_id,
            listener: &self.listener.name,
            mode: self.listener.mode.as_str(),
            client: conn.client,
            dst: conn.dst,
            upstream_local: conn.upstream_local,
            method: "TLS",
            host: hello.and_then(|h| h.sni.as_deref()),
            path: "-",
            status: 0,
            req_body_bytes: conn.up as usize,
            resp_body_bytes: conn.down as usize,
            duration,
            upstream_connect: conn.connect_time,
            upstream_reused: None,
            decision: conn.decision.as_deref(),
            refused: (conn.outcome == TlsOutcome::Denied).then_some("tls-policy"),
            error: conn.error,
            tls: Some(TlsLog {
                outcome: conn.outcome.as_str(),
                sni: hello.and_then(|h| h.sni.as_deref()),
                alpn: hello.map(|h| h.alpn.as_slice()).unwrap_or_default(),
                versions: &versions,
            }),
        });
        debug!("TLS {} {:?} done", conn.request_id, conn.outcome);
    }
}

fn policy_str(p: Policy) -> &'static str {
    match p {
        Policy::Allow => "allow",
        Policy::Deny => "deny",
    }
}

/// Relays both directions until both are done (half-close is passed on),
/// or until neither side has sent anything for `idle`. Returns the bytes
/// client→origin, origin→client, and whether the idle timeout ended it.
async fn splice<A, B>(a: &mut A, b: &mut B, idle: Duration) -> (u64, u64, bool)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let epoch = Instant::now();
    let last = AtomicU64::new(0);
    let (mut ta, mut tb) = (
        Touch {
            inner: a,
            epoch,
            last: &last,
        },
        Touch {
            inner: b,
            epoch,
            last: &last,
        },
    );
    let copy = tokio::io::copy_bidirectional(&mut ta, &mut tb);
    tokio::pin!(copy);
    let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            r = &mut copy => return match r { Ok((up, down)) => (up, down, false), Err(_) => (0, 0, false) },
            _ = tokio::time::sleep(tick) => {
                let quiet = epoch.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if quiet >= idle {
                    return (0, 0, true);
                }
            }
        }
    }
}

/// Records the time of the last successful read, for the idle timeout.
struct Touch<'a, S: ?Sized> {
    inner: &'a mut S,
    epoch: Instant,
    last: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Touch<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last
                .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Touch<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
