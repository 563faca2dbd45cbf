//! The commands of the `tproxyd` binary: run (the default), check,
//! rules, doctor, explain.

use super::Tproxyd;
use crate::cli::{Cli, Command, ExplainArgs, RulesArgs, RunArgs};
use crate::config::Config;
use crate::doctor;
use crate::explain::{explain, Question};
use crate::listener::Listener;
use crate::rules::{host, Ruleset};
use crate::signals::EarlySignals;
use crate::transparent::has_cap_net_admin;
use clap::Parser;

impl Tproxyd {
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
            Some(Command::Explain(e)) => self.explain(&e),
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

    /// `tproxyd explain`: 0 allowed, 1 denied, 2 when it cannot say.
    fn explain(&self, args: &ExplainArgs) -> i32 {
        let config = match self.load(Some(&args.conf)) {
            Ok(c) => c,
            Err(e) => return 2 * fail(&e),
        };
        if let Err(e) = config.tproxyd.sets.load_all() {
            return 2 * fail(&e);
        }
        let q = Question {
            client: args.client.clone(),
            dst: args.dst.clone(),
            host: args.host.clone(),
            sni: args.sni.clone(),
            listener: args.listener.clone(),
            method: args.method.clone(),
            path: args.path.clone(),
        };
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return 2 * fail(&e),
        };
        match rt.block_on(explain(&config, &q)) {
            Ok(a) => {
                print!("{}", a.text);
                i32::from(!a.allowed)
            }
            Err(e) => 2 * fail(&e),
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
        if let Err(e) = config.tproxyd.sets.load_all() {
            return fail(&e);
        }
        for w in config.tproxyd.warnings() {
            log::warn!("{w}");
        }
        if args.test {
            print_sets(&config);
            for w in config.tproxyd.warnings() {
                println!("tproxyd: warning: {w}");
            }
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
        let (mut server, exit) = match self.assemble(args.pingora(), config) {
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
        exit.after_run();
        0
    }
}

/// What `check` says of each set: entries, skipped lines, the first few.
fn print_sets(config: &Config) {
    for slot in config.tproxyd.sets.slots() {
        let Some(l) = slot.current() else { continue };
        let file = slot.file.display();
        let r = &l.report;
        println!(
            "tproxyd: set {}: {} entries from {file} (format {}), {} lines skipped",
            slot.name,
            r.entries,
            slot.format.as_str(),
            r.skipped
        );
        for (line, why) in &r.bad {
            println!("tproxyd: set {}: skipped {file}:{line}: {why}", slot.name);
        }
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
