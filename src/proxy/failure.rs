//! How upstream and protocol failures are answered: 504 for timeouts
//! toward the origin, 502 for other origin failures, 400 for malformed
//! requests, each with a one-line body naming the destination.

use crate::flow::Answer;
use crate::metrics::{ConnectFailure, ListenerMetrics, TimeoutPhase};
use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::net::SocketAddr;

/// Sends an answer tproxyd makes itself: plain text, not cached, the
/// connection closed after it, its extra headers (e.g. `Retry-After`), and
/// no `Server` header (the gateway does not announce itself).
pub async fn respond(session: &mut Session, a: &Answer) -> Result<()> {
    let mut resp = ResponseHeader::build(a.status, Some(3 + a.headers.len()))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CACHE_CONTROL, "private, no-store")?;
    resp.set_content_length(a.body.len())?;
    for (name, value) in &a.headers {
        resp.append_header(name.clone(), value.clone())?;
    }
    session
        .as_downstream_mut()
        .write_error_response(resp, Bytes::from(a.body.clone()))
        .await
}

/// What a failed upstream connect counts as.
pub fn connect_failure(e: &Error) -> ConnectFailure {
    match e.etype() {
        ErrorType::ConnectRefused => ConnectFailure::Refused,
        ErrorType::ConnectNoRoute => ConnectFailure::Unreachable,
        ErrorType::ConnectTimedout => ConnectFailure::Timeout,
        _ => ConnectFailure::Other,
    }
}

/// Counts an upstream read or write timeout, if `e` is one.
pub fn count_timeout(metrics: &ListenerMetrics, e: &Error) {
    if e.esource() != &ErrorSource::Upstream {
        return;
    }
    match e.etype() {
        ErrorType::ReadTimedout => metrics.timeout(TimeoutPhase::Read),
        ErrorType::WriteTimedout => metrics.timeout(TimeoutPhase::Write),
        _ => {}
    }
}

/// A short, human-readable phrase for an upstream failure.
pub fn upstream_reason(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectTimedout => "connect timed out",
        ErrorType::ReadTimedout => "origin did not answer in time",
        ErrorType::WriteTimedout => "origin did not accept the request in time",
        ErrorType::ConnectRefused => "connection refused",
        ErrorType::ConnectNoRoute => "no route to destination",
        ErrorType::ConnectionClosed => "origin closed the connection",
        ErrorType::ReadError | ErrorType::WriteError => "connection to origin failed",
        ErrorType::InvalidHTTPHeader | ErrorType::H1Error => "invalid response from origin",
        _ => "cannot reach destination",
    }
}

/// The status for a failed request: 504 for timeouts toward the origin, 502
/// for other origin failures, 400 for malformed requests, 0 when the client
/// is already gone.
pub fn status_for(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => match e.etype() {
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                    504
                }
                _ => 502,
            },
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// The body of a 502/504 (`502 Bad Gateway: 198.51.100.10:82: connection
/// refused`); empty for other statuses.
pub fn failure_body(code: u16, dst: Option<SocketAddr>, e: &Error) -> String {
    let what = match code {
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => return String::new(),
    };
    let dst = dst.map_or_else(|| "-".to_string(), |a| a.to_string());
    format!("{code} {what}: {dst}: {}\n", upstream_reason(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(t: ErrorType, source: ErrorSource) -> Error {
        let mut e = Error::new(t);
        e.esource = source;
        *e
    }

    #[test]
    fn statuses() {
        let cases = [
            (ErrorType::ConnectTimedout, ErrorSource::Upstream, 504),
            (ErrorType::ReadTimedout, ErrorSource::Upstream, 504),
            (ErrorType::WriteTimedout, ErrorSource::Upstream, 504),
            (ErrorType::ConnectRefused, ErrorSource::Upstream, 502),
            (ErrorType::InvalidHTTPHeader, ErrorSource::Downstream, 400),
            (ErrorType::ConnectionClosed, ErrorSource::Downstream, 0),
            (ErrorType::HTTPStatus(508), ErrorSource::Unset, 508),
            (ErrorType::InternalError, ErrorSource::Internal, 500),
        ];
        for (t, source, want) in cases {
            assert_eq!(
                status_for(&err(t.clone(), source.clone())),
                want,
                "{t:?} {source:?}"
            );
        }
    }

    #[test]
    fn bodies_name_the_destination() {
        let e = err(ErrorType::ConnectRefused, ErrorSource::Upstream);
        let dst = Some("198.51.100.10:82".parse().unwrap());
        assert_eq!(
            failure_body(502, dst, &e),
            "502 Bad Gateway: 198.51.100.10:82: connection refused\n"
        );
        assert_eq!(failure_body(400, dst, &e), "");
    }
}
