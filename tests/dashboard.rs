//! The Grafana dashboard (`dist/grafana/tproxyd.json`) and the alert rules
//! (`conf/tproxyd-alerts.yml`) against a real Prometheus (Debian's)
//! scraping a running tproxyd in the lab: after some traffic, every
//! dashboard expression must parse and return data, and every alert must
//! parse, load, and watch only metrics that exist. A panel for a metric
//! that no longer exists fails here.

mod harness;

use harness::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Whether `tool` runs; else skipped with the reason (never under CI).
fn have(test: &str, tool: &str) -> bool {
    if Command::new(tool).arg("--version").output().is_ok() {
        return true;
    }
    let why = format!("needs {tool} (Debian's prometheus package)");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {why}, and CI=true forbids skipping"
    );
    eprintln!("SKIPPED {test}: {why}");
    false
}

#[test]
fn alert_rules_pass_promtool() {
    if !have("alert_rules_promtool", "promtool") {
        return;
    }
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo("conf/tproxyd-alerts.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every PromQL expression of the dashboard, with Grafana's variables
/// filled in as "all".
fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("dist/grafana/tproxyd.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    let mut panels: Vec<Value> = dash["panels"].as_array().cloned().unwrap_or_default();
    while let Some(p) = panels.pop() {
        panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("a target with an expr");
            let expr = expr
                .replace("$__rate_interval", "15s")
                .replace("$job", ".+")
                .replace("$instance", ".+");
            out.push((p["title"].as_str().unwrap_or("?").to_string(), expr));
        }
    }
    assert!(out.len() >= 20, "too few expressions: {out:?}");
    out
}

/// The metric names an expression refers to (`tproxyd_…` and `up`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names: Vec<String> = expr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("tproxyd_") || *w == "up")
        .map(str::to_string)
        .collect();
    names.dedup();
    names
}

/// Prometheus in the router namespace, killed on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(lab: &Lab, dir: &Path) -> Prometheus {
    let conf = dir.join("prometheus.yml");
    let rules = repo("conf/tproxyd-alerts.yml");
    let yaml = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
         rule_files: [\"{}\"]\n\
         scrape_configs:\n  - job_name: tproxyd\n    static_configs:\n      - targets: [\"127.0.0.1:9187\"]\n",
        rules.display()
    );
    std::fs::write(&conf, yaml).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.router_ns(), "prometheus"])
        .arg(format!("--config.file={}", conf.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:9090")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    let p = Prometheus(child);
    wait_port(lab, 9090);
    // The port opens before the storage is ready (503 until then).
    wait_until("Prometheus to be ready", Duration::from_secs(30), || {
        in_netns(&lab.router_ns(), || {
            let s = std::net::TcpStream::connect("127.0.0.1:9090")?;
            Client::new(s).get("127.0.0.1:9090", "/-/ready", &[])
        })
        .is_ok_and(|r| r.status == 200)
    });
    p
}

/// `GET /api/v1/<path>` of the lab's Prometheus.
fn prom(lab: &Lab, path: &str) -> Value {
    let path = format!("/api/v1/{path}");
    let r = in_netns(&lab.router_ns(), move || {
        let s = std::net::TcpStream::connect("127.0.0.1:9090")?;
        Client::new(s).get("127.0.0.1:9090", &path, &[])
    })
    .expect("prometheus answers");
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

/// The result of an instant query: `Err` with why when it failed.
fn query(lab: &Lab, expr: &str) -> Result<Vec<Value>, String> {
    let q = percent_encoding::utf8_percent_encode(expr, percent_encoding::NON_ALPHANUMERIC);
    let v = prom(lab, &format!("query?query={q}"));
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Requests of every outcome the panels show: 2xx, 4xx, a refused
/// connect (502), a loop (508).
fn traffic(lab: &Lab) {
    let mut c = Client::new(lab.client_connect(&format!("{SERVER_V4}:80")).unwrap());
    for path in ["/a", "/b", "/status/404"] {
        c.get("dash.test", path, &[]).unwrap();
    }
    assert_eq!(
        get(lab, &format!("{SERVER_V4}:82"), "dash.test", "/").status,
        502
    );
    let r = get(lab, &format!("{ROUTER_LAN_V4}:8888"), "dash.test", "/loop");
    assert_eq!(r.status, 508);
}

fn config(dir: &Path, set: &Path) -> String {
    let base = lab_config(dir, "");
    let tls = "    - name: lan-tls\n      address: \"[::]:8443\"\n      mode: tls-passthrough\n";
    let base = base.replace("  upstream:\n", &format!("{tls}  upstream:\n"));
    format!(
        "{base}  sets:\n    ads: {{ file: {}, format: domains }}\n",
        set.display()
    )
}

#[test]
fn every_dashboard_and_alert_expression_returns_data_from_a_real_prometheus() {
    if !lab_available("dashboard_prometheus") || !have("dashboard_prometheus", "prometheus") {
        return;
    }
    let exprs = dashboard_exprs();
    let lab = Lab::up();
    let _origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("dashboard");
    let set = dir.0.join("ads.txt");
    std::fs::write(&set, "ads.test\n").unwrap();
    let proxy = Proxy::start(&lab, &config(&dir.0, &set), &[8888, 8443, 9187]);
    let _prometheus = start_prometheus(&lab, &dir.0);
    // Traffic after a first scrape, so that rates see it grow.
    let up = poll_until(Duration::from_secs(15), || {
        query(&lab, "up{job=\"tproxyd\"} == 1").is_ok_and(|r| !r.is_empty())
    });
    assert!(up, "Prometheus never scraped tproxyd");
    traffic(&lab);
    // A reload, for the reload counter.
    std::fs::write(&set, "ads.test\ntrack.test\n").unwrap();
    proxy.signal(Signal::SIGHUP);
    let mut last = Ok(Vec::new());
    let scraped = poll_until(Duration::from_secs(30), || {
        last = query(
            &lab,
            "sum(rate(tproxyd_requests_total[15s])) > 0 and on() sum(tproxyd_set_entries) == 2",
        );
        last.as_ref().is_ok_and(|r| !r.is_empty())
    });
    assert!(scraped, "Prometheus never saw the traffic: {last:?}");

    // The check can fail: a metric that does not exist returns nothing.
    assert_eq!(
        query(&lab, "sum(rate(tproxyd_no_such_metric_total[15s]))"),
        Ok(vec![])
    );
    let mut failures = Vec::new();
    for (panel, expr) in &exprs {
        match query(&lab, expr) {
            Ok(r) if r.is_empty() => failures.push(format!("{panel}: no data: {expr}")),
            Ok(_) => {}
            Err(why) => failures.push(format!("{panel}: {why}: {expr}")),
        }
    }
    let rules = prom(&lab, "rules");
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let alerts: Vec<Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(alerts.len() >= 5, "the rules did not load: {rules}");
    for rule in &alerts {
        let (name, expr) = (
            rule["name"].as_str().unwrap(),
            rule["query"].as_str().unwrap(),
        );
        if rule["health"] != "ok" && rule["health"] != "unknown" {
            failures.push(format!(
                "alert {name}: {}: {}",
                rule["health"], rule["lastError"]
            ));
        }
        if let Err(why) = query(&lab, expr) {
            failures.push(format!("alert {name}: {why}"));
        }
        for metric in metric_names(expr) {
            if query(&lab, &format!("count({metric})")).is_ok_and(|r| r.is_empty()) {
                failures.push(format!("alert {name}: no series of {metric}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
