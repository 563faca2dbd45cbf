//! The crate's configuration error and the helpers every component uses to
//! read its own settings.
//!
//! Errors are for the operator who has to fix the file: each names the
//! dotted key it is about (`tproxyd.listeners[0].mode`) and says why. Inside
//! the proxy, errors are Pingora's (`pingora_error`); this type is only for
//! the config boundary.
//!
//! Bottom layer: imports nothing from the crate.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// A configuration problem, worded for the operator who has to fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file as given on the command line.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The YAML is malformed or a value has the wrong shape.
    #[error("invalid config: {0}")]
    Yaml(String),
    /// A value parsed but makes no sense; `key` is its dotted path.
    #[error("invalid config: {key}: {reason}")]
    Invalid {
        /// Dotted path, e.g. `tproxyd.upstream.mark`.
        key: String,
        /// Why it is wrong, and what would be right.
        reason: String,
    },
}

/// Shorthand for [`ConfigError::Invalid`].
pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Deserialises the settings found at dotted path `key`, naming the exact
/// offending key below it on error (`key.rules[2].action`).
pub fn parse_settings<T: DeserializeOwned>(
    value: &serde_yaml::Value,
    key: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." {
            key.to_string()
        } else {
            format!("{key}.{path}")
        };
        invalid(key, e.into_inner().to_string())
    })
}

/// Parses a duration such as `5s`, `250ms` or `1m`; zero is refused (a
/// zero timeout is never what an operator means).
pub fn parse_duration(key: &str, s: &str) -> Result<Duration, ConfigError> {
    humantime_duration(s).map_err(|reason| invalid(key, reason))
}

/// Longer than any sensible timeout, short enough that no deadline
/// computed from it overflows.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("bad duration {s:?}: {e} (use e.g. 5s, 250ms, 1m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    if d > MAX_DURATION {
        return Err("must be at most 7 days".into());
    }
    Ok(d)
}

/// A duration setting as written in YAML (`5s`, `250ms`, `1m`), parsed
/// once, where it is deserialised, so the error carries its key path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Duration);

impl Timeout {
    /// A fixed default, for `#[serde(default)]` functions.
    pub const fn secs(s: u64) -> Timeout {
        Timeout(Duration::from_secs(s))
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime_duration(&s)
            .map(Timeout)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct S {
        #[allow(dead_code)]
        t: Timeout,
    }

    #[test]
    fn durations_parse_and_errors_name_the_key() {
        assert_eq!(
            parse_duration("k", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        let e = parse_duration("a.b", "soon").unwrap_err().to_string();
        assert!(e.contains("a.b") && e.contains("bad duration"), "{e}");
        let e = parse_duration("a.b", "0s").unwrap_err().to_string();
        assert!(e.contains("greater than zero"), "{e}");
        let v: serde_yaml::Value = serde_yaml::from_str("t: never").unwrap();
        let e = parse_settings::<S>(&v, "x.y").unwrap_err().to_string();
        assert!(e.contains("x.y.t") && e.contains("bad duration"), "{e}");
        let v: serde_yaml::Value = serde_yaml::from_str("u: 1").unwrap();
        let e = parse_settings::<S>(&v, "x.y").unwrap_err().to_string();
        assert!(e.contains("x.y") && e.contains("unknown field `u`"), "{e}");
    }
}
