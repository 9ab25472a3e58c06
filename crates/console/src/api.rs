//! The console's JSON API and event streams (`docs/console-api.md`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ember_runtime::sync::mpsc;
use ember_runtime::{ExitReason, Handle, Pid, Priority, Spawn};
use http::StatusCode;
use serde_json::{json, Value};

use super::error::{error, fail, parse_pid, retry_later, with_status, ApiError};
use super::figures::{load_settings, load_view, snapshot, started};
use super::math::{self, Op};
use super::sampler::Snapshot;
use super::{load, remote_load, remote_top, top, with, with_mutation, Console};
use ember_web::{Request, Response, Router};

/// Largest `n` accepted for a sum (∑ fits in 128 bits well past it).
const MAX_SUM_N: u64 = 1 << 62;

/// Largest `n` accepted for a factorial (already hours of work).
const MAX_FACTORIAL_N: u64 = 10_000_000;

pub(crate) fn mount(router: Router, console: Arc<Console>) -> Router {
    let router = router
        .get("/api/system", with(&console, system))
        .get("/api/system/events", with(&console, system_events))
        .get("/api/top", with(&console, get_top))
        .get("/api/top/events", with(&console, top_events))
        .get("/api/processes/*", with(&console, process_info))
        .post("/api/processes/*", with_mutation(&console, process_action))
        .get("/api/math", with(&console, math_rows))
        .post("/api/math", with_mutation(&console, math_start))
        .get("/api/math/events", with(&console, math_events))
        .get("/api/load", with(&console, load_get))
        .post("/api/load", with_mutation(&console, load_set))
        .get("/api/load/events", with(&console, load_events));
    super::cluster::mount(router, &console)
}

/// Parameters from the query string and from a JSON object or form body.
fn params(request: &Request) -> Result<HashMap<String, String>, ApiError> {
    let mut params = ember_web::query(request);
    let body = request.body();
    let text = std::str::from_utf8(body)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "the body is not UTF-8"))?
        .trim();
    if text.starts_with('{') {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))?;
        for (k, v) in value.as_object().into_iter().flatten() {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            params.insert(k.clone(), v);
        }
    } else if !text.is_empty() {
        for pair in text.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.insert(k.to_string(), v.replace('+', " "));
        }
    }
    Ok(params)
}

// ---- system and top ------------------------------------------------------

async fn system(console: Arc<Console>, _request: Request) -> Response {
    match snapshot(&console).await {
        Ok(s) => ember_web::json(&s.system),
        Err(e) => e.into_response(),
    }
}

async fn get_top(console: Arc<Console>, request: Request) -> Response {
    match remote_load::target(&console, &request) {
        Ok(None) => {}
        Ok(Some(node)) => return remote_top::get(console, node).await,
        Err(e) => return e.into_response(),
    }
    match snapshot(&console).await {
        Ok(s) => ember_web::json(&s.top),
        Err(e) => e.into_response(),
    }
}

async fn system_events(console: Arc<Console>, _request: Request) -> Response {
    stream_snapshots(console, "system", |_, s| s.system.clone()).await
}

async fn top_events(console: Arc<Console>, request: Request) -> Response {
    match remote_load::target(&console, &request) {
        Ok(None) => {}
        Ok(Some(node)) => return remote_top::events(console, node).await,
        Err(e) => return e.into_response(),
    }
    stream_snapshots(console, "top", |_, s| s.top.clone()).await
}

/// An event stream of one view of each new snapshot, fed by a process of its
/// own that ends when the client goes away.
async fn stream_snapshots(
    console: Arc<Console>,
    what: &'static str,
    view: fn(&Console, &Snapshot) -> Value,
) -> Response {
    if let Err(e) = started(&console).await {
        return e.into_response();
    }
    let (tx, rx) = mpsc::channel::<String>(4);
    let mut updates = console.snapshot.subscribe();
    let spawned = Spawn::new()
        .priority(Priority::High)
        .label(format!("console events: {what}"))
        .spawn(async move {
            loop {
                let latest = updates.borrow_and_update().clone();
                if let Some(snapshot) = latest {
                    let event = view(&console, &snapshot).to_string();
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                if updates.changed().await.is_err() {
                    return;
                }
            }
        });
    match spawned {
        Ok(_) => ember_web::sse(rx),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

// ---- processes -------------------------------------------------------------

/// The pid if it names a live (or kill-pending) process.
fn find_pid(console: &Console, handle: &Handle, pid: Pid) -> Option<Pid> {
    if handle.process_info(pid).is_some() || console.math.known_pids().contains(&pid) {
        Some(pid)
    } else {
        None
    }
}

/// Splits `/api/processes/<pid>[/<action>]` into the pid and the action:
/// 400 for a malformed pid, 404 for a dead one.
fn lookup(console: &Console, request: &Request) -> Result<(Pid, Option<String>), ApiError> {
    let (pid_text, action) = split_process_path(request);
    let action = action.map(str::to_string);
    let Some(numbers) = parse_pid(pid_text) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("bad pid {pid_text:?}: expected <node.number.serial>, e.g. 0.123.0"),
        ));
    };
    match find_pid(console, &Handle::current(), numbers) {
        Some(pid) => Ok((pid, action)),
        None => Err(error(
            StatusCode::NOT_FOUND,
            format!("no process {numbers}: it is not alive"),
        )),
    }
}

/// The pid text and the action of `/api/processes/<pid>[/<action>]`.
fn split_process_path(request: &Request) -> (&str, Option<&str>) {
    let rest = request
        .uri()
        .path()
        .strip_prefix("/api/processes/")
        .unwrap_or("");
    match rest.split_once('/') {
        Some((p, a)) => (p, Some(a)),
        None => (rest, None),
    }
}

async fn process_info(console: Arc<Console>, request: Request) -> Response {
    match remote_load::target(&console, &request) {
        Ok(None) => {}
        Ok(Some(node)) => {
            return match split_process_path(&request) {
                (pid, None) => remote_top::process(console, node, pid).await,
                (_, Some(_)) => fail(
                    StatusCode::NOT_FOUND,
                    "unknown process route; try GET /api/processes/<pid>",
                ),
            }
        }
        Err(e) => return e.into_response(),
    }
    let (pid, action) = match lookup(&console, &request) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    if action.is_some() {
        return fail(
            StatusCode::NOT_FOUND,
            "unknown process route; try GET /api/processes/<pid>",
        );
    }
    match Handle::current().process_info(pid) {
        Some(info) => ember_web::json(&top::info_json(&info)),
        None => fail(StatusCode::NOT_FOUND, format!("no process {pid}")),
    }
}

async fn process_action(console: Arc<Console>, request: Request) -> Response {
    match remote_load::target(&console, &request) {
        Ok(None) => {}
        Ok(Some(node)) => return remote_top::refuse_kill(&node),
        Err(e) => return e.into_response(),
    }
    let (pid, action) = match lookup(&console, &request) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    match action.as_deref() {
        Some("kill") => {
            if let Some(why) = console.protected(pid) {
                if !console.options.allow_kill_system {
                    return fail(
                        StatusCode::FORBIDDEN,
                        format!(
                            "refused to kill {pid}: {why}, and the node cannot live without it \
                             (start the node with --allow-kill-system to allow it)"
                        ),
                    );
                }
            }
            let handle = Handle::current();
            handle.exit(pid, ExitReason::Kill);
            let after = handle.process_info(pid);
            ember_web::json(&json!({
                "pid": pid.to_string(),
                "killed": true,
                "alive": handle.is_alive(pid),
                "current_poll": after
                    .and_then(|i| i.current_poll)
                    .map(|p| p.to_string()),
            }))
        }
        _ => fail(
            StatusCode::NOT_FOUND,
            "unknown process action; try POST /api/processes/<pid>/kill",
        ),
    }
}

// ---- math --------------------------------------------------------------------

/// The jobs, and the pool's figures when it runs.
async fn math_json(console: &Arc<Console>) -> Value {
    let pool = match console.pool().stats().await {
        Ok(stats) => json!({
            "limit": stats.limit,
            "running": stats.running,
            "queued": console.math.queued(),
            "max_queued": math::MAX_QUEUED,
        }),
        Err(_) => Value::Null,
    };
    json!({ "jobs": console.math.to_json(), "pool": pool })
}

async fn math_rows(console: Arc<Console>, _request: Request) -> Response {
    if let Err(e) = started(&console).await {
        return e.into_response();
    }
    ember_web::json(&math_json(&console).await)
}

async fn math_start(console: Arc<Console>, request: Request) -> Response {
    let params = match params(&request) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let op = match params.get("op").map(String::as_str) {
        None | Some("") => Op::Sum,
        Some(op) => match Op::parse(op) {
            Some(op) => op,
            None => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    format!("bad op {op:?}: expected \"sum\" or \"factorial\""),
                )
            }
        },
    };
    let max = match op {
        Op::Sum => MAX_SUM_N,
        Op::Factorial => MAX_FACTORIAL_N,
    };
    let n = match params.get("n").map(|n| n.trim().parse::<u64>()) {
        Some(Ok(n)) if n <= max => n,
        Some(Ok(_)) => return fail(StatusCode::BAD_REQUEST, format!("n must be at most {max}")),
        _ => {
            return fail(
                StatusCode::BAD_REQUEST,
                "n must be a whole number, e.g. {\"n\": 1000}",
            )
        }
    };
    let queue = match params.get("queue").map(String::as_str) {
        None | Some("false") | Some("") => false,
        Some("true") => true,
        Some(other) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("bad queue {other:?}: expected true or false"),
            )
        }
    };
    if let Err(e) = started(&console).await {
        return e.into_response();
    }
    match math::start(&console, n, op, queue).await {
        Ok(id) => {
            let row = console.math.row_json(id).unwrap_or(Value::Null);
            with_status(StatusCode::ACCEPTED, ember_web::json(&row))
        }
        Err(math::Refused::Busy(why)) => retry_later(fail(StatusCode::SERVICE_UNAVAILABLE, why)),
        Err(math::Refused::Down(why)) => retry_later(fail(StatusCode::SERVICE_UNAVAILABLE, why)),
    }
}

async fn math_events(console: Arc<Console>, _request: Request) -> Response {
    let (tx, rx) = mpsc::channel::<String>(4);
    let mut updates = console.math.subscribe();
    let spawned = Spawn::new()
        .priority(Priority::High)
        .label("console events: math")
        .spawn(async move {
            loop {
                updates.borrow_and_update();
                let event = math_json(&console).await.to_string();
                if tx.send(event).await.is_err() {
                    return;
                }
                // A change, or a second (running rows show their time).
                let _ =
                    ember_runtime::time::timeout(Duration::from_secs(1), updates.changed()).await;
            }
        });
    match spawned {
        Ok(_) => ember_web::sse(rx),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

// ---- load --------------------------------------------------------------------

async fn load_get(console: Arc<Console>, request: Request) -> Response {
    match remote_load::target(&console, &request) {
        Ok(None) => {}
        Ok(Some(node)) => return remote_load::get(console, node).await,
        Err(e) => return e.into_response(),
    }
    match snapshot(&console).await {
        Ok(s) => ember_web::json(&load_view(&console, &s)),
        Err(e) => e.into_response(),
    }
}

async fn load_events(console: Arc<Console>, request: Request) -> Response {
    match remote_load::target(&console, &request) {
        Ok(None) => {}
        Ok(Some(node)) => return remote_load::events(console, node),
        Err(e) => return e.into_response(),
    }
    stream_snapshots(console, "load", load_view).await
}

async fn load_set(console: Arc<Console>, request: Request) -> Response {
    let params = match params(&request) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let handle = Handle::current();
    let total = handle.runtime_info().schedulers.len();
    let workers = match params.get("workers").map(|w| w.trim().parse::<usize>()) {
        None => None,
        Some(Ok(w)) if w <= load::MAX_WORKERS => Some(w),
        Some(_) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!(
                    "workers must be a whole number from 0 to {}",
                    load::MAX_WORKERS
                ),
            )
        }
    };
    let failure_rate = match params.get("failure_rate").map(|f| f.trim().parse::<f64>()) {
        None => None,
        Some(Ok(f)) if (0.0..=100.0).contains(&f) => Some(f),
        Some(_) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "failure_rate must be a percentage from 0 to 100",
            )
        }
    };
    let schedulers = match params.get("schedulers").map(|s| s.trim().parse::<usize>()) {
        None => None,
        Some(Ok(s)) if (1..=total).contains(&s) => Some(s),
        Some(_) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("schedulers must be from 1 to {total}"),
            )
        }
    };
    if let Err(e) = started(&console).await {
        return e.into_response();
    }
    if let Some(f) = failure_rate {
        console.load.set_failure_rate(f);
    }
    if let Some(s) = schedulers {
        handle.set_schedulers_online(s);
    }
    if let Some(w) = workers {
        load::set_workers(&console, w);
    }
    with_status(
        StatusCode::ACCEPTED,
        ember_web::json(&load_settings(&console)),
    )
}

#[cfg(test)]
mod tests {
    use super::parse_pid;

    #[test]
    fn pids_parse_with_or_without_brackets() {
        let pid = |text: &str| parse_pid(text).map(|p| (p.node(), p.number(), p.serial()));
        assert_eq!(pid("0.123.0"), Some((0, 123, 0)));
        assert_eq!(pid("<0.123.4>"), Some((0, 123, 4)));
        assert_eq!(pid("%3C0.1.0%3E"), Some((0, 1, 0)));
        assert_eq!(parse_pid("0.123"), None);
        assert_eq!(parse_pid("0.1.2.3"), None);
        assert_eq!(parse_pid("a.b.c"), None);
        assert_eq!(parse_pid(""), None);
    }
}
