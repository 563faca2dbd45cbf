//! tproxyd: a fully transparent HTTP proxy for Linux gateways, on Pingora.
//!
//! A router steers clients' port-80 traffic to us with nftables `tproxy`
//! (or `nat ... redirect`); we forward each request to the address the
//! client originally dialed, adding headers on the way.
//!
//! - [`config`]: the YAML file (Pingora's keys plus our `tproxyd:` section)
//! - [`listener`]: `IP_TRANSPARENT` sockets handed to Pingora's fd table
//! - [`destination`]: the original destination of a connection, loop guard
//! - [`filters`]: the filter API and the built-in filters
//! - [`proxy`]: the `ProxyHttp` implementation
//! - [`connector`]: upstream sockets: source spoofing, `SO_MARK`
//! - [`forward`]: forward-proxy mode (absolute URIs, CONNECT)
//! - [`passthrough`], [`tls`]: HTTPS by SNI peek-and-splice, ClientHello parsing
//! - [`metrics`], [`admin`], [`access_log`]: observability
//! - [`lifecycle`]: draining keep-alive connections on upgrade / stop
//! - [`app`]: [`Tproxyd`], the builder that assembles and runs it

pub mod access_log;
pub mod admin;
pub mod app;
pub mod config;
pub mod connector;
pub mod destination;
pub mod filters;
pub mod forward;
pub mod lifecycle;
pub mod listener;
pub mod metrics;
pub mod passthrough;
pub mod proxy;
pub mod tls;

pub use app::Tproxyd;
