//! tproxyd's command line: Pingora's own options (`-c`, `-t`, `-u`, `-d`)
//! flattened into ours, so Pingora's upgrade and daemon machinery works as
//! documented for Pingora.

use clap::Parser;
use pingora_core::server::configuration::Opt;

/// tproxyd's command line.
#[derive(Parser, Debug)]
#[command(name = "tproxyd", version, about)]
pub struct Cli {
    /// Pingora's options, flattened into ours.
    #[command(flatten)]
    pub pingora: Opt,
}
