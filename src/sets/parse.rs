//! Reading one line of a list, in each of the formats people load:
//! plain domain lists, hosts files, adblock filter lists and CIDR lists.

use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

/// A list's format (`tproxyd.sets.NAME.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Each line as `domains`, `hosts` or `adblock`, whichever it is.
    #[default]
    Auto,
    /// One name a line; `*.example.com` is `example.com`.
    Domains,
    /// Hosts-file lines: an address, then names.
    Hosts,
    /// `||name^` lines of an adblock filter list.
    Adblock,
    /// An IPv4/IPv6 address or CIDR a line.
    Cidrs,
}

impl Format {
    /// The name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Domains => "domains",
            Format::Hosts => "hosts",
            Format::Adblock => "adblock",
            Format::Cidrs => "cidrs",
        }
    }

    /// Whether it holds addresses, not names.
    pub fn is_cidrs(self) -> bool {
        self == Format::Cidrs
    }
}

pub use crate::addr::MAX_NAME;

/// What a line held.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Nothing: blank, a comment, or a hosts entry for this host itself.
    Nothing,
    /// Names (normalised), usually one.
    Names(Vec<String>),
    /// An address range.
    Net(IpNet),
    /// Not an entry of the format; why.
    Bad(&'static str),
}

/// Names a hosts file maps for the machine itself, never policy.
const LOCAL_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

/// `name` as it is stored and looked up: lower case, no trailing dot,
/// IDNs in punycode, a leading `*.` or `.` dropped; `None` when it is not
/// a host name (labels of letters, digits, `-` and `_`, at most 63 bytes
/// each, 253 in all).
pub fn normalise(name: &str) -> Option<String> {
    let name = name
        .strip_prefix("*.")
        .or_else(|| name.strip_prefix('.'))
        .unwrap_or(name);
    crate::addr::normalise_name(name)
}

fn one_name(token: &str) -> Line {
    match normalise(token) {
        Some(n) => Line::Names(vec![n]),
        None => Line::Bad("not a host name"),
    }
}

/// `line` without a trailing comment (a `#` after white space) and
/// surrounding white space. A `#` inside a word is not a comment: in
/// `example.com##.banner` (an adblock element rule) it makes the line bad
/// rather than an entry for `example.com`.
fn uncommented(line: &str) -> &str {
    let end = line
        .match_indices('#')
        .find(|(i, _)| *i == 0 || line[..*i].ends_with([' ', '\t']))
        .map_or(line.len(), |(i, _)| i);
    line[..end].trim()
}

fn domains_line(line: &str) -> Line {
    let mut tokens = uncommented(line).split_whitespace();
    match (tokens.next(), tokens.next()) {
        (None, _) => Line::Nothing,
        (Some(t), None) => one_name(t),
        (Some(_), Some(_)) => Line::Bad("more than one word"),
    }
}

fn hosts_line(line: &str) -> Line {
    let mut tokens = uncommented(line).split_whitespace();
    let Some(addr) = tokens.next() else {
        return Line::Nothing;
    };
    if addr.parse::<IpAddr>().is_err() {
        return Line::Bad("not a hosts line (an address, then names)");
    }
    let mut names = Vec::new();
    for t in tokens {
        if LOCAL_NAMES.contains(&t.to_ascii_lowercase().as_str()) {
            continue;
        }
        match normalise(t) {
            Some(n) => names.push(n),
            None => return Line::Bad("not a host name"),
        }
    }
    match names.is_empty() {
        true => Line::Nothing,
        false => Line::Names(names),
    }
}

fn adblock_line(line: &str) -> Line {
    let line = line.trim();
    if line.is_empty() || line.starts_with('!') || line.starts_with('[') || line.starts_with('#') {
        return Line::Nothing;
    }
    let name = line
        .strip_prefix("||")
        .and_then(|l| l.strip_suffix('^').or_else(|| l.strip_suffix("^|")));
    match name {
        Some(n) if !n.contains(['/', '*', '^', '$']) => one_name(n),
        _ => Line::Bad("adblock rule other than ||name^"),
    }
}

fn cidrs_line(line: &str) -> Line {
    let text = uncommented(line);
    if text.is_empty() {
        return Line::Nothing;
    }
    match crate::addr::parse_net(text) {
        Ok(net) => Line::Net(net),
        Err(_) => Line::Bad("not an address or CIDR"),
    }
}

/// What `line` (without its line end) holds in `format`.
pub fn parse_line(format: Format, line: &[u8]) -> Line {
    let Ok(line) = std::str::from_utf8(line) else {
        return Line::Bad("not UTF-8");
    };
    if line.contains('\0') {
        return Line::Bad("a NUL byte");
    }
    let trimmed = line.trim_start();
    if trimmed.is_empty()
        || trimmed.starts_with('#')
        || (trimmed.starts_with('!') && format != Format::Cidrs)
    {
        return Line::Nothing;
    }
    match format {
        Format::Domains => domains_line(line),
        Format::Hosts => hosts_line(line),
        Format::Adblock => adblock_line(line),
        Format::Cidrs => cidrs_line(line),
        Format::Auto if trimmed.starts_with("||") => adblock_line(line),
        Format::Auto => match trimmed.split_whitespace().next().map(str::parse::<IpAddr>) {
            Some(Ok(_)) => hosts_line(line),
            _ => domains_line(line),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Line {
        Line::Names(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn names_are_normalised_once() {
        assert_eq!(
            normalise("WWW.Example.COM."),
            Some("www.example.com".into())
        );
        assert_eq!(normalise("*.example.com"), Some("example.com".into()));
        assert_eq!(normalise(".example.com"), Some("example.com".into()));
        assert_eq!(
            normalise("bücher.example"),
            Some("xn--bcher-kva.example".into())
        );
        assert_eq!(normalise("a..b"), None);
        assert_eq!(normalise("a b"), None);
        assert_eq!(normalise(&"a".repeat(64)), None);
        assert_eq!(normalise(""), None);
    }

    #[test]
    fn each_format() {
        use Format::*;
        let rows: &[(Format, &str, Line)] = &[
            (Domains, "example.com", names(&["example.com"])),
            (Domains, "  # a comment", Line::Nothing),
            (Domains, "! adblock-style comment", Line::Nothing),
            (Domains, "example.com # why", names(&["example.com"])),
            (Domains, "a b", Line::Bad("more than one word")),
            (
                Domains,
                "example.com##.banner",
                Line::Bad("not a host name"),
            ),
            (Hosts, "0.0.0.0 a.example\t# note", names(&["a.example"])),
            (
                Hosts,
                "0.0.0.0 ads.example a.example",
                names(&["ads.example", "a.example"]),
            ),
            (Hosts, "127.0.0.1 localhost", Line::Nothing),
            (Hosts, "::1 ip6-localhost ip6-loopback", Line::Nothing),
            (
                Hosts,
                "ads.example",
                Line::Bad("not a hosts line (an address, then names)"),
            ),
            (Adblock, "||ads.example^", names(&["ads.example"])),
            (Adblock, "||ads.example^|", names(&["ads.example"])),
            (Adblock, "[Adblock Plus 2.0]", Line::Nothing),
            (
                Adblock,
                "example.com##.banner",
                Line::Bad("adblock rule other than ||name^"),
            ),
            (
                Adblock,
                "||ads.example^$third-party",
                Line::Bad("adblock rule other than ||name^"),
            ),
            (
                Cidrs,
                "10.0.0.0/8",
                Line::Net("10.0.0.0/8".parse().unwrap()),
            ),
            (
                Cidrs,
                "2001:db8::1",
                Line::Net("2001:db8::1/128".parse().unwrap()),
            ),
            (Cidrs, "10.0.0.0/33", Line::Bad("not an address or CIDR")),
            (Auto, "||ads.example^", names(&["ads.example"])),
            (Auto, "0.0.0.0 ads.example", names(&["ads.example"])),
            (Auto, "ads.example", names(&["ads.example"])),
        ];
        for (f, line, want) in rows {
            assert_eq!(&parse_line(*f, line.as_bytes()), want, "{f:?} {line:?}");
        }
        assert_eq!(
            parse_line(Domains, b"ex\xffample.com"),
            Line::Bad("not UTF-8")
        );
        assert_eq!(
            parse_line(Domains, b"ex\0ample.com"),
            Line::Bad("a NUL byte")
        );
    }
}
