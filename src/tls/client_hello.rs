//! Reading a TLS ClientHello without terminating TLS: just enough framing
//! to collect the first handshake message (which may span several TCP
//! segments and several TLS records), then rusticata's `tls-parser` for the
//! message itself. Every length is bounded and every input is handled: this
//! runs on bytes from anyone on the LAN (see `fuzz/` and the tests below).

use tls_parser::{
    parse_tls_extensions, parse_tls_message_handshake, SNIType, TlsExtension, TlsMessage,
    TlsMessageHandshake,
};

/// TLS record header: type (1), version (2), length (2).
const RECORD_HEADER: usize = 5;
/// Largest TLS record payload allowed (2^14 plus expansion, RFC 8446 §5.2).
const MAX_RECORD: usize = 16384 + 2048;
/// Largest ClientHello we accept; post-quantum key shares make them a few
/// KiB, nothing legitimate comes near this.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// What a ClientHello tells a passthrough proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The server name (SNI host name), lower-cased; `None` when absent.
    pub sni: Option<String>,
    /// ALPN protocols offered, in order (`h2`, `http/1.1`, …).
    pub alpn: Vec<String>,
    /// TLS versions offered: the `supported_versions` extension, or the
    /// legacy version field when there is none.
    pub versions: Vec<TlsVersion>,
    /// An Encrypted Client Hello (`encrypted_client_hello`, 0xfe0d) is
    /// offered: `sni` is then the outer, public name.
    pub ech: bool,
}

/// The `encrypted_client_hello` extension type (RFC 9849).
const EXT_ECH: u16 = 0xfe0d;

/// A TLS protocol version as offered, e.g. `0x0304` (TLS 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsVersion(pub u16);

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0x0300 => f.write_str("ssl3"),
            0x0301 => f.write_str("1.0"),
            0x0302 => f.write_str("1.1"),
            0x0303 => f.write_str("1.2"),
            0x0304 => f.write_str("1.3"),
            v if v & 0x0f0f == 0x0a0a => f.write_str("grease"),
            v => write!(f, "0x{v:04x}"),
        }
    }
}

/// The state of the bytes read so far from a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peeked {
    /// A TLS start, but the ClientHello is not complete yet: read more.
    NeedMore,
    /// The first byte cannot start a TLS handshake record (plain HTTP,
    /// SSLv2-style hello, anything else).
    NotTls,
    /// TLS framing, but not a valid ClientHello (wrong message, absurd
    /// lengths, garbage inside).
    Invalid(&'static str),
    /// A complete, parsed ClientHello.
    Hello(ClientHello),
}

/// Looks at the first bytes a client sent. Never panics, never reads past
/// `buf`, and asks for more only while a ClientHello can still be complete
/// within [`MAX_CLIENT_HELLO`].
pub fn peek_client_hello(buf: &[u8]) -> Peeked {
    if buf.is_empty() {
        return Peeked::NeedMore;
    }
    if buf[0] != 0x16 {
        return Peeked::NotTls;
    }
    let mut handshake: Vec<u8> = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < RECORD_HEADER {
            return more_or_invalid(buf);
        }
        let (ctype, major, len) = (
            rest[0],
            rest[1],
            usize::from(u16::from_be_bytes([rest[3], rest[4]])),
        );
        if ctype != 0x16 {
            return Peeked::Invalid("a non-handshake record before the ClientHello was complete");
        }
        if major != 3 {
            return Peeked::Invalid("unknown record version");
        }
        if len == 0 || len > MAX_RECORD {
            return Peeked::Invalid("absurd record length");
        }
        if rest.len() < RECORD_HEADER + len {
            return more_or_invalid(buf);
        }
        handshake.extend_from_slice(&rest[RECORD_HEADER..RECORD_HEADER + len]);
        rest = &rest[RECORD_HEADER + len..];
        if handshake.len() >= 4 {
            if handshake[0] != 0x01 {
                return Peeked::Invalid("first handshake message is not a ClientHello");
            }
            let hlen = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if hlen + 4 > MAX_CLIENT_HELLO {
                return Peeked::Invalid("ClientHello too large");
            }
            if handshake.len() >= hlen + 4 {
                return parse(&handshake[..hlen + 4]);
            }
        }
    }
}

fn more_or_invalid(buf: &[u8]) -> Peeked {
    if buf.len() >= MAX_CLIENT_HELLO + 64 * RECORD_HEADER {
        Peeked::Invalid("ClientHello too large")
    } else {
        Peeked::NeedMore
    }
}

fn parse(message: &[u8]) -> Peeked {
    let hello = match parse_tls_message_handshake(message) {
        Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(h)))) => h,
        Ok(_) => return Peeked::Invalid("not a ClientHello"),
        Err(_) => return Peeked::Invalid("malformed ClientHello"),
    };
    let mut out = ClientHello::default();
    let mut supported = None;
    if let Some(ext) = hello.ext {
        let Ok((_, exts)) = parse_tls_extensions(ext) else {
            return Peeked::Invalid("malformed ClientHello extensions");
        };
        for e in exts {
            match e {
                TlsExtension::SNI(names) => {
                    out.sni = names
                        .iter()
                        .find(|(t, _)| *t == SNIType::HostName)
                        .and_then(|(_, n)| std::str::from_utf8(n).ok())
                        .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
                }
                TlsExtension::ALPN(protos) => {
                    out.alpn = protos
                        .iter()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect();
                }
                TlsExtension::SupportedVersions(v) => {
                    supported = Some(v.iter().map(|v| TlsVersion(v.0)).collect::<Vec<_>>());
                }
                TlsExtension::Unknown(t, _) if t.0 == EXT_ECH => out.ech = true,
                _ => {}
            }
        }
    }
    out.versions = supported.unwrap_or_else(|| vec![TlsVersion(hello.version.0)]);
    Peeked::Hello(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tls::synthetic::{
        client_hello, client_hello_with, extension, post_quantum_key_share, records,
    };

    fn hello(p: Peeked) -> ClientHello {
        match p {
            Peeked::Hello(h) => h,
            other => panic!("expected a ClientHello, got {other:?}"),
        }
    }

    #[test]
    fn post_quantum_sized_and_ech_hellos() {
        let pq = client_hello_with(Some("big.lab.test"), &post_quantum_key_share());
        assert!((1700..2100).contains(&pq.len()), "{}", pq.len());
        // Arriving in two segments, and as two records.
        assert_eq!(peek_client_hello(&pq[..1000]), Peeked::NeedMore);
        let h = hello(peek_client_hello(&pq));
        assert_eq!((h.sni.as_deref(), h.ech), (Some("big.lab.test"), false));
        let split = records(&pq[5..], 1000);
        assert_eq!(
            hello(peek_client_hello(&split)).sni.as_deref(),
            Some("big.lab.test")
        );
        let ech = client_hello_with(Some("public.lab.test"), &extension(0xfe0d, &[0; 200]));
        let h = hello(peek_client_hello(&ech));
        assert_eq!((h.sni.as_deref(), h.ech), (Some("public.lab.test"), true));
    }

    #[test]
    fn parses_sni_alpn_versions() {
        let h = hello(peek_client_hello(&client_hello(Some("WWW.Lab.Test"))));
        assert_eq!(h.sni.as_deref(), Some("www.lab.test"));
        assert_eq!(h.alpn, ["h2", "http/1.1"]);
        assert_eq!(h.versions, [TlsVersion(0x0304), TlsVersion(0x0303)]);
        assert_eq!(h.versions[0].to_string(), "1.3");
        assert_eq!(hello(peek_client_hello(&client_hello(None))).sni, None);
    }

    #[test]
    fn needs_more_until_complete_even_across_records() {
        let full = client_hello(Some("www.lab.test"));
        for cut in [0, 1, 4, 5, 6, 40, full.len() - 1] {
            assert_eq!(
                peek_client_hello(&full[..cut]),
                Peeked::NeedMore,
                "cut at {cut}"
            );
        }
        // The same message fragmented into many small records.
        let hs = &full[5..];
        let multi = records(hs, 7);
        for cut in [3, 10, 50, multi.len() - 1] {
            assert_eq!(
                peek_client_hello(&multi[..cut]),
                Peeked::NeedMore,
                "cut at {cut}"
            );
        }
        assert_eq!(
            hello(peek_client_hello(&multi)).sni.as_deref(),
            Some("www.lab.test")
        );
        // Bytes after the hello (early data) are not its business.
        let mut more = full.clone();
        more.extend_from_slice(b"\x17\x03\x03\x00\x01x");
        assert!(matches!(peek_client_hello(&more), Peeked::Hello(_)));
    }

    #[test]
    fn hostile_and_foreign_input() {
        assert_eq!(peek_client_hello(b"GET / HTTP/1.1\r\n"), Peeked::NotTls);
        // SSLv2-style hello.
        assert_eq!(
            peek_client_hello(&[0x80, 0x2e, 0x01, 0x00, 0x02]),
            Peeked::NotTls
        );
        assert!(matches!(
            peek_client_hello(&[0x16, 0x03, 0x01, 0xff, 0xff]),
            Peeked::Invalid(_)
        ));
        assert!(matches!(
            peek_client_hello(&[0x16, 0x03, 0x01, 0x00, 0x00]),
            Peeked::Invalid(_)
        ));
        assert!(matches!(
            peek_client_hello(&[0x16, 0x09, 0x01, 0x00, 0x01, 0x01]),
            Peeked::Invalid(_)
        ));
        // A ServerHello (type 2) where a ClientHello belongs.
        assert!(matches!(
            peek_client_hello(&[0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0, 0, 0]),
            Peeked::Invalid(_)
        ));
        // A handshake length far beyond the cap.
        assert!(matches!(
            peek_client_hello(&[0x16, 0x03, 0x03, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff]),
            Peeked::Invalid(_)
        ));
        // Garbage inside a well-framed ClientHello.
        let mut bad = client_hello(Some("x.test"));
        for b in bad.iter_mut().skip(9).take(40) {
            *b = 0xff;
        }
        assert!(!matches!(
            peek_client_hello(&bad),
            Peeked::NeedMore | Peeked::Hello(_)
        ));
    }

    /// A deterministic fuzz loop (CI has no nightly for cargo-fuzz): random
    /// truncations and byte flips of valid hellos, and random bytes.
    #[test]
    fn never_panics_on_mutations() {
        let seeds = [
            client_hello(Some("www.lab.test")),
            records(&client_hello(None)[5..], 13),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let mut buf = seeds[i % 2].clone();
            for _ in 0..(rnd() % 6) {
                let pos = (rnd() as usize) % buf.len();
                buf[pos] = rnd() as u8;
            }
            buf.truncate((rnd() as usize) % (buf.len() + 1));
            let _ = peek_client_hello(&buf);
            let noise: Vec<u8> = (0..(rnd() % 300)).map(|_| rnd() as u8).collect();
            let _ = peek_client_hello(&noise);
        }
    }
}
