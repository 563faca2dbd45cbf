//! Assembling a Pingora `Server` from a validated config: one proxy service
//! per transparent listener, each wrapped so that it serves our sockets.

use crate::config::Config;
use crate::destination::LoopGuard;
use crate::filters::RequestHeaderAdder;
use crate::lifecycle::{DrainWatcher, Draining};
use crate::listener::{prebind, TransparentService};
use crate::proxy::{Shared, TransparentProxy};
use pingora_core::server::configuration::Opt;
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_proxy::http_proxy_service_with_name;
use std::sync::Arc;

/// Builds the server. Call `bootstrap()` then `run_forever()` on the result:
/// bootstrap first, so that on `-u` the inherited sockets are in the fd
/// table before any service looks for them.
///
/// Unless upgrading (`-u`), the listening sockets are bound here, in the
/// foreground: an error names the listener and nothing is started.
pub fn build_server(mut opt: Opt, config: Config) -> Result<Server, String> {
    // The file was already read and validated by us; stop Pingora from
    // warning that it ignores `-c`.
    opt.conf = None;
    let listeners = config.tproxyd.listeners.clone();
    let draining = Draining::default();
    let shared = Arc::new(Shared {
        headers: RequestHeaderAdder::new(config.tproxyd.add_request_headers.clone()),
        loop_guard: LoopGuard::new(&listeners),
        upstream: config.tproxyd.upstream.clone(),
        draining: draining.clone(),
    });

    let upgrading = opt.upgrade;
    let mut server = Server::new_with_opt_and_conf(opt, config.server);
    let phases = server.watch_execution_phase();
    server.add_service(background_service(
        "drain watcher",
        DrainWatcher::new(phases, draining),
    ));
    let server_conf = server.configuration.clone();
    for listener in listeners {
        let prebound = if upgrading {
            None
        } else {
            Some(prebind(&listener)?)
        };
        let name = format!("tproxyd {}", listener.name);
        let proxy = TransparentProxy::new(listener.clone(), shared.clone());
        let mut service = http_proxy_service_with_name(&server_conf, proxy, &name);
        service.add_tcp(&listener.address);
        server.add_service(TransparentService::new(service, listener, prebound));
    }
    Ok(server)
}

/// Re-exported so that binaries can flatten Pingora's CLI into their own.
pub use pingora_core::server::configuration::Opt as PingoraOpt;
