//! One access-log record and its two line formats. The JSON field names
//! are a stable interface; the text line is what people read.

use crate::addr::{ClientAddr, OrigDstAddr};
use crate::flow::RequestId;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// One request, as logged.
#[derive(Debug)]
pub struct Record<'a> {
    /// This request's id.
    pub request_id: RequestId,
    /// Listener name.
    pub listener: &'a str,
    /// `tproxy` or `redirect`.
    pub mode: &'a str,
    /// The client.
    pub client: Option<ClientAddr>,
    /// The original destination.
    pub dst: Option<OrigDstAddr>,
    /// Local address of the upstream connection (shows source spoofing).
    pub upstream_local: Option<SocketAddr>,
    /// Request method.
    pub method: &'a str,
    /// Host header as sent.
    pub host: Option<&'a str>,
    /// Path (with the query string when `query: true`).
    pub path: &'a str,
    /// Status sent to the client; 0 when none was sent.
    pub status: u16,
    /// Request body bytes received from the client.
    pub req_body_bytes: usize,
    /// Response body bytes sent to the client.
    pub resp_body_bytes: usize,
    /// From request header read to end of response.
    pub duration: Duration,
    /// Time to open the upstream connection; none when reused or none.
    pub upstream_connect: Option<Duration>,
    /// Whether the upstream connection came from the pool; none when none.
    pub upstream_reused: Option<bool>,
    /// What a filter decided, e.g. `acl:deny:no-admin`.
    pub decision: Option<&'a str>,
    /// The egress the flow left through (`direct`, or a configured one).
    pub egress: Option<&'a str>,
    /// A parent proxy's status when it refused the flow (407, 403 …).
    pub parent_status: Option<u16>,
    /// Why the proxy refused the request itself (`loop`, `acl`, …).
    pub refused: Option<&'a str>,
    /// Pingora's error kind when the request failed, e.g. `ConnectRefused`.
    pub error: Option<&'a str>,
    /// For TLS passthrough connections: what the ClientHello said.
    pub tls: Option<TlsLog<'a>>,
    /// `http`, `connect`, `tls` (passthrough) or `tunnel` (not HTTP on an
    /// HTTP listener).
    pub kind: &'a str,
    /// For tunnels: what the first bytes were (`tls`, `h2-prior-knowledge`,
    /// `unknown`, `server-first`).
    pub protocol: Option<&'a str>,
}

/// The TLS part of a passthrough connection's record.
#[derive(Debug, Clone, Copy)]
pub struct TlsLog<'a> {
    /// `spliced`, `denied`, `non_tls`, `bad_hello`, `connect_failed`.
    pub outcome: &'a str,
    /// Server name, if sent.
    pub sni: Option<&'a str>,
    /// ALPN protocols offered.
    pub alpn: &'a [String],
    /// TLS versions offered (`1.3`, `1.2`, …).
    pub versions: &'a [String],
    /// Encrypted Client Hello offered (`sni` is the outer name).
    pub ech: bool,
}

/// The JSON form of a [`Record`]; its field names are a stable interface.
#[derive(Serialize)]
struct JsonRecord<'a> {
    ts: String,
    request_id: String,
    listener: &'a str,
    mode: &'a str,
    client_ip: Option<String>,
    client_port: Option<u16>,
    dst_ip: Option<String>,
    dst_port: Option<u16>,
    upstream_local: Option<String>,
    method: &'a str,
    host: Option<&'a str>,
    path: &'a str,
    status: u16,
    req_body_bytes: usize,
    resp_body_bytes: usize,
    duration_ms: f64,
    upstream_connect_ms: Option<f64>,
    upstream_reused: Option<bool>,
    decision: Option<&'a str>,
    egress: Option<&'a str>,
    parent_status: Option<u16>,
    refused: Option<&'a str>,
    error: Option<&'a str>,
    tls_outcome: Option<&'a str>,
    sni: Option<&'a str>,
    alpn: Option<&'a [String]>,
    tls_versions: Option<&'a [String]>,
    ech: Option<bool>,
    kind: &'a str,
    protocol: Option<&'a str>,
}

thread_local! {
    /// The last second formatted (`2026-11-27T22:00:00`) and its Unix time.
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Appends `ts` as RFC 3339 UTC with milliseconds, formatting the date and
/// time of day only when the second changes.
fn timestamp(out: &mut Vec<u8>, ts: SystemTime) {
    let since = ts
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != since.as_secs() {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs());
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            *cache = (since.as_secs(), text.trim_end_matches('Z').to_string());
        }
        out.extend_from_slice(cache.1.as_bytes());
    });
    out.push(b'.');
    super::text::push_3digits(out, since.subsec_millis());
    out.push(b'Z');
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Record<'_> {
    /// The JSON form, appended to `out`.
    pub(super) fn write_json(&self, out: &mut Vec<u8>, ts: SystemTime) {
        match serde_json::to_vec(&self.json(ts)) {
            Ok(j) => out.extend_from_slice(&j),
            Err(e) => out.extend_from_slice(format!("{{\"log_error\":\"{e}\"}}").as_bytes()),
        }
    }

    #[cfg(test)]
    pub(super) fn json_line(&self, ts: SystemTime) -> String {
        let mut s = Vec::new();
        self.write_json(&mut s, ts);
        String::from_utf8(s).expect("JSON is UTF-8")
    }

    fn json(&self, ts: SystemTime) -> JsonRecord<'_> {
        JsonRecord {
            ts: humantime::format_rfc3339_millis(ts).to_string(),
            request_id: self.request_id.to_string(),
            listener: self.listener,
            mode: self.mode,
            client_ip: self.client.map(|a| a.ip().to_string()),
            client_port: self.client.map(|a| a.port()),
            dst_ip: self.dst.map(|a| a.ip().to_string()),
            dst_port: self.dst.map(|a| a.port()),
            upstream_local: self.upstream_local.map(|a| a.to_string()),
            method: self.method,
            host: self.host,
            path: self.path,
            status: self.status,
            req_body_bytes: self.req_body_bytes,
            resp_body_bytes: self.resp_body_bytes,
            duration_ms: ms(self.duration),
            upstream_connect_ms: self.upstream_connect.map(ms),
            upstream_reused: self.upstream_reused,
            decision: self.decision,
            egress: self.egress,
            parent_status: self.parent_status,
            refused: self.refused,
            error: self.error,
            tls_outcome: self.tls.map(|t| t.outcome),
            sni: self.tls.and_then(|t| t.sni),
            alpn: self.tls.map(|t| t.alpn),
            tls_versions: self.tls.map(|t| t.versions),
            ech: self.tls.map(|t| t.ech),
            kind: self.kind,
            protocol: self.protocol,
        }
    }

    /// One line, written straight into one buffer: this is the default log,
    /// on the request path of every request.
    #[cfg(test)]
    pub(super) fn text_line(&self, ts: SystemTime) -> String {
        let mut line = Vec::new();
        self.write_text(&mut line, ts);
        String::from_utf8(line).expect("a line of UTF-8 pieces")
    }

    /// The text form, appended to `line`: the default log, written for
    /// every request, so it formats into a reused buffer and takes the
    /// timestamp's date part from a per-second cache.
    pub(super) fn write_text(&self, line: &mut Vec<u8>, ts: SystemTime) {
        use super::text::{push_addr, push_escaped, push_hex16, push_ms_tenths, push_uint};
        use std::io::Write;
        timestamp(line, ts);
        line.push(b' ');
        push_hex16(line, self.request_id.0);
        line.push(b' ');
        line.extend_from_slice(self.listener.as_bytes());
        line.push(b' ');
        push_addr(line, self.client.map(SocketAddr::from));
        line.extend_from_slice(b" -> ");
        push_addr(line, self.dst.map(SocketAddr::from));
        line.extend_from_slice(b" \"");
        line.extend_from_slice(self.method.as_bytes());
        line.push(b' ');
        // An SNI can hold any character: one record stays one line.
        push_escaped(line, self.host.unwrap_or("-"));
        line.push(b' ');
        push_escaped(line, self.path);
        line.extend_from_slice(b"\" ");
        push_uint(line, u64::from(self.status));
        line.push(b' ');
        push_uint(line, self.resp_body_bytes as u64);
        line.extend_from_slice(b"B ");
        push_ms_tenths(line, self.duration);
        line.extend_from_slice(b"ms");
        if let Some(l) = self.upstream_local {
            line.extend_from_slice(b" via=");
            push_addr(line, Some(l));
        }
        if let Some(p) = self.protocol {
            line.extend_from_slice(b" tunnel=");
            line.extend_from_slice(p.as_bytes());
        }
        if let Some(t) = self.tls {
            let _ = write!(
                line,
                " tls={} alpn={} versions={}",
                t.outcome,
                t.alpn.join(","),
                t.versions.join(",")
            );
            if t.ech {
                line.extend_from_slice(b" ech");
            }
        }
        if let Some(r) = self.upstream_reused {
            line.extend_from_slice(if r { b" reused" } else { b" new" });
        }
        for (k, v) in [
            ("egress", self.egress),
            ("refused", self.refused),
            ("decision", self.decision),
            ("error", self.error),
        ] {
            if let Some(v) = v {
                line.push(b' ');
                line.extend_from_slice(k.as_bytes());
                line.push(b'=');
                line.extend_from_slice(v.as_bytes());
            }
        }
        if let Some(s) = self.parent_status {
            line.extend_from_slice(b" parent_status=");
            push_uint(line, u64::from(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record<'static> {
        Record {
            request_id: RequestId(0xab),
            listener: "lan-http",
            mode: "tproxy",
            client: Some(ClientAddr::new("[2001:db8:1::10]:4242".parse().unwrap())),
            dst: Some(OrigDstAddr::new("198.51.100.10:80".parse().unwrap())),
            upstream_local: Some("198.51.100.1:40000".parse().unwrap()),
            method: "GET",
            host: Some("example.org"),
            path: "/x",
            status: 200,
            req_body_bytes: 0,
            resp_body_bytes: 12,
            duration: Duration::from_micros(1500),
            upstream_connect: Some(Duration::from_micros(250)),
            upstream_reused: Some(false),
            decision: Some("acl:allow:lan"),
            egress: None,
            parent_status: None,
            refused: None,
            error: None,
            tls: None,
            kind: "http",
            protocol: None,
        }
    }

    fn ts() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_816_800)
    }

    #[test]
    fn json_has_stable_fields() {
        let v: serde_json::Value = serde_json::from_str(&rec().json_line(ts())).unwrap();
        assert_eq!(v["ts"], "2026-11-27T22:00:00.000Z");
        assert_eq!(v["client_ip"], "2001:db8:1::10");
        assert_eq!(v["dst_ip"], "198.51.100.10");
        assert_eq!(v["dst_port"], 80);
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream_connect_ms"], 0.25);
        assert_eq!(v["upstream_reused"], false);
        assert!(v["error"].is_null());
        assert!(v["sni"].is_null() && v["tls_versions"].is_null());
        assert_eq!(v["kind"], "http");
        assert!(v["protocol"].is_null() && v["ech"].is_null());
        assert!(v["egress"].is_null() && v["parent_status"].is_null());
        assert_eq!(v.as_object().unwrap().len(), 30);
    }

    #[test]
    fn text_line() {
        assert_eq!(
            rec().text_line(ts()),
            "2026-11-27T22:00:00.000Z 00000000000000ab lan-http [2001:db8:1::10]:4242 -> 198.51.100.10:80 \"GET example.org /x\" 200 12B 1.5ms via=198.51.100.1:40000 new decision=acl:allow:lan"
        );
    }

    #[test]
    fn timestamps_across_a_second_boundary() {
        let at = |ms: u64| {
            let mut s = Vec::new();
            timestamp(&mut s, ts() + Duration::from_millis(ms));
            String::from_utf8(s).unwrap()
        };
        assert_eq!(at(999), "2026-11-27T22:00:00.999Z");
        assert_eq!(at(1001), "2026-11-27T22:00:01.001Z");
        assert_eq!(at(5), "2026-11-27T22:00:00.005Z");
        assert_eq!(at(61_000), "2026-11-27T22:01:01.000Z");
    }
}
