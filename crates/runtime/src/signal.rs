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
//!   signals to the taken links). (The runtime's `Drop` is the one
//!   exception: it sets `EXITING` on every process first and takes the
//!   records afterwards; a dying runtime sends no signals, and a worker
//!   still stuck in a poll adds nothing, since every addition checks
//!   `EXITING` under the lock.)
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
//! child's name is recorded under the child's, and a child's pid is always
//! greater than its parent's). Under a relations lock the code may take a
//! mailbox lock, a process-table or name-table shard, or the timer wheel's
//! lock; code holding one of those never takes a relations lock (a name is
//! claimed under the owner's relations lock, then the name table's). So
//! there is no cycle.
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
//! Monitors follow the same discipline: `monitor` writes both sides holding
//! both locks ([`with_both`], as `link` does), and the `Down` is queued
//! under the watcher's lock (see `demonitor`). The loom models at the end of this file
//! run these critical sections (the same functions the runtime uses) with
//! the locks and the state byte of `crate::loom`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::context;
use crate::dist::RemoteExit;
use crate::loom::sync::Mutex;
use crate::mailbox::Envelope;
use crate::mailbox::Owner as _;
use crate::pid::{MonitorRef, Pid};
use crate::process::{End, Process, Relations, Running, State, Status};
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
    /// The monitored process (for a monitor by name on another node, a
    /// placeholder pid of that node: see `name`).
    pub pid: Pid,
    /// For a monitor by name on another node ([`crate::dist::monitor_name`]),
    /// the name and node (Erlang's `{Name, Node}`); `None` otherwise.
    pub name: Option<crate::dist::RemoteName>,
    /// Why it terminated; `noproc` if it was not alive when monitored,
    /// `noconnection` if its node became unreachable.
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
pub(crate) enum LinkOutcome {
    /// Both sides hold the link.
    Linked,
    /// The caller is exiting: it links to nothing.
    CallerExiting,
    /// The other process is not alive.
    NoProc,
}

/// Runs `f` on the relations records of `me` and `other` (`None`: not in
/// the process table) with both locks held, taken in ascending pid order,
/// unless one of them is exiting: a relation between two processes is
/// written on both sides in one step. `me` and `other` must differ.
fn with_both<N: Node, R>(
    me: &N,
    other: Option<&N>,
    f: impl FnOnce(&mut Relations, &mut Relations) -> R,
) -> Result<R, LinkOutcome> {
    let Some(other) = other else {
        return Err(if me.state().is_exiting() {
            LinkOutcome::CallerExiting
        } else {
            LinkOutcome::NoProc
        });
    };
    debug_assert_ne!(me.pid(), other.pid());
    let (mut mine, mut theirs);
    if me.pid().key() < other.pid().key() {
        mine = me.relations().lock();
        theirs = other.relations().lock();
    } else {
        theirs = other.relations().lock();
        mine = me.relations().lock();
    }
    if me.state().is_exiting() {
        return Err(LinkOutcome::CallerExiting);
    }
    if other.state().is_exiting() {
        return Err(LinkOutcome::NoProc);
    }
    Ok(f(
        mine.get_or_insert_with(Box::default),
        theirs.get_or_insert_with(Box::default),
    ))
}

/// Links `me` and `other` (`None`: not in the process table), both sides in
/// one step ([`with_both`]).
pub(crate) fn link_pair<N: Node>(me: &N, other: Option<&N>) -> LinkOutcome {
    let (mine, theirs) = (me.pid(), other.map(Node::pid));
    with_both(me, other, |my_record, their_record| {
        if let Some(theirs) = theirs {
            my_record.links.insert(theirs);
        }
        their_record.links.insert(mine);
    })
    .map_or_else(|outcome| outcome, |()| LinkOutcome::Linked)
}

/// Runs `f` on `node`'s relations record unless it is exiting (then `None`),
/// under its lock: what is added this way is taken by its termination.
pub(crate) fn with_live_relations<R>(
    node: &impl Node,
    f: impl FnOnce(&mut Relations) -> R,
) -> Option<R> {
    let mut record = node.relations().lock();
    if node.state().is_exiting() {
        return None;
    }
    Some(f(record.get_or_insert_with(Box::default)))
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

/// Finishes the termination of `process`, marked exiting by the caller, and
/// of every process its links kill in turn.
pub(crate) fn terminate_all(process: Arc<Process>, reason: ExitReason, dying: Dying) {
    // The work list allocates only if a link kills another process.
    let mut pending = Vec::new();
    finish_exit(&process, reason, dying, &mut pending);
    drop(process);
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
    rt.table.remove(process.pid.key());
    if dying.inside_a_poll {
        // Killed inside a poll: keep it visible to introspection ("kill
        // pending") until its body is dropped when the poll returns.
        // Counted first: `forget_zombie` looks at the map only if it sees
        // a count.
        rt.zombie_count
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        rt.zombies.insert(process.pid.key(), process.clone());
    }
    if let Some(relations) = dying.relations {
        let (links, more) = relations.into_parts();
        let more = more.map(|more| *more).unwrap_or_default();
        if let Some(name) = &more.name {
            rt.names.remove_if(name, |_, owner| *owner == process.pid);
        }
        rt.timers.cancel_all(&more.timers);
        for alias in &more.aliases {
            rt.aliases.remove(alias);
        }
        // What crosses to other nodes, gathered on the way (allocated only
        // for a process with a remote relation).
        let mut remote: Option<Box<RemoteExit>> = None;
        for (monitor, target) in more.monitoring {
            if !target.is_local() {
                remote
                    .get_or_insert_default()
                    .monitoring
                    .push((monitor, target));
            } else if let Some(target) = rt.lookup(target) {
                target.with_relations(|r| forget_watcher(r, &monitor));
            }
        }
        // The link signals go before the `Down`s: a dying process's signals
        // to one receiver keep their order (docs/semantics.md §9.4), so a
        // non-trapping process linked to and monitoring it is already dead
        // when the `Down` reaches its mailbox, and never acts on it; a
        // trapping one finds the `Exit` before the `Down`.
        for linked in links {
            if !linked.is_local() {
                remote.get_or_insert_default().links.push(linked);
            } else if let Some(linked) = rt.lookup(linked) {
                match signal_locked(&*linked, process.pid, reason.clone(), true) {
                    Signalled::Ignored => {}
                    Signalled::Trapped => scheduler::wake_after_push(&linked),
                    Signalled::Killed(death, dying) => pending.push((linked, death, dying)),
                }
            }
        }
        for (monitor, watcher) in more.monitored_by {
            if !watcher.is_local() {
                remote
                    .get_or_insert_default()
                    .monitored_by
                    .push((monitor, watcher));
                continue;
            }
            let Some(watcher) = rt.lookup(watcher) else {
                continue;
            };
            // Only a monitor the watcher still holds fires: if `demonitor`
            // removed it first, it answered true and no `Down` follows. The
            // `Down` is queued under the watcher's lock, so a `demonitor`
            // that finds the monitor gone also finds the `Down` to flush. A
            // watcher the link signals above just killed has no record left:
            // it gets no `Down`.
            let fired = {
                let mut record = watcher.relations.lock();
                let held = record
                    .as_mut()
                    .and_then(|r| r.more_if_any_mut())
                    .is_some_and(|m| m.monitoring.remove(&monitor).is_some());
                if held {
                    watcher.mailbox.push(Envelope::new(Down {
                        monitor,
                        pid: process.pid,
                        name: None,
                        reason: reason.clone(),
                    }));
                }
                held
            };
            if fired {
                scheduler::wake_after_push(&watcher);
            }
        }
        if let Some(remote) = remote {
            remote.send(rt, process.pid, &reason);
        }
    }
    // The owner's saved messages go when its body is dropped.
    scheduler::drop_contained(process.mailbox.drain_inbox());
    // Parked: nobody polls it or will (`process::state`, "Who drops the
    // body"), so its body goes now, on this thread, instead of through a run
    // queue to a scheduler that would only drop it. Its destructors run in
    // its own context, and not from inside another process's poll (a kill
    // sent by a process: the killer does not pay for its victim's drop):
    // then, as when it is inside a poll or queued, whoever holds or takes
    // `RUNNING` drops it.
    // A kill made by such a destructor goes through a run queue too, so a
    // chain of them does not nest drops on the stack.
    let claimed = if DROPPING_KILLED.with(Cell::get) || context::in_process() {
        None
    } else {
        Running::claim_exiting(process)
    };
    let Some(running) = claimed else {
        scheduler::wake(process);
        return;
    };
    DROPPING_KILLED.with(|d| d.set(true));
    running.exit(End::Killed);
    DROPPING_KILLED.with(|d| d.set(false));
}

thread_local! {
    /// Set while this thread drops the body of a process it killed
    /// (`finish_exit`).
    static DROPPING_KILLED: Cell<bool> = const { Cell::new(false) };
}

/// Pushes a message into a live process's mailbox and wakes it.
pub(crate) fn deliver(to: &Arc<Process>, message: Envelope) {
    to.mailbox.push(message);
    scheduler::wake_after_push(to);
}

/// [`deliver`] to a process reached without the table (a sender's kept
/// target, `crate::message`, "Kept targets"): if it has begun exiting, its
/// last take of the inbox may have missed this push, so the messages taken
/// back are returned, for the caller to drop.
pub(crate) fn deliver_kept(to: &Arc<Process>, message: Envelope) -> Option<VecDeque<Envelope>> {
    to.mailbox.push(message);
    if to.is_exiting() {
        return Some(to.mailbox.drain_inbox());
    }
    scheduler::wake_after_push(to);
    None
}

/// Handles an exit signal along a link (from a process of another node) to
/// `to`: it has effect only if `to` still holds the link.
pub(crate) fn receive_link_signal(to: &Arc<Process>, from: Pid, reason: ExitReason) {
    match signal_locked(&**to, from, reason, true) {
        Signalled::Ignored => {}
        Signalled::Trapped => scheduler::wake_after_push(to),
        Signalled::Killed(death, dying) => terminate_all(to.clone(), death, dying),
    }
}

/// Handles an exit signal sent by [`exit`] (not along a link) to `to`.
pub(crate) fn receive_exit_signal(to: &Arc<Process>, from: Pid, reason: ExitReason) {
    match signal_locked(&**to, from, reason, false) {
        Signalled::Ignored => {}
        Signalled::Trapped => scheduler::wake_after_push(to),
        Signalled::Killed(death, dying) => terminate_all(to.clone(), death, dying),
    }
}

/// Sends an exit signal with `reason` to `pid`, as Erlang's `exit/2`.
///
/// `kill` cannot be trapped: the target exits with `killed`. A process that
/// traps exits receives any other reason as an [`Exit`] message. Otherwise
/// `normal` is ignored (except when a process sends it to itself) and any other
/// reason terminates the target with that reason. A dead pid is ignored.
/// Costs one reduction, like [`send`](crate::send).
pub fn exit(pid: Pid, reason: ExitReason) {
    // The signal is applied outside `with_runtime`, which holds the current
    // process: a parked target's body is dropped in its own context.
    let (rt, from) = context::with_runtime("exit", |rt| {
        context::consume_reductions(1);
        let from = context::try_with_current(|p| p.pid).unwrap_or(Pid::OUTSIDE);
        (rt.clone(), from)
    });
    rt.exit_signal(from, pid, reason);
}

impl Shared {
    /// `exit/2` from `from` (which may be a non-process caller using its target's pid).
    pub(crate) fn exit_signal(&self, from: Pid, to: Pid, reason: ExitReason) {
        if !to.is_local() {
            return self.exit_remote(from, to, reason);
        }
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
        if !pid.is_local() {
            return crate::dist::link_remote(me, pid);
        }
        let other = me.rt.lookup(pid);
        match link_pair(&**me, other.as_deref()) {
            LinkOutcome::Linked => Ok(()),
            // Terminated while running: it is dead, it links to nothing.
            LinkOutcome::CallerExiting => Err(LinkError::NoProc(me.pid)),
            LinkOutcome::NoProc => {
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
        if !pid.is_local() {
            return crate::dist::unlink_remote(me, pid);
        }
        unlink_side(&**me, pid);
        if let Some(other) = me.rt.lookup(pid) {
            unlink_side(&*other, me.pid);
        }
    });
}

/// Removes the target's side of `monitor`, if it is still there.
fn forget_watcher(target: &mut Relations, monitor: &MonitorRef) {
    if let Some(more) = target.more_if_any_mut() {
        more.monitored_by.remove(monitor);
    }
}

/// Starts monitoring `pid`. When it terminates (or at once, with reason
/// `noproc`, if it is not alive) the caller receives a [`Down`] message
/// carrying the returned reference. Each call creates a new monitor.
pub fn monitor(pid: Pid) -> MonitorRef {
    monitor_with_name(pid, None)
}

/// [`monitor`], with the name a remote monitor by name was made with.
pub(crate) fn monitor_with_name(pid: Pid, name: Option<crate::dist::RemoteName>) -> MonitorRef {
    context::with_current("monitor", |me| {
        let monitor = MonitorRef(me.rt.make_ref());
        let attached = if !pid.is_local() {
            crate::dist::monitor_remote(me, pid, monitor, name.clone())
                .map_err(|()| LinkOutcome::NoProc)
        } else if pid == me.pid {
            // Monitoring oneself: allowed, and never fires.
            me.with_live_relations(|r| {
                let r = r.more_mut();
                r.monitoring.insert(monitor, pid);
                r.monitored_by.insert(monitor, pid);
            })
            .ok_or(LinkOutcome::CallerExiting)
        } else {
            // Both sides in one step, like a link: a caller killed meanwhile
            // leaves no monitor behind on a live target.
            let target = me.rt.lookup(pid);
            with_both(&**me, target.as_deref(), |mine, theirs| {
                mine.more_mut().monitoring.insert(monitor, pid);
                theirs.more_mut().monitored_by.insert(monitor, me.pid);
            })
        };
        match attached {
            Ok(()) => {}
            // Terminated while running: it monitors nothing more.
            Err(LinkOutcome::CallerExiting) => {}
            Err(_) => deliver(
                me,
                Envelope::new(Down {
                    monitor,
                    pid,
                    name,
                    reason: ExitReason::NoProc,
                }),
            ),
        }
        monitor
    })
}

/// Removes a monitor. Returns true if it was still active. With `flush`, a
/// [`Down`] message for it already in the mailbox is removed too, so after
/// `demonitor(r, true)` no `Down` for `r` is ever received.
pub fn demonitor(monitor: MonitorRef, flush: bool) -> bool {
    context::with_running("demonitor", |me| {
        let was_active = demonitor_of(me.process(), monitor);
        if flush {
            // The current process's own saved queue, through its guard.
            me.remove_all(&mut |m| {
                m.downcast_ref::<Down>()
                    .is_some_and(|d| d.monitor == monitor)
            });
        }
        was_active
    })
}

/// Removes `monitor`, held by `watcher`, from both sides; true if it was
/// still active. Whoever removes the monitor from the watcher's side owns
/// it: if we do, no `Down` will come (the target's exit checks this side).
pub(crate) fn demonitor_of(watcher: &Arc<Process>, monitor: MonitorRef) -> bool {
    let target = watcher.with_relations(|r| r.more_if_any_mut()?.monitoring.remove(&monitor));
    let was_active = target.is_some();
    if let Some(remote) = target.filter(|pid| !pid.is_local()) {
        crate::dist::demonitor_remote(&watcher.rt, watcher.pid, monitor, remote);
    } else if let Some(target) = target.and_then(|pid| watcher.rt.lookup(pid)) {
        target.with_relations(|r| forget_watcher(r, &monitor));
    }
    was_active
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

/// Model checks of the link protocol under loom; see `crate::loom` for the
/// command. The processes are reduced to what the protocol touches (state
/// byte, relations lock, a trapped-exit inbox) and the table to a locked
/// list; the critical sections are this module's own functions, and the
/// termination cascade mirrors `terminate_all`/`finish_exit` for links.
#[cfg(all(test, feature = "loom-models"))]
pub(crate) mod loom_models {
    use ::loom::sync::Arc;
    use ::loom::thread;

    use super::{
        begin_exit, forget_watcher, link_pair, signal_locked, unlink_side, with_both,
        with_live_relations, Dying, Exit, LinkOutcome, Node, RelationsLock, Signalled,
    };
    use crate::loom::sync::Mutex;
    use crate::pid::Pid;
    use crate::pid::{MonitorRef, Ref};
    use crate::process::State;
    use crate::reason::ExitReason;

    /// A process reduced to what the link protocol touches; the models of
    /// other modules (`dist.rs`) use it too.
    pub(crate) struct Proc {
        pub(crate) pid: Pid,
        state: State,
        pub(crate) relations: RelationsLock,
        trap: bool,
        /// Trapped exit signals, in arrival order.
        pub(crate) inbox: Mutex<Vec<Exit>>,
        /// The references of the `Down`s it received, in arrival order.
        downs: Mutex<Vec<MonitorRef>>,
    }

    impl Node for Proc {
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
            self.trap
        }
        fn push_exit(&self, exit: Exit) {
            self.inbox.lock().push(exit);
        }
    }

    impl Proc {
        /// Local process `n`, trapping exits if `trap`.
        pub(crate) fn new(n: u64, trap: bool) -> Arc<Proc> {
            Arc::new(Proc {
                pid: Pid::local(n),
                state: State::new_scheduled(),
                relations: Mutex::new(None),
                trap,
                inbox: Mutex::new(Vec::new()),
                downs: Mutex::new(Vec::new()),
            })
        }

        fn exiting(&self) -> bool {
            self.state.is_exiting()
        }

        fn links(&self) -> Vec<Pid> {
            self.relations
                .lock()
                .as_ref()
                .map(|r| r.links.iter().copied().collect())
                .unwrap_or_default()
        }

        fn inbox_len(&self) -> usize {
            self.inbox.lock().len()
        }
    }

    /// The process table.
    #[derive(Default)]
    struct World {
        table: Mutex<Vec<Arc<Proc>>>,
    }

    impl World {
        fn spawn(&self, n: u64, trap: bool) -> Arc<Proc> {
            let process = Proc::new(n, trap);
            self.table.lock().push(process.clone());
            process
        }

        fn lookup(&self, pid: Pid) -> Option<Arc<Proc>> {
            self.table.lock().iter().find(|p| p.pid == pid).cloned()
        }

        /// Links two processes before the model's threads start.
        fn linked(&self, a: &Arc<Proc>, b: &Arc<Proc>) {
            assert_eq!(link_pair(&**a, Some(&**b)), LinkOutcome::Linked);
        }

        /// `signal::terminate`, as far as links go.
        fn terminate(&self, process: &Arc<Proc>, reason: ExitReason) {
            if let Some(dying) = begin_exit(&**process) {
                self.finish(process.clone(), reason, dying);
            }
        }

        /// `signal::terminate_all` and `finish_exit`, as far as links,
        /// monitors and `Down`s go: the link signals first, then the `Down`s.
        fn finish(&self, process: Arc<Proc>, reason: ExitReason, dying: Dying) {
            let mut pending = vec![(process, reason, dying)];
            while let Some((process, reason, dying)) = pending.pop() {
                self.table.lock().retain(|p| p.pid != process.pid);
                let Some(relations) = dying.relations else {
                    continue;
                };
                let (links, more) = relations.into_parts();
                let more = more.map(|more| *more).unwrap_or_default();
                for (monitor, target) in more.monitoring {
                    if let Some(target) = self.lookup(target) {
                        if let Some(r) = target.relations.lock().as_mut() {
                            forget_watcher(r, &monitor);
                        }
                    }
                }
                for linked in links {
                    if let Some(linked) = self.lookup(linked) {
                        match signal_locked(&*linked, process.pid, reason.clone(), true) {
                            Signalled::Ignored | Signalled::Trapped => {}
                            Signalled::Killed(death, dying) => {
                                pending.push((linked, death, dying));
                            }
                        }
                    }
                }
                for (monitor, watcher) in more.monitored_by {
                    if let Some(watcher) = self.lookup(watcher) {
                        let mut record = watcher.relations.lock();
                        let held = record
                            .as_mut()
                            .and_then(|r| r.more_if_any_mut())
                            .is_some_and(|m| m.monitoring.remove(&monitor).is_some());
                        if held {
                            watcher.downs.lock().push(monitor);
                        }
                    }
                }
            }
        }

        /// `signal::unlink`.
        fn unlink(&self, me: &Arc<Proc>, other: Pid) {
            unlink_side(&**me, other);
            if let Some(other) = self.lookup(other) {
                unlink_side(&*other, me.pid);
            }
        }

        /// `Shared::spawn_with` with `link`: the child's side first, then
        /// publish and the parent's side under the parent's lock.
        fn spawn_link(&self, parent: &Arc<Proc>, n: u64) -> Option<Arc<Proc>> {
            let child = Proc::new(n, false);
            child
                .relations
                .lock()
                .get_or_insert_with(Box::default)
                .links
                .insert(parent.pid);
            with_live_relations(&**parent, |r| {
                self.table.lock().push(child.clone());
                r.links.insert(child.pid);
            })
            .map(|()| child)
        }

        /// No live process is linked to a dead one, and links are symmetric
        /// between live processes.
        fn assert_links_consistent(&self, all: &[&Arc<Proc>]) {
            for p in all.iter().filter(|p| !p.exiting()) {
                for other in p.links() {
                    let other = all
                        .iter()
                        .find(|q| q.pid == other)
                        .expect("a linked process exists");
                    assert!(
                        !other.exiting(),
                        "live {} is linked to dead {}",
                        p.pid,
                        other.pid
                    );
                    assert!(other.links().contains(&p.pid), "a one-sided link");
                }
            }
        }
    }

    fn crash() -> ExitReason {
        ExitReason::error("crash")
    }

    /// `unlink` from A races B's crash: once `unlink` has returned to an A
    /// that is not exiting, B's crash never kills A, and (trapping) no `Exit`
    /// arrives after `unlink` returned.
    fn unlink_racing_a_crash(trap: bool) {
        let world = Arc::new(World::default());
        let a = world.spawn(1, trap);
        let b = world.spawn(2, false);
        world.linked(&a, &b);
        let crasher = {
            let (world, b) = (world.clone(), b.clone());
            thread::spawn(move || world.terminate(&b, crash()))
        };
        world.unlink(&a, b.pid);
        let alive = !a.exiting();
        let inbox = a.inbox_len();
        crasher.join().unwrap();
        if alive {
            assert!(
                !a.exiting(),
                "unlink returned to a live A, then B's crash killed it"
            );
        }
        assert_eq!(
            a.inbox_len(),
            inbox,
            "an Exit arrived after unlink returned"
        );
        assert!(b.exiting());
        world.assert_links_consistent(&[&a, &b]);
    }

    #[test]
    fn unlink_racing_a_crash_never_kills_the_caller_afterwards() {
        crate::loom::model("unlink vs crash, not trapping", None, || {
            unlink_racing_a_crash(false)
        });
    }

    #[test]
    fn unlink_racing_a_crash_never_delivers_an_exit_afterwards() {
        crate::loom::model("unlink vs crash, trapping", None, || {
            unlink_racing_a_crash(true)
        });
    }

    /// `link` from A to B races a kill of A, with either lock order: no live
    /// process ends linked to a dead one; if the link was made, A's death
    /// killed B.
    fn link_racing_a_kill_of_the_caller(caller: u64, other: u64) {
        let world = Arc::new(World::default());
        let a = world.spawn(caller, false);
        let b = world.spawn(other, false);
        let killer = {
            let (world, a) = (world.clone(), a.clone());
            thread::spawn(move || world.terminate(&a, ExitReason::Killed))
        };
        let outcome = link_pair(&*a, world.lookup(b.pid).as_deref());
        killer.join().unwrap();
        assert!(a.exiting());
        match outcome {
            LinkOutcome::Linked => assert!(b.exiting(), "linked first, yet A's death missed B"),
            LinkOutcome::CallerExiting => assert!(!b.exiting() && b.links().is_empty()),
            LinkOutcome::NoProc => unreachable!("B is alive throughout"),
        }
        world.assert_links_consistent(&[&a, &b]);
    }

    #[test]
    fn link_racing_a_kill_of_the_caller_leaves_no_one_linked_to_the_dead() {
        crate::loom::model("link vs kill of the caller (lower pid)", None, || {
            link_racing_a_kill_of_the_caller(1, 2)
        });
        crate::loom::model("link vs kill of the caller (higher pid)", None, || {
            link_racing_a_kill_of_the_caller(2, 1)
        });
    }

    /// `monitor` from A on B races a kill of A: B never ends monitored by
    /// a dead A.
    #[test]
    fn monitor_racing_a_kill_of_the_caller_leaves_nothing_on_the_target() {
        crate::loom::model("monitor vs kill of the caller", None, || {
            let world = Arc::new(World::default());
            let a = world.spawn(1, false);
            let b = world.spawn(2, false);
            let killer = {
                let (world, a) = (world.clone(), a.clone());
                thread::spawn(move || world.terminate(&a, ExitReason::Killed))
            };
            let reference = MonitorRef(Ref::local(1));
            let target = world.lookup(b.pid);
            let _ = with_both(&*a, target.as_deref(), |mine, theirs| {
                mine.more_mut().monitoring.insert(reference, b.pid);
                theirs.more_mut().monitored_by.insert(reference, a.pid);
            });
            killer.join().unwrap();
            assert!(a.exiting());
            let left = b
                .relations
                .lock()
                .as_ref()
                .and_then(|r| r.more())
                .is_some_and(|m| m.monitored_by.contains_key(&reference));
            assert!(!left, "B is monitored by the dead A");
        });
    }

    /// `spawn_link` by P races a kill of P: the child is never started, or
    /// it is linked and dies with P; never an orphan.
    #[test]
    fn spawn_link_racing_a_kill_of_the_parent_leaves_no_orphan() {
        crate::loom::model("spawn_link vs kill of the parent", None, || {
            let world = Arc::new(World::default());
            let parent = world.spawn(1, false);
            let killer = {
                let (world, parent) = (world.clone(), parent.clone());
                thread::spawn(move || world.terminate(&parent, ExitReason::Killed))
            };
            let child = world.spawn_link(&parent, 2);
            killer.join().unwrap();
            if let Some(child) = &child {
                assert!(child.exiting(), "an orphan: the child outlived its parent");
                assert!(world.lookup(child.pid).is_none());
            }
            assert!(world.table.lock().is_empty());
        });
    }

    /// Two linked processes link to each other from both sides at once (the
    /// lock order cannot deadlock), while a third process's death reaches
    /// one of them: one link per pair, symmetric, none to the dead.
    #[test]
    fn links_from_both_sides_and_a_death_do_not_deadlock() {
        crate::loom::model("link both ways vs a death", Some(3), || {
            let world = Arc::new(World::default());
            let a = world.spawn(1, true);
            let b = world.spawn(2, true);
            let c = world.spawn(3, false);
            world.linked(&a, &c);
            let from_b = {
                let (world, a, b) = (world.clone(), a.clone(), b.clone());
                thread::spawn(move || link_pair(&*b, world.lookup(a.pid).as_deref()))
            };
            let death = {
                let (world, c) = (world.clone(), c.clone());
                thread::spawn(move || world.terminate(&c, crash()))
            };
            let from_a = link_pair(&*a, world.lookup(b.pid).as_deref());
            assert_eq!(from_a, LinkOutcome::Linked);
            assert_eq!(from_b.join().unwrap(), LinkOutcome::Linked);
            death.join().unwrap();
            assert_eq!(a.links(), vec![b.pid]);
            assert_eq!(b.links(), vec![a.pid]);
            assert_eq!(a.inbox_len(), 1, "A traps: C's crash is one Exit message");
            world.assert_links_consistent(&[&a, &b, &c]);
        });
    }

    /// A is linked to B and monitors it; B crashes while A looks at its
    /// mailbox: a non-trapping A is dead before it can see the `Down` (and,
    /// dead, never gets it); a trapping A finds the `Exit` first.
    fn a_death_seen_by_a_linked_watcher(trap: bool) {
        let world = Arc::new(World::default());
        let a = world.spawn(1, trap);
        let b = world.spawn(2, false);
        world.linked(&a, &b);
        let reference = MonitorRef(Ref::local(1));
        with_both(&*a, Some(&*b), |mine, theirs| {
            mine.more_mut().monitoring.insert(reference, b.pid);
            theirs.more_mut().monitored_by.insert(reference, a.pid);
        })
        .expect("both alive");
        let crasher = {
            let (world, b) = (world.clone(), b.clone());
            thread::spawn(move || world.terminate(&b, crash()))
        };
        // A's receive: the `Down`, if there, then what else A knows.
        let saw_down = !a.downs.lock().is_empty();
        let dead = a.exiting();
        let exits = a.inbox_len();
        crasher.join().unwrap();
        if saw_down {
            if trap {
                assert_eq!(exits, 1, "the Down came before the Exit");
            } else {
                assert!(dead, "A saw the Down before the link killed it");
            }
        }
        if trap {
            assert!(!a.exiting());
            assert_eq!((a.inbox_len(), a.downs.lock().len()), (1, 1));
        } else {
            assert!(a.exiting());
            assert!(a.downs.lock().is_empty(), "a killed A got the Down");
        }
    }

    #[test]
    fn a_linked_watcher_is_killed_before_the_down_arrives() {
        crate::loom::model("link signal before Down, not trapping", None, || {
            a_death_seen_by_a_linked_watcher(false)
        });
    }

    #[test]
    fn a_trapping_linked_watcher_gets_the_exit_before_the_down() {
        crate::loom::model("link signal before Down, trapping", None, || {
            a_death_seen_by_a_linked_watcher(true)
        });
    }

    /// Two linked processes crash at once: each terminates exactly once,
    /// and each one's signal finds the other already exiting or kills it.
    #[test]
    fn two_linked_processes_dying_at_once_terminate_once_each() {
        crate::loom::model("two linked deaths at once", None, || {
            let world = Arc::new(World::default());
            let a = world.spawn(1, false);
            let b = world.spawn(2, false);
            world.linked(&a, &b);
            let other = {
                let (world, b) = (world.clone(), b.clone());
                thread::spawn(move || world.terminate(&b, crash()))
            };
            world.terminate(&a, crash());
            other.join().unwrap();
            assert!(a.exiting() && b.exiting());
            assert!(world.table.lock().is_empty());
            // A second termination finds each one dead.
            assert!(begin_exit(&*a).is_none() && begin_exit(&*b).is_none());
        });
    }
}
