//! `pingora-bare`: the framework floor for the benchmarks. The smallest
//! Pingora `ProxyHttp` that forwards each request to its connection's
//! original destination (TPROXY: the accepted socket's local address),
//! served from the same transparent socket path as tproxyd (our
//! `IP_TRANSPARENT` socket in Pingora's fd table) and nothing else: no
//! filters, no access log, no metrics, no limits, Pingora's own defaults.
//! `bench/bench.py` runs it beside tproxyd, so tproxyd's own cost on top of
//! Pingora is visible.
//!
//! Usage: `pingora-bare [ADDRESS] [THREADS]` (default `[::]:8888`, 2).
//! With `PINGORA_BARE_TIMEOUTS=1` in the environment it sets the upstream
//! timeouts tproxyd sets by default (connect 5 s, read, write and pool idle
//! 60 s): what Pingora's timers cost on their own, measured apart from
//! tproxyd's code (`bench/callgrind.sh pingora-bare-timeouts`). With
//! `PINGORA_BARE_WORK_STEALING=false` it runs a runtime per thread; the
//! benchmarks pass what tproxyd's shipped config says, so the floor runs
//! on the same kind of runtime as tproxyd.

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::{http_proxy_service, ProxyHttp, Session};
use tproxyd::admin::Readiness;
use tproxyd::lifecycle::Draining;
use tproxyd::listener::ListenerSettings;
use tproxyd::transparent::TransparentService;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    /// Set tproxyd's default upstream timeouts on each peer.
    timeouts: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let dst = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| std::net::SocketAddr::new(a.ip().to_canonical(), a.port()))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no local address"))?;
        let mut peer = HttpPeer::new(dst, false, String::new());
        if self.timeouts {
            let minute = std::time::Duration::from_secs(60);
            peer.options.connection_timeout = Some(std::time::Duration::from_secs(5));
            peer.options.read_timeout = Some(minute);
            peer.options.write_timeout = Some(minute);
            peer.options.idle_timeout = Some(minute);
        }
        Ok(Box::new(peer))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "[::]:8888".into());
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(2);
    let mut settings = ListenerSettings::default_list().remove(0);
    settings.address = address.clone();
    let listener = settings
        .validate(
            0,
            tproxyd::listener::Context {
                resolve_timeout: std::time::Duration::from_secs(2),
                sets: &Default::default(),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let stealing = std::env::var("PINGORA_BARE_WORK_STEALING").unwrap_or_else(|_| "true".into());
    let yaml = format!("version: 1\nthreads: {threads}\nwork_stealing: {stealing}\n");
    let conf = ServerConf::from_yaml(&yaml).expect("a valid Pingora config");
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let timeouts = std::env::var_os("PINGORA_BARE_TIMEOUTS").is_some_and(|v| v == "1");
    let mut service = http_proxy_service(&server.configuration, Bare { timeouts });
    service.add_tcp(&address);
    let readiness = Readiness::new(1, Draining::default());
    server.add_service(TransparentService::new(service, listener, None, readiness));
    server.run_forever()
}
