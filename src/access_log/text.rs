//! The pieces of a text line, appended without `core::fmt`: the line is
//! written for every request, and `Display` for addresses and integers
//! (padding, width and precision handling per call) was most of its cost.
//! Each function writes exactly what the `Display` it replaces would.

use std::net::SocketAddr;
use std::time::Duration;

/// Appends `n` in decimal.
pub(super) fn push_uint(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Appends `n` as 16 lowercase hex digits (`{:016x}`).
pub(super) fn push_hex16(out: &mut String, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    // Only ASCII hex digits were written.
    out.push_str(std::str::from_utf8(&digits).unwrap_or("?"));
}

/// Appends `addr` as `SocketAddr`'s `Display` does, or `-` for none. IPv4
/// (and so every v4 client of a dual-stack listener, which tproxyd
/// canonicalises) is written octet by octet; IPv6, with its zero
/// compression, still goes through `Display`.
pub(super) fn push_addr(out: &mut String, addr: Option<SocketAddr>) {
    match addr {
        None => out.push('-'),
        Some(SocketAddr::V4(a)) => {
            // Built on the stack and appended once: a `push` per piece
            // checked the string's capacity eleven times per address.
            let mut buf = [0u8; 21]; // 255.255.255.255:65535
            let mut n = 0;
            let mut digits = itoa::Buffer::new();
            let mut put = |sep: Option<u8>, v: u16| {
                if let Some(sep) = sep {
                    buf[n] = sep;
                    n += 1;
                }
                let d = digits.format(v).as_bytes();
                buf[n..n + d.len()].copy_from_slice(d);
                n += d.len();
            };
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                put((i > 0).then_some(b'.'), u16::from(octet));
            }
            put(Some(b':'), a.port());
            // Only ASCII digits and separators were written.
            out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or("?"));
        }
        Some(a @ SocketAddr::V6(_)) => {
            use std::fmt::Write;
            let _ = write!(out, "{a}");
        }
    }
}

/// Appends `d` in milliseconds with one decimal, rounded half up (`1.5`,
/// `0.0`, `1234.6`).
pub(super) fn push_ms_tenths(out: &mut String, d: Duration) {
    let tenths = (d.as_nanos() + 50_000) / 100_000;
    let tenths = u64::try_from(tenths).unwrap_or(u64::MAX);
    push_uint(out, tenths / 10);
    out.push('.');
    out.push(char::from(b'0' + (tenths % 10) as u8));
}

/// Appends `n` (below 1000) as three digits (`{:03}`).
pub(super) fn push_3digits(out: &mut String, n: u32) {
    let n = n.min(999);
    for d in [n / 100, n / 10 % 10, n % 10] {
        out.push(char::from(b'0' + d as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut String)) -> String {
        let mut s = String::new();
        f(&mut s);
        s
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
        assert_eq!(ms(1_234_567), "1234.6");
    }
}
