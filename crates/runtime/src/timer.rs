//! Timers: `send_after`, `cancel_timer`, `read_timer`, and the wake-ups behind
//! receive timeouts and [`sleep`](crate::sleep).
//!
//! Every scheduler slot owns a hierarchical timing wheel ([`wheel::Wheel`],
//! millisecond resolution, O(1) arm and cancel) behind its own lock. There is
//! no timer thread: the workers service the wheels.
//!
//! * **Arming** puts the timer on the wheel of the slot the arming thread
//!   serves (a process's timers live where it runs), so the lock is taken by
//!   its own worker and is uncontended; a thread serving no slot (a
//!   background worker, a handle) arms on a slot chosen by the target's pid.
//! * **Firing**: a busy worker looks at its slot's earliest deadline
//!   (`next_due`, an atomic) between polls and fires what is due; what fires
//!   is delivered outside the lock, and the processes it wakes are queued on
//!   that slot. An idle worker parks (in the pollset or on its thread) no
//!   longer than until its slot's earliest deadline.
//! * **Cancelling** from any thread takes the lock of the slot the timer's
//!   key names and unlinks it; a timer is either still in its wheel (the
//!   cancel removes it and it never fires) or already taken out by a firing
//!   (the cancel answers `None`): one critical section decides.
//! * **Sleeping and arming** (no lost wake-up): a worker about to park
//!   records, under the wheel's lock, the deadline it sleeps until
//!   (`sleeping_until`; 0 while awake). An arm with an earlier deadline sees
//!   it under the same lock and wakes the worker (pollset and thread); an arm
//!   before the record is seen by the worker's look at the wheel. The wake
//!   goes through the worker's parker (`scheduler::park`), whose state word
//!   says where it sleeps (pollset or condition variable); a wake before
//!   the worker parks leaves a notification there, and the park returns at
//!   once.
//! * **A worker stuck in one poll** (native code): the watchdog, which looks
//!   at every poll in progress each millisecond, fires the overdue timers of
//!   any slot (`fire_overdue`), queueing what they wake on the injector, as
//!   the timer thread did; the slot is handed off as usual later.
//!
//! The loom models at the end of this file check the two protocols above on
//! this code (`SlotTimers`).

mod wheel;

use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::context;
use crate::loom::sync::atomic::{AtomicU64, Ordering};
use crate::loom::sync::Mutex;
use crate::mailbox::Envelope;
use crate::pid::{Pid, TimerRef};
use crate::process::Process;
use crate::runtime::Shared;
use crate::scheduler;
pub(crate) use wheel::TimerKey as WheelKey;
use wheel::Wheel;

/// What happens when a timer fires.
pub(crate) enum TimerAction {
    /// Deliver a message (`send_after`): boxed, so that the wheel's slots
    /// stay small for the receive timeouts of a million sleeping processes.
    Send(Box<(Pid, Envelope)>),
    /// Wake a process (receive timeouts).
    Wake(Arc<Process>),
    /// Wake a task ([`time::Sleep`](crate::time::Sleep)): boxed like `Send`.
    Waker(Box<Waker>),
}

/// Names one timer: the slot whose wheel holds it and its key there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey {
    slot: u32,
    key: WheelKey,
}

impl TimerKey {
    /// A key that names no timer (a timer that was never armed).
    const STALE: TimerKey = TimerKey {
        slot: u32::MAX,
        key: WheelKey::STALE,
    };

    fn to_ref(self) -> TimerRef {
        TimerRef {
            slot: self.slot,
            key: self.key.to_u64(),
        }
    }

    fn from_ref(timer: TimerRef) -> TimerKey {
        TimerKey {
            slot: timer.slot,
            key: WheelKey::from_u64(timer.key),
        }
    }
}

/// The wheel of one slot and what its worker sleeps until.
struct SlotWheel<T> {
    wheel: Wheel<T>,
    /// The deadline (ms) the slot's worker sleeps until, `u64::MAX` for
    /// "until woken"; 0 while it is awake (it looks at `next_due` itself).
    sleeping_until: u64,
    /// The runtime is gone: arming drops the timer at once.
    closed: bool,
}

/// One slot's timers: a wheel behind a lock, which only the slot's worker
/// takes on the fast path. Pure data and time in ms: the clock and the
/// delivery are the caller's ([`Timers`]).
pub(crate) struct SlotTimers<T> {
    state: Mutex<SlotWheel<T>>,
    /// The earliest pending deadline (ms), `u64::MAX` if none, or earlier:
    /// a cancel does not raise it, so a look may find nothing due.
    next_due: AtomicU64,
}

/// What a worker about to sleep must do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sleep {
    /// A timer is due: fire instead of sleeping.
    Fire,
    /// Sleep until this deadline (ms), or until woken.
    Until(u64),
}

impl<T> SlotTimers<T> {
    pub(crate) fn new() -> SlotTimers<T> {
        SlotTimers {
            state: Mutex::new(SlotWheel {
                wheel: Wheel::new(0),
                sleeping_until: 0,
                closed: false,
            }),
            next_due: AtomicU64::new(u64::MAX),
        }
    }

    /// Arms a timer. Returns its key and whether the slot's worker sleeps
    /// past `deadline` and must be woken by the caller; gives the value back
    /// if the timers are closed.
    pub(crate) fn arm(&self, deadline: u64, value: T) -> Result<(WheelKey, bool), T> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(value);
        }
        let key = state.wheel.insert(deadline, value);
        if deadline < self.next_due.load(Ordering::Relaxed) {
            self.next_due.store(deadline, Ordering::Relaxed);
        }
        let wake = deadline < state.sleeping_until;
        if wake {
            // One wake-up is enough: the worker looks at the wheel again.
            state.sleeping_until = 0;
        }
        Ok((key, wake))
    }

    /// Disarms a timer; returns its deadline and value if it was pending.
    pub(crate) fn cancel(&self, key: WheelKey) -> Option<(u64, T)> {
        self.state.lock().wheel.remove(key)
    }

    /// Disarms every timer of `keys` that is pending, into `into`.
    fn cancel_into(&self, keys: impl Iterator<Item = WheelKey>, into: &mut Vec<T>) {
        let mut state = self.state.lock();
        for key in keys {
            if let Some((_, value)) = state.wheel.remove(key) {
                into.push(value);
            }
        }
    }

    /// The deadline of a pending timer.
    pub(crate) fn deadline(&self, key: WheelKey) -> Option<u64> {
        self.state.lock().wheel.deadline(key)
    }

    /// The earliest deadline (ms) to look at, `u64::MAX` if none: read
    /// without the lock.
    pub(crate) fn next_due(&self) -> u64 {
        self.next_due.load(Ordering::Relaxed)
    }

    /// Takes every timer due at `now` (ms) out of the wheel, into `fired`.
    pub(crate) fn fire_due(&self, now: u64, fired: &mut Vec<(WheelKey, T)>) {
        let mut state = self.state.lock();
        state.wheel.advance(now, fired);
        let next = state.wheel.next_deadline().unwrap_or(u64::MAX);
        self.next_due.store(next, Ordering::Relaxed);
    }

    /// The slot's worker is about to sleep at `now` (ms), for at most until
    /// `cap` (ms): records how long, unless a timer is due.
    pub(crate) fn prepare_sleep(&self, now: u64, cap: u64) -> Sleep {
        let mut state = self.state.lock();
        match state.wheel.next_deadline() {
            Some(deadline) if deadline <= now => Sleep::Fire,
            next => {
                let until = next.unwrap_or(u64::MAX).min(cap).max(1);
                state.sleeping_until = until;
                Sleep::Until(until)
            }
        }
    }

    /// The slot's worker woke up (it looks at the wheel itself from now on).
    pub(crate) fn awake(&self) {
        self.state.lock().sleeping_until = 0;
    }

    /// Number of pending timers.
    pub(crate) fn len(&self) -> usize {
        self.state.lock().wheel.len()
    }

    /// Closes the wheel (arming drops from now on) and takes every timer.
    fn close(&self) -> Vec<(WheelKey, T)> {
        let mut rest = Vec::new();
        let mut state = self.state.lock();
        state.closed = true;
        state.wheel.advance(u64::MAX, &mut rest);
        self.next_due.store(u64::MAX, Ordering::Relaxed);
        rest
    }
}

/// The timer service of one runtime: one [`SlotTimers`] per scheduler slot.
pub(crate) struct Timers {
    slots: Box<[SlotTimers<TimerAction>]>,
    origin: Instant,
}

impl Timers {
    /// Timers for `slots` slots, counting milliseconds from `origin` (the
    /// scheduler's start: a worker's clock converts without another read).
    pub(crate) fn new(slots: usize, origin: Instant) -> Timers {
        Timers {
            slots: (0..slots.max(1)).map(|_| SlotTimers::new()).collect(),
            origin,
        }
    }

    /// Milliseconds since the origin at `at`, rounded down: a timer is due
    /// once this reaches its deadline.
    pub(crate) fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// Milliseconds since the origin at `ns` nanoseconds after it, rounded
    /// down (a worker's clock, `scheduler::clock`, shares the origin).
    pub(crate) fn ms_at_ns(&self, ns: u64) -> u64 {
        ns / 1_000_000
    }

    /// The moment `ms` milliseconds after the origin.
    pub(crate) fn instant_at(&self, ms: u64) -> Instant {
        self.origin
            .checked_add(Duration::from_millis(ms))
            .unwrap_or_else(far_future)
    }

    /// Milliseconds since the origin, rounded up so a timer never fires early.
    pub(crate) fn deadline_ms(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        let ms = since.as_millis() as u64;
        if since > Duration::from_millis(ms) {
            ms + 1
        } else {
            ms
        }
    }

    /// The slot a timer armed now goes to: the one this thread serves, or
    /// one picked by `hint` (a pid key).
    fn slot_for(&self, rt: &Shared, hint: u64) -> usize {
        context::current_slot(rt)
            .filter(|&slot| slot < self.slots.len())
            .unwrap_or_else(|| (hint % self.slots.len() as u64) as usize)
    }

    /// Arms `action` at `deadline` (ms) on this thread's slot, or on the one
    /// `hint` picks.
    pub(crate) fn insert(
        &self,
        rt: &Shared,
        hint: u64,
        deadline: u64,
        action: TimerAction,
    ) -> TimerKey {
        let slot = self.slot_for(rt, hint);
        match self.slots[slot].arm(deadline, action) {
            Ok((key, wake)) => {
                if wake {
                    rt.sched.wake_slot(slot);
                }
                TimerKey {
                    slot: slot as u32,
                    key,
                }
            }
            Err(action) => {
                scheduler::drop_contained(action);
                TimerKey::STALE
            }
        }
    }

    /// Arms a wake-up of `process` at `at`.
    pub(crate) fn wake_at(&self, rt: &Shared, at: Instant, process: Arc<Process>) -> TimerKey {
        let hint = process.pid.key();
        self.insert(rt, hint, self.deadline_ms(at), TimerAction::Wake(process))
    }

    /// Disarms a timer; returns its deadline (ms) if it was pending.
    pub(crate) fn cancel_key(&self, key: TimerKey) -> Option<u64> {
        let removed = self.slots.get(key.slot as usize)?.cancel(key.key);
        removed.map(|(deadline, action)| {
            scheduler::drop_contained(action);
            deadline
        })
    }

    /// The deadline (ms) of a pending timer.
    fn deadline(&self, key: TimerKey) -> Option<u64> {
        self.slots.get(key.slot as usize)?.deadline(key.key)
    }

    /// Time left until `deadline`, in whole milliseconds rounded down, so it
    /// never exceeds the timeout the timer was armed with.
    fn remaining(&self, deadline: u64) -> Duration {
        let left = self
            .instant_at(deadline)
            .saturating_duration_since(Instant::now());
        Duration::from_millis(left.as_millis() as u64)
    }

    /// Cancels every timer in `keys` (their target exited); stale keys are
    /// skipped. Keys of one slot in a row share one lock hold.
    pub(crate) fn cancel_all(&self, keys: &[TimerKey]) {
        let mut cancelled = Vec::new();
        for run in keys.chunk_by(|a, b| a.slot == b.slot) {
            if let Some(slot) = self.slots.get(run[0].slot as usize) {
                slot.cancel_into(run.iter().map(|k| k.key), &mut cancelled);
            }
        }
        scheduler::drop_contained(cancelled);
    }

    /// Keeps only the keys of timers still pending.
    pub(crate) fn retain_pending(&self, keys: &mut Vec<TimerKey>) {
        keys.retain(|key| self.deadline(*key).is_some());
    }

    /// Number of pending timers.
    pub(crate) fn pending(&self) -> usize {
        self.slots.iter().map(SlotTimers::len).sum()
    }

    /// The earliest deadline (ms) of `slot` to look at, `u64::MAX` if none.
    pub(crate) fn next_due(&self, slot: usize) -> u64 {
        self.slots.get(slot).map_or(u64::MAX, SlotTimers::next_due)
    }

    /// See [`SlotTimers::prepare_sleep`].
    pub(crate) fn prepare_sleep(&self, slot: usize, now: u64, cap: u64) -> Sleep {
        match self.slots.get(slot) {
            Some(timers) => timers.prepare_sleep(now, cap),
            None => Sleep::Until(cap),
        }
    }

    /// See [`SlotTimers::awake`].
    pub(crate) fn awake(&self, slot: usize) {
        if let Some(timers) = self.slots.get(slot) {
            timers.awake();
        }
    }

    /// Fires the timers of `slot` due at `now` (ms) and delivers them (on
    /// the caller's thread, outside the lock). `fired` is scratch space.
    pub(crate) fn fire_due(
        &self,
        rt: &Shared,
        slot: usize,
        now: u64,
        fired: &mut Vec<(WheelKey, TimerAction)>,
    ) {
        let Some(timers) = self.slots.get(slot) else {
            return;
        };
        timers.fire_due(now, fired);
        for (_key, action) in fired.drain(..) {
            match action {
                TimerAction::Send(send) => {
                    let (to, message) = *send;
                    rt.send_envelope(to, message);
                }
                TimerAction::Wake(process) => scheduler::wake(&process),
                TimerAction::Waker(waker) => wake_contained(*waker),
            }
        }
    }

    /// For the watchdog: fires the timers overdue by more than a
    /// millisecond on any slot (their worker is stuck in a poll).
    pub(crate) fn fire_overdue(&self, rt: &Shared, fired: &mut Vec<(WheelKey, TimerAction)>) {
        let now = self.ms_at(Instant::now());
        for slot in 0..self.slots.len() {
            if self.slots[slot].next_due().saturating_add(1) < now {
                self.fire_due(rt, slot, now, fired);
            }
        }
    }

    /// Drops every pending timer (the runtime is dropped); timers armed from
    /// now on are dropped at once.
    pub(crate) fn shut_down(&self) {
        for slot in self.slots.iter() {
            scheduler::drop_contained(slot.close());
        }
    }
}

/// Wakes a task's waker from a worker; a waker that panics (another
/// executor's) is logged, never a worker's crash.
fn wake_contained(waker: Waker) {
    let woken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || waker.wake()));
    if woken.is_err() {
        tracing::warn!("ember: a waker panicked when its timer fired");
    }
}

/// Sends `message` to `to` after `after` (Erlang's `erlang:send_after/3`).
/// The message is dropped if `to` is dead by then. Millisecond resolution;
/// never fires early.
pub fn send_after<M: Send + 'static>(to: Pid, message: M, after: Duration) -> TimerRef {
    context::with_runtime("send_after", |rt| {
        context::consume_reductions(1);
        // A terminated process sends nothing more, not even later; and a
        // timer to a dead process is cancelled at once (as in OTP).
        // Most timers target their own process: no table lookup for those.
        let target = context::try_with_current(|me| (me.pid == to).then(|| me.clone()))
            .flatten()
            .or_else(|| rt.lookup(to));
        let Some(target) = target.filter(|_| !crate::message::sender_is_dead()) else {
            scheduler::drop_contained(message);
            return TimerKey::STALE.to_ref();
        };
        let at = Instant::now().checked_add(after).unwrap_or_else(far_future);
        let key = rt.timers.insert(
            rt,
            to.key(),
            rt.timers.deadline_ms(at),
            TimerAction::Send(Box::new((to, Envelope::new(message)))),
        );
        // Recorded on the target, so that its exit cancels the timer.
        let recorded = target.with_live_relations(|r| {
            let r = r.more_mut();
            r.timers.push(key);
            if r.timers.len() >= r.timers_prune_at {
                rt.timers.retain_pending(&mut r.timers);
                r.timers_prune_at = (r.timers.len() * 2).max(16);
            }
        });
        if recorded.is_none() {
            rt.timers.cancel_key(key);
        }
        key.to_ref()
    })
}

pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Cancels a timer. Returns the time that was left, or `None` if it already
/// fired or was cancelled (Erlang's `erlang:cancel_timer/1` returning `false`).
pub fn cancel_timer(timer: TimerRef) -> Option<Duration> {
    context::with_runtime("cancel_timer", |rt| {
        let deadline = rt.timers.cancel_key(TimerKey::from_ref(timer))?;
        Some(rt.timers.remaining(deadline))
    })
}

/// The time left before a timer fires, or `None` if it fired or was cancelled.
pub fn read_timer(timer: TimerRef) -> Option<Duration> {
    context::with_runtime("read_timer", |rt| {
        let deadline = rt.timers.deadline(TimerKey::from_ref(timer))?;
        Some(rt.timers.remaining(deadline))
    })
}

/// Model checks of the per-slot timer protocols under loom, on
/// [`SlotTimers`] itself (its lock and atomics come from `crate::loom`); see
/// `crate::loom` for the command. The worker's sleep is modelled step for
/// step from `scheduler::worker::wait`: record the sleep, then park on the
/// real [`Parker`](crate::scheduler::park::Parker) in a model pollset (whose
/// wake-up persists like the reactor's eventfd) until woken when no timer
/// is pending, or let time pass to the deadline otherwise.
#[cfg(all(test, feature = "loom-models"))]
mod loom_models {
    use ::loom::sync::Arc;
    use ::loom::thread;
    use std::time::Duration;

    use super::{Sleep, SlotTimers};
    use crate::scheduler::park::model_driver::ModelDriver;
    use crate::scheduler::park::Parker;

    /// The timer's value.
    const T: u32 = 7;
    /// Its deadline (ms).
    const AT: u64 = 5;

    struct Slot {
        timers: SlotTimers<u32>,
        /// The worker's parker, and the pollset it parks in.
        parker: Parker,
        pollset: ModelDriver,
    }

    impl Slot {
        fn new() -> Slot {
            Slot {
                timers: SlotTimers::new(),
                parker: Parker::new(),
                pollset: ModelDriver::default(),
            }
        }

        /// `Scheduler::wake_slot`.
        fn wake(&self) {
            self.parker.unpark(&self.pollset);
        }

        /// An arm from a thread that does not serve the slot.
        fn arm_from_elsewhere(&self) {
            let (_key, wake) = self
                .timers
                .arm(AT, T)
                .unwrap_or_else(|_| panic!("not closed"));
            if wake {
                self.wake();
            }
        }

        /// The idle worker: sleeps and fires until `T` has fired; returns
        /// when (ms) it fired.
        fn worker(&self) -> u64 {
            let mut now = 0;
            let mut fired = Vec::new();
            loop {
                self.timers.fire_due(now, &mut fired);
                if let Some(&(_, value)) = fired.first() {
                    assert_eq!(value, T);
                    assert_eq!(fired.len(), 1);
                    return now;
                }
                match self.timers.prepare_sleep(now, u64::MAX) {
                    Sleep::Fire => {}
                    Sleep::Until(u64::MAX) => {
                        // No timer: sleep until woken (a lost wake-up
                        // leaves this thread blocked, which loom reports:
                        // the model's park has no timeout).
                        self.parker.park(&self.pollset, Duration::MAX);
                        self.timers.awake();
                    }
                    Sleep::Until(until) => {
                        // A timed sleep: time passes to the deadline.
                        self.timers.awake();
                        assert!(until > now);
                        now = until;
                    }
                }
            }
        }
    }

    /// A timer armed from another slot (or a thread serving none) while the
    /// slot's worker goes to sleep with an empty wheel: the worker is woken
    /// and fires it at its deadline, never early.
    #[test]
    fn an_arm_from_another_slot_wakes_the_sleeping_worker() {
        crate::loom::model("arm from another slot vs the worker's sleep", None, || {
            let slot = Arc::new(Slot::new());
            let s = slot.clone();
            let worker = thread::spawn(move || s.worker());
            slot.arm_from_elsewhere();
            assert_eq!(worker.join().unwrap(), AT);
            assert_eq!(slot.timers.len(), 0);
        });
    }

    /// A cancel from another slot races the owner's firing and the
    /// watchdog's firing of the same overdue timer: it is delivered exactly
    /// once or cancelled, never both; `cancel` answers for the timer only
    /// if it was not delivered, and a stale key cancels nothing.
    #[test]
    fn a_cancel_racing_the_firing_decides_once() {
        crate::loom::model("cancel vs owner's fire vs watchdog's fire", Some(3), || {
            let timers = Arc::new(SlotTimers::<u32>::new());
            let (key, wake) = timers.arm(AT, T).unwrap_or_else(|_| panic!("not closed"));
            assert!(!wake, "an awake worker is never woken");
            let fire = |timers: Arc<SlotTimers<u32>>| {
                thread::spawn(move || {
                    let mut fired = Vec::new();
                    timers.fire_due(AT, &mut fired);
                    fired.len()
                })
            };
            let owner = fire(timers.clone());
            let watchdog = fire(timers.clone());
            let cancelled = timers.cancel(key);
            let delivered = owner.join().unwrap() + watchdog.join().unwrap();
            match cancelled {
                Some((deadline, value)) => {
                    assert_eq!((deadline, value), (AT, T));
                    assert_eq!(delivered, 0);
                }
                None => assert_eq!(delivered, 1),
            }
            assert!(timers.cancel(key).is_none());
            assert_eq!(timers.len(), 0);
        });
    }
}
