//! The demo system and its live console, served by the same binary as
//! everything else.
//!
//! [`mount`] adds four pages and a JSON API to a [`Router`]:
//!
//! | page | what |
//! |---|---|
//! | `/` | home: what the demo shows, links to the rest, live system figures |
//! | `/math` | ∑(1..n) or n! as supervised tasks; `n = 13` crashes on purpose |
//! | `/load` | up to a million supervised workers, a failure rate, schedulers online, live graphs |
//! | `/top` | the ten processes that used most CPU in the last second, with info and kill |
//!
//! Pages are plain HTML, CSS and JavaScript embedded in the binary (no
//! framework, no CDN); they update by server-sent events. The JSON API is
//! documented in `docs/console-api.md`.
//!
//! # The console's processes
//!
//! Nothing runs until the first console request. That request starts, in
//! a process of its own (not linked to the request), a supervisor with:
//!
//! * `math_tasks`: a [`TaskSupervisor`](ember_otp::task::TaskSupervisor)
//!   running each math job as a temporary task, so a crash ends only that
//!   job;
//! * `sampler`: once a second, diffs runtime and process counters into the
//!   figures every page shows (`console/sampler.rs`);
//! * `load_shards`: a supervisor of dynamic supervisors that restart crashed
//!   load workers (`console/load.rs`).
//!
//! Each open event stream is one more process, which ends when its client
//! goes away.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{Request, Response, Router};

mod api;
mod assets;
mod load;
mod math;
mod sampler;
mod services;
mod top;

pub(crate) use services::Console;

/// Adds the console's pages (`/`, `/math`, `/load`, `/top`), its assets
/// (`/assets/console/*`) and its JSON API (`/api/...`) to `router`.
///
/// Each call makes an independent console: its processes start inside the
/// runtime that serves its first request.
pub fn mount(router: Router) -> Router {
    static INSTANCES: AtomicU64 = AtomicU64::new(0);
    let console = Arc::new(Console::new(INSTANCES.fetch_add(1, Ordering::Relaxed)));
    let router = assets::mount(router);
    api::mount(router, console)
}

/// Wraps a handler that needs the console.
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
        let answer = handler(console.clone(), request);
        Box::pin(async move {
            // The console must stay usable when the system it shows is
            // saturated (a million workers on two cores): its processes
            // are served before normal work.
            ember_runtime::set_priority(ember_runtime::Priority::High);
            answer.await
        })
    }
}
