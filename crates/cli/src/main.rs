//! The `ember` binary: the demo server. It serves the benchmark endpoints
//! (`/ping`, `/fact?n=N`, `/spin?n=N`) and the console on Ember processes,
//! and shuts down gracefully on Ctrl-C. With `--sname` or `--name` it is
//! also an Erlang distribution node that `erl` can ping, with a registered
//! `ember_echo` process.

use std::process::ExitCode;

use clap::Parser;
use ember_runtime::Runtime;
use ember_web::console::{self, Demo};
use ember_web::{endpoints, Config, Router};

mod dist;

/// The global allocator, counted exactly for `runtime_info`: mimalloc by
/// default (feature `mimalloc`), the system allocator without it.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: ember_runtime::Counting<mimalloc::MiMalloc> =
    ember_runtime::Counting(mimalloc::MiMalloc);

/// The global allocator, counted exactly for `runtime_info`.
#[cfg(not(feature = "mimalloc"))]
#[global_allocator]
static ALLOC: ember_runtime::CountingAlloc = ember_runtime::CountingAlloc;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(group = clap::ArgGroup::new("distributed").args(["sname", "name"]))]
#[command(version, about = "Ember: the soul of Erlang/OTP, in Rust")]
struct Options {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4000")]
    listen: String,
    /// Scheduler threads (default: one per core).
    #[arg(long)]
    schedulers: Option<usize>,
    /// The live console: `rw` (default), `read-only` (no kill, no jobs, no
    /// settings) or `off` (not served at all).
    #[arg(long, default_value = "rw", value_parser = parse_mode)]
    console: console::Mode,
    /// A host name the console accepts in `Host` besides the addresses it
    /// listens on, e.g. the name a reverse proxy forwards (repeatable).
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_hosts: Vec<String>,
    /// Let the console kill the processes the node cannot live without
    /// (its root, the HTTP acceptor, the top supervisor and the keeper).
    #[arg(long)]
    allow_kill_system: bool,
    /// Be a distributed node called `NAME@<short host name>` (as `erl
    /// -sname`): erl nodes can ping it and send to `ember_echo`.
    #[arg(long, value_name = "NAME", conflicts_with = "name")]
    sname: Option<String>,
    /// Be a distributed node with a long name `NAME@HOST` (as `erl -name`).
    #[arg(long, value_name = "NAME@HOST")]
    name: Option<String>,
    /// The distribution cookie (default: `EMBER_COOKIE`, else
    /// `~/.erlang.cookie`, created as erl does when missing).
    #[arg(long, requires = "distributed")]
    cookie: Option<String>,
}

fn parse_mode(s: &str) -> Result<console::Mode, String> {
    s.parse()
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Logs on stderr; stdout says where the node listens and when it
        // stops, for whoever started it.
        .with_writer(std::io::stderr)
        .init();
    let options = Options::parse();
    let mut builder = Runtime::builder();
    if let Some(n) = options.schedulers {
        builder = builder.schedulers(n);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ember: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve(options))
}

async fn serve(options: Options) -> ExitCode {
    // The root of the binary outlives any crash it might be linked to.
    ember_runtime::trap_exit(true);
    let console_options = console::Options {
        mode: options.console,
        allowed_hosts: options.allowed_hosts,
        allow_kill_system: options.allow_kill_system,
        ..console::Options::default()
    };
    let distributed = options.sname.is_some() || options.name.is_some();
    let dist_config = if distributed {
        let name = dist::node_name(options.sname.as_deref(), options.name.as_deref());
        let cookie = dist::cookie(options.cookie.as_deref());
        match (name, cookie) {
            (Ok(name), Ok(cookie)) => Some((name, cookie)),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("ember: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let routes = endpoints::routes(Router::new());
    let listen = options.listen;
    let demo = match Demo::start(listen.as_str(), routes, Config::default(), console_options).await
    {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("ember: cannot serve on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let schedulers = ember_runtime::Handle::current().schedulers_online();
    say(format_args!(
        "ember: listening on http://{} ({schedulers} schedulers, console {}); Ctrl-C stops",
        demo.local_addr(),
        match options.console {
            console::Mode::ReadOnly => "read-only",
            console::Mode::Off => "off",
            _ => "read-write",
        }
    ));
    // After the line above, which whoever started us reads first.
    let node = match dist_config {
        Some((name, cookie)) => {
            let config = ember_dist::NodeConfig::new(&name, &cookie);
            let runtime = ember_runtime::Handle::current();
            let functions = dist::demo_functions();
            match ember_dist::Node::start_in_runtime_with(config, &runtime, functions).await {
                Ok(node) => {
                    dist::spawn_echo();
                    dist::start_kv().await;
                    say(format_args!(
                        "ember: distributed as {} (port {}); {} echoes {{Pid, Term}}",
                        node.name().as_str(),
                        node.port(),
                        dist::ECHO
                    ));
                    Some(node)
                }
                Err(e) => {
                    eprintln!("ember: cannot start the distributed node {name}: {e}");
                    demo.shutdown().await;
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("ember: cannot wait for Ctrl-C: {e}");
    }
    say(format_args!(
        "ember: shutting down (draining in-flight requests)"
    ));
    if let Some(node) = node {
        node.stop();
    }
    demo.shutdown().await;
    say(format_args!("ember: stopped"));
    ExitCode::SUCCESS
}

/// Prints a line on stdout; a closed stdout is no reason to crash.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
