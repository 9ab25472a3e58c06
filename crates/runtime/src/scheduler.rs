//! Ember's M:N scheduler: slots, run queues, work stealing, parking.
//!
//! # Structure
//!
//! The scheduler has one [`Slot`] per scheduler (Go's "P"). A slot owns all
//! scheduling state: its run queues, its "next" slot, its statistics. A thread
//! serves a slot; nothing a slot needs lives in the thread, so a slot can later
//! be handed to another thread when its thread is stuck in native code.
//!
//! Each slot has three FIFO queues (high, normal, low) and a `next` slot. A
//! process woken by the process running on the same slot (a message, typically)
//! goes to `next` and runs right after the current poll, which keeps ping-pong
//! and rings on one core and warm in its cache. `next` cannot be stolen; after
//! [`NEXT_STREAK_LIMIT`] consecutive runs from `next` the slot moves it to the
//! back of its queue so a pair of chatty processes cannot starve the others.
//!
//! # Safety
//!
//! `next` is an owner-only cell ([`Slot::next`]): only the thread serving the
//! slot touches it (the thread whose [`context`] names this slot), or the
//! runtime after every scheduler thread has stopped. That keeps the hot path
//! of a message exchange free of locks.
//!
//! Wake-ups from outside a scheduler thread (timers, I/O, other runtimes'
//! threads) go to the global injector. A slot with nothing to do takes a batch
//! from the injector, then steals half of another slot's queue, then spins
//! briefly, then parks. Every [`INJECTOR_CHECK_INTERVAL`] picks it looks at the
//! injector first, so global work is never starved by local work.
//!
//! # Sleeping and waking (no lost wake-ups)
//!
//! A slot about to park sets its `parked` flag and increments `sleepers`, then
//! checks every queue once more. A pusher makes its work visible (queue length),
//! then reads `sleepers`. Both sides use `SeqCst`, so at least one of them sees
//! the other: either the sleeper finds the work, or the pusher finds the
//! sleeper and unparks it. Whoever swaps `parked` from true to false owns the
//! decrement of `sleepers`.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::context;
use crate::process::{bump, Priority, Process, TransitionToIdle, TransitionToScheduled};
use crate::reason::ExitReason;
use crate::runtime::Shared;
use crate::signal;

/// Consecutive picks from `next` before it yields to the queue.
const NEXT_STREAK_LIMIT: u32 = 16;
/// How often (in picks) the injector is checked before the local queue.
const INJECTOR_CHECK_INTERVAL: u32 = 61;
/// Normal picks before a waiting low-priority process gets its turn.
const LOW_PRIORITY_SKIPS: u32 = 8;
/// Most processes taken from the injector at once.
const INJECTOR_BATCH: usize = 32;
/// Rounds of looking for work before parking.
const SPIN_ROUNDS: u32 = 64;

/// Per-priority FIFO queues plus the `next` slot.
#[derive(Default)]
pub(crate) struct RunQueue {
    high: VecDeque<Arc<Process>>,
    normal: VecDeque<Arc<Process>>,
    low: VecDeque<Arc<Process>>,
    normal_streak: u32,
}

impl RunQueue {
    /// Processes in the queues (all stealable).
    fn len(&self) -> usize {
        self.high.len() + self.normal.len() + self.low.len()
    }

    fn push_back(&mut self, process: Arc<Process>) {
        match process.priority() {
            Priority::High => self.high.push_back(process),
            Priority::Low => self.low.push_back(process),
            _ => self.normal.push_back(process),
        }
    }

    /// Pops the next process to run: high first, then normal, with low
    /// getting one pick in [`LOW_PRIORITY_SKIPS`] + 1 when normal work waits.
    fn pop(&mut self) -> Option<Arc<Process>> {
        if let Some(p) = self.high.pop_front() {
            return Some(p);
        }
        if !self.low.is_empty()
            && (self.normal.is_empty() || self.normal_streak >= LOW_PRIORITY_SKIPS)
        {
            self.normal_streak = 0;
            return self.low.pop_front();
        }
        self.normal_streak += 1;
        self.normal.pop_front()
    }

    /// Moves about half of the stealable processes into `into`.
    fn steal_half(&mut self, into: &mut RunQueue) -> usize {
        let mut moved = 0;
        for (from, to) in [
            (&mut self.high, &mut into.high),
            (&mut self.normal, &mut into.normal),
            (&mut self.low, &mut into.low),
        ] {
            let n = from.len().div_ceil(2);
            to.extend(from.drain(..n));
            moved += n;
        }
        moved
    }

    /// Moves everything into `into`.
    fn drain_into(&mut self, into: &mut RunQueue) {
        into.high.append(&mut self.high);
        into.normal.append(&mut self.normal);
        into.low.append(&mut self.low);
    }
}

/// One scheduler: its queues and counters. See the module docs.
pub(crate) struct Slot {
    pub(crate) index: usize,
    queue: Mutex<RunQueue>,
    /// Length of `queue`, readable without the lock.
    len: AtomicUsize,
    /// The process to run right after the current poll; owner-only (module
    /// docs, "Safety").
    next: UnsafeCell<Option<Arc<Process>>>,
    /// Whether `next` holds a process, for other threads.
    has_next: AtomicBool,
    thread: OnceLock<Thread>,
    /// Parked and waiting to be unparked.
    parked: AtomicBool,
    /// Whether this scheduler is online (takes work).
    online: AtomicBool,
    /// Nanoseconds spent polling processes.
    pub(crate) busy_ns: AtomicU64,
    /// Polls done.
    pub(crate) polls: AtomicU64,
    /// Reductions executed.
    pub(crate) reductions: AtomicU64,
}

// SAFETY: `next` is only accessed through `replace_next`, whose contract
// gives one thread exclusive use of it; everything else is atomic or locked.
unsafe impl Sync for Slot {}

impl Slot {
    fn new(index: usize) -> Slot {
        Slot {
            index,
            queue: Mutex::new(RunQueue::default()),
            len: AtomicUsize::new(0),
            next: UnsafeCell::new(None),
            has_next: AtomicBool::new(false),
            thread: OnceLock::new(),
            parked: AtomicBool::new(false),
            online: AtomicBool::new(true),
            busy_ns: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            reductions: AtomicU64::new(0),
        }
    }

    /// Processes other slots could steal from this one (all but `next`).
    fn stealable_len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// Processes waiting in this slot's queues, `next` included.
    pub(crate) fn queue_len(&self) -> usize {
        self.stealable_len() + usize::from(self.has_next.load(Ordering::Relaxed))
    }

    /// Whether the slot is online.
    pub(crate) fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    fn with_queue<R>(&self, f: impl FnOnce(&mut RunQueue) -> R) -> R {
        let mut q = self.queue.lock();
        let before = q.len();
        let r = f(&mut q);
        let after = q.len();
        if after != before {
            // SeqCst: the push side of the sleep protocol (module docs).
            self.len.store(after, Ordering::SeqCst);
        }
        r
    }

    /// Replaces `next`, returning what it held.
    ///
    /// # Safety
    ///
    /// The calling thread serves this slot, or every scheduler thread has
    /// stopped (module docs, "Safety").
    unsafe fn replace_next(&self, process: Option<Arc<Process>>) -> Option<Arc<Process>> {
        self.has_next.store(process.is_some(), Ordering::Relaxed);
        // SAFETY: owner-only per this fn's contract; the reference does not
        // outlive this statement.
        unsafe { std::mem::replace(&mut *self.next.get(), process) }
    }

    fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// The scheduler: all slots and the global injector.
pub(crate) struct Scheduler {
    pub(crate) slots: Box<[Slot]>,
    injector: Mutex<RunQueue>,
    injector_len: AtomicUsize,
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    pub(crate) started: Instant,
}

impl Scheduler {
    pub(crate) fn new(slots: usize) -> Scheduler {
        Scheduler {
            slots: (0..slots).map(Slot::new).collect(),
            injector: Mutex::new(RunQueue::default()),
            injector_len: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    /// Processes waiting in the global injector.
    pub(crate) fn injector_len(&self) -> usize {
        self.injector_len.load(Ordering::SeqCst)
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
            slot.online.store(slot.index < n, Ordering::SeqCst);
            slot.unpark();
        }
        previous
    }

    /// Whether `slot` has anything to run: its own queue (with `next`), the
    /// injector, or something it could steal.
    fn has_work_for(&self, slot: &Slot) -> bool {
        self.injector_len() > 0
            || slot.queue_len() > 0
            || self.slots.iter().any(|s| s.stealable_len() > 0)
    }

    /// Wakes one parked online slot, if any.
    fn notify_one(&self) {
        if self.sleepers.load(Ordering::SeqCst) == 0 {
            return;
        }
        for slot in self.slots.iter() {
            if slot.is_online() && slot.parked.swap(false, Ordering::SeqCst) {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                slot.unpark();
                return;
            }
        }
    }

    /// Stops every slot; they exit their loops.
    pub(crate) fn shut_down(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for slot in self.slots.iter() {
            slot.unpark();
        }
    }

    /// Removes every queued process (runtime shutdown, after every scheduler
    /// thread has stopped).
    pub(crate) fn drain_all(&self) -> Vec<Arc<Process>> {
        let mut all = RunQueue::default();
        self.with_injector(|q| q.drain_into(&mut all));
        for slot in self.slots.iter() {
            slot.with_queue(|q| q.drain_into(&mut all));
            // SAFETY: called by the runtime's teardown after every scheduler
            // thread has stopped.
            if let Some(p) = unsafe { slot.replace_next(None) } {
                all.push_back(p);
            }
        }
        all.high
            .into_iter()
            .chain(all.normal)
            .chain(all.low)
            .collect()
    }
}

/// A wake-up for `process` from anywhere (its [`Waker`], a message, a signal).
pub(crate) fn wake(process: &Arc<Process>) {
    if let TransitionToScheduled::Queue = process.state.transition_to_scheduled() {
        let from_a_process = context::try_with_current(|_| ()).is_some();
        enqueue(&process.rt, process.clone(), from_a_process);
    }
}

/// Queues a process that was just spawned (its `SCHEDULED` bit set).
pub(crate) fn enqueue_new(process: Arc<Process>) {
    let rt = process.rt.clone();
    enqueue(&rt, process, false);
}

/// Pushes a process whose `SCHEDULED` ticket the caller holds. On a scheduler
/// thread of the same runtime it goes to that slot (to `next` if `as_next`),
/// otherwise to the injector.
fn enqueue(rt: &Shared, process: Arc<Process>, as_next: bool) {
    let sched = &rt.sched;
    match context::current_slot(rt).map(|i| &sched.slots[i]) {
        Some(slot) if slot.is_online() => {
            let spilled = if as_next && process.priority() == Priority::Normal {
                // SAFETY: `current_slot` says this thread serves `slot`.
                unsafe { slot.replace_next(Some(process)) }
            } else {
                Some(process)
            };
            if let Some(process) = spilled {
                slot.with_queue(|q| q.push_back(process));
                sched.notify_one();
            }
        }
        _ => {
            sched.with_injector(|q| q.push_back(process));
            sched.notify_one();
        }
    }
}

/// The loop of the thread serving slot `index`.
pub(crate) fn run_slot(rt: Arc<Shared>, index: usize) {
    let _ = rt.sched.slots[index].thread.set(thread::current());
    context::enter_scheduler(rt.clone(), index);
    let _tokio = rt.tokio.as_ref().map(|h| h.enter());
    let slot = &rt.sched.slots[index];
    let mut picks: u32 = 0;
    let mut next_streak: u32 = 0;
    // When the previous poll ended: the next poll's start, so each poll reads
    // the clock once. The loop's own bookkeeping is charged to the next poll.
    let mut clock = Instant::now();
    while !rt.sched.shutdown.load(Ordering::Acquire) {
        if !slot.is_online() {
            go_offline(&rt, slot);
            continue;
        }
        picks = picks.wrapping_add(1);
        let found = if picks % INJECTOR_CHECK_INTERVAL == 0 {
            take_from_injector(&rt.sched, slot).or_else(|| pop_local(slot, &mut next_streak))
        } else {
            pop_local(slot, &mut next_streak).or_else(|| take_from_injector(&rt.sched, slot))
        };
        match found.or_else(|| steal(&rt.sched, slot)) {
            Some(process) => clock = run(slot, process, clock),
            None => {
                idle(&rt.sched, slot);
                clock = Instant::now();
            }
        }
    }
    context::leave_scheduler();
}

/// The next process from the slot's own queues. Called by the thread
/// serving `slot` only.
fn pop_local(slot: &Slot, next_streak: &mut u32) -> Option<Arc<Process>> {
    // SAFETY: `run_slot`'s thread serves `slot` (our caller's contract).
    let next = unsafe { slot.replace_next(None) };
    if let Some(next) = next {
        // The streak limit and high priority only matter when others wait.
        if slot.stealable_len() == 0 {
            *next_streak = 0;
            return Some(next);
        }
        let take_next = *next_streak < NEXT_STREAK_LIMIT;
        let (picked, from_next) = slot.with_queue(|q| {
            if !q.high.is_empty() || !take_next {
                let picked = q.pop();
                q.push_back(next);
                (picked, false)
            } else {
                (Some(next), true)
            }
        });
        *next_streak = if from_next { *next_streak + 1 } else { 0 };
        return picked;
    }
    *next_streak = 0;
    if slot.stealable_len() == 0 {
        return None;
    }
    slot.with_queue(RunQueue::pop)
}

fn take_from_injector(sched: &Scheduler, slot: &Slot) -> Option<Arc<Process>> {
    if sched.injector_len() == 0 {
        return None;
    }
    let mut batch = Vec::new();
    let first = sched.with_injector(|q| {
        let first = q.pop();
        while batch.len() < INJECTOR_BATCH {
            match q.pop() {
                Some(p) => batch.push(p),
                None => break,
            }
        }
        first
    });
    if !batch.is_empty() {
        slot.with_queue(|q| batch.into_iter().for_each(|p| q.push_back(p)));
        sched.notify_one();
    }
    first
}

fn steal(sched: &Scheduler, thief: &Slot) -> Option<Arc<Process>> {
    let n = sched.slots.len();
    for offset in 1..n {
        let victim = &sched.slots[(thief.index + offset) % n];
        if victim.stealable_len() == 0 {
            continue;
        }
        let mut loot = RunQueue::default();
        let moved = victim.with_queue(|q| q.steal_half(&mut loot));
        if moved == 0 {
            continue;
        }
        let first = loot.pop();
        thief.with_queue(|q| loot.drain_into(q));
        return first;
    }
    None
}

fn idle(sched: &Scheduler, slot: &Slot) {
    for _ in 0..SPIN_ROUNDS {
        if sched.has_work_for(slot) || sched.shutdown.load(Ordering::Acquire) {
            return;
        }
        std::hint::spin_loop();
        thread::yield_now();
    }
    slot.parked.store(true, Ordering::SeqCst);
    sched.sleepers.fetch_add(1, Ordering::SeqCst);
    if sched.has_work_for(slot) || sched.shutdown.load(Ordering::SeqCst) || !slot.is_online() {
        if slot.parked.swap(false, Ordering::SeqCst) {
            sched.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        return;
    }
    while slot.parked.load(Ordering::SeqCst) {
        thread::park_timeout(Duration::from_millis(100));
        if sched.shutdown.load(Ordering::SeqCst) || !slot.is_online() {
            if slot.parked.swap(false, Ordering::SeqCst) {
                sched.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
            return;
        }
    }
}

fn go_offline(rt: &Shared, slot: &Slot) {
    let mut moved = RunQueue::default();
    slot.with_queue(|q| q.drain_into(&mut moved));
    // SAFETY: called by the thread serving `slot`.
    if let Some(p) = unsafe { slot.replace_next(None) } {
        moved.push_back(p);
    }
    if moved.len() > 0 {
        rt.sched.with_injector(|q| moved.drain_into(q));
        rt.sched.notify_one();
    }
    while !slot.is_online() && !rt.sched.shutdown.load(Ordering::SeqCst) {
        thread::park_timeout(Duration::from_millis(100));
    }
}

/// Polls one process once and files it where it belongs afterwards. `started`
/// is when the poll began (the end of the previous one); returns when it ended.
fn run(slot: &Slot, process: Arc<Process>, started: Instant) -> Instant {
    if !process.state.transition_to_running() {
        drop_future(&process);
        return Instant::now();
    }
    // The process moves into the context for the poll and comes back after:
    // no reference count traffic on the hot path.
    context::set_current(Some(process));
    let outcome = context::with_current("poll", |process| {
        let waker = futures_task::waker_ref(process);
        let mut cx = Context::from_waker(&waker);
        // SAFETY: `transition_to_running` gave this thread `RUNNING`.
        panic::catch_unwind(AssertUnwindSafe(|| unsafe { process.body.poll(&mut cx) }))
    });
    let reductions = u64::from(context::reductions_used());
    let Some(process) = context::set_current(None) else {
        unreachable!("the context still holds the process it was given")
    };
    let ended = Instant::now();
    let elapsed = ended.duration_since(started).as_nanos() as u64;
    // Only this thread writes these counters now (slot owner, RUNNING holder).
    bump(&process.cpu_ns, elapsed);
    bump(&process.reductions, reductions);
    bump(&slot.busy_ns, elapsed);
    bump(&slot.polls, 1);
    bump(&slot.reductions, reductions);
    match outcome {
        Ok(Some(Poll::Pending)) => match process.state.transition_to_idle() {
            TransitionToIdle::Idle => {}
            TransitionToIdle::Requeue => {
                let rt = process.rt.clone();
                enqueue(&rt, process, false);
            }
            TransitionToIdle::Exiting => drop_future(&process),
        },
        Ok(Some(Poll::Ready(reason))) => {
            drop_future(&process);
            signal::terminate(&process, reason);
        }
        Ok(None) => {
            // Already dropped: only a process that exited can be here.
            signal::terminate(&process, ExitReason::Normal);
        }
        Err(payload) => {
            drop_future(&process);
            signal::terminate(&process, ExitReason::Panic(panic_message(&*payload).into()));
        }
    }
    ended
}

/// Drops a process's body and saved messages inside its own context; a
/// panicking destructor is contained. The caller holds `RUNNING`.
fn drop_future(process: &Arc<Process>) {
    // SAFETY: our caller holds `RUNNING` (see `run`).
    let body = unsafe { process.body.take() };
    let previous = context::set_current(Some(process.clone()));
    if panic::catch_unwind(AssertUnwindSafe(move || drop(body))).is_err() {
        tracing::warn!(pid = %process.pid, "a destructor panicked while dropping a process body");
    }
    // SAFETY: our caller holds the process's RUNNING bit: exclusive use
    // (mailbox module docs, "Safety").
    unsafe { process.mailbox.clear_saved() };
    context::set_current(previous);
}

/// Installs (once per program) a panic hook that reports a panic inside a
/// process as one line naming the process, like a crash report, instead of
/// the default multi-line report; panics elsewhere go to the previous hook.
pub(crate) fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
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

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
