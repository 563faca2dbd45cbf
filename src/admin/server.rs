//! The admin HTTP app: routes, the token check, and the responses.

use super::api::{self, Identity};
use super::{Admin, Readiness, Token};
use crate::live::Live;
use crate::sets::Catalog;
use async_trait::async_trait;
use base64::Engine;
use http::{header, HeaderValue, Method, Response};
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::protocols::http::ServerSession;
use pingora_prometheus::PrometheusHttpApp;
use serde::Serialize;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The status page: one file, no external resource.
const PAGE: &str = include_str!("page.html");

/// What the page may do: its own inline script and style, and fetch from
/// this listener; nothing else, and no framing.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The admin HTTP app.
pub struct AdminApp {
    readiness: Readiness,
    live: Arc<Live>,
    sets: Arc<Catalog>,
    token: Option<Token>,
    identity: Identity,
}

impl AdminApp {
    /// The app of `admin`, showing `live` and `sets`, reporting
    /// `readiness`, and telling it is `identity`.
    pub fn new(
        admin: &Admin,
        readiness: Readiness,
        live: Arc<Live>,
        sets: Arc<Catalog>,
        identity: Identity,
    ) -> Self {
        AdminApp {
            readiness,
            live,
            sets,
            token: admin.token.clone(),
            identity,
        }
    }
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(body)
        .expect("static response parts are valid")
}

fn text(status: u16, body: String) -> Response<Vec<u8>> {
    respond(status, "text/plain; charset=utf-8", body.into_bytes())
}

fn json(value: &impl Serialize) -> Response<Vec<u8>> {
    match serde_json::to_vec(value) {
        Ok(body) => respond(200, "application/json", body),
        Err(e) => text(500, format!("cannot encode the answer: {e}\n")),
    }
}

fn page() -> Response<Vec<u8>> {
    let mut r = respond(200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec());
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    r
}

/// Whether `value` (an `Authorization` header) carries `token`: as a
/// Bearer token, or as the password of Basic credentials (any user name),
/// which is what a browser sends once asked.
pub(super) fn authorized(token: &Token, value: Option<&HeaderValue>) -> bool {
    let Some((scheme, credentials)) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
    else {
        return false;
    };
    let credentials = credentials.trim();
    let given = if scheme.eq_ignore_ascii_case("bearer") {
        credentials.as_bytes().to_vec()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
            return false;
        };
        match decoded.iter().position(|b| *b == b':') {
            Some(i) => decoded[i + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    bool::from(given.ct_eq(token.0.as_bytes()))
}

fn unauthorized() -> Response<Vec<u8>> {
    let mut r = text(
        401,
        "401 Unauthorized: this admin listener wants its token\n".into(),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tproxyd\", Basic realm=\"tproxyd\""),
    );
    r
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != Method::GET && req.method != Method::HEAD {
            let mut r = text(
                405,
                "405 Method Not Allowed: this listener only reads\n".into(),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let path = req.uri.path().to_string();
        match path.as_str() {
            "/healthz" | "/livez" => return text(200, "ok\n".into()),
            "/readyz" => {
                return match self.readiness.check() {
                    Ok(()) => text(200, "ready\n".into()),
                    Err(why) => text(503, format!("not ready: {why}\n")),
                }
            }
            _ => {}
        }
        if let Some(token) = &self.token {
            if !authorized(token, req.headers.get(header::AUTHORIZATION)) {
                return unauthorized();
            }
        }
        match path.as_str() {
            "/metrics" => PrometheusHttpApp.response(session).await,
            "/" | "/index.html" => page(),
            "/api/flows" => match api::parse_query(req.uri.query()) {
                Ok(q) => json(&api::flows(&self.live, &q)),
                Err(why) => text(400, format!("400 Bad Request: {why}\n")),
            },
            "/api/summary" => json(&api::summary(&self.live, &self.sets, &self.identity)),
            _ => text(
                404,
                "not found: try /, /api/flows, /api/summary, /metrics, /healthz, /readyz\n".into(),
            ),
        }
    }
}

/// The admin app as a Pingora HTTP server (to be put in a listening
/// service).
pub fn admin_server(app: AdminApp) -> HttpServer<AdminApp> {
    HttpServer::new_app(app)
}
