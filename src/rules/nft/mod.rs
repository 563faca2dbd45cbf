//! The plan as nftables text: one `nft -f` transaction that creates the
//! table if missing, deletes it, and writes it whole, so loading it twice
//! changes nothing and no other table, chain or rule is touched.

use super::{Family, Hook, Ruleset, Steer, TABLE};
use crate::interception::{show_range, OnProxyDown, Quic};
use ipnet::IpNet;
use std::net::IpAddr;

/// The text that removes the table (and nothing else), also when absent.
pub fn removal() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

/// One line of a chain: a comment, or a rule (its match, then its
/// statement).
enum Line {
    Note(&'static str),
    Rule(String, String),
}

impl Line {
    fn rule(when: impl Into<String>, then: impl Into<String>) -> Line {
        Line::Rule(when.into(), then.into())
    }
}

/// A base chain: its name, its `type … hook … priority …; policy …;` line
/// and its lines in order.
struct Chain {
    name: &'static str,
    base: &'static str,
    lines: Vec<Line>,
}

/// A set of addresses of one family.
struct Set<'a> {
    name: &'static str,
    v6: bool,
    nets: &'a [IpNet],
}

/// The router's own addresses and the bypass lists, first in both chains.
const EXEMPT: [&str; 5] = [
    "fib daddr type local",
    "ip daddr @bypass_dst4",
    "ip6 daddr @bypass_dst6",
    "ip saddr @bypass_src4",
    "ip6 saddr @bypass_src6",
];

impl Ruleset {
    /// The complete transaction; `source` (the config file) is named in
    /// the header.
    pub fn nft(&self, source: &str) -> String {
        let mut t = self.header(source);
        t.push_str(&removal());
        t.push_str(&format!("table inet {TABLE} {{\n"));
        for set in self.sets() {
            t.push_str(&set.render());
        }
        for chain in [self.prerouting(), self.nat_prerouting()] {
            t.push_str(&chain.render());
        }
        t.push_str("}\n");
        t
    }

    /// The comment block: where the text came from, and the policy routing
    /// that goes with it.
    fn header(&self, source: &str) -> String {
        // A comment line must stay one line.
        let source: String = source
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        let (mark, table) = (self.mark(), self.interception.route_table);
        format!(
            "#!/usr/sbin/nft -f\n\
             # Written by `tproxyd rules` from {source}: change the config and apply\n\
             # again (`tproxyd rules --apply`) instead of editing this.\n\
             # Policy routing that goes with it (`--apply` installs it, v4 and v6):\n\
             #   ip rule add fwmark {mark}/{mark} lookup {table}\n\
             #   ip route replace local default dev lo table {table}\n"
        )
    }

    /// The fwmark as nft and `ip rule` write it.
    fn mark(&self) -> String {
        format!("{:#x}", self.interception.fwmark)
    }

    /// The bypass sets, v4 and v6 apart.
    fn sets(&self) -> [Set<'_>; 4] {
        let (dst, src) = (
            &self.interception.bypass_destinations[..],
            &self.interception.bypass_clients[..],
        );
        [
            ("bypass_dst4", false, dst),
            ("bypass_dst6", true, dst),
            ("bypass_src4", false, src),
            ("bypass_src6", true, src),
        ]
        .map(|(name, v6, nets)| Set { name, v6, nets })
    }

    /// The tproxy chain: tproxyd's own sockets, the exemptions, the tproxy
    /// steers, then the fail-closed resets and the QUIC rejects.
    fn prerouting(&self) -> Chain {
        let mark = self.mark();
        let mut lines = vec![
            Line::Note("Packets of connections tproxyd owns (also origins' replies to"),
            Line::Note("spoofed client addresses) go to the local stack."),
            Line::rule(
                "meta l4proto tcp socket transparent 1",
                format!("meta mark set meta mark | {mark} accept"),
            ),
        ];
        lines.extend(exemptions());
        lines.extend(self.steered(Hook::Tproxy, |s| {
            let fam = match s.family {
                Family::V4 => "ip",
                Family::V6 => "ip6",
            };
            let to = s.to.map(address).unwrap_or_default();
            format!(
                "tproxy {fam} to {to}:{} meta mark set meta mark | {mark} accept comment \"{}\"",
                s.port,
                label(&s.listener)
            )
        }));
        let i = &self.interception;
        if i.on_proxy_down == OnProxyDown::Reset {
            lines.push(Line::Note(
                "Fail closed: while no tproxyd listens, the tproxy rules find no",
            ));
            lines.push(Line::Note("socket; reset instead of forwarding unproxied."));
            lines.extend(self.steered(Hook::Tproxy, |_| "reject with tcp reset".into()));
        }
        if i.quic == Quic::Reject && !self.steers.is_empty() {
            lines.push(Line::Note(
                "QUIC: an ICMP port unreachable makes browsers use TCP at once.",
            ));
            let iifs = quic_interfaces(&self.steers);
            lines.extend(
                iifs.into_iter()
                    .map(|iif| Line::rule(format!("{iif} udp dport 443"), "reject")),
            );
        }
        Chain {
            name: "prerouting",
            base: "type filter hook prerouting priority mangle; policy accept;",
            lines,
        }
    }

    /// The nat chain: the exemptions, then the redirect and dnat steers.
    fn nat_prerouting(&self) -> Chain {
        let mut lines: Vec<Line> = exemptions().collect();
        lines.extend(self.steered(Hook::Nat, |s| {
            let to = match s.to {
                None => "redirect to ".to_string(),
                Some(a @ IpAddr::V6(_)) => format!("dnat ip6 to {}", address(a)),
                Some(a) => format!("dnat ip to {}", address(a)),
            };
            format!("{to}:{} comment \"{}\"", s.port, label(&s.listener))
        }));
        Chain {
            name: "nat_prerouting",
            base: "type nat hook prerouting priority dstnat; policy accept;",
            lines,
        }
    }

    /// One rule per steer of `hook` and incoming interface, in config
    /// order: the steer's match, then `then(steer)`.
    fn steered(&self, hook: Hook, then: impl Fn(&Steer) -> String) -> Vec<Line> {
        let mut out = Vec::new();
        for s in self.steers.iter().filter(|s| s.hook == hook) {
            for iif in iifnames(&s.interfaces) {
                let when = format!(
                    "{iif} meta nfproto {} tcp dport {}",
                    s.family.nfproto(),
                    ports(s)
                );
                out.push(Line::rule(when, then(s)));
            }
        }
        out
    }
}

impl Chain {
    /// The chain as nft text, each line indented under it.
    fn render(&self) -> String {
        let mut t = format!("  chain {} {{\n    {}\n", self.name, self.base);
        for line in &self.lines {
            let text = match line {
                Line::Note(note) => format!("# {note}"),
                Line::Rule(when, then) => format!("{when} {then}"),
            };
            t.push_str(&format!("    {text}\n"));
        }
        t.push_str("  }\n");
        t
    }
}

impl Set<'_> {
    /// The set's one line; only the addresses of its family.
    fn render(&self) -> String {
        let elems: Vec<String> = self
            .nets
            .iter()
            .filter(|n| matches!(n, IpNet::V6(_)) == self.v6)
            .map(|n| n.trunc().to_string())
            .collect();
        let ty = if self.v6 { "ipv6_addr" } else { "ipv4_addr" };
        let elements = match elems.as_slice() {
            [] => String::new(),
            all => format!(" elements = {{ {} }};", all.join(", ")),
        };
        format!(
            "  set {} {{ type {ty}; flags interval;{elements} }}\n",
            self.name
        )
    }
}

/// An address as the part of `ADDR:PORT` before the colon.
fn address(a: IpAddr) -> String {
    match a {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// [`EXEMPT`]'s rules: each accepts.
fn exemptions() -> impl Iterator<Item = Line> {
    EXEMPT.into_iter().map(|when| Line::rule(when, "accept"))
}

/// A listener's name as an nft rule comment: config text must not be able
/// to end the string (and add rules of its own), and nft caps comments at
/// 128 bytes.
fn label(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// One `iifname` match per interface (a `*` prefix match cannot go into
/// an anonymous set on every nft version); none given: all but `lo`.
fn iifnames(interfaces: &[String]) -> Vec<String> {
    if interfaces.is_empty() {
        return vec!["iifname != \"lo\"".into()];
    }
    interfaces
        .iter()
        .map(|i| format!("iifname \"{i}\""))
        .collect()
}

fn quic_interfaces(steers: &[Steer]) -> Vec<String> {
    if steers.iter().any(|s| s.interfaces.is_empty()) {
        return iifnames(&[]);
    }
    let mut all: Vec<String> = steers
        .iter()
        .flat_map(|s| s.interfaces.iter().cloned())
        .collect();
    all.sort();
    all.dedup();
    iifnames(&all)
}

fn ports(s: &Steer) -> String {
    match s.ports.as_slice() {
        [one] => show_range(*one),
        many => format!(
            "{{ {} }}",
            many.iter()
                .map(|r| show_range(*r))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests;
