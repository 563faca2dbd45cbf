//! tproxyd's command line, written for tproxyd: `run` (the default, so
//! `tproxyd -c FILE` keeps working, with Pingora's `-u`/`-d`/`-t`),
//! `check`, `rules`, `doctor`, plus `completions` and the hidden `manpage`
//! that the package's files are generated from. Pingora's own `Opt` is
//! built from [`RunArgs`], so its upgrade and daemon machinery works as
//! documented for Pingora, but its help texts are not ours to show.

use clap::{Args, CommandFactory, Parser, Subcommand};
use pingora_core::server::configuration::Opt;

/// The config file `check`, `rules` and `doctor` read unless told.
pub const DEFAULT_CONFIG: &str = "/etc/tproxyd/tproxyd.yaml";

/// tproxyd's command line.
#[derive(Parser, Debug)]
#[command(
    name = "tproxyd",
    version,
    about = "A fully transparent HTTP(S) proxy for Linux gateways",
    long_about = "A fully transparent HTTP(S) proxy for Linux gateways.\n\n\
        The router's firewall steers clients' traffic to tproxyd (nftables tproxy or \
        nat redirect); tproxyd sends each request on to the address the client dialed, \
        with headers added, filtered and logged. Without a command, tproxyd runs the proxy.",
    args_conflicts_with_subcommands = true,
    after_help = "Signals: SIGTERM stops accepting and exits once no request or relay is in \
        flight (grace_period_seconds at most); SIGQUIT hands the listening sockets to a new \
        `tproxyd -u` (graceful upgrade), then stops likewise; SIGINT exits at once; SIGHUP \
        reopens the access log and reloads the sets (tproxyd.sets).\n\
        See tproxyd(8) for the configuration."
)]
pub struct Cli {
    /// What to do; `run` when none is given.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `run`'s options, so `tproxyd -c FILE` runs.
    #[command(flatten)]
    pub run: RunArgs,
}

/// tproxyd's commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy (the default)
    Run(RunArgs),
    /// Check a configuration and exit: 0 when valid, else 1 with the key and the reason
    Check(ConfigArg),
    /// Print the nftables table and policy routing that steer traffic to the listeners,
    /// or apply or remove them
    #[command(
        long_about = "Print the nftables table (`table inet tproxyd`) that steers each listener's \
        `intercept` ports to it, derived from the configuration, with the policy routing that \
        goes with it.\n\nWith --apply, load the table in one transaction (replacing only that \
        table) and install the policy routing (ip rule fwmark ... lookup ...; local default dev \
        lo table ...; v4 and v6) where missing. With --remove, take both away. No other table, \
        chain, rule or route is touched."
    )]
    Rules(RulesArgs),
    /// Check this host against the configuration: one line per check (ok, warn, FAIL) with
    /// the fix; exits 1 when a check fails
    Doctor(ConfigArg),
    /// Show how the policy decides one flow, rule by rule, without sending traffic; exits 0
    /// when the flow is allowed, 1 when it is denied
    #[command(
        long_about = "Show how the policy decides one flow, without sending traffic: every rule of \
        every rule set that applies, in order, matched or not and why (which condition, which \
        set, which entry of which file and line), then the decision the proxy would make. \
        Exits 0 when the flow is allowed, 1 when it is denied, 2 on a bad flow or config."
    )]
    Explain(ExplainArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page tproxyd(8) in roff
    #[command(hide = true)]
    Manpage,
}

/// How to run the proxy.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// The configuration file: Pingora's server keys and a `tproxyd:` section [default: built-in
    /// defaults, one tproxy listener on [::]:8888]
    #[arg(short, long, value_name = "FILE")]
    pub conf: Option<String>,
    /// Take over the listening sockets of a running tproxyd (graceful upgrade: start this, then
    /// send the old process SIGQUIT)
    #[arg(short, long)]
    pub upgrade: bool,
    /// Run in the background; the pid goes to the configuration's `pid_file`
    #[arg(short, long)]
    pub daemon: bool,
    /// Check the configuration and exit (the same as `tproxyd check`)
    #[arg(short, long)]
    pub test: bool,
    /// Ignored; accepted because `cargo test` may pass it.
    #[arg(long, hide = true)]
    pub nocapture: bool,
}

impl RunArgs {
    /// Pingora's options for these.
    pub fn pingora(&self) -> Opt {
        Opt {
            upgrade: self.upgrade,
            daemon: self.daemon,
            nocapture: self.nocapture,
            test: self.test,
            conf: self.conf.clone(),
        }
    }
}

/// The configuration file to read.
#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// The configuration file
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub conf: String,
}

/// `tproxyd rules`.
#[derive(Args, Debug, Clone)]
pub struct RulesArgs {
    /// The configuration file
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub conf: String,
    /// Load the table and install the policy routing (idempotent)
    #[arg(long, conflicts_with = "remove")]
    pub apply: bool,
    /// Remove the table and the policy routing
    #[arg(long)]
    pub remove: bool,
}

/// `tproxyd explain`.
#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// The configuration file
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub conf: String,
    /// The client's address
    #[arg(long, value_name = "IP")]
    pub client: String,
    /// The address the client connects to (on a forward listener: where the name resolves)
    #[arg(long, value_name = "IP:PORT")]
    pub dst: String,
    /// The name the client asks for: its Host header, or a CONNECT's host
    #[arg(long, value_name = "NAME", conflicts_with = "sni")]
    pub host: Option<String>,
    /// The name in the client's TLS ClientHello (SNI)
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// The listener the flow arrives on [default: the one intercepting the port]
    #[arg(long, value_name = "NAME")]
    pub listener: Option<String>,
    /// The request's method (HTTP flows; CONNECT on a forward listener)
    #[arg(long, value_name = "METHOD", default_value = "GET")]
    pub method: String,
    /// The request's path (HTTP flows)
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub path: String,
}

/// What the hand-written part of the manual page says: the configuration,
/// signals and files, which the options alone do not explain.
const MANUAL: &str = include_str!("../doc/tproxyd.8.in");

impl Cli {
    /// The manual page tproxyd(8): clap_mangen's sections from the CLI,
    /// then the hand-written ones.
    pub fn manpage() -> Vec<u8> {
        let cmd = Cli::command();
        let man = clap_mangen::Man::new(cmd.clone()).section("8");
        let mut out = Vec::new();
        let _ = man.render_title(&mut out);
        let _ = man.render_name_section(&mut out);
        // clap_mangen's synopsis leaves out option values (`-c|--conf`
        // without FILE): written here, as the commands below are.
        out.extend_from_slice(
            format!(
                ".SH SYNOPSIS\n\\fBtproxyd\\fR {} [\\fIcommand\\fR]\n",
                usage(&cmd)
            )
            .as_bytes(),
        );
        let _ = man.render_description_section(&mut out);
        let _ = man.render_options_section(&mut out);
        out.extend_from_slice(b".SH COMMANDS\n");
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            out.extend_from_slice(
                format!(
                    ".TP\n\\fBtproxyd {}\\fR {}\n{}\n",
                    sub.get_name(),
                    usage(sub),
                    sub.get_long_about()
                        .or(sub.get_about())
                        .map(|a| a.to_string().replace('-', "\\-"))
                        .unwrap_or_default()
                )
                .as_bytes(),
            );
        }
        out.extend_from_slice(MANUAL.as_bytes());
        let _ = man.render_version_section(&mut out);
        out
    }

    /// A completion script for `shell`.
    pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "tproxyd", &mut out);
        out
    }
}

/// `cmd`'s arguments in roff, as a synopsis shows them: `[-c|--conf FILE]`,
/// `[--apply]`, `<shell>` (not --help and --version).
fn usage(cmd: &clap::Command) -> String {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .map(|a| {
            let value = match a.get_value_names() {
                Some([v, ..]) if a.get_action().takes_values() => format!(" \\fI{v}\\fR"),
                _ => String::new(),
            };
            match (a.get_short(), a.get_long()) {
                (Some(s), Some(l)) => format!("[\\fB\\-{s}\\fR|\\fB\\-\\-{l}\\fR{value}]"),
                (None, Some(l)) => format!("[\\fB\\-\\-{l}\\fR{value}]"),
                _ => format!("\\fI<{}>\\fR", a.get_id()),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
