//! Opening a connection through an egress: directly (from the client's
//! address when spoofing, from the egress's interface, with its mark), or
//! to a parent and through its handshake (HTTP CONNECT or SOCKS5), with
//! the name the client asked for when there is one. Used by the opaque
//! flows ([`open`]) and, as Pingora connectors, by plain HTTP
//! ([`ParentL4`], [`SocksL4`]).

use super::metrics::Outcome;
pub use super::parent::basic;
use super::{parent, socks, Credentials, Egress, Fallback, ParentAddr, Via};
use crate::addr::OrigDstAddr;
use crate::flow::Answer;
use crate::upstream::connector::{connect_tcp, into_stream, SocketSetup};
use crate::upstream::Upstream;
use async_trait::async_trait;
use pingora_core::connectors::L4Connect;
use pingora_core::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora_core::protocols::l4::stream::Stream;
use pingora_error::{Error, ErrorType};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;

/// Where a flow goes, as an egress needs it: the name the client asked
/// for, and the address when it is known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Remote {
    /// Host, SNI or CONNECT host, when there is one.
    pub name: Option<String>,
    /// The original or resolved destination, when known.
    pub addr: Option<OrigDstAddr>,
    /// The destination port.
    pub port: u16,
}

impl Remote {
    /// `name:port`, or the address when there is no name: what a parent
    /// is asked to connect to.
    pub fn authority(&self) -> String {
        match (&self.name, self.addr) {
            (Some(n), _) if n.contains(':') => format!("[{n}]:{}", self.port),
            (Some(n), _) => format!("{n}:{}", self.port),
            (None, Some(a)) => a.to_string(),
            (None, None) => format!("-:{}", self.port),
        }
    }
}

/// Why a flow could not leave through its egress.
#[derive(Debug)]
pub enum EgressError {
    /// The destination, or the parent, could not be reached.
    Unreachable(Box<Error>),
    /// The parent refused the flow, with its status when it gave one.
    Refused {
        /// The egress.
        egress: Arc<str>,
        /// The parent's status.
        status: Option<u16>,
        /// What it said.
        why: String,
    },
}

impl EgressError {
    /// The error kind for the access log.
    pub fn kind(&self) -> &'static str {
        match self {
            EgressError::Unreachable(e) => e.etype().as_str(),
            EgressError::Refused { .. } => "ParentRefused",
        }
    }

    /// The parent's status, when it refused with one.
    pub fn parent_status(&self) -> Option<u16> {
        match self {
            EgressError::Refused { status, .. } => *status,
            EgressError::Unreachable(_) => None,
        }
    }

    /// The 502 or 504 for it, naming what failed (never a credential).
    pub fn answer(&self, target: &Remote) -> Answer {
        let what = target.authority();
        match self {
            EgressError::Unreachable(e) if e.etype() == &ErrorType::ConnectTimedout => {
                Answer::failed(
                    504,
                    "ConnectTimedout",
                    format!(
                        "504 Gateway Timeout: {what}: {}: connect timed out\n",
                        e.context_text()
                    ),
                )
            }
            EgressError::Unreachable(e) => Answer::failed(
                502,
                e.etype().as_str(),
                format!("502 Bad Gateway: {what}: {}\n", e.context_text()),
            ),
            EgressError::Refused { egress, why, .. } => Answer::failed(
                502,
                "ParentRefused",
                format!("502 Bad Gateway: {what}: parent proxy {egress} refused: {why}\n"),
            ),
        }
    }
}

trait ContextText {
    fn context_text(&self) -> String;
}

impl ContextText for Error {
    fn context_text(&self) -> String {
        let cause = self.root_cause().to_string();
        match &self.context {
            Some(c) => format!("{}: {cause}", c.as_str()),
            None => cause,
        }
    }
}

/// A connection opened through an egress.
pub struct Opened {
    /// To the destination (through the parent's tunnel when there is one).
    pub stream: Stream,
    /// The egress it really left through (`direct` after a fallback).
    pub egress: Arc<str>,
}

/// The parent's address: a literal, or its name looked up now.
async fn parent_addr(p: &ParentAddr, conf: &Upstream) -> Result<SocketAddr, Box<Error>> {
    if let Ok(ip) = p.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, p.port));
    }
    let lookup = tokio::net::lookup_host((p.host.as_str(), p.port));
    match tokio::time::timeout(conf.resolve_timeout, lookup).await {
        Ok(Ok(mut it)) => it.next().ok_or_else(|| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                format!("parent {p} has no address"),
            )
        }),
        Ok(Err(e)) => Err(Error::because(
            ErrorType::ConnectNoRoute,
            format!("resolving parent {p}"),
            e,
        )),
        Err(_) => Err(Error::explain(
            ErrorType::ConnectTimedout,
            format!("resolving parent {p}"),
        )),
    }
}

/// A TCP connection to the parent `p` of `egress`, with the upstream mark.
async fn to_parent(
    egress: &Egress,
    p: &ParentAddr,
    conf: &Upstream,
) -> Result<TcpStream, Box<Error>> {
    let addr = parent_addr(p, conf).await?;
    let setup = SocketSetup {
        mark: conf.mark,
        ..SocketSetup::default()
    };
    connect_tcp(addr, &setup, conf.connect_timeout)
        .await
        .map_err(|mut e| {
            e.context = Some(format!("parent proxy {} ({addr})", egress.name).into());
            e
        })
}

/// The socket setup of a direct connection through `egress`.
pub fn direct_setup(egress: &Egress, spoof: Option<IpAddr>, conf: &Upstream) -> SocketSetup {
    let (interface, mark) = match &egress.via {
        Via::Direct { interface, mark } => {
            (interface.as_deref().map(Arc::from), mark.or(conf.mark))
        }
        _ => (None, conf.mark),
    };
    SocketSetup {
        source: spoof,
        mark,
        interface,
    }
}

async fn direct(
    target: &Remote,
    setup: &SocketSetup,
    conf: &Upstream,
) -> Result<TcpStream, EgressError> {
    let Some(addr) = target.addr else {
        let e = Error::explain(ErrorType::ConnectNoRoute, "no address to connect to");
        return Err(EgressError::Unreachable(e));
    };
    connect_tcp(addr.socket_addr(), setup, conf.connect_timeout)
        .await
        .map_err(EgressError::Unreachable)
}

/// The parent's refusal or failure as an [`EgressError`].
fn refused(egress: &Egress, e: parent::ParentError) -> EgressError {
    let (status, why) = match e {
        parent::ParentError::Refused(code, reason) => (Some(code), format!("{code} {reason}")),
        parent::ParentError::Broken(why) => (None, why),
    };
    EgressError::Refused {
        egress: egress.name.clone(),
        status,
        why,
    }
}

/// `work` (reaching a parent and its handshake) within the connect
/// timeout, all of it.
async fn within<T>(
    egress: &Egress,
    conf: &Upstream,
    work: impl std::future::Future<Output = Result<T, EgressError>>,
) -> Result<T, EgressError> {
    match tokio::time::timeout(conf.connect_timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(EgressError::Unreachable(Error::explain(
            ErrorType::ConnectTimedout,
            format!("parent proxy {} did not answer in time", egress.name),
        ))),
    }
}

async fn via_http(
    egress: &Egress,
    p: &ParentAddr,
    c: Option<&Credentials>,
    target: &Remote,
    conf: &Upstream,
) -> Result<TcpStream, EgressError> {
    within(egress, conf, async {
        let mut tcp = to_parent(egress, p, conf)
            .await
            .map_err(EgressError::Unreachable)?;
        parent::connect(&mut tcp, &target.authority(), c)
            .await
            .map_err(|e| refused(egress, e))?;
        Ok(tcp)
    })
    .await
}

async fn via_socks(
    egress: &Egress,
    p: &ParentAddr,
    c: Option<&Credentials>,
    target: &Remote,
    conf: &Upstream,
) -> Result<TcpStream, EgressError> {
    within(egress, conf, async {
        let tcp = to_parent(egress, p, conf)
            .await
            .map_err(EgressError::Unreachable)?;
        let ip = target.addr.map(|a| a.ip());
        socks::connect(tcp, target.name.as_deref(), ip, target.port, c)
            .await
            .map_err(|why| refused(egress, parent::ParentError::Broken(why)))
    })
    .await
}

/// Opens a connection to `target` through `egress` (from `spoof`, the
/// client's address, when it leaves directly: a parent cannot spoof),
/// counted in the egress's metrics; with `fallback: direct`, a parent
/// that cannot be reached is gone around (when the flow has an address).
pub async fn open(
    egress: &Arc<Egress>,
    target: &Remote,
    spoof: Option<IpAddr>,
    conf: &Upstream,
) -> Result<Opened, EgressError> {
    let started = Instant::now();
    let result = match &egress.via {
        Via::Direct { .. } => direct(target, &direct_setup(egress, spoof, conf), conf).await,
        Via::Http(p, c) => via_http(egress, p, c.as_ref(), target, conf).await,
        Via::Socks5(p, c) => via_socks(egress, p, c.as_ref(), target, conf).await,
    };
    let m = &egress.metrics;
    let (tcp, used) = match result {
        Ok(tcp) => {
            m.connected(started.elapsed());
            m.outcome(Outcome::Ok);
            (tcp, egress.name.clone())
        }
        Err(EgressError::Unreachable(e)) if egress.fallback == Fallback::Direct => {
            log::warn!("egress {}: {e}; falling back to direct", egress.name);
            m.outcome(Outcome::Fallback);
            let builtin = Egress::builtin();
            let setup = direct_setup(&builtin, spoof, conf);
            let tcp = direct(target, &setup, conf).await?;
            builtin.metrics.outcome(Outcome::Ok);
            (tcp, builtin.name.clone())
        }
        Err(e) => {
            m.outcome(match e {
                EgressError::Refused { .. } => Outcome::Refused,
                EgressError::Unreachable(_) => Outcome::Unreachable,
            });
            return Err(e);
        }
    };
    Ok(Opened {
        stream: into_stream(tcp),
        egress: used,
    })
}

/// Pingora's connector for plain HTTP through a parent HTTP proxy: a TCP
/// connection to the parent (the requests go in absolute form).
#[derive(Debug)]
pub struct ParentL4 {
    /// The egress (an HTTP parent).
    pub egress: Arc<Egress>,
    /// Timeouts and mark.
    pub conf: Upstream,
}

#[async_trait]
impl L4Connect for ParentL4 {
    async fn connect(&self, _addr: &PSocketAddr) -> pingora_error::Result<Stream> {
        let Via::Http(p, _) = &self.egress.via else {
            return Error::e_explain(ErrorType::ConnectError, "not an HTTP parent");
        };
        Ok(into_stream(to_parent(&self.egress, p, &self.conf).await?))
    }
}

/// Pingora's connector for plain HTTP through a SOCKS5 proxy: the
/// connection to the destination through it.
#[derive(Debug)]
pub struct SocksL4 {
    /// The egress (a SOCKS5 proxy).
    pub egress: Arc<Egress>,
    /// The destination.
    pub target: Remote,
    /// Timeouts and mark.
    pub conf: Upstream,
}

#[async_trait]
impl L4Connect for SocksL4 {
    async fn connect(&self, _addr: &PSocketAddr) -> pingora_error::Result<Stream> {
        let Via::Socks5(p, c) = &self.egress.via else {
            return Error::e_explain(ErrorType::ConnectError, "not a SOCKS5 proxy");
        };
        match via_socks(&self.egress, p, c.as_ref(), &self.target, &self.conf).await {
            Ok(tcp) => Ok(into_stream(tcp)),
            Err(EgressError::Unreachable(e)) => Err(e),
            Err(EgressError::Refused { why, .. }) => Error::e_explain(
                ErrorType::ConnectProxyFailure,
                format!(
                    "SOCKS5 proxy {} refused {}: {why}",
                    self.egress.name,
                    self.target.authority()
                ),
            ),
        }
    }
}
