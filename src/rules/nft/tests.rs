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
