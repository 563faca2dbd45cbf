//! Bounded client load through the proxy: start it, see it flow, sum it up.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{spawn_in_netns, wait_until, Client, Lab, Origin};

/// What a bounded client load saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Requests that got a complete, correct 200.
    pub ok: usize,
    /// Requests retried once on a fresh connection because a reused
    /// keep-alive connection was closed before any response byte (what
    /// every HTTP client does for idempotent requests, RFC 9112 §9.3.1).
    pub retried_on_fresh_connection: usize,
    /// Everything else: connect errors, resets, wrong status or body.
    pub failures: Vec<String>,
}

/// A steady load from the client namespace against `dst`: `keepalive`
/// workers each reuse one connection, `fresh` workers open one connection
/// per request. Runs until `stop` is set (or 3000 requests per worker).
pub fn start_load(
    lab: &Lab,
    dst: &str,
    keepalive: usize,
    fresh: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<LoadReport>> {
    let dst: SocketAddr = dst.parse().unwrap();
    let mut handles = Vec::new();
    for w in 0..keepalive + fresh {
        let stop = stop.clone();
        let reuse = w < keepalive;
        handles.push(spawn_in_netns(&lab.client_ns(), move || {
            let mut report = LoadReport::default();
            let mut conn: Option<(Client, usize)> = None;
            for i in 0..3000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let path = format!("/load/{w}/{i}");
                let expect = format!("origin {dst} GET {path}\n");
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let (mut client, served) = match conn.take() {
                        Some(c) => c,
                        None => match TcpStream::connect_timeout(&dst, Duration::from_secs(3)) {
                            Ok(s) => (Client::new(s), 0),
                            Err(e) => {
                                report.failures.push(format!("{path}: connect: {e}"));
                                break;
                            }
                        },
                    };
                    match client.get("load.test", &path, &[]) {
                        Ok(resp) if resp.status == 200 && resp.body == expect => {
                            report.ok += 1;
                            let close = resp
                                .headers
                                .get("connection")
                                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                            if reuse && !close {
                                conn = Some((client, served + 1));
                            }
                            break;
                        }
                        Ok(resp) => {
                            report
                                .failures
                                .push(format!("{path}: {} {:?}", resp.status, resp.body));
                            break;
                        }
                        Err(e) if served > 0 && attempt == 1 => {
                            let _ = e;
                            report.retried_on_fresh_connection += 1;
                            continue;
                        }
                        Err(e) => {
                            report.failures.push(format!("{path}: {e}"));
                            break;
                        }
                    }
                }
                // Deliberate pause, not a wait: paces the load.
                std::thread::sleep(Duration::from_millis(10));
            }
            report
        }));
    }
    handles
}

/// Waits (up to 10 s) until each of the `workers` that [`start_load`]
/// started against `dst` has had a request reach `origin`: the load is
/// flowing, and every keep-alive worker holds a connection through the
/// proxy.
pub fn wait_load_flowing(origin: &Origin, dst: &str, workers: usize) {
    let dst: SocketAddr = dst.parse().expect("socket address");
    wait_until(
        &format!("all {workers} load workers against {dst} to reach the origin"),
        Duration::from_secs(10),
        || {
            let seen = origin.seen();
            (0..workers).all(|w| {
                let prefix = format!("/load/{w}/");
                seen.iter()
                    .any(|s| s.local == dst && s.path.starts_with(&prefix))
            })
        },
    );
}

/// Joins the load workers and sums their reports.
pub fn finish_load(handles: Vec<std::thread::JoinHandle<LoadReport>>) -> LoadReport {
    let mut total = LoadReport::default();
    for h in handles {
        let r = h.join().expect("load worker panicked");
        total.ok += r.ok;
        total.retried_on_fresh_connection += r.retried_on_fresh_connection;
        total.failures.extend(r.failures);
    }
    total
}
