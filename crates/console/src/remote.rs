//! Asking other nodes: the node this console runs on, the connection to a
//! connected peer, and `rpc:call/4`-style calls through the peer's `rex`
//! with their failures as API errors. Only nodes already connected are
//! asked: a console request never makes this node connect anywhere.

use std::time::Duration;

use ember_dist::{ConnectionInfo, NodeView};
use ember_term::{Atom, Term};
use http::StatusCode;

use super::error::{error, ApiError};
use super::Console;

/// The module of the functions a console registers for other nodes.
pub(crate) const MODULE: &str = "ember_console";

/// How long one call to another node may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The node, if this node is distributed.
pub(crate) fn node(console: &Console) -> Option<NodeView> {
    console.node().filter(NodeView::is_running)
}

/// The error of a cluster request on a node that is not distributed.
pub(crate) fn not_distributed() -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        "this node is not distributed (start it with --sname NAME or --name NAME@HOST)",
    )
}

/// Decodes `%XX` escapes (a path segment); `None` for a bad escape or
/// text that is not UTF-8.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The connection to `name`, which must be up.
pub(crate) fn connected(view: &NodeView, name: &str) -> Result<ConnectionInfo, ApiError> {
    let valid = name
        .split_once('@')
        .is_some_and(|(a, h)| !a.is_empty() && !h.is_empty() && !h.contains('@'));
    if !valid || Atom::try_new(name).is_err() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("bad node name {name:?}: expected name@host"),
        ));
    }
    view.connections()
        .into_iter()
        .find(|c| c.node.as_str() == name)
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!(
                    "{name} is not connected to this node (the console asks connected nodes only)"
                ),
            )
        })
}

/// `m:f(args)` on `node` through its `rex`, as `rpc:call/4` returns it.
pub(crate) async fn rpc(node: &Atom, m: &str, f: &str, args: Vec<Term>) -> Term {
    ember_dist::rpc_call(node.as_str(), m, f, args, CALL_TIMEOUT).await
}

/// An rpc's answer, or why it failed (`{badrpc, Reason}`) as an API error.
pub(crate) fn answered(node: &Atom, m: &str, f: &str, answer: Term) -> Result<Term, ApiError> {
    match answer.as_tuple() {
        Some([tag, why]) if tag.is_atom("badrpc") => {
            let status = if why.is_atom("timeout") {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            Err(error(
                status,
                format!("{node} answered {answer} to {m}:{f}"),
            ))
        }
        _ => Ok(answer),
    }
}

/// `m:f(args)` on `node`; a `badrpc` is an error.
pub(crate) async fn call(node: &Atom, m: &str, f: &str, args: Vec<Term>) -> Result<Term, ApiError> {
    answered(node, m, f, rpc(node, m, f, args).await)
}

/// Whether an rpc answer is `{badrpc, {'EXIT', {Error, _}}}`, e.g. `undef`
/// (the function does not exist there) or `badarg`.
pub(crate) fn raised(answer: &Term, error: &str) -> bool {
    let Some([tag, why]) = answer.as_tuple() else {
        return false;
    };
    let Some([exit, reason]) = why.as_tuple() else {
        return false;
    };
    tag.is_atom("badrpc")
        && exit.is_atom("EXIT")
        && reason
            .as_tuple()
            .is_some_and(|r| r.first().is_some_and(|t| t.is_atom(error)))
}

/// A peer's answer the console cannot read, as a `502`.
pub(crate) fn bad_answer(node: &Atom, answer: &Term) -> ApiError {
    error(
        StatusCode::BAD_GATEWAY,
        format!("{node} gave an answer the console does not understand: {answer}"),
    )
}
