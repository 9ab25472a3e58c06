//! The demo system and its live console, served by the same binary as
//! everything else.
//!
//! [`mount`] adds seven pages and a JSON API to a [`Router`]:
//!
//! | page | what |
//! |---|---|
//! | `/` | home: what the demo shows, links to the rest, live system figures |
//! | `/math` | ∑(1..n) or n! in a pool of workers with a limit and a queue; `n = 13` crashes on purpose |
//! | `/load` | up to a million supervised workers, a failure rate, schedulers online, live graphs; the figures of any connected node |
//! | `/top` | the ten processes that used most CPU in the last second, with info and kill |
//! | `/cluster` | connected nodes (name, up since, traffic), and Top and info of another node's processes |
//! | `/jobs` | durable jobs: counts, enqueue, progress, cancel (reads the application's `/api/jobs`) |
//! | `/services` | the cluster's nodes and their services: add, invoke, stop a node (reads the application's `/api/services`, `/api/node`) |
//!
//! Pages are plain HTML, CSS and JavaScript embedded in the binary (no
//! framework, no CDN); they update by server-sent events. The JSON API is
//! documented in `docs/console-api.md`.
//!
//! # Safe to leave on
//!
//! The console can kill any process, as observer can, so [`Options`] says
//! who may drive it (see `docs/console-api.md`, "Who may use the console"):
//!
//! * every console request must name, in `Host`, an address the console
//!   listens on or an [`Options::allowed_hosts`] entry (against DNS
//!   rebinding); anything else is `403`;
//! * a mutating request (`POST`) must be `Content-Type: application/json`
//!   (else `415`) and same-origin: no `Origin`, or one naming the `Host`
//!   (else `403`), so no other web page can drive it;
//! * [`Mode::ReadOnly`] refuses every mutation, [`Mode::Off`] mounts nothing;
//! * the application's own routes under `/api/` in the router the console
//!   is mounted on (the jobs API, the cluster services, `/api/node/stop`)
//!   get the `Host` check, and for mutations read-only mode and the
//!   `Origin` check (not the content type);
//! * the processes the node cannot live without (the binary's root, the
//!   keeper, the application master, its top supervisor and the HTTP
//!   acceptor) cannot be killed from the console (`403`) unless
//!   [`Options::allow_kill_system`] is set.
//!
//! # The console's processes
//!
//! The console's processes form one application, `ember_console_<n>`
//! (OTP's application master with one top supervisor):
//!
//! ```text
//! application master
//!  └── root (one_for_one, 5 restarts in 10 s)
//!       ├── math        the pool of math workers (ppool: limit and queue)
//!       ├── sampler     the figures every page shows, once a second
//!       ├── load_shards 16 dynamic supervisors of load workers
//!       └── endpoint    the HTTP acceptor ([`Demo`] only)
//! ```
//!
//! With [`Demo`] (what the `ember` binary runs) the whole node is that tree,
//! endpoint included, and a keeper process starts it again whenever it
//! stops (the root exceeded its restart intensity, or someone killed it):
//! OTP's escalation, then what `heart` does for a node. With [`mount`]
//! alone the tree has no endpoint and starts on the first console request;
//! a request that finds it stopped starts it again. While it is down or has
//! not reported yet, the API answers `503` rather than stale figures.
//!
//! Each open event stream is one more process, which ends when its client
//! goes away.
//!
//! [`endpoints`] holds the benchmark endpoints the demo node also serves
//! (`/ping`, `/fact`, `/spin`): the contract `bench/run http` measures every
//! server on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ember_web::{Request, Response, Router};

mod api;
mod app;
mod assets;
mod cluster;
mod demo;
pub mod endpoints;
mod error;
mod figures;
mod guard;
pub mod jobs;
mod load;
mod math;
mod remote;
mod remote_load;
mod remote_top;
mod sampler;
mod top;

pub(crate) use app::Console;
pub use demo::Demo;

/// Whether the console is served, and whether it may change anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Pages, API and actions (the default; `--console rw`).
    #[default]
    ReadWrite,
    /// Pages and API, but every mutating request answers `403`
    /// (`--console read-only`).
    ReadOnly,
    /// No console at all: its routes answer `404` and none of its
    /// processes run (`--console off`).
    Off,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "rw" | "read-write" => Ok(Mode::ReadWrite),
            "read-only" | "ro" => Ok(Mode::ReadOnly),
            "off" => Ok(Mode::Off),
            other => Err(format!(
                "bad console mode {other:?}: expected rw, read-only or off"
            )),
        }
    }
}

/// Who may use the console and what it may do.
///
/// ```
/// use ember_console::{Mode, Options};
/// let options = Options {
///     mode: Mode::ReadOnly,
///     allowed_hosts: vec!["console.example.com".into()],
///     ..Options::default()
/// };
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Read-write (default), read-only or off.
    pub mode: Mode,
    /// Host names (or `name:port`) accepted in `Host` besides the addresses
    /// the console listens on, e.g. the name a reverse proxy forwards
    /// (`--allowed-host NAME`).
    pub allowed_hosts: Vec<String>,
    /// Whether the console may kill the processes the node cannot live
    /// without (default false: `403`; `--allow-kill-system`).
    pub allow_kill_system: bool,
    /// The addresses the server listens on, for the `Host` check. [`Demo`]
    /// fills it in; with [`mount_with`] leave it empty to accept loopback
    /// hosts (`localhost`, `127.0.0.1`, `[::1]`) only.
    pub listening: Vec<SocketAddr>,
    /// The distribution node whose cluster the Cluster page shows (with
    /// [`Demo`], [`Demo::set_node`] sets it once the node runs; without
    /// one the page says the node is not distributed).
    pub node: Option<ember_dist::NodeView>,
}

/// Adds the console's pages (`/`, `/math`, `/load`, `/top`, `/cluster`), its assets
/// (`/assets/console/*`) and its JSON API (`/api/...`) to `router`, with the
/// default [`Options`].
///
/// Each call makes an independent console: its processes start inside the
/// runtime that serves its first request.
pub fn mount(router: Router) -> Router {
    mount_with(router, Options::default())
}

/// [`mount`] with `options`; [`Mode::Off`] returns `router` unchanged.
pub fn mount_with(router: Router, options: Options) -> Router {
    if options.mode == Mode::Off {
        return router;
    }
    let console = new_console(options);
    mount_console(router, &console)
}

/// [`mount_with`], and registers in `functions` what other nodes' consoles
/// ask this one: `ember_console:load/0`, this node's Load figures for their
/// Load page (`GET /api/load?node=NAME`, see `docs/console-api.md`), and
/// `ember_console:top/0` and `process/1` for their Top page (`GET
/// /api/top?node=NAME`). Pass
/// the same `functions` to `ember_dist::Node::start_in_runtime_with`.
/// [`Mode::Off`] registers nothing and returns `router` unchanged.
pub fn mount_with_functions(
    router: Router,
    options: Options,
    functions: &mut ember_dist::Functions,
) -> Router {
    if options.mode == Mode::Off {
        return router;
    }
    let console = new_console(options);
    remote_load::register(&console, functions);
    remote_top::register(&console, functions);
    mount_console(router, &console)
}

fn new_console(options: Options) -> Arc<Console> {
    static INSTANCES: AtomicU64 = AtomicU64::new(0);
    Arc::new(Console::new(
        INSTANCES.fetch_add(1, Ordering::Relaxed),
        options,
    ))
}

fn mount_console(router: Router, console: &Arc<Console>) -> Router {
    let router = guard_app_api(router, console);
    let router = assets::mount(router, console);
    api::mount(router, console.clone())
}

/// Puts the application's routes under `/api/` that the console is mounted
/// beside (the jobs API, the cluster services, `/api/node/stop`) behind the
/// console's guards: the `Host` check for every method, and read-only mode
/// and the `Origin` check for every method but `GET` and `HEAD`.
fn guard_app_api(router: Router, console: &Arc<Console>) -> Router {
    router.wrap_routes(
        |path| path.starts_with("/api/"),
        |method, inner| {
            let mutating = !matches!(*method, http::Method::GET | http::Method::HEAD);
            Arc::new(AppGuard {
                console: console.clone(),
                inner,
                mutating,
            })
        },
    )
}

/// An application route behind the console's guards ([`guard_app_api`]).
struct AppGuard {
    console: Arc<Console>,
    inner: Arc<dyn ember_web::Handler>,
    mutating: bool,
}

impl ember_web::Handler for AppGuard {
    fn call(&self, request: Request) -> ember_web::HandlerFuture {
        let checked = guard::check_host(&self.console, &request).and_then(|()| {
            if self.mutating {
                guard::check_app_mutation(&self.console, &request)
            } else {
                Ok(())
            }
        });
        match checked {
            Ok(()) => self.inner.call(request),
            Err(refused) => Box::pin(async move { refused.response() }),
        }
    }
}

/// Wraps a console handler: the `Host` check, then the handler at high
/// priority.
fn with<F, Fut>(
    console: &Arc<Console>,
    handler: F,
) -> impl Fn(Request) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>
       + Send
       + Sync
       + 'static
where
    F: Fn(Arc<Console>, Request) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    let console = console.clone();
    move |request| {
        let answer =
            guard::check_host(&console, &request).map(|()| handler(console.clone(), request));
        Box::pin(async move {
            match answer {
                Ok(answer) => {
                    // The console must stay usable when the system it shows
                    // is saturated (a million workers on two cores): its
                    // processes are served before normal work.
                    ember_runtime::set_priority(ember_runtime::Priority::High);
                    answer.await
                }
                Err(refused) => refused.response(),
            }
        })
    }
}

/// [`with`] for a mutating route: also read-only mode, the content type and
/// the `Origin` (see [`guard::check_mutation`]).
fn with_mutation<F, Fut>(
    console: &Arc<Console>,
    handler: F,
) -> impl Fn(Request) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>
       + Send
       + Sync
       + 'static
where
    F: Fn(Arc<Console>, Request) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    let handler = Arc::new(handler);
    with(console, move |console, request| {
        let answer = guard::check_mutation(&console, &request).map(|()| handler(console, request));
        async move {
            match answer {
                Ok(answer) => answer.await,
                Err(refused) => refused.response(),
            }
        }
    })
}
