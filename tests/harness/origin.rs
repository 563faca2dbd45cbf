//! The origin: an HTTP/1.1 server in the server namespace that records
//! what it sees of each request, a TCP echo server, and slow bodies.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::read_head;
use super::{in_netns, wait_until, Lab};

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
    /// The request body (Content-Length or chunked), lossily as text.
    pub body: String,
}

/// An HTTP/1.1 origin in the server namespace, listening dual-stack on the
/// given ports of all its addresses. It answers `origin <local> <method>
/// <path>` and records every request; `/status/NNN` answers with NNN,
/// `/delay/MS/...` after MS milliseconds.
pub struct Origin {
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// A dual-stack listening socket on `port` of every address of the server
/// namespace.
pub fn server_listener(lab: &Lab, port: u16) -> TcpListener {
    in_netns(&lab.server_ns(), move || {
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        s.set_only_v6(false).unwrap();
        s.set_reuse_address(true).unwrap();
        let addr: SocketAddr = format!("[::]:{port}").parse().unwrap();
        s.bind(&addr.into()).unwrap();
        s.listen(1024).unwrap();
        TcpListener::from(s)
    })
}

impl Origin {
    pub fn start(lab: &Lab, ports: &[u16]) -> Origin {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        for &port in ports {
            let listener = server_listener(lab, port);
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
        let listener = server_listener(lab, port);
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

/// A chunked request body (no trailers), or `None` if malformed.
fn read_chunked(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let size = usize::from_str_radix(line.trim(), 16).ok()?;
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..size]);
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
        let chunked = map
            .get("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let body = if chunked {
            match read_chunked(&mut reader) {
                Some(b) => b,
                None => return,
            }
        } else {
            let len: usize = map
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            body
        };
        let method = req.method.unwrap_or("").to_string();
        let path = req.path.unwrap_or("").to_string();
        seen.lock().unwrap().push(Seen {
            conn,
            peer,
            local,
            method: method.clone(),
            path: path.clone(),
            headers: map,
            body: String::from_utf8_lossy(&body).into_owned(),
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
        if let Some(ms) = path
            .strip_prefix("/delay/")
            .and_then(|r| r.split('/').next())
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            // Deliberate pause, not a wait: a slow origin is this path's job.
            std::thread::sleep(Duration::from_millis(ms));
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
