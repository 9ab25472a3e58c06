//! "top": which processes used most CPU over the last interval, from two
//! [`ProcessSample`] snapshots, and `process_info` as JSON.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::Duration;

use ember_runtime::introspect::{ProcessInfo, ProcessSample};
use ember_runtime::{Handle, Pid, Priority, Status};
use serde_json::{json, Value};

/// Rows in the top list.
pub(crate) const TOP: usize = 10;

/// With at most this many processes, every process that did not run to
/// completion during the interval is checked for a poll still in progress.
const CHECK_ALL_IDLE_UP_TO: usize = 5_000;

/// CPU used by one process over the interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Usage {
    cpu_ns: u64,
    reductions: u64,
    pid: Pid,
}

/// The top `TOP` processes by CPU between `before` and `after` (both are
/// sorted here by pid), as JSON rows with their `process_info`.
///
/// Samples charge a poll in progress as it runs; a poll that began after
/// `after` was taken is not in it yet: for the processes in `hints`
/// (running math tasks, the previous top) and, on small systems, every
/// process whose counters did not move, such a poll counts for its running
/// time.
pub(crate) fn top(
    handle: &Handle,
    before: &mut [ProcessSample],
    after: &mut [ProcessSample],
    window: Duration,
    schedulers: usize,
    hints: &[Pid],
) -> Vec<(Pid, Value)> {
    before.sort_unstable_by_key(|s| s.pid);
    after.sort_unstable_by_key(|s| s.pid);
    let window_ns = window.as_nanos().max(1) as u64;
    let hints: HashSet<Pid> = hints.iter().copied().collect();
    let check_all = after.len() <= CHECK_ALL_IDLE_UP_TO;

    let mut heap: BinaryHeap<Reverse<(u64, Pid, u64)>> = BinaryHeap::new();
    let mut j = 0;
    for now in after.iter() {
        while j < before.len() && before[j].pid < now.pid {
            j += 1;
        }
        let (mut cpu, reds) = match before.get(j) {
            Some(then) if then.pid == now.pid => (
                now.cpu_ns.saturating_sub(then.cpu_ns),
                now.reductions.saturating_sub(then.reductions),
            ),
            _ => (now.cpu_ns, now.reductions),
        };
        if cpu == 0 && (check_all || hints.contains(&now.pid)) {
            if let Some(poll) = handle.process_info(now.pid).and_then(|i| i.current_poll) {
                cpu = (cpu + poll.running_for.as_nanos() as u64).min(window_ns);
            }
        }
        if cpu == 0 && reds == 0 {
            continue;
        }
        heap.push(Reverse((cpu, now.pid, reds)));
        if heap.len() > TOP {
            heap.pop();
        }
    }
    let mut usage: Vec<Usage> = heap
        .into_iter()
        .map(|Reverse((cpu_ns, pid, reductions))| Usage {
            cpu_ns,
            reductions,
            pid,
        })
        .collect();
    usage.sort_by_key(|u| (Reverse(u.cpu_ns), Reverse(u.reductions)));
    let capacity = (window_ns as f64) * (schedulers.max(1) as f64);
    usage
        .into_iter()
        .filter_map(|u| {
            let info = handle.process_info(u.pid)?;
            let mut row = info_json(&info);
            row["cpu_ns"] = json!(u.cpu_ns);
            row["cpu_share"] = json!(u.cpu_ns as f64 / capacity);
            row["reductions_delta"] = json!(u.reductions);
            Some((u.pid, row))
        })
        .collect()
}

/// Everything `process_info` knows, as JSON.
pub(crate) fn info_json(info: &ProcessInfo) -> Value {
    json!({
        "pid": info.pid.to_string(),
        "status": status_str(info.status),
        "spawned_as": info.spawned_as,
        "label": info.label.as_deref(),
        "name": info.name.as_deref(),
        "reductions": info.reductions,
        "cpu_time_ms": info.cpu_time.as_secs_f64() * 1e3,
        "mailbox_len": info.mailbox_len,
        "memory_bytes": info.memory_bytes,
        "memory_limit": info.memory_limit,
        "memory_attributed_bytes": info.memory_attributed_bytes,
        "links": info.links.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "monitors": info.monitors.iter().map(|(_, p)| p.to_string()).collect::<Vec<_>>(),
        "monitored_by": info.monitored_by.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "priority": match info.priority {
            Priority::High => "high",
            Priority::Low => "low",
            _ => "normal",
        },
        "trap_exit": info.trap_exit,
        "group_leader": info.group_leader.to_string(),
        "offenses": info.offenses,
        "current_poll": info.current_poll.as_ref().map(|p| json!({
            "text": p.to_string(),
            "running_for_ms": p.running_for.as_secs_f64() * 1e3,
            "on_background_thread": p.on_background_thread,
            "nice": p.nice,
            "tid": p.tid,
            "kill_pending": p.kill_pending,
        })),
    })
}

fn status_str(status: Status) -> &'static str {
    match status {
        Status::Waiting => "waiting",
        Status::Runnable => "runnable",
        Status::Running => "running",
        Status::Exiting => "exiting",
        _ => "unknown",
    }
}
