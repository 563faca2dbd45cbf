//! The `tproxyd` binary: parse the CLI, validate the config, run Pingora.

use clap::Parser;
use tproxyd::app::{build_server, PingoraOpt};
use tproxyd::config::Config;

/// A fully transparent HTTP proxy for Linux gateways (TPROXY / REDIRECT).
#[derive(Parser, Debug)]
#[command(name = "tproxyd", version, about)]
struct Cli {
    /// Pingora's own options: -c FILE, -t, -u, -d.
    #[command(flatten)]
    pingora: PingoraOpt,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let config = match cli.pingora.conf.as_deref() {
        Some(path) => Config::load(path),
        None => Ok(Config::defaults()),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tproxyd: {e}");
            std::process::exit(1);
        }
    };
    if cli.pingora.test {
        println!(
            "tproxyd: configuration {} is valid",
            cli.pingora.conf.as_deref().unwrap_or("(built-in defaults)")
        );
        std::process::exit(0);
    }
    if !tproxyd::listener::has_cap_net_admin() {
        eprintln!(
            "tproxyd: this process lacks CAP_NET_ADMIN, which IP_TRANSPARENT sockets need; \
             run as root or grant the capability (systemd: AmbientCapabilities=CAP_NET_ADMIN)"
        );
        std::process::exit(1);
    }
    let mut server = match build_server(cli.pingora, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tproxyd: {e}");
            std::process::exit(1);
        }
    };
    server.bootstrap();
    server.run_forever();
}
