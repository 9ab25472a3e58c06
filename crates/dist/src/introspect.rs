//! Looking at an Ember node's processes from another node: Erlang's
//! `erlang:processes/0`, `erlang:process_info/1,2` and
//! `erlang:list_to_pid/1` as registered
//! [`Functions`], so that `rpc:call(EmberNode, erlang, process_info, [Pid])`
//! from an `erl` shell answers as it would for an Erlang node, and
//! `ember_introspect:top/1`, the processes that ran most over the last
//! [`TOP_WINDOW`], in one call.
//!
//! An Ember process has no Erlang heap, stack or current function, so
//! `process_info` knows these items (Erlang's names and value shapes):
//! `registered_name`, `status`, `message_queue_len`, `links`, `monitors`
//! (`[{process, Pid}]`), `monitored_by`, `trap_exit`, `priority`,
//! `group_leader`, `reductions` and `memory` (Ember's estimate, in bytes),
//! and three of Ember's own: `ember_spawned_as` and `ember_label`
//! (binaries; the label `undefined` when unset) and `ember_cpu_time_us`.
//! `process_info/1` answers every item (`registered_name` only when the
//! process has one, as Erlang does). Any other item, or a pid that is not
//! this node's, raises `badarg` as Erlang does; a dead process answers
//! `undefined`. `list_to_pid("<0.N.S>")` makes the pid of a process of
//! this node (as Erlang's does, `badarg` for text that is no pid).

use std::cmp::Reverse;
use std::time::Duration;

use ember_runtime::dist as rdist;
use ember_runtime::introspect::ProcessInfo;
use ember_runtime::{Pid as LocalPid, Priority, Status};
use ember_term::Term;

use crate::procs::{Functions, Raise};

/// The most rows `ember_introspect:top/1` answers.
pub const MAX_TOP: usize = 100;

/// The items `erlang:process_info/1` answers, in its order.
const ITEMS: [&str; 14] = [
    "registered_name",
    "status",
    "message_queue_len",
    "links",
    "monitors",
    "monitored_by",
    "trap_exit",
    "priority",
    "group_leader",
    "reductions",
    "memory",
    "ember_spawned_as",
    "ember_label",
    "ember_cpu_time_us",
];

/// The items `ember_introspect:top/1` answers per process.
const TOP_ITEMS: [&str; 6] = [
    "registered_name",
    "status",
    "message_queue_len",
    "reductions",
    "memory",
    "ember_spawned_as",
];

/// Adds `erlang:processes/0`, `erlang:process_info/1`,
/// `erlang:process_info/2`, `erlang:list_to_pid/1` and
/// `ember_introspect:top/1` to `functions`
/// (see the module docs).
pub fn register_introspection(functions: &mut Functions) {
    functions.register("erlang", "processes", 0, |_| async {
        let pids = ember_runtime::introspect::processes()
            .into_iter()
            .map(rdist::pid_to_term);
        Ok(Term::list(pids))
    });
    functions.register("erlang", "process_info", 1, |args| async move {
        let pid = local_pid(&args[0])?;
        Ok(match ember_runtime::introspect::process_info(pid) {
            None => Term::atom("undefined"),
            Some(info) => Term::list(
                ITEMS
                    .iter()
                    .filter(|item| **item != "registered_name" || info.name.is_some())
                    .map(|item| pair(item, &info)),
            ),
        })
    });
    functions.register("erlang", "process_info", 2, |args| async move {
        let pid = local_pid(&args[0])?;
        let items: Vec<&str> = match &args[1] {
            Term::Atom(a) => vec![a.as_str()],
            other => match other.as_list() {
                Some(list) => list
                    .iter()
                    .map(|t| t.as_atom().ok_or_else(badarg))
                    .collect::<Result<_, _>>()?,
                None => return Err(badarg()),
            },
        };
        if items.iter().any(|i| !ITEMS.contains(i)) {
            return Err(badarg());
        }
        let Some(info) = ember_runtime::introspect::process_info(pid) else {
            return Ok(Term::atom("undefined"));
        };
        let pairs = items.iter().map(|i| pair(i, &info));
        Ok(match &args[1] {
            Term::Atom(_) => pairs.into_iter().next().unwrap_or_else(Term::nil),
            _ => Term::list(pairs),
        })
    });
    functions.register("erlang", "list_to_pid", 1, |args| async move {
        let text: String = args[0]
            .as_list()
            .ok_or_else(badarg)?
            .iter()
            .map(|c| {
                c.as_int()
                    .and_then(|c| u32::try_from(c).ok())
                    .and_then(char::from_u32)
                    .ok_or_else(badarg)
            })
            .collect::<Result<_, _>>()?;
        if !(text.starts_with('<') && text.ends_with('>')) {
            return Err(badarg());
        }
        let pid: LocalPid = text.parse().map_err(|_| badarg())?;
        Ok(rdist::pid_to_term(pid))
    });
    functions.register("ember_introspect", "top", 1, |args| async move {
        let n = args[0]
            .as_int()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(badarg)?;
        Ok(top(n.min(MAX_TOP)).await)
    });
}

/// How long `ember_introspect:top/1` watches the processes: it ranks them
/// by what they did in this window, as the console's local Top ranks by
/// its last interval.
pub const TOP_WINDOW: Duration = Duration::from_millis(500);

/// One process over the [`TOP_WINDOW`].
struct Recent {
    reductions: u64,
    cpu_ns: u64,
    total: u64,
    pid: LocalPid,
}

/// The `n` processes with the most reductions over the last
/// [`TOP_WINDOW`] (then the most CPU time in it, then the most reductions
/// in all), most first, each `{Pid, [{Item, Value}]}` with the
/// [`TOP_ITEMS`], `ember_reductions_delta` and `ember_cpu_ns_delta` (the
/// window's).
async fn top(n: usize) -> Term {
    let handle = ember_runtime::Handle::current();
    let mut before = handle.sample_processes();
    ember_runtime::sleep(TOP_WINDOW).await;
    let after = handle.sample_processes();
    before.sort_unstable_by_key(|s| s.pid);
    let mut recent: Vec<Recent> = after
        .iter()
        .map(|now| {
            let then = before
                .binary_search_by_key(&now.pid, |s| s.pid)
                .ok()
                .map(|i| &before[i]);
            let (reductions, cpu_ns) = match then {
                Some(then) => (
                    now.reductions.saturating_sub(then.reductions),
                    now.cpu_ns.saturating_sub(then.cpu_ns),
                ),
                None => (now.reductions, now.cpu_ns),
            };
            Recent {
                reductions,
                cpu_ns,
                total: now.reductions,
                pid: now.pid,
            }
        })
        .collect();
    recent.sort_unstable_by_key(|r| Reverse((r.reductions, r.cpu_ns, r.total)));
    let rows = recent.iter().filter_map(|r| {
        let info = ember_runtime::introspect::process_info(r.pid)?;
        let items = TOP_ITEMS.iter().map(|i| pair(i, &info)).chain([
            Term::tuple([
                Term::atom("ember_reductions_delta"),
                Term::from(r.reductions),
            ]),
            Term::tuple([Term::atom("ember_cpu_ns_delta"), Term::from(r.cpu_ns)]),
        ]);
        Some(Term::tuple([rdist::pid_to_term(r.pid), Term::list(items)]))
    });
    Term::list(rows.take(n))
}

fn badarg() -> Raise {
    Raise::Error(Term::atom("badarg"))
}

/// The local process `term` names; `badarg` for anything else.
fn local_pid(term: &Term) -> Result<LocalPid, Raise> {
    term.as_pid().ok_or_else(badarg)?;
    match rdist::pid_from_term(term) {
        Some(pid) if pid.node() == 0 => Ok(pid),
        _ => Err(badarg()),
    }
}

/// `{Item, Value}` for one of the [`ITEMS`].
fn pair(item: &str, info: &ProcessInfo) -> Term {
    let pids = |pids: &mut dyn Iterator<Item = LocalPid>| Term::list(pids.map(rdist::pid_to_term));
    let value = match item {
        "registered_name" => match &info.name {
            Some(name) => Term::atom(name),
            None => Term::nil(),
        },
        "status" => Term::atom(match info.status {
            Status::Waiting => "waiting",
            Status::Runnable => "runnable",
            Status::Running => "running",
            Status::Exiting => "exiting",
            _ => "unknown",
        }),
        "message_queue_len" => Term::from(info.mailbox_len),
        "links" => pids(&mut info.links.iter().copied()),
        "monitors" => Term::list(
            info.monitors
                .iter()
                .map(|(_, p)| Term::tuple([Term::atom("process"), rdist::pid_to_term(*p)])),
        ),
        "monitored_by" => pids(&mut info.monitored_by.iter().copied()),
        "trap_exit" => Term::atom(if info.trap_exit { "true" } else { "false" }),
        "priority" => Term::atom(match info.priority {
            Priority::High => "high",
            Priority::Low => "low",
            _ => "normal",
        }),
        "group_leader" => rdist::pid_to_term(info.group_leader),
        "reductions" => Term::from(info.reductions),
        "memory" => Term::from(info.memory_bytes),
        "ember_spawned_as" => Term::binary(info.spawned_as.as_bytes()),
        "ember_label" => match &info.label {
            Some(label) => Term::binary(label.as_bytes()),
            None => Term::atom("undefined"),
        },
        "ember_cpu_time_us" => Term::from(info.cpu_time.as_micros() as u64),
        _ => Term::atom("undefined"),
    };
    Term::tuple([Term::atom(item), value])
}
