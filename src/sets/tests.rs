use super::*;

fn catalog(yaml: &str) -> Result<Catalog, ConfigError> {
    let sets: indexmap::IndexMap<String, SetSettings> = serde_yaml::from_str(yaml).unwrap();
    Catalog::validate(sets, DEFAULT_WATCH_INTERVAL)
}

#[test]
fn references_are_checked_by_name_and_kind() {
    let c = catalog("{ads: {file: /x/ads.txt}, lan: {file: /x/lan.txt, format: cidrs}}").unwrap();
    assert_eq!(c.get("ads", SetKind::Names, "k").unwrap().name, "ads");
    let e = c
        .get("lan", SetKind::Names, "rules[0].host_set[0]")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rules[0].host_set[0]") && e.contains("does not hold names"),
        "{e}"
    );
    let e = c
        .get("nope", SetKind::Addresses, "k")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no set \"nope\"") && e.contains("known: ads, lan"),
        "{e}"
    );
    let e = catalog("{a: {file: /x, max_entries: 0}}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tproxyd.sets.a.max_entries"), "{e}");
    let e = catalog("{\"a b\": {file: /x}}").unwrap_err().to_string();
    assert!(e.contains("tproxyd.sets.a b"), "{e}");
}

#[test]
fn a_failed_load_keeps_the_set_and_start_up_names_the_key() {
    let dir = std::env::temp_dir().join(format!("tproxyd-slot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ads.txt");
    std::fs::write(&file, "ads.test\n").unwrap();
    let c = catalog(&format!("{{ads: {{file: {}}}}}", file.display())).unwrap();
    c.load_all().unwrap();
    let slot = &c.slots()[0];
    assert!(slot.contains_name("x.ads.test"));
    assert_eq!(
        slot.find(Some("x.ads.test"), None),
        Some(Found {
            entry: "ads.test".into(),
            at: "ads.txt:1".into()
        })
    );
    std::fs::write(&file, "# emptied\n").unwrap();
    assert!(slot.load().unwrap_err().contains("no valid entry"));
    assert!(slot.contains_name("x.ads.test"), "the previous set stays");
    std::fs::remove_file(&file).unwrap();
    let e = c.load_all().unwrap_err().to_string();
    assert!(e.contains("tproxyd.sets.ads.file"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
