//! What works without `CAP_NET_ADMIN`: a forward-proxy listener is not
//! transparent, so tproxyd serves it as an ordinary user. Loopback only, no
//! namespaces, no root needed (as root, the proxy is started as `nobody`).

mod harness;

use harness::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An origin on 127.0.0.1 answering each request with its request line;
/// every request head it saw goes to the returned channel.
fn origin() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut out = conn;
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let first = head.lines().next().unwrap_or_default().to_string();
                    let _ = tx.send(head);
                    let body = format!("origin saw {first}\n");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if out.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

/// tproxyd with one forward listener on `port`, without CAP_NET_ADMIN.
struct Unprivileged(Child);

impl Unprivileged {
    fn start(dir: &TempDir, port: u16, origin_port: u16) -> Unprivileged {
        Unprivileged::start_with(dir, port, origin_port, None, Stdio::null())
    }

    /// With the open-file limit set to `nofile` (soft and hard) if given,
    /// and stderr (the operational log) to `stderr`.
    fn start_with(
        dir: &TempDir,
        port: u16,
        origin_port: u16,
        nofile: Option<u64>,
        stderr: Stdio,
    ) -> Unprivileged {
        let conf = dir.0.join("forward.yaml");
        std::fs::write(
            &conf,
            format!(
                r#"threads: 1
tproxyd:
  admin: {{ enabled: false }}
  listeners:
    - name: fwd
      address: "127.0.0.1:{port}"
      mode: forward
      allow_clients: ["127.0.0.1"]
      allow_local_destinations: true
      connect_ports: [{origin_port}]
"#
            ),
        )
        .unwrap();
        // Readable by `nobody` when we drop to it.
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir.0)
            .status();
        let mut cmd = Command::new(tproxyd_bin());
        cmd.arg("-c").arg(&conf).stdin(Stdio::null());
        if nix::unistd::geteuid().is_root() {
            // No capabilities at all: what an ordinary user has.
            cmd.uid(65534).gid(65534);
        }
        if let Some(n) = nofile {
            // SAFETY: only an async-signal-safe setrlimit between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = cmd.stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
        let mut proxy = Unprivileged(child);
        wait_until("the forward listener", Duration::from_secs(10), || {
            if let Ok(Some(status)) = proxy.0.try_wait() {
                panic!("tproxyd exited: {status}");
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        proxy
    }
}

impl Drop for Unprivileged {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_forward_listener_runs_without_cap_net_admin() {
    let dir = TempDir::new("unprivileged");
    let (origin_port, seen) = origin();
    let port = free_port();
    let _proxy = Unprivileged::start(&dir, port, origin_port);

    // Absolute-form GET: forwarded in origin form, with our Via.
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut client = Client::new(stream);
    let target = format!("http://127.0.0.1:{origin_port}/abs?q=1");
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{origin_port}\r\nProxy-Connection: keep-alive\r\n\r\n"
    );
    let resp = client.send_raw(req.as_bytes()).unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, "origin saw GET /abs?q=1 HTTP/1.1\n");
    let head = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("via: 1.1 tproxyd\r\n"), "{head}");
    assert!(!lower.contains("proxy-connection"), "{head}");

    // An origin-form request is not what a forward proxy takes.
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let resp = Client::new(stream)
        .send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(resp.status, 400, "{resp:?}");

    // CONNECT to an allowed port: a byte-exact tunnel.
    let mut tunnel = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tunnel
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        tunnel,
        "CONNECT 127.0.0.1:{origin_port} HTTP/1.1\r\nHost: 127.0.0.1:{origin_port}\r\n\r\n"
    )
    .unwrap();
    let mut established = [0u8; 39];
    tunnel.read_exact(&mut established).unwrap();
    assert_eq!(&established, b"HTTP/1.1 200 Connection Established\r\n\r\n");
    tunnel
        .write_all(b"GET /through HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let resp = Client::new(tunnel).read_response().unwrap();
    assert_eq!(resp.body, "origin saw GET /through HTTP/1.1\n");
    let head = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("via:"),
        "a tunnel carries the client's bytes untouched: {head}"
    );
}

#[test]
fn max_connections_is_lowered_to_what_the_open_file_limit_holds() {
    let dir = TempDir::new("nofile");
    let (origin_port, _seen) = origin();
    let port = free_port();
    let log = dir.0.join("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let _proxy = Unprivileged::start_with(&dir, port, origin_port, Some(1000), file.into());
    let mut text = String::new();
    wait_until("the start-up warning", Duration::from_secs(5), || {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("lowered to")
    });
    // 1000 - 64 reserved - 1 listener - 128 pooled upstreams = 807; splice
    // pipes: 807 / 8 = 100, holding at most 2 × 100 = 200 descriptors
    // (relay::pipe_limit, relay::fd_budget); (1000 - 193 - 200) / 2 = 303.
    assert!(
        text.contains("downstream.max_connections 10000 lowered to 303")
            && text.contains("200 are kept for 100 splice pipes"),
        "{text}"
    );
}
