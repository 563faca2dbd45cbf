//! The rule that keeps the library's modules in layers (README "Layout"):
//! a module imports only from modules before it in this order, so no
//! import points upward and there is no cycle. Doc comments and test code
//! are not imports and are left out.

use std::collections::BTreeMap;
use std::path::Path;

/// Bottom to top, as in `src/lib.rs` and the README.
#[rustfmt::skip]
const ORDER: &[&str] = &[
    // bottom: nothing of the crate
    "error", "flow", "addr",
    // components
    "lifecycle", "signals", "metrics", "access_log", "relay", "upstream", "destination", "filters", "tls",
    "downstream", "admin", "interception",
    // request path
    "admission", "summary", "listener", "transparent", "shared",
    // apps
    "forward", "passthrough", "proxy",
    // top
    "config", "rules", "doctor", "cli", "app",
];

const BOTTOM: &[&str] = &["error", "flow", "addr"];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
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
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
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
fn modules_import_only_downward() {
    let pos = |m: &str| ORDER.iter().position(|o| *o == m);
    let mut wrong = Vec::new();
    for (module, deps) in imports() {
        let Some(at) = pos(&module) else {
            wrong.push(format!(
                "{module} is not placed in a layer (add it to ORDER and the README)"
            ));
            continue;
        };
        for dep in deps {
            match pos(&dep) {
                None => wrong.push(format!("{module} uses {dep}, which has no layer")),
                Some(d) if d > at => {
                    wrong.push(format!("{module} imports {dep}, which is above it"))
                }
                Some(_) if BOTTOM.contains(&module.as_str()) => {
                    wrong.push(format!("{module} is a bottom module but imports {dep}"))
                }
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
