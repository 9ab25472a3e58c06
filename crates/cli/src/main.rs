//! The `ember` binary: the demo server. It serves the benchmark endpoints
//! (`/ping`, `/fact?n=N`, `/spin?n=N`) and the console on Ember processes,
//! and shuts down gracefully on Ctrl-C. With `--sname` or `--name` it is
//! also an Erlang distribution node that `erl` and `iex` can ping, with
//! the registered `ember_echo` process, the `ember_kv` server and the
//! `ember_tasks` task supervisor (see `dist.rs`), and the cluster
//! services (`--join`, `/api/services`; see `cluster.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ember_console::endpoints;
use ember_console::{self as console, Demo};
use ember_runtime::Runtime;
use ember_web::{Config, Router};

mod cluster;
mod dist;

/// The global allocator, counted exactly for `runtime_info`: mimalloc by
/// default (feature `mimalloc`), the system allocator without it.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: ember_runtime::alloc::Counting<mimalloc::MiMalloc> =
    ember_runtime::alloc::Counting(mimalloc::MiMalloc);

/// The global allocator, counted exactly for `runtime_info`.
#[cfg(not(feature = "mimalloc"))]
#[global_allocator]
static ALLOC: ember_runtime::alloc::CountingAlloc = ember_runtime::alloc::CountingAlloc;

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
    /// Run distribution over TLS (as `erl -proto_dist inet_tls`) with this
    /// PEM certificate (it must name the host of the node name); needs
    /// `--tls-key` and `--tls-ca`.
    #[arg(long, value_name = "FILE", requires_all = ["distributed", "tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM certificate authorities trusted to sign peers' certificates.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// The directory of the node's durable data (the jobs store,
    /// `jobs.db`); created if missing.
    #[arg(long, value_name = "DIR", default_value = "./ember-data")]
    data: PathBuf,
    /// Cluster seeds: connect to these nodes at start and keep retrying
    /// while they are not connected (`NODE[,NODE...]`; a name without `@`
    /// gets this node's host). Every distributed node runs the cluster
    /// services (`/api/services`) whether or not it joins anyone.
    #[arg(
        long,
        value_name = "NODE[,NODE...]",
        value_delimiter = ',',
        requires = "distributed"
    )]
    join: Vec<String>,
    /// Keep the jobs in this PostgreSQL database (`postgres://user@host:port/db`)
    /// instead of SQLite in `--data`: every node given the same database
    /// shares its queues.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// The name this node's jobs are recorded under (the `node` of a job).
    /// Default: the distribution node name; else, with `--database`,
    /// `nonode@<host>-<os pid>` (nodes sharing a database need distinct
    /// names); else `nonode@nohost`.
    #[arg(long, value_name = "NAME")]
    jobs_node: Option<String>,
    /// How many jobs of queue NAME this node runs at once (repeatable;
    /// default: 100 for `llm`, 10 for any other queue).
    #[arg(long = "queue", value_name = "NAME=LIMIT", value_parser = parse_queue)]
    queues: Vec<(String, usize)>,
    /// A recurring job (repeatable): at every slot of the cron expression
    /// EXPR (UTC; 5 fields, or 6 with seconds first, or `@hourly` and the
    /// like) one job of KIND with the JSON args ARGS, once across the nodes
    /// sharing the store, e.g. `--cron 'facts=*/5 * * * *:fact:{"n": 1000}'`.
    #[arg(long = "cron", value_name = "NAME=EXPR:KIND:ARGS", value_parser = parse_cron)]
    cron: Vec<CronArg>,
    /// On Ctrl-C or SIGTERM, how long in-flight requests may take to finish
    /// before their connections are closed, in seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    shutdown_timeout: std::time::Duration,
    /// With TLS, accept peers that present no certificate (default:
    /// refuse them, as OTP's `verify_peer` + `fail_if_no_peer_cert`).
    #[arg(long, requires = "tls_cert")]
    tls_allow_no_peer_cert: bool,
}

/// A `--cron` entry.
#[derive(Clone, Debug)]
struct CronArg {
    name: String,
    expression: String,
    kind: String,
    args: serde_json::Value,
}

fn parse_cron(s: &str) -> Result<CronArg, String> {
    let usage = "expected NAME=EXPR:KIND:ARGS";
    let (name, rest) = s.split_once('=').ok_or(usage)?;
    let (expression, rest) = rest.split_once(':').ok_or(usage)?;
    let (kind, args) = rest.split_once(':').ok_or(usage)?;
    let args = serde_json::from_str(args).map_err(|e| format!("ARGS is not JSON: {e}"))?;
    Ok(CronArg {
        name: name.trim().to_owned(),
        expression: expression.trim().to_owned(),
        kind: kind.trim().to_owned(),
        args,
    })
}

fn parse_queue(s: &str) -> Result<(String, usize), String> {
    let usage = || format!("expected NAME=LIMIT with LIMIT at least 1, not {s:?}");
    let (name, limit) = s.split_once('=').ok_or_else(usage)?;
    let limit: usize = limit.trim().parse().map_err(|_| usage())?;
    let name = name.trim();
    if name.is_empty() || limit == 0 {
        return Err(usage());
    }
    Ok((name.to_owned(), limit))
}

fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| std::time::Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("expected seconds (e.g. 10 or 0.5), not {s:?}"))
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
    let node_name = options
        .jobs_node
        .clone()
        .or_else(|| dist_config.as_ref().map(|(name, _)| name.clone()))
        .unwrap_or_else(|| {
            if options.database.is_some() {
                format!("nonode@{}-{}", host_name(), std::process::id())
            } else {
                "nonode@nohost".to_owned()
            }
        });
    let jobs = match start_jobs(
        &options.data,
        options.database.as_deref(),
        node_name,
        &options.queues,
        &options.cron,
    )
    .await
    {
        Ok(jobs) => jobs,
        Err(e) => {
            match &options.database {
                _ if e.starts_with("--cron") => eprintln!("ember: {e}"),
                Some(_) => eprintln!("ember: cannot open the jobs database: {e}"),
                None => eprintln!(
                    "ember: cannot open the jobs store in {}: {e}",
                    options.data.display()
                ),
            }
            return ExitCode::FAILURE;
        }
    };
    let (api, mut stop_requests) = cluster::Api::new();
    let routes = api.routes(ember_console::jobs::routes(
        endpoints::routes(Router::new()),
        jobs,
    ));
    let listen = options.listen;
    let config = Config {
        shutdown_timeout: options.shutdown_timeout,
        ..Config::default()
    };
    let demo = match Demo::start(listen.as_str(), routes, config, console_options).await {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("ember: cannot serve on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // From the moment it says it listens, a Ctrl-C or SIGTERM stops the
    // node gracefully, even one that arrives while distribution starts;
    // before, while stores open, the default action still ends a start-up
    // that hangs.
    listen_for_stop_signals(api.stop_requests());
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
            let mut config = ember_dist::NodeConfig::new(&name, &cookie);
            if let (Some(cert), Some(key), Some(ca)) =
                (&options.tls_cert, &options.tls_key, &options.tls_ca)
            {
                let mut tls = ember_dist::TlsOptions::new(cert, key, ca);
                tls.require_peer_cert = !options.tls_allow_no_peer_cert;
                config.tls = Some(tls);
            }
            let runtime = ember_runtime::Handle::current();
            let mut functions = dist::demo_functions();
            demo.register_functions(&mut functions);
            match ember_dist::Node::start_in_runtime_with(config, &runtime, functions.clone()).await
            {
                Ok(node) => {
                    demo.set_node(node.view());
                    dist::spawn_echo();
                    if let Err(e) = dist::start_services(functions).await {
                        tracing::warn!("ember: cannot start {} and {}: {e}", dist::KV, dist::TASKS);
                    }
                    api.start(node.name().as_str(), &options.join).await;
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
    wait_for_stop(&mut stop_requests).await;
    say(format_args!(
        "ember: shutting down (draining in-flight requests)"
    ));
    if let Some(node) = node {
        if let Some(cluster) = api.cluster() {
            // Hands the node's services over before the connections go.
            cluster.stop().await;
            say(format_args!("ember: left the cluster"));
        }
        node.stop();
    }
    demo.shutdown().await;
    say(format_args!("ember: stopped"));
    ExitCode::SUCCESS
}

/// This machine's host name (`localhost` if unknown).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A duration in ms from the environment variable `var`, if set and valid.
fn env_ms(var: &str) -> Option<std::time::Duration> {
    let ms: u64 = std::env::var(var).ok()?.trim().parse().ok()?;
    (ms > 0).then(|| std::time::Duration::from_millis(ms))
}

/// Opens the jobs store (PostgreSQL at `database` if given, else SQLite in
/// `dir`) and starts the job system with the demo kinds (`llm`, `fact`,
/// `flaky`) and the `--queue` limits. `EMBER_JOBS_LEASE_MS` sets the lease (default 30 s; the
/// heartbeat is a third of it), for tests of lease expiry.
async fn start_jobs(
    dir: &std::path::Path,
    database: Option<&str>,
    node: String,
    queues: &[(String, usize)],
    cron: &[CronArg],
) -> Result<ember_jobs::Jobs, String> {
    let mut config = ember_jobs::JobsConfig {
        node,
        ..ember_jobs::JobsConfig::default()
    };
    // Slow calls that mostly wait: many at once.
    config
        .queues
        .insert(ember_console::jobs::LLM_QUEUE.to_owned(), 100);
    config.queues.extend(queues.iter().cloned());
    if let Some(lease) = env_ms("EMBER_JOBS_LEASE_MS") {
        config.lease = lease;
        config.heartbeat = (lease / 3).max(std::time::Duration::from_millis(1));
        config.poll = config.poll.min(config.heartbeat);
    }
    match database {
        Some(url) => {
            let store = ember_jobs::PgStore::connect(url).map_err(|e| e.to_string())?;
            start_demo_jobs(store, config, cron).await
        }
        None => {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            let store =
                ember_jobs::SqliteStore::open(dir.join("jobs.db")).map_err(|e| e.to_string())?;
            start_demo_jobs(store, config, cron).await
        }
    }
}

/// Starts the job system on `store` with the demo kinds and the `--cron`
/// entries.
async fn start_demo_jobs(
    store: impl ember_jobs::Store,
    config: ember_jobs::JobsConfig,
    cron: &[CronArg],
) -> Result<ember_jobs::Jobs, String> {
    let mut builder = ember_console::jobs::demo_kinds(ember_jobs::Jobs::builder(store, config));
    for c in cron {
        builder = builder.cron(
            &c.name,
            &c.expression,
            &c.kind,
            c.args.clone(),
            ember_jobs::EnqueueOptions::default(),
        );
    }
    builder.start().await.map_err(|e| match e {
        ember_jobs::StoreError::Invalid(m) => format!("--cron: {m}"),
        e => e.to_string(),
    })
}

/// Turns Ctrl-C (SIGINT) and SIGTERM into stop requests, from the
/// "listening" line on: a signal that arrives while distribution starts is
/// kept in the channel until [`wait_for_stop`] looks (listening only there
/// let one arriving between the "listening" line and that point kill the
/// binary with nothing drained, a test's Ctrl-C once in a run at load 8).
///
/// On Unix a thread of its own waits for the signals, so that they need no
/// tokio driver; later signals, while the node drains, are ignored.
fn listen_for_stop_signals(stop: cluster::StopRequests) {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("ember: cannot listen for a stop signal: {e}");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("ember-signals".into())
            .spawn(move || {
                for _ in signals.forever() {
                    let _ = stop.try_send(());
                }
            });
        if let Err(e) = spawned {
            eprintln!("ember: cannot listen for a stop signal: {e}");
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ember_runtime::spawn(async move {
            match tokio::signal::ctrl_c().await {
                Ok(()) => {
                    let _ = stop.try_send(());
                }
                Err(e) => eprintln!("ember: cannot wait for Ctrl-C: {e}"),
            }
        });
    }
}

/// Waits for Ctrl-C, SIGTERM or `POST /api/node/stop`.
async fn wait_for_stop(requests: &mut ember_runtime::sync::mpsc::Receiver<()>) {
    // The `Api` holds a sender for as long as the binary runs.
    let _ = requests.recv().await;
}

/// Prints a line on stdout; a closed stdout is no reason to crash.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
