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
    stderr: bool,
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Appended to this file (reopened on SIGHUP).
    File(PathBuf),
    /// Standard output.
    Stdout,
    /// Standard error, beside the operational log.
    Stderr,
}

/// The validated access log: its lines, where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogOutput {
    /// Line format.
    pub format: Format,
    /// Where the lines go.
    pub destination: Destination,
    /// Include the query string in `path`.
    pub query: bool,
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
    /// The output, `None` when the log is off; the file must open for
    /// appending.
    pub fn validate(self) -> Result<Option<AccessLogOutput>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let destination = match (self.path, self.stderr) {
            (Some(p), _) => {
                open(&p).map_err(|e| {
                    invalid(
                        "tproxyd.access_log.path",
                        format!("cannot open {} for appending: {e}", p.display()),
                    )
                })?;
                Destination::File(p)
            }
            (None, true) => Destination::Stderr,
            (None, false) => Destination::Stdout,
        };
        Ok(Some(AccessLogOutput {
            format: self.format,
            destination,
            query: self.query,
        }))
    }
}

pub(super) fn open(p: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
}
