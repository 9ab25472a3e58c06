//! The `ember` binary: the demo server. It serves the benchmark endpoints
//! (`/ping`, `/fact?n=N`, `/spin?n=N`) and the console on Ember processes,
//! and shuts down gracefully on Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use ember_runtime::Runtime;
use ember_web::{endpoints, Config, Router, Server};

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
#[command(version, about = "Ember: the soul of Erlang/OTP, in Rust")]
struct Options {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4000")]
    listen: String,
    /// Scheduler threads (default: one per core).
    #[arg(long)]
    schedulers: Option<usize>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
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
    rt.block_on(serve(options.listen))
}

async fn serve(listen: String) -> ExitCode {
    let router = ember_web::console::mount(endpoints::routes(Router::new()));
    let server = match Server::bind(listen.as_str(), router, Config::default()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("ember: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let schedulers = ember_runtime::Handle::current().schedulers_online();
    println!(
        "ember: listening on http://{} ({schedulers} schedulers); Ctrl-C stops",
        server.local_addr()
    );
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("ember: cannot wait for Ctrl-C: {e}");
    }
    println!("ember: shutting down (draining in-flight requests)");
    server.shutdown().await;
    println!("ember: stopped");
    ExitCode::SUCCESS
}
