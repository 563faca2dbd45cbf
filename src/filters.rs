//! Header rewriting on the way to the origin, and the `Via` loop check.
//!
//! `Via` gets special treatment because RFC 9110 §7.6.3 makes it a list that
//! each intermediary appends to; our own entry in it doubles as the loop
//! token (a request that already passed through us must not pass again).

use http::header::VIA;
use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;

/// The configured request-header additions, prepared once at start-up.
#[derive(Debug, Clone)]
pub struct RequestHeaderAdder {
    add: Vec<(HeaderName, HeaderValue)>,
    via_token: Option<String>,
}

impl RequestHeaderAdder {
    /// `add` comes from `tproxyd.request_headers.add`. The loop token is the
    /// `received-by` part of the `Via` value we add (`tproxyd` in
    /// `1.1 tproxyd`); without a `Via` addition there is no token.
    pub fn new(add: Vec<(HeaderName, HeaderValue)>) -> Self {
        let via_token = add
            .iter()
            .find(|(n, _)| n == VIA)
            .and_then(|(_, v)| v.to_str().ok())
            .and_then(|v| via_received_by(v).next())
            .map(str::to_ascii_lowercase);
        RequestHeaderAdder { add, via_token }
    }

    /// The token whose presence in an incoming `Via` means "already proxied
    /// by us".
    pub fn via_token(&self) -> Option<&str> {
        self.via_token.as_deref()
    }

    /// True when the request's `Via` already names this proxy.
    pub fn is_looping(&self, req: &RequestHeader) -> bool {
        let Some(token) = &self.via_token else {
            return false;
        };
        req.headers.get_all(VIA).iter().any(|v| {
            v.to_str()
                .map(|v| via_received_by(v).any(|r| r.eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    }

    /// Applies the additions to the request sent upstream.
    pub fn apply(&self, req: &mut RequestHeader) -> pingora_error::Result<()> {
        for (name, value) in &self.add {
            if name == VIA {
                append_via(req, value)?;
            } else {
                req.append_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }
}

/// Appends `value` to the request's `Via` list as one combined field line.
fn append_via(req: &mut RequestHeader, value: &HeaderValue) -> pingora_error::Result<()> {
    let existing: Vec<&[u8]> = req
        .headers
        .get_all(VIA)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if existing.is_empty() {
        return req.insert_header(VIA, value.clone());
    }
    let mut combined = existing.join(&b", "[..]);
    combined.extend_from_slice(b", ");
    combined.extend_from_slice(value.as_bytes());
    req.insert_header(VIA, combined)
}

/// The `received-by` field of each entry of a `Via` value
/// (`1.1 proxy-a, HTTP/2 proxy-b (comment)` → `proxy-a`, `proxy-b`).
fn via_received_by(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .filter_map(|entry| entry.split_whitespace().nth(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adder() -> RequestHeaderAdder {
        RequestHeaderAdder::new(vec![
            (VIA, HeaderValue::from_static("1.1 tproxyd")),
            (
                HeaderName::from_static("x-proxied"),
                HeaderValue::from_static("1"),
            ),
        ])
    }

    #[test]
    fn via_is_added_or_appended() {
        let a = adder();
        assert_eq!(a.via_token(), Some("tproxyd"));
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        a.apply(&mut req).unwrap();
        assert_eq!(req.headers.get(VIA).unwrap(), "1.1 tproxyd");
        assert_eq!(req.headers.get("x-proxied").unwrap(), "1");

        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header(VIA, "1.0 fred").unwrap();
        req.append_header(VIA, "1.1 p.example.net").unwrap();
        a.apply(&mut req).unwrap();
        let all: Vec<_> = req.headers.get_all(VIA).iter().collect();
        assert_eq!(all, ["1.0 fred, 1.1 p.example.net, 1.1 tproxyd"]);
    }

    #[test]
    fn loop_token_is_detected_only_as_received_by() {
        let a = adder();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        assert!(!a.is_looping(&req));
        req.insert_header(VIA, "1.1 other (tproxyd inside)")
            .unwrap();
        assert!(!a.is_looping(&req));
        req.insert_header(VIA, "1.0 fred, 1.1 TPROXYD").unwrap();
        assert!(a.is_looping(&req));
    }

    #[test]
    fn no_via_means_no_token() {
        let a = RequestHeaderAdder::new(vec![]);
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header(VIA, "1.1 tproxyd").unwrap();
        assert!(!a.is_looping(&req));
    }
}
