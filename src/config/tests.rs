use super::*;
use crate::listener::ListenerKind;
use std::time::Duration;

#[test]
fn defaults_have_one_tproxy_listener_and_via() {
    let c = Config::defaults();
    assert_eq!(c.tproxyd.listeners.len(), 1);
    assert_eq!(c.tproxyd.listeners[0].address, "[::]:8888");
    assert_eq!(c.tproxyd.listeners[0].id.mode, Mode::Tproxy);
    assert!(c.tproxyd.filters.add_request_headers.is_empty());
    assert_eq!(c.tproxyd.filters.forwarding.via_token(), "tproxyd");
    assert_eq!(c.tproxyd.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.tproxyd.upstream.relay, crate::flow::RelayKind::Splice);
    let admin = c.tproxyd.admin.as_ref().map(|a| a.address.as_str());
    assert_eq!(admin, Some("127.0.0.1:9187"));
}

#[test]
fn full_example_parses() {
    let c = Config::from_yaml(
        r#"
version: 1
threads: 2
grace_period_seconds: 3
tproxyd:
  listeners:
    - { name: lan-http, address: "[::]:8888", mode: tproxy }
    - { name: nat, address: "0.0.0.0:8889", mode: redirect }
  request_headers:
    add: { Via: "1.1 gw", X-Seen: "yes" }
  upstream:
    connect_timeout: 250ms
    read_timeout: 1m
"#,
    )
    .unwrap();
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.server.grace_period_seconds, Some(3));
    assert_eq!(c.tproxyd.listeners[1].id.mode, Mode::Redirect);
    assert_eq!(c.tproxyd.filters.add_request_headers.len(), 1);
    assert_eq!(c.tproxyd.filters.forwarding.via_token(), "gw");
    assert_eq!(
        c.tproxyd.upstream.connect_timeout,
        Duration::from_millis(250)
    );
    assert_eq!(c.tproxyd.upstream.read_timeout, Duration::from_secs(60));
}

#[test]
fn listener_kinds_carry_their_policy() {
    let c = Config::from_yaml(
            r#"
tproxyd:
  upstream: { mark: "0x10", relay: copy }
  listeners:
    - { name: f, address: "[::]:3128", mode: forward }
    - { name: s, address: "[::]:8443", mode: tls-passthrough, destination: redirect, spoof_source: true }
    - { name: t, address: "[::]:8888", mode: tproxy, spoof_source: true }
"#,
        )
        .unwrap();
    assert_eq!(c.tproxyd.upstream.mark, Some(16));
    assert_eq!(c.tproxyd.upstream.relay, crate::flow::RelayKind::Copy);
    let ListenerKind::Forward(f) = &c.tproxyd.listeners[0].kind else {
        panic!("{:?}", c.tproxyd.listeners[0].kind)
    };
    assert!(f.allow_clients.is_empty());
    assert_eq!(f.connect_ports, vec![443]);
    assert!(!f.allow_local_destinations);
    assert_eq!(f.resolve_timeout, Duration::from_secs(2));
    let ListenerKind::TlsPassthrough {
        source,
        spoof_source,
        policy,
    } = &c.tproxyd.listeners[1].kind
    else {
        panic!("{:?}", c.tproxyd.listeners[1].kind)
    };
    assert_eq!(*source, crate::flow::DestinationSource::Redirect);
    assert!(*spoof_source);
    assert_eq!(policy.missing_sni, crate::tls::policy::Policy::Allow);
    assert_eq!(policy.non_tls, crate::tls::policy::Policy::Deny);
    assert!(matches!(
        c.tproxyd.listeners[2].kind,
        ListenerKind::Http {
            spoof_source: true,
            ..
        }
    ));
    assert!(!c.tproxyd.listeners[0].is_transparent());
    assert!(c.tproxyd.listeners[2].is_transparent());
}

#[test]
fn filter_specs_keep_name_and_key() {
    let c =
        Config::from_yaml("tproxyd:\n  filters:\n    - acl:\n    - custom: { a: 1 }\n").unwrap();
    // The `acl` entry is a rule set of the decision, not a filter; the
    // custom filter keeps its key from the list.
    assert_eq!(c.tproxyd.filters.acls.len(), 1);
    assert_eq!(c.tproxyd.filters.filters[0].name, "custom");
    assert_eq!(
        c.tproxyd.filters.filters[0].key,
        "tproxyd.filters[1].custom"
    );
}

/// Each row: a config and what its error message must contain. Every
/// row is checked and all failures are reported together.
#[test]
fn errors_name_the_key() {
    #[rustfmt::skip]
        let rows: &[(&str, &[&str])] = &[
            ("tproxyd:\n  listeners:\n    - { name: a, address: \"[::]:80\", mode: nat }\n", &["listeners[0].mode", "nat"]),
            ("tproxyd:\n  listeners:\n    - { name: a, address: \"example.org:80\", mode: tproxy }\n", &["tproxyd.listeners[0].address"]),
            ("tproxyd:\n  listeners:\n    - { name: a, address: \"[::]:0\", mode: tproxy }\n", &["tproxyd.listeners[0].address", "port must not be 0"]),
            ("tproxyd:\n  listeners:\n    - { name: \" \", address: \"[::]:80\", mode: tproxy }\n", &["tproxyd.listeners[0].name", "empty"]),
            ("tproxyd:\n  upstream:\n    connect_timeout: soon\n", &["tproxyd.upstream.connect_timeout", "bad duration"]),
            ("tproxyd:\n  upstream:\n    idle_timeout: 0s\n", &["tproxyd.upstream.idle_timeout", "greater than zero"]),
            ("tproxyd:\n  listen: []\n", &["unknown field `listen`"]),
            ("threadz: 4\n", &["threadz", "unknown key"]),
            ("threads: many\n", &["threads"]),
            ("daemon: true\nuser: nobody\n", &["user: Pingora switches user"]),
            ("group: nogroup\n", &["group: Pingora switches user"]),
            ("tproxyd:\n  admin: { address: nowhere }\n", &["tproxyd.admin.address"]),
            ("tproxyd:\n  admin: { address: \"127.0.0.1:8888\" }\n", &["tproxyd.admin.address", "shares its port"]),
            ("tproxyd:\n  access_log: { format: xml }\n", &["tproxyd.access_log.format"]),
            ("tproxyd:\n  access_log: { path: /nonexistent/dir/a.log }\n", &["tproxyd.access_log.path"]),
            ("tproxyd:\n  upstream: { mark: lots }\n", &["tproxyd.upstream.mark"]),
            ("tproxyd:\n  upstream: { mark: 0 }\n", &["tproxyd.upstream.mark", "leave it out"]),
            ("tproxyd:\n  upstream: { relay: sendfile }\n", &["tproxyd.upstream.relay", "sendfile"]),
            ("tproxyd:\n  listeners:\n    - { name: f, address: \"[::]:3128\", mode: forward, spoof_source: true }\n", &["listeners[0].spoof_source"]),
            ("tproxyd:\n  listeners:\n    - { name: t, address: \"[::]:80\", mode: tproxy, allow_clients: [\"10.0.0.0/8\"] }\n", &["listeners[0].allow_clients", "forward"]),
            ("tproxyd:\n  listeners:\n    - { name: t, address: \"[::]:80\", mode: redirect, connect_ports: [443] }\n", &["listeners[0].connect_ports", "forward"]),
            ("tproxyd:\n  listeners:\n    - { name: f, address: \"[::]:3128\", mode: forward, allow_clients: [\"10.0.0.0/40\"] }\n", &["listeners[0].allow_clients[0]"]),
            ("tproxyd:\n  listeners:\n    - { name: s, address: \"[::]:8443\", mode: tls-passthrough, tls: { non_tls: maybe } }\n", &["tproxyd.listeners[0].tls.non_tls"]),
            ("tproxyd:\n  listeners:\n    - { name: s, address: \"[::]:8443\", mode: tls-passthrough, tls: { client_hello_timeout: never } }\n", &["tproxyd.listeners[0].tls.client_hello_timeout"]),
            ("tproxyd:\n  listeners:\n    - { name: s, address: \"[::]:8443\", mode: tls-passthrough, tls: { acl: { rules: [ { action: deny, sni: [\"a.*\"] } ] } } }\n", &["tproxyd.listeners[0].tls.acl.rules[0].host[0]"]),
            ("tproxyd:\n  listeners:\n    - { name: h, address: \"[::]:80\", mode: tproxy, destination: redirect }\n", &["listeners[0].destination", "tls-passthrough"]),
            ("tproxyd:\n  listeners:\n    - { name: h, address: \"[::]:80\", mode: forward, tls: {} }\n", &["listeners[0].tls", "tls-passthrough"]),
            ("tproxyd:\n  listeners: []\n", &["tproxyd.listeners"]),
            ("tproxyd:\n  listeners:\n    - { name: a, address: \"[::]:80\", mode: tproxy }\n    - { name: a, address: \"[::]:81\", mode: tproxy }\n", &["listeners[1].name", "duplicate listener name"]),
            ("tproxyd:\n  listeners:\n    - { name: a, address: \"[::]:80\", mode: tproxy }\n    - { name: b, address: \"[::]:80\", mode: redirect }\n", &["listeners[1].address", "used by another listener"]),
            ("tproxyd:\n  request_headers:\n    add: { \"Bad Name\": x }\n", &["request_headers.add.Bad Name"]),
            ("tproxyd:\n  request_headers:\n    add: { X-C: \"$client\" }\n", &["request_headers.add.X-C", "$client"]),
            ("tproxyd:\n  forwarding: { x_forwarded_for: sometimes }\n", &["tproxyd.forwarding.x_forwarded_for"]),
            ("tproxyd:\n  filters:\n    - { acl: {}, headers: {} }\n", &["tproxyd.filters[0]", "exactly one key"]),
            ("tproxyd:\n  filters:\n    - acl\n", &["tproxyd.filters[0]"]),
            ("tproxyd:\n  downstream_read_buffer: 10\n", &["tproxyd.downstream_read_buffer"]),
            ("tproxyd:\n  downstream: { read_buffer: 10 }\n", &["tproxyd.downstream.read_buffer"]),
            ("tproxyd:\n  downstream: { header_timeout: slow }\n", &["tproxyd.downstream.header_timeout", "bad duration"]),
            ("tproxyd:\n  downstream: { keepalive_timeout: 0s }\n", &["tproxyd.downstream.keepalive_timeout", "greater than zero"]),
            ("tproxyd:\n  downstream: { max_header_bytes: 100 }\n", &["tproxyd.downstream.max_header_bytes", "between"]),
            ("tproxyd:\n  downstream: { max_header_bytes: 2000000 }\n", &["tproxyd.downstream.max_header_bytes"]),
            ("tproxyd:\n  downstream: { max_connections: 0 }\n", &["tproxyd.downstream.max_connections", "at least 1"]),
            ("tproxyd:\n  downstream: { max_connections_per_client: -1 }\n", &["tproxyd.downstream.max_connections_per_client"]),
            ("tproxyd:\n  downstream: { max_conns: 5 }\n", &["tproxyd.downstream", "unknown field `max_conns`"]),
            ("tproxyd:\n  listeners:\n    - { name: f, address: \"[::]:3128\", mode: forward, intercept: { ports: [80] } }\n", &["tproxyd.listeners[0].intercept", "only applies to mode: tproxy, redirect or tls-passthrough"]),
            ("tproxyd:\n  listeners:\n    - { name: a, address: \"[::]:80\", mode: tproxy, intercept: { ports: [x] } }\n", &["tproxyd.listeners[0].intercept.ports[0]"]),
            ("tproxyd:\n  listeners:\n    - { name: a, address: \"[::]:80\", mode: tproxy, intercept: { ports: [80], ifaces: [a] } }\n", &["tproxyd.listeners[0].intercept", "unknown field `ifaces`"]),
            ("tproxyd:\n  listeners:\n    - { name: a, address: \"[::]:80\", mode: tproxy, intercept: { ports: [\"80-89\"] } }\n    - { name: b, address: \"[::]:81\", mode: redirect, intercept: { ports: [85], interfaces: [lan0] } }\n", &["tproxyd.listeners[1].intercept.ports", "port 85 is already intercepted for listener \"a\""]),
            ("tproxyd:\n  interception: { on_proxy_down: maybe }\n", &["tproxyd.interception.on_proxy_down"]),
            ("tproxyd:\n  interception: { quic: block }\n", &["tproxyd.interception.quic"]),
            ("tproxyd:\n  interception: { route_table: 255 }\n", &["tproxyd.interception.route_table", "reserved"]),
            ("tproxyd:\n  interception: { bypass: { destinations: [\"10.0.0.0/33\"] } }\n", &["tproxyd.interception.bypass.destinations[0]"]),
            ("tproxyd:\n  interception: { fwmark: 3 }\n  upstream: { mark: 0x7 }\n", &["tproxyd.upstream.mark", "interception.fwmark 0x3"]),
            ("- a\n- b\n", &["must be a YAML mapping"]),
        ];
    let mut failures = Vec::new();
    for (yaml, needles) in rows {
        match Config::from_yaml(yaml) {
            Ok(_) => failures.push(format!("accepted: {yaml:?}")),
            Err(e) => {
                let e = e.to_string();
                if let Some(n) = needles.iter().find(|n| !e.contains(*n)) {
                    failures.push(format!("{yaml:?}: {e:?} lacks {n:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
