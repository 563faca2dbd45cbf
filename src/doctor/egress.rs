//! Egresses: each interface an egress leaves from exists, each parent
//! proxy accepts connections, and spoofing is not expected through a
//! proxy.

use super::Report;
use crate::config::Section;
use crate::egress::{ParentAddr, Via};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long a parent gets to accept a connection.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

fn reach(p: &ParentAddr) -> Result<(SocketAddr, Duration), String> {
    let addr = (p.host.as_str(), p.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {p}: {e}"))?
        .next()
        .ok_or_else(|| format!("{p} has no address"))?;
    let started = Instant::now();
    TcpStream::connect_timeout(&addr, CONNECT_WAIT)
        .map(|_| (addr, started.elapsed()))
        .map_err(|e| format!("{p} ({addr}): {e}"))
}

/// The `egress` checks.
pub(super) fn check(r: &mut Report, t: &Section) {
    for e in t.egresses.all().iter().filter(|e| !e.is_plain_direct()) {
        let key = format!("tproxyd.egress.{}", e.name);
        match &e.via {
            Via::Direct { interface: Some(i), .. } => {
                if std::path::Path::new("/sys/class/net").join(i).exists() {
                    r.ok("egress", format!("{}: interface {i} exists", e.name));
                } else {
                    r.fail(
                        "egress",
                        format!("{}: interface {i} does not exist here", e.name),
                        format!("bring {i} up, or correct {key}.interface"),
                    );
                }
            }
            Via::Direct { .. } => r.ok("egress", format!("{}: direct with a mark", e.name)),
            Via::Http(p, _) | Via::Socks5(p, _) => match reach(p) {
                Ok((addr, took)) => r.ok(
                    "egress",
                    format!("{}: parent {p} ({addr}) accepts connections ({} ms)", e.name, took.as_millis()),
                ),
                Err(why) => r.fail(
                    "egress",
                    format!("{}: parent {why}", e.name),
                    format!("start the parent or correct {key}.address; flows routed there fail until then"),
                ),
            },
        }
    }
    for w in t.warnings() {
        r.warn(
            "spoof-through-proxy",
            w,
            "route those flows direct, or accept that the origin sees the parent",
        );
    }
}
