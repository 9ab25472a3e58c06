//! What every supervisor does to a child: start it, shut it down, count its
//! restarts against the intensity, and report (supervisor.erl's
//! `do_start_child`, `shutdown/2`, `add_restart/1` and `report_error/4`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ember_runtime::{exit, monitor, receive, unlink, Down, Exit, ExitReason, MonitorRef, Pid};

use super::spec::{Restart, Shutdown, StartFn};
use crate::gen::{await_down, guarded, StartError};

/// Calls a child's start function in the supervisor process; a panic in it
/// is a failed start, as OTP catches a crashing `{M, F, A}`.
pub(crate) async fn start(start: &StartFn) -> Result<Pid, StartError> {
    match guarded(start()).await {
        Ok(result) => result,
        Err(panic) => Err(StartError::Failed(panic)),
    }
}

/// Terminates a child as its `shutdown` says, and waits until it is gone.
///
/// Returns `Err(reason)` if it did not exit with the reason its shutdown
/// implies (`shutdown`, or `killed` for brutal_kill): the supervisor then
/// reports a `shutdown_error`. A non-permanent child found already exited
/// with `normal` is fine.
pub(crate) async fn shutdown(pid: Pid, how: Shutdown, restart: Restart) -> Result<(), ExitReason> {
    let Some((mref, prior)) = unlink_flush(pid).await else {
        return Ok(()); // already gone, and its exit was never ours to see
    };
    if let Some(reason) = prior {
        return already_exited(reason, restart);
    }
    match how {
        Shutdown::BrutalKill => {
            exit(pid, ExitReason::Kill);
            expect(await_down(mref).await, ExitReason::Killed)
        }
        Shutdown::Infinity => {
            exit(pid, ExitReason::Shutdown);
            expect(await_down(mref).await, ExitReason::Shutdown)
        }
        Shutdown::Timeout(limit) => {
            exit(pid, ExitReason::Shutdown);
            match down_within(mref, limit).await {
                Some(reason) => expect(reason, ExitReason::Shutdown),
                None => {
                    exit(pid, ExitReason::Kill);
                    Err(await_down(mref).await)
                }
            }
        }
    }
}

/// Terminates many children at once (a dynamic supervisor's shutdown): all
/// get the signal, then all are waited for within one deadline, and those
/// still alive are killed. Returns the children that exited otherwise than
/// expected, with their reasons.
pub(crate) async fn shutdown_all(
    pids: Vec<Pid>,
    how: Shutdown,
    restart: Restart,
) -> Vec<(Pid, ExitReason)> {
    shutdown_each(pids.into_iter().map(|pid| (pid, how, restart)).collect()).await
}

/// [`shutdown_all`] for children with shutdowns and restart types of their
/// own (Elixir's `DynamicSupervisor`, whose children each carry theirs):
/// all get their signal at once, each is killed when its own timeout
/// passes. Returns the children that exited otherwise than expected.
pub(crate) async fn shutdown_each(
    children: Vec<(Pid, Shutdown, Restart)>,
) -> Vec<(Pid, ExitReason)> {
    struct Waiting {
        pid: Pid,
        mref: MonitorRef,
        deadline: Option<Instant>,
        wanted: ExitReason,
    }
    let mut errors = Vec::new();
    let mut waiting: Vec<Waiting> = Vec::with_capacity(children.len());
    let start = Instant::now();
    for (pid, how, restart) in children {
        let Some((mref, prior)) = unlink_flush(pid).await else {
            continue;
        };
        if let Some(reason) = prior {
            if let Err(reason) = already_exited(reason, restart) {
                errors.push((pid, reason));
            }
            continue;
        }
        let (signal, wanted) = if how == Shutdown::BrutalKill {
            (ExitReason::Kill, ExitReason::Killed)
        } else {
            (ExitReason::Shutdown, ExitReason::Shutdown)
        };
        exit(pid, signal);
        let deadline = match how {
            Shutdown::Timeout(limit) => start.checked_add(limit),
            _ => None,
        };
        waiting.push(Waiting {
            pid,
            mref,
            deadline,
            wanted,
        });
    }
    while !waiting.is_empty() {
        let next = waiting.iter().filter_map(|w| w.deadline).min();
        let matching = |d: &Down| waiting.iter().any(|w| w.mref == d.monitor);
        let down = match next {
            Some(next) => {
                receive::<Down>()
                    .matching(matching)
                    .timeout(next.saturating_duration_since(Instant::now()))
                    .await
            }
            None => Some(receive::<Down>().matching(matching).await),
        };
        let Some(down) = down else {
            // Out of time for some: kill them and wait for them.
            let now = Instant::now();
            let (late, rest): (Vec<Waiting>, Vec<Waiting>) = waiting
                .into_iter()
                .partition(|w| w.deadline.is_some_and(|d| d <= now));
            waiting = rest;
            for w in late {
                exit(w.pid, ExitReason::Kill);
                errors.push((w.pid, await_down(w.mref).await));
            }
            continue;
        };
        let Some(at) = waiting.iter().position(|w| w.mref == down.monitor) else {
            continue;
        };
        let done = waiting.swap_remove(at);
        if down.reason != done.wanted {
            errors.push((down.pid, down.reason));
        }
    }
    errors
}

/// Monitors and unlinks a child, then looks for an `Exit` it sent before the
/// unlink. `None` if it was not alive to monitor and left no `Exit`.
/// Otherwise the monitor, and the prior exit reason if it had already exited
/// (its `Down` taken too).
async fn unlink_flush(pid: Pid) -> Option<(MonitorRef, Option<ExitReason>)> {
    let mref = monitor(pid);
    unlink(pid);
    let prior = receive::<Exit>()
        .matching(move |e| e.from == pid)
        .timeout(Duration::ZERO)
        .await;
    match prior {
        Some(exit) => {
            await_down(mref).await;
            Some((mref, Some(exit.reason)))
        }
        None => {
            // A child dead before the monitor and whose Exit we never got
            // (it was in flight when we unlinked): its Down says noproc.
            let gone = receive::<Down>()
                .matching(move |d| d.monitor == mref && d.reason == ExitReason::NoProc)
                .timeout(Duration::ZERO)
                .await;
            match gone {
                Some(_) => None,
                None => Some((mref, None)),
            }
        }
    }
}

fn already_exited(reason: ExitReason, restart: Restart) -> Result<(), ExitReason> {
    if reason.is_normal() && restart != Restart::Permanent {
        Ok(())
    } else {
        Err(reason)
    }
}

fn expect(reason: ExitReason, wanted: ExitReason) -> Result<(), ExitReason> {
    if reason == wanted {
        Ok(())
    } else {
        Err(reason)
    }
}

async fn down_within(mref: MonitorRef, limit: Duration) -> Option<ExitReason> {
    receive::<Down>()
        .matching(move |d| d.monitor == mref)
        .timeout(limit)
        .await
        .map(|d| d.reason)
}

/// The restarts within the last `period`, to check against the intensity.
///
/// OTP keeps a list of timestamps and filters it on each restart (O(n));
/// a deque dropping expired entries from the front does the same in
/// amortized O(1).
#[derive(Debug)]
pub(crate) struct RestartLog {
    intensity: u32,
    period: Duration,
    times: VecDeque<Instant>,
}

impl RestartLog {
    pub(crate) fn new(intensity: u32, period: Duration) -> RestartLog {
        RestartLog {
            intensity,
            period,
            times: VecDeque::new(),
        }
    }

    /// Records a restart now; false if that makes more than `intensity`
    /// restarts within `period` (the supervisor must give up).
    #[must_use]
    pub(crate) fn add(&mut self) -> bool {
        let now = Instant::now();
        while let Some(&oldest) = self.times.front() {
            if now.duration_since(oldest) > self.period {
                self.times.pop_front();
            } else {
                break;
            }
        }
        self.times.push_back(now);
        self.times.len() <= self.intensity as usize
    }
}

/// A supervisor report, OTP's `supervisor_report` (SASL): what happened
/// (`context`), to which child, why, and how often it has been restarted.
/// Sent to `tracing` at error level, target `ember_otp::supervisor`, within
/// the burst limit of [`logger::reports`](crate::logger::reports) (past it
/// the report is dropped and counted, before anything is formatted).
pub(crate) fn report(
    supervisor: &str,
    context: &'static str,
    id: Option<&str>,
    pid: Option<Pid>,
    reason: &ExitReason,
    restart_count: u64,
) {
    let enabled = tracing::enabled!(target: "ember_otp::supervisor", tracing::Level::ERROR);
    if !enabled || !crate::logger::reports().admit() {
        return;
    }
    let pid = pid
        .map(|p| p.to_string())
        .unwrap_or_else(|| "undefined".into());
    tracing::error!(
        target: "ember_otp::supervisor",
        supervisor,
        context,
        child_id = id.unwrap_or("undefined"),
        pid = %pid,
        reason = %reason,
        restart_count,
        "supervisor report: {context}"
    );
}
