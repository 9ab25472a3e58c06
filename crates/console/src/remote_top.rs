//! The Top page of another node of the cluster: `GET /api/top?node=NAME`,
//! `GET /api/top/events?node=NAME` and `GET /api/processes/<pid>?node=NAME`
//! (`docs/console-api.md`, "Top of another node").
//!
//! An Ember node whose console registered its functions ([`register`]: the
//! `ember` binary does) answers `ember_console:top/0` with its own
//! `GET /api/top`, taken by its own sampler, and `ember_console:process/1`
//! with its own `GET /api/processes/<pid>`; this node adds the node's name
//! and passes them on. Other nodes (`erl`, `iex`, an Ember node without a
//! console) are not asked anything else: their processes are on the
//! Cluster page (`GET /api/cluster/nodes/NAME/top`), ranked by reductions.
//!
//! Remote Top is read-only: `POST /api/processes/<pid>/kill?node=NAME` is
//! refused (`403`). A kill forwarded over distribution would skip the other
//! node's own console guards (its read-only mode, its `Host` and `Origin`
//! checks) and its `--allow-kill-system` choice would be judged here;
//! killing a process of another node is done on that node's own console.
//!
//! As with the Load page, only connected nodes are asked, and a stream whose
//! node goes away sends `{"node": NAME, "error": ...}` events until the
//! node is connected again or the client leaves.

use std::sync::Arc;
use std::time::Duration;

use ember_dist::Functions;
use ember_runtime::sync::mpsc;
use ember_runtime::{Handle, Priority, Spawn};
use ember_term::{Atom, Term};
use http::StatusCode;
use serde_json::{json, Value};

use super::error::{error, fail, parse_pid, ApiError};
use super::figures::snapshot;
use super::remote::{answered, bad_answer, connected, node, not_distributed, raised, rpc, MODULE};
use super::{top, Console};
use ember_web::Response;

/// How often a stream asks the node.
const PERIOD: Duration = Duration::from_secs(1);

/// Registers `ember_console:top/0` and `ember_console:process/1` for other
/// nodes. `top/0`: `{ok, Json}` with `Json` a UTF-8 binary, this console's
/// `GET /api/top`, or `{error, Why}` (a binary) while its figures are not
/// live. `process/1` (a pid as text, `<0.N.S>`, in a binary): `{ok, Json}`,
/// this console's `GET /api/processes/<pid>`; `{not_found, Why}` for a
/// process that is not alive; `{bad_pid, Why}` for a malformed pid.
pub(crate) fn register(console: &Arc<Console>, functions: &mut Functions) {
    let top_of = console.clone();
    functions.register(MODULE, "top", 0, move |_| {
        let console = top_of.clone();
        async move {
            ember_runtime::set_priority(Priority::High);
            Ok(match snapshot(&console).await {
                Ok(s) => tagged("ok", s.top.to_string()),
                Err(ApiError(_, why)) => tagged("error", why),
            })
        }
    });
    functions.register(MODULE, "process", 1, move |args| async move {
        ember_runtime::set_priority(Priority::High);
        let text = match args.first() {
            Some(Term::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let Some(pid) = parse_pid(&text) else {
            return Ok(tagged("bad_pid", format!("bad pid {text:?}")));
        };
        Ok(match Handle::current().process_info(pid) {
            Some(info) => tagged("ok", top::info_json(&info).to_string()),
            None => tagged("not_found", format!("no process {pid}: it is not alive")),
        })
    });
}

/// `{Tag, Text}` with `Text` a binary.
fn tagged(tag: &str, text: String) -> Term {
    Term::tuple([Term::atom(tag), Term::binary(text.into_bytes())])
}

/// `ember_console:F(Args)` on `node`, which must still be connected; the
/// JSON it answered, with `"node": NAME` added.
async fn ask(console: &Console, node: &Atom, f: &str, args: Vec<Term>) -> Result<Value, ApiError> {
    let view = node_view(console)?;
    connected(&view, node.as_str())?;
    let arity = args.len();
    let answer = rpc(node, MODULE, f, args).await;
    if raised(&answer, "undef") {
        return Err(error(
            StatusCode::BAD_GATEWAY,
            format!(
                "{node} does not answer {MODULE}:{f}/{arity} (it is not an Ember node with a \
                 console); its processes are at GET /api/cluster/nodes/{node}/top"
            ),
        ));
    }
    let answer = answered(node, MODULE, f, answer)?;
    let (tag, text) = match answer.as_tuple() {
        Some([tag, Term::Binary(text)]) => (tag, text),
        _ => return Err(bad_answer(node, &answer)),
    };
    let text = String::from_utf8_lossy(text);
    let status = if tag.is_atom("ok") {
        let mut value: Value =
            serde_json::from_str(&text).map_err(|_| bad_answer(node, &answer))?;
        let Some(object) = value.as_object_mut() else {
            return Err(bad_answer(node, &answer));
        };
        object.insert("node".into(), json!(node.as_str()));
        return Ok(value);
    } else if tag.is_atom("not_found") {
        StatusCode::NOT_FOUND
    } else if tag.is_atom("bad_pid") {
        StatusCode::BAD_REQUEST
    } else if tag.is_atom("error") {
        StatusCode::BAD_GATEWAY
    } else {
        return Err(bad_answer(node, &answer));
    };
    Err(error(status, format!("{node}: {text}")))
}

fn node_view(console: &Console) -> Result<ember_dist::NodeView, ApiError> {
    node(console).ok_or_else(not_distributed)
}

/// `GET /api/top` of `node`, with `node` and `kind`.
async fn sample(console: &Console, node: &Atom) -> Result<Value, ApiError> {
    let mut view = ask(console, node, "top", vec![]).await?;
    if let Some(object) = view.as_object_mut() {
        object.insert("kind".into(), json!("ember"));
    }
    Ok(view)
}

/// `GET /api/top?node=NAME` for another node.
pub(crate) async fn get(console: Arc<Console>, node: Atom) -> Response {
    match sample(&console, &node).await {
        Ok(view) => ember_web::json(&view),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/top/events?node=NAME` for another node: checks it once (an
/// error answers instead of a stream), then a process asks it every
/// second and sends what it answered, or `{"node", "error"}`.
pub(crate) async fn events(console: Arc<Console>, node: Atom) -> Response {
    let first = match sample(&console, &node).await {
        Ok(view) => view,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = mpsc::channel::<String>(4);
    let spawned = Spawn::new()
        .priority(Priority::High)
        .label(format!("console events: top of {node}"))
        .spawn(async move {
            let mut event = first;
            loop {
                if tx.send(event.to_string()).await.is_err() {
                    return;
                }
                ember_runtime::sleep(PERIOD).await;
                event = match sample(&console, &node).await {
                    Ok(view) => view,
                    Err(ApiError(_, why)) => json!({ "node": node.as_str(), "error": why }),
                };
            }
        });
    match spawned {
        Ok(_) => ember_web::sse(rx),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `GET /api/processes/<pid>?node=NAME` for another node (`pid_text` as
/// the path gave it; `400` if malformed before anything is asked).
pub(crate) async fn process(console: Arc<Console>, node: Atom, pid_text: &str) -> Response {
    let Some(pid) = parse_pid(pid_text) else {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("bad pid {pid_text:?}: expected <node.number.serial>, e.g. 0.123.0"),
        );
    };
    let text = Term::binary(pid.to_string().into_bytes());
    match ask(&console, &node, "process", vec![text]).await {
        Ok(view) => ember_web::json(&view),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/processes/<pid>/...?node=NAME`: refused, remote Top is
/// read-only.
pub(crate) fn refuse_kill(node: &Atom) -> Response {
    fail(
        StatusCode::FORBIDDEN,
        format!(
            "refused: the Top of another node is read-only; kill a process of {node} on \
             {node}'s own console, behind its own guards"
        ),
    )
}
