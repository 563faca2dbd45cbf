//! The HTTP/1.1 client: a parsed [`Response`], a [`Client`] on one
//! connection, and a one-shot [`get`] from the client namespace.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::Lab;

/// Reads one HTTP message head, up to and including the empty line;
/// `None` at end of stream. Shared with the origin server.
pub(super) fn read_head(r: &mut impl BufRead) -> Option<Vec<u8>> {
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

    /// Sends raw bytes without reading anything (e.g. pipelined requests,
    /// whose responses are then read one by one).
    pub fn send_raw_only(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
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
