use super::*;
use std::io::Write;

/// A file in a fresh temporary directory, removed with it.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str, bytes: &[u8]) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tproxyd-sets-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

fn names(c: &Contents) -> &NameSet {
    match c {
        Contents::Names(n) => n,
        Contents::Cidrs(_) => panic!("not names"),
    }
}

#[test]
fn a_list_loads_with_its_bad_lines_counted_and_named() {
    let f = Scratch::new(
        "mixed.txt",
        b"# ads\r\nexample.com\r\n*.tracker.test\nbad name here\n0.0.0.0 a.hosts.test\n||b.adblock.test^\nx##y\nsub.example.com\nexample.com\n",
    );
    let (c, r) = load(&f.0, Format::Auto, 100).unwrap();
    let s = names(&c);
    // sub.example.com is under example.com; the duplicate folds away.
    assert_eq!(r.entries, 4, "{r:?}");
    assert_eq!(s.len(), 4);
    assert!(s.contains("www.tracker.test") && s.contains("a.hosts.test"));
    assert!(s.contains("b.adblock.test") && !s.contains("adblock.test"));
    assert_eq!(s.entry("sub.example.com").as_deref(), Some("example.com"));
    assert_eq!(line_of(&f.0, Format::Auto, "example.com"), Some(2));
    assert_eq!(line_of(&f.0, Format::Auto, "b.adblock.test"), Some(6));
    assert_eq!(line_of(&f.0, Format::Auto, "unlisted.test"), None);
    assert_eq!(r.skipped, 2);
    assert_eq!(r.bad[0].0, 4);
    assert_eq!(r.bad[1], (7, "not a host name"));
}

#[test]
fn hostile_files_fail_or_load_within_bounds() {
    // A line without end, longer than any real one: the load fails.
    let mut long = b"example.com\n".to_vec();
    long.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
    let f = Scratch::new("long.txt", &long);
    let e = load(&f.0, Format::Domains, 100).unwrap_err();
    assert!(e.contains("line 2 is longer than 65536 bytes"), "{e}");
    // NUL bytes and invalid UTF-8 are bad lines, nothing more.
    let f = Scratch::new("bytes.txt", b"ok.test\nnul\0.test\n\xff\xfe.test\n");
    let (_, r) = load(&f.0, Format::Domains, 100).unwrap();
    assert_eq!((r.entries, r.skipped), (1, 2));
    // A million copies of one name are one entry, within a small limit.
    let dup = "same.test\n".repeat(1_000_000);
    let f = Scratch::new("dup.txt", dup.as_bytes());
    let (c, r) = load(&f.0, Format::Domains, 10).unwrap();
    assert_eq!((r.entries, names(&c).len()), (1, 1));
    // Over max_entries: the load fails.
    let many: String = (0..50).map(|i| format!("n{i}.test\n")).collect();
    let f = Scratch::new("many.txt", many.as_bytes());
    let e = load(&f.0, Format::Domains, 10).unwrap_err();
    assert!(e.contains("max_entries (10)"), "{e}");
    // Nothing valid, or nothing at all: a failure, not an empty set.
    let f = Scratch::new("none.txt", b"# only comments\n\n");
    assert!(load(&f.0, Format::Domains, 10)
        .unwrap_err()
        .contains("no valid entry"));
    let e = load(&f.0.with_file_name("missing.txt"), Format::Domains, 10).unwrap_err();
    assert!(e.contains("No such file"), "{e}");
}

#[test]
fn cidr_lists() {
    let f = Scratch::new("nets.txt", b"10.0.0.0/8\n# c\n2001:db8::/32\nnot-a-net\n");
    let (c, r) = load(&f.0, Format::Cidrs, 10).unwrap();
    let Contents::Cidrs(s) = c else { panic!() };
    assert_eq!((r.entries, r.skipped), (2, 1));
    assert!(s.contains("10.2.3.4".parse().unwrap()));
    assert!(!s.contains("11.0.0.1".parse().unwrap()));
    // Duplicates fold away; distinct entries over the limit fail.
    let f = Scratch::new("nets2.txt", "10.0.0.1\n".repeat(20).as_bytes());
    assert_eq!(load(&f.0, Format::Cidrs, 10).unwrap().1.entries, 1);
    let many: String = (0..20).map(|i| format!("10.0.0.{i}\n")).collect();
    let f = Scratch::new("nets3.txt", many.as_bytes());
    assert!(load(&f.0, Format::Cidrs, 10)
        .unwrap_err()
        .contains("max_entries"));
}
