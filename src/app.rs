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

use crate::access_log::AccessLog;
use crate::admin::{admin_server, Readiness};
pub use crate::cli::Cli;
use crate::cli::{Command, RulesArgs, RunArgs};
use crate::config::{Config, ConfigError, Section};
use crate::decision::Decider;
use crate::destination::LoopGuard;
use crate::doctor;
use crate::downstream::connections::ConnectionLimiter;
use crate::downstream::gate::ConnectionGate;
use crate::filters::{Filter, FilterChain, FilterRegistry};
use crate::lifecycle::{DrainWatcher, Draining};
use crate::listener::{Listener, ListenerKind};
use crate::passthrough::PassthroughApp;
use crate::proxy::{HttpConnections, TransparentProxy};
use crate::relay;
use crate::rules::{host, Ruleset};
use crate::shared::{ListenerState, Shared};
use crate::signals::EarlySignals;
use crate::transparent::{has_cap_net_admin, prebind, TransparentService};
use crate::upstream::connector::mark_hook;
use clap::Parser;
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
        let loop_guard = LoopGuard::new(t.listeners.iter().map(|l| l.socket_addr));
        let shared = Shared {
            chain,
            decider: Decider::new(loop_guard, Arc::new(t.filters.forwarding.clone())),
            acls: t.filters.acls.clone(),
            upstream: t.upstream.clone(),
            draining,
            access_log,
            mark_hook: t.upstream.mark.map(mark_hook),
            downstream: t.downstream,
        };
        Ok((shared, log_writer))
    }

    /// Builds the Pingora server. Call `bootstrap()` then `run_forever()`
    /// on it: bootstrap first, so that on `-u` the inherited sockets are in
    /// the fd table before any service looks for them.
    ///
    /// Unless upgrading (`-u`), the listening sockets are bound here, in the
    /// foreground: an error names the listener and nothing is started.
    pub fn build_server(&self, mut opt: Opt, config: Config) -> Result<Server, String> {
        // The file was already read and validated by us; stop Pingora from
        // warning that it ignores `-c`.
        opt.conf = None;
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
        let phases = server.watch_execution_phase();
        server.add_service(background_service(
            "drain watcher",
            DrainWatcher::new(phases, draining),
        ));
        if let Some(writer) = log_writer {
            server.add_service(background_service("access log", writer));
        }
        if let Some(admin) = &t.admin {
            let mut service = Service::new("tproxyd admin".into(), admin_server(readiness.clone()));
            service.add_tcp(&admin.address);
            server.add_service(service);
        }
        let server_conf = server.configuration.clone();
        let limiter = connection_limiter(&t, &server_conf);
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
        Ok(server)
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

    /// Parses the command line and does what it says: runs the proxy
    /// until stopped (the default), or checks, writes rules, diagnoses.
    /// Exits 1 with a message on any error.
    pub fn run(self) -> ! {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
        let cli = Cli::parse();
        let code = match cli.command {
            None => self.serve(cli.run),
            Some(Command::Run(args)) => self.serve(args),
            Some(Command::Check(c)) => self.serve(RunArgs {
                conf: Some(c.conf),
                test: true,
                ..RunArgs::default()
            }),
            Some(Command::Rules(r)) => self.rules(&r),
            Some(Command::Doctor(c)) => self.doctor(&c.conf),
            Some(Command::Completions { shell }) => print(&Cli::completions(shell)),
            Some(Command::Manpage) => print(&Cli::manpage()),
        };
        std::process::exit(code)
    }

    /// `tproxyd rules`: prints, applies or removes.
    fn rules(&self, args: &RulesArgs) -> i32 {
        let config = match self.load(Some(&args.conf)) {
            Ok(c) => c,
            Err(e) => return fail(&e),
        };
        let plan = Ruleset::from_config(&config.tproxyd);
        let done = if args.apply {
            if plan.steers.is_empty() {
                log::warn!(
                    "no listener in {} has `intercept`: the table steers nothing",
                    args.conf
                );
            }
            host::apply(&plan, &args.conf)
        } else if args.remove {
            host::remove(&plan.interception)
        } else {
            return print(plan.nft(&args.conf).as_bytes());
        };
        match done {
            Ok(lines) => {
                for l in lines {
                    println!("tproxyd rules: {l}");
                }
                0
            }
            Err(e) => fail(&e),
        }
    }

    /// `tproxyd doctor`: one line per check; 1 when one fails.
    fn doctor(&self, path: &str) -> i32 {
        let report = doctor::examine(self.load(Some(path)), path);
        print!("{report}");
        i32::from(report.failed())
    }

    /// Runs the proxy (with `-t`: checks the config and returns).
    fn serve(self, args: RunArgs) -> i32 {
        let config = match self.load(args.conf.as_deref()) {
            Ok(c) => c,
            Err(e) => return fail(&e),
        };
        if args.test {
            println!(
                "tproxyd: configuration {} is valid",
                args.conf.as_deref().unwrap_or("(built-in defaults)")
            );
            return 0;
        }
        let transparent = config
            .tproxyd
            .listeners
            .iter()
            .any(Listener::is_transparent);
        if transparent && !has_cap_net_admin() {
            return fail(&"this process lacks CAP_NET_ADMIN, which IP_TRANSPARENT sockets need; \
                   run as root or grant the capability (systemd: AmbientCapabilities=CAP_NET_ADMIN)");
        }
        let mut server = match self.build_server(args.pingora(), config) {
            Ok(s) => s,
            Err(e) => return fail(&e),
        };
        server.bootstrap();
        // Heard from before the first listener opens (see `signals`).
        let signals = match EarlySignals::listen() {
            Ok(s) => s,
            Err(e) => return fail(&format!("cannot listen for signals: {e}")),
        };
        server.run(pingora_core::server::RunArgs {
            shutdown_signal: Box::new(signals),
        });
        0
    }
}

/// Says what went wrong; the exit status for it.
fn fail(e: &dyn std::fmt::Display) -> i32 {
    eprintln!("tproxyd: {e}");
    1
}

/// Writes `bytes` to stdout; the exit status.
fn print(bytes: &[u8]) -> i32 {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    i32::from(out.write_all(bytes).and_then(|()| out.flush()).is_err())
}
