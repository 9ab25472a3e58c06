//! This node's live figures as the API gives them: the sampler's latest
//! snapshot (never a stale one) and the Load page's view of it.

use std::sync::Arc;
use std::time::Duration;

use ember_runtime::Handle;
use http::StatusCode;
use serde_json::{json, Value};

use super::error::{error, ApiError};
use super::sampler::{Snapshot, STALE};
use super::{load, Console};

/// Starts the console's application if it is down (see
/// `Console::ensure_started`); `503` if it cannot.
pub(crate) async fn started(console: &Arc<Console>) -> Result<(), ApiError> {
    console
        .ensure_started()
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e))
}

/// The latest figures of a live sampler, waiting up to 2 s for them (the
/// first after a start come within a quarter of a second); `503` rather
/// than stale figures.
pub(crate) async fn snapshot(console: &Arc<Console>) -> Result<Arc<Snapshot>, ApiError> {
    started(console).await?;
    let mut rx = console.snapshot.subscribe();
    let fresh = |s: &Option<Arc<Snapshot>>| {
        s.as_ref()
            .is_some_and(|s| s.taken.elapsed() < STALE && ember_runtime::is_alive(s.sampler))
    };
    let waited = ember_runtime::time::timeout(Duration::from_secs(2), rx.wait_for(fresh)).await;
    match waited {
        Ok(Ok(snapshot)) => Ok(snapshot.clone().expect("waited for some")),
        _ => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the console sampler is restarting; no live figures yet",
        )),
    }
}

/// `GET /api/load`: the sampler's figures and history with the settings.
pub(crate) fn load_view(console: &Console, snapshot: &Snapshot) -> Value {
    let mut view = snapshot.load.clone();
    let settings = load_settings(console);
    if let (Some(view), Value::Object(settings)) = (view.as_object_mut(), settings) {
        view.extend(settings);
    }
    view
}

/// The Load page's settings and counters (`GET /api/load` without figures).
pub(crate) fn load_settings(console: &Console) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let load = &console.load;
    let handle = Handle::current();
    json!({
        "workers": load.target.load(Relaxed),
        "live_workers": load.live.load(Relaxed),
        "running_workers": load.running.load(Relaxed),
        "starting": load.starters.load(Relaxed) > 0,
        "failure_rate": load.failure_rate(),
        "jobs_total": load.jobs.load(Relaxed),
        "failures_total": load.failures.load(Relaxed),
        "schedulers_online": handle.schedulers_online(),
        "schedulers_total": handle.runtime_info().schedulers.len(),
        "max_workers": load::MAX_WORKERS,
    })
}
