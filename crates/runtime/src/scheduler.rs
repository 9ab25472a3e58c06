//! Ember's M:N scheduler: slots, workers, run queues, work stealing, parking,
//! and the watchdog that keeps native code from stalling everyone else.
//!
//! # Structure
//!
//! The scheduler has one [`Slot`] per scheduler (Go's "P"). A slot holds all
//! scheduling state: run queues, its `next` process, flags and counters. A
//! [`Worker`] (an OS thread) serves a slot; nothing the slot needs lives in
//! the thread, so the [watchdog](sysmon) can hand the slot to another
//! worker at any moment when its worker is stuck inside one poll (a process
//! running native code that never awaits).
//!
//! Each slot has high, normal and low FIFO queues; normal is split into
//! *woken* processes (spawned, or woken by a message, timer or I/O) and
//! *batch* processes (preempted for using their whole slice), and woken ones
//! are served first with batch keeping one pick in four. A process woken or
//! spawned by the process running on the same slot goes to `next` and runs
//! right after the current poll, which keeps ping-pong, rings and
//! start-with-acknowledgement on one core. `next` is
//! not stealable and yields to the queue after a streak when others wait.
//! The woken processes the slot's own worker queues go to the slot's
//! lock-free ring (`ring.rs`), the back of its woken FIFO, which the worker
//! pops and thieves steal from without the queue's lock (`slot.rs`).
//!
//! Wake-ups from outside a slot (timers, I/O, a handle, a demoted worker) go
//! to the global injector. A slot checks it whenever its own queue is empty
//! and every 61 picks; arriving interactive work also asks a slot that is
//! polling batch work to cut its slice short (`Slot::preempt`). An idle slot
//! takes a batch from the injector, then steals half of another slot's ring
//! (or, if it is empty, of its locked queue), then spins briefly, then parks.
//!
//! Processes retaken twice by the watchdog ("repeat offenders") are queued on
//! the background queue instead, served only by demoted background workers.
//!
//! # Sleeping and waking (no lost wake-ups)
//!
//! A worker out of work first *searches* (spins, looking at every queue and
//! the pollset), if fewer than half the online slots' workers search
//! already; then it marks its slot parked (`idle`: a `parked` mark and the
//! `sleepers` count), checks every queue once more and sleeps on its
//! [`Parker`](park::Parker), in the pollset if nobody else polls it. A
//! pusher makes its work visible (the locked queue's length, or the ring's
//! `tail`, claimed by a compare-and-swap), then reads `searching` and
//! `sleepers`. All `SeqCst`, so at least one side sees the other:
//! either the sleeper (or a searcher) finds the work, or the pusher finds
//! the sleeper and unparks it. Whoever swaps `parked` from true to false
//! owns the decrement of `sleepers` and the unpark. The last searcher to
//! find work wakes a parked slot if more waits (`idle`'s module docs).
//!
//! A push to `next` wakes nobody: its pusher is the slot's worker, which runs
//! it after the current poll. But the watchdog may hand the slot to another
//! worker between the pusher's owner check and its push; that worker may
//! already have looked at `next` and parked. So the push also reads the
//! slot's `parked` (after its swap into `next`, both `SeqCst`) and unparks it
//! (`Scheduler::unpark_if_parked`): `next` cannot be stolen, so nobody else
//! would run it.

mod clock;
mod config;
mod idle;
pub(crate) mod os;
pub(crate) mod park;
mod queue;
mod ring;
mod slot;
mod sysmon;
mod threads;
mod worker;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use config::Preemption;
pub(crate) use queue::Class;
use queue::RunQueue;
pub(crate) use slot::Slot;
pub use sysmon::Handoff;
pub(crate) use worker::{drop_contained, panic_message, Worker, NO_SLOT};

use crate::context;
use crate::net::reactor::Reactor;
use crate::process::{self, Picked, Process, Running};
use crate::runtime::Shared;

/// Counters of the preemption machinery, for introspection.
#[derive(Default)]
pub(crate) struct Counters {
    /// Slots handed to another worker because their worker was stuck.
    pub(crate) handoffs: AtomicU64,
    /// Of those, hand-offs for a blocked (not CPU-hogging) poll.
    pub(crate) blocked_handoffs: AtomicU64,
    /// Of those, hand-offs of a poll that overran its slice while other
    /// processes waited for its slot (`Preemption::contended_threshold`).
    pub(crate) contended_handoffs: AtomicU64,
    /// Priority demotions applied to workers.
    pub(crate) demotions: AtomicU64,
    /// Starvation reliefs: demoted workers raised to the relief level.
    pub(crate) reliefs: AtomicU64,
    /// Worker threads started since the runtime started.
    pub(crate) threads_started: AtomicU64,
}

/// The OS nice value `level` steps above `base` (a nice value in -20..=19).
fn os_nice(base: i32, level: i32) -> i32 {
    base.saturating_add(level).clamp(-20, 19)
}

/// The scheduler: all slots, workers and shared queues.
pub(crate) struct Scheduler {
    pub(crate) slots: Box<[Slot]>,
    injector: Mutex<RunQueue>,
    injector_len: AtomicUsize,
    /// Repeat offenders, served by background workers only.
    background: Mutex<VecDeque<Arc<Process>>>,
    background_len: AtomicUsize,
    /// Parked slots and searching workers.
    pub(crate) idle: idle::Idle,
    shutdown: AtomicBool,
    pub(crate) started: Instant,
    pub(crate) config: Preemption,
    /// `config.slice` in nanoseconds (the workers' clocks count those).
    pub(crate) slice_ns: u64,
    /// The nice value of the thread that built the runtime, which every
    /// worker starts with: the ladder's and the relief's levels are
    /// increments over it, as `nice -n` is (a node started at nice -10 next
    /// to other processes at -10 keeps the shares the defaults were measured
    /// with at 0).
    pub(crate) base_nice: i32,
    /// Whether this process may raise a demoted thread back to
    /// [`Preemption::relief_nice`] (CAP_SYS_NICE or RLIMIT_NICE): probed once.
    pub(crate) priorities_restorable: bool,
    pub(crate) workers: threads::Workers,
    /// The watchdog's record of its last hand-off.
    pub(crate) sysmon: sysmon::Sysmon,
    pub(crate) counters: Counters,
    /// The pollset, polled by idle and (between polls) busy workers.
    pub(crate) reactor: Arc<Reactor>,
    /// The watchdog's sleep, and its doze while every worker is parked.
    pub(crate) doze: park::Doze,
}

impl Scheduler {
    pub(crate) fn new(slots: usize, config: Preemption, reactor: Arc<Reactor>) -> Scheduler {
        let base_nice = os::current_nice();
        Scheduler {
            slots: (0..slots).map(Slot::new).collect(),
            injector: Mutex::new(RunQueue::default()),
            injector_len: AtomicUsize::new(0),
            background: Mutex::new(VecDeque::new()),
            background_len: AtomicUsize::new(0),
            idle: idle::Idle::new(slots),
            shutdown: AtomicBool::new(false),
            started: Instant::now(),
            base_nice,
            priorities_restorable: config.enabled
                && !config.demotion.is_empty()
                && os::can_restore_priority(os_nice(base_nice, config.relief_nice)),
            slice_ns: u64::try_from(config.slice.as_nanos()).unwrap_or(u64::MAX),
            config,
            workers: threads::Workers::default(),
            sysmon: sysmon::Sysmon::default(),
            counters: Counters::default(),
            reactor,
            doze: park::Doze::default(),
        }
    }

    /// Starts one worker per slot, the spares and the watchdog.
    pub(crate) fn start(rt: &Arc<Shared>) -> io::Result<Vec<JoinHandle<()>>> {
        let sched = &rt.sched;
        for slot in sched.slots.iter() {
            let worker = sched.workers.spawn(rt, slot.index, false)?;
            slot.assign(worker.id);
        }
        for _ in 0..sched.config.spare_threads {
            sched.workers.spawn(rt, NO_SLOT, false)?;
        }
        let mut threads = Vec::new();
        if sched.config.enabled {
            let rt = rt.clone();
            threads.push(
                thread::Builder::new()
                    .name("ember-watchdog".into())
                    .spawn(move || sysmon::watchdog_main(rt))?,
            );
        }
        Ok(threads)
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Nanoseconds from the scheduler's start to `at`.
    pub(crate) fn nanos_since_start(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_nanos() as u64
    }

    /// Processes waiting in the global injector.
    pub(crate) fn injector_len(&self) -> usize {
        self.injector_len.load(Ordering::SeqCst)
    }

    /// Processes waiting for a background worker.
    pub(crate) fn background_len(&self) -> usize {
        self.background_len.load(Ordering::SeqCst)
    }

    fn with_injector<R>(&self, f: impl FnOnce(&mut RunQueue) -> R) -> R {
        let mut q = self.injector.lock();
        let r = f(&mut q);
        self.injector_len.store(q.len(), Ordering::SeqCst);
        r
    }

    /// Number of schedulers online.
    pub(crate) fn online(&self) -> usize {
        self.slots.iter().filter(|s| s.is_online()).count()
    }

    /// Sets how many schedulers are online (1..=slots); returns the old count.
    pub(crate) fn set_online(&self, n: usize) -> usize {
        let previous = self.online();
        let n = n.clamp(1, self.slots.len());
        for slot in self.slots.iter() {
            slot.remote.online.store(slot.index < n, Ordering::SeqCst);
            self.unpark(slot);
        }
        // A slot coming online starts polling without leaving a park.
        self.doze.wake();
        previous
    }

    /// Whether every online slot's worker is parked: then no poll runs on a
    /// slot, and the watchdog may doze (`park::Doze`).
    pub(crate) fn all_online_parked(&self) -> bool {
        self.slots
            .iter()
            .all(|s| !s.is_online() || self.idle.is_parked(s.index))
    }

    /// Whether `slot` has anything to run: its own queue (with `next`), the
    /// injector, or something it could steal.
    fn has_work_for(&self, slot: &Slot) -> bool {
        self.injector_len() > 0
            || slot.queue_len() > 0
            || self.slots.iter().any(|s| s.stealable_len() > 0)
    }

    /// Whether processes wait to run on `slot`: in its own queues (`next`
    /// included) or in the injector, which every slot serves. Read by the
    /// watchdog (`Preemption::contended_threshold`).
    pub(crate) fn work_waits_for(&self, slot: &Slot) -> bool {
        slot.queue_len() > 0 || self.injector_len() > 0
    }

    /// Looks at the pollset without blocking, unless another thread polls
    /// it (an idle worker, which then runs what it wakes), and returns
    /// whether processes now wait for `slot`. For the watchdog, about a
    /// poll past `Preemption::contended_threshold`: while a lone slot's
    /// worker is inside one poll nobody else looks at the sockets, so the
    /// processes their events would wake are not yet seen waiting.
    pub(crate) fn poll_io_for_waiting_work(&self, slot: &Slot) -> bool {
        self.reactor.poll(Duration::ZERO) && self.work_waits_for(slot)
    }

    /// Wakes `slot`'s worker wherever it sleeps: parked, or in the pollset.
    fn unpark(&self, slot: &Slot) {
        slot.unpark(&*self.reactor);
    }

    /// Wakes the worker of slot `index` wherever it sleeps, without taking
    /// its `parked` mark: a timer armed on the slot is due before the worker
    /// meant to wake (`crate::timer`).
    pub(crate) fn wake_slot(&self, index: usize) {
        if let Some(slot) = self.slots.get(index) {
            self.unpark(slot);
        }
    }

    fn unmark_parked(&self, slot: &Slot) {
        self.idle.take_parked(slot.index);
    }

    /// Wakes `slot`'s worker if it is parked. After a push to `next` by a
    /// worker that has just lost the slot to a hand-off: `next` is not
    /// stealable and `notify_one` may pick another slot, so the new owner
    /// itself must look. `SeqCst`, as the sleep protocol's push side (module
    /// docs): the push swapped its process into `next` first.
    fn unpark_if_parked(&self, slot: &Slot) {
        if self.idle.take_parked(slot.index) {
            self.unpark(slot);
        }
    }

    /// Work was queued: wakes one parked online slot, unless no slot is
    /// parked or a worker searches for work (it finds this too: `idle`).
    fn notify_one(&self) {
        if !self.idle.needs_notify() {
            return;
        }
        self.notify_parked();
    }

    /// Wakes one parked online slot, if any, whether or not a worker
    /// searches.
    fn notify_parked(&self) {
        if let Some(i) = self.idle.take_one(|i| self.slots[i].is_online()) {
            self.unpark(&self.slots[i]);
        }
    }

    /// Whether any work waits that another slot's worker could take: in the
    /// injector, or stealable from some slot.
    fn has_work_to_share(&self) -> bool {
        self.injector_len() > 0 || self.slots.iter().any(|s| s.stealable_len() > 0)
    }

    /// A searching worker stops searching. If it was the last searcher and
    /// work that another worker could take waits, a parked slot is woken to
    /// take it: pushes meanwhile notified nobody (`idle`).
    fn stop_searching(&self) {
        if self.idle.stop_searching() && self.has_work_to_share() {
            self.notify_parked();
        }
    }

    /// Interactive work arrived in a shared queue: ask a slot that is busy
    /// with batch work to yield at its next reduction check.
    fn preempt_batch(&self) {
        for slot in self.slots.iter() {
            if slot.core.running_batch.load(Ordering::Relaxed) {
                slot.remote.preempt.store(true, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Queues a process on `slot` (the caller serves it).
    fn push_local(&self, slot: &Slot, process: Arc<Process>, class: Class) {
        if process.is_offender() {
            return self.push_background(process);
        }
        // Stored only when not yet set: the flag shares its cache line with
        // what thieves read, and a loop spawning or waking many processes
        // in one slice would otherwise take that line back at each push.
        if class == Class::Woken
            && slot.core.running_batch.load(Ordering::Relaxed)
            && !slot.remote.preempt.load(Ordering::Relaxed)
        {
            slot.remote.preempt.store(true, Ordering::Relaxed);
        }
        slot.push(process, class);
        self.notify_one();
    }

    /// Queues a process on the injector (or the background queue).
    pub(crate) fn push_global(&self, process: Arc<Process>, class: Class) {
        if process.is_offender() {
            return self.push_background(process);
        }
        self.with_injector(|q| q.push(process, class));
        self.notify_one();
        if class == Class::Woken {
            self.preempt_batch();
        }
    }

    fn push_background(&self, process: Arc<Process>) {
        let rt = process.rt.clone();
        self.queue_background(process);
        self.workers.notify_background(&rt);
    }

    /// Queues a repeat offender on the background queue without waking or
    /// starting a background worker: for a background worker requeuing the
    /// process it just polled, which it serves next itself. Waking another
    /// would start a new thread at each yield of an offender (the caller is
    /// busy, so no background worker is idle).
    fn queue_background(&self, process: Arc<Process>) {
        let mut q = self.background.lock();
        q.push_back(process);
        self.background_len.store(q.len(), Ordering::SeqCst);
    }

    /// Takes a process from the background queue.
    fn pop_background(&self) -> Option<Arc<Process>> {
        if self.background_len() == 0 {
            return None;
        }
        let mut q = self.background.lock();
        let p = q.pop_front();
        self.background_len.store(q.len(), Ordering::SeqCst);
        p
    }

    /// Moves a worker down its demotion ladder to `nice` (never back up: the
    /// ladder level only rises) and applies it, unless the worker is
    /// relieved for starvation (then the level waits until relief ends).
    pub(crate) fn demote_to(&self, worker: &Worker, nice: i32) {
        let nice = self.deepest_allowed(nice);
        let previous = worker.ladder.fetch_max(nice, Ordering::AcqRel);
        if nice > previous && !worker.relieved.load(Ordering::Acquire) {
            self.apply_priority(worker, nice);
        }
    }

    /// Starts (`on`) or ends the starvation relief of a demoted worker: it
    /// runs at [`Preemption::relief_nice`] (or its ladder level, if that is
    /// higher) while relieved, at its ladder level otherwise. Only the
    /// watchdog calls it. Without the right to raise a thread's priority the
    /// ladder never goes past the relief level, so nothing changes. Called
    /// for a worker inside a poll only: its start-up demotion is then over,
    /// and the watchdog is the only thread changing its priority.
    pub(crate) fn relieve(&self, worker: &Worker, on: bool) {
        if worker.relieved.swap(on, Ordering::AcqRel) == on {
            return;
        }
        let ladder = worker.ladder.load(Ordering::Acquire);
        if on {
            self.counters.reliefs.fetch_add(1, Ordering::Relaxed);
            self.apply_priority(worker, ladder.min(self.config.relief_nice));
        } else {
            self.apply_priority(worker, ladder);
        }
    }

    /// The deepest level a demotion may reach: without the right to raise a
    /// priority again, the relief level (a starvation floor that holds with
    /// no watchdog action).
    fn deepest_allowed(&self, nice: i32) -> i32 {
        if self.priorities_restorable {
            nice
        } else {
            nice.min(self.config.relief_nice.max(0))
        }
    }

    /// The nice value the OS reports for a worker at ladder `level` (19 at
    /// SCHED_IDLE).
    pub(crate) fn os_nice(&self, level: i32) -> i32 {
        if level >= 19 {
            19
        } else {
            os_nice(self.base_nice, level)
        }
    }

    /// Sets a worker thread's priority to ladder level `nice` (19 with
    /// [`Preemption::sched_idle`]: SCHED_IDLE; otherwise that many steps
    /// above [`Scheduler::base_nice`]), up or down; a raise needs
    /// [`Scheduler::priorities_restorable`]. One or two system calls, only
    /// when the level changes.
    fn apply_priority(&self, worker: &Worker, nice: i32) {
        let current = worker.nice.load(Ordering::Acquire);
        if nice == current || (nice < current && !self.priorities_restorable) {
            return;
        }
        let tid = worker.tid.load(Ordering::Acquire);
        if tid == 0 {
            return;
        }
        let idle = nice >= 19 && self.config.sched_idle && self.priorities_restorable;
        let result = if idle {
            os::set_nice(tid, 19).and_then(|()| os::set_sched_idle(tid))
        } else if nice < current {
            os::set_normal(tid, os_nice(self.base_nice, nice))
        } else {
            os::set_nice(tid, os_nice(self.base_nice, nice))
        };
        match result {
            Ok(()) => {
                worker.nice.store(nice, Ordering::Release);
                if nice > current {
                    self.counters.demotions.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!(tid, nice, error = %e, "ember: cannot change a worker thread's priority")
            }
        }
    }

    /// Stops every worker and the watchdog; they exit their loops.
    pub(crate) fn shut_down(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for slot in self.slots.iter() {
            self.unpark(slot);
        }
        self.workers.unpark_all();
        self.doze.wake();
    }

    /// Removes every queued process (runtime shutdown, after the workers stopped).
    pub(crate) fn drain_all(&self) -> Vec<Arc<Process>> {
        let mut all = RunQueue::default();
        self.with_injector(|q| q.drain_into(&mut all));
        for slot in self.slots.iter() {
            slot.drain_into(&mut all);
        }
        let mut processes = all.take_all();
        processes.extend(self.background.lock().drain(..));
        processes
    }

    /// Takes every queued process with its `SCHEDULED` ticket and drops its
    /// body, as the runtime's teardown does (the process is marked exiting
    /// first, so `Running::pick` answers `Exiting` and the ticket holder
    /// ends it: `process::tear_down`).
    /// Run by the teardown, and again by each worker leaving after the
    /// shutdown: a worker that was still inside a poll when the teardown
    /// drained the queues may have queued a process since (one woken during
    /// that poll, a child it spawned), which nobody else would drop.
    pub(crate) fn drop_queued(&self) {
        for process in self.drain_all() {
            process.begin_exit();
            let queued = process.clone();
            // Marked exiting just above: `Poll` cannot come, and would be
            // ended all the same.
            match Running::pick(process) {
                Picked::Exiting(running) | Picked::Poll(running) => {
                    crate::process::tear_down(&queued, Some(running));
                }
            }
        }
    }
}

/// A wake-up for `process` from anywhere with nothing to publish (its
/// waker: a timer, I/O, a resume). After a push into its mailbox, use
/// [`wake_after_push`].
pub(crate) fn wake(process: &Arc<Process>) {
    if let Some(queued) = process::schedule(process, false) {
        let from_a_process = context::in_process();
        enqueue(&process.rt, queued, from_a_process);
    }
}

/// The wake-up that follows a push into `process`'s mailbox (a message, an
/// `Exit`, a `Down`): its state's read-modify-write publishes the push to
/// the next poll (`State::transition_to_scheduled_after_push`).
pub(crate) fn wake_after_push(process: &Arc<Process>) {
    if let Some(queued) = process::schedule(process, true) {
        let from_a_process = context::in_process();
        enqueue(&process.rt, queued, from_a_process);
    }
}

/// Queues a process that was just spawned (its `SCHEDULED` bit set). Spawned
/// by a process, it runs right after its parent's poll (`next`), like tokio's
/// LIFO slot: a parent that spawns and then waits for its child (start with
/// acknowledgement) keeps both on one core instead of waking an idle
/// scheduler to steal the child. Spawned with [`Spawn::queued`](crate::Spawn::queued)
/// (`as_next` false), it goes to the back of the woken queue instead.
pub(crate) fn enqueue_new(rt: &Shared, process: Arc<Process>, as_next: bool) {
    let from_a_process = context::in_process();
    enqueue(rt, process, from_a_process && as_next);
}

/// Pushes a woken process whose `SCHEDULED` ticket the caller holds. On a
/// thread serving a slot of the same runtime it goes to that slot (to `next`
/// if `as_next`), otherwise to the injector.
fn enqueue(rt: &Shared, process: Arc<Process>, as_next: bool) {
    let sched = &rt.sched;
    // Local only if this thread still owns the slot: a worker whose slot was
    // handed off while it polls must not fill the slot's `next` unseen.
    match context::current_slot(rt).map(|i| &sched.slots[i]) {
        Some(slot)
            if slot.is_online()
                && slot.remote.owner.load(Ordering::Acquire) == context::current_worker() =>
        {
            if as_next && process.priority() == crate::Priority::Normal && !process.is_offender() {
                if let Some(displaced) = slot.swap_next(process) {
                    sched.push_local(slot, displaced, Class::Woken);
                } else {
                    // The slot may have been handed off since the owner check
                    // above, and its new worker parked without seeing `next`.
                    sched.unpark_if_parked(slot);
                }
            } else {
                sched.push_local(slot, process, Class::Woken);
            }
        }
        _ => sched.push_global(process, Class::Woken),
    }
}

/// Installs (once per program) a panic hook that reports a panic inside a
/// process as one line naming the process, like a crash report, instead of
/// the default multi-line report; panics elsewhere go to the previous hook.
pub(crate) fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            match context::try_with_current(|p| (p.pid, p.spawned_as.clone())) {
                Some((pid, spawned_as)) => {
                    let message = panic_message(info.payload());
                    let location = info
                        .location()
                        .map(|l| format!(" at {}:{}", l.file(), l.line()))
                        .unwrap_or_default();
                    tracing::error!(%pid, %spawned_as, %message, "process crashed");
                    eprintln!("ember: process {pid} ({spawned_as}) panicked{location}: {message}");
                }
                None => previous(info),
            }
        }));
    });
}
