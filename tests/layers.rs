//! The rule that keeps the library's modules in layers: a module imports
//! only from modules listed before it in `src/lib.rs`'s module docs, so no
//! import points upward and there is no cycle. The order is read from
//! those docs (the numbered list of layers and the [`module`] links in
//! it), so the docs and this check cannot drift apart. Doc comments and
//! test code are not imports and are left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The modules in the order `src/lib.rs`'s docs list them: the [`name`]
/// links of the numbered layer items, in order.
fn order() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut out = Vec::new();
    let mut in_list = false;
    for line in lib.lines().take_while(|l| l.starts_with("//!")) {
        let text = line.trim_start_matches("//!").trim();
        let item = text
            .split_once(". **")
            .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()));
        if item {
            in_list = true;
        } else if text.is_empty() {
            in_list = false;
        }
        if !in_list {
            continue;
        }
        for part in text.split("[`").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '`').collect();
            if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                out.push(name);
            }
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules each top-level module uses, from its code.
fn imports() -> BTreeMap<String, Vec<String>> {
    let src = src();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        if rel.ends_with("/tests.rs") {
            continue;
        }
        let top = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for part in line.split("crate::").skip(1) {
                let m: String = part
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if m != top && !m.is_empty() {
                    map.entry(top.clone()).or_default().push(m);
                }
            }
        }
    }
    map
}

#[test]
fn the_documented_order_lists_every_module_once() {
    let order = order();
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let mut missing: Vec<&str> = declared
        .iter()
        .copied()
        .filter(|m| !order.iter().any(|o| o == m))
        .collect();
    missing.sort_unstable();
    assert!(
        missing.is_empty(),
        "not placed in a layer in src/lib.rs: {missing:?}"
    );
    let mut sorted = order.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        order.len(),
        "a module is listed twice: {order:?}"
    );
}

#[test]
fn modules_import_only_downward() {
    let order = order();
    let pos = |m: &str| order.iter().position(|o| o == m);
    let mut wrong = Vec::new();
    for (module, deps) in imports() {
        let Some(at) = pos(&module) else {
            wrong.push(format!("{module} is not placed in a layer in src/lib.rs"));
            continue;
        };
        for dep in deps {
            match pos(&dep) {
                None => wrong.push(format!("{module} uses {dep}, which has no layer")),
                Some(d) if d > at => {
                    wrong.push(format!("{module} imports {dep}, which is listed after it"))
                }
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
