use super::*;
use crate::addr::{ClientAddr, OrigDstAddr};
use crate::sets::Catalog;

fn acl(yaml: &str) -> Acl {
    Acl::from_yaml(
        &serde_yaml::from_str(yaml).unwrap(),
        "acl",
        &Catalog::default(),
    )
    .unwrap()
}

/// Facts of a flow; `dst` empty: not resolved yet (port 443).
fn facts<'a>(
    client: &str,
    dst: &str,
    name: Option<&'a str>,
    method: &'a str,
    path: &'a str,
) -> Facts<'a> {
    let dst: Option<OrigDstAddr> =
        (!dst.is_empty()).then(|| OrigDstAddr::new(dst.parse().unwrap()));
    Facts {
        listener: "lan",
        client: ClientAddr::new(client.parse().unwrap()),
        port: dst.map_or(443, |d| d.port()),
        dst,
        name,
        method: Some(method),
        path: Some(path),
    }
}

fn rule(o: Outcome) -> (Action, String) {
    match o {
        Outcome::Decided(v) => (v.action, v.rule.to_string()),
        Outcome::NeedsDestination => panic!("undecided"),
    }
}

#[test]
fn first_match_wins_and_all_conditions_must_match() {
    let a = acl(r#"
default: deny
rules:
  - { name: admin, action: deny, path_prefix: [/admin] }
  - { name: lan-web, action: allow, client: ["192.0.2.0/24"], dst_port: [80, "8000-8999"], method: [get, HEAD] }
  - { name: v6, action: allow, client: ["2001:db8:1::10"] }
"#);
    let d = |dst: &str, m: &str, p: &str| rule(a.decide(&facts("192.0.2.10:1", dst, None, m, p)));
    assert_eq!(
        d("198.51.100.10:80", "GET", "/x"),
        (Action::Allow, "lan-web".into())
    );
    assert_eq!(
        d("198.51.100.10:80", "GET", "/admin/x"),
        (Action::Deny, "admin".into())
    );
    assert_eq!(
        d("198.51.100.10:80", "POST", "/x"),
        (Action::Deny, "default".into())
    );
    assert_eq!(d("198.51.100.10:8080", "GET", "/").0, Action::Allow);
    assert_eq!(
        d("198.51.100.10:9000", "GET", "/"),
        (Action::Deny, "default".into())
    );
    let v6 = facts(
        "[2001:db8:1::10]:1",
        "[2001:db8:2::10]:80",
        None,
        "PUT",
        "/",
    );
    assert_eq!(rule(a.decide(&v6)), (Action::Allow, "v6".into()));
}

#[test]
fn host_patterns_match_the_name() {
    let a = acl(r#"
rules:
  - { name: exact, action: deny, host: [Example.COM] }
  - { name: wild, action: deny, host: ["*.example.org"], dst: ["198.51.100.0/24"] }
  - { name: v6lit, action: deny, sni: ["[2001:db8::1]"] }
"#);
    let d = |h: &str| {
        rule(a.decide(&facts(
            "192.0.2.10:1",
            "198.51.100.10:80",
            Some(h),
            "GET",
            "/",
        )))
        .1
    };
    assert_eq!(d("example.com"), "exact");
    assert_eq!(d("www.example.com"), "default");
    assert_eq!(d("a.b.example.org"), "wild");
    assert_eq!(d("example.org"), "default");
    assert_eq!(d("2001:db8::1"), "v6lit");
    let other = facts(
        "192.0.2.10:1",
        "203.0.113.1:80",
        Some("x.example.org"),
        "GET",
        "/",
    );
    assert_eq!(rule(a.decide(&other)).1, "default");
}

#[test]
fn a_rule_on_the_destination_waits_for_it_but_names_decide_first() {
    let a = acl(r#"
rules:
  - { name: ads, action: deny, host: ["ads.test"] }
  - { name: net, action: deny, dst: ["203.0.113.0/24"] }
"#);
    // Decided by name before any lookup.
    let named = facts("192.0.2.10:1", "", Some("ads.test"), "CONNECT", "/");
    assert_eq!(rule(a.decide(&named)).1, "ads");
    // Otherwise the destination rule needs the address.
    let other = facts("192.0.2.10:1", "", Some("www.test"), "CONNECT", "/");
    assert_eq!(a.decide(&other), Outcome::NeedsDestination);
    let resolved = facts(
        "192.0.2.10:1",
        "203.0.113.7:443",
        Some("www.test"),
        "CONNECT",
        "/",
    );
    assert_eq!(rule(a.decide(&resolved)).1, "net");
}

#[test]
fn flows_without_a_name() {
    let deny = acl("{no_name: deny, rules: [{name: n, action: deny, host: [a.test]}]}");
    let none = facts("192.0.2.10:1", "198.51.100.10:443", None, "CONNECT", "/");
    assert_eq!(rule(deny.decide(&none)), (Action::Deny, "no-name".into()));
    let allow = acl("{rules: [{name: n, action: deny, host: [a.test]}]}");
    assert_eq!(rule(allow.decide(&none)), (Action::Allow, "default".into()));
    // A set without name conditions does not care.
    let plain = acl("{no_name: deny, rules: [{name: p, action: allow, dst_port: [443]}]}");
    assert_eq!(rule(plain.decide(&none)), (Action::Allow, "p".into()));
}

#[test]
fn explain_says_why_each_rule_did_or_did_not_match() {
    let a = acl(r#"
rules:
  - { name: lan, action: deny, client: ["10.0.0.0/8"] }
  - { name: ex, action: deny, host: ["*.example.com"], dst_port: [80] }
"#);
    let f = facts(
        "192.0.2.10:1",
        "198.51.100.10:80",
        Some("www.example.com"),
        "GET",
        "/",
    );
    let t = a.explain(&f);
    assert_eq!(t.len(), 2);
    assert!(
        !t[0].matched && t[0].why[0].starts_with("- client 192.0.2.10"),
        "{t:?}"
    );
    assert!(
        t[1].matched && t[1].why.iter().all(|w| w.starts_with('+')),
        "{t:?}"
    );
    let f = facts(
        "192.0.2.10:1",
        "198.51.100.10:80",
        Some("example.com"),
        "GET",
        "/",
    );
    let t = a.explain(&f);
    assert_eq!(t.last().unwrap().rule, "default");
}

#[test]
fn bad_settings_name_the_key() {
    let e = |y: &str| {
        Acl::from_yaml(
            &serde_yaml::from_str(y).unwrap(),
            "tproxyd.filters[0].acl",
            &Catalog::default(),
        )
        .unwrap_err()
        .to_string()
    };
    assert!(e("rules: [{action: deny, client: [10.0.0.0/33]}]")
        .contains("tproxyd.filters[0].acl.rules[0].client[0]"));
    assert!(e("rules: [{action: deny, dst_port: [\"90-80\"]}]").contains("rules[0].dst_port[0]"));
    assert!(e("rules: [{action: deny, host: [\"a.*.com\"]}]").contains("rules[0].host[0]"));
    assert!(e("rules: [{action: maybe}]").contains("rules[0]"));
    assert!(e("rules: [{action: deny, path_prefix: [admin]}]").contains("path_prefix[0]"));
    assert!(e("rules: [{action: deny, colour: red}]").contains("colour"));
    assert!(e("default: perhaps").contains("default"));
    assert!(e("no_name: sometimes").contains("no_name"));
    assert!(e("rules: [{action: deny, host_set: [ads]}]")
        .contains("rules[0].host_set[0]: no set \"ads\""));
}

#[test]
fn sets_match_names_clients_and_destinations_and_say_which_entry() {
    let dir = std::env::temp_dir().join(format!("tproxyd-acl-sets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ads.txt"),
        "# list\nads.test\n0.0.0.0 tracker.test\n",
    )
    .unwrap();
    std::fs::write(dir.join("kids.txt"), "192.0.2.64/26\n").unwrap();
    std::fs::write(dir.join("bad.txt"), "203.0.113.0/24\n").unwrap();
    let yaml = format!(
        "{{ads: {{file: {d}/ads.txt}}, kids: {{file: {d}/kids.txt, format: cidrs}}, bad: {{file: {d}/bad.txt, format: cidrs}}}}",
        d = dir.display()
    );
    let sets: indexmap::IndexMap<String, crate::sets::SetSettings> =
        serde_yaml::from_str(&yaml).unwrap();
    let sets = Catalog::validate(sets, crate::sets::DEFAULT_WATCH_INTERVAL).unwrap();
    sets.load_all().unwrap();
    let rules = r#"
rules:
  - { name: kids-ads, action: deny, client_set: [kids], host_set: [ads] }
  - { name: bad-nets, action: deny, dst_set: [bad] }
"#;
    let a = Acl::from_yaml(&serde_yaml::from_str(rules).unwrap(), "acl", &sets).unwrap();
    let d = |c: &str, dst: &str, n: &str| rule(a.decide(&facts(c, dst, Some(n), "GET", "/"))).1;
    assert_eq!(
        d("192.0.2.70:1", "198.51.100.10:80", "x.ads.test"),
        "kids-ads"
    );
    let t = a.explain(&facts(
        "192.0.2.10:1",
        "198.51.100.10:80",
        Some("x.ads.test"),
        "GET",
        "/",
    ));
    assert_eq!(
        d("192.0.2.10:1", "198.51.100.10:80", "x.ads.test"),
        "default",
        "{t:?}"
    );
    assert_eq!(
        d("192.0.2.70:1", "198.51.100.10:80", "badads.test"),
        "default"
    );
    assert_eq!(d("192.0.2.10:1", "203.0.113.9:443", "www.test"), "bad-nets");
    let t = a.explain(&facts(
        "192.0.2.70:1",
        "198.51.100.10:80",
        Some("www.tracker.test"),
        "GET",
        "/",
    ));
    let why = t[0].why.join("\n");
    assert!(t[0].matched, "{t:?}");
    assert!(
        why.contains("set kids: matched by entry 192.0.2.64/26 from kids.txt:1"),
        "{why}"
    );
    assert!(
        why.contains("set ads: matched by entry tracker.test from ads.txt:3"),
        "{why}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
