//! The end-to-end harness: a namespace lab (`lab/lab.sh`), an HTTP origin
//! in the server namespace, tproxyd in the router namespace and raw HTTP/1.1
//! clients in the client namespace, all real sockets through real TPROXY.
//!
//! Sockets are created by threads that `setns()` into a namespace; a socket
//! stays in the namespace it was created in, so the test can use it from any
//! thread afterwards. Every namespace and process is removed on drop, also
//! when a test panics.
//!
//! One file per concept: the lab and its namespaces (here), the origin
//! server ([`origin`]), the HTTP client ([`client`]), the tproxyd process
//! ([`proxy`]), client load ([`load`]) and the admin/metrics endpoint
//! ([`metrics`]). Everything is re-exported here, so a test needs only
//! `mod harness; use harness::*;`.
#![allow(dead_code)]

mod client;
mod load;
mod metrics;
mod origin;
mod proxy;
mod side;
mod tls_origin;

// Each test binary uses only part of the harness, so some of these
// re-exports go unused in any one of them.
#[allow(unused_imports)]
pub use self::{client::*, load::*, metrics::*, origin::*, proxy::*, side::*, tls_origin::*};

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Client (LAN) addresses; the client namespace has a second one per family.
pub const CLIENT_V4: &str = "192.0.2.10";
pub const CLIENT_V6: &str = "2001:db8:1::10";
pub const CLIENT2_V4: &str = "192.0.2.11";
pub const CLIENT2_V6: &str = "2001:db8:1::11";
/// The router's addresses on both sides.
pub const ROUTER_LAN_V4: &str = "192.0.2.1";
pub const ROUTER_LAN_V6: &str = "2001:db8:1::1";
pub const ROUTER_WAN_V4: &str = "198.51.100.1";
pub const ROUTER_WAN_V6: &str = "2001:db8:2::1";
/// Two origin addresses per family, all on the server namespace.
pub const SERVER_V4: &str = "198.51.100.10";
pub const SERVER2_V4: &str = "198.51.100.11";
pub const SERVER_V6: &str = "2001:db8:2::10";
pub const SERVER2_V6: &str = "2001:db8:2::11";

/// Returns true when the lab can run. Without root it prints why and the
/// test returns early; under `CI=true` a missing privilege is a failure.
pub fn lab_available(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = ["ip", "nft"]
        .iter()
        .all(|t| Command::new(t).arg("-V").output().is_ok());
    if root && tools {
        return true;
    }
    let why = if !root {
        "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) for network namespaces and TPROXY"
    } else {
        "needs 'ip' (iproute2) and 'nft' (nftables) on PATH"
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}, and CI=true forbids skipping");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One lab: three namespaces, deleted on drop.
pub struct Lab {
    pub prefix: String,
}

/// Numbers labs and temporary directories apart within one test process.
static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Lab {
    pub fn up() -> Lab {
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("tpx{}x{n}", std::process::id());
        // Construct the guard first so a half-built lab is also torn down.
        let lab = Lab { prefix };
        let out = Command::new(repo_root().join("lab/lab.sh"))
            .args(["up", &lab.prefix])
            .env("TPROXYD_BIN", env!("CARGO_BIN_EXE_tproxyd"))
            .output()
            .expect("run lab/lab.sh");
        assert!(
            out.status.success(),
            "lab.sh up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    pub fn client_ns(&self) -> String {
        format!("{}-cli", self.prefix)
    }
    pub fn router_ns(&self) -> String {
        format!("{}-rtr", self.prefix)
    }
    pub fn server_ns(&self) -> String {
        format!("{}-srv", self.prefix)
    }

    /// Runs a command inside a namespace and returns its output.
    pub fn exec(&self, ns: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// A TCP connection from the client namespace.
    pub fn client_connect(&self, dst: &str) -> std::io::Result<TcpStream> {
        let dst: SocketAddr = dst.parse().expect("socket address");
        in_netns(&self.client_ns(), move || {
            TcpStream::connect_timeout(&dst, Duration::from_secs(5))
        })
    }

    /// A TCP connection from the client namespace, from source IP `src`.
    pub fn client_connect_from(&self, src: &str, dst: &str) -> std::io::Result<TcpStream> {
        let dst: SocketAddr = dst.parse().expect("socket address");
        let src: SocketAddr = SocketAddr::new(src.parse().expect("IP"), 0);
        in_netns(&self.client_ns(), move || {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(dst),
                socket2::Type::STREAM,
                None,
            )?;
            s.bind(&src.into())?;
            s.connect_timeout(&dst.into(), Duration::from_secs(5))?;
            s.set_nonblocking(false)?;
            Ok(s.into())
        })
    }

    /// Gives the client namespace one more LAN address (v4, in
    /// 192.0.2.0/24), for tests that need many clients.
    pub fn add_client_v4(&self, addr: &str) {
        let out = self.exec(
            &self.client_ns(),
            &["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"],
        );
        assert!(
            out.status.success(),
            "ip addr add {addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Packets counted by the router's `upstream-marked` nft rule.
    pub fn marked_packets(&self) -> u64 {
        let out = self.exec(
            &self.router_ns(),
            &["nft", "list", "chain", "inet", "lab", "output"],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter in {text}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("lab/lab.sh"))
            .args(["down", &self.prefix])
            .output();
    }
}

/// Runs `f` on a fresh thread that has joined network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_netns(ns, f)
        .join()
        .expect("namespace thread panicked")
}

/// Spawns a thread that joins network namespace `ns` and runs `f`; every
/// socket it creates lives in that namespace.
pub fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

/// How often the `wait_*` helpers look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Calls `cond` every [`POLL_INTERVAL`] until it returns true or `limit`
/// has passed, and returns whether it did. For waits whose failure message
/// needs more than a name (a log, a metrics body); otherwise use
/// [`wait_until`]. `cond` is always called at least once.
pub fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Waits until `cond` returns true, polling every [`POLL_INTERVAL`]; panics
/// naming `what` (what was awaited) once `limit` has passed. Use this
/// instead of a fixed sleep whenever a test waits for something to happen.
pub fn wait_until(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    assert!(
        poll_until(limit, cond),
        "timed out after {limit:?} waiting for {what}"
    );
}

/// Whether `port` accepts connections on 127.0.0.1 in the router namespace
/// (a plain connect that sends nothing: proves the socket listens).
fn router_port_open(lab: &Lab, port: u16) -> bool {
    in_netns(&lab.router_ns(), move || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
}

/// Waits (up to 10 s) until `port` accepts connections on 127.0.0.1 in
/// the router namespace (a plain connect that sends nothing).
pub fn wait_port(lab: &Lab, port: u16) {
    wait_until(
        &format!("something to listen on {port} in the router"),
        Duration::from_secs(10),
        || router_port_open(lab, port),
    );
}
