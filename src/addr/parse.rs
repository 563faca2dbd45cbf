//! Parsing addresses as people write them: the one `host[:port]` parser
//! (Host headers, CONNECT targets, SNI checks all use it), CIDRs, and
//! "is this address local to us".

use ipnet::IpNet;
use std::net::IpAddr;

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port` or a bare v6 literal
/// into the host (without brackets) and the port, if any. `None` when the
/// text is malformed: a port that is not a number in 1..=65535 (0 is kept
/// out too), text after `]` that is not `:port`, an empty host.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            // Two or more colons: a bare v6 literal, never with a port.
            Some((_, rest)) if rest.contains(':') => (s, None),
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|p| *p != 0)?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// The host part of a Host header value or SNI for matching: port and
/// brackets removed, trailing dot dropped, lower-cased. Text that does not
/// parse as `host[:port]` is taken whole.
pub fn host_name(host: &str) -> String {
    let h = split_host_port(host).map_or(host.trim(), |(h, _)| h);
    let h = h.trim_end_matches('.');
    if h.is_ascii() {
        return h.to_ascii_lowercase();
    }
    // An IDN written in Unicode: as name sets store it, in punycode.
    idna::domain_to_ascii(h).unwrap_or_else(|_| h.to_lowercase())
}

/// The port of a Host header value, if it has a valid one.
pub fn host_port(host: &str) -> Option<u16> {
    split_host_port(host).and_then(|(_, p)| p)
}

/// Parses `a.b.c.d/n`, `v6/n`, or a bare address (a single host).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is not a CIDR (e.g. 192.0.2.0/24, 2001:db8::/32) or an IP"))
}

/// Whether `ip` is assigned to an interface of this host (network
/// namespace). Asks the kernel each time (addresses change); callers keep
/// it off the hot path.
pub fn is_local_ip(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs.into_iter().any(|ifa| {
            ifa.address.is_some_and(|a| {
                let found = if let Some(v4) = a.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                };
                found.map(|f| f.to_canonical()) == Some(ip)
            })
        }),
        // If we cannot tell, err on the side of "local": refuse, not loop.
        Err(_) => true,
    }
}

/// Loopback, unspecified, link-local, multicast, broadcast or one of this
/// host's own addresses: where a forward proxy must not be steered.
pub fn is_local_destination(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let special = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    special || is_local_ip(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        type Split<'a> = Option<(&'a str, Option<u16>)>;
        let cases: &[(&str, Split)] = &[
            ("example.org:443", Some(("example.org", Some(443)))),
            ("example.org", Some(("example.org", None))),
            ("[2001:db8::1]:8443", Some(("2001:db8::1", Some(8443)))),
            ("[2001:db8::1]", Some(("2001:db8::1", None))),
            ("2001:db8::1", Some(("2001:db8::1", None))),
            ("2001:db8::1:443", Some(("2001:db8::1:443", None))),
            ("host:99999", None),
            ("host:0", None),
            ("host:", None),
            ("host:http", None),
            ("[::1]x", None),
            (":80", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(split_host_port(input), *want, "{input:?}");
        }
    }

    #[test]
    fn host_names_for_matching() {
        assert_eq!(host_name("EXAMPLE.com:80"), "example.com");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(host_name("Bücher.example:80"), "xn--bcher-kva.example");
        assert_eq!(host_name("[2001:DB8::1]:80"), "2001:db8::1");
        assert_eq!(host_name("a:b"), "a:b");
        assert_eq!(host_port("a:8080"), Some(8080));
        assert_eq!(host_port("[::1]"), None);
    }

    #[test]
    fn nets() {
        assert_eq!(
            parse_net("192.0.2.77/24").unwrap(),
            "192.0.2.0/24".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_net("2001:db8::1").unwrap(),
            "2001:db8::1/128".parse::<IpNet>().unwrap()
        );
        assert!(parse_net("10.0.0.0/33").is_err());
    }

    #[test]
    fn local_destinations() {
        for ip in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "169.254.1.1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(is_local_destination(ip.parse().unwrap()), "{ip}");
        }
        assert!(!is_local_destination("198.51.100.10".parse().unwrap()));
        assert!(!is_local_destination("2001:db8:2::10".parse().unwrap()));
    }
}
