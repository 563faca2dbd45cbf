use super::*;
use crate::filters::forwarding::ForwardingSettings;
use crate::flow::{Mode, Refusal};
use crate::policy::Routes;
use std::time::Duration;

fn decider() -> Decider {
    let guard = LoopGuard::new([
        "[::]:8888".parse().unwrap(),
        "192.0.2.1:9999".parse().unwrap(),
    ]);
    let fwd = ForwardingSettings::default().validate(None).unwrap();
    Decider::new(guard, Arc::new(fwd))
}

fn id(mode: Mode) -> ListenerId {
    ListenerId {
        name: "lan".into(),
        mode,
    }
}

fn forward_policy() -> ForwardPolicy {
    let clients = ["192.0.2.0/24".to_string()];
    let keys = forward::ForwardKeys {
        allow_clients: Some(&clients),
        connect_ports: Some(&[443]),
        allow_local_destinations: None,
    };
    keys.validate("l", Duration::from_secs(1)).unwrap()
}

fn req(method: &str, target: &str, via: Option<&str>) -> RequestHeader {
    let mut r = RequestHeader::build(method, target.as_bytes(), None).unwrap();
    if let Some(v) = via {
        r.append_header("Via", v).unwrap();
    }
    r
}

fn client(s: &str) -> Option<ClientAddr> {
    Some(ClientAddr::new(s.parse().unwrap())).filter(|c| !c.ip().is_unspecified())
}

fn orig(s: &str) -> Target<'static> {
    Target::Original(Some(OrigDstAddr::new(s.parse().unwrap())))
}

/// The decision as (destination, by) or (status, refusal, by).
type Got = Result<(String, Option<String>), (u16, Option<Refusal>, Option<String>)>;

fn run(rules: Rules<'_>, flow: &Flow<'_>) -> Got {
    match futures::executor::block_on(decider().decide(rules, flow)) {
        Decision::Allow(a) => Ok((
            a.dst.map_or("(name)".into(), |d| d.to_string()),
            a.by.map(|b| b.to_string()),
        )),
        Decision::Deny { answer, by } => {
            Err((answer.status, answer.refusal, by.map(|b| b.to_string())))
        }
    }
}

fn flow<'a>(
    kind: FlowKind,
    c: &str,
    target: Target<'a>,
    request: Option<&'a RequestHeader>,
) -> Flow<'a> {
    Flow {
        kind,
        client: client(c),
        target,
        name: None,
        request,
        hello: None,
    }
}

/// One row: name, listener mode, forward policy?, flow, expected.
type Row<'a> = (
    &'a str,
    Mode,
    bool,
    Flow<'a>,
    Result<&'a str, (u16, Option<Refusal>)>,
);

#[test]
fn admission_rows() {
    let p = forward_policy();
    let get = req("GET", "/", None);
    let our_via = req("GET", "/", Some("1.0 a, 1.1 tproxyd"));
    let squid_via = req("GET", "/", Some("1.1 squid"));
    let connect = req("CONNECT", "x:443", None);
    let fwd_get = req("GET", "http://x/", None);
    let named = |host, port| Target::Named { host, port };
    let loop_508 = Err((508, Some(Refusal::Loop)));
    let fwd_403 = Err((403, Some(Refusal::ForwardNotAllowed)));
    use FlowKind::*;
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("transparent ok", Mode::Tproxy, false, flow(Http, "192.0.2.10:1", orig("198.51.100.10:80"), Some(&get)), Ok("198.51.100.10:80")),
        ("no destination", Mode::Redirect, false, flow(Http, "192.0.2.10:1", Target::Original(None), Some(&get)), loop_508),
        ("own listener, loopback", Mode::Tproxy, false, flow(Http, "192.0.2.10:1", orig("127.0.0.1:8888"), Some(&get)), loop_508),
        ("own listener, exact", Mode::Tproxy, false, flow(Tunnel, "192.0.2.10:1", orig("192.0.2.1:9999"), None), loop_508),
        ("same port elsewhere", Mode::Tproxy, false, flow(Tunnel, "192.0.2.10:1", orig("198.51.100.2:8888"), None), Ok("198.51.100.2:8888")),
        ("our Via token", Mode::Tproxy, false, flow(Http, "192.0.2.10:1", orig("198.51.100.10:80"), Some(&our_via)), loop_508),
        ("another proxy's Via", Mode::Tproxy, false, flow(Http, "192.0.2.10:1", orig("198.51.100.10:80"), Some(&squid_via)), Ok("198.51.100.10:80")),
        ("forward, stranger", Mode::Forward, true, flow(Connect, "203.0.113.5:1", named("198.51.100.10", 443), Some(&connect)), fwd_403),
        ("forward, CONNECT ok", Mode::Forward, true, flow(Connect, "192.0.2.10:1", named("198.51.100.10", 443), Some(&connect)), Ok("198.51.100.10:443")),
        ("forward, CONNECT port", Mode::Forward, true, flow(Connect, "192.0.2.10:1", named("198.51.100.10", 80), Some(&connect)), fwd_403),
        ("forward, a local destination", Mode::Forward, true, flow(Forward, "192.0.2.10:1", named("127.0.0.1", 80), Some(&fwd_get)), fwd_403),
        ("forward, GET ok on any port", Mode::Forward, true, flow(Forward, "192.0.2.10:1", named("198.51.100.10", 8080), Some(&fwd_get)), Ok("198.51.100.10:8080")),
        ("forward, no client address", Mode::Forward, true, flow(Connect, "0.0.0.0:0", named("198.51.100.10", 443), None), fwd_403),
        ("forward, v4-mapped literal", Mode::Forward, true, flow(Forward, "192.0.2.10:1", named("::ffff:198.51.100.10", 80), Some(&fwd_get)), Ok("198.51.100.10:80")),
    ];
    let mut failures = Vec::new();
    for (name, mode, forward, flow, want) in rows {
        let listener = id(mode);
        let rules = Rules {
            listener: &listener,
            forward: forward.then_some(&p),
            tls: None,
            acls: &[],
            routes: &Routes::default(),
        };
        let got = run(rules, &flow)
            .map(|(d, _)| d)
            .map_err(|(s, r, _)| (s, r));
        let want = want.map(str::to_string);
        if got != want {
            failures.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn acl(yaml: &str) -> Acl {
    Acl::from_yaml(
        &serde_yaml::from_str(yaml).unwrap(),
        "acl",
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn rule_sets_decide_by_name_before_any_lookup() {
    let p = forward_policy();
    let listener = id(Mode::Forward);
    let acls = [acl(
        "{rules: [{name: ads, action: deny, host: [\"*.ads.test\"]}]}",
    )];
    let rules = Rules {
        listener: &listener,
        forward: Some(&p),
        tls: None,
        acls: &acls,
        routes: &Routes::default(),
    };
    let connect = req("CONNECT", "x.ads.test:443", None);
    // A name that could never resolve is refused by name: 403, not 502.
    let mut f = flow(
        FlowKind::Connect,
        "192.0.2.10:1",
        Target::Named {
            host: "x.ads.test.invalid",
            port: 443,
        },
        Some(&connect),
    );
    f.name = Some("x.ads.test");
    assert_eq!(
        run(rules, &f),
        Err((403, Some(Refusal::Acl), Some("acl:deny:ads".into())))
    );
    // Allowed by default, then resolved (a literal here: no DNS).
    f.target = Target::Named {
        host: "198.51.100.10",
        port: 443,
    };
    f.name = Some("www.test");
    assert_eq!(
        run(rules, &f),
        Ok(("198.51.100.10:443".into(), Some("acl:allow:default".into())))
    );
}

#[test]
fn passthrough_hellos() {
    let listener = id(Mode::TlsPassthrough);
    let settings: serde_yaml::Value = serde_yaml::from_str(
        "{missing_sni: deny, ech: deny, sni_check: deny, acl: {rules: [{name: social, action: deny, sni: [\"*.social.test\"]}]}}",
    )
    .unwrap();
    let sets = Default::default();
    let tls =
        TlsPolicy::from_settings(Some(&settings), "t", Duration::from_secs(1), &sets).unwrap();
    let rules = Rules {
        listener: &listener,
        forward: None,
        tls: Some(&tls),
        acls: tls.acl.as_slice(),
        routes: &Routes::default(),
    };
    let hello = |sni: Option<&str>, ech: bool| ClientHello {
        sni: sni.map(str::to_string),
        ech,
        ..Default::default()
    };
    let decide = |h: Option<&ClientHello>| {
        let mut f = flow(
            FlowKind::Passthrough,
            "192.0.2.10:1",
            orig("198.51.100.10:443"),
            None,
        );
        f.hello = h;
        f.name = h.and_then(|h| h.sni.as_deref());
        run(rules, &f)
    };
    let denied = |by: &str| Err((403, Some(Refusal::TlsPolicy), Some(by.to_string())));
    assert_eq!(
        decide(Some(&hello(Some("www.social.test"), false))),
        Err((403, Some(Refusal::Acl), Some("acl:deny:social".into())))
    );
    assert_eq!(
        decide(Some(&hello(None, false))),
        denied("missing_sni:deny")
    );
    assert_eq!(
        decide(Some(&hello(Some("www.lab.test"), true))),
        denied("ech:deny")
    );
    assert_eq!(decide(None), denied("non_tls:deny"));
    // A literal SNI is checked against the destination without DNS.
    assert_eq!(
        decide(Some(&hello(Some("198.51.100.99"), false))),
        denied("sni_check:deny")
    );
    assert_eq!(
        decide(Some(&hello(Some("198.51.100.10"), false))),
        Ok(("198.51.100.10:443".into(), Some("acl:allow:default".into())))
    );
}

#[test]
fn a_route_to_a_parent_leaves_the_name_unresolved() {
    let p = forward_policy();
    let listener = id(Mode::Forward);
    let dir = std::env::temp_dir().join(format!("tproxyd-route-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pw"), "secret\n").unwrap();
    let egress = format!(
        "{{corp: {{via: http, address: \"192.0.2.1:3128\", username: gw, password_file: {d}/pw}}, \
          back: {{via: socks5, address: \"192.0.2.1:1080\", fallback: direct}}}}",
        d = dir.display()
    );
    let egresses =
        crate::egress::Egresses::validate(serde_yaml::from_str(&egress).unwrap()).unwrap();
    let routes: Vec<crate::policy::RouteSettings> = serde_yaml::from_str(
        "[{name: work, egress: corp, host: [\"*.corp.test\"]}, {name: b, egress: back, host: [\"*.back.test\"]}]",
    )
    .unwrap();
    let routes = Routes::validate(routes, &egresses, &Default::default()).unwrap();
    let rules = Rules {
        listener: &listener,
        forward: Some(&p),
        tls: None,
        acls: &[],
        routes: &routes,
    };
    let connect = req("CONNECT", "x:443", None);
    let decide = |host: &'static str| {
        let mut f = flow(
            FlowKind::Connect,
            "192.0.2.10:1",
            Target::Named { host, port: 443 },
            Some(&connect),
        );
        f.name = Some(host);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        match rt.block_on(decider().decide(rules, &f)) {
            Decision::Allow(a) => (
                a.dst.map(|d| d.to_string()),
                a.egress.name.to_string(),
                a.route,
            ),
            Decision::Deny { answer, .. } => panic!("{host}: {answer:?}"),
        }
    };
    // Through the parent: never looked up here (it would not resolve).
    assert_eq!(
        decide("www.corp.test"),
        (None, "corp".into(), Some("work".into()))
    );
    // A parent that may fall back: tried, and a failed lookup is no refusal.
    assert_eq!(
        decide("nowhere.back.test"),
        (None, "back".into(), Some("b".into()))
    );
    // No route: direct, looked up (a literal needs no DNS).
    assert_eq!(
        decide("198.51.100.7"),
        (Some("198.51.100.7:443".into()), "direct".into(), None)
    );
    // Through a parent, this host stays out of reach: an address literal
    // is checked as for a direct flow, and localhost refused.
    let all = serde_yaml::from_str("[{egress: corp}]").unwrap();
    let all = Routes::validate(all, &egresses, &Default::default()).unwrap();
    let rules = Rules {
        routes: &all,
        ..rules
    };
    for host in ["127.0.0.1", "localhost", "a.localhost"] {
        let target = Target::Named { host, port: 443 };
        let mut f = flow(FlowKind::Connect, "192.0.2.10:1", target, Some(&connect));
        f.name = Some(host);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        match rt.block_on(decider().decide(rules, &f)) {
            Decision::Deny { answer, .. } => {
                assert_eq!(answer.refusal, Some(Refusal::ForwardNotAllowed), "{host}")
            }
            Decision::Allow(a) => panic!("{host} allowed through {}", a.egress.name),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_early_check_and_the_decision_agree() {
    let listener = id(Mode::TlsPassthrough);
    let routes = Routes::default();
    let rules = Rules {
        listener: &listener,
        forward: None,
        tls: None,
        acls: &[],
        routes: &routes,
    };
    let via = req("GET", "/", Some("1.1 tproxyd"));
    let cases = [
        flow(
            FlowKind::Passthrough,
            "192.0.2.10:1",
            orig("127.0.0.1:8888"),
            None,
        ),
        flow(
            FlowKind::Passthrough,
            "192.0.2.10:1",
            Target::Original(None),
            None,
        ),
        flow(
            FlowKind::Http,
            "192.0.2.10:1",
            orig("198.51.100.10:80"),
            Some(&via),
        ),
        flow(
            FlowKind::Passthrough,
            "192.0.2.10:1",
            orig("198.51.100.10:443"),
            None,
        ),
    ];
    let d = decider();
    for f in &cases {
        let early = d
            .admit(rules, f)
            .err()
            .map(|e| e.split().0.err().map(|a| a.status));
        let full = match futures::executor::block_on(d.decide(rules, f)) {
            Decision::Deny { answer, .. } if answer.refusal == Some(Refusal::Loop) => {
                Some(Some(answer.status))
            }
            _ => None,
        };
        assert_eq!(early, full, "{f:?}");
    }
}
