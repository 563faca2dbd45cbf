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
use crate::config::Listener;
use crate::config::{Config, ConfigError};
use crate::connector::mark_hook;
use crate::destination::LoopGuard;
use crate::filters::headers::HeadersFilter;
use crate::filters::{Filter, FilterChain, FilterRegistry};
use crate::forward::ForwardApp;
use crate::lifecycle::{DrainWatcher, Draining};
use crate::listener::{has_cap_net_admin, prebind, TransparentService};
use crate::metrics::CountConnections;
use crate::passthrough::PassthroughApp;
use crate::proxy::{Shared, TransparentProxy};
use clap::Parser;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::Opt;
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_prometheus::prometheus::IntGauge;
use pingora_proxy::http_proxy;
use socket2::Socket;
use std::sync::Arc;

/// A listening endpoint whose client connections get a read buffer of
/// `read_buffer` bytes instead of Pingora's 64 KiB: the buffer is allocated
/// per connection up front, and for a plain-HTTP proxy with many idle
/// keep-alive clients 64 KiB each is most of the memory (BENCHMARKS.md).
fn downstream_listener(address: &str, read_buffer: usize) -> ListenerConfig {
    ListenerConfig::tcp(address).l4_buffer(L4BufferSettings::default().read(read_buffer))
}

/// Puts `app` behind `listener` as a Pingora listening service: client
/// connections counted in `open_connections`, served from our transparent
/// socket through the fd table. The same for every mode.
fn add_listener_service<A: ServerApp + Send + Sync + 'static>(
    server: &mut Server,
    app: A,
    open_connections: IntGauge,
    listener: &Listener,
    prebound: Option<Socket>,
    readiness: &Readiness,
    read_buffer: usize,
) {
    let name = format!("tproxyd {}", listener.name);
    let mut service = Service::new(name, CountConnections::new(app, open_connections));
    service.add_listener(downstream_listener(&listener.address, read_buffer));
    server.add_service(TransparentService::new(
        service,
        listener.clone(),
        prebound,
        readiness.clone(),
    ));
}

/// tproxyd's command line: Pingora's own options (-c, -t, -u, -d).
#[derive(Parser, Debug)]
#[command(name = "tproxyd", version, about)]
pub struct Cli {
    /// Pingora's options, flattened into ours.
    #[command(flatten)]
    pub pingora: Opt,
}

/// Builds and runs a tproxyd: config, filters, Pingora server.
#[derive(Clone, Default)]
pub struct Tproxyd {
    registry: FilterRegistry,
    extra: Vec<Arc<dyn Filter>>,
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
        let t = &config.tproxyd;
        let mut filters: Vec<Arc<dyn Filter>> = vec![Arc::new(t.forwarding.clone())];
        if !t.add_request_headers.is_empty() {
            filters.push(Arc::new(HeadersFilter::request_add(
                t.add_request_headers.clone(),
            )));
        }
        filters.extend(self.registry.build(&t.filters)?);
        filters.extend(self.extra.iter().cloned());
        Ok(FilterChain::new(filters))
    }

    /// Builds the Pingora server. Call `bootstrap()` then `run_forever()`
    /// on it: bootstrap first, so that on `-u` the inherited sockets are in
    /// the fd table before any service looks for them.
    ///
    /// Unless upgrading (`-u`), the listening sockets are bound here, in the
    /// foreground: an error names the listener and nothing is started.
    pub fn build_server(&self, mut opt: Opt, config: Config) -> Result<Server, String> {
        let chain = self.chain(&config).map_err(|e| e.to_string())?;
        // The file was already read and validated by us; stop Pingora from
        // warning that it ignores `-c`.
        opt.conf = None;
        let upgrading = opt.upgrade;
        let listeners = config.tproxyd.listeners.clone();
        let draining = Draining::default();
        let readiness = Readiness::new(listeners.len(), draining.clone());
        let (access_log, log_writer) = AccessLog::new(&config.tproxyd.access_log).unzip();
        let admin = config.tproxyd.admin.clone();
        crate::metrics::init_process();
        let shared = Arc::new(Shared {
            forwarding: Arc::new(config.tproxyd.forwarding.clone()),
            chain,
            loop_guard: LoopGuard::new(&listeners),
            upstream: config.tproxyd.upstream.clone(),
            draining: draining.clone(),
            access_log,
            mark_hook: config.tproxyd.upstream.mark.map(mark_hook),
        });

        let mut server = Server::new_with_opt_and_conf(opt, config.server);
        let phases = server.watch_execution_phase();
        server.add_service(background_service(
            "drain watcher",
            DrainWatcher::new(phases, draining),
        ));
        if let Some(writer) = log_writer {
            server.add_service(background_service("access log", writer));
        }
        let server_conf = server.configuration.clone();
        let read_buffer = config.tproxyd.downstream_read_buffer;
        if let Some(address) = admin {
            let mut service = Service::new("tproxyd admin".into(), admin_server(readiness.clone()));
            service.add_tcp(&address);
            server.add_service(service);
        }
        for listener in listeners {
            let prebound = if upgrading {
                None
            } else {
                Some(prebind(&listener)?)
            };
            if let Some(policy) = &listener.tls {
                let app = PassthroughApp::new(listener.clone(), policy.clone(), shared.clone());
                let gauge = app.metrics().downstream_active.clone();
                add_listener_service(
                    &mut server,
                    app,
                    gauge,
                    &listener,
                    prebound,
                    &readiness,
                    read_buffer,
                );
                continue;
            }
            let proxy = TransparentProxy::new(listener.clone(), shared.clone());
            let metrics = proxy.metrics().clone();
            let http = http_proxy(&server_conf, proxy);
            let gauge = metrics.downstream_active.clone();
            match &listener.forward {
                None => add_listener_service(
                    &mut server,
                    http,
                    gauge,
                    &listener,
                    prebound,
                    &readiness,
                    read_buffer,
                ),
                Some(policy) => {
                    if policy.allow_clients.is_empty() {
                        log::warn!(
                            "forward listener {} allows no client: set allow_clients to use it",
                            listener.name
                        );
                    }
                    let forward = ForwardApp::new(
                        http,
                        listener.clone(),
                        policy.clone(),
                        shared.clone(),
                        metrics.clone(),
                    );
                    add_listener_service(
                        &mut server,
                        forward,
                        gauge,
                        &listener,
                        prebound,
                        &readiness,
                        read_buffer,
                    );
                }
            }
        }
        Ok(server)
    }

    /// Parses the command line, loads and validates the config (with `-t`:
    /// reports and exits), then runs until stopped. Exits 1 with a message
    /// on any start-up error.
    pub fn run(self) -> ! {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
        let cli = Cli::parse();
        let fail = |e: &dyn std::fmt::Display| -> ! {
            eprintln!("tproxyd: {e}");
            std::process::exit(1)
        };
        let config = match cli.pingora.conf.as_deref() {
            Some(path) => Config::load(path),
            None => Ok(Config::defaults()),
        }
        .unwrap_or_else(|e| fail(&e));
        // Instantiating the filters validates their settings too.
        if let Err(e) = self.chain(&config) {
            fail(&e);
        }
        if cli.pingora.test {
            println!(
                "tproxyd: configuration {} is valid",
                cli.pingora.conf.as_deref().unwrap_or("(built-in defaults)")
            );
            std::process::exit(0);
        }
        if !has_cap_net_admin() {
            fail(&"this process lacks CAP_NET_ADMIN, which IP_TRANSPARENT sockets need; \
                   run as root or grant the capability (systemd: AmbientCapabilities=CAP_NET_ADMIN)");
        }
        let mut server = self
            .build_server(cli.pingora, config)
            .unwrap_or_else(|e| fail(&e));
        server.bootstrap();
        server.run_forever()
    }
}
