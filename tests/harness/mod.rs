//! The end-to-end harness: a namespace lab (`lab/lab.sh`), an HTTP origin
//! in the server namespace, tproxyd in the router namespace and raw HTTP/1.1
//! clients in the client namespace, all real sockets through real TPROXY.
//!
//! Sockets are created by threads that `setns()` into a namespace; a socket
//! stays in the namespace it was created in, so the test can use it from any
//! thread afterwards. Every namespace and process is removed on drop, also
//! when a test panics.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Lab {
    pub fn up() -> Lab {
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("tpx{}x{n}", std::process::id());
        // Construct the guard first so a half-built lab is also torn down.
        let lab = Lab { prefix };
        let out = Command::new(repo_root().join("lab/lab.sh"))
            .args(["up", &lab.prefix])
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

    /// Packets counted by the router's `upstream-marked` nft rule.
    pub fn marked_packets(&self) -> u64 {
        let out = self.exec(
            &self.router_ns(),
            &["nft", "list", "chain", "inet", "tproxyd", "output"],
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

/// What the origin saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which accepted connection it came on (counts upstream connections).
    pub conn: usize,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub method: String,
    pub path: String,
    /// Header names lower-cased; repeated headers joined with ", ".
    pub headers: HashMap<String, String>,
}

/// An HTTP/1.1 origin in the server namespace, listening dual-stack on the
/// given ports of all its addresses. It answers `origin <local> <method>
/// <path>` and records every request; `/status/NNN` answers with NNN.
pub struct Origin {
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

impl Origin {
    pub fn start(lab: &Lab, ports: &[u16]) -> Origin {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        for &port in ports {
            let listener = in_netns(&lab.server_ns(), move || {
                let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)
                    .unwrap();
                s.set_only_v6(false).unwrap();
                s.set_reuse_address(true).unwrap();
                let addr: SocketAddr = format!("[::]:{port}").parse().unwrap();
                s.bind(&addr.into()).unwrap();
                s.listen(1024).unwrap();
                TcpListener::from(s)
            });
            let seen = seen.clone();
            let conns = conns.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { break };
                    let conn = conns.fetch_add(1, Ordering::SeqCst);
                    let seen = seen.clone();
                    std::thread::spawn(move || serve_origin_conn(stream, conn, seen));
                }
            });
        }
        Origin { seen }
    }

    /// A TCP echo server on `port` in the server namespace (for CONNECT
    /// tunnels): sends back every byte it receives.
    pub fn start_echo(lab: &Lab, port: u16) {
        let listener = in_netns(&lab.server_ns(), move || {
            let s =
                socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
            s.set_only_v6(false).unwrap();
            s.set_reuse_address(true).unwrap();
            let addr: SocketAddr = format!("[::]:{port}").parse().unwrap();
            s.bind(&addr.into()).unwrap();
            s.listen(128).unwrap();
            TcpListener::from(s)
        });
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let _ = std::io::copy(&mut reader, &mut stream);
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                });
            }
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits (up to 10 s) until a request for `path` has reached the
    /// origin, e.g. so that a slow response is known to be in flight
    /// through the proxy; returns what the origin saw of it.
    pub fn wait_request(&self, path: &str) -> Seen {
        let mut found = None;
        wait_until(
            &format!("a request for {path} at the origin"),
            Duration::from_secs(10),
            || {
                found = self.seen().into_iter().find(|s| s.path == path);
                found.is_some()
            },
        );
        found.unwrap()
    }
}

fn serve_origin_conn(stream: TcpStream, conn: usize, seen: Arc<Mutex<Vec<Seen>>>) {
    let peer = canonical(stream.peer_addr().unwrap());
    let local = canonical(stream.local_addr().unwrap());
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let Some(head) = read_head(&mut reader) else {
            return;
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&head).is_err() {
            return;
        }
        let mut map: HashMap<String, String> = HashMap::new();
        for h in req.headers.iter() {
            let v = String::from_utf8_lossy(h.value).to_string();
            map.entry(h.name.to_ascii_lowercase())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(&v)
                })
                .or_insert(v);
        }
        let len: usize = map
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let method = req.method.unwrap_or("").to_string();
        let path = req.path.unwrap_or("").to_string();
        seen.lock().unwrap().push(Seen {
            conn,
            peer,
            local,
            method: method.clone(),
            path: path.clone(),
            headers: map,
        });
        if let Some(n) = path
            .strip_prefix("/slow/")
            .and_then(|n| n.parse::<usize>().ok())
        {
            if write_slow(&mut out, n).is_err() {
                return;
            }
            continue;
        }
        let status: u16 = path
            .strip_prefix("/status/")
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        let body = format!("origin {local} {method} {path}\n");
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// The body `/slow/N` streams: N chunks of 1000 bytes, 100 ms apart.
pub fn slow_body(n: usize) -> String {
    (0..n).map(slow_chunk).collect()
}

fn slow_chunk(i: usize) -> String {
    let tag = format!("chunk {i:05} ");
    tag.repeat(1000 / tag.len() + 1)[..1000].to_string()
}

fn write_slow(out: &mut TcpStream, n: usize) -> std::io::Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n",
    )?;
    for i in 0..n {
        let c = slow_chunk(i);
        out.write_all(format!("{:x}\r\n{c}\r\n", c.len()).as_bytes())?;
        out.flush()?;
        // Deliberate pause, not a wait: being slow is this origin's job.
        std::thread::sleep(Duration::from_millis(100));
    }
    out.write_all(b"0\r\n\r\n")
}

fn read_head(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            return Some(head);
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// A minimal HTTP/1.1 client on an existing connection, so that tests
/// control keep-alive and exactly what is sent.
pub struct Client {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

impl Client {
    pub fn new(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    /// Sends a GET with the given Host and extra header lines.
    pub fn get(
        &mut self,
        host: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> std::io::Result<Response> {
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tproxyd-test\r\n");
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.send_raw(req.as_bytes())
    }

    /// Sends raw bytes and reads one response.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<Response> {
        self.stream.write_all(bytes)?;
        self.read_response()
    }

    pub fn read_response(&mut self) -> std::io::Result<Response> {
        let head = read_head(&mut self.reader).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            )
        })?;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&head)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let mut map = HashMap::new();
        for h in resp.headers.iter() {
            map.insert(
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).to_string(),
            );
        }
        let status = resp.code.unwrap_or(0);
        let mut body = Vec::new();
        if let Some(len) = map
            .get("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            body.resize(len, 0);
            self.reader.read_exact(&mut body)?;
        } else if map
            .get("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut line = String::new();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            self.reader.read_to_end(&mut body)?;
        }
        Ok(Response {
            status,
            headers: map,
            body: String::from_utf8_lossy(&body).to_string(),
        })
    }
}

/// One GET on a fresh connection from the client namespace.
pub fn get(lab: &Lab, dst: &str, host: &str, path: &str) -> Response {
    let stream = lab
        .client_connect(dst)
        .unwrap_or_else(|e| panic!("connect to {dst}: {e}"));
    Client::new(stream)
        .get(host, path, &[])
        .unwrap_or_else(|e| panic!("GET {dst}{path}: {e}"))
}

/// A tproxyd process in the router namespace, killed on drop.
pub struct Proxy {
    child: Child,
    pub log: PathBuf,
    _dir: Option<TempDir>,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("tproxyd-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn tproxyd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tproxyd")
}

/// The path of an example binary (built by `cargo test` / `cargo build
/// --examples`, next to the tproxyd binary).
pub fn example_bin(name: &str) -> String {
    let p = Path::new(tproxyd_bin())
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: build the examples (`cargo test` does, or `cargo build --examples`)",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

/// The lab's standard config: TPROXY on [::]:8888, REDIRECT on [::]:8889,
/// short timeouts so that failure tests are quick. `extra` is appended to the
/// `tproxyd:` section.
pub fn lab_config(dir: &Path, extra: &str) -> String {
    format!(
        r#"version: 1
threads: 2
pid_file: {dir}/tproxyd.pid
upgrade_sock: {dir}/upgrade.sock
grace_period_seconds: 1
graceful_shutdown_timeout_seconds: 1
tproxyd:
  listeners:
    - name: lan-http
      address: "[::]:8888"
      mode: tproxy
    - name: lan-nat
      address: "[::]:8889"
      mode: redirect
  upstream:
    connect_timeout: 1s
    read_timeout: 3s
{extra}"#,
        dir = dir.display()
    )
}

impl Proxy {
    /// Starts tproxyd with `yaml` and waits until its listeners accept.
    pub fn start(lab: &Lab, yaml: &str, ports: &[u16]) -> Proxy {
        Proxy::start_bin(lab, tproxyd_bin(), yaml, ports)
    }

    /// Like [`Proxy::start`] with another binary built on the library
    /// (an example).
    pub fn start_bin(lab: &Lab, bin: &str, yaml: &str, ports: &[u16]) -> Proxy {
        let dir = TempDir::new("proxy");
        let mut proxy = Proxy::spawn_bin(lab, bin, &dir.0, "tproxyd", yaml, &[]);
        proxy._dir = Some(dir);
        proxy.wait_listening(lab, ports);
        proxy
    }

    /// Starts tproxyd without waiting, with its config and log named `tag`
    /// in `dir` and extra CLI `args` (e.g. `-u`).
    pub fn spawn(lab: &Lab, dir: &Path, tag: &str, yaml: &str, args: &[&str]) -> Proxy {
        Proxy::spawn_bin(lab, tproxyd_bin(), dir, tag, yaml, args)
    }

    fn spawn_bin(lab: &Lab, bin: &str, dir: &Path, tag: &str, yaml: &str, args: &[&str]) -> Proxy {
        let conf = dir.join(format!("{tag}.yaml"));
        std::fs::write(&conf, yaml).unwrap();
        let log = dir.join(format!("{tag}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.router_ns(), bin])
            .args(args)
            .arg("-c")
            .arg(&conf)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("{tag}.stdout"))).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn tproxyd");
        Proxy {
            child,
            log,
            _dir: None,
        }
    }

    /// Waits (up to 15 s in all) until each port accepts connections in the
    /// router namespace; panics at once if the process exits meanwhile.
    pub fn wait_listening(&mut self, lab: &Lab, ports: &[u16]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        for &port in ports {
            let child = &mut self.child;
            let log = &self.log;
            let up = poll_until(deadline.saturating_duration_since(Instant::now()), || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "tproxyd exited early ({status}):\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
                router_port_open(lab, port)
            });
            assert!(up, "tproxyd did not listen on {port}:\n{}", self.log_text());
        }
    }

    /// Waits (up to 10 s) until this process, started with `-u` and the
    /// [`lab_config`] of `dir`, listens on the upgrade socket, so that the
    /// old process hands its listeners over as soon as it gets SIGQUIT.
    /// Only looks for the socket file: a probe connection would be taken
    /// for the old process's handover.
    pub fn wait_upgrade_socket(&mut self, dir: &Path) {
        use std::os::unix::fs::FileTypeExt;
        let sock = dir.join("upgrade.sock");
        let child = &mut self.child;
        let log = &self.log;
        let ready = poll_until(Duration::from_secs(10), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "tproxyd -u exited early ({status}):\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            std::fs::metadata(&sock).is_ok_and(|m| m.file_type().is_socket())
        });
        assert!(
            ready,
            "tproxyd -u never created {}:\n{}",
            sock.display(),
            self.log_text()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the tproxyd process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig)
            .expect("signal tproxyd");
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        poll_until(limit, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Access-log lines (the default text access log, on stderr: they
    /// start with their timestamp, operational log lines with `[`).
    pub fn access_lines(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()) && l.contains(" -> "))
            .map(str::to_string)
            .collect()
    }

    /// Waits (up to 5 s) until an access-log line contains all of `needles`.
    pub fn wait_access(&self, needles: &[&str]) -> String {
        let mut line = None;
        let found = poll_until(Duration::from_secs(5), || {
            line = self
                .access_lines()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)));
            line.is_some()
        });
        assert!(
            found,
            "no access-log line with {needles:?} in:\n{}",
            self.log_text()
        );
        line.unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// GET `path` from the admin listener (127.0.0.1:9187 in the router).
pub fn admin_get(lab: &Lab, path: &str) -> Response {
    let path = path.to_string();
    in_netns(&lab.router_ns(), move || {
        let s = TcpStream::connect("127.0.0.1:9187").expect("admin listener");
        Client::new(s)
            .get("127.0.0.1:9187", &path, &[])
            .expect("admin response")
    })
}

/// The value of the sample of metric `name` whose labels include all of
/// `labels` (each `key="value"`; Prometheus sorts label names, so order
/// does not matter).
pub fn metric(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (set, value) = match rest.strip_prefix('{') {
            Some(r) => {
                let (set, v) = r.split_once("} ")?;
                (set.split(',').collect::<Vec<_>>(), v)
            }
            None => (Vec::new(), rest.strip_prefix(' ')?),
        };
        if set.len() != labels.len() || !labels.iter().all(|want| set.contains(want)) {
            return None;
        }
        value.trim().parse().ok()
    })
}
