//! What the process may do: `CAP_NET_ADMIN`, and whether an
//! `IP_TRANSPARENT` socket can be bound.

use super::Report;
use crate::config::Section;
use crate::listener::Listener;
use crate::transparent::{bind_transparent, has_cap_net_admin};

/// The `capability` and `transparent-socket` checks.
pub(super) fn check(r: &mut Report, t: &Section) {
    if !t.listeners.iter().any(Listener::is_transparent) {
        r.ok("capability", "no transparent listener: none needed");
        return;
    }
    if has_cap_net_admin() {
        r.ok("capability", "CAP_NET_ADMIN held");
    } else {
        r.fail(
            "capability",
            "no CAP_NET_ADMIN",
            "run as root, or systemd: AmbientCapabilities=CAP_NET_ADMIN",
        );
    }
    match bind_transparent("[::]:0".parse().expect("an address")) {
        Ok(_) => r.ok("transparent-socket", "an IP_TRANSPARENT socket binds"),
        Err(e) => r.fail(
            "transparent-socket",
            format!("cannot bind an IP_TRANSPARENT socket: {e}"),
            "hold CAP_NET_ADMIN and enable IPv6",
        ),
    }
}
