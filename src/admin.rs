//! The admin listener (default `127.0.0.1:9187`): Prometheus metrics and
//! health, served by Pingora's HTTP app machinery and its Prometheus app.
//!
//! - `GET /metrics` — Prometheus text format ([`crate::metrics`])
//! - `GET /healthz` — liveness: 200 while the process serves HTTP at all
//! - `GET /readyz` — readiness: 200 once every transparent listener is
//!   bound, 503 before that and while draining (upgrade / shutdown)

use crate::error::{invalid, ConfigError};
use crate::lifecycle::Draining;
use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::protocols::http::ServerSession;
use pingora_prometheus::PrometheusHttpApp;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// `tproxyd.admin` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    enabled: bool,
    address: String,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            enabled: true,
            address: "127.0.0.1:9187".into(),
        }
    }
}

/// The validated admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Its address, as written (`IP:port`).
    pub address: String,
}

impl AdminSettings {
    /// The admin listener, `None` when disabled. Its port must differ
    /// from every proxy listener's (`listening`).
    pub fn validate(
        self,
        listening: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Option<Admin>, ConfigError> {
        const KEY: &str = "tproxyd.admin.address";
        if !self.enabled {
            return Ok(None);
        }
        let a: SocketAddr = self
            .address
            .parse()
            .map_err(|_| invalid(KEY, format!("{:?} is not an IP:port address", self.address)))?;
        if listening.into_iter().any(|l| l.port() == a.port()) {
            return Err(invalid(KEY, "shares its port with a transparent listener"));
        }
        Ok(Some(Admin {
            address: self.address,
        }))
    }
}

/// How many transparent listeners are bound, out of how many configured.
#[derive(Debug, Clone)]
pub struct Readiness {
    expected: usize,
    bound: Arc<AtomicUsize>,
    draining: Draining,
}

impl Readiness {
    /// Ready once `expected` listeners reported bound, unless draining.
    pub fn new(expected: usize, draining: Draining) -> Self {
        Readiness {
            expected,
            bound: Arc::new(AtomicUsize::new(0)),
            draining,
        }
    }

    /// Called by each listener once its socket is in place.
    pub fn listener_bound(&self) {
        self.bound.fetch_add(1, Ordering::SeqCst);
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), String> {
        let bound = self.bound.load(Ordering::SeqCst);
        if self.draining.is_draining() {
            Err("draining: this process is being replaced or stopped".into())
        } else if bound < self.expected {
            Err(format!("{bound} of {} listeners bound", self.expected))
        } else {
            Ok(())
        }
    }
}

/// The admin HTTP app.
pub struct AdminApp {
    readiness: Readiness,
}

fn text(status: u16, body: String) -> Response<Vec<u8>> {
    let body = body.into_bytes();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static response parts are valid")
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => PrometheusHttpApp.response(session).await,
            "/healthz" | "/livez" => text(200, "ok\n".into()),
            "/readyz" => match self.readiness.check() {
                Ok(()) => text(200, "ready\n".into()),
                Err(why) => text(503, format!("not ready: {why}\n")),
            },
            _ => text(404, "not found: try /metrics, /healthz, /readyz\n".into()),
        }
    }
}

/// The admin app as a Pingora HTTP server (to be put in a listening
/// service).
pub fn admin_server(readiness: Readiness) -> HttpServer<AdminApp> {
    HttpServer::new_app(AdminApp { readiness })
}
