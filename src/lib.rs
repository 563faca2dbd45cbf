//! tproxyd: a fully transparent HTTP proxy for Linux gateways, on Pingora.
//!
//! A router steers clients' port-80 traffic to us with nftables `tproxy`
//! (or `nat ... redirect`); we forward each request to the address the
//! client originally dialed, adding headers on the way.
//!
//! The modules form layers; each imports only from layers below it (and,
//! within a layer, from modules listed before it). Nothing imports upward,
//! so there is no cycle:
//!
//! 1. **Bottom** (import nothing from the crate): [`error`] (the config
//!    error and settings helpers), [`flow`] (mode, request id, flow info,
//!    refusals, answers), [`addr`] (the one `host[:port]` parser, CIDRs,
//!    local addresses).
//! 2. **Components**, each owning its settings and their validation:
//!    [`lifecycle`], [`signals`] (stop and upgrade signals, heard from
//!    start-up on), [`metrics`], [`access_log`], [`relay`], [`upstream`],
//!    [`destination`], [`filters`], [`tls`], [`downstream`], [`admin`],
//!    [`interception`] (what the firewall steers to which listener).
//! 3. **Request path**: [`admission`] (the pure admit decision and the
//!    forward-proxy policy), [`summary`] (one record per request for both
//!    log and metrics), [`listener`] (a listener's kind with its policy),
//!    [`transparent`] (`IP_TRANSPARENT` sockets in Pingora's fd table),
//!    [`shared`] (process and listener state).
//! 4. **Apps**, one per kind of listener: [`proxy`] (Pingora `ProxyHttp`),
//!    [`forward`] (CONNECT in front of the HTTP proxy), [`passthrough`]
//!    (TLS peek and splice).
//! 5. **Top**: [`config`] only composes the components' settings,
//!    [`rules`] (the nftables table and policy routing derived from it),
//!    [`doctor`] (the host checked against it), [`cli`], and [`app`], whose
//!    [`Tproxyd`] wires everything into a Pingora server.

pub mod addr;
pub mod error;
pub mod flow;

pub mod access_log;
pub mod admin;
pub mod destination;
pub mod downstream;
pub mod filters;
pub mod interception;
pub mod lifecycle;
pub mod metrics;
pub mod relay;
pub mod signals;
pub mod tls;
pub mod upstream;

pub mod admission;
pub mod listener;
pub mod shared;
pub mod summary;
pub mod transparent;

pub mod forward;
pub mod passthrough;
pub mod proxy;

pub mod app;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod rules;

pub use app::Tproxyd;
pub use error::ConfigError;
