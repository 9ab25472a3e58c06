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
//! # The link protocol
//!
//! `link`, `unlink`, `spawn_link` and the delivery of exit signals are one
//! protocol, on two pieces of state per process.
//!
//! ## State
//!
//! * `EXITING`, a bit of the process's state byte (`process::state`): set
//!   once, never cleared; from then on the process is dead for everyone else.
//! * The relations record (`Process::relations`: links, monitors, name),
//!   behind a per-process mutex, the *relations lock*.
//!
//! ## Who may touch which field
//!
//! * `EXITING` of a process is set only while holding that process's
//!   relations lock, and in the same critical section its relations record
//!   is taken out ([`begin_exit`]). Whoever wins that holds a [`Dying`] and
//!   finishes the termination outside the lock (table, name, monitors,
//!   signals to the taken links). (The runtime's `Drop`, after every
//!   scheduler has stopped, is the one exception: nothing runs any more.)
//! * Anything that *adds* to a process's relations checks `EXITING` under
//!   the same lock first and adds nothing to an exiting process.
//! * A link lives in both processes' records. It is added to both sides in
//!   one step: [`link_pair`] holds both relations locks.
//! * An exit signal along a link removes the link from the receiver's side
//!   and applies its whole effect under the receiver's lock
//!   ([`signal_locked`]): it marks the receiver `EXITING` (and takes its
//!   relations), or pushes the trapped [`Exit`] message into its mailbox, or
//!   is ignored. Only a signal that found the link on the receiver's side
//!   has any effect.
//! * `unlink` removes the link from each side under that side's lock, one
//!   side at a time; the caller's side decides what may still reach it.
//! * `spawn_link` publishes the child (process table, name) and adds the link
//!   to the parent's record in one critical section of the parent's lock,
//!   after the child's own record already holds the link.
//!
//! ## Lock order
//!
//! At most two relations locks are held at once, and then in ascending pid
//! order ([`link_pair`]; `spawn_link` holds the parent's lock while the new
//! child's name is recorded, and a child's pid is always greater than its
//! parent's). Under a relations lock the code may take a mailbox lock, a
//! process-table shard or a name-table shard; code holding one of those
//! never takes a relations lock. So there is no cycle.
//!
//! ## Why each race is closed
//!
//! * **`unlink` against the other side's death.** The dying side's signal
//!   and the caller's `unlink` both take the caller's relations lock, so one
//!   comes first. If the signal does, it found the link and has already
//!   applied its effect before releasing the lock: the caller is `EXITING`
//!   (dead before `unlink` returns; `is_alive` says so) or the `Exit`
//!   message is already in its mailbox (`unlink` does not flush, as in OTP).
//!   If `unlink` does, the signal finds no link and has no effect. There is
//!   no moment at which a decided but not yet applied kill waits outside the
//!   lock.
//! * **`spawn_link` against the parent's death.** The parent's termination
//!   sets `EXITING` and takes its links under the parent's lock. If it comes
//!   first, `spawn_link` sees `EXITING` and starts nothing. If `spawn_link`
//!   comes first, the child is in the process table and in the parent's
//!   links when the termination takes them, so it finds the child and sends
//!   it the signal. A child killed meanwhile finds the parent's side of the
//!   link once it can take the parent's lock.
//! * **`link` against the death of either side.** [`link_pair`] holds both
//!   locks and checks both `EXITING` bits: a termination that comes first
//!   makes the link fail (`noproc`, or nothing for a caller that is itself
//!   dead); one that comes after takes a record holding the link, and the
//!   other side is in the table (it was not `EXITING`), so the signal
//!   reaches it.
//! * **Two deaths at once.** Each termination takes only its own record.
//!   Each signal is applied under the receiver's lock and only if the link is
//!   still on the receiver's side, so a process already exiting ignores it.
//!
//! Monitors follow the same discipline for the `Down` (queued under the
//! watcher's lock, see `demonitor`). The loom models at the end of this file
//! run these critical sections (the same functions the runtime uses) with
//! the locks and the state byte of `crate::loom`.

use std::sync::Arc;

use crate::context;
use crate::loom::sync::Mutex;
use crate::mailbox::Envelope;
use crate::pid::{MonitorRef, Pid};
use crate::process::{Process, Relations, State, Status};
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

/// A process's relations record behind its relations lock.
pub(crate) type RelationsLock = Mutex<Option<Box<Relations>>>;

/// What the link protocol needs of a process; the runtime's [`Process`] and
/// the loom models' stand-in implement it, so the models run the very
/// critical sections below.
pub(crate) trait Node {
    /// Its pid.
    fn pid(&self) -> Pid;
    /// Its scheduling state byte (for `EXITING`).
    fn state(&self) -> &State;
    /// Its relations record.
    fn relations(&self) -> &RelationsLock;
    /// Whether it traps exits now.
    fn traps_exits(&self) -> bool;
    /// Queues a trapped exit signal (called under its relations lock; the
    /// caller wakes it after releasing the lock).
    fn push_exit(&self, exit: Exit);
}

impl Node for Process {
    fn pid(&self) -> Pid {
        self.pid
    }

    fn state(&self) -> &State {
        &self.state
    }

    fn relations(&self) -> &RelationsLock {
        &self.relations
    }

    fn traps_exits(&self) -> bool {
        self.trap_exit()
    }

    fn push_exit(&self, exit: Exit) {
        self.mailbox.push(Envelope::new(exit));
    }
}

/// A process whose `EXITING` bit this caller set, with what it took in the
/// same critical section: the caller must finish its termination.
#[must_use = "a dying process must have its termination finished"]
pub(crate) struct Dying {
    /// Its relations record, taken out (empty if it never had one).
    pub(crate) relations: Option<Box<Relations>>,
    /// Whether it was inside a poll when marked (read before `EXITING` was
    /// set, which changes what the status reports).
    pub(crate) inside_a_poll: bool,
}

/// Marks `node` exiting and takes its relations, under its lock held by the
/// caller (`record`); `None` if it was already exiting.
fn begin_exit_locked(node: &impl Node, record: &mut Option<Box<Relations>>) -> Option<Dying> {
    let inside_a_poll = node.state().status() == Status::Running;
    if !node.state().begin_exit() {
        return None;
    }
    Some(Dying {
        relations: record.take(),
        inside_a_poll,
    })
}

/// Marks `node` exiting and takes its relations in one critical section of
/// its relations lock; `None` if someone else did first (module docs).
pub(crate) fn begin_exit(node: &impl Node) -> Option<Dying> {
    begin_exit_locked(node, &mut node.relations().lock())
}

/// The outcome of an exit signal at its receiver ([`signal_locked`]).
#[must_use]
pub(crate) enum Signalled {
    /// No effect: the receiver is exiting, the link was gone, or a `normal`
    /// signal was ignored.
    Ignored,
    /// An [`Exit`] message was queued: wake the receiver.
    Trapped,
    /// The receiver now exits with this reason: finish its termination.
    Killed(ExitReason, Dying),
}

/// Applies an exit signal from `from` to `to`, whole, under `to`'s relations
/// lock. `linked` tells a link's signal (from a terminating process) from
/// one sent by [`exit`]; a link's signal has effect only if it removes the
/// link from `to`'s side.
pub(crate) fn signal_locked(
    to: &impl Node,
    from: Pid,
    reason: ExitReason,
    linked: bool,
) -> Signalled {
    let mut record = to.relations().lock();
    if to.state().is_exiting() {
        return Signalled::Ignored;
    }
    if linked && !record.as_mut().is_some_and(|r| r.links.remove(&from)) {
        // Unlinked first: an unlink guarantees no signal from that link.
        return Signalled::Ignored;
    }
    let death = if reason == ExitReason::Kill && !linked {
        Some(ExitReason::Killed)
    } else if to.traps_exits() {
        to.push_exit(Exit { from, reason });
        return Signalled::Trapped;
    } else if reason.is_normal() {
        (!linked && from == to.pid()).then_some(ExitReason::Normal)
    } else {
        Some(reason)
    };
    match death.and_then(|reason| Some((reason, begin_exit_locked(to, &mut record)?))) {
        Some((reason, dying)) => Signalled::Killed(reason, dying),
        None => Signalled::Ignored,
    }
}

/// The outcome of [`link_pair`].
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Linked {
    /// Both sides hold the link.
    Linked,
    /// The caller is exiting: it links to nothing.
    CallerExiting,
    /// The other process is not alive.
    NoProc,
}

/// Links `me` and `other` (`None`: not in the process table), both sides in
/// one step: both relations locks held, in ascending pid order.
pub(crate) fn link_pair(me: &impl Node, other: Option<&impl Node>) -> Linked {
    let Some(other) = other else {
        return if me.state().is_exiting() {
            Linked::CallerExiting
        } else {
            Linked::NoProc
        };
    };
    let (mut mine, mut theirs);
    if me.pid().key() < other.pid().key() {
        mine = me.relations().lock();
        theirs = other.relations().lock();
    } else {
        theirs = other.relations().lock();
        mine = me.relations().lock();
    }
    if me.state().is_exiting() {
        return Linked::CallerExiting;
    }
    if other.state().is_exiting() {
        return Linked::NoProc;
    }
    mine.get_or_insert_with(Box::default)
        .links
        .insert(other.pid());
    theirs
        .get_or_insert_with(Box::default)
        .links
        .insert(me.pid());
    Linked::Linked
}

/// Removes `other` from `node`'s side of their link, under `node`'s lock.
pub(crate) fn unlink_side(node: &impl Node, other: Pid) {
    if let Some(record) = node.relations().lock().as_mut() {
        record.links.remove(&other);
    }
}

/// Terminates `process` with `reason`: from now on it is dead for everyone.
/// Idempotent; only the first call has an effect. Exit signals cascading
/// through links are handled with a work list, not recursion, so a chain of
/// any length cannot overflow the stack.
pub(crate) fn terminate(process: &Arc<Process>, reason: ExitReason) {
    if let Some(dying) = begin_exit(&**process) {
        terminate_all(process.clone(), reason, dying);
    }
}

/// Terminates a process whose body just finished (returned or panicked) on
/// this thread: its poll is over, whatever its state bits still say.
pub(crate) fn terminate_finished(process: &Arc<Process>, reason: ExitReason) {
    if let Some(dying) = begin_exit(&**process) {
        let dying = Dying {
            inside_a_poll: false,
            ..dying
        };
        terminate_all(process.clone(), reason, dying);
    }
}

fn terminate_all(process: Arc<Process>, reason: ExitReason, dying: Dying) {
    let mut pending = vec![(process, reason, dying)];
    while let Some((process, reason, dying)) = pending.pop() {
        finish_exit(&process, reason, dying, &mut pending);
    }
}

/// Finishes the termination of a process marked exiting (by [`begin_exit`]
/// or a fatal signal); processes its links kill are pushed on `pending`.
fn finish_exit(
    process: &Arc<Process>,
    reason: ExitReason,
    dying: Dying,
    pending: &mut Vec<(Arc<Process>, ExitReason, Dying)>,
) {
    let rt = &process.rt;
    rt.table.remove(&process.pid.key());
    if dying.inside_a_poll {
        // Killed inside a poll: keep it visible to introspection ("kill
        // pending") until its body is dropped when the poll returns.
        rt.zombies.insert(process.pid.key(), process.clone());
    }
    if let Some(relations) = dying.relations {
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
                match signal_locked(&*linked, process.pid, reason.clone(), true) {
                    Signalled::Ignored => {}
                    Signalled::Trapped => scheduler::wake(&linked),
                    Signalled::Killed(death, dying) => pending.push((linked, death, dying)),
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

/// Handles an exit signal sent by [`exit`] (not along a link) to `to`.
pub(crate) fn receive_exit_signal(to: &Arc<Process>, from: Pid, reason: ExitReason) {
    match signal_locked(&**to, from, reason, false) {
        Signalled::Ignored => {}
        Signalled::Trapped => scheduler::wake(to),
        Signalled::Killed(death, dying) => terminate_all(to.clone(), death, dying),
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
            receive_exit_signal(&target, from, reason);
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
        let other = me.rt.lookup(pid);
        match link_pair(&**me, other.as_deref()) {
            Linked::Linked => Ok(()),
            // Terminated while running: it is dead, it links to nothing.
            Linked::CallerExiting => Err(LinkError::NoProc(me.pid)),
            Linked::NoProc => {
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
            }
        }
    })
}

/// Removes the link between the calling process and `pid`, if any. After it
/// returns, no exit signal from that link reaches the caller: a signal that
/// came first has already had its effect (an [`Exit`] message already in the
/// mailbox, which `unlink` does not flush, or the caller's death).
pub fn unlink(pid: Pid) {
    context::with_current("unlink", |me| {
        unlink_side(&**me, pid);
        if let Some(other) = me.rt.lookup(pid) {
            unlink_side(&*other, me.pid);
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
