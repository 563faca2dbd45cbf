//! The plan as nftables text: one `nft -f` transaction that creates the
//! table if missing, deletes it, and writes it whole, so loading it twice
//! changes nothing and no other table, chain or rule is touched.

use super::{Family, Hook, Ruleset, Steer, TABLE};
use crate::interception::{show_range, OnProxyDown, Quic};
use ipnet::IpNet;
use std::fmt::Write;
use std::net::IpAddr;

/// The text that removes the table (and nothing else), also when absent.
pub fn removal() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

impl Ruleset {
    /// The complete transaction; `source` (the config file) is named in
    /// the header.
    pub fn nft(&self, source: &str) -> String {
        // A comment line must stay one line.
        let source: String = source
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        let i = &self.interception;
        let mark = format!("{:#x}", i.fwmark);
        let mut t = String::new();
        let _ = writeln!(
            t,
            "#!/usr/sbin/nft -f\n# Written by `tproxyd rules` from {source}: change the config and apply\n\
             # again (`tproxyd rules --apply`) instead of editing this.\n\
             # Policy routing that goes with it (`--apply` installs it, v4 and v6):\n\
             #   ip rule add fwmark {mark}/{mark} lookup {table}\n\
             #   ip route replace local default dev lo table {table}",
            table = i.route_table
        );
        t.push_str(&removal());
        let _ = writeln!(t, "table inet {TABLE} {{");
        for (name, nets, v6) in [
            ("bypass_dst4", &i.bypass_destinations, false),
            ("bypass_dst6", &i.bypass_destinations, true),
            ("bypass_src4", &i.bypass_clients, false),
            ("bypass_src6", &i.bypass_clients, true),
        ] {
            set(&mut t, name, nets, v6);
        }

        let _ = writeln!(
            t,
            "  chain prerouting {{\n    type filter hook prerouting priority mangle; policy accept;\n\
             \x20   # Packets of connections tproxyd owns (also origins' replies to\n\
             \x20   # spoofed client addresses) go to the local stack.\n\
             \x20   meta l4proto tcp socket transparent 1 meta mark set meta mark | {mark} accept"
        );
        exemptions(&mut t);
        for s in self.steers.iter().filter(|s| s.hook == Hook::Tproxy) {
            for iif in iifnames(&s.interfaces) {
                let to = match s.to {
                    None => format!(":{}", s.port),
                    Some(IpAddr::V6(a)) => format!("[{a}]:{}", s.port),
                    Some(a) => format!("{a}:{}", s.port),
                };
                let fam = match s.family {
                    Family::V4 => "ip",
                    Family::V6 => "ip6",
                };
                let _ = writeln!(
                    t,
                    "    {iif} meta nfproto {} tcp dport {} tproxy {fam} to {to} meta mark set meta mark | {mark} accept comment \"{}\"",
                    s.family.nfproto(),
                    ports(s),
                    label(&s.listener)
                );
            }
        }
        if i.on_proxy_down == OnProxyDown::Reset {
            let _ = writeln!(
                t,
                "    # Fail closed: while no tproxyd listens, the tproxy rules find no\n\
                 \x20   # socket; reset instead of forwarding unproxied."
            );
            for s in self.steers.iter().filter(|s| s.hook == Hook::Tproxy) {
                for iif in iifnames(&s.interfaces) {
                    let _ = writeln!(
                        t,
                        "    {iif} meta nfproto {} tcp dport {} reject with tcp reset",
                        s.family.nfproto(),
                        ports(s)
                    );
                }
            }
        }
        if i.quic == Quic::Reject && !self.steers.is_empty() {
            let _ = writeln!(
                t,
                "    # QUIC: an ICMP port unreachable makes browsers use TCP at once."
            );
            for iif in quic_interfaces(&self.steers) {
                let _ = writeln!(t, "    {iif} udp dport 443 reject");
            }
        }
        t.push_str("  }\n");

        let _ = writeln!(
            t,
            "  chain nat_prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;"
        );
        exemptions(&mut t);
        for s in self.steers.iter().filter(|s| s.hook == Hook::Nat) {
            for iif in iifnames(&s.interfaces) {
                let to = match s.to {
                    None => format!("redirect to :{}", s.port),
                    Some(IpAddr::V6(a)) => format!("dnat ip6 to [{a}]:{}", s.port),
                    Some(a) => format!("dnat ip to {a}:{}", s.port),
                };
                let _ = writeln!(
                    t,
                    "    {iif} meta nfproto {} tcp dport {} {to} comment \"{}\"",
                    s.family.nfproto(),
                    ports(s),
                    label(&s.listener)
                );
            }
        }
        t.push_str("  }\n}\n");
        t
    }
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

/// The router's own addresses and the bypass lists, in both chains.
fn exemptions(t: &mut String) {
    t.push_str(
        "    fib daddr type local accept\n\
         \x20   ip daddr @bypass_dst4 accept\n\
         \x20   ip6 daddr @bypass_dst6 accept\n\
         \x20   ip saddr @bypass_src4 accept\n\
         \x20   ip6 saddr @bypass_src6 accept\n",
    );
}

fn set(t: &mut String, name: &str, nets: &[IpNet], v6: bool) {
    let elems: Vec<String> = nets
        .iter()
        .filter(|n| matches!(n, IpNet::V6(_)) == v6)
        .map(|n| n.trunc().to_string())
        .collect();
    let ty = if v6 { "ipv6_addr" } else { "ipv4_addr" };
    let _ = write!(t, "  set {name} {{ type {ty}; flags interval;");
    if !elems.is_empty() {
        let _ = write!(t, " elements = {{ {} }};", elems.join(", "));
    }
    t.push_str(" }\n");
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
}
