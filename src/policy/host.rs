//! Host patterns of inline `host:` conditions.

/// A Host pattern: an exact name or `*.suffix` (any depth of subdomain,
/// not the suffix itself). Case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `example.com`
    Exact(String),
    /// `*.example.com`, stored as `.example.com`
    Suffix(String),
}

impl HostPattern {
    /// Parses a pattern; `*` is only allowed as a leading `*.` label.
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        let (p, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest.to_string()),
            None => (HostPattern::Exact(lower.clone()), lower.clone()),
        };
        let rest = rest.trim_start_matches('[').trim_end_matches(']');
        if rest.is_empty()
            || rest.contains('*')
            || !rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(format!("{s:?} is not a host name or *.suffix pattern"));
        }
        Ok(match p {
            HostPattern::Exact(_) => HostPattern::Exact(rest.to_string()),
            s => s,
        })
    }

    /// Whether `host` (already without port, lower-case) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(e) => host == e,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(e) => f.write_str(e),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_suffix() {
        let e = HostPattern::parse("Example.COM").unwrap();
        assert!(e.matches("example.com") && !e.matches("www.example.com"));
        let s = HostPattern::parse("*.example.org").unwrap();
        assert!(s.matches("a.b.example.org") && !s.matches("example.org"));
        assert_eq!(s.to_string(), "*.example.org");
        assert!(HostPattern::parse("a.*.com").is_err());
        assert_eq!(
            HostPattern::parse("[2001:db8::1]").unwrap(),
            HostPattern::Exact("2001:db8::1".into())
        );
    }
}
