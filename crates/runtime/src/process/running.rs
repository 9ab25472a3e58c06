//! The holder of a process's `RUNNING` bit, [`Running`], and the one way a
//! process ends, [`Running::exit`].
//!
//! # The guard
//!
//! A process's body and its mailbox's saved queue are cells without a lock:
//! only the holder of `RUNNING` touches them ([`state`](super::state), "Who
//! drops the body"). A [`Running`] is that holder: it is made only from the
//! [`Claim`] of a transition that set `RUNNING` ([`Running::pick`] for a
//! process popped from a run queue, [`Running::claim_exiting`] for an exiting
//! process nobody holds), and it is the only way to poll the body, to drop
//! it, or to reach the saved queue ([`mailbox::Owner`]). This module holds
//! the `unsafe` that this exclusive access makes sound; the callers (the
//! worker's poll loop, the killer in `crate::signal`, the runtime's teardown)
//! use the guard's safe methods.
//!
//! The guard owns the process's `Arc`. For the length of a poll the thread's
//! context (`crate::context::enter`) points at it, so that the process's
//! own receives reach the saved queue through it, with no reference count
//! or atomic traffic on the hot path. After a `Pending` poll it gives `RUNNING`
//! back ([`Running::park`]); once the process is over it is consumed by
//! [`Running::exit`], and `RUNNING` is never given back (nobody may touch
//! the body after that).
//!
//! # The queue reference
//!
//! A run queue holds a process by an `Arc`: one reference count. That count
//! does not come and go with each wake-up; it stays with the process from
//! its spawn to its exit, held by whoever holds the process's ticket: the
//! run queue (`SCHEDULED`), the `Running` guard (`RUNNING`), and, while the
//! process is parked (neither bit), the process itself. [`Running::park`]
//! forgets the guard's `Arc` when the process goes idle instead of dropping
//! it, and the transitions out of idle take it back with `Arc::from_raw`:
//! a wake-up's [`schedule`], and [`Running::claim_exiting`]. Exactly one
//! party wins each of those transitions, so the count is taken back once
//! per park; it is let go at the end of [`Running::exit`], after which
//! `RUNNING` is never cleared, so the process never parks again. A wake-up
//! thus changes no reference count (it cost two read-modify-writes a
//! message: the clone to queue the process, the drop after its poll). The
//! ownership is model-checked in `process::state`'s loom models, beside the
//! transitions.

use std::cell::Cell;
use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::task::{Context, Poll};

use super::state::{
    Claim, TransitionToDropping, TransitionToIdle, TransitionToRunning, TransitionToScheduled,
};
use super::{BoxFuture, Process};
use crate::alloc;
use crate::context;
use crate::mailbox::{self, Envelope, Owner as _, Saved};
use crate::reason::ExitReason;
use crate::scheduler;
use crate::signal;

/// The body of a process, in a cell that only a [`Running`] touches.
pub(crate) struct Body(UnsafeCell<Option<BoxFuture>>);

// SAFETY: the cell is only reached through a `Running` (the methods below
// are private to this module), of which there is at most one per process at
// a time; a `BoxFuture` is `Send`.
unsafe impl Sync for Body {}

impl Body {
    pub(super) fn new(future: BoxFuture) -> Body {
        Body(UnsafeCell::new(Some(future)))
    }
}

/// The process a process sent to last, and whether it keeps it (see
/// `crate::message`, "Kept targets"): owner-only, like the body, in a cell
/// that only a [`Running`] touches.
#[derive(Default)]
pub(crate) struct LastSent(UnsafeCell<Kept>);

#[derive(Default)]
struct Kept {
    /// The pid key of the last local send that found its process (0: none
    /// yet; no process has key 0, `Shared::next_pid` starts at 1).
    key: u64,
    /// That process, once sent to twice in a row.
    process: Option<Arc<Process>>,
}

// SAFETY: the cell is only reached through a `Running` (the methods below),
// of which there is at most one per process at a time; an `Arc<Process>` is
// `Send`.
unsafe impl Sync for LastSent {}

/// Proof that this thread holds a process's `RUNNING` bit, with the process:
/// the only way to its body and its mailbox's saved queue (module docs).
pub(crate) struct Running {
    process: Arc<Process>,
    /// Kept to the end: `RUNNING` is given back only by `park`.
    claim: Claim,
    /// Set while [`Running::poll`] runs, so that a poll reached again from
    /// inside the body (through the context) cannot alias the body.
    polling: Cell<bool>,
}

/// A process popped from a run queue ([`Running::pick`]).
pub(crate) enum Picked {
    /// Live: poll it.
    Poll(Running),
    /// Exiting: end it with [`End::Killed`] instead.
    Exiting(Running),
}

/// After a `Pending` poll ([`Running::park`]).
pub(crate) enum Parked {
    /// Waiting for a wake-up; `RUNNING` given back.
    Idle,
    /// Woken during the poll: queue it again; `RUNNING` given back.
    Requeue(Arc<Process>),
    /// Killed during the poll: end it with [`End::Killed`].
    Exiting(Running),
}

/// How a process ends ([`Running::exit`]).
pub(crate) enum End {
    /// Its body returned or panicked on this thread, or its poll went over
    /// the memory limit: it terminates with this reason (links, monitors,
    /// name and timers via `signal::terminate_finished`) after its body is
    /// dropped, unless a kill terminated it first (then that reason stands).
    Finished(ExitReason),
    /// It was terminated already, by a kill (`signal::finish_exit`) or by
    /// the runtime's teardown: only its body and saved messages are left.
    Killed,
}

impl Running {
    fn new(process: Arc<Process>, claim: Claim) -> Running {
        Running {
            process,
            claim,
            polling: Cell::new(false),
        }
    }

    /// Takes `RUNNING` for a process popped from a run queue with its
    /// `SCHEDULED` ticket (`State::transition_to_running`).
    pub(crate) fn pick(process: Arc<Process>) -> Picked {
        match process.state.transition_to_running() {
            TransitionToRunning::Poll(claim) => Picked::Poll(Running::new(process, claim)),
            TransitionToRunning::Exiting(claim) => Picked::Exiting(Running::new(process, claim)),
        }
    }

    /// Takes `RUNNING` for an exiting process that no thread and no queue
    /// holds (`State::transition_to_dropping`); `None` if one does: that
    /// party ends it.
    pub(crate) fn claim_exiting(process: &Arc<Process>) -> Option<Running> {
        match process.state.transition_to_dropping() {
            TransitionToDropping::Drop(claim) => {
                // SAFETY: the process was parked (the transition succeeds
                // only then), and this caller won it: the queue reference
                // `park` left in the process is this caller's alone (module
                // docs, "The queue reference").
                let process = unsafe { Arc::from_raw(Arc::as_ptr(process)) };
                Some(Running::new(process, claim))
            }
            TransitionToDropping::Running | TransitionToDropping::Scheduled => None,
        }
    }

    /// The process.
    pub(crate) fn process(&self) -> &Arc<Process> {
        &self.process
    }

    /// Polls the body once, charging what this thread allocates meanwhile
    /// to the process's memory account if it has a limit; a panic of the
    /// body is caught and returned. `Ok(None)` if the body was dropped
    /// already (it never is while the guard lives, but it costs nothing to
    /// answer) or if this poll is reached again from inside the body.
    pub(crate) fn poll(
        &self,
        cx: &mut Context<'_>,
    ) -> std::thread::Result<Option<Poll<ExitReason>>> {
        if self.polling.replace(true) {
            return Ok(None);
        }
        // SAFETY: this thread holds the process's `Arc` (in `self`) for the
        // whole poll, and the account is taken off the thread right after.
        let previous = unsafe { alloc::enter_account(self.process.limited_memory()) };
        let polled = panic::catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `self` holds `RUNNING`, so no other thread touches the
            // cell, and `polling` keeps this thread from making a second
            // reference while this one lives (for the poll only).
            let body = unsafe { &mut *self.process.body.0.get() };
            body.as_mut().map(|future| future.as_mut().poll(cx))
        }));
        // SAFETY: `previous` is what was there before (null on a worker).
        unsafe { alloc::restore_account(previous) };
        self.polling.set(false);
        polled
    }

    /// Delivers `message` to the local process `to` (a pid key) if this
    /// process keeps it (`crate::message`, "Kept targets"); gives the
    /// message back otherwise, for the table's path.
    pub(crate) fn send_to_kept(&self, to: u64, message: Envelope) -> Result<(), Envelope> {
        // SAFETY: `self` holds `RUNNING`, so this thread alone touches the
        // cell; the reference is not used past the push, loads and wake-up
        // below, which run no user code: what they let go (a target found
        // exiting, messages taken back) is dropped after its last use.
        let kept = unsafe { &mut *self.process.last_sent.0.get() };
        if kept.key != to {
            return Err(message);
        }
        let Some(target) = &kept.process else {
            return Err(message);
        };
        if target.is_exiting() {
            let gone = kept.process.take();
            scheduler::drop_contained(gone);
            return Err(message);
        }
        let leftovers = signal::deliver_kept(target, message);
        scheduler::drop_contained(leftovers);
        Ok(())
    }

    /// Notes a local send to `to` (a pid key), found in the table as
    /// `target`: a second send in a row keeps it. Returns the process let
    /// go by a send elsewhere, for the caller to drop outside the table's
    /// lock.
    pub(crate) fn note_sent(&self, to: u64, target: &Arc<Process>) -> Option<Arc<Process>> {
        // SAFETY: as in `send_to_kept`; cloning an `Arc` runs no user code.
        let kept = unsafe { &mut *self.process.last_sent.0.get() };
        if kept.key == to {
            if kept.process.is_none() {
                kept.process = Some(target.clone());
            }
            return None;
        }
        kept.key = to;
        kept.process.take()
    }

    /// A poll returned `Pending`: gives `RUNNING` back, unless the process
    /// was killed meanwhile (`State::transition_to_idle`).
    pub(crate) fn park(self) -> Parked {
        let Running { process, claim, .. } = self;
        match process.state.transition_to_idle(claim) {
            TransitionToIdle::Idle => {
                // The queue reference stays with the parked process, for
                // whoever takes it out of idle (module docs). Nothing here
                // touches the process after the transition.
                std::mem::forget(process);
                Parked::Idle
            }
            TransitionToIdle::Requeue => Parked::Requeue(process),
            TransitionToIdle::Exiting(claim) => Parked::Exiting(Running::new(process, claim)),
        }
    }

    /// The one way a process ends, whatever ended it (its body returned or
    /// panicked, a kill, its memory limit, the runtime's teardown): drops
    /// the body and then the saved messages, in the process's own context
    /// (a panicking destructor is contained), forgets it as a zombie (a
    /// process killed inside a poll stays visible until now), and for
    /// [`End::Finished`] terminates it, which frees its name and fires its
    /// links, monitors and timers (`crate::signal`). `RUNNING` is never given
    /// back: nobody polls or drops the body again (`process::state`, "Who
    /// drops the body").
    ///
    /// The caller may be another process's poll (a kill): its slice is kept
    /// and it is not credited with the frees of the dying process.
    pub(crate) fn exit(self, end: End) {
        debug_assert!(self.process.state.is_running());
        debug_assert!(!self.polling.get(), "ended from inside its own poll");
        // SAFETY: `self` holds `RUNNING` and is not polling (`self` is owned
        // here, so no `poll` is running); the reference does not outlive
        // this statement.
        let body = unsafe { (*self.process.body.0.get()).take() };
        // SAFETY: as above, for the kept target: let go, so that two
        // processes that kept each other do not keep each other alive.
        let kept = unsafe { (*self.process.last_sent.0.get()).process.take() };
        let saved = self.take_all_saved();
        let pid = self.process.pid;
        // SAFETY: null needs nothing alive; the caller's account is put back
        // below, while the caller still holds its process.
        let account = unsafe { alloc::enter_account(None) };
        // The context points at the guard for the drop (no reference count
        // traffic), and back at the caller's process after.
        context::enter(&self, move || {
            if panic::catch_unwind(AssertUnwindSafe(move || drop(body))).is_err() {
                tracing::warn!(pid = %pid, "a destructor panicked while dropping a process body");
            }
            if panic::catch_unwind(AssertUnwindSafe(move || drop((saved, kept)))).is_err() {
                tracing::warn!(pid = %pid, "a message destructor panicked while dropping a mailbox");
            }
        });
        // SAFETY: the account the caller had installed, whose process the
        // caller still holds (see `enter_account`).
        unsafe { alloc::restore_account(account) };
        let process = &self.process;
        process.rt.forget_zombie(process);
        if let End::Finished(reason) = end {
            signal::terminate_finished(process, reason);
        }
        // Dropped last, still holding `RUNNING`, which is never cleared.
        drop(self);
    }
}

// SAFETY: a mailbox's `inbox` is lock-free (its own protocol,
// `mailbox/inbox.rs`) and `saved_len` is atomic;
// `saved` is only touched through an `Owner`: outside the tests, the
// `Running` guard below, of which there is at most one per process at a
// time (module docs). Envelopes are `Send`.
unsafe impl Sync for crate::mailbox::Mailbox {}

impl mailbox::Owner for Running {
    fn mailbox(&self) -> &crate::mailbox::Mailbox {
        &self.process.mailbox
    }

    fn take_saved(&self) -> Saved {
        self.process.mailbox.saved_cell().with_mut(|cell| {
            // SAFETY: `self` holds `RUNNING`, so this thread alone touches
            // the cell; the reference does not outlive this statement and no
            // user code runs while it exists (`Saved::default` is ours).
            unsafe { std::mem::take(&mut *cell) }
        })
    }

    fn replace_saved(&self, saved: Saved) -> Saved {
        self.process.mailbox.saved_cell().with_mut(|cell| {
            // SAFETY: as in `take_saved`.
            unsafe { std::mem::replace(&mut *cell, saved) }
        })
    }
}

/// Moves `process` from idle to scheduled if it was idle, and gives the
/// caller its queue reference to push into a run queue (module docs, "The
/// queue reference"); `None` if it was already queued, running (then it is
/// marked `NOTIFIED` and requeued after its poll) or exiting. `after_push`:
/// the wake-up follows a push into its mailbox
/// (`State::transition_to_scheduled_after_push`).
pub(crate) fn schedule(process: &Arc<Process>, after_push: bool) -> Option<Arc<Process>> {
    let won = if after_push {
        process.state.transition_to_scheduled_after_push()
    } else {
        process.state.transition_to_scheduled()
    };
    match won {
        // SAFETY: the process was parked, and this caller won its move out
        // of idle: the queue reference `Running::park` left in it is this
        // caller's alone.
        TransitionToScheduled::Queue => Some(unsafe { Arc::from_raw(Arc::as_ptr(process)) }),
        TransitionToScheduled::Nothing => None,
    }
}

/// The runtime's teardown of one process it found in its table or in a run
/// queue (`Runtime::drop`, `Scheduler::drop_queued`), marked exiting by the
/// caller: no signal goes out; its relations and unread messages are
/// dropped, and its body too if nobody else holds `RUNNING` (`running`, if
/// the caller popped it with its ticket; else [`Running::claim_exiting`]).
pub(crate) fn tear_down(process: &Arc<Process>, running: Option<Running>) {
    process.relations.lock().take();
    scheduler::drop_contained(process.mailbox.drain_inbox());
    if let Some(running) = running.or_else(|| Running::claim_exiting(process)) {
        running.exit(End::Killed);
    }
}
