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
mod tests {
    use crate::config::Config;
    use crate::rules::Ruleset;

    fn nft(tproxyd: &str) -> String {
        let c = Config::from_yaml(&format!("tproxyd:\n{tproxyd}")).unwrap();
        Ruleset::from_config(&c.tproxyd).nft("test.yaml")
    }

    #[test]
    fn addresses_families_and_interfaces_shape_the_rules() {
        let t = nft(r#"  listeners:
    - { name: v4, address: "192.0.2.1:8888", mode: tproxy, intercept: { ports: [80, "8000-8080"] } }
    - { name: v6, address: "[2001:db8::1]:8889", mode: redirect, intercept: { ports: [81], interfaces: [lan0, "wlan*"] } }
    - { name: any4, address: "0.0.0.0:8443", mode: tls-passthrough, intercept: { ports: [443], interfaces: [lan0] } }
    - { name: fwd, address: "[::]:3128", mode: forward }
  interception:
    fwmark: 0x10
    bypass: { destinations: ["10.0.0.0/8", "fd00::/8"], clients: ["192.0.2.7"] }
"#);
        for want in [
            "iifname != \"lo\" meta nfproto ipv4 tcp dport { 80, 8000-8080 } tproxy ip to 192.0.2.1:8888 meta mark set meta mark | 0x10 accept comment \"v4\"",
            "iifname \"lan0\" meta nfproto ipv6 tcp dport 81 dnat ip6 to [2001:db8::1]:8889 comment \"v6\"",
            "iifname \"wlan*\" meta nfproto ipv6 tcp dport 81 dnat ip6 to [2001:db8::1]:8889",
            "iifname \"lan0\" meta nfproto ipv4 tcp dport 443 tproxy ip to :8443",
            "iifname != \"lo\" meta nfproto ipv4 tcp dport { 80, 8000-8080 } reject with tcp reset",
            "iifname != \"lo\" udp dport 443 reject",
            "set bypass_dst4 { type ipv4_addr; flags interval; elements = { 10.0.0.0/8 }; }",
            "set bypass_dst6 { type ipv6_addr; flags interval; elements = { fd00::/8 }; }",
            "set bypass_src4 { type ipv4_addr; flags interval; elements = { 192.0.2.7/32 }; }",
            "socket transparent 1 meta mark set meta mark | 0x10 accept",
            "ip rule add fwmark 0x10/0x10 lookup 100",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        // A v4-only listener gets no v6 rule; a redirect listener no reset;
        // the forward listener nothing.
        for absent in ["tproxy ip6 to :8443", "dport 81 reject", "3128"] {
            assert!(!t.contains(absent), "unexpected {absent:?} in\n{t}");
        }
    }

    #[test]
    fn config_text_cannot_escape_its_comment() {
        let t = nft("  listeners:\n    - { name: \"x\\\" accept; flush ruleset; #\", address: \"[::]:8888\", mode: tproxy, intercept: { ports: [80] } }\n");
        assert!(t.contains("comment \"x__accept__flush_ruleset___\""), "{t}");
        assert!(!t.contains("flush ruleset"), "{t}");
    }

    #[test]
    fn fail_open_and_quic_allow_leave_their_rules_out() {
        let t = nft(r#"  listeners:
    - { name: h, address: "[::]:8888", mode: tproxy, intercept: { ports: [80], interfaces: [lan0] } }
  interception: { on_proxy_down: bypass, quic: allow }
"#);
        assert!(
            t.contains("meta nfproto ipv6 tcp dport 80 tproxy ip6 to :8888"),
            "{t}"
        );
        assert!(!t.contains("reject"), "{t}");
        let none = nft("  listeners:\n    - { name: h, address: \"[::]:8888\", mode: tproxy }\n");
        assert!(
            !none.contains("tproxy ip") && !none.contains("reject"),
            "{none}"
        );
    }

    /// The whole text for a config with every kind of steer (v4, v6,
    /// dual-stack, specific and mapped addresses, redirect and dnat,
    /// interface lists and wildcards, every bypass set), pinned.
    #[test]
    fn a_rich_config_renders_exactly_this() {
        let t = nft(r#"  listeners:
    - { name: a, address: "[::]:8888", mode: tproxy, intercept: { ports: [80, 8080, "9000-9010"], interfaces: [lan0, lan1, "wlan*"] } }
    - { name: b, address: "[2001:db8::5]:8889", mode: redirect, intercept: { ports: [81] } }
    - { name: c, address: "10.1.1.1:8890", mode: redirect, intercept: { ports: [82], interfaces: [lan2] } }
    - { name: d, address: "[::ffff:10.1.1.2]:8891", mode: tproxy, intercept: { ports: [83], interfaces: [lan2] } }
    - { name: e, address: "[2001:db8::6]:8892", mode: tls-passthrough, intercept: { ports: [443], interfaces: [lan1] } }
    - { name: f, address: "[::]:8893", mode: tls-passthrough, destination: redirect, intercept: { ports: [4443] } }
  interception:
    fwmark: 0x100
    route_table: 200
    quic: reject
    on_proxy_down: reset
    bypass: { destinations: ["10.0.0.1/8", "2001:db8:ff::/48", "192.168.0.0/16"], clients: ["fd00::1/64", "192.0.2.9/32"] }
"#);
        assert_eq!(t, GOLDEN);
    }

    const GOLDEN: &str = r#"#!/usr/sbin/nft -f
# Written by `tproxyd rules` from test.yaml: change the config and apply
# again (`tproxyd rules --apply`) instead of editing this.
# Policy routing that goes with it (`--apply` installs it, v4 and v6):
#   ip rule add fwmark 0x100/0x100 lookup 200
#   ip route replace local default dev lo table 200
table inet tproxyd
delete table inet tproxyd
table inet tproxyd {
  set bypass_dst4 { type ipv4_addr; flags interval; elements = { 10.0.0.0/8, 192.168.0.0/16 }; }
  set bypass_dst6 { type ipv6_addr; flags interval; elements = { 2001:db8:ff::/48 }; }
  set bypass_src4 { type ipv4_addr; flags interval; elements = { 192.0.2.9/32 }; }
  set bypass_src6 { type ipv6_addr; flags interval; elements = { fd00::/64 }; }
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    # Packets of connections tproxyd owns (also origins' replies to
    # spoofed client addresses) go to the local stack.
    meta l4proto tcp socket transparent 1 meta mark set meta mark | 0x100 accept
    fib daddr type local accept
    ip daddr @bypass_dst4 accept
    ip6 daddr @bypass_dst6 accept
    ip saddr @bypass_src4 accept
    ip6 saddr @bypass_src6 accept
    iifname "lan0" meta nfproto ipv4 tcp dport { 80, 8080, 9000-9010 } tproxy ip to :8888 meta mark set meta mark | 0x100 accept comment "a"
    iifname "lan1" meta nfproto ipv4 tcp dport { 80, 8080, 9000-9010 } tproxy ip to :8888 meta mark set meta mark | 0x100 accept comment "a"
    iifname "wlan*" meta nfproto ipv4 tcp dport { 80, 8080, 9000-9010 } tproxy ip to :8888 meta mark set meta mark | 0x100 accept comment "a"
    iifname "lan0" meta nfproto ipv6 tcp dport { 80, 8080, 9000-9010 } tproxy ip6 to :8888 meta mark set meta mark | 0x100 accept comment "a"
    iifname "lan1" meta nfproto ipv6 tcp dport { 80, 8080, 9000-9010 } tproxy ip6 to :8888 meta mark set meta mark | 0x100 accept comment "a"
    iifname "wlan*" meta nfproto ipv6 tcp dport { 80, 8080, 9000-9010 } tproxy ip6 to :8888 meta mark set meta mark | 0x100 accept comment "a"
    iifname "lan2" meta nfproto ipv4 tcp dport 83 tproxy ip to 10.1.1.2:8891 meta mark set meta mark | 0x100 accept comment "d"
    iifname "lan1" meta nfproto ipv6 tcp dport 443 tproxy ip6 to [2001:db8::6]:8892 meta mark set meta mark | 0x100 accept comment "e"
    # Fail closed: while no tproxyd listens, the tproxy rules find no
    # socket; reset instead of forwarding unproxied.
    iifname "lan0" meta nfproto ipv4 tcp dport { 80, 8080, 9000-9010 } reject with tcp reset
    iifname "lan1" meta nfproto ipv4 tcp dport { 80, 8080, 9000-9010 } reject with tcp reset
    iifname "wlan*" meta nfproto ipv4 tcp dport { 80, 8080, 9000-9010 } reject with tcp reset
    iifname "lan0" meta nfproto ipv6 tcp dport { 80, 8080, 9000-9010 } reject with tcp reset
    iifname "lan1" meta nfproto ipv6 tcp dport { 80, 8080, 9000-9010 } reject with tcp reset
    iifname "wlan*" meta nfproto ipv6 tcp dport { 80, 8080, 9000-9010 } reject with tcp reset
    iifname "lan2" meta nfproto ipv4 tcp dport 83 reject with tcp reset
    iifname "lan1" meta nfproto ipv6 tcp dport 443 reject with tcp reset
    # QUIC: an ICMP port unreachable makes browsers use TCP at once.
    iifname != "lo" udp dport 443 reject
  }
  chain nat_prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local accept
    ip daddr @bypass_dst4 accept
    ip6 daddr @bypass_dst6 accept
    ip saddr @bypass_src4 accept
    ip6 saddr @bypass_src6 accept
    iifname != "lo" meta nfproto ipv6 tcp dport 81 dnat ip6 to [2001:db8::5]:8889 comment "b"
    iifname "lan2" meta nfproto ipv4 tcp dport 82 dnat ip to 10.1.1.1:8890 comment "c"
    iifname != "lo" meta nfproto ipv4 tcp dport 4443 redirect to :8893 comment "f"
    iifname != "lo" meta nfproto ipv6 tcp dport 4443 redirect to :8893 comment "f"
  }
}
"#;
}
