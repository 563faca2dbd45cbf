//! Process limits: whether the open-file limit holds
//! `downstream.max_connections`.

use super::Report;
use crate::config::{Config, Section};

/// The `open-files` check.
pub(super) fn open_files(r: &mut Report, t: &Section, config: &Config) {
    use nix::sys::resource::{getrlimit, Resource};
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let (_, reserved) = t.descriptor_reserve(config.server.upstream_keepalive_pool_size, hard);
    let d = &t.downstream;
    let (max, lowered) = d.effective_max_connections(hard, reserved);
    if lowered {
        r.warn(
            "open-files",
            format!(
                "the open-file limit here ({hard}) holds {max} of downstream.max_connections {}",
                d.max_connections
            ),
            "raise the limit (systemd: LimitNOFILE) or lower the key",
        );
    } else {
        r.ok(
            "open-files",
            format!(
                "limit {hard} holds downstream.max_connections {}",
                d.max_connections
            ),
        );
    }
}
