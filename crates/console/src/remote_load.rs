//! The Load page of another node of the cluster: `GET /api/load?node=NAME`
//! and `GET /api/load/events?node=NAME` (`docs/console-api.md`, "Load of
//! another node").
//!
//! An Ember node whose console registered its functions
//! ([`register`]: the `ember` binary does) answers `ember_console:load/0`
//! with its own `GET /api/load` and `GET /api/system` figures, taken by its
//! own sampler, history included: this node adds the node's name and a few
//! figures of its system view and passes them on. Any other node (`erl`,
//! `iex`) is asked what standard Erlang tells without changing anything
//! there: `erlang:system_info/1` (`process_count`, `schedulers`,
//! `schedulers_online`), `erlang:statistics/1` (`run_queue_lengths`,
//! `runtime`) and `erlang:memory/1` (`total`); it has no load demo (no
//! jobs per second) and no per-scheduler utilisation (that would need
//! `scheduler_wall_time`, a system flag this console does not turn on), so
//! the CPU share it shows is the VM's CPU time over wall time × schedulers
//! online, between two samples of one stream. Its history is kept by the
//! stream that asks it (one point a second, the last minute).
//!
//! As with the Cluster routes, only nodes already connected are asked: a
//! Load request never makes this node connect anywhere, and a stream whose
//! node goes away sends `{"node": NAME, "error": ...}` events until the node
//! is connected again or the client leaves.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_dist::Functions;
use ember_runtime::sync::mpsc;
use ember_runtime::{Priority, Spawn};
use ember_term::{Atom, Term};
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::error::{error, fail, ApiError};
use super::figures::{load_view, snapshot};
use super::remote::{
    answered, bad_answer, connected, node, not_distributed, percent_decode, raised, rpc, MODULE,
};
use super::Console;
use ember_web::{Request, Response};

/// Points of history a stream keeps of a node without a console (a minute).
const HISTORY: usize = 60;

/// How often a stream asks the node.
const PERIOD: Duration = Duration::from_secs(1);

/// Registers `ember_console:load/0` for other nodes: `{ok, Json}` with
/// `Json` a UTF-8 binary, `{"load": <GET /api/load>, "system": <GET
/// /api/system>}` of `console`, or `{error, Why}` (a binary) while its
/// figures are not live (`503` locally).
pub(crate) fn register(console: &Arc<Console>, functions: &mut Functions) {
    let console = console.clone();
    functions.register(MODULE, "load", 0, move |_| {
        let console = console.clone();
        async move {
            // Answered before the load it reports, as the console's own
            // requests are.
            ember_runtime::set_priority(Priority::High);
            Ok(match snapshot(&console).await {
                Ok(s) => {
                    let figures = json!({ "load": load_view(&console, &s), "system": s.system });
                    Term::tuple([
                        Term::atom("ok"),
                        Term::binary(figures.to_string().into_bytes()),
                    ])
                }
                Err(ApiError(_, why)) => {
                    Term::tuple([Term::atom("error"), Term::binary(why.into_bytes())])
                }
            })
        }
    });
}

/// The node a Load request asks for with `?node=NAME`: `None` for this
/// node (no parameter, an empty one, or this node's own name), else a
/// connected node (`400` for a malformed name, `404` when this node is not
/// distributed or `NAME` is not connected).
pub(crate) fn target(console: &Console, request: &Request) -> Result<Option<Atom>, ApiError> {
    let raw = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('=').filter(|(k, _)| *k == "node"))
        .map(|(_, v)| v)
        .next_back()
        .unwrap_or("");
    let name = percent_decode(raw).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad node name {raw:?}: a bad %-escape, or not UTF-8"),
        )
    })?;
    let name = name.trim();
    if name.is_empty() {
        return Ok(None);
    }
    let view = node(console).ok_or_else(not_distributed)?;
    if view.name().as_str() == name {
        return Ok(None);
    }
    Ok(Some(connected(&view, name)?.node))
}

/// `GET /api/load?node=NAME` for another node.
pub(crate) async fn get(console: Arc<Console>, node: Atom) -> Response {
    match Watch::new(console, node).sample().await {
        Ok(view) => ember_web::json(&view),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/load/events?node=NAME` for another node: a process that asks
/// it every second and sends what it answered, or `{"node", "error"}`.
pub(crate) fn events(console: Arc<Console>, node: Atom) -> Response {
    let (tx, rx) = mpsc::channel::<String>(4);
    let spawned = Spawn::new()
        .priority(Priority::High)
        .label(format!("console events: load of {node}"))
        .spawn(async move {
            let mut watch = Watch::new(console, node.clone());
            loop {
                let event = match watch.sample().await {
                    Ok(view) => view,
                    Err(ApiError(_, why)) => json!({ "node": node.as_str(), "error": why }),
                };
                if tx.send(event.to_string()).await.is_err() {
                    return;
                }
                ember_runtime::sleep(PERIOD).await;
            }
        });
    match spawned {
        Ok(_) => ember_web::sse(rx),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// One node asked, and for a node without a console what earlier samples
/// saw.
struct Watch {
    console: Arc<Console>,
    node: Atom,
    started: Instant,
    /// The VM's CPU time (ms) at the last sample and when it was taken.
    last_runtime: Option<(i64, Instant)>,
    history: VecDeque<Value>,
}

impl Watch {
    fn new(console: Arc<Console>, node: Atom) -> Watch {
        Watch {
            console,
            node,
            started: Instant::now(),
            last_runtime: None,
            history: VecDeque::with_capacity(HISTORY + 1),
        }
    }

    /// The node's figures now; it must still be connected.
    async fn sample(&mut self) -> Result<Value, ApiError> {
        let view = node(&self.console).ok_or_else(not_distributed)?;
        connected(&view, self.node.as_str())?;
        let answer = rpc(&self.node, MODULE, "load", vec![]).await;
        if raised(&answer, "undef") {
            return self.erlang_sample().await;
        }
        let answer = answered(&self.node, MODULE, "load", answer)?;
        ember_view(&self.node, &answer)
    }

    /// `erlang:Function(Arg)` there (an atom argument).
    async fn ask(&self, function: &str, arg: &str) -> Result<Term, ApiError> {
        let answer = rpc(&self.node, "erlang", function, vec![Term::atom(arg)]).await;
        if raised(&answer, "undef") {
            return Err(error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "{} does not tell its load: it answers neither {MODULE}:load/0 (an Ember \
                     node's console) nor erlang:{function}/1 (an Ember node without a console?)",
                    self.node
                ),
            ));
        }
        answered(&self.node, "erlang", function, answer)
    }

    async fn int(&self, function: &str, arg: &str) -> Result<i64, ApiError> {
        let answer = self.ask(function, arg).await?;
        answer
            .as_int()
            .ok_or_else(|| bad_answer(&self.node, &answer))
    }

    /// The figures of a node without `ember_console:load/0`.
    async fn erlang_sample(&mut self) -> Result<Value, ApiError> {
        let process_count = self.int("system_info", "process_count").await?;
        let schedulers = self.int("system_info", "schedulers").await?;
        let online = self.int("system_info", "schedulers_online").await?;
        let queues = self.ask("statistics", "run_queue_lengths").await?;
        let queues: Vec<i64> = queues
            .as_list()
            .and_then(|q| q.iter().map(Term::as_int).collect())
            .ok_or_else(|| bad_answer(&self.node, &queues))?;
        let memory = self.int("memory", "total").await?;
        let runtime = self.ask("statistics", "runtime").await?;
        let runtime_ms = match runtime.as_tuple() {
            Some([total, _]) => total.as_int(),
            _ => None,
        }
        .ok_or_else(|| bad_answer(&self.node, &runtime))?;
        let now = Instant::now();
        let cpu = self.last_runtime.map(|(then_ms, then)| {
            let wall_ms = (now - then).as_secs_f64() * 1e3;
            let used = (runtime_ms - then_ms).max(0) as f64;
            (used / (wall_ms.max(1.0) * online.max(1) as f64)).clamp(0.0, 1.0)
        });
        self.last_runtime = Some((runtime_ms, now));
        let run_queue: i64 = queues.iter().sum();
        self.history.push_back(json!({
            "t_ms": self.started.elapsed().as_millis() as u64,
            "process_count": process_count,
            "memory_bytes": memory,
            "run_queue": run_queue,
            "cpu": cpu,
        }));
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        Ok(json!({
            "node": self.node.as_str(),
            "kind": "erlang",
            "process_count": process_count,
            "schedulers_online": online,
            "schedulers_total": schedulers,
            "run_queues": queues,
            "memory_bytes": memory,
            "cpu": cpu,
            "history": self.history.iter().cloned().collect::<Vec<_>>(),
        }))
    }
}

/// An Ember node's `ember_console:load/0` answer as the view this node
/// serves: its `GET /api/load`, with `node`, `kind` and from its system
/// view `process_count`, `utilization`, `run_queues` and `memory`.
fn ember_view(node: &Atom, answer: &Term) -> Result<Value, ApiError> {
    let json = match answer.as_tuple() {
        Some([tag, Term::Binary(json)]) if tag.is_atom("ok") => json,
        Some([tag, Term::Binary(why)]) if tag.is_atom("error") => {
            return Err(error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "{node} has no live load figures: {}",
                    String::from_utf8_lossy(why)
                ),
            ))
        }
        _ => return Err(bad_answer(node, answer)),
    };
    let figures: Value = serde_json::from_slice(json).map_err(|_| bad_answer(node, answer))?;
    let (Some(load), Some(system)) = (figures["load"].as_object(), figures.get("system")) else {
        return Err(bad_answer(node, answer));
    };
    let mut view: Map<String, Value> = load.clone();
    view.insert("node".into(), json!(node.as_str()));
    view.insert("kind".into(), json!("ember"));
    view.insert("process_count".into(), system["process_count"].clone());
    view.insert("utilization".into(), system["utilization"].clone());
    view.insert("memory".into(), system["memory"].clone());
    let queues: Vec<Value> = system["schedulers"]
        .as_array()
        .map(|s| s.iter().map(|s| s["run_queue"].clone()).collect())
        .unwrap_or_default();
    view.insert("run_queues".into(), Value::Array(queues));
    Ok(Value::Object(view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ember_answer_becomes_its_load_view_with_the_node() {
        let node = Atom::new("b@h");
        let figures = json!({
            "load": {"workers": 3, "jobs_per_s": 1.0, "history": []},
            "system": {"process_count": 42, "utilization": 0.5,
                       "memory": {"rss_bytes": 7, "allocated_bytes": null},
                       "schedulers": [{"run_queue": 1}, {"run_queue": 0}]},
        });
        let answer = Term::tuple([
            Term::atom("ok"),
            Term::binary(figures.to_string().into_bytes()),
        ]);
        let view = ember_view(&node, &answer).unwrap_or_else(|e| panic!("{}", e.1));
        assert_eq!(view["node"], "b@h");
        assert_eq!(view["kind"], "ember");
        assert_eq!(view["workers"], 3);
        assert_eq!(view["process_count"], 42);
        assert_eq!(view["run_queues"], json!([1, 0]));
        assert_eq!(view["memory"]["rss_bytes"], 7);

        let refused = Term::tuple([Term::atom("error"), Term::binary(b"restarting".to_vec())]);
        let e = ember_view(&node, &refused).expect_err("an error");
        assert_eq!(e.0, StatusCode::BAD_GATEWAY);
        assert!(e.1.contains("restarting"), "{}", e.1);
        for bad in [
            Term::atom("ok"),
            Term::tuple([Term::atom("ok"), Term::binary(b"{not json".to_vec())]),
            Term::tuple([Term::atom("ok"), Term::binary(b"{}".to_vec())]),
        ] {
            let e = ember_view(&node, &bad).expect_err("an error");
            assert_eq!(e.0, StatusCode::BAD_GATEWAY, "{bad}");
        }
    }
}
