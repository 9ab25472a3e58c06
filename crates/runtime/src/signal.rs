//! Links, monitors and exit signals: Erlang's failure-propagation semantics.
//!
//! See `docs/semantics.md`, sections "Links", "Monitors" and "Exit signals",
//! for the guarantees; this module implements them:
//!
//! * A process that terminates sends an exit signal with its reason to every
//!   linked process and a [`Down`] message to every monitoring process.
//! * An exit signal received by a process that traps exits becomes an [`Exit`]
//!   message, except the untrappable `kill` sent by [`exit`], which kills the
//!   process with reason `killed`.
//! * Otherwise a `normal` signal is ignored (unless a process sends it to
//!   itself) and any other reason kills the receiver with that reason.
//!
//! Relations (links, monitors, name) of one process sit behind one mutex, and
//! no code path holds two processes' relations locks at once. Termination sets
//! `EXITING` before it takes the relations, and every operation that adds a
//! relation checks `EXITING` under that lock, so nothing can be added to a
//! process after its termination collected its relations.

use std::sync::Arc;

use crate::context;
use crate::mailbox::Envelope;
use crate::pid::{MonitorRef, Pid};
use crate::process::Process;
use crate::reason::ExitReason;
use crate::runtime::Shared;
use crate::scheduler;

/// The message a process that traps exits receives for an exit signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Who sent the signal (the linked process that died, or the caller of `exit`).
    pub from: Pid,
    /// The reason it carries.
    pub reason: ExitReason,
}

/// The message a monitor produces when its target terminates (or did not exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    /// The reference [`monitor`] returned.
    pub monitor: MonitorRef,
    /// The monitored process.
    pub pid: Pid,
    /// Why it terminated; `noproc` if it was not alive when monitored.
    pub reason: ExitReason,
}

/// The error of [`link`] when the other process is not alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// The process does not exist (or has exited), as Erlang's `noproc`.
    NoProc(Pid),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::NoProc(pid) => write!(f, "noproc: {pid} is not alive"),
        }
    }
}

impl std::error::Error for LinkError {}

/// Terminates `process` with `reason`: from now on it is dead for everyone.
/// Idempotent; only the first call has an effect. Exit signals cascading
/// through links are handled with a work list, not recursion, so a chain of
/// any length cannot overflow the stack.
pub(crate) fn terminate(process: &Arc<Process>, reason: ExitReason) {
    let inside_a_poll = process.status() == crate::process::Status::Running;
    terminate_all(process, reason, inside_a_poll);
}

/// Terminates a process whose body just finished (returned or panicked) on
/// this thread: its poll is over, whatever its state bits still say.
pub(crate) fn terminate_finished(process: &Arc<Process>, reason: ExitReason) {
    terminate_all(process, reason, false);
}

fn terminate_all(process: &Arc<Process>, reason: ExitReason, inside_a_poll: bool) {
    let mut pending = Vec::new();
    terminate_one(process, reason, inside_a_poll, &mut pending);
    while let Some((process, reason)) = pending.pop() {
        let inside_a_poll = process.status() == crate::process::Status::Running;
        terminate_one(&process, reason, inside_a_poll, &mut pending);
    }
}

/// One termination; processes its links kill are pushed on `pending`.
/// `inside_a_poll` (read before `EXITING` is set, which changes what the
/// status reports) keeps a process killed mid-poll visible as "kill pending".
fn terminate_one(
    process: &Arc<Process>,
    reason: ExitReason,
    inside_a_poll: bool,
    pending: &mut Vec<(Arc<Process>, ExitReason)>,
) {
    if !process.begin_exit() {
        return;
    }
    let rt = &process.rt;
    rt.table.remove(&process.pid.key());
    if inside_a_poll {
        // Killed inside a poll: keep it visible to introspection ("kill
        // pending") until its body is dropped when the poll returns.
        rt.zombies.insert(process.pid.key(), process.clone());
    }
    let relations = process.relations.lock().take();
    if let Some(relations) = relations {
        if let Some(name) = &relations.name {
            rt.names.remove_if(name, |_, owner| *owner == process.pid);
        }
        rt.timers.cancel_all(&relations.timers);
        for (monitor, target) in relations.monitoring {
            if let Some(target) = rt.lookup(target) {
                target.with_relations(|r| r.monitored_by.remove(&monitor));
            }
        }
        for (monitor, watcher) in relations.monitored_by {
            let Some(watcher) = rt.lookup(watcher) else {
                continue;
            };
            // Only a monitor the watcher still holds fires: if `demonitor`
            // removed it first, it answered true and no `Down` follows. The
            // `Down` is queued under the watcher's lock, so a `demonitor`
            // that finds the monitor gone also finds the `Down` to flush.
            let fired = watcher.with_relations(|r| {
                let held = r.monitoring.remove(&monitor).is_some();
                if held {
                    watcher.mailbox.push(Envelope::new(Down {
                        monitor,
                        pid: process.pid,
                        reason: reason.clone(),
                    }));
                }
                held
            });
            if fired {
                scheduler::wake(&watcher);
            }
        }
        for linked in relations.links {
            if let Some(linked) = rt.lookup(linked) {
                if let Some(death) = exit_signal_outcome(&linked, process.pid, reason.clone(), true)
                {
                    pending.push((linked, death));
                }
            }
        }
    }
    // The owner's saved messages go when its body is dropped.
    scheduler::drop_contained(process.mailbox.drain_inbox());
    // Let a scheduler drop the body (now, or when its current poll returns).
    scheduler::wake(process);
}

/// Pushes a message into a live process's mailbox and wakes it.
pub(crate) fn deliver(to: &Arc<Process>, message: Envelope) {
    to.mailbox.push(message);
    scheduler::wake(to);
}

/// Handles an exit signal arriving at `to`. `linked` tells a link's signal
/// (from a terminating process) from one sent by [`exit`].
pub(crate) fn receive_exit_signal(to: &Arc<Process>, from: Pid, reason: ExitReason, linked: bool) {
    if let Some(death) = exit_signal_outcome(to, from, reason, linked) {
        terminate(to, death);
    }
}

/// Applies an exit signal's non-fatal effects (a trapped [`Exit`] message)
/// and returns the reason `to` must die with, if it must.
fn exit_signal_outcome(
    to: &Arc<Process>,
    from: Pid,
    reason: ExitReason,
    linked: bool,
) -> Option<ExitReason> {
    if to.is_exiting() {
        return None;
    }
    if linked && !to.with_relations(|r| r.links.remove(&from)) {
        // Unlinked meanwhile: an unlink guarantees no signal from that link.
        return None;
    }
    if reason == ExitReason::Kill && !linked {
        Some(ExitReason::Killed)
    } else if to.trap_exit() {
        deliver(to, Envelope::new(Exit { from, reason }));
        None
    } else if reason.is_normal() {
        (!linked && from == to.pid).then_some(ExitReason::Normal)
    } else {
        Some(reason)
    }
}

/// Sends an exit signal with `reason` to `pid`, as Erlang's `exit/2`.
///
/// `kill` cannot be trapped: the target exits with `killed`. A process that
/// traps exits receives any other reason as an [`Exit`] message. Otherwise
/// `normal` is ignored (except when a process sends it to itself) and any other
/// reason terminates the target with that reason. A dead pid is ignored.
pub fn exit(pid: Pid, reason: ExitReason) {
    context::with_runtime("exit", |rt| {
        let from = context::try_with_current(|p| p.pid).unwrap_or(Pid::OUTSIDE);
        rt.exit_signal(from, pid, reason);
    });
}

impl Shared {
    /// `exit/2` from `from` (which may be a non-process caller using its target's pid).
    pub(crate) fn exit_signal(&self, from: Pid, to: Pid, reason: ExitReason) {
        if let Some(target) = self.lookup(to) {
            receive_exit_signal(&target, from, reason, false);
        }
    }
}

/// Links the calling process with `pid`, bidirectionally.
///
/// Linking to oneself does nothing; linking twice is one link. If `pid` is not
/// alive, the result is an error [`LinkError::NoProc`] (Erlang raises `noproc`
/// in that case, or delivers `{'EXIT', Pid, noproc}` when trapping exits; Ember
/// returns the error in both cases and, when trapping, also delivers the
/// [`Exit`] message, so code written either way works).
pub fn link(pid: Pid) -> Result<(), LinkError> {
    context::with_current("link", |me| {
        if pid == me.pid {
            return Ok(());
        }
        if me.with_live_relations(|r| r.links.insert(pid)).is_none() {
            // Terminated while running: it is dead, it links to nothing.
            return Err(LinkError::NoProc(me.pid));
        }
        let linked = me
            .rt
            .lookup(pid)
            .map(|other| {
                let mut relations = other.relations.lock();
                // Checked under the lock; see the module docs.
                if other.is_exiting() {
                    return false;
                }
                relations
                    .get_or_insert_with(Box::default)
                    .links
                    .insert(me.pid);
                true
            })
            .unwrap_or(false);
        if linked {
            return Ok(());
        }
        me.with_relations(|r| r.links.remove(&pid));
        if me.trap_exit() {
            deliver(
                me,
                Envelope::new(Exit {
                    from: pid,
                    reason: ExitReason::NoProc,
                }),
            );
        }
        Err(LinkError::NoProc(pid))
    })
}

/// Removes the link between the calling process and `pid`, if any. After it
/// returns, no exit signal from that link reaches the caller.
pub fn unlink(pid: Pid) {
    context::with_current("unlink", |me| {
        me.with_relations(|r| r.links.remove(&pid));
        if let Some(other) = me.rt.lookup(pid) {
            other.with_relations(|r| r.links.remove(&me.pid));
        }
    });
}

/// Starts monitoring `pid`. When it terminates (or at once, with reason
/// `noproc`, if it is not alive) the caller receives a [`Down`] message
/// carrying the returned reference. Each call creates a new monitor.
pub fn monitor(pid: Pid) -> MonitorRef {
    context::with_current("monitor", |me| {
        let monitor = MonitorRef(me.rt.make_ref());
        if me
            .with_live_relations(|r| r.monitoring.insert(monitor, pid))
            .is_none()
        {
            // Terminated while running: it monitors nothing more.
            return monitor;
        }
        let attached = me
            .rt
            .lookup(pid)
            .map(|target| {
                let mut relations = target.relations.lock();
                if target.is_exiting() {
                    return false;
                }
                relations
                    .get_or_insert_with(Box::default)
                    .monitored_by
                    .insert(monitor, me.pid);
                true
            })
            .unwrap_or(false);
        if !attached {
            me.with_relations(|r| r.monitoring.remove(&monitor));
            deliver(
                me,
                Envelope::new(Down {
                    monitor,
                    pid,
                    reason: ExitReason::NoProc,
                }),
            );
        }
        monitor
    })
}

/// Removes a monitor. Returns true if it was still active. With `flush`, a
/// [`Down`] message for it already in the mailbox is removed too, so after
/// `demonitor(r, true)` no `Down` for `r` is ever received.
pub fn demonitor(monitor: MonitorRef, flush: bool) -> bool {
    context::with_current("demonitor", |me| {
        // Whoever removes the monitor from the watcher's side owns it: if
        // we do, no `Down` will come (the target's exit checks this side).
        let target = me.with_relations(|r| r.monitoring.remove(&monitor));
        let was_active = target.is_some();
        if let Some(target) = target.and_then(|pid| me.rt.lookup(pid)) {
            target.with_relations(|r| r.monitored_by.remove(&monitor));
        }
        if flush {
            // SAFETY: `me` is the current process, so this thread has exclusive
            // use of it (mailbox module docs, "Safety").
            unsafe {
                me.mailbox.remove_all(&mut |m| {
                    m.downcast_ref::<Down>()
                        .is_some_and(|d| d.monitor == monitor)
                });
            }
        }
        was_active
    })
}

/// Whether the calling process traps exits (false outside a process).
pub fn trapping_exits() -> bool {
    context::try_with_current(|p| p.trap_exit()).unwrap_or(false)
}

/// Sets whether the calling process traps exits (Erlang's
/// `process_flag(trap_exit, On)`); returns the previous value.
pub fn trap_exit(on: bool) -> bool {
    context::with_current("trap_exit", |me| me.set_trap_exit(on))
}
