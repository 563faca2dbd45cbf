//! The pieces of a text line, appended without `core::fmt`: the line is
//! written for every request, and `Display` for addresses and integers
//! (padding, width and precision handling per call) was most of its cost.
//! Each function writes exactly what the `Display` it replaces would,
//! as bytes: the line is a byte buffer, so nothing is checked for UTF-8
//! again on the way.

use std::net::SocketAddr;
use std::time::Duration;

/// Appends `n` in decimal.
pub(super) fn push_uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `n` as 16 lowercase hex digits (`{:016x}`).
pub(super) fn push_hex16(out: &mut Vec<u8>, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (pair, byte) in digits.chunks_exact_mut(2).zip(n.to_be_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    out.extend_from_slice(&digits);
}

/// The decimal digits of each octet value, and how many there are.
const OCTETS: [([u8; 3], u8); 256] = {
    let mut table = [([0u8; 3], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let (h, t, o) = ((i / 100) as u8, (i / 10 % 10) as u8, (i % 10) as u8);
        table[i] = if i >= 100 {
            ([b'0' + h, b'0' + t, b'0' + o], 3)
        } else if i >= 10 {
            ([b'0' + t, b'0' + o, 0], 2)
        } else {
            ([b'0' + o, 0, 0], 1)
        };
        i += 1;
    }
    table
};

/// Appends `addr` as `SocketAddr`'s `Display` does, or `-` for none. IPv4
/// (and so every v4 client of a dual-stack listener, which tproxyd
/// canonicalises) is written octet by octet; IPv6, with its zero
/// compression, still goes through `Display`.
pub(super) fn push_addr(out: &mut Vec<u8>, addr: Option<SocketAddr>) {
    match addr {
        None => out.push(b'-'),
        Some(SocketAddr::V4(a)) => {
            // Built on the stack from a table of the 256 octets and
            // appended once: formatting each octet as a number cost more
            // than the rest of the line.
            let mut buf = [0u8; 21]; // 255.255.255.255:65535
            let mut n = 0;
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                let (digits, len) = OCTETS[usize::from(octet)];
                // All three bytes are copied; `len` of them count.
                buf[n..n + 3].copy_from_slice(&digits);
                n += usize::from(len);
            }
            buf[n] = b':';
            n += 1;
            let mut port = itoa::Buffer::new();
            let port = port.format(a.port()).as_bytes();
            buf[n..n + port.len()].copy_from_slice(port);
            n += port.len();
            out.extend_from_slice(&buf[..n]);
        }
        Some(a @ SocketAddr::V6(_)) => {
            use std::io::Write;
            let _ = write!(out, "{a}");
        }
    }
}

/// Appends `d` in milliseconds with one decimal, rounded half up (`1.5`,
/// `0.0`, `1234.6`).
pub(super) fn push_ms_tenths(out: &mut Vec<u8>, d: Duration) {
    // In 64 bits: `as_nanos` is a u128, and dividing it calls a helper.
    let tenths = d
        .as_secs()
        .saturating_mul(10_000)
        .saturating_add(u64::from((d.subsec_nanos() + 50_000) / 100_000));
    push_uint(out, tenths / 10);
    out.push(b'.');
    out.push(b'0' + (tenths % 10) as u8);
}

/// Appends `n` (below 1000) as three digits (`{:03}`).
pub(super) fn push_3digits(out: &mut Vec<u8>, n: u32) {
    let n = n.min(999);
    for d in [n / 100, n / 10 % 10, n % 10] {
        out.push(b'0' + d as u8);
    }
}

/// Appends `text` with control characters (and `"`) as `\xNN`, so a
/// field taken from a client cannot end the line or fake another field.
pub(super) fn push_escaped(out: &mut Vec<u8>, text: &str) {
    if !text.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'"') {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for b in text.bytes() {
        if b < 0x20 || b == 0x7f || b == b'"' {
            out.extend_from_slice(b"\\x");
            out.push(b"0123456789abcdef"[usize::from(b >> 4)]);
            out.push(b"0123456789abcdef"[usize::from(b & 15)]);
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut s = Vec::new();
        f(&mut s);
        String::from_utf8(s).expect("ASCII")
    }

    #[test]
    fn matches_display() {
        for a in [
            "0.0.0.0:0",
            "198.51.100.10:80",
            "255.255.255.255:65535",
            "10.0.0.1:8",
            "[2001:db8:1::10]:4242",
            "[::ffff:10.0.0.1]:80",
            "[fe80::1%3]:80",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(with(|s| push_addr(s, Some(a))), a.to_string());
        }
        assert_eq!(with(|s| push_addr(s, None)), "-");
        // Every octet value and port width.
        for octet in 0..=255u8 {
            for port in [0, 7, 80, 443, 8080, 12345, 65535] {
                let a = SocketAddr::from(([octet, 255 - octet, 0, octet / 3], port));
                assert_eq!(with(|s| push_addr(s, Some(a))), a.to_string());
            }
        }
        for n in [0, 1, 0xab, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(with(|s| push_hex16(s, n)), format!("{n:016x}"));
            assert_eq!(with(|s| push_uint(s, n)), n.to_string());
        }
        for n in [0, 7, 42, 999] {
            assert_eq!(with(|s| push_3digits(s, n)), format!("{n:03}"));
        }
    }

    #[test]
    fn milliseconds_with_one_decimal() {
        let ms = |us: u64| with(|s| push_ms_tenths(s, Duration::from_micros(us)));
        assert_eq!(ms(0), "0.0");
        assert_eq!(ms(1500), "1.5");
        assert_eq!(ms(49), "0.0");
        assert_eq!(ms(50), "0.1");
        assert_eq!(ms(999_960), "1000.0");
        assert_eq!(ms(1_999_950), "2000.0");
        assert_eq!(ms(61_000_049), "61000.0");
        assert_eq!(ms(1_234_567), "1234.6");
    }

    #[test]
    fn client_text_cannot_end_the_line() {
        let mut out = Vec::new();
        push_escaped(&mut out, "a.test\r\n\"x");
        assert_eq!(out, b"a.test\\x0d\\x0a\\x22x");
        let mut plain = Vec::new();
        push_escaped(&mut plain, "www.example.org");
        assert_eq!(plain, b"www.example.org");
    }
}
