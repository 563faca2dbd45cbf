use super::*;

fn egresses(yaml: &str) -> Result<Egresses, ConfigError> {
    Egresses::validate(serde_yaml::from_str(yaml).unwrap())
}

#[test]
fn kinds_and_their_keys() {
    let dir = std::env::temp_dir().join(format!("tproxyd-egress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pw"), "s3cret\nignored\n").unwrap();
    let e = egresses(&format!(
        "{{vpn: {{via: direct, interface: wg0, mark: \"0x20\"}}, corp: {{via: http, address: \"proxy.corp:3128\", username: gw, password_file: {}/pw}}, s: {{via: socks5, address: \"[2001:db8::1]:1080\", fallback: direct}}}}",
        dir.display()
    ))
    .unwrap();
    assert_eq!(e.all().len(), 4);
    assert_eq!(&*e.direct().name, "direct");
    let vpn = e.get("vpn", "k").unwrap();
    assert_eq!(
        vpn.via,
        Via::Direct {
            interface: Some("wg0".into()),
            mark: Some(0x20)
        }
    );
    assert!(!vpn.is_proxy() && !vpn.is_plain_direct());
    let corp = e.get("corp", "k").unwrap();
    let Via::Http(addr, Some(c)) = &corp.via else {
        panic!("{corp:?}")
    };
    assert_eq!(
        (addr.to_string(), c.password.as_str()),
        ("proxy.corp:3128".into(), "s3cret")
    );
    assert!(
        !format!("{corp:?}").contains("s3cret"),
        "a password is never shown"
    );
    let s = e.get("s", "k").unwrap();
    assert_eq!(s.fallback, Fallback::Direct);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_name_the_key() {
    let e = |y: &str| egresses(y).unwrap_err().to_string();
    assert!(e("{direct: {via: direct}}").contains("tproxyd.egress.direct"));
    assert!(e("{p: {via: http}}").contains("tproxyd.egress.p.address"));
    assert!(e("{p: {via: http, address: nohost}}").contains("is not HOST:PORT"));
    assert!(e("{p: {via: socks5, address: \"a:1\", interface: eth0}}")
        .contains("tproxyd.egress.p.interface: only applies to via: direct"));
    assert!(e("{p: {via: direct, address: \"a:1\"}}")
        .contains("tproxyd.egress.p.address: only applies to via: http or socks5"));
    assert!(e("{p: {via: http, address: \"a:1\", username: u}}")
        .contains("tproxyd.egress.p.password_file"));
    assert!(
        e("{p: {via: http, address: \"a:1\", username: u, password_file: /nonexistent}}")
            .contains("cannot read /nonexistent")
    );
    assert!(e("{p: {via: direct, fallback: direct}}").contains("tproxyd.egress.p.fallback"));
    assert!(e("{p: {via: direct, mark: 0}}").contains("tproxyd.egress.p.mark"));
    assert!(egresses("{}")
        .unwrap()
        .get("nope", "tproxyd.routes[0].egress")
        .unwrap_err()
        .to_string()
        .contains("tproxyd.routes[0].egress: no egress \"nope\""));
}

#[test]
fn a_v6_literal_is_bracketed_for_a_parent() {
    let r = open::Remote {
        name: Some("2001:db8::1".into()),
        addr: None,
        port: 443,
    };
    assert_eq!(r.authority(), "[2001:db8::1]:443");
}

#[tokio::test]
async fn a_parent_that_never_answers_is_given_up_within_the_connect_timeout() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    // Accepts, then says nothing at all.
    let _silent = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        drop(s);
    });
    let settings: indexmap::IndexMap<String, EgressSettings> =
        serde_yaml::from_str(&format!("{{p: {{via: http, address: \"{addr}\"}}}}")).unwrap();
    let e = Egresses::validate(settings).unwrap().get("p", "k").unwrap();
    let conf = crate::upstream::Upstream {
        connect_timeout: std::time::Duration::from_millis(200),
        ..crate::upstream::Upstream::default()
    };
    let target = open::Remote {
        name: Some("www.example.org".into()),
        addr: None,
        port: 443,
    };
    let started = std::time::Instant::now();
    let r = open::open(&e, &target, None, &conf).await;
    assert!(
        matches!(r, Err(open::EgressError::Unreachable(_))),
        "{:?}",
        r.err()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}
