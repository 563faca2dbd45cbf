//! Zero-downtime operation with transparent sockets: graceful upgrade
//! (`-u` + SIGQUIT) under load, reload with a changed config, graceful stop
//! (SIGTERM), fast stop (SIGINT), daemon mode and privileges. All through
//! real TPROXY in the lab.

mod harness;

use harness::*;
use nix::sys::signal::Signal;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lab config plus an `X-Proxy-Gen` header that tells which process
/// forwarded a request, and optionally only the TPROXY listener.
fn gen_config(dir: &std::path::Path, generation: &str, with_redirect: bool) -> String {
    let mut yaml = lab_config(
        dir,
        &format!("  request_headers:\n    add:\n      Via: \"1.1 tproxyd\"\n      X-Proxy-Gen: \"{generation}\"\n"),
    );
    if !with_redirect {
        yaml = yaml.replace(
            "    - name: lan-nat\n      address: \"[::]:8889\"\n      mode: redirect\n",
            "",
        );
    }
    yaml
}

fn gens_seen(origin: &Origin, from: usize) -> Vec<String> {
    origin.seen()[from..]
        .iter()
        .map(|s| s.headers.get("x-proxy-gen").cloned().unwrap_or_default())
        .collect()
}

/// Upgrades old → new under a steady load against each of `dsts`, and
/// checks zero failures and that the new process serves afterwards.
fn upgrade_under_load(test: &str, dsts: &[String], quit_first: bool) {
    if !lab_available(test) {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80, 8080]);
    let dir = TempDir::new("upgrade");
    let mut old = Proxy::spawn(&lab, &dir.0, "old", &gen_config(&dir.0, "old", true), &[]);
    old.wait_listening(&lab, &[8888, 8889]);

    let stop = Arc::new(AtomicBool::new(false));
    let mut loads = Vec::new();
    for dst in dsts {
        loads.extend(start_load(&lab, dst, 3, 2, stop.clone()));
    }
    for dst in dsts {
        wait_load_flowing(&origin, dst, 3 + 2);
    }
    let before_upgrade = origin.count();

    let quit_at;
    let mut new;
    if quit_first {
        quit_at = Instant::now();
        old.signal(Signal::SIGQUIT);
        // The old process is in its upgrade (and draining) before the new
        // one exists: it keeps retrying the handover until it appears.
        wait_until(
            "the old process to start its upgrade",
            Duration::from_secs(10),
            || old.log_text().contains("GracefulUpgradeTransferringFds"),
        );
        new = Proxy::spawn(
            &lab,
            &dir.0,
            "new",
            &gen_config(&dir.0, "new", true),
            &["-u"],
        );
    } else {
        new = Proxy::spawn(
            &lab,
            &dir.0,
            "new",
            &gen_config(&dir.0, "new", true),
            &["-u"],
        );
        new.wait_upgrade_socket(&dir.0);
        quit_at = Instant::now();
        old.signal(Signal::SIGQUIT);
    }
    let status = old
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("old process did not exit:\n{}", old.log_text()));
    let lingered = quit_at.elapsed();
    assert!(new.is_running(), "new process died:\n{}", new.log_text());
    let after_old_exit = origin.count();
    // Deliberate pause, not a wait: the load runs on against the new
    // process alone for a while.
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = finish_load(loads);

    eprintln!(
        "{test}: {} requests ok ({} during the upgrade), {} retried on a fresh connection after a keep-alive close, {} failed; old process exited {status} {:.1}s after SIGQUIT",
        report.ok,
        after_old_exit - before_upgrade,
        report.retried_on_fresh_connection,
        report.failures.len(),
        lingered.as_secs_f64()
    );
    assert!(
        report.failures.is_empty(),
        "failed requests during upgrade: {:#?}\nold log:\n{}\nnew log:\n{}",
        report.failures,
        old.log_text(),
        new.log_text()
    );
    assert!(
        report.ok > 100,
        "load too small to mean anything: {}",
        report.ok
    );
    // The old process answers `Connection: close` from SIGQUIT on, so no
    // client should ever find its keep-alive connection closed under it.
    assert_eq!(
        report.retried_on_fresh_connection, 0,
        "keep-alive connections were closed under a client"
    );
    assert!(status.success(), "old process exit status {status}");

    // The new process inherited the sockets (no re-bind) and serves now.
    let new_log = new.log_text();
    assert!(
        new_log.contains("inherited [::]:8888 (transparent: true)"),
        "{new_log}"
    );
    assert!(
        new_log.contains("inherited [::]:8889 (transparent: true)"),
        "{new_log}"
    );
    assert!(!new_log.contains("bound [::]:8888"), "{new_log}");
    let gens = gens_seen(&origin, after_old_exit);
    assert!(!gens.is_empty());
    assert!(
        gens.iter().all(|g| g == "new"),
        "after the old process exited: {gens:?}"
    );
    for dst in dsts {
        let resp = get(&lab, dst, "example.test", "/after-upgrade");
        assert_eq!(resp.status, 200);
        let s = origin.seen().pop().unwrap();
        assert_eq!(s.headers["x-proxy-gen"], "new");
        assert_eq!(&s.local.to_string(), dst);
    }
}

#[test]
fn upgrade_under_load_v4_tproxy_zero_failures() {
    upgrade_under_load("upgrade_under_load_v4", &[format!("{SERVER_V4}:80")], false);
}

#[test]
fn upgrade_under_load_v6_and_redirect_quit_first() {
    upgrade_under_load(
        "upgrade_under_load_v6_redirect",
        &[
            format!("[{SERVER_V6}]:80"),
            format!("{SERVER_V4}:8080"),
            format!("[{SERVER_V6}]:8080"),
        ],
        true,
    );
}

#[test]
fn slow_response_survives_upgrade_byte_exact() {
    if !lab_available("slow_response_survives_upgrade") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("slow");
    let mut old = Proxy::spawn(&lab, &dir.0, "old", &gen_config(&dir.0, "old", true), &[]);
    old.wait_listening(&lab, &[8888, 8889]);

    // 40 chunks, 100 ms apart: in flight for ~4 s, across the handover.
    let stream = lab.client_connect(&format!("{SERVER_V4}:80")).unwrap();
    let slow = std::thread::spawn(move || Client::new(stream).get("example.test", "/slow/40", &[]));
    origin.wait_request("/slow/40");
    let mut new = Proxy::spawn(
        &lab,
        &dir.0,
        "new",
        &gen_config(&dir.0, "new", true),
        &["-u"],
    );
    new.wait_upgrade_socket(&dir.0);
    old.signal(Signal::SIGQUIT);

    let resp = slow.join().unwrap().expect("slow response");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), 40_000);
    assert!(resp.body == slow_body(40), "body differs");
    assert!(old.wait_exit(Duration::from_secs(20)).is_some());
    assert!(new.is_running());
}

#[test]
fn reload_changes_headers_binds_new_and_closes_removed_listeners() {
    if !lab_available("reload") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80, 8080]);
    let dir = TempDir::new("reload");
    // v1: TPROXY + REDIRECT listeners. v2: REDIRECT removed, a new
    // listener on 8890 added, header changed.
    let mut old = Proxy::spawn(&lab, &dir.0, "v1", &gen_config(&dir.0, "v1", true), &[]);
    old.wait_listening(&lab, &[8888, 8889]);
    let v2 = gen_config(&dir.0, "v2", false).replace(
        "  upstream:",
        "    - name: extra\n      address: \"0.0.0.0:8890\"\n      mode: tproxy\n  upstream:",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let dst = format!("{SERVER_V4}:80");
    let load = start_load(&lab, &dst, 2, 1, stop.clone());
    wait_load_flowing(&origin, &dst, load.len());

    let mut new = Proxy::spawn(&lab, &dir.0, "v2", &v2, &["-u"]);
    new.wait_upgrade_socket(&dir.0);
    old.signal(Signal::SIGQUIT);
    assert!(old.wait_exit(Duration::from_secs(20)).is_some());
    let mark = origin.count();
    // Deliberate pause, not a wait: the load runs on against the new
    // process alone for a while.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = finish_load(load);
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    let gens = gens_seen(&origin, mark);
    assert!(
        !gens.is_empty() && gens.iter().all(|g| g == "v2"),
        "{gens:?}"
    );

    new.wait_listening(&lab, &[8890]);
    let log = new.log_text();
    assert!(log.contains("inherited [::]:8888"), "{log}");
    assert!(log.contains("bound 0.0.0.0:8890"), "{log}");
    // The removed listener is closed, not left open without an acceptor.
    let open = in_netns(&lab.router_ns(), || {
        std::net::TcpStream::connect("127.0.0.1:8889").is_ok()
    });
    assert!(
        !open,
        "removed listener [::]:8889 still accepts connections"
    );
    assert!(new.is_running());
}

#[test]
fn sigterm_finishes_in_flight_requests_then_stops() {
    if !lab_available("sigterm") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("term");
    // grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1 → the
    // in-flight response needs to finish within ~2s of SIGTERM.
    let yaml =
        gen_config(&dir.0, "x", true).replace("grace_period_seconds: 1", "grace_period_seconds: 3");
    let mut proxy = Proxy::spawn(&lab, &dir.0, "p", &yaml, &[]);
    proxy.wait_listening(&lab, &[8888]);

    // A keep-alive connection idle after two requests: the wait for its
    // third ends with the shutdown signal (the connection's one shutdown
    // waiter, kept across its requests), not at exit.
    let idle_stream = lab.client_connect(&format!("{SERVER_V4}:80")).unwrap();
    let mut idle = Client::new(idle_stream.try_clone().unwrap());
    for _ in 0..2 {
        assert_eq!(idle.get("example.test", "/", &[]).unwrap().status, 200);
    }

    // A connection accepted just before the shutdown whose client has not
    // sent its request yet (it will, below, once shutdown has begun): it
    // must be answered, not closed like the idle one.
    let mut fresh = Client::new(lab.client_connect(&format!("{SERVER_V4}:80")).unwrap());

    let stream = lab.client_connect(&format!("{SERVER_V4}:80")).unwrap();
    let slow = std::thread::spawn(move || Client::new(stream).get("example.test", "/slow/15", &[]));
    // In flight for ~1.5 s from here on.
    origin.wait_request("/slow/15");
    let t = Instant::now();
    proxy.signal(Signal::SIGTERM);
    // New connections are refused at once (the router resets them: the
    // listening socket is closed, nothing is left hanging in a backlog).
    // "At once": within 1 s, while the response above is still in flight
    // and well before the process may exit (>= 2.5 s), so a listener left
    // open until exit still fails here.
    wait_until(
        "new connections to fail after SIGTERM",
        Duration::from_secs(1),
        || lab.client_connect(&format!("{SERVER_V4}:80")).is_err(),
    );
    let err = lab.client_connect(&format!("{SERVER_V4}:80")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    // The idle connection is closed by now too (EOF), long before exit.
    idle_stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let read = std::io::Read::read(&mut &idle_stream, &mut byte);
    assert!(
        matches!(read, Ok(0)),
        "idle keep-alive connection not closed {:?} after SIGTERM: {read:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_millis(2500));
    // Shutdown has begun (the idle connection is closed): the fresh
    // connection's first request still gets its answer, and no keep-alive.
    let resp = fresh
        .get("example.test", "/fresh-during-shutdown", &[])
        .expect("the first request of a connection accepted before SIGTERM is answered");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.headers.get("connection").map(String::as_str),
        Some("close")
    );
    // Through this tproxyd (its header) to the address the client dialed.
    let seen = origin.seen().pop().unwrap();
    assert_eq!(seen.path, "/fresh-during-shutdown");
    assert_eq!(seen.headers["x-proxy-gen"], "x");
    assert_eq!(seen.local.to_string(), format!("{SERVER_V4}:80"));
    let resp = slow.join().unwrap().expect("in-flight response completes");
    assert_eq!(resp.status, 200);
    assert!(resp.body == slow_body(15), "body differs");

    // Both answered: nothing holds the process any more, and it leaves
    // well before its 3 s grace period is over.
    let status = proxy
        .wait_exit(Duration::from_secs(15))
        .expect("tproxyd exits after SIGTERM");
    let took = t.elapsed();
    eprintln!(
        "sigterm: exited {status} {:.1}s after SIGTERM",
        took.as_secs_f64()
    );
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_millis(2700),
        "waited out the grace period: {took:?}\n{}",
        proxy.log_text()
    );
    assert!(proxy
        .log_text()
        .contains("exiting: no client connection open any more"));
    // Gone: the router resets new connections (fail closed).
    let err = lab.client_connect(&format!("{SERVER_V4}:80")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// With nothing in flight, SIGTERM stops tproxyd at once, however long its
/// grace period: an idle keep-alive connection does not hold it. An open
/// relay (a tunnel of what is not HTTP) does, and keeps relaying, until
/// its client closes it.
#[test]
fn sigterm_stops_as_soon_as_nothing_is_in_flight() {
    if !lab_available("sigterm_idle") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    Origin::start_echo(&lab, 85);
    let dir = TempDir::new("termidle");
    let yaml = gen_config(&dir.0, "x", false)
        .replace("grace_period_seconds: 1", "grace_period_seconds: 30");
    assert!(yaml.contains("grace_period_seconds: 30"));

    let mut proxy = Proxy::spawn(&lab, &dir.0, "idle", &yaml, &[]);
    proxy.wait_listening(&lab, &[8888]);
    let mut idle = Client::new(lab.client_connect(&format!("{SERVER_V4}:80")).unwrap());
    assert_eq!(idle.get("example.test", "/", &[]).unwrap().status, 200);
    assert_eq!(origin.count(), 1);
    let t = Instant::now();
    proxy.signal(Signal::SIGTERM);
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .expect("tproxyd exits after SIGTERM");
    let took = t.elapsed();
    eprintln!("sigterm_idle: nothing in flight, exited {status} after {took:?}");
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_millis(500),
        "{took:?}\n{}",
        proxy.log_text()
    );
    let log = proxy.log_text();
    assert!(
        log.contains("exiting: no client connection open any more"),
        "{log}"
    );

    // A relay in flight holds the stop, and still relays meanwhile.
    let mut proxy = Proxy::spawn(&lab, &dir.0, "relay", &yaml, &[]);
    proxy.wait_listening(&lab, &[8888]);
    let mut tunnel = lab.client_connect(&format!("{SERVER_V4}:85")).unwrap();
    tunnel
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let echo = |s: &mut std::net::TcpStream, bytes: &[u8]| {
        std::io::Write::write_all(s, bytes).unwrap();
        let mut back = vec![0u8; bytes.len()];
        std::io::Read::read_exact(s, &mut back).unwrap();
        assert_eq!(back, bytes);
    };
    echo(&mut tunnel, b"\x00\x01before");
    proxy.signal(Signal::SIGTERM);
    wait_until("the grace period to start", Duration::from_secs(5), || {
        proxy
            .log_text()
            .contains("grace period: 1 client connections open")
    });
    // Deliberate pause, not a wait: the process must still be there.
    std::thread::sleep(Duration::from_millis(300));
    echo(&mut tunnel, b"\x00\x02during the grace period");
    assert!(proxy.is_running(), "{}", proxy.log_text());
    let t = Instant::now();
    drop(tunnel);
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .expect("tproxyd exits once the relay is closed");
    let took = t.elapsed();
    eprintln!("sigterm_idle: exited {status} {took:?} after the relay closed");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    let log = proxy.log_text();
    assert!(
        log.contains("exiting: no client connection open any more"),
        "{log}"
    );
    // The tunnel's access-log record was written out before the exit.
    assert!(
        log.contains("tunnel=unknown"),
        "no record of the tunnel in:\n{log}"
    );

    // A relay still open when the grace period (1 s) is over is cut, and
    // the log says how many were.
    let yaml = gen_config(&dir.0, "x", false);
    let mut proxy = Proxy::spawn(&lab, &dir.0, "cut", &yaml, &[]);
    proxy.wait_listening(&lab, &[8888]);
    let mut tunnel = lab.client_connect(&format!("{SERVER_V4}:85")).unwrap();
    tunnel
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    echo(&mut tunnel, b"\x00\x03held past the grace period");
    let t = Instant::now();
    proxy.signal(Signal::SIGTERM);
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .expect("tproxyd exits at the end of its grace period");
    let took = t.elapsed();
    eprintln!("sigterm_idle: a relay open, exited {status} {took:?} after SIGTERM");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    let log = proxy.log_text();
    assert!(
        log.contains("the grace period is over with 1 client connections open, cut"),
        "{log}"
    );
    let mut byte = [0u8; 1];
    assert!(
        matches!(std::io::Read::read(&mut tunnel, &mut byte), Ok(0) | Err(_)),
        "the cut tunnel is still open"
    );
}

/// SIGINT stops tproxyd at once, also sent the moment its listener opens,
/// and with a runtime per thread (`work_stealing: false`), where the
/// accept loop used to run on another thread's runtime than the one its
/// listener was registered with and spun forever once that one had shut
/// down (vendor/PATCHES.md): several starts, since it was a race.
#[test]
fn sigint_stops_at_once() {
    if !lab_available("sigint") {
        return;
    }
    let lab = Lab::up();
    for (stealing, starts) in [(true, 4), (false, 60)] {
        for i in 0..starts {
            let dir = TempDir::new("int");
            let yaml = gen_config(&dir.0, "x", true).replace(
                "threads: 2\n",
                &format!("threads: 2\nwork_stealing: {stealing}\n"),
            );
            assert!(yaml.contains(&format!("work_stealing: {stealing}\n")));
            let mut proxy = Proxy::spawn(&lab, &dir.0, "p", &yaml, &[]);
            proxy.wait_listening(&lab, &[8888]);
            let t = Instant::now();
            proxy.signal(Signal::SIGINT);
            if proxy.wait_exit(Duration::from_secs(3)).is_none() {
                let log = proxy.log_text();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                panic!("work_stealing: {stealing}, start {i}: running 3 s after SIGINT; log ends:\n{tail}");
            }
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
    }
}

/// Kills a daemonized tproxyd (not our child) on drop.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn daemon_mode_writes_pid_file_and_error_log_and_stops_on_sigterm() {
    if !lab_available("daemon_mode") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("daemon");
    let error_log = dir.0.join("error.log");
    let pid_file = dir.0.join("tproxyd.pid");
    let yaml = format!(
        "daemon: true\nerror_log: {}\n{}",
        error_log.display(),
        gen_config(&dir.0, "daemon", true)
    );
    let mut parent = Proxy::spawn(&lab, &dir.0, "d", &yaml, &[]);
    let status = parent
        .wait_exit(Duration::from_secs(10))
        .expect("the foreground process returns after forking");
    assert!(status.success(), "{status}: {}", parent.log_text());

    let pid = read_pid(&pid_file, None);
    let _guard = KillOnDrop(pid);
    assert!(alive(pid), "daemon {pid} is not running");
    wait_port(&lab, 8888);

    let resp = get(&lab, &format!("{SERVER_V4}:80"), "example.test", "/daemon");
    assert_eq!(resp.status, 200);
    assert_eq!(origin.seen()[0].headers["x-proxy-gen"], "daemon");
    wait_until(
        "the access line in error_log",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(&error_log)
                .unwrap_or_default()
                .contains("/daemon")
        },
    );

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    wait_until(
        "the daemon to stop on SIGTERM",
        Duration::from_secs(15),
        || !alive(pid),
    );
}

#[test]
fn daemon_with_unusable_listener_fails_in_the_foreground() {
    if !lab_available("daemon_bind_failure") {
        return;
    }
    let lab = Lab::up();
    let _squatter = in_netns(&lab.router_ns(), || {
        std::net::TcpListener::bind("[::]:8888").unwrap()
    });
    let dir = TempDir::new("daemonfail");
    let yaml = format!("daemon: true\n{}", gen_config(&dir.0, "x", true));
    let mut parent = Proxy::spawn(&lab, &dir.0, "d", &yaml, &[]);
    let status = parent
        .wait_exit(Duration::from_secs(10))
        .expect("fails at once");
    assert!(!status.success());
    let log = parent.log_text();
    assert!(
        log.contains("listener lan-http cannot listen on [::]:8888"),
        "{log}"
    );
    assert!(!dir.0.join("tproxyd.pid").exists(), "no daemon was started");
}

#[test]
fn without_cap_net_admin_start_up_fails_clearly() {
    if !lab_available("no_cap_net_admin") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("nocap");
    let conf = dir.0.join("c.yaml");
    std::fs::write(&conf, gen_config(&dir.0, "x", true)).unwrap();
    // The test's own namespace is fine: it must fail before touching sockets.
    let out = std::process::Command::new(tproxyd_bin())
        .arg("-c")
        .arg(&conf)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAP_NET_ADMIN"), "{err}");
}

/// Waits (up to 10 s) for the pid file at `path` to name a live process
/// other than `not`, and returns its pid.
fn read_pid(path: &std::path::Path, not: Option<i32>) -> i32 {
    let mut pid = None;
    wait_until(
        &format!("a (new) live pid in {}", path.display()),
        Duration::from_secs(10),
        || {
            pid = std::fs::read_to_string(path)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                .filter(|p| Some(*p) != not && alive(*p));
            pid.is_some()
        },
    );
    pid.unwrap()
}

/// What `systemctl reload` runs (conf/tproxyd.service): `-t`, SIGQUIT to
/// the main pid, then `-u -d` — with daemons, the pid file and load.
#[test]
fn systemd_style_reload_of_a_daemon_under_load() {
    if !lab_available("systemd_style_reload") {
        return;
    }
    let lab = Lab::up();
    let origin = Origin::start(&lab, &[80]);
    let dir = TempDir::new("sdreload");
    let pid_file = dir.0.join("tproxyd.pid");
    let conf = |generation: &str| {
        format!(
            "daemon: true\nerror_log: {}\n{}",
            dir.0.join("error.log").display(),
            gen_config(&dir.0, generation, true)
        )
    };
    let mut start = Proxy::spawn(&lab, &dir.0, "start", &conf("one"), &[]);
    assert!(start
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let old_pid = read_pid(&pid_file, None);
    let _old_guard = KillOnDrop(old_pid);
    wait_port(&lab, 8888);

    let stop = Arc::new(AtomicBool::new(false));
    let dst = format!("{SERVER_V4}:80");
    let load = start_load(&lab, &dst, 2, 1, stop.clone());
    wait_load_flowing(&origin, &dst, load.len());

    // ExecReload, step by step, with the changed config in place.
    let mut check = Proxy::spawn(&lab, &dir.0, "reload", &conf("two"), &["-t"]);
    assert!(check
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old_pid), Signal::SIGQUIT).unwrap();
    let mut upgrade = Proxy::spawn(&lab, &dir.0, "reload", &conf("two"), &["-u", "-d"]);
    let status = upgrade
        .wait_exit(Duration::from_secs(15))
        .expect("`-u -d` returns once it holds the sockets");
    assert!(status.success(), "{status}: {}", upgrade.log_text());
    let new_pid = read_pid(&pid_file, Some(old_pid));
    let _new_guard = KillOnDrop(new_pid);

    wait_until("the old daemon to exit", Duration::from_secs(20), || {
        !alive(old_pid)
    });
    let mark = origin.count();
    // Deliberate pause, not a wait: the load runs on against the new
    // daemon alone for a while.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = finish_load(load);
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert_eq!(report.retried_on_fresh_connection, 0);
    let gens = gens_seen(&origin, mark);
    assert!(
        !gens.is_empty() && gens.iter().all(|g| g == "two"),
        "{gens:?}"
    );
    assert!(alive(new_pid));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(new_pid), Signal::SIGINT).unwrap();
}
