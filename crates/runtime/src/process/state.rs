//! The scheduling state machine of a process.
//!
//! # State
//!
//! A process's scheduling state is one atomic byte, [`State`], made of
//! the bits below. Who may change which bit:
//!
//! * `SCHEDULED` is set by whoever wins the transition from idle to runnable
//!   (see [`State::transition_to_scheduled`]) and that party alone pushes the
//!   process into a run queue. It is cleared by the scheduler that pops it.
//! * `RUNNING` is set and cleared only by the scheduler that polls the process.
//!   While it is set no other thread touches the future.
//! * `NOTIFIED` is set by a wake-up that arrives while `RUNNING`; the scheduler
//!   then requeues the process after the poll instead of leaving it idle.
//! * `EXITING` is set once, by [`State::begin_exit`], and never cleared. From
//!   then on the process is dead for everyone else: it is out of the process
//!   table, its name is free, its links and monitors have fired, and the next
//!   scheduler to pick it up drops its future instead of polling it.
//!
//! A process is therefore in at most one run queue, and polled by at most one
//! thread at a time: the `SCHEDULED` bit is the ticket for the queue, and only
//! its holder can set `RUNNING`.
//!
//! # Safety
//!
//! This module contains no `unsafe`; the process's future sits behind a mutex
//! that only the holder of `RUNNING` (or the runtime at shutdown) ever locks.

use std::sync::atomic::{AtomicU8, Ordering};

use super::Status;

/// In a run queue; held by whoever must push or pop it.
pub(crate) const SCHEDULED: u8 = 1 << 0;
/// Being polled by a scheduler.
pub(crate) const RUNNING: u8 = 1 << 1;
/// Woken while running: requeue after the poll.
pub(crate) const NOTIFIED: u8 = 1 << 2;
/// Dead for everyone else; the future is dropped at the next opportunity.
pub(crate) const EXITING: u8 = 1 << 3;

/// The outcome of [`State::transition_to_scheduled`].
#[must_use]
pub(crate) enum TransitionToScheduled {
    /// The caller now holds the `SCHEDULED` ticket and must queue the process.
    Queue,
    /// Already queued, or running and now marked `NOTIFIED`; nothing to do.
    Nothing,
}

/// The outcome of [`State::transition_to_idle`], after a poll returned `Pending`.
#[must_use]
pub(crate) enum TransitionToIdle {
    /// Parked until something wakes it.
    Idle,
    /// Woken during the poll: the scheduler must queue it again.
    Requeue,
    /// Exiting: the scheduler must drop its future.
    Exiting,
}

/// The atomic state byte; see the module docs.
pub(crate) struct State(AtomicU8);

impl State {
    /// A new process is born `SCHEDULED`: its spawner queues it at once.
    pub(crate) fn new_scheduled() -> State {
        State(AtomicU8::new(SCHEDULED))
    }

    /// Whether the process has begun exiting (is dead for everyone else).
    pub(crate) fn is_exiting(&self) -> bool {
        self.0.load(Ordering::Acquire) & EXITING != 0
    }

    pub(crate) fn status(&self) -> Status {
        let state = self.0.load(Ordering::Acquire);
        if state & EXITING != 0 {
            Status::Exiting
        } else if state & RUNNING != 0 {
            Status::Running
        } else if state & SCHEDULED != 0 {
            Status::Runnable
        } else {
            Status::Waiting
        }
    }

    /// A wake-up: idle → scheduled, or mark a running process notified.
    pub(crate) fn transition_to_scheduled(&self) -> TransitionToScheduled {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let next = if current & (SCHEDULED | NOTIFIED) != 0 {
                return TransitionToScheduled::Nothing;
            } else if current & RUNNING != 0 {
                current | NOTIFIED
            } else {
                current | SCHEDULED
            };
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next & RUNNING != 0 => return TransitionToScheduled::Nothing,
                Ok(_) => return TransitionToScheduled::Queue,
                Err(actual) => current = actual,
            }
        }
    }

    /// Popped from a run queue: scheduled → running. Returns false if the
    /// process is exiting, in which case it must be dropped rather than polled.
    pub(crate) fn transition_to_running(&self) -> bool {
        let prev = self.0.fetch_xor(SCHEDULED | RUNNING, Ordering::AcqRel);
        debug_assert!(prev & SCHEDULED != 0 && prev & RUNNING == 0);
        prev & EXITING == 0
    }

    /// A poll returned `Pending`: running → idle, or requeue if notified.
    pub(crate) fn transition_to_idle(&self) -> TransitionToIdle {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            if current & EXITING != 0 {
                return TransitionToIdle::Exiting;
            }
            let (next, outcome) = if current & NOTIFIED != 0 {
                (
                    (current & !(RUNNING | NOTIFIED)) | SCHEDULED,
                    TransitionToIdle::Requeue,
                )
            } else {
                (current & !RUNNING, TransitionToIdle::Idle)
            };
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return outcome,
                Err(actual) => current = actual,
            }
        }
    }

    /// Marks the process exiting. Returns false if it already was, so that
    /// exactly one caller performs the exit.
    pub(crate) fn begin_exit(&self) -> bool {
        self.0.fetch_or(EXITING, Ordering::AcqRel) & EXITING == 0
    }
}
