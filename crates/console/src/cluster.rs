//! The Cluster page's API: the nodes this node is connected to with their
//! traffic, and Top and `process_info` for the processes of another node,
//! asked over distribution (`docs/console-api.md`, "Cluster").
//!
//! Another node is asked through its `rex` ([`ember_dist::rpc_call`]), the
//! way `rpc:call/4` asks: an Ember node answers `ember_introspect:top/1`
//! (its processes with the most reductions, in one call); a node without
//! it (`erl`, `iex`) is asked `erlang:processes/0` and then
//! `erlang:process_info/2` for at most [`MAX_EXAMINED`] of its processes.
//! `erlang:process_info/1` answers the info of one process on either kind
//! of node (Ember registers it, see `ember_dist::register_introspection`).
//!
//! Only nodes that are already connected can be asked: a console request
//! never makes this node connect anywhere.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use ember_dist::ConnectionInfo;
use ember_runtime::sync::mpsc;
use ember_runtime::{Priority, Spawn};
use ember_term::{Atom, Term};
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::error::{error, fail, parse_pid, ApiError};
use super::remote::{
    answered, bad_answer, call, connected, node, not_distributed, percent_decode, raised, rpc,
};
use super::{with, Console};
use ember_web::{Request, Response, Router};

/// Rows in a remote Top.
pub(crate) const TOP_ROWS: usize = 20;

/// The most processes of a node without `ember_introspect` whose info is
/// asked for one Top.
pub(crate) const MAX_EXAMINED: usize = 1000;

/// How long a whole remote Top may take.
const TOP_DEADLINE: Duration = Duration::from_secs(10);

/// The items a Top row shows.
const TOP_ITEMS: [&str; 5] = [
    "registered_name",
    "status",
    "message_queue_len",
    "reductions",
    "memory",
];

pub(crate) fn mount(router: Router, console: &Arc<Console>) -> Router {
    router
        .get("/api/cluster", with(console, cluster))
        .get("/api/cluster/events", with(console, cluster_events))
        .get("/api/cluster/nodes/*", with(console, remote))
}

/// `GET /api/cluster` as JSON.
fn cluster_json(console: &Console) -> Value {
    match node(console) {
        None => json!({ "node": null, "distributed": false, "nodes": [] }),
        Some(view) => json!({
            "node": view.name().as_str(),
            "distributed": true,
            "nodes": view.connections().iter().map(connection_json).collect::<Vec<_>>(),
        }),
    }
}

fn connection_json(c: &ConnectionInfo) -> Value {
    let since_ms = c
        .up_since
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "name": c.node.as_str(),
        "creation": c.creation,
        "up_since_ms": since_ms,
        "up_for_s": c.up_for.as_secs_f64(),
        "bytes_in": c.bytes_in,
        "bytes_out": c.bytes_out,
        "messages_in": c.messages_in,
        "messages_out": c.messages_out,
        "queued_bytes": c.queued_bytes,
    })
}

async fn cluster(console: Arc<Console>, _request: Request) -> Response {
    ember_web::json(&cluster_json(&console))
}

async fn cluster_events(console: Arc<Console>, _request: Request) -> Response {
    let (tx, rx) = mpsc::channel::<String>(4);
    let spawned = Spawn::new()
        .priority(Priority::High)
        .label("console events: cluster")
        .spawn(async move {
            loop {
                if tx.send(cluster_json(&console).to_string()).await.is_err() {
                    return;
                }
                ember_runtime::sleep(Duration::from_secs(1)).await;
            }
        });
    match spawned {
        Ok(_) => ember_web::sse(rx),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// What a `/api/cluster/nodes/...` path asks.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    Top,
    Info(String),
}

/// Splits `/api/cluster/nodes/<node>/top` and
/// `/api/cluster/nodes/<node>/processes/<pid>`.
fn route(path: &str) -> Result<(String, Ask), ApiError> {
    let rest = path.strip_prefix("/api/cluster/nodes/").unwrap_or("");
    let unknown = || {
        error(
            StatusCode::NOT_FOUND,
            "unknown cluster route; try GET /api/cluster/nodes/<node>/top or \
             /api/cluster/nodes/<node>/processes/<pid>",
        )
    };
    let mut parts = rest.split('/');
    let node = parts.next().unwrap_or("");
    let ask = match (parts.next(), parts.next(), parts.next()) {
        (Some("top"), None, None) => Ask::Top,
        (Some("processes"), Some(pid), None) if !pid.is_empty() => Ask::Info(pid.to_string()),
        _ => return Err(unknown()),
    };
    let node = percent_decode(node)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("bad node name {node:?}")))?;
    Ok((node, ask))
}

async fn remote(console: Arc<Console>, request: Request) -> Response {
    let answer = async {
        let (name, ask) = route(request.uri().path())?;
        let view = node(&console).ok_or_else(not_distributed)?;
        let peer = connected(&view, &name)?;
        match ask {
            Ask::Top => remote_top(&peer).await,
            Ask::Info(pid) => remote_info(&peer, &pid).await,
        }
    };
    match answer.await {
        Ok(value) => ember_web::json(&value),
        Err(e) => e.into_response(),
    }
}

async fn remote_top(peer: &ConnectionInfo) -> Result<Value, ApiError> {
    let node = &peer.node;
    let (m, f) = ("ember_introspect", "top");
    let answer = rpc(node, m, f, vec![Term::from(TOP_ROWS)]).await;
    if raised(&answer, "undef") {
        return erlang_top(node).await;
    }
    let rows = answered(node, m, f, answer)?;
    let rows = rows.as_list().ok_or_else(|| bad_answer(node, &rows))?;
    let shown: Vec<Value> = rows.iter().filter_map(|r| top_row(node, r)).collect();
    Ok(json!({
        "node": node.as_str(),
        "kind": "ember",
        "total": Value::Null,
        "examined": Value::Null,
        "shown": shown.len(),
        "processes": shown,
    }))
}

/// Top of a node without `ember_introspect`: `processes()`, then
/// `process_info/2` of at most [`MAX_EXAMINED`] of them.
async fn erlang_top(node: &Atom) -> Result<Value, ApiError> {
    let deadline = std::time::Instant::now() + TOP_DEADLINE;
    let pids = call(node, "erlang", "processes", vec![]).await?;
    let pids = pids.as_list().ok_or_else(|| bad_answer(node, &pids))?;
    let items = Term::list(TOP_ITEMS.iter().map(|i| Term::atom(i)));
    let mut rows: Vec<(i64, Value)> = Vec::new();
    let mut examined = 0;
    for pid in pids.iter().take(MAX_EXAMINED) {
        if std::time::Instant::now() >= deadline {
            break;
        }
        examined += 1;
        let info = call(
            node,
            "erlang",
            "process_info",
            vec![pid.clone(), items.clone()],
        )
        .await?;
        // `undefined`: it exited meanwhile.
        if let Some(row) = top_row(node, &Term::tuple([pid.clone(), info])) {
            let reductions = row["info"]["reductions"].as_i64().unwrap_or(0);
            rows.push((reductions, row));
        }
    }
    rows.sort_by_key(|row| std::cmp::Reverse(row.0));
    let shown: Vec<Value> = rows.into_iter().take(TOP_ROWS).map(|(_, r)| r).collect();
    Ok(json!({
        "node": node.as_str(),
        "kind": "erlang",
        "total": pids.len(),
        "examined": examined,
        "shown": shown.len(),
        "processes": shown,
    }))
}

/// `{Pid, [{Item, Value}]}` as a Top row.
fn top_row(node: &Atom, row: &Term) -> Option<Value> {
    let [pid @ Term::Pid(_), info] = row.as_tuple()? else {
        return None;
    };
    let info = proplist_json(node, info)?;
    Some(json!({ "pid": term_json(node, pid), "info": info }))
}

async fn remote_info(peer: &ConnectionInfo, pid_text: &str) -> Result<Value, ApiError> {
    let node = &peer.node;
    let pid_text = percent_decode(pid_text).unwrap_or_default();
    let Some(numbers) = parse_pid(&pid_text).filter(|p| p.node() == 0) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "bad pid {pid_text:?}: expected <0.number.serial> as {node} prints its own \
                 processes, e.g. <0.80.0>"
            ),
        ));
    };
    // The node makes the pid itself (`erlang:list_to_pid/1`): it knows its
    // own creation and which numbers it makes, and answers `badarg` for
    // one it never would (the console says so). A pid made up here out of
    // its range would be refused by the connection (`DistError::BadPid`),
    // and the call would only time out.
    let text = format!("<0.{}.{}>", numbers.number(), numbers.serial());
    let chars = Term::list(text.chars().map(|c| Term::from(c as u32)));
    let (m, f) = ("erlang", "list_to_pid");
    let pid = rpc(node, m, f, vec![chars]).await;
    if raised(&pid, "badarg") {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no process {text} on {node}: it is no pid there"),
        ));
    }
    let pid = match answered(node, m, f, pid)? {
        pid @ Term::Pid(_) => pid,
        other => return Err(bad_answer(node, &other)),
    };
    let info = call(node, "erlang", "process_info", vec![pid.clone()]).await?;
    if info.is_atom("undefined") {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no process {pid_text} on {node}: it is not alive"),
        ));
    }
    let info = proplist_json(node, &info).ok_or_else(|| bad_answer(node, &info))?;
    Ok(json!({ "node": node.as_str(), "pid": term_json(node, &pid), "info": info }))
}

/// `[{Key, Value}]` as a JSON object (`None` if it is not one).
fn proplist_json(node: &Atom, list: &Term) -> Option<Value> {
    let mut object = Map::new();
    for item in list.as_list()? {
        let [Term::Atom(key), value] = item.as_tuple()? else {
            return None;
        };
        object.insert(key.as_str().to_string(), term_json(node, value));
    }
    Some(Value::Object(object))
}

/// A term as JSON: integers as numbers (past 2^53 as text), atoms, UTF-8
/// binaries and pids as text (a pid of `node` as `<0.N.S>`, as `node`
/// prints it; another node's as `<0.N.S>@other`), lists as arrays (`[]` as
/// an empty array), anything else as its Erlang text.
fn term_json(node: &Atom, term: &Term) -> Value {
    match term {
        Term::Int(i) if i.unsigned_abs() < (1 << 53) => json!(i),
        Term::Float(f) => json!(f),
        Term::Atom(a) => json!(a.as_str()),
        Term::Pid(p) if &p.node == node => json!(format!("<0.{}.{}>", p.id, p.serial)),
        Term::Pid(p) => json!(format!("<0.{}.{}>@{}", p.id, p.serial, p.node)),
        Term::Binary(b) => match std::str::from_utf8(b) {
            Ok(text) => json!(text),
            Err(_) => json!(term.to_string()),
        },
        Term::List(items) => Value::Array(items.iter().map(|t| term_json(node, t)).collect()),
        other => json!(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_term::Pid as TermPid;

    #[test]
    fn routes_split_node_and_pid_and_refuse_the_rest() {
        assert_eq!(
            route("/api/cluster/nodes/b%40h/top").ok(),
            Some(("b@h".to_string(), Ask::Top))
        );
        assert_eq!(
            route("/api/cluster/nodes/b@h/processes/%3C0.1.0%3E").ok(),
            Some(("b@h".to_string(), Ask::Info("%3C0.1.0%3E".to_string())))
        );
        for bad in [
            "/api/cluster/nodes/",
            "/api/cluster/nodes/b@h",
            "/api/cluster/nodes/b@h/top/x",
            "/api/cluster/nodes/b@h/processes/",
            "/api/cluster/nodes/b@h/kill",
        ] {
            assert_eq!(
                route(bad).err().map(|e| e.0),
                Some(StatusCode::NOT_FOUND),
                "{bad}"
            );
        }
        for bad in ["/api/cluster/nodes/%zz/top", "/api/cluster/nodes/%ff/top"] {
            assert_eq!(
                route(bad).err().map(|e| e.0),
                Some(StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
    }

    #[test]
    fn terms_become_json() {
        let node = Atom::new("b@h");
        let pid = |n: &str| {
            Term::Pid(TermPid {
                node: Atom::new(n),
                id: 7,
                serial: 1,
                creation: 3,
            })
        };
        let list = Term::list([
            Term::tuple([Term::atom("reductions"), Term::from(12)]),
            Term::tuple([Term::atom("links"), Term::list([pid("b@h"), pid("c@h")])]),
            Term::tuple([Term::atom("registered_name"), Term::nil()]),
            Term::tuple([Term::atom("label"), Term::binary("hi")]),
            Term::tuple([
                Term::atom("f"),
                Term::tuple([Term::atom("m"), Term::from(1)]),
            ]),
        ]);
        assert_eq!(
            proplist_json(&node, &list),
            Some(json!({
                "reductions": 12,
                "links": ["<0.7.1>", "<0.7.1>@c@h"],
                "registered_name": [],
                "label": "hi",
                "f": "{m,1}",
            }))
        );
        assert_eq!(proplist_json(&node, &Term::atom("undefined")), None);
    }
}
