//! `tproxyd explain` and `tproxyd check` on a policy with sets: no root,
//! no traffic. explain says which rule of which rule set decides a flow,
//! with the entry and line of the list that matched, and exits 0 for an
//! allowed flow, 1 for a denied one; check reports each set's entries and
//! its skipped lines by file and line.

mod harness;

use harness::*;
use std::path::Path;
use std::process::Command;

fn setup(dir: &Path) -> std::path::PathBuf {
    std::fs::write(
        dir.join("ads.txt"),
        "# ads\nads.test\nbad line here\n0.0.0.0 tracker.test\n",
    )
    .unwrap();
    std::fs::write(dir.join("kids.txt"), "192.0.2.64/26\n").unwrap();
    let d = dir.display();
    let yaml = format!(
        r#"tproxyd:
  admin: {{ enabled: false }}
  sets:
    ads: {{ file: {d}/ads.txt }}
    kids: {{ file: {d}/kids.txt, format: cidrs }}
  listeners:
    - {{ name: lan-http, address: "[::]:18888", mode: tproxy, intercept: {{ ports: [80] }} }}
    - name: lan-tls
      address: "[::]:18443"
      mode: tls-passthrough
      intercept: {{ ports: [443] }}
      tls: {{ acl: {{ rules: [ {{ name: tls-ads, action: deny, host_set: [ads] }} ] }} }}
  filters:
    - acl:
        rules:
          - {{ name: kids-ads, action: deny, client_set: [kids], host_set: [ads] }}
          - {{ name: admin, action: deny, path_prefix: [/admin] }}
"#
    );
    let path = dir.join("tproxyd.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn explain(conf: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(tproxyd_bin())
        .arg("explain")
        .arg("-c")
        .arg(conf)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn explain_says_which_rule_and_entry_decide() {
    let dir = TempDir::new("explain");
    let conf = setup(&dir.0);
    let (code, text) = explain(
        &conf,
        &[
            "--client",
            "192.0.2.70",
            "--dst",
            "198.51.100.10:80",
            "--host",
            "www.tracker.test",
        ],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("flow: http on listener lan-http"), "{text}");
    assert!(text.contains("rule kids-ads (deny): matched"), "{text}");
    assert!(
        text.contains("set kids: matched by entry 192.0.2.64/26 from kids.txt:1"),
        "{text}"
    );
    assert!(
        text.contains("set ads: matched by entry tracker.test from ads.txt:4"),
        "{text}"
    );
    assert!(
        text.contains("decision: deny (acl:deny:kids-ads)"),
        "{text}"
    );
    // Another client: the same name is allowed, and each rule says why not.
    let (code, text) = explain(
        &conf,
        &[
            "--client",
            "192.0.2.10",
            "--dst",
            "198.51.100.10:80",
            "--host",
            "www.tracker.test",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("rule kids-ads (deny): not matched"), "{text}");
    assert!(
        text.contains("- client 192.0.2.10 in sets [kids]"),
        "{text}"
    );
    assert!(text.contains("rule admin (deny): not matched"), "{text}");
    assert!(
        text.contains("decision: allow (acl:allow:default), to 198.51.100.10:80"),
        "{text}"
    );
    // By SNI on port 443: the passthrough listener's own rule set.
    let (code, text) = explain(
        &conf,
        &[
            "--client",
            "192.0.2.10",
            "--dst",
            "198.51.100.10:443",
            "--sni",
            "a.ads.test",
        ],
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("flow: passthrough on listener lan-tls"),
        "{text}"
    );
    assert!(text.contains("decision: deny (acl:deny:tls-ads)"), "{text}");
    // A bad question is neither allowed nor denied.
    let (code, text) = explain(&conf, &["--client", "nobody", "--dst", "198.51.100.10:80"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--client \"nobody\""), "{text}");
}

#[test]
fn check_reports_each_set_and_its_skipped_lines() {
    let dir = TempDir::new("check-sets");
    let conf = setup(&dir.0);
    let out = Command::new(tproxyd_bin())
        .arg("check")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("set ads: 2 entries from"), "{text}");
    assert!(text.contains("1 lines skipped"), "{text}");
    assert!(text.contains("ads.txt:3: more than one word"), "{text}");
    assert!(text.contains("set kids: 1 entries"), "{text}");
    // A missing list stops start-up, naming its key.
    std::fs::remove_file(dir.0.join("kids.txt")).unwrap();
    let out = Command::new(tproxyd_bin())
        .arg("check")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("tproxyd.sets.kids.file"), "{err}");
}

#[test]
fn check_warns_that_spoofing_does_not_apply_through_a_proxy() {
    let dir = TempDir::new("check-spoof");
    let yaml = r#"tproxyd:
  admin: { enabled: false }
  listeners:
    - { name: lan-http, address: "[::]:18888", mode: tproxy, spoof_source: true }
  egress:
    corp: { via: http, address: "192.0.2.1:3128" }
  routes:
    - { egress: corp, host: ["*.corp.test"] }
"#;
    let conf = dir.0.join("tproxyd.yaml");
    std::fs::write(&conf, yaml).unwrap();
    let out = Command::new(tproxyd_bin())
        .arg("check")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning: listener lan-http spoofs the client's address")
            && text.contains("corp"),
        "{text}"
    );
    // explain names the route and the egress.
    let (code, text) = explain(
        &conf,
        &[
            "--client",
            "192.0.2.10",
            "--dst",
            "198.51.100.10:80",
            "--host",
            "www.corp.test",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("route #0 (egress corp): matched"), "{text}");
    assert!(text.contains("through egress corp (route #0)"), "{text}");
}
