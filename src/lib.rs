//! tproxyd: a fully transparent HTTP proxy for Linux gateways, on Pingora.
//!
//! A router steers clients' port-80 traffic to us with nftables `tproxy`
//! (or `nat ... redirect`); we forward each request to the address the
//! client originally dialed, adding headers on the way.
//!
//! The modules form layers; each imports only from modules listed before
//! it below (within a layer too), so nothing imports upward and there is
//! no cycle. This list is the one statement of the order: `tests/layers.rs`
//! reads it from here and checks every `crate::` import against it.
//!
//! 1. **Vocabulary**: [`error`] (the config error and settings helpers),
//!    [`addr`] (address types and parsers), [`flow`] (mode, kinds, request
//!    id, refusals, answers).
//! 2. **Components**, each owning its settings and their validation:
//!    [`lifecycle`], [`signals`] (stop and upgrade signals, heard from
//!    start-up on), [`metrics`], [`access_log`], [`relay`], [`live`] (the
//!    flows open now, heavy hitters, rates: the status page's state),
//!    [`upstream`], [`destination`], [`egress`] (where flows leave: direct,
//!    parent proxies), [`sets`] (name and address sets from files),
//!    [`policy`] (rule sets on flows), [`filters`], [`tls`], [`downstream`]
//!    (the client side: connections, heads, limits), [`admin`] (metrics,
//!    health, the status page and its API), [`interception`] (what the
//!    firewall steers to which listener).
//! 3. **Request path**: [`decision`] (the one decision on every flow),
//!    [`summary`] (one record per flow for both log and metrics),
//!    [`listener`] (a listener's kind with its policy), [`transparent`]
//!    (`IP_TRANSPARENT` sockets in Pingora's fd table), [`shared`] (process
//!    and listener state).
//! 4. **Apps**, one per kind of listener: [`passthrough`] (TLS peek and
//!    splice), [`proxy`] (HTTP, forward and CONNECT, tunnels of what is not
//!    HTTP).
//! 5. **Top**: [`config`] only composes the components' settings,
//!    [`rules`] (the nftables table and policy routing derived from it),
//!    [`doctor`] (the host checked against it), [`explain`] (one flow's
//!    decision, rule by rule), [`cli`], and [`app`], whose
//!    [`Tproxyd`] wires everything into a Pingora server.

pub mod addr;
pub mod error;
pub mod flow;

pub mod access_log;
pub mod admin;
pub mod destination;
pub mod downstream;
pub mod egress;
pub mod filters;
pub mod interception;
pub mod lifecycle;
pub mod live;
pub mod metrics;
pub mod policy;
pub mod relay;
pub mod sets;
pub mod signals;
pub mod tls;
pub mod upstream;

pub mod decision;
pub mod listener;
pub mod shared;
pub mod summary;
pub mod transparent;

pub mod passthrough;
pub mod proxy;

pub mod app;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod explain;
pub mod rules;

pub use app::Tproxyd;
pub use error::ConfigError;
