//! The status page in a real browser: Debian's Chromium, headless, driven
//! by chromedriver (WebDriver over HTTP) in the router namespace where the
//! admin listener is. It loads the page, sees a live download appear in
//! the flows table, filters the table by typing, and saves a screenshot
//! (its path is printed, for CI to keep).

mod harness;

use base64::Engine;
use harness::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const DRIVER_PORT: u16 = 9515;

/// The Chromium binary itself (Debian's `/usr/bin/chromium` is a wrapper
/// script) and chromedriver, if installed.
fn browser() -> Option<(String, String)> {
    let chromium = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    Some((chromium.to_string(), driver.to_string()))
}

/// chromedriver in the router namespace, killed on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One WebDriver command, sent from inside the router namespace.
fn wd(lab: &Lab, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let r = in_netns(&lab.router_ns(), move || {
        let s = TcpStream::connect(("127.0.0.1", DRIVER_PORT))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Client::new(s).send_raw(req.as_bytes())
    })
    .unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
    let v: Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("webdriver {path}: {e}: {}", r.body));
    assert_eq!(r.status, 200, "webdriver {path}: {v}");
    v["value"].clone()
}

/// Runs `script` in the page and returns its value.
fn js(lab: &Lab, session: &str, script: &str) -> Value {
    let body = json!({ "script": script, "args": [] });
    wd(
        lab,
        "POST",
        &format!("/session/{session}/execute/sync"),
        Some(body),
    )
}

/// The flows table's text.
fn rows(lab: &Lab, session: &str) -> String {
    js(
        lab,
        session,
        "return document.getElementById('flow-rows').innerText",
    )
    .as_str()
    .unwrap_or_default()
    .to_string()
}

fn start_driver(lab: &Lab, driver: &str) -> Driver {
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.router_ns(), driver])
        .arg(format!("--port={DRIVER_PORT}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let d = Driver(child);
    wait_port(lab, DRIVER_PORT);
    d
}

fn new_session(lab: &Lab, chromium: &str, profile: &std::path::Path) -> String {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let caps = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium, "args": args }
    }}});
    let v = wd(lab, "POST", "/session", Some(caps));
    v["sessionId"].as_str().expect("a session id").to_string()
}

#[test]
fn the_page_shows_a_live_flow_filters_it_and_is_screenshotted() {
    if !lab_available("status_page_browser") {
        return;
    }
    let Some((chromium, driver)) = browser() else {
        let why = "needs Debian's chromium and chromium-driver";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why}, and CI=true forbids skipping"
        );
        eprintln!("SKIPPED status_page_browser: {why}");
        return;
    };
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("status-browser");
    let _proxy = Proxy::start(&lab, &lab_config(&dir.0, ""), &[8888, 9187]);
    let _driver = start_driver(&lab, &driver);
    let session = new_session(&lab, &chromium, &dir.0.join("profile"));

    // An idle keep-alive connection (another name), then a long download.
    let dst = format!("{SERVER_V4}:80");
    let mut idle = Client::new(lab.client_connect(&dst).unwrap());
    assert_eq!(idle.get("idle.test", "/warm", &[]).unwrap().status, 200);
    let s = lab.client_connect(&dst).unwrap();
    let slow = std::thread::spawn(move || Client::new(s).get("download.test", "/slow/100", &[]));
    origin.wait_request("/slow/100");

    let url = json!({ "url": "http://127.0.0.1:9187/" });
    wd(&lab, "POST", &format!("/session/{session}/url"), Some(url));
    let mut text = String::new();
    let both = poll_until(Duration::from_secs(15), || {
        text = rows(&lab, &session);
        text.contains("download.test") && text.contains("idle.test")
    });
    assert!(both, "the flows table never showed both flows:\n{text}");
    assert!(text.contains("relaying"), "{text}");

    // Filter as you type: only the download is left.
    let filter = wd(
        &lab,
        "POST",
        &format!("/session/{session}/element"),
        Some(json!({ "using": "css selector", "value": "#filter" })),
    );
    let element = filter
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(Value::as_str)
        .expect("the filter box")
        .to_string();
    let keys = json!({ "text": "download" });
    wd(
        &lab,
        "POST",
        &format!("/session/{session}/element/{element}/value"),
        Some(keys),
    );
    let filtered = rows(&lab, &session);
    assert!(filtered.contains("download.test"), "{filtered}");
    assert!(
        !filtered.contains("idle.test"),
        "the filter kept:\n{filtered}"
    );
    let count = js(
        &lab,
        &session,
        "return document.getElementById('count').innerText",
    );
    assert!(
        count.as_str().unwrap_or_default().starts_with("1 shown"),
        "{count}"
    );

    let png = wd(&lab, "GET", &format!("/session/{session}/screenshot"), None);
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().expect("base64 PNG"))
        .expect("valid base64");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::write(&shot, &png).unwrap();
    println!("status page screenshot: {}", shot.display());

    // A phone's width: the page itself never scrolls sideways (wide tables
    // scroll in their own boxes).
    let phone = json!({ "width": 390, "height": 844 });
    wd(
        &lab,
        "POST",
        &format!("/session/{session}/window/rect"),
        Some(phone),
    );
    let fits = js(
        &lab,
        &session,
        "return document.documentElement.scrollWidth <= window.innerWidth + 1",
    );
    let shot = shot.with_file_name("status-page-phone.png");
    let png = wd(&lab, "GET", &format!("/session/{session}/screenshot"), None);
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().expect("base64 PNG"))
        .expect("valid base64");
    std::fs::write(&shot, &png).unwrap();
    println!(
        "status page screenshot at a phone's width: {}",
        shot.display()
    );
    assert_eq!(fits, true, "the page is wider than a phone's screen");
    wd(&lab, "DELETE", &format!("/session/{session}"), None);
    drop(idle);
    assert_eq!(slow.join().unwrap().unwrap().status, 200);
}
