//! Forwarding headers: `Via`, `X-Forwarded-For` and `Forwarded` (RFC 7239),
//! and the `Via` loop token.
//!
//! ```yaml
//! forwarding:
//!   via: on                       # on | replace | delete | transparent (= off)
//!   via_token: tproxyd            # our Via entry is "1.1 <via_token>"
//!   x_forwarded_for: transparent  # default: leave as the client sent it
//!   forwarded: transparent
//! ```
//! `on` appends our entry to the client's list, `replace` drops the client's
//! list and sends only ours, `delete` sends none, `transparent` (or `off`)
//! forwards the header untouched and adds nothing — for gateways that must
//! not reveal themselves.
//!
//! Our `Via` entry's received-by token is also the loop token: a request
//! whose `Via` already carries it has passed through this proxy and is
//! refused with 508. Give each tproxyd in a chain its own `via_token`.

use super::{Filter, FilterCtx, Hooks, RequestHeader, Result};
use crate::error::ConfigError;
use async_trait::async_trait;
use http::header::{FORWARDED, VIA};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What to do with one forwarding header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderMode {
    /// Append our entry to the client's.
    On,
    /// Send only our entry.
    Replace,
    /// Send none.
    Delete,
    /// Forward the client's header untouched, add nothing.
    #[serde(alias = "off")]
    Transparent,
}

/// `tproxyd.forwarding` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardingSettings {
    via: HeaderMode,
    via_token: Option<String>,
    x_forwarded_for: HeaderMode,
    forwarded: HeaderMode,
}

impl Default for ForwardingSettings {
    fn default() -> Self {
        ForwardingSettings {
            via: HeaderMode::On,
            via_token: None,
            x_forwarded_for: HeaderMode::Transparent,
            forwarded: HeaderMode::Transparent,
        }
    }
}

/// The validated forwarding settings and the filter applying them.
#[derive(Debug, Clone)]
pub struct Forwarding {
    via: HeaderMode,
    via_value: HeaderValue,
    /// The same entry for requests received as HTTP/1.0 (RFC 9110 §7.6.3:
    /// Via names the protocol the request was received with).
    via_value_10: HeaderValue,
    via_token: String,
    x_forwarded_for: HeaderMode,
    forwarded: HeaderMode,
}

impl ForwardingSettings {
    /// Validates the settings. `legacy_via` is a `Via` value given in
    /// `request_headers.add` (the core's original way to set it): it becomes
    /// our entry, and its received-by its token.
    pub fn validate(
        self,
        legacy_via: Option<&str>,
    ) -> std::result::Result<Forwarding, ConfigError> {
        let raw = self;
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.to_string(),
            reason,
        };
        let (via_value, via_token) = match (legacy_via, &raw.via_token) {
            (Some(v), token) => {
                let key = "tproxyd.request_headers.add.Via";
                let derived = via_received_by(v).next().ok_or_else(|| {
                    invalid(
                        key,
                        format!("{v:?} is not a Via entry like \"1.1 tproxyd\""),
                    )
                })?;
                if let Some(t) = token {
                    if !t.eq_ignore_ascii_case(derived) {
                        return Err(invalid(
                            "tproxyd.forwarding.via_token",
                            format!("{t:?} contradicts the Via {v:?} in request_headers.add; set one of them"),
                        ));
                    }
                }
                (v.to_string(), derived.to_string())
            }
            (None, token) => {
                let t = token.clone().unwrap_or_else(|| "tproxyd".to_string());
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                    return Err(invalid(
                        "tproxyd.forwarding.via_token",
                        format!("{t:?} must be one word of visible characters without commas"),
                    ));
                }
                (format!("1.1 {t}"), t)
            }
        };
        let via_value = HeaderValue::from_str(&via_value).map_err(|_| {
            invalid(
                "tproxyd.forwarding",
                format!("{via_value:?} is not a valid header value"),
            )
        })?;
        let via_value_10 = match via_value.to_str().ok().and_then(|v| v.strip_prefix("1.1 ")) {
            Some(rest) => {
                HeaderValue::from_str(&format!("1.0 {rest}")).unwrap_or(via_value.clone())
            }
            None => via_value.clone(),
        };
        Ok(Forwarding {
            via: raw.via,
            via_value,
            via_value_10,
            via_token: via_token.to_ascii_lowercase(),
            x_forwarded_for: raw.x_forwarded_for,
            forwarded: raw.forwarded,
        })
    }
}

impl Forwarding {
    /// The loop token (`tproxyd` unless configured).
    pub fn via_token(&self) -> &str {
        &self.via_token
    }

    /// True when the request's `Via` already names this proxy.
    pub fn is_looping(&self, req: &RequestHeader) -> bool {
        req.headers.get_all(VIA).iter().any(|v| {
            v.to_str()
                .map(|v| via_received_by(v).any(|r| r.eq_ignore_ascii_case(&self.via_token)))
                .unwrap_or(false)
        })
    }
}

/// A header we add: its name, and the same in the case sent on the wire
/// (Pingora would otherwise copy the lower-case name into a fresh buffer
/// for every request, and send it in lower case).
type Field = (HeaderName, &'static str);

const VIA_FIELD: Field = (VIA, "Via");
const X_FORWARDED_FOR_FIELD: Field = (X_FORWARDED_FOR, "X-Forwarded-For");
const FORWARDED_FIELD: Field = (FORWARDED, "Forwarded");

/// Applies `mode` to header `name` with our `entry` (built only if needed).
fn apply(
    req: &mut RequestHeader,
    (name, wire): Field,
    mode: HeaderMode,
    entry: impl FnOnce() -> HeaderValue,
) -> Result<()> {
    match mode {
        HeaderMode::Transparent => Ok(()),
        HeaderMode::Delete => {
            req.remove_header(&name);
            Ok(())
        }
        HeaderMode::Replace => req.insert_header(wire, entry()),
        HeaderMode::On => {
            let existing: Vec<&[u8]> = req
                .headers
                .get_all(&name)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            if existing.is_empty() {
                return req.insert_header(wire, entry());
            }
            // One combined field line: `a, b, ours`.
            let mut combined = existing.join(&b", "[..]);
            combined.extend_from_slice(b", ");
            combined.extend_from_slice(entry().as_bytes());
            req.insert_header(wire, combined)
        }
    }
}

/// The RFC 7239 `for=` value: v6 addresses quoted and bracketed.
fn forwarded_node(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

impl Forwarding {
    /// Adds, replaces or removes the forwarding headers of a request on its
    /// way upstream. The chain calls this directly, before the filters.
    pub fn apply(&self, ctx: &FilterCtx, req: &mut RequestHeader) -> Result<()> {
        let ours = if ctx.version == http::Version::HTTP_10 {
            &self.via_value_10
        } else {
            &self.via_value
        };
        apply(req, VIA_FIELD, self.via, || ours.clone())?;
        let client = ctx.flow.client.ip();
        apply(req, X_FORWARDED_FOR_FIELD, self.x_forwarded_for, || {
            HeaderValue::from_str(&client.to_string()).expect("an IP is a header value")
        })?;
        apply(req, FORWARDED_FIELD, self.forwarded, || {
            let mut v = format!("for={};proto=http", forwarded_node(client));
            if let Some(h) = ctx.host.as_deref().filter(|h| !h.contains(['"', ';', ','])) {
                v.push_str(&format!(";host=\"{h}\""));
            }
            HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("for=unknown"))
        })
    }
}

/// The same headers as a filter, for a chain built by hand.
#[async_trait]
impl Filter for Forwarding {
    fn name(&self) -> &str {
        "forwarding"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            upstream_request: true,
            ..Hooks::NONE
        }
    }

    async fn upstream_request(&self, ctx: &mut FilterCtx, req: &mut RequestHeader) -> Result<()> {
        self.apply(ctx, req)
    }
}

/// The `received-by` field of each entry of a `Via` value
/// (`1.1 proxy-a, HTTP/2 proxy-b (comment)` → `proxy-a`, `proxy-b`).
pub fn via_received_by(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .filter_map(|entry| entry.split_whitespace().nth(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> FilterCtx {
        crate::filters::test_ctx(
            "[2001:db8:1::10]:5555",
            "198.51.100.10:80",
            Some("example.org"),
        )
    }

    fn fwd(yaml: &str) -> Forwarding {
        serde_yaml::from_str::<ForwardingSettings>(yaml)
            .unwrap()
            .validate(None)
            .unwrap()
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn run(f: &Forwarding, r: &mut RequestHeader) {
        let mut c = ctx();
        futures::executor::block_on(f.upstream_request(&mut c, r)).unwrap();
    }

    fn all(r: &RequestHeader, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn via_on_appends_and_detects_the_token() {
        let f = fwd("{}");
        let mut r = req(&[("Via", "1.0 fred"), ("Via", "1.1 p.example.net")]);
        assert!(!f.is_looping(&r));
        run(&f, &mut r);
        assert_eq!(all(&r, "via"), ["1.0 fred, 1.1 p.example.net, 1.1 tproxyd"]);
        assert!(f.is_looping(&r));
        // The token only counts as a received-by field.
        assert!(!f.is_looping(&req(&[("Via", "1.1 other (tproxyd inside)")])));
        assert!(f.is_looping(&req(&[("Via", "1.0 a, 1.1 TPROXYD")])));
    }

    #[test]
    fn added_headers_go_out_in_their_usual_case() {
        let f = fwd("{x_forwarded_for: on, forwarded: replace}");
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        run(&f, &mut r);
        let mut wire = Vec::new();
        r.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.contains("Via: 1.1 tproxyd\r\n"), "{wire}");
        assert!(
            wire.contains("X-Forwarded-For: 2001:db8:1::10\r\n"),
            "{wire}"
        );
        assert!(wire.contains("Forwarded: for="), "{wire}");
        // Appended to what the client sent, under our spelling.
        let mut r = req(&[("via", "1.0 a")]);
        run(&f, &mut r);
        let mut wire = Vec::new();
        r.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.contains("Via: 1.0 a, 1.1 tproxyd\r\n"), "{wire}");
    }

    #[test]
    fn modes() {
        let f = fwd("{via: delete, x_forwarded_for: on, forwarded: replace}");
        let mut r = req(&[
            ("Via", "1.0 a"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("Forwarded", "for=1.2.3.4"),
        ]);
        run(&f, &mut r);
        assert!(all(&r, "via").is_empty());
        assert_eq!(all(&r, "x-forwarded-for"), ["203.0.113.9, 2001:db8:1::10"]);
        assert_eq!(
            all(&r, "forwarded"),
            ["for=\"[2001:db8:1::10]\";proto=http;host=\"example.org\""]
        );

        let f = fwd("{via: transparent, x_forwarded_for: off, forwarded: delete}");
        let mut r = req(&[
            ("Via", "1.0 a"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("Forwarded", "for=1.2.3.4"),
        ]);
        run(&f, &mut r);
        assert_eq!(all(&r, "via"), ["1.0 a"]);
        assert_eq!(all(&r, "x-forwarded-for"), ["203.0.113.9"]);
        assert!(all(&r, "forwarded").is_empty());

        let f = fwd("{via: replace, via_token: gw7, x_forwarded_for: replace}");
        let mut r = req(&[("Via", "1.0 a"), ("X-Forwarded-For", "203.0.113.9")]);
        run(&f, &mut r);
        assert_eq!(all(&r, "via"), ["1.1 gw7"]);
        assert_eq!(all(&r, "x-forwarded-for"), ["2001:db8:1::10"]);
        assert_eq!(f.via_token(), "gw7");
    }

    #[test]
    fn via_names_the_received_protocol() {
        let f = fwd("{}");
        let mut r = req(&[]);
        let mut c = ctx();
        c.version = http::Version::HTTP_10;
        futures::executor::block_on(f.upstream_request(&mut c, &mut r)).unwrap();
        assert_eq!(all(&r, "via"), ["1.0 tproxyd"]);
        assert!(f.is_looping(&r));
    }

    #[test]
    fn legacy_via_in_request_headers_sets_value_and_token() {
        let f = ForwardingSettings::default()
            .validate(Some("1.1 gw-a (tproxyd)"))
            .unwrap();
        assert_eq!(f.via_token(), "gw-a");
        let mut r = req(&[]);
        run(&f, &mut r);
        assert_eq!(all(&r, "via"), ["1.1 gw-a (tproxyd)"]);
        let raw: ForwardingSettings = serde_yaml::from_str("{via_token: other}").unwrap();
        assert!(raw.validate(Some("1.1 gw-a")).is_err());
        assert!(ForwardingSettings::default()
            .validate(Some("nonsense"))
            .is_err());
    }
}
