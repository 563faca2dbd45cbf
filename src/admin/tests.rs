use super::server::authorized;
use super::*;
use http::HeaderValue;

fn settings(yaml: &str) -> Result<Option<Admin>, ConfigError> {
    let s: AdminSettings = serde_yaml::from_str(yaml).expect("shape");
    s.validate(["[::]:8888".parse().unwrap()])
}

fn token_file(tag: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("tproxyd-token-{tag}-{}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn defaults_are_loopback_with_flows_and_no_token() {
    let a = settings("{}").unwrap().unwrap();
    assert_eq!(a.address, "127.0.0.1:9187");
    assert!(a.flows && a.token.is_none());
    assert_eq!(a.warning(), None);
}

#[test]
fn flows_take_on_off_and_booleans() {
    for (v, on) in [
        ("on", true),
        ("off", false),
        ("true", true),
        ("false", false),
    ] {
        assert_eq!(settings(&format!("flows: {v}")).unwrap().unwrap().flows, on);
    }
    let e = serde_yaml::from_str::<AdminSettings>("flows: maybe").unwrap_err();
    assert!(e.to_string().contains("neither on nor off"), "{e}");
}

#[test]
fn the_token_is_the_files_first_line_and_never_printed() {
    let p = token_file("ok", "  s3cret \nignored\n");
    let a = settings(&format!("token_file: {}", p.display()))
        .unwrap()
        .unwrap();
    std::fs::remove_file(&p).unwrap();
    assert_eq!(a.token, Some(Token(Arc::from("s3cret"))));
    assert!(!format!("{a:?}").contains("s3cret"));
}

#[test]
fn an_unreadable_or_empty_token_file_names_its_key() {
    let e = settings("token_file: /nonexistent/token").unwrap_err();
    assert!(e.to_string().contains("tproxyd.admin.token_file"), "{e}");
    let p = token_file("empty", "\n");
    let e = settings(&format!("token_file: {}", p.display())).unwrap_err();
    std::fs::remove_file(&p).unwrap();
    assert!(e.to_string().contains("holds no token"), "{e}");
}

#[test]
fn beyond_loopback_without_a_token_is_warned_about() {
    let open = settings("address: 0.0.0.0:9187").unwrap().unwrap();
    let w = open.warning().expect("a warning");
    assert!(w.contains("token_file") && w.contains("flows: off"), "{w}");
    let p = token_file("warn", "t");
    let closed = settings(&format!(
        "address: 0.0.0.0:9187\ntoken_file: {}",
        p.display()
    ));
    std::fs::remove_file(&p).unwrap();
    assert_eq!(closed.unwrap().unwrap().warning(), None);
    assert_eq!(
        settings("address: \"[::1]:9187\"")
            .unwrap()
            .unwrap()
            .warning(),
        None
    );
}

#[test]
fn bearer_and_basic_credentials_carry_the_token() {
    let t = Token(Arc::from("s3cret"));
    let ok = |v: &str| authorized(&t, Some(&HeaderValue::from_str(v).unwrap()));
    assert!(ok("Bearer s3cret"));
    assert!(ok("bearer  s3cret "));
    // "any:s3cret"
    assert!(ok("Basic YW55OnMzY3JldA=="));
    assert!(!ok("Bearer s3cre"));
    assert!(!ok("Bearer s3crett"));
    // "any:nope"
    assert!(!ok("Basic YW55Om5vcGU="));
    assert!(!ok("Basic !!!"));
    assert!(!ok("Token s3cret"));
    assert!(!authorized(&t, None));
}
