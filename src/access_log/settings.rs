//! `tproxyd.access_log`: the access log's settings and their validation.

use crate::error::{invalid, ConfigError};
use serde::Deserialize;
use std::path::PathBuf;

/// Line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Human-readable, one line per request.
    Text,
    /// One JSON object per line, with the field names of [`Record`].
    Json,
}

/// `tproxyd.access_log` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSettings {
    /// `false` turns the access log off (metrics still count requests).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Line format (default text).
    #[serde(default = "text")]
    pub format: Format,
    /// File to append to; none: stdout. (Without an `access_log` section at
    /// all, text lines go to stderr, next to the operational log.)
    pub path: Option<PathBuf>,
    /// Include the query string in `path`.
    #[serde(default)]
    pub query: bool,
    #[serde(skip)]
    pub(super) stderr: bool,
}

fn yes() -> bool {
    true
}

fn text() -> Format {
    Format::Text
}

impl Default for AccessLogSettings {
    /// No `access_log` section: text lines on stderr.
    fn default() -> Self {
        AccessLogSettings {
            enabled: true,
            format: Format::Text,
            path: None,
            query: false,
            stderr: true,
        }
    }
}

impl AccessLogSettings {
    /// Checks that the file can be opened for appending.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let (true, Some(p)) = (self.enabled, &self.path) {
            open(p).map_err(|e| {
                invalid(
                    "tproxyd.access_log.path",
                    format!("cannot open {} for appending: {e}", p.display()),
                )
            })?;
        }
        Ok(())
    }
}

pub(super) fn open(p: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
}
