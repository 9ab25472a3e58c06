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
//! * `RUNNING` is set by a transition that hands its caller a [`Claim`]
//!   (`process::Running` holds it), and cleared only by giving that claim
//!   back to [`State::transition_to_idle`]. While it is set no other thread
//!   touches the future.
//! * `NOTIFIED` is set by a wake-up that arrives while `RUNNING`; the scheduler
//!   then requeues the process after the poll instead of leaving it idle.
//! * `EXITING` is set once, by [`State::begin_exit`], and never cleared. From
//!   then on the process is dead for everyone else: it is out of the process
//!   table, its name is free, its links and monitors have fired, and the next
//!   scheduler to pick it up drops its future instead of polling it.
//!
//! A process is therefore in at most one run queue, and polled by at most one
//! thread at a time: the `SCHEDULED` bit is the ticket for the queue, and only
//! its holder can set `RUNNING` (or, for an exiting process nobody holds, the
//! runtime's teardown: [`State::transition_to_dropping`]).
//!
//! # Who drops the body
//!
//! Exactly one party drops a process's body (its future and its saved
//! messages): the one holding `RUNNING` when it learns the process is over.
//! `RUNNING` is never cleared once `EXITING` is set, so nobody can take it
//! after that party, and there is only ever one holder. The transitions that
//! set `RUNNING` hand their caller a [`Claim`], which `process::Running`
//! wraps with the process; the body and the mailbox's saved queue are
//! reachable only through that guard, and every party below ends the
//! process through the same call, `Running::exit`, which drops the body and
//! the saved messages in the process's context and forgets it as a zombie.
//! The cases:
//!
//! * the poll returned `Ready` or panicked, or went over its memory limit:
//!   the polling thread ends it (`End::Finished`: its links, monitors and
//!   name are handled after the body is dropped);
//! * the poll returned `Pending` and `transition_to_idle` found `EXITING`
//!   (killed during the poll, possibly by the runtime's teardown while the
//!   thread was stuck in native code): the claim comes back
//!   (`TransitionToIdle::Exiting`) and the polling thread ends it;
//! * popped from a queue with `EXITING` set: `transition_to_running` still
//!   sets `RUNNING` and answers `Exiting` with the claim, and the popper
//!   ends it. The teardown drains the run queues this way too
//!   (`Scheduler::drop_queued`, `process::tear_down`), and so does every
//!   worker as it leaves after the shutdown (a worker still inside a poll,
//!   or holding processes it took from a queue, when the teardown drained
//!   them may queue them again afterwards);
//! * neither `RUNNING` nor `SCHEDULED` set (parked) when the process is
//!   killed, or when the runtime is torn down: `transition_to_dropping` sets
//!   `RUNNING` by compare-and-swap, answering `Drop` with the claim
//!   (`Running::claim_exiting`), and the killer (at the end of
//!   `signal::finish_exit`, on its own thread) or the teardown
//!   (`process::tear_down`, from `Runtime::drop`) ends it. That swap fails if
//!   a wake-up set `SCHEDULED` first (then its queue's popper ends it; the
//!   killer wakes the process, which does nothing more) or if a poll holds
//!   `RUNNING` (the killer wakes it; the poll's end sees `EXITING`); a
//!   wake-up after it only sets `NOTIFIED`.
//!
//! Since a `Claim` cannot be made outside this module, code that would
//! poll or drop a body without holding `RUNNING` does not compile; the loom
//! models below go through the same kind of guard, and their one seeded
//! bug (a teardown dropping by `status()`) has to forge a claim.
//!
//! `State::status` answers `Exiting` before it looks at `RUNNING`: it is for
//! introspection only, never for deciding whether the body may be touched.
//!
//! # Ordering
//!
//! Every transition that writes is an acquire-release read-modify-write, so
//! whatever one holder of `RUNNING` did happens-before the next poll, on
//! whichever thread: this is what lets the mailbox's owner-only queue do
//! without a lock. A wake-up that finds the process already `SCHEDULED` or
//! `NOTIFIED` writes nothing and so orders nothing: the reason for a wake-up
//! must be published through something the next poll synchronizes with by
//! itself (the inbox's exchanges, a channel), never through a relaxed flag.
//!
//! # Checking
//!
//! The tests run this protocol, on a model of a process and a run queue, on
//! real threads (`stress`) and under the loom model checker (`loom_models`;
//! the command is in `crate::loom`).
//!
//! # Safety
//!
//! Outside its tests this module contains no `unsafe`. What the protocol
//! makes sound is in `process::running`: the process's body and the
//! mailbox's saved queue are cells that only a `Running` (made from a
//! [`Claim`]) touches. The tests model the body as such a cell behind the
//! same kind of guard, so loom checks every access to it for a race.

use crate::loom::sync::atomic::{AtomicU8, Ordering};

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

/// Proof that the caller holds a process's `RUNNING` bit: made only by the
/// transitions that set it ([`State::transition_to_running`],
/// [`State::transition_to_dropping`]) and given up only to
/// [`State::transition_to_idle`], which clears it. Neither `Clone` nor
/// `Copy`, and nothing outside this module can make one, so there is one
/// claim per holding of `RUNNING`. `process::Running` wraps it with the
/// process: whatever touches the body or the mailbox's saved queue needs
/// one (module docs, "Who drops the body").
#[must_use = "RUNNING is held until the claim is given back or the body dropped"]
#[derive(Debug)]
pub(crate) struct Claim(());

/// The outcome of [`State::transition_to_running`], for a process popped from
/// a run queue: either way the caller now holds `RUNNING`.
#[must_use]
#[derive(Debug)]
pub(crate) enum TransitionToRunning {
    /// Live: poll it.
    Poll(Claim),
    /// Exiting: drop its body instead.
    Exiting(Claim),
}

/// The outcome of [`State::transition_to_idle`], after a poll returned `Pending`.
#[must_use]
pub(crate) enum TransitionToIdle {
    /// Parked until something wakes it.
    Idle,
    /// Woken during the poll: the scheduler must queue it again.
    Requeue,
    /// Exiting: the scheduler still holds `RUNNING` and must drop its future.
    Exiting(Claim),
}

/// The outcome of [`State::transition_to_dropping`].
#[must_use]
#[derive(Debug)]
pub(crate) enum TransitionToDropping {
    /// The caller now holds `RUNNING` and must drop the body.
    Drop(Claim),
    /// A thread is inside a poll (or dropping the body): it drops it.
    Running,
    /// The process is in a run queue, or popped and about to run: whoever
    /// holds the `SCHEDULED` ticket takes `RUNNING`, sees `EXITING` and drops
    /// it.
    Scheduled,
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

    /// Whether a thread holds `RUNNING`: it is polling the process, or
    /// dropping its body. Unlike [`State::status`], which answers `Exiting`
    /// first, this reads the bit itself, so it is what decides whether the
    /// body may be touched.
    pub(crate) fn is_running(&self) -> bool {
        self.0.load(Ordering::Acquire) & RUNNING != 0
    }

    /// What introspection reports; `Exiting` hides `RUNNING` (use
    /// [`State::is_running`] to decide anything about the body).
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

    /// A wake-up with nothing to publish (a timer, I/O readiness, a
    /// resume, a yield): idle → scheduled, or mark a running process
    /// notified; a process already scheduled or notified is left as it is,
    /// with a load only.
    pub(crate) fn transition_to_scheduled(&self) -> TransitionToScheduled {
        self.schedule(false)
    }

    /// The wake-up that follows a push into the process's mailbox: as
    /// [`State::transition_to_scheduled`], but always a read-modify-write,
    /// even when the process is already scheduled or notified (it then
    /// writes the value it read). The push must happen before the poll that
    /// follows, whose transition reads this write or a later one: the
    /// mailbox's lock-free look at an empty inbox (`mailbox.rs`) has no
    /// lock to order them, and with a plain load that poll could miss the
    /// message and park for good (x86 may order the pusher's store after
    /// its load; the mailbox's loom model found it).
    pub(crate) fn transition_to_scheduled_after_push(&self) -> TransitionToScheduled {
        self.schedule(true)
    }

    fn schedule(&self, publish: bool) -> TransitionToScheduled {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let next = if current & (SCHEDULED | NOTIFIED) != 0 {
                if !publish {
                    return TransitionToScheduled::Nothing;
                }
                current
            } else if current & RUNNING != 0 {
                current | NOTIFIED
            } else {
                current | SCHEDULED
            };
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next == current || next & RUNNING != 0 => {
                    return TransitionToScheduled::Nothing
                }
                Ok(_) => return TransitionToScheduled::Queue,
                Err(actual) => current = actual,
            }
        }
    }

    /// Popped from a run queue: scheduled → running. The caller now holds
    /// `RUNNING` (the [`Claim`] in the answer); `Exiting` if the process is
    /// exiting, in which case it must be dropped rather than polled.
    pub(crate) fn transition_to_running(&self) -> TransitionToRunning {
        let prev = self.0.fetch_xor(SCHEDULED | RUNNING, Ordering::AcqRel);
        crate::loom::protocol_assert!(prev & SCHEDULED != 0 && prev & RUNNING == 0);
        if prev & EXITING == 0 {
            TransitionToRunning::Poll(Claim(()))
        } else {
            TransitionToRunning::Exiting(Claim(()))
        }
    }

    /// A poll returned `Pending`: running → idle, or requeue if notified.
    /// Gives `RUNNING` up, unless the process is exiting: then the claim
    /// comes back, to drop the body.
    pub(crate) fn transition_to_idle(&self, claim: Claim) -> TransitionToIdle {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            if current & EXITING != 0 {
                return TransitionToIdle::Exiting(claim);
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

    /// Takes `RUNNING` for an exiting process that no thread holds and no
    /// queue holds (neither `RUNNING` nor `SCHEDULED`), so that the caller
    /// may drop its body: its killer, or the runtime's teardown. Returns
    /// `Running` or `Scheduled` if someone holds or will hold `RUNNING`;
    /// that party drops the body (module docs, "Who drops the body").
    pub(crate) fn transition_to_dropping(&self) -> TransitionToDropping {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            crate::loom::protocol_assert!(current & EXITING != 0, "dropping a live process");
            if current & RUNNING != 0 {
                return TransitionToDropping::Running;
            }
            if current & SCHEDULED != 0 {
                return TransitionToDropping::Scheduled;
            }
            match self.0.compare_exchange_weak(
                current,
                current | RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return TransitionToDropping::Drop(Claim(())),
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

/// A process reduced to what its state byte guards, and a run queue that
/// checks the protocol's invariants as they go. Built on `crate::loom`, so the
/// stress test runs it on `std` and the loom models on loom.
#[cfg(test)]
mod harness {
    use std::collections::VecDeque;

    #[cfg(feature = "loom-models")]
    use ::loom::sync::Arc;
    #[cfg(not(feature = "loom-models"))]
    use std::sync::Arc;

    // The checking counters are `std`'s atomics even under loom: invisible
    // to the model checker, they add no interleavings and no happens-before
    // edges, so they cannot hide a missing one in `State`; loom runs one
    // thread at a time, so they count exactly.
    use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
    use std::sync::atomic::{AtomicU8, AtomicUsize};

    use super::{
        Claim, State, TransitionToDropping, TransitionToIdle, TransitionToRunning,
        TransitionToScheduled,
    };
    use crate::loom::cell::UnsafeCell;
    use crate::loom::sync::Mutex;

    pub(super) struct Proc {
        state: State,
        /// The mailbox, reduced to the number of messages sent, behind its
        /// lock as in `Mailbox` (a wake-up's reason must be published through
        /// something the poll synchronizes with: see the module docs).
        inbox: Mutex<usize>,
        /// The body: touched only by the holder of `RUNNING` (loom checks
        /// every access for a race); `None` once dropped.
        body: UnsafeCell<Option<Body>>,
        /// `SCHEDULED` tickets out: queued, or popped and not yet running.
        tickets: AtomicUsize,
        /// Threads inside the body (polling or dropping it) right now.
        inside: AtomicUsize,
        /// Callers that won `begin_exit`.
        exits: AtomicUsize,
        /// Times the body was dropped.
        drops: AtomicUsize,
        /// Who holds the process's queue reference (`process::running`,
        /// "The queue reference"): the ticket's holder ([`TAKEN`]), the
        /// parked process itself ([`PARKED`]), or nobody once the exit let
        /// it go ([`LET_GO`]).
        queue_ref: AtomicU8,
    }

    /// [`Proc::queue_ref`]: parked in the idle process.
    const PARKED: u8 = 0;
    /// [`Proc::queue_ref`]: held by a queue or a `RUNNING` holder.
    const TAKEN: u8 = 1;
    /// [`Proc::queue_ref`]: let go at the exit.
    const LET_GO: u8 = 2;

    /// Makes a failed claim of a parked process take its queue reference
    /// all the same: the seeded bug of the queue reference's model.
    #[cfg(feature = "loom-models")]
    pub(super) static SEEDED_TAKE_ON_A_FAILED_CLAIM: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    // SAFETY: `body` is the only field that is not `Sync`; it is touched only
    // by the thread that holds `RUNNING`, or after every other one is joined.
    unsafe impl Sync for Proc {}

    struct Body {
        /// Messages seen by the last poll.
        seen: usize,
        polls: usize,
        /// The poll that returns `Ready`, if any.
        finish_at: Option<usize>,
    }

    /// What happened, for the stress test's report.
    #[derive(Default)]
    pub(super) struct Seen {
        pub(super) polls: AtomicUsize,
        pub(super) requeued: AtomicUsize,
        pub(super) exiting_after_poll: AtomicUsize,
        pub(super) dropped_unpolled: AtomicUsize,
        pub(super) dropped_by_killer: AtomicUsize,
        pub(super) dropped_by_teardown: AtomicUsize,
    }

    #[derive(Default)]
    pub(super) struct RunQueue {
        queue: Mutex<VecDeque<Arc<Proc>>>,
        /// How long a poll takes, in spins: widens the race windows on real
        /// threads (loom needs none).
        pub(super) poll_spins: usize,
        pub(super) seen: Seen,
    }

    impl RunQueue {
        /// A new process, queued; its poll number `finish_at` returns `Ready`.
        pub(super) fn spawn(&self, finish_at: Option<usize>) -> Arc<Proc> {
            let process = Arc::new(Proc {
                state: State::new_scheduled(),
                inbox: Mutex::new(0),
                body: UnsafeCell::new(Some(Body {
                    seen: 0,
                    polls: 0,
                    finish_at,
                })),
                tickets: AtomicUsize::new(0),
                inside: AtomicUsize::new(0),
                exits: AtomicUsize::new(0),
                drops: AtomicUsize::new(0),
                queue_ref: AtomicU8::new(TAKEN),
            });
            self.push(process.clone());
            process
        }

        fn push(&self, process: Arc<Proc>) {
            let before = process.tickets.fetch_add(1, Relaxed);
            assert_eq!(before, 0, "a process was queued twice");
            self.queue.lock().push_back(process);
        }

        /// `scheduler::wake`.
        pub(super) fn wake(&self, process: &Arc<Proc>) {
            if let TransitionToScheduled::Queue = process.state.transition_to_scheduled() {
                process.take_queue_ref();
                self.push(process.clone());
            }
        }

        /// `message::send`: publish, then wake.
        pub(super) fn send(&self, process: &Arc<Proc>) {
            *process.inbox.lock() += 1;
            self.wake(process);
        }

        /// `signal::terminate`: the exit, then the body is dropped at once
        /// if the process is parked, else whoever holds or takes `RUNNING`
        /// drops it (woken, as `signal::finish_exit` does).
        pub(super) fn terminate(&self, process: &Arc<Proc>) {
            if process.state.begin_exit() {
                process.exits.fetch_add(1, Release);
                match process.state.transition_to_dropping() {
                    TransitionToDropping::Drop(claim) => {
                        process.take_queue_ref();
                        self.seen.dropped_by_killer.fetch_add(1, Relaxed);
                        Held::new(process.clone(), claim).drop_body();
                    }
                    TransitionToDropping::Running | TransitionToDropping::Scheduled => {
                        #[cfg(feature = "loom-models")]
                        if SEEDED_TAKE_ON_A_FAILED_CLAIM.load(Relaxed) {
                            process.take_queue_ref();
                        }
                        self.wake(process);
                    }
                }
            }
        }

        /// Pops one process and runs it as `scheduler::run` does; false if
        /// the queue was empty.
        pub(super) fn run_one(&self) -> bool {
            let Some(process) = self.queue.lock().pop_front() else {
                return false;
            };
            let exited = process.has_exited();
            let transition = process.state.transition_to_running();
            assert_eq!(process.tickets.fetch_sub(1, Relaxed), 1);
            let mut held = match transition {
                TransitionToRunning::Poll(claim) => {
                    assert!(!exited, "polled after its exit");
                    Held::new(process, claim)
                }
                TransitionToRunning::Exiting(claim) => {
                    self.seen.dropped_unpolled.fetch_add(1, Relaxed);
                    Held::new(process, claim).drop_body();
                    return true;
                }
            };
            self.seen.polls.fetch_add(1, Relaxed);
            if held.poll(self.poll_spins) {
                let process = held.process.clone();
                held.drop_body();
                self.terminate(&process);
                return true;
            }
            let exited = held.process.has_exited();
            let process = held.process.clone();
            match held.park() {
                TransitionToIdle::Idle | TransitionToIdle::Requeue if exited => {
                    panic!("parked or requeued after its exit")
                }
                TransitionToIdle::Idle => {}
                TransitionToIdle::Requeue => {
                    self.seen.requeued.fetch_add(1, Relaxed);
                    self.push(process);
                }
                TransitionToIdle::Exiting(claim) => {
                    self.seen.exiting_after_poll.fetch_add(1, Relaxed);
                    Held::new(process, claim).drop_body();
                }
            }
            true
        }

        /// Runs until the queue is empty.
        pub(super) fn drain(&self) {
            while self.run_one() {}
        }

        /// `Runtime::drop` after its wait for the workers gave up on some:
        /// every process in the table is marked exiting (no wake-up), a
        /// parked one is dropped here, and the run queue is drained with
        /// its tickets. A thread still inside a poll drops its process when
        /// the poll returns; one that popped a process and has not yet
        /// taken `RUNNING` drops it then. What such late threads queue
        /// afterwards, the models' final `drain` takes: each worker drains
        /// the queues once more as it leaves after the shutdown.
        pub(super) fn tear_down(&self, table: &[Arc<Proc>]) {
            for process in table {
                if process.state.begin_exit() {
                    process.exits.fetch_add(1, Release);
                }
            }
            for process in table {
                if let TransitionToDropping::Drop(claim) = process.state.transition_to_dropping() {
                    process.take_queue_ref();
                    self.seen.dropped_by_teardown.fetch_add(1, Relaxed);
                    Held::new(process.clone(), claim).drop_body();
                }
            }
            self.drain_queue_for_teardown();
        }

        /// The teardown's drain of the run queue, with the tickets.
        fn drain_queue_for_teardown(&self) {
            loop {
                let Some(process) = self.queue.lock().pop_front() else {
                    break;
                };
                assert_eq!(process.tickets.fetch_sub(1, Relaxed), 1);
                if process.state.begin_exit() {
                    process.exits.fetch_add(1, Release);
                }
                match process.state.transition_to_running() {
                    TransitionToRunning::Exiting(claim) => {
                        self.seen.dropped_by_teardown.fetch_add(1, Relaxed);
                        Held::new(process, claim).drop_body();
                    }
                    TransitionToRunning::Poll(_) => {
                        panic!("an exiting process was given to the teardown to poll")
                    }
                }
            }
        }

        /// A seeded bug for the loom models: the teardown of an old
        /// `Runtime::drop`, which dropped the body of every process whose
        /// `status()` read `Exiting` (it answers that before `Running`), so
        /// also of one a worker was polling. Since the body is reachable
        /// only through a [`Held`] made from a [`Claim`], and only the
        /// transitions make claims, the bug can only be written by forging
        /// one here, in the state module's own tests.
        #[cfg(feature = "loom-models")]
        pub(super) fn tear_down_by_status(&self, table: &[Arc<Proc>]) {
            for process in table {
                if process.state.begin_exit() {
                    process.exits.fetch_add(1, Release);
                }
            }
            for process in table {
                if process.state.status() == super::Status::Exiting {
                    // Whatever holds the queue reference, the forged claim
                    // takes it: what is caught is the body's drop.
                    let _ = process
                        .queue_ref
                        .compare_exchange(PARKED, TAKEN, AcqRel, Relaxed);
                    self.seen.dropped_by_teardown.fetch_add(1, Relaxed);
                    Held::new(process.clone(), Claim(())).drop_body();
                }
            }
            self.drain_queue_for_teardown();
        }
    }

    /// The harness's `process::Running`: the one way to the body, made only
    /// from a [`Claim`] (that is, by a transition that gave the caller
    /// `RUNNING`).
    struct Held {
        process: Arc<Proc>,
        claim: Claim,
    }

    impl Held {
        fn new(process: Arc<Proc>, claim: Claim) -> Held {
            Held { process, claim }
        }

        /// Polls the body once; true if it returned `Ready`.
        fn poll(&mut self, spins: usize) -> bool {
            let process = &*self.process;
            process.enter();
            for _ in 0..spins {
                std::hint::spin_loop();
            }
            let ready = process.body.with_mut(|body| {
                // SAFETY: `self` holds the claim on RUNNING (`enter`
                // checks that nobody else is inside, and loom checks the
                // access for a race).
                let body = unsafe { &mut *body };
                let body = body.as_mut().expect("polled after its body was dropped");
                body.seen = *process.inbox.lock();
                body.polls += 1;
                body.finish_at == Some(body.polls)
            });
            process.leave();
            ready
        }

        /// Gives `RUNNING` back after a `Pending` poll (`Running::park`),
        /// and with it the queue reference if the process goes idle. (Given
        /// before the transition, which may answer otherwise: nobody can
        /// take it while this holds `RUNNING`.)
        fn park(self) -> TransitionToIdle {
            let process = self.process;
            process.park_queue_ref();
            let parked = process.state.transition_to_idle(self.claim);
            if !matches!(parked, TransitionToIdle::Idle) {
                process.take_queue_ref();
            }
            parked
        }

        /// Drops the body, and lets the queue reference go (the end of
        /// `Running::exit`); `RUNNING` is never given back after this.
        fn drop_body(self) {
            let process = &*self.process;
            process.let_go_queue_ref();
            process.enter();
            process.body.with_mut(|body| {
                // SAFETY: as in `poll`.
                let body = unsafe { &mut *body };
                assert!(body.take().is_some(), "a body was dropped twice");
            });
            process.drops.fetch_add(1, Relaxed);
            process.leave();
        }
    }

    impl Proc {
        /// How many callers won `begin_exit`.
        pub(super) fn exits(&self) -> usize {
            self.exits.load(Acquire)
        }

        /// Whether some caller won `begin_exit` (and so the state byte had
        /// `EXITING` before this returned true).
        fn has_exited(&self) -> bool {
            self.exits.load(Acquire) > 0
        }

        fn enter(&self) {
            let before = self.inside.fetch_add(1, Relaxed);
            assert_eq!(before, 0, "two threads are inside one process");
        }

        fn leave(&self) {
            self.inside.fetch_sub(1, Relaxed);
        }

        /// A move out of idle was won: the queue reference parked in the
        /// process is the winner's.
        fn take_queue_ref(&self) {
            let was = self.queue_ref.swap(TAKEN, AcqRel);
            assert_eq!(
                was, PARKED,
                "a queue reference taken from a process that did not hold it"
            );
        }

        /// The holder of `RUNNING` parks the queue reference in the process.
        fn park_queue_ref(&self) {
            let was = self.queue_ref.swap(PARKED, AcqRel);
            assert_eq!(
                was, TAKEN,
                "a queue reference parked by a party that did not hold it"
            );
        }

        /// The exit lets the queue reference go.
        fn let_go_queue_ref(&self) {
            let was = self.queue_ref.swap(LET_GO, AcqRel);
            assert_eq!(
                was, TAKEN,
                "a queue reference let go by a party that did not hold it"
            );
        }

        /// Checks the end state once every thread is joined and the queue is
        /// drained: the process exited at most once and then its body was
        /// dropped exactly once; otherwise it is parked and has seen every
        /// message sent to it (no wake-up was lost).
        pub(super) fn assert_settled(&self) {
            let exits = self.exits();
            assert!(exits <= 1, "{exits} callers performed the exit");
            assert_eq!(self.state.is_exiting(), exits == 1);
            assert_eq!(self.tickets.load(Relaxed), 0);
            assert_eq!(self.drops.load(Relaxed), exits);
            let queue_ref = self.queue_ref.load(Relaxed);
            let expected = if exits == 1 { LET_GO } else { PARKED };
            assert_eq!(
                queue_ref, expected,
                "the queue reference is not where it belongs"
            );
            let sent = *self.inbox.lock();
            self.body.with_mut(|body| {
                // SAFETY: every other thread is joined.
                match unsafe { &*body } {
                    Some(body) => {
                        assert_eq!(exits, 0, "an exited process kept its body");
                        assert_eq!(body.seen, sent, "a wake-up was lost");
                    }
                    None => assert_eq!(exits, 1, "a body was dropped without an exit"),
                }
            });
        }
    }
}

#[cfg(all(test, not(feature = "loom-models")))]
mod stress {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier, Mutex};
    use std::thread;
    use std::time::{Duration, Instant};

    use super::harness::{Proc, RunQueue};

    /// Rounds of a few fresh processes, each hit by several senders at once
    /// while schedulers poll them and every sender kills one at a random
    /// moment (some also finish by themselves): the invariants of
    /// [`harness`](super::harness) hold throughout, and at the end every
    /// process either exited once and was dropped once, or has seen every
    /// message sent to it. Both the killer and the schedulers must drop
    /// bodies sometimes: if one batch of rounds (on a busy machine) shows
    /// only one of them, more batches run, for up to a minute.
    #[test]
    fn wakes_exits_and_polls_racing_on_many_threads_lose_no_wake_up_and_exit_once() {
        let started = Instant::now();
        let (mut by_killer, mut by_schedulers) = (0, 0);
        loop {
            let (killer, schedulers) = race_rounds();
            by_killer += killer;
            by_schedulers += schedulers;
            let both = by_killer > 0 && by_schedulers > 0;
            if both || started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        assert!(
            by_killer > 0 && by_schedulers > 0,
            "both the killer ({by_killer}) and the schedulers ({by_schedulers}) \
             must drop bodies sometimes"
        );
    }

    /// One batch of the rounds above; returns how many bodies the killers
    /// dropped, and how many the schedulers dropped for an exit they did
    /// not cause.
    fn race_rounds() -> (usize, usize) {
        const ROUNDS: usize = 300;
        const PROCESSES: usize = 4;
        const SCHEDULERS: usize = 3;
        const SENDERS: usize = 3;
        const SENDS: u32 = 100;
        const SPINS: usize = 300;

        let mut rq = RunQueue::default();
        rq.poll_spins = 1_000;
        let rq = Arc::new(rq);
        let round: Arc<Mutex<Vec<Arc<Proc>>>> = Arc::default();
        let barrier = Arc::new(Barrier::new(SENDERS + 1));
        let stop = Arc::new(AtomicBool::new(false));
        let schedulers: Vec<_> = (0..SCHEDULERS)
            .map(|_| {
                let (rq, stop) = (rq.clone(), stop.clone());
                thread::spawn(move || loop {
                    if !rq.run_one() {
                        if stop.load(Ordering::Acquire) && !rq.run_one() {
                            break;
                        }
                        thread::yield_now();
                    }
                })
            })
            .collect();
        let senders: Vec<_> = (0..SENDERS as u32)
            .map(|s| {
                let (rq, round, barrier) = (rq.clone(), round.clone(), barrier.clone());
                thread::spawn(move || {
                    let mut x = 0x9e37_79b9_u32.wrapping_mul(s + 1);
                    let mut next = move || {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x
                    };
                    for _ in 0..ROUNDS {
                        barrier.wait();
                        let processes = round.lock().unwrap().clone();
                        let kill_at = next() % SENDS;
                        for n in 0..SENDS {
                            let process = &processes[next() as usize % PROCESSES];
                            for _ in 0..SPINS {
                                std::hint::spin_loop();
                            }
                            if n == kill_at {
                                rq.terminate(process);
                            } else {
                                rq.send(process);
                            }
                        }
                        barrier.wait();
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for r in 0..ROUNDS {
            let processes: Vec<_> = (0..PROCESSES)
                .map(|i| rq.spawn((i == 0).then_some(1 + r % 20)))
                .collect();
            all.extend(processes.iter().cloned());
            *round.lock().unwrap() = processes;
            barrier.wait();
            barrier.wait();
        }
        for sender in senders {
            sender.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        for scheduler in schedulers {
            scheduler.join().unwrap();
        }
        rq.drain();
        for process in &all {
            process.assert_settled();
        }
        let seen = &rq.seen;
        let by_killer = seen.dropped_by_killer.load(Ordering::Relaxed);
        let unpolled = seen.dropped_unpolled.load(Ordering::Relaxed);
        let after_poll = seen.exiting_after_poll.load(Ordering::Relaxed);
        println!(
            "polls {}, requeued {}, exiting after a poll {after_poll}, dropped unpolled {unpolled}, \
             dropped by the killer {by_killer}",
            seen.polls.load(Ordering::Relaxed),
            seen.requeued.load(Ordering::Relaxed),
        );
        (by_killer, unpolled + after_poll)
    }
}

#[cfg(all(test, not(feature = "loom-models")))]
mod stress_teardown {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::thread;
    use std::time::{Duration, Instant};

    use super::harness::RunQueue;

    /// Rounds in which two schedulers poll (slowly) and a sender wakes a few
    /// processes while the runtime is torn down at a scattered moment, all
    /// released at once by a barrier: every body is dropped exactly once and
    /// never while it is polled (the harness asserts both as it goes). The
    /// report says how often the teardown, rather than a worker, dropped it;
    /// the teardown waits for the schedulers' first polls, so that both win
    /// sometimes however busy the machine is with other tests.
    #[test]
    fn a_teardown_racing_with_polls_and_wakes_drops_every_body_once() {
        const ROUNDS: usize = 1_000;
        const PROCESSES: usize = 3;
        let by_workers = AtomicUsize::new(0);
        let mut by_teardown = 0;
        for round in 0..ROUNDS {
            let mut rq = RunQueue::default();
            rq.poll_spins = 500;
            let rq = Arc::new(rq);
            let processes: Vec<_> = (0..PROCESSES)
                .map(|i| rq.spawn((i == 0 && round % 3 == 0).then_some(1 + round % 2)))
                .collect();
            let gate = Arc::new(Barrier::new(4));
            let stop = Arc::new(AtomicBool::new(false));
            let mut threads = Vec::new();
            for _ in 0..2 {
                let (rq, gate, stop) = (rq.clone(), gate.clone(), stop.clone());
                threads.push(thread::spawn(move || {
                    gate.wait();
                    while !stop.load(Ordering::Acquire) {
                        if !rq.run_one() {
                            std::hint::spin_loop();
                        }
                    }
                }));
            }
            {
                let (rq, gate, processes) = (rq.clone(), gate.clone(), processes.clone());
                threads.push(thread::spawn(move || {
                    gate.wait();
                    for n in 0..20 {
                        rq.send(&processes[n % PROCESSES]);
                    }
                }));
            }
            gate.wait();
            // The teardown starts once the schedulers have begun (0 to 3 of
            // the 3 queued first polls taken), then after a scattered spin:
            // on a loaded machine the threads the gate releases can be late
            // by more than any spin, and a teardown before they run would
            // race nothing. Process 0 is queued first, so in the rounds where
            // it ends on its first poll and the teardown waits for two polls
            // (one round in twelve) a worker always drops its body.
            let polls_first = round % 4;
            let deadline = Instant::now() + Duration::from_secs(10);
            while rq.seen.polls.load(Ordering::Relaxed) < polls_first {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: the schedulers took no {polls_first} polls in 10 s"
                );
                thread::yield_now();
            }
            // Once a poll has begun, the spin is shorter than one poll
            // (`poll_spins`), so the teardown often meets one in flight.
            let spins = if polls_first == 0 { 3_000 } else { 400 };
            for _ in 0..(round * 37) % spins {
                std::hint::spin_loop();
            }
            rq.tear_down(&processes);
            stop.store(true, Ordering::Release);
            for t in threads {
                t.join().unwrap();
            }
            rq.drain();
            for process in &processes {
                process.assert_settled();
                assert_eq!(process.exits(), 1);
            }
            let torn = rq.seen.dropped_by_teardown.load(Ordering::Relaxed);
            by_teardown += torn;
            by_workers.fetch_add(PROCESSES - torn, Ordering::Relaxed);
        }
        let by_workers = by_workers.load(Ordering::Relaxed);
        println!(
            "{ROUNDS} rounds: bodies dropped by the teardown {by_teardown}, by a worker or its poll's end {by_workers}"
        );
        assert!(
            by_teardown > 0 && by_workers > 0,
            "both sides must win sometimes"
        );
    }
}

/// Model checks under loom; see `crate::loom` for the command and bounds.
#[cfg(all(test, feature = "loom-models"))]
mod loom_models {
    use ::loom::sync::Arc;
    use ::loom::thread;

    use super::harness::RunQueue;

    /// Runs `f` on a new model thread; call the result to join it.
    fn start(rq: &Arc<RunQueue>, f: impl FnOnce(&RunQueue) + Send + 'static) -> impl FnOnce() {
        let rq = rq.clone();
        let handle = thread::spawn(move || f(&rq));
        move || handle.join().unwrap()
    }

    /// A kill and a message's wake-up, each on a thread of its own, race
    /// with `polls` polls on this one, for a process spawned with
    /// `finish_at` and polled `polls_before` times first: whatever the
    /// interleaving, one exit, one drop, no poll after the exit.
    fn kill_and_wake_race_polls(finish_at: Option<usize>, polls_before: usize, polls: usize) {
        let rq = Arc::new(RunQueue::default());
        let process = rq.spawn(finish_at);
        for _ in 0..polls_before {
            rq.run_one();
        }
        let (p1, p2) = (process.clone(), process.clone());
        let killer = start(&rq, move |rq| rq.terminate(&p1));
        let sender = start(&rq, move |rq| rq.send(&p2));
        for _ in 0..polls {
            rq.run_one();
        }
        killer();
        sender();
        rq.drain();
        process.assert_settled();
        assert_eq!(process.exits(), 1);
    }

    /// A message arrives while the process is being polled by one scheduler,
    /// and a second scheduler is looking for work: the wake-up is never lost
    /// (the process is requeued or its poll saw the message), it never puts
    /// the process in the queue twice, and no two threads ever poll it at once.
    #[test]
    fn a_wake_racing_with_the_end_of_a_poll_is_not_lost_nor_doubled() {
        crate::loom::model("wake vs poll end, two schedulers", None, || {
            let rq = Arc::new(RunQueue::default());
            let process = rq.spawn(None);
            let p = process.clone();
            let sender = start(&rq, move |rq| rq.send(&p));
            let scheduler = start(&rq, |rq| {
                rq.run_one();
            });
            rq.run_one();
            rq.run_one();
            sender();
            scheduler();
            rq.drain();
            process.assert_settled();
        });
    }

    /// Two wake-ups race with each other and with the end of a poll: exactly
    /// one party takes the `SCHEDULED` ticket for each run, none is lost.
    #[test]
    fn two_wakes_racing_with_a_poll_queue_the_process_once() {
        crate::loom::model("two wakes vs poll end", Some(4), || {
            let rq = Arc::new(RunQueue::default());
            let process = rq.spawn(None);
            let (p1, p2) = (process.clone(), process.clone());
            let first = start(&rq, move |rq| rq.send(&p1));
            let second = start(&rq, move |rq| rq.send(&p2));
            rq.run_one();
            rq.run_one();
            first();
            second();
            rq.drain();
            process.assert_settled();
        });
    }

    /// Two exits (each with its wake-up) race with each other and with the
    /// end of a poll: exactly one caller performs the exit, and once it has
    /// the process is dropped, never polled, parked or requeued again.
    #[test]
    fn two_exits_racing_with_a_poll_happen_once_and_stop_the_polls() {
        crate::loom::model("two exits vs poll end", Some(4), || {
            let rq = Arc::new(RunQueue::default());
            let process = rq.spawn(None);
            let (p1, p2) = (process.clone(), process.clone());
            let killer = start(&rq, move |rq| rq.terminate(&p1));
            let other_killer = start(&rq, move |rq| rq.terminate(&p2));
            rq.run_one();
            rq.run_one();
            killer();
            other_killer();
            rq.drain();
            process.assert_settled();
            assert_eq!(process.exits(), 1);
        });
    }

    /// An exit races with a message's wake-up and with the end of a poll:
    /// whoever takes the ticket, the process is dropped once and not polled
    /// after the exit.
    #[test]
    fn an_exit_racing_with_a_wake_and_a_poll_stops_the_polls() {
        crate::loom::model("exit vs wake vs poll end", Some(4), || {
            kill_and_wake_race_polls(None, 0, 2);
        });
    }

    /// A kill finds the process parked and drops its body itself while a
    /// message wakes it and a scheduler looks for work: the body is dropped
    /// once, by the killer or by whoever pops the woken process, and never
    /// while a poll runs.
    #[test]
    fn a_kill_dropping_a_parked_body_racing_a_wake_drops_it_once() {
        crate::loom::model("kill of a parked process vs wake vs poll", Some(4), || {
            // Polled once first: parked.
            kill_and_wake_race_polls(None, 1, 1);
        });
    }

    /// The runtime is torn down while a worker it gave up on is inside the
    /// process's poll (or about to take it from the queue) and a message
    /// wakes it: the body is dropped exactly once, never while the poll
    /// runs, by the teardown or by that worker (issue: `Runtime::drop` once
    /// read `status()`, which answers `Exiting` before `Running`).
    #[test]
    fn a_teardown_racing_with_a_poll_and_a_wake_drops_the_body_once() {
        crate::loom::model("teardown vs poll vs wake", Some(4), || {
            let rq = Arc::new(RunQueue::default());
            let process = rq.spawn(None);
            let p = process.clone();
            let sender = start(&rq, move |rq| rq.send(&p));
            let worker = start(&rq, |rq| {
                rq.run_one();
            });
            rq.tear_down(std::slice::from_ref(&process));
            sender();
            worker();
            // A ticket the teardown could not see (a wake after its drain)
            // is dropped by whoever pops it.
            rq.drain();
            process.assert_settled();
            assert_eq!(process.exits(), 1);
        });
    }

    /// The teardown races with a process that finishes by itself (its poll
    /// returns `Ready`) and with a kill: one exit, one drop, never under the
    /// poll.
    #[test]
    fn a_teardown_racing_with_a_process_finishing_drops_the_body_once() {
        crate::loom::model("teardown vs self exit vs kill", Some(4), || {
            let rq = Arc::new(RunQueue::default());
            let process = rq.spawn(Some(1));
            let p = process.clone();
            let killer = start(&rq, move |rq| rq.terminate(&p));
            let worker = start(&rq, |rq| {
                rq.run_one();
            });
            rq.tear_down(std::slice::from_ref(&process));
            killer();
            worker();
            rq.drain();
            process.assert_settled();
            assert_eq!(process.exits(), 1);
        });
    }

    /// The runtime is torn down while a parked process is killed on one
    /// thread and woken by a message on another: the teardown, the killer
    /// and whoever pops the woken process race for the body, and exactly
    /// one of them drops it, once (each needs the `Claim` that only a
    /// winning transition makes).
    #[test]
    fn a_teardown_racing_with_a_kill_and_a_wake_of_a_parked_process_drops_the_body_once() {
        crate::loom::model("teardown vs kill vs wake, parked", Some(3), || {
            teardown_racing_a_kill_and_a_wake(|rq, table| rq.tear_down(table));
        });
    }

    /// The model above with `tear_down` given as `teardown`, on a process
    /// parked after one poll, with a worker that pops what the wake queued.
    fn teardown_racing_a_kill_and_a_wake(teardown: fn(&RunQueue, &[Arc<super::harness::Proc>])) {
        let rq = Arc::new(RunQueue::default());
        let process = rq.spawn(None);
        rq.run_one();
        let (p1, p2) = (process.clone(), process.clone());
        let killer = start(&rq, move |rq| rq.terminate(&p1));
        let sender = start(&rq, move |rq| rq.send(&p2));
        let worker = start(&rq, |rq| {
            rq.run_one();
        });
        teardown(&rq, std::slice::from_ref(&process));
        killer();
        sender();
        worker();
        rq.drain();
        process.assert_settled();
        assert_eq!(process.exits(), 1);
    }

    /// The seeded bug of [`RunQueue::tear_down_by_status`] must be caught:
    /// its model runs in a child process (it is expected to fail) and
    /// must report a body touched by two threads or dropped twice.
    #[test]
    fn loom_models_a_teardown_dropping_a_polled_body_is_caught() {
        crate::loom::assert_seeded_bug_caught(
            "process::state::loom_models::seeded_bug_teardown_by_status",
            &[
                "two threads are inside one process",
                "dropped twice",
                "queue reference",
                "Causality violation",
            ],
            "a teardown dropping a body under a poll",
        );
    }

    /// The broken teardown's model, expected to fail (see above): a worker
    /// is inside the poll of the process (woken by a message) when the
    /// teardown, reading `status()`, drops its body.
    #[test]
    #[ignore = "a seeded bug: run by loom_models_a_teardown_dropping_a_polled_body_is_caught, which expects it to fail"]
    fn seeded_bug_teardown_by_status() {
        crate::loom::model("seeded bug: teardown by status", Some(3), || {
            teardown_racing_a_kill_and_a_wake(|rq, table| rq.tear_down_by_status(table));
        });
    }

    /// The queue reference's seeded bug must be caught: a kill whose claim
    /// failed (a poll or a queue holds the process) takes the reference
    /// all the same, as a `claim_exiting` that took it before looking at
    /// its transition would.
    #[test]
    fn loom_models_a_queue_reference_taken_on_a_failed_claim_is_caught() {
        crate::loom::assert_seeded_bug_caught(
            "process::state::loom_models::seeded_bug_take_on_a_failed_claim",
            &["queue reference"],
            "a queue reference taken on a failed claim",
        );
    }

    #[test]
    #[ignore = "a seeded bug: run by loom_models_a_queue_reference_taken_on_a_failed_claim_is_caught, which expects it to fail"]
    fn seeded_bug_take_on_a_failed_claim() {
        super::harness::SEEDED_TAKE_ON_A_FAILED_CLAIM
            .store(true, std::sync::atomic::Ordering::Relaxed);
        crate::loom::model(
            "seeded bug: a queue reference taken on a failed claim",
            Some(3),
            || {
                kill_and_wake_race_polls(Some(1), 0, 1);
            },
        );
    }

    /// A process returns `Ready` (and exits itself) while another process
    /// kills it and a message wakes it: one exit, one drop.
    #[test]
    fn a_process_finishing_while_it_is_killed_exits_once() {
        crate::loom::model("self exit vs kill vs wake", Some(4), || {
            kill_and_wake_race_polls(Some(1), 0, 1);
        });
    }
}
