//! The embedding API: [`Tproxyd`] builds and runs a proxy from the YAML
//! config, with built-in and custom filters. The `tproxyd` binary is
//! `Tproxyd::new().run()`; your own binary can register filters first:
//!
//! ```no_run
//! # use tproxyd::filters::{Filter, FilterCtx, RequestHeader, Result, Verdict};
//! struct Hello;
//! #[async_trait::async_trait]
//! impl Filter for Hello {
//!     fn name(&self) -> &str { "hello" }
//!     async fn request(&self, ctx: &mut FilterCtx, _req: &RequestHeader) -> Result<Verdict> {
//!         log::info!("{} is going to {}", ctx.flow.client, ctx.flow.destination);
//!         Ok(Verdict::Continue)
//!     }
//! }
//! fn main() {
//!     tproxyd::Tproxyd::new().filter(Hello).run()
//! }
//! ```

mod commands;

use crate::access_log::AccessLog;
use crate::admin::{admin_server, AdminApp, Identity, Readiness};
pub use crate::cli::Cli;
use crate::config::{Config, ConfigError, Section};
use crate::downstream::connections::ConnectionLimiter;
use crate::downstream::gate::ConnectionGate;
use crate::filters::{Filter, FilterChain, FilterRegistry};
use crate::lifecycle::{DrainWatcher, Draining, Exit};
use crate::listener::ListenerKind;
use crate::live::{Live, Ticker};
use crate::passthrough::PassthroughApp;
use crate::proxy::{HttpConnections, TransparentProxy};
use crate::relay;
use crate::sets::watch::SetsWatcher;
use crate::shared::{ListenerState, Shared};
use crate::transparent::{prebind, TransparentService};
use pingora_core::apps::ServerApp;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::http_proxy;
use socket2::Socket;
use std::sync::Arc;

/// Builds and runs a tproxyd: config, filters, Pingora server.
#[derive(Clone, Default)]
pub struct Tproxyd {
    registry: FilterRegistry,
    extra: Vec<Arc<dyn Filter>>,
}

/// What every listener's service needs while the server is assembled.
struct Assembly<'a> {
    server: &'a mut Server,
    server_conf: Arc<ServerConf>,
    tproxyd: &'a Section,
    readiness: Readiness,
    upgrading: bool,
    limiter: Arc<ConnectionLimiter>,
}

impl Assembly<'_> {
    /// Puts `app` behind `listener` as a Pingora listening service: client
    /// connections counted, served from our transparent socket through the
    /// fd table. The same for every kind of listener.
    fn add<A: ServerApp + Send + Sync + 'static>(
        &mut self,
        app: A,
        state: &ListenerState,
    ) -> Result<(), String> {
        let listener = &state.listener;
        // Outside `-u`, bind now, in the foreground: an unusable address
        // stops start-up with an error naming the listener.
        let prebound: Option<Socket> = if self.upgrading {
            None
        } else {
            Some(prebind(listener)?)
        };
        let gate = ConnectionGate::new(app, self.limiter.clone(), state.metrics.clone());
        let mut service = Service::new(format!("tproxyd {}", listener.name()), gate);
        service.add_listener(self.tproxyd.downstream.endpoint(&listener.address));
        self.server.add_service(TransparentService::new(
            service,
            listener.clone(),
            prebound,
            self.readiness.clone(),
        ));
        Ok(())
    }

    /// The app that serves `listener`'s kind.
    fn add_listener(&mut self, state: Arc<ListenerState>) -> Result<(), String> {
        match &state.listener.kind {
            ListenerKind::TlsPassthrough { .. } => {
                self.add(PassthroughApp::new(state.clone()), &state)
            }
            ListenerKind::Http { .. } | ListenerKind::Forward(_) => {
                if let ListenerKind::Forward(policy) = &state.listener.kind {
                    if policy.allow_clients.is_empty() {
                        log::warn!(
                            "forward listener {} allows no client: set allow_clients to use it",
                            state.listener.name()
                        );
                    }
                }
                let http = http_proxy(&self.server_conf, TransparentProxy::new(state.clone()));
                self.add(HttpConnections::new(http, state.clone()), &state)
            }
        }
    }
}

/// The process's connection caps, with `max_connections` lowered (and
/// said so) when the open-file limit cannot hold that many proxied
/// connections. The soft limit is raised to the hard one first.
fn connection_limiter(t: &Section, server: &ServerConf) -> Arc<ConnectionLimiter> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let nofile = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard))
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() =>
        {
            hard
        }
        Ok((soft, _)) => soft,
        Err(_) => u64::MAX,
    };
    // Spliced relays hold pipes and socket duplicates beyond their two
    // sockets: the pipes are capped, and the most they can hold is set
    // aside before the rest is shared by connections (two each).
    let (pipes, reserved) = t.descriptor_reserve(server.upstream_keepalive_pool_size, nofile);
    relay::pipes::set_limit(pipes);
    let d = &t.downstream;
    let (max, lowered) = d.effective_max_connections(nofile, reserved);
    if lowered {
        log::warn!(
            "downstream.max_connections {} lowered to {max}: the open-file limit is {nofile}, \
             a proxied connection can need two descriptors, and {} are kept for {pipes} \
             splice pipes (raise LimitNOFILE to keep it)",
            d.max_connections,
            relay::fd_budget(pipes)
        );
    }
    ConnectionLimiter::new(max, d.max_connections_per_client, d.watermark(max))
}

impl Tproxyd {
    /// With the built-in filters (`headers`, `acl`, `host_check`) available.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a filter usable by `name` in `tproxyd.filters`, where the YAML
    /// fixes its position in the chain and its settings; `factory` gets
    /// those settings and their dotted key (for error messages). A name of a
    /// built-in replaces it.
    pub fn register_filter(
        mut self,
        name: &str,
        factory: impl Fn(&serde_yaml::Value, &str) -> Result<Arc<dyn Filter>, ConfigError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.registry.insert(name, factory);
        self
    }

    /// Runs `filter` on every request, after the configured ones.
    pub fn filter(mut self, filter: impl Filter + 'static) -> Self {
        self.extra.push(Arc::new(filter));
        self
    }

    /// The full filter chain for `config`: forwarding headers, then
    /// `request_headers.add`, then `tproxyd.filters`, then code-added ones.
    pub fn chain(&self, config: &Config) -> Result<FilterChain, ConfigError> {
        config.tproxyd.filters.chain(&self.registry, &self.extra)
    }

    /// The process-wide state every listener's app shares.
    fn shared(
        &self,
        config: &Config,
        draining: Draining,
    ) -> Result<(Shared, Option<crate::access_log::AccessLogWriter>), String> {
        let t = &config.tproxyd;
        let chain = self.chain(config).map_err(|e| e.to_string())?;
        let (access_log, log_writer) = t.access_log.as_ref().map(AccessLog::new).unzip();
        let listeners = t
            .listeners
            .iter()
            .map(|l| (l.id.clone(), l.address.clone()));
        let flows = t.admin.as_ref().is_some_and(|a| a.flows);
        let shared = Shared {
            chain,
            decider: t.decider(),
            sets: Arc::new(t.sets.clone()),
            acls: t.filters.acls.clone(),
            upstream: t.upstream.clone(),
            draining,
            access_log,
            routes: t.routes.clone(),
            downstream: t.downstream,
            live: Arc::new(Live::new(flows, listeners)),
        };
        Ok((shared, log_writer))
    }

    /// Builds the Pingora server. Call `bootstrap()` then `run_forever()`
    /// on it: bootstrap first, so that on `-u` the inherited sockets are in
    /// the fd table before any service looks for them.
    ///
    /// Unless upgrading (`-u`), the listening sockets are bound here, in the
    /// foreground: an error names the listener and nothing is started.
    pub fn build_server(&self, opt: Opt, config: Config) -> Result<Server, String> {
        Ok(self.assemble(opt, config)?.0)
    }

    /// [`Tproxyd::build_server`], and what ends the process once Pingora's
    /// `run` returns.
    fn assemble(&self, mut opt: Opt, config: Config) -> Result<(Server, Arc<Exit>), String> {
        // The file was already read and validated by us; stop Pingora from
        // warning that it ignores `-c`.
        let identity = Identity::new(opt.conf.take().as_deref());
        let upgrading = opt.upgrade;
        let draining = Draining::default();
        let (shared, log_writer) = self.shared(&config, draining.clone())?;
        let shared = Arc::new(shared);
        crate::metrics::init_process();
        let Config {
            server: pingora_conf,
            tproxyd: t,
        } = config;
        let readiness = Readiness::new(t.listeners.len(), draining.clone());

        let mut server = Server::new_with_opt_and_conf(opt, pingora_conf);
        let server_conf = server.configuration.clone();
        let limiter = connection_limiter(&t, &server_conf);
        let phases = server.watch_execution_phase();
        let (open, log) = (limiter.clone(), log_writer.as_ref().map(|w| w.closer()));
        let exit = Exit::new(
            move || open.open(),
            move || log.iter().for_each(|l| l.close()),
        );
        server.add_service(background_service(
            "drain watcher",
            DrainWatcher::new(phases, draining, exit.clone()),
        ));
        if let Some(writer) = log_writer {
            server.add_service(background_service("access log", writer));
        }
        // SIGHUP reopens the log and reloads sets; caught from now on, so
        // that one sent before those are listening never ends the process.
        let _ = signal_hook::flag::register(
            signal_hook::consts::SIGHUP,
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
        );
        let sets = &t.sets;
        if !sets.slots().is_empty() {
            let watcher = SetsWatcher::new(sets.slots().to_vec(), sets.watch_interval);
            server.add_service(background_service("sets watcher", watcher));
        }
        if let Some(admin) = &t.admin {
            let live = shared.live.clone();
            let sets = shared.sets.clone();
            let app = AdminApp::new(admin, readiness.clone(), live.clone(), sets, identity);
            let mut service = Service::new("tproxyd admin".into(), admin_server(app));
            service.add_tcp(&admin.address);
            // A few requests a minute (/metrics, /ready): one worker, not
            // `threads` of them beside the listeners'.
            service.threads = Some(1);
            server.add_service(service);
            server.add_service(background_service("status ticker", Ticker(live)));
        }
        let mut assembly = Assembly {
            server: &mut server,
            server_conf,
            tproxyd: &t,
            readiness,
            upgrading,
            limiter,
        };
        for listener in &t.listeners {
            assembly.add_listener(ListenerState::new(listener.clone(), shared.clone()))?;
        }
        Ok((server, exit))
    }

    /// Loads and validates the config at `path` (none: the built-in
    /// defaults), the filters' settings included.
    pub fn load(&self, path: Option<&str>) -> Result<Config, ConfigError> {
        let config = match path {
            Some(path) => Config::load(path)?,
            None => Config::defaults(),
        };
        // Instantiating the filters validates their settings too.
        self.chain(&config)?;
        Ok(config)
    }
}
