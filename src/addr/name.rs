//! The name a flow is judged and routed by. It comes from the client (a
//! Host header, a TLS SNI, a CONNECT target), so it is checked before
//! anything uses it: a host name (labels of letters, digits, `-` and `_`,
//! at most 63 bytes each, 253 in all) or an IP literal, nothing else. A
//! name that is neither is no name at all: it cannot reach a rule, a set
//! or a parent proxy's request line.

use std::net::IpAddr;

/// The longest name (RFC 1035: 253 characters without the root).
pub const MAX_NAME: usize = 253;

/// Whether `name` (ASCII, lower case) is a host name.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `name` as names are stored and compared: lower case, no trailing dot,
/// IDNs in punycode; `None` when it is not a host name.
pub fn normalise_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let ascii = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(name).ok()?
    };
    is_host_name(&ascii).then_some(ascii)
}

/// The host part of `text`, a Host value or authority (`host`,
/// `host:port`, `host:` with an empty port, `[v6]:port`, a bare v6
/// literal), or an SNI; `None` for anything else (user info, a path,
/// a port that is not a number).
fn host_part(text: &str) -> Option<&str> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').unwrap_or(after);
        return port.bytes().all(|b| b.is_ascii_digit()).then_some(host);
    }
    match text.split_once(':') {
        Some((_, rest)) if rest.contains(':') => Some(text),
        Some((host, port)) => port.bytes().all(|b| b.is_ascii_digit()).then_some(host),
        None => Some(text),
    }
}

/// The name of a flow from `text` (see the module docs): a normalised
/// host name, or an IP literal in its canonical form.
pub fn flow_name(text: &str) -> Option<String> {
    let host = host_part(text.trim())?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip.to_canonical().to_string());
    }
    normalise_name(host)
}

/// Whether `name` is `localhost` or under it (RFC 6761: always this host).
pub fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_host_names_and_addresses_are_names() {
        let rows: &[(&str, Option<&str>)] = &[
            ("WWW.Example.COM", Some("www.example.com")),
            ("www.example.com.:8080", Some("www.example.com")),
            ("ads.example:", Some("ads.example")),
            ("Bücher.example", Some("xn--bcher-kva.example")),
            ("[2001:DB8::1]:443", Some("2001:db8::1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("::ffff:192.0.2.7", Some("192.0.2.7")),
            ("198.51.100.10:80", Some("198.51.100.10")),
            ("x@ads.example", None),
            ("ads.example/path", None),
            ("ads.example:http", None),
            (
                "blocked.example:443 HTTP/1.1\r\nHost: x.allowed.example",
                None,
            ),
            ("a..b", None),
            ("", None),
            ("[::1", None),
        ];
        for (text, want) in rows {
            assert_eq!(flow_name(text).as_deref(), *want, "{text:?}");
        }
        let long = format!("{}.example", "a.".repeat(130));
        assert_eq!(flow_name(&long), None, "over 253 bytes");
        assert!(
            is_localhost("localhost")
                && is_localhost("a.localhost")
                && !is_localhost("notlocalhost")
        );
    }
}
