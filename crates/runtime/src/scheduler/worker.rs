//! Workers: the OS threads that serve slots (and, once demoted, the
//! background pool), and the poll loop itself.
//!
//! # Who holds what
//!
//! A worker serves at most one slot at a time: the slot's `owner` names it
//! and the worker's `slot` names the slot. The watchdog may take the slot
//! away while the worker is inside a poll; the worker notices when the poll
//! returns (the slot's `owner` no longer names it) and from then on touches
//! only the process it was polling, which it requeues through the injector
//! (or the background queue). A demoted worker never serves a slot again: it
//! joins the background pool and serves repeat offenders until it has been
//! idle for [`Preemption::background_idle`](super::Preemption).
//!
//! Every poll is published for the watchdog: `poll_epoch` is odd during a
//! poll, with the polled pid and the poll's start time beside it.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use super::clock::WorkerClock;
use super::os::{self, ThreadClock};
use super::park::{NoDriver, Parker};
use super::queue::{Class, RunQueue, Streaks};
use super::slot::Slot;
use super::Scheduler;
use crate::context;
use crate::memory;
use crate::net::reactor;
use crate::process::{bump, End, Parked, Picked, Process, Running};
use crate::reason::ExitReason;
use crate::runtime::Shared;
use crate::signal;
use crate::timer::Sleep;

/// `Worker::slot` when the worker serves no slot.
pub(crate) const NO_SLOT: usize = usize::MAX;

/// Consecutive picks from `next` before it yields to the queue.
const NEXT_STREAK_LIMIT: u32 = 16;
/// How often (in picks) the injector is checked before the local queue.
const INJECTOR_CHECK_INTERVAL: u32 = 61;
/// Most processes taken from the injector at once.
const INJECTOR_BATCH: usize = 32;
/// How long an idle worker keeps looking for work (and polling the pollset
/// without blocking) before it sleeps: about as long as the 64 rounds of
/// `sched_yield` it used to spin took on an otherwise idle core.
const SPIN: Duration = Duration::from_micros(40);

/// How long an idle worker spins: [`SPIN`], also when the process may run
/// on one core only (its affinity, `taskset -c N`, or a CPU quota of one).
/// Its other threads then share that core and wait while it spins; but
/// the one that mattered, `ember-io` reading a distribution connection,
/// no longer reads plain TCP connections of a runtime's node (a process
/// of the runtime does, see `ember_dist`), and a spin that catches the
/// next event saves the sleep and wake-up, the larger part of a remote
/// call's round trip on a VM (p50 77 → 23 µs on a pinned pair). A TLS
/// connection's reader still runs on `ember-io`: on one core, each of its
/// messages may wait out a spin.
fn spin() -> Duration {
    SPIN
}

/// One OS thread of the scheduler.
pub(crate) struct Worker {
    pub(crate) id: usize,
    thread: OnceLock<Thread>,
    clock: OnceLock<ThreadClock>,
    /// Kernel thread id (for priority changes), 0 until the thread starts.
    pub(crate) tid: AtomicI32,
    /// The slot this worker serves, or [`NO_SLOT`].
    pub(crate) slot: AtomicUsize,
    /// Demoted: a background thread for good.
    pub(crate) background: AtomicBool,
    /// Current ladder level: nice steps above the node's base nice value
    /// (19 is SCHED_IDLE with `Preemption::sched_idle`).
    pub(crate) nice: AtomicI32,
    /// The deepest step of the demotion ladder this thread has reached: its
    /// nice value unless it is relieved.
    pub(crate) ladder: AtomicI32,
    /// Raised to the relief level for starvation (the watchdog's window).
    pub(crate) relieved: AtomicBool,
    /// Odd while inside a poll; bumped at each poll's start and end.
    pub(crate) poll_epoch: AtomicU64,
    /// The pid key of the process being polled.
    pub(crate) poll_pid: AtomicU64,
    /// When the current poll started, in ns since the scheduler started.
    pub(crate) poll_started_ns: AtomicU64,
    /// When the thread last came back from a park, in ns since the
    /// scheduler started (`u64::MAX`: never), and its thread's CPU time
    /// (ns) read just after: the watchdog's bound on what a poll started
    /// since has used (`Worker::stamp_unpark`).
    pub(crate) unparked_ns: AtomicU64,
    /// See [`Worker::unparked_ns`].
    pub(crate) unparked_cpu: AtomicU64,
    /// The thread has finished.
    pub(crate) exited: AtomicBool,
    /// Where the thread sleeps while the slot it serves is idle (the slot
    /// points at it: `Slot::set_parker`).
    pub(crate) parker: Arc<Parker>,
}

impl Worker {
    pub(crate) fn new(id: usize, slot: usize, background: bool) -> Worker {
        Worker {
            id,
            thread: OnceLock::new(),
            clock: OnceLock::new(),
            tid: AtomicI32::new(0),
            slot: AtomicUsize::new(slot),
            background: AtomicBool::new(background),
            nice: AtomicI32::new(0),
            ladder: AtomicI32::new(0),
            relieved: AtomicBool::new(false),
            poll_epoch: AtomicU64::new(0),
            poll_pid: AtomicU64::new(0),
            poll_started_ns: AtomicU64::new(0),
            unparked_ns: AtomicU64::new(u64::MAX),
            unparked_cpu: AtomicU64::new(0),
            exited: AtomicBool::new(false),
            parker: Arc::new(Parker::new()),
        }
    }

    /// CPU time of this worker's thread so far (ns).
    pub(crate) fn cpu_ns(&self) -> u64 {
        self.clock.get().map_or(0, |c| c.cpu_ns())
    }

    pub(crate) fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    fn begin_poll(&self, pid_key: u64, now_ns: u64) {
        self.poll_pid.store(pid_key, Ordering::Relaxed);
        self.poll_started_ns.store(now_ns, Ordering::Relaxed);
        let epoch = self.poll_epoch.load(Ordering::Relaxed);
        self.poll_epoch.store(epoch + 1, Ordering::Release);
    }

    /// Records that the thread has just come back from a park: the wall
    /// time first, then its CPU time. A poll that starts later has used at
    /// least the CPU time since, minus the wall time from here to its start
    /// (the thread can have used no more in between), which the watchdog
    /// reads to charge a poll it sees for the first time (`sysmon`'s
    /// `observe`): a parked thread uses no CPU, so the charge no longer
    /// stops at the watchdog's previous look. One clock read per park, none
    /// per poll.
    /// An unreadable clock (read as 0) leaves the last stamp: a zero here
    /// would charge the poll its thread's whole CPU time.
    fn stamp_unpark(&self, now_ns: u64) {
        let cpu = self.cpu_ns();
        if cpu == 0 {
            return;
        }
        self.unparked_cpu.store(cpu, Ordering::Release);
        self.unparked_ns.store(now_ns, Ordering::Release);
    }

    fn end_poll(&self) {
        let epoch = self.poll_epoch.load(Ordering::Relaxed);
        self.poll_epoch.store(epoch + 1, Ordering::Release);
    }
}

/// The body of every worker thread.
pub(crate) fn worker_main(rt: Arc<Shared>, me: Arc<Worker>) {
    let _ = me.thread.set(thread::current());
    if let Ok(clock) = ThreadClock::current() {
        let _ = me.clock.set(clock);
    }
    me.tid.store(os::current_tid(), Ordering::Release);
    if me.background.load(Ordering::Acquire) {
        rt.sched.demote_to(&me, rt.sched.config.background_nice());
    }
    let _tokio = rt.tokio.as_ref().map(|driver| driver.handle().enter());
    context::enter_runtime(rt.clone(), me.id);
    let sched = &rt.sched;
    while !sched.is_shut_down() {
        let slot = me.slot.load(Ordering::Acquire);
        if slot != NO_SLOT {
            serve_slot(&rt, &me, &sched.slots[slot]);
        } else if me.background.load(Ordering::Acquire) {
            if !serve_background(&rt, &me) {
                break;
            }
        } else if !sched.workers.wait_as_spare(&me, sched) {
            break;
        }
    }
    if sched.is_shut_down() {
        // The teardown may have drained the queues while this thread was
        // still inside a poll; what it queued since is dropped here.
        sched.drop_queued();
    }
    context::leave_runtime();
    me.exited.store(true, Ordering::Release);
    sched.workers.retire(&me);
}

/// Serves `slot` until the worker loses it (hand-off), or shutdown.
fn serve_slot(rt: &Arc<Shared>, me: &Arc<Worker>, slot: &Slot) {
    let sched = &rt.sched;
    slot.set_parker(me.parker.clone());
    context::set_slot(Some(slot.index));
    let mut picks: u32 = 0;
    let mut next_streak: u32 = 0;
    // The fairness counters of the slot's queues (`RunQueue::pop_with`).
    let mut streaks = Streaks::default();
    // When the previous poll ended (nanoseconds since the scheduler started):
    // the next poll's start, so each poll reads the clock once. The loop's
    // own bookkeeping is charged to the next poll.
    let mut time = WorkerClock::new(sched.started);
    let mut clock = time.now();
    let mut io_checked = clock;
    // Scratch space for the timers that fire.
    let mut fired = Vec::new();
    // Counted among the searching workers (`idle`): from when `idle` let
    // it search until it finds work or parks.
    let mut searching = false;
    while !sched.is_shut_down() && slot.remote.owner.load(Ordering::Acquire) == me.id {
        if !slot.is_online() {
            if std::mem::take(&mut searching) {
                sched.stop_searching();
            }
            go_offline(rt, slot, me, &mut fired);
            clock = time.now();
            continue;
        }
        // The slot's timers, between polls: what they wake queues here.
        let next_due = rt.timers.next_due(slot.index);
        if rt.timers.ms_at_ns(clock) >= next_due {
            // Confirmed by the OS clock, which deadlines are measured on:
            // a timer never fires early (`clock`'s module docs).
            let now_ms = rt.timers.ms_at(Instant::now());
            if now_ms >= next_due {
                rt.timers.fire_due(rt, slot.index, now_ms, &mut fired);
            }
        }
        // Busy: look at the pollset now and then without blocking, so that
        // sockets keep flowing while every scheduler has work.
        if clock.saturating_sub(io_checked) >= reactor::CHECK_INTERVAL.as_nanos() as u64 {
            sched.reactor.poll(Duration::ZERO);
            io_checked = clock;
        }
        picks = picks.wrapping_add(1);
        // Work in the injector was woken from outside (timers, I/O): it goes
        // before local batch work, and at least every 61 picks regardless.
        let injector_first = picks % INJECTOR_CHECK_INTERVAL == 0
            || (sched.injector_len() > 0 && !slot.has_interactive());
        let found = if injector_first {
            take_from_injector(sched, slot)
                .or_else(|| pop_local(slot, &mut next_streak, &mut streaks))
        } else {
            pop_local(slot, &mut next_streak, &mut streaks)
                .or_else(|| take_from_injector(sched, slot))
        };
        match found.or_else(|| steal(sched, slot)) {
            Some((process, class)) => {
                if std::mem::take(&mut searching) {
                    // After taking its work: what is left may need a worker.
                    sched.stop_searching();
                }
                clock = run(rt, me, Some(slot), process, class, clock, &mut time);
            }
            None => {
                idle(rt, slot, me, &mut fired, &mut searching);
                clock = time.now();
                io_checked = clock;
            }
        }
    }
    if searching {
        sched.stop_searching();
    }
    context::set_slot(None);
}

/// The next process from the slot's own queues, `next` first.
fn pop_local(
    slot: &Slot,
    next_streak: &mut u32,
    streaks: &mut Streaks,
) -> Option<(Arc<Process>, Class)> {
    if let Some(next) = slot.take_next() {
        // The streak limit and high priority only matter when others wait.
        if slot.stealable_len() == 0 {
            *next_streak = 0;
            return Some((next, Class::Woken));
        }
        if *next_streak < NEXT_STREAK_LIMIT && !slot.has_high() {
            *next_streak += 1;
            return Some((next, Class::Woken));
        }
        // `next` yields to the queue, and goes to the back of the woken
        // queue (unless thieves have just emptied the queue).
        *next_streak = 0;
        return match slot.pop(streaks) {
            Some(picked) => {
                slot.push(next, Class::Woken);
                Some(picked)
            }
            None => Some((next, Class::Woken)),
        };
    }
    *next_streak = 0;
    if slot.stealable_len() == 0 {
        return None;
    }
    slot.pop(streaks)
}

fn take_from_injector(sched: &Scheduler, slot: &Slot) -> Option<(Arc<Process>, Class)> {
    if sched.injector_len() == 0 {
        return None;
    }
    let mut batch = RunQueue::default();
    let first = sched.with_injector(|q| {
        let first = q.pop();
        let mut n = 0;
        while n < INJECTOR_BATCH {
            match q.pop() {
                Some((p, class)) => batch.push(p, class),
                None => break,
            }
            n += 1;
        }
        first
    });
    if batch.len() > 0 {
        slot.push_all(&mut batch);
        sched.notify_one();
    }
    first
}

fn steal(sched: &Scheduler, thief: &Slot) -> Option<(Arc<Process>, Class)> {
    let n = sched.slots.len();
    for offset in 1..n {
        let victim = &sched.slots[(thief.index + offset) % n];
        if victim.stealable_len() == 0 {
            continue;
        }
        // Into this thread's scratch queue, whose buffers are kept: no
        // allocation while the victim's lock is held (its owner's pushes
        // wait for it).
        let stolen = LOOT.with(|loot| {
            let mut loot = loot.borrow_mut();
            if victim.steal_half_into(&mut loot) == 0 {
                return None;
            }
            let first = loot.pop();
            thief.push_all(&mut loot);
            first
        });
        if stolen.is_some() {
            return stolen;
        }
    }
    None
}

thread_local! {
    /// A worker's scratch queue for what it steals (always empty between
    /// steals).
    static LOOT: std::cell::RefCell<RunQueue> = std::cell::RefCell::new(RunQueue::default());
}

/// Nothing to do: search briefly (spin), if not too many workers search
/// already (`idle`), then park until notified or until the slot's next
/// timer is due (then it fires it). Returns still `searching` if the search
/// found work: the caller stops searching once it has taken it.
fn idle(rt: &Shared, slot: &Slot, me: &Worker, fired: &mut Fired, searching: &mut bool) {
    let sched = &rt.sched;
    let leave = || {
        sched.is_shut_down()
            || !slot.is_online()
            || slot.remote.owner.load(Ordering::Acquire) != me.id
    };
    if !*searching {
        *searching = sched.idle.start_searching(sched.online());
    }
    if *searching {
        // Spin without `sched_yield`: under EEVDF a yield hands the core to
        // any other runnable thread, such as a demoted hog, for as long as
        // its long slice lets it keep it, and this thread, runnable rather
        // than asleep, is not woken early by a socket event. The pollset is
        // looked at while spinning, so such an event is seen at once.
        let spin_until = Instant::now() + spin();
        let next_due = rt.timers.next_due(slot.index);
        loop {
            if sched.has_work_for(slot) || leave() {
                return;
            }
            sched.reactor.poll(Duration::ZERO);
            let now = Instant::now();
            // A timer due: back to the loop, which fires it.
            if now >= spin_until || rt.timers.ms_at(now) >= next_due {
                break;
            }
            std::hint::spin_loop();
        }
        // Before the slot is marked parked and the last look below: a push
        // that saw this worker searching (and notified nobody) is seen there.
        *searching = false;
        sched.idle.stop_searching();
    }
    if rt.timers.ms_at(Instant::now()) >= rt.timers.next_due(slot.index) {
        return;
    }
    // tokio tasks spawned and left to run, or asked for by a demoted
    // thread, need tokio's driver.
    rt.start_tokio_if_needed(false);
    sched.idle.mark_parked(slot.index);
    if !(sched.has_work_for(slot) || leave()) {
        while sched.idle.is_parked(slot.index) {
            wait(rt, slot, me, fired);
            if leave() || sched.has_work_for(slot) {
                break;
            }
        }
    }
    sched.unmark_parked(slot);
    // Unparked (by this swap or the unparker's): a watchdog that dozed
    // because every worker was parked must look again (`park::Doze`).
    sched.doze.wake_if_dozing();
}

/// Scratch space for fired timers.
type Fired = Vec<(crate::timer::WheelKey, crate::timer::TimerAction)>;

/// The longest a parked worker sleeps without a reason to wake.
const NAP: Duration = Duration::from_millis(100);

/// Sleeps on the worker's parker until unparked, or until the slot's next
/// timer is due, and fires what is due: in the pollset if no other worker
/// polls it (its events then wake processes onto this slot), else on the
/// parker's condition variable.
fn wait(rt: &Shared, slot: &Slot, me: &Worker, fired: &mut Fired) {
    let sched = &rt.sched;
    let now = Instant::now();
    let now_ms = rt.timers.ms_at(now);
    let cap = rt.timers.ms_at(now + NAP);
    // An arm that sees the sleep recorded wakes the slot's parker: before
    // the park it leaves a notification, which the park takes at once
    // (`crate::timer`, "Sleeping and arming").
    if let Sleep::Until(until) = rt.timers.prepare_sleep(slot.index, now_ms, cap) {
        let timeout = rt
            .timers
            .instant_at(until)
            .saturating_duration_since(now)
            .min(NAP);
        if sched.idle.is_parked(slot.index) {
            me.parker.park(&*sched.reactor, timeout);
            me.stamp_unpark(sched.nanos_since_start(Instant::now()));
        }
        rt.timers.awake(slot.index);
    }
    let now_ms = rt.timers.ms_at(Instant::now());
    if now_ms >= rt.timers.next_due(slot.index) {
        rt.timers.fire_due(rt, slot.index, now_ms, fired);
    }
}

/// Serves nothing while the slot is offline, but still fires its timers on
/// time (what they wake goes to the injector).
fn go_offline(rt: &Shared, slot: &Slot, me: &Worker, fired: &mut Fired) {
    let sched = &rt.sched;
    let mut moved = RunQueue::default();
    slot.drain_into(&mut moved);
    if moved.len() > 0 {
        sched.with_injector(|q| moved.drain_into(q));
        sched.notify_one();
    }
    while !slot.is_online()
        && !sched.is_shut_down()
        && slot.remote.owner.load(Ordering::Acquire) == me.id
    {
        let now = Instant::now();
        let (now_ms, cap) = (rt.timers.ms_at(now), rt.timers.ms_at(now + NAP));
        if let Sleep::Until(until) = rt.timers.prepare_sleep(slot.index, now_ms, cap) {
            let timeout = rt.timers.instant_at(until).saturating_duration_since(now);
            me.parker.park(&NoDriver, timeout.min(NAP));
            rt.timers.awake(slot.index);
        }
        let now_ms = rt.timers.ms_at(Instant::now());
        if now_ms >= rt.timers.next_due(slot.index) {
            rt.timers.fire_due(rt, slot.index, now_ms, fired);
        }
    }
}

/// Serves the background queue (repeat offenders). Returns false when the
/// worker has been idle long enough to exit, or at shutdown.
fn serve_background(rt: &Arc<Shared>, me: &Arc<Worker>) -> bool {
    let sched = &rt.sched;
    context::set_slot(None);
    let mut time = WorkerClock::new(sched.started);
    let mut clock = time.now();
    loop {
        if sched.is_shut_down() {
            return false;
        }
        if let Some(process) = sched.pop_background() {
            clock = run(rt, me, None, process, Class::Batch, clock, &mut time);
            continue;
        }
        if !sched.workers.wait_for_background_work(me, sched) {
            return false;
        }
        clock = time.now();
    }
}

/// Polls one process once and files it where it belongs afterwards. `started`
/// is when the poll began (the end of the previous one), returns when it
/// ended, both in nanoseconds since the scheduler started (`time`).
fn run(
    rt: &Shared,
    me: &Worker,
    slot: Option<&Slot>,
    process: Arc<Process>,
    class: Class,
    started: u64,
    time: &mut WorkerClock,
) -> u64 {
    let sched = &rt.sched;
    let running = match Running::pick(process) {
        Picked::Poll(running) => running,
        Picked::Exiting(running) => {
            running.exit(End::Killed);
            return time.now();
        }
    };
    me.begin_poll(running.process().pid.key(), started);
    if let Some(slot) = slot {
        slot.core
            .running_batch
            .store(class == Class::Batch, Ordering::Relaxed);
        // Only when set: the line is the one thieves and notifiers read.
        if slot.remote.preempt.load(Ordering::Relaxed) {
            slot.remote.preempt.store(false, Ordering::Relaxed);
        }
    }
    // The context points at the process's `RUNNING` guard for the poll: no
    // reference count traffic on the hot path.
    context::start_slice(sched.started, started.saturating_add(sched.slice_ns));
    let outcome = context::enter(&running, || {
        let process = running.process();
        // Suspended on a busy distribution connection: not polled until
        // its suspension is resumed, which wakes it (`dist::Suspension`).
        // A count seen above zero is confirmed by a read-modify-write,
        // which reads the newest value: a resume's wake-up that found the
        // process already scheduled published nothing (see `state`), so a
        // stale count must not park it. Its loom model is in `dist.rs`.
        if process.busy_dist.load(Ordering::Acquire) > 0
            && process.busy_dist.fetch_add(0, Ordering::AcqRel) > 0
        {
            return Ok(Some(Poll::Pending));
        }
        let waker = crate::process::waker_ref(process);
        let mut cx = Context::from_waker(&waker);
        // Charged to its memory account if it has a limit; a panic is
        // caught (`Running::poll`).
        running.poll(&mut cx)
    });
    let reductions = u64::from(context::reductions_used());
    let yielded = context::take_yielded();
    me.end_poll();
    let ended = time.now();
    let elapsed = ended.saturating_sub(started);
    let process = running.process();
    // Only the RUNNING holder writes the process's counters.
    bump(&process.cpu_ns, elapsed);
    bump(&process.reductions, reductions);
    let still_owner = slot.filter(|s| s.remote.owner.load(Ordering::Acquire) == me.id);
    if let Some(slot) = still_owner {
        // Only the slot's owner writes its counters.
        bump(&slot.core.busy_ns, elapsed);
        bump(&slot.core.polls, 1);
        bump(&slot.core.reductions, reductions);
    } else if slot.is_some() && me.background.load(Ordering::Acquire) {
        // Retaken and demoted during this poll: a CPU hog.
        process.record_offense();
    }
    let mut outcome = outcome;
    // Over its memory limit during this poll (and the watchdog did not get
    // to it first): it ends now with `memory_limit`, whatever the body did.
    if memory::claim_after_poll(process) {
        if let Ok(Some(Poll::Pending)) = outcome {
            // Still running: terminated like a kill, its body dropped just
            // below (`Parked::Exiting`).
            signal::terminate(process, ExitReason::memory_limit());
        } else {
            let finished = std::mem::replace(
                &mut outcome,
                Ok(Some(Poll::Ready(ExitReason::memory_limit()))),
            );
            drop_contained(finished);
        }
    }
    // Every way the process ends goes through `Running::exit`.
    match outcome {
        Ok(Some(Poll::Pending)) => match running.park() {
            Parked::Idle => {}
            Parked::Requeue(process) => {
                let class = if yielded { Class::Batch } else { Class::Woken };
                match still_owner {
                    Some(slot) => sched.push_local(slot, process, class),
                    // A background worker (demoted during this poll, or
                    // serving offenders) serves the background queue next.
                    None if process.is_offender() && me.background.load(Ordering::Acquire) => {
                        sched.queue_background(process);
                    }
                    None => sched.push_global(process, class),
                }
            }
            Parked::Exiting(running) => running.exit(End::Killed),
        },
        Ok(Some(Poll::Ready(reason))) => running.exit(End::Finished(reason)),
        Ok(None) => running.exit(End::Finished(ExitReason::Normal)),
        Err(payload) => {
            let reason = ExitReason::Panic(panic_message(&*payload).into());
            drop_contained(payload);
            running.exit(End::Finished(reason));
        }
    }
    ended
}

/// Drops user data (a body, messages) that may have a panicking destructor,
/// containing the panic: the runtime's own threads and a process that merely
/// discards someone else's data must not go down for it.
pub(crate) fn drop_contained<T>(value: T) {
    if panic::catch_unwind(AssertUnwindSafe(move || drop(value))).is_err() {
        tracing::warn!("ember: a destructor panicked while the runtime dropped a value");
    }
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
