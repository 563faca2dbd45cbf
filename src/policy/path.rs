//! A request path as a `path_prefix` condition compares it: as the origin
//! will read it, not as the client spelled it, so that `/%61dmin`,
//! `//admin` and `/public/../admin` all meet a rule on `/admin`.
//! Percent-escapes are decoded, runs of slashes merged and dot segments
//! removed (RFC 3986 §5.2.4). Only for matching: the request goes on as
//! sent.

use std::borrow::Cow;

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `%XX` decoded (an invalid escape is kept as it is).
fn decoded(path: &str) -> Vec<u8> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h * 16 + l);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// `path` as the origin reads it.
pub fn normalised(path: &str) -> Cow<'_, str> {
    let plain = !path.contains(['%', '.']) && !path.contains("//");
    if plain {
        return Cow::Borrowed(path);
    }
    let text = String::from_utf8_lossy(&decoded(path)).into_owned();
    let mut segments: Vec<&str> = Vec::new();
    for seg in text.split('/').filter(|s| !s.is_empty()) {
        match seg {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = text.ends_with('/') && !segments.is_empty();
    let mut out = format!("/{}", segments.join("/"));
    if trailing {
        out.push('/');
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_path_are_one_path() {
        for p in [
            "/admin/x",
            "/%61dmin/x",
            "//admin//x",
            "/public/../admin/x",
            "/./admin/x",
            "/admin%2fx",
        ] {
            assert!(
                normalised(p).starts_with("/admin"),
                "{p} -> {}",
                normalised(p)
            );
        }
        assert_eq!(normalised("/a/b/"), "/a/b/");
        assert_eq!(normalised("/../../etc"), "/etc");
        assert_eq!(normalised("/%zz"), "/%zz");
        assert!(matches!(normalised("/plain/path"), Cow::Borrowed(_)));
    }
}
