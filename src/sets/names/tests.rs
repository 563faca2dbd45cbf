use super::*;

fn set(names: &[&str]) -> NameSet {
    let keys: Vec<Vec<u8>> = names
        .iter()
        .map(|n| reversed(n, &mut [0; KEY_MAX]).unwrap().to_vec())
        .collect();
    let mut s = NameSet::default();
    for k in &keys {
        s.insert_key(k);
    }
    s.drop_covered(keys.iter().map(Vec::as_slice));
    s
}

#[test]
fn covers_subdomains_on_label_boundaries_only() {
    let s = set(&["example.com", "ads.test", "b.c.d"]);
    assert!(s.contains("example.com"));
    assert!(s.contains("a.example.com"));
    assert!(s.contains("x.y.example.com"));
    assert!(!s.contains("badexample.com"));
    assert!(!s.contains("com"));
    assert!(!s.contains("example.co"));
    assert!(!s.contains("c.d"));
    assert!(s.contains("a.b.c.d"));
    assert!(!s.contains(""));
    assert_eq!(s.entry("www.example.com").as_deref(), Some("example.com"));
    assert_eq!(s.entry("b.c.d").as_deref(), Some("b.c.d"));
    assert_eq!(s.entry("c.d"), None);
    assert_eq!(s.len(), 3);
}

#[test]
fn names_under_a_listed_parent_are_dropped_whatever_the_order() {
    let s = set(&[
        "a.example.com",
        "x.y.example.com",
        "example.com",
        "y.example.com",
        "b.test",
    ]);
    assert_eq!(s.len(), 2);
    assert_eq!(s.entry("q.x.y.example.com").as_deref(), Some("example.com"));
    assert!(s.contains("b.test") && !s.contains("test"));
}

#[test]
fn many_names_each_found_and_their_neighbours_not() {
    let names: Vec<String> = (0..20_000)
        .map(|i| format!("n{i}.l{}.test", i % 7))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let s = set(&refs);
    assert_eq!(s.len(), 20_000);
    for i in 0..20_000 {
        assert!(s.contains(&format!("n{i}.l{}.test", i % 7)));
        assert!(s.contains(&format!("x.n{i}.l{}.test", i % 7)));
        assert!(!s.contains(&format!("n{i}.l{}.test", (i + 1) % 7)));
        assert!(!s.contains(&format!("xn{i}.l{}.test", i % 7)));
    }
}

#[test]
fn reversal() {
    let mut b = [0; KEY_MAX];
    assert_eq!(
        reversed("a.example.com", &mut b).unwrap(),
        b"com.example.a."
    );
    assert_eq!(reversed(&"a".repeat(254), &mut b), None);
    let long = format!("{}.{}", "a".repeat(126), "b".repeat(126));
    assert_eq!(reversed(&long, &mut b).unwrap().len(), 254);
}
