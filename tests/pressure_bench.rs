//! Figures for BENCHMARKS.md ("Under pressure"), not a test: ignored by
//! default. Run on a quiet machine with a release build:
//!
//! ```text
//! cargo build --release --bin tproxyd
//! TPROXYD_BENCH_BIN=target/release/tproxyd cargo test --test pressure_bench -- --ignored --nocapture
//! ```
//!
//! 1. Proxy CPU per accepted connection at `max_connections` (1,000): when
//!    it takes an idle connection's place (reclaim), when it is reset
//!    because every connection is in use, and below the cap for reference.
//! 2. A normal client (wrk, nginx as the origin) with the cap empty and
//!    with it full of 8 hosts' idle keep-alive connections, which re-open
//!    every 50 ms what was reclaimed: over keep-alive, and with a new
//!    connection per request.

mod harness;

use harness::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CAP: usize = 1000;
const FLOOD: usize = 15_000;
const HOLDERS: usize = 8;
const FLOODERS: usize = 128;

fn dst() -> String {
    format!("{SERVER_V4}:80")
}

/// A connection from `src` to the origin, made in the client namespace.
fn connect_from(src: &str) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&format!("{src}:0").parse::<SocketAddr>().unwrap().into())?;
    let dst: SocketAddr = dst().parse().unwrap();
    s.connect_timeout(&dst.into(), Duration::from_secs(5))?;
    Ok(s.into())
}

/// `n` connections from `src`, each sending `first` (and reading the
/// answer when `answered`).
fn hold(lab: &Lab, src: &str, n: usize, first: &'static [u8], answered: bool) -> Vec<TcpStream> {
    let src = src.to_string();
    in_netns(&lab.client_ns(), move || {
        (0..n)
            .map(|_| {
                let mut s = connect_from(&src).unwrap();
                s.write_all(first).unwrap();
                if answered {
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut b = [0u8; 4096];
                    let n = s.read(&mut b).unwrap();
                    assert!(b[..n].starts_with(b"HTTP/1.1 200"));
                }
                s
            })
            .collect()
    })
}

/// Opens `total` connections from the flood addresses, 4 threads: how
/// many were opened, and those kept open when `keep`.
fn flood(lab: &Lab, total: usize, keep: bool) -> (usize, Vec<TcpStream>) {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            spawn_in_netns(&lab.client_ns(), move || {
                let (mut opened, mut kept) = (0, Vec::new());
                for i in (t..total).step_by(4) {
                    let src = format!("192.0.2.{}", 100 + i % FLOODERS);
                    if let Ok(s) = connect_from(&src) {
                        opened += 1;
                        if keep {
                            kept.push(s);
                        }
                    }
                }
                (opened, kept)
            })
        })
        .collect();
    let mut all = (0, Vec::new());
    for t in threads {
        let (n, kept) = t.join().unwrap();
        all.0 += n;
        all.1.extend(kept);
    }
    all
}

/// The sum of the limit counters `limits`.
fn counted(lab: &Lab, limits: &[&str]) -> f64 {
    limits.iter().map(|l| downstream_limit(lab, l)).sum()
}

/// Proxy CPU (us) per connection while `run` opens connections (it
/// returns how many) and the limit counters `limits` (if any) count them.
fn cpu_per(lab: &Lab, proxy: &Proxy, limits: &[&str], run: impl FnOnce() -> usize) -> f64 {
    let before = counted(lab, limits);
    let cpu = proxy.cpu_time();
    let n = run();
    if !limits.is_empty() {
        wait_until("the flood counted", Duration::from_secs(60), || {
            counted(lab, limits) - before >= n as f64
        });
    }
    std::thread::sleep(Duration::from_millis(500)); // closes settle
    (proxy.cpu_time() - cpu).as_secs_f64() * 1e6 / n as f64
}

/// Holders that re-open, every 100 ms, what the proxy closed.
fn refill(
    lab: &Lab,
    mut held: Vec<Vec<TcpStream>>,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<usize>> {
    held.drain(..)
        .enumerate()
        .map(|(h, mut conns)| {
            let stop = stop.clone();
            spawn_in_netns(&lab.client_ns(), move || {
                let src = format!("192.0.2.{}", 20 + h);
                let mut reopened = 0;
                conns.iter().for_each(|c| c.set_nonblocking(true).unwrap());
                while !stop.load(Ordering::SeqCst) {
                    for c in conns.iter_mut() {
                        let mut b = [0u8; 1];
                        let gone = !matches!(c.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
                        if gone {
                            if let Ok(mut s) = connect_from(&src) {
                                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                                let _ = s.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n");
                                let _ = s.read(&mut [0u8; 4096]);
                                s.set_nonblocking(true).unwrap();
                                *c = s;
                                reopened += 1;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                reopened
            })
        })
        .collect()
}

/// TCP handshakes not yet accepted by the proxy, in the router.
fn handshakes_pending(lab: &Lab) -> usize {
    let out = lab.exec(&lab.router_ns(), &["ss", "-Htn", "state", "syn-recv"]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// What one wrk run saw, and the proxy's CPU per request meanwhile.
#[derive(Debug, Default, Clone, Copy)]
struct Run {
    rps: f64,
    p99_ms: f64,
    cpu_us: f64,
}

/// wrk from the client namespace, 10 s, 4 connections.
fn wrk(lab: &Lab, proxy: &Proxy, close: bool) -> Run {
    let cpu = proxy.cpu_time();
    let url = format!("http://{}/small", dst());
    let mut args = vec!["wrk", "-t1", "-c4", "-d10s", "--latency"];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(&url);
    let out = lab.exec(&lab.client_ns(), &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(str::trim)
        .and_then(|v| {
            let (n, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap());
            let n: f64 = n.parse().ok()?;
            Some(match unit {
                "us" => n / 1000.0,
                "ms" => n,
                "s" => n * 1000.0,
                _ => return None,
            })
        })
        .unwrap_or_else(|| panic!("{text}"));
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    if let Some(e) = errors {
        eprintln!("wrk: {e}");
    }
    let cpu_us = (proxy.cpu_time() - cpu).as_secs_f64() * 1e6 / (rps * 10.0);
    Run {
        rps,
        p99_ms: p99,
        cpu_us,
    }
}

/// The median of each figure over `runs`.
fn median(runs: Vec<Run>) -> Run {
    let mid = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let f = |get: fn(&Run) -> f64| mid(&mut runs.iter().map(get).collect());
    Run {
        rps: f(|r| r.rps),
        p99_ms: f(|r| r.p99_ms),
        cpu_us: f(|r| r.cpu_us),
    }
}

/// nginx in the server namespace on port 80, answering 100 bytes.
fn nginx(lab: &Lab, dir: &std::path::Path) -> std::process::Child {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/small"), "x".repeat(100)).unwrap();
    let conf = format!(
        "worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx.err warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_requests 1000000; server {{ listen 80; root {d}/www; }} }}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.server_ns(), "nginx", "-c"])
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .spawn()
        .expect("nginx");
    wait_until("nginx", Duration::from_secs(10), || {
        in_netns(&lab.server_ns(), || {
            TcpStream::connect("127.0.0.1:80").is_ok()
        })
    });
    child
}

#[test]
#[ignore = "figures for BENCHMARKS.md; run by hand with a release build"]
fn pressure_figures() {
    if !lab_available("pressure_figures") {
        return;
    }
    let bin = std::env::var("TPROXYD_BENCH_BIN").unwrap_or_else(|_| tproxyd_bin().to_string());
    let lab = Lab::up();
    let dir = TempDir::new("pressure-bench");
    let mut origin = nginx(&lab, &dir.0);
    let extra = format!(
        "  access_log: {{ enabled: false }}\n  downstream: {{ max_connections: {CAP}, \
         max_connections_per_client: 2000, header_timeout: 120s, keepalive_timeout: 120s, \
         pressure_header_timeout: 120s, pressure_keepalive_timeout: 120s }}\n"
    );
    let proxy = Proxy::start_bin(&lab, &bin, &lab_config(&dir.0, &extra), &[8888]);
    for h in 0..HOLDERS {
        lab.add_client_v4(&format!("192.0.2.{}", 20 + h));
    }
    for f in 0..FLOODERS {
        lab.add_client_v4(&format!("192.0.2.{}", 100 + f));
    }
    let settle = |n: f64| {
        // A flood leaves handshakes behind (the accept queue overflowed);
        // accepted late, they would count as clients in the next phase.
        let ok = poll_until(Duration::from_secs(60), || {
            handshakes_pending(&lab) == 0 && open_connections(&lab) == n
        });
        let limits = [
            "per_client",
            "max_connections",
            "reclaimed",
            "header_timeout",
        ];
        let counts: Vec<String> = limits
            .iter()
            .map(|l| format!("{l} {}", downstream_limit(&lab, l)))
            .collect();
        assert!(ok, "{} open, not {n}; {counts:?}", open_connections(&lab));
    };
    settle(0.0);
    let share = CAP / HOLDERS;
    let idle_req = b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n";

    // 1. Below the cap: accept, EOF, close.
    let free = cpu_per(&lab, &proxy, &[], || flood(&lab, FLOOD, false).0);
    settle(0.0);
    // At the cap, every place in use (a head that never ends): reset.
    // One host after the other, each admitted before the next comes: a
    // host above the average while others still arrive gets no place
    // (its fair share), and these clients would not notice.
    let busy: Vec<_> = (0..HOLDERS)
        .map(|h| {
            let src = format!("192.0.2.{}", 20 + h);
            let held = hold(&lab, &src, share, b"GET /held HTTP/1.1\r\n", false);
            settle(((h + 1) * share) as f64);
            held
        })
        .collect();
    let reset = cpu_per(&lab, &proxy, &["max_connections"], || {
        flood(&lab, FLOOD, false).0
    });
    drop(busy);
    settle(0.0);
    // At the cap, every place idle: each newcomer (kept open, silent)
    // takes the place of the heaviest client's longest-idle connection.
    let idle: Vec<_> = (0..HOLDERS)
        .map(|h| hold(&lab, &format!("192.0.2.{}", 20 + h), share, idle_req, true))
        .collect();
    settle(CAP as f64);
    let mut kept = Vec::new();
    let limits = ["reclaimed", "per_client", "max_connections"];
    let before: Vec<f64> = limits.iter().map(|l| downstream_limit(&lab, l)).collect();
    let reclaim = cpu_per(&lab, &proxy, &limits, || {
        let (n, k) = flood(&lab, FLOOD, true);
        kept = k;
        n
    });
    let mix: Vec<String> = limits
        .iter()
        .zip(before)
        .map(|(l, b)| format!("{l} {}", downstream_limit(&lab, l) - b))
        .collect();
    eprintln!("the reclaim flood: {}", mix.join(", "));
    drop((kept, idle));
    settle(0.0);
    eprintln!(
        "proxy CPU per accepted connection: {free:.1} us below the cap (accept, EOF, close), \
         {reset:.1} us reset at the cap (all in use), {reclaim:.1} us reclaiming an idle place"
    );

    // 2. A normal client, the cap empty and then full of idle holders,
    //    three rounds each.
    let mut runs: [Vec<Run>; 4] = Default::default();
    let mut reclaims = [0.0; 2];
    for _ in 0..3 {
        runs[0].push(wrk(&lab, &proxy, false));
        runs[1].push(wrk(&lab, &proxy, true));
        let idle: Vec<_> = (0..HOLDERS)
            .map(|h| hold(&lab, &format!("192.0.2.{}", 20 + h), share, idle_req, true))
            .collect();
        settle(CAP as f64);
        let stop = Arc::new(AtomicBool::new(false));
        let holders = refill(&lab, idle, stop.clone());
        for (i, close) in [false, true].into_iter().enumerate() {
            let before = downstream_limit(&lab, "reclaimed");
            runs[2 + i].push(wrk(&lab, &proxy, close));
            reclaims[i] += downstream_limit(&lab, "reclaimed") - before;
        }
        stop.store(true, Ordering::SeqCst);
        let reopened: usize = holders.into_iter().map(|h| h.join().unwrap()).sum();
        eprintln!("holders re-opened {reopened} connections");
        settle(0.0);
    }
    let [e_ka, e_close, f_ka, f_close] = runs.map(median);
    for (what, empty, full, reclaimed) in [
        ("keep-alive", e_ka, f_ka, reclaims[0]),
        (
            "a new connection per request",
            e_close,
            f_close,
            reclaims[1],
        ),
    ] {
        eprintln!(
            "wrk, 4 connections, {what}, median of 3: cap empty {:.0} req/s, p99 {:.2} ms, \
             proxy {:.1} us/req; cap full {:.0} req/s, p99 {:.2} ms, proxy {:.1} us/req \
             ({:.0} reclaims per run)",
            empty.rps,
            empty.p99_ms,
            empty.cpu_us,
            full.rps,
            full.p99_ms,
            full.cpu_us,
            reclaimed / 3.0
        );
    }
    let _ = origin.kill();
    let _ = origin.wait();
}
