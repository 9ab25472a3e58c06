//! A slot: one scheduler's run queues, `next` process, flags and counters.
//! Everything here is shared-safe (locked, atomic or lock-free), so the slot
//! can pass from one thread to another at any moment (a watchdog hand-off)
//! without the old thread's late accesses doing harm: they only add work to
//! the slot.
//!
//! The slot's queues are two: the lock-free [`Ring`] of normal-priority
//! woken processes its worker queues (spawned or woken by the process it
//! polls, or requeued after a poll that did not use up its slice), and the
//! locked [`RunQueue`] of everything else (high, batch, low, what the
//! injector and steals bring, and the ring's overflow). The ring is the back
//! of the woken queue: every process in the locked woken FIFO was queued
//! before every process in the ring (an overflow moves the whole ring
//! there), so [`RunQueue::pop_with`] takes the locked one first and keeps
//! the woken queue one FIFO. A spawning process's worker pushes its children
//! and pops them without the lock while a thief steals half of them.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::park::{Driver, Parker};
use super::queue::{Class, RunQueue, Streaks};
use super::ring::Ring;
use crate::process::{Priority, Process};

/// `Remote::owner` when no worker serves the slot.
pub(crate) const NO_WORKER: usize = usize::MAX;

/// One scheduler's state. See the scheduler module docs.
///
/// Split as tokio splits a worker's state: [`Core`] is what the slot's
/// worker reads and writes on its hot path (`next`, the current poll's
/// class, the counters), [`Remote`] what other threads touch (the
/// stealable queue, the owner, the parker, online, the preempt request).
/// Each sits on cache lines of its own, so the counters a worker bumps at
/// every poll do not share a line with what thieves, notifiers and the
/// watchdog read.
pub(crate) struct Slot {
    pub(crate) index: usize,
    /// Owner-side state.
    pub(crate) core: Core,
    /// State other threads touch.
    pub(crate) remote: Remote,
    /// Normal-priority woken processes queued by the slot's worker: the back
    /// of the woken queue, taken by the worker and thieves without a lock
    /// (the module docs).
    ring: Ring<Arc<Process>>,
}

/// The part of a slot its worker uses alone, but for a late push to `next`
/// by the worker that has just lost the slot, and the reads of
/// introspection and the watchdog.
#[repr(align(128))]
pub(crate) struct Core {
    /// The process to run right after the current poll (not stealable), as
    /// an `Arc` turned into a raw pointer (null: none). Normally only the
    /// slot's worker touches it, but a worker that has just lost the slot to
    /// a hand-off may still push here while the new one takes: both are one
    /// atomic swap, so each process put here is taken (or displaced) once.
    next: AtomicPtr<Process>,
    /// The current poll is of a batch process.
    pub(crate) running_batch: AtomicBool,
    /// Nanoseconds spent polling processes.
    pub(crate) busy_ns: AtomicU64,
    /// Polls done.
    pub(crate) polls: AtomicU64,
    /// Reductions executed.
    pub(crate) reductions: AtomicU64,
}

impl Drop for Core {
    fn drop(&mut self) {
        let left = *self.next.get_mut();
        if !left.is_null() {
            // SAFETY: as in `Slot::swap_next`; `&mut self` excludes every
            // other access.
            drop(unsafe { Arc::from_raw(left) });
        }
    }
}

/// The part of a slot other threads touch: thieves (the queue), notifiers
/// (the parker), the watchdog (the owner) and pushers (the preempt
/// request).
#[repr(align(128))]
pub(crate) struct Remote {
    queue: Mutex<RunQueue>,
    /// Length of `queue`, readable without the lock.
    len: AtomicUsize,
    /// High-priority and woken processes in `queue`, readable without the lock.
    interactive: AtomicUsize,
    /// High-priority processes in `queue`, readable without the lock.
    high: AtomicUsize,
    /// The id of the worker serving this slot.
    pub(crate) owner: AtomicUsize,
    /// That worker's parker, to wake it wherever it sleeps.
    parker: Mutex<Option<Arc<Parker>>>,
    /// Whether this scheduler is online (takes work).
    pub(crate) online: AtomicBool,
    /// Interactive work arrived: the batch process polled now should yield.
    pub(crate) preempt: AtomicBool,
}

impl Slot {
    pub(crate) fn new(index: usize) -> Slot {
        Slot {
            index,
            core: Core {
                next: AtomicPtr::new(ptr::null_mut()),
                running_batch: AtomicBool::new(false),
                busy_ns: AtomicU64::new(0),
                polls: AtomicU64::new(0),
                reductions: AtomicU64::new(0),
            },
            remote: Remote {
                queue: Mutex::new(RunQueue::default()),
                len: AtomicUsize::new(0),
                interactive: AtomicUsize::new(0),
                high: AtomicUsize::new(0),
                owner: AtomicUsize::new(NO_WORKER),
                parker: Mutex::new(None),
                online: AtomicBool::new(true),
                preempt: AtomicBool::new(false),
            },
            ring: Ring::new(),
        }
    }

    /// Processes other slots could steal from this one (all but `next`).
    /// `SeqCst`: read by a worker about to park, against a push (the
    /// scheduler module docs, "Sleeping and waking").
    pub(crate) fn stealable_len(&self) -> usize {
        self.remote.len.load(Ordering::SeqCst) + self.ring.len()
    }

    /// Processes waiting in this slot, `next` included.
    pub(crate) fn queue_len(&self) -> usize {
        // SeqCst: read by a worker about to park, against `swap_next` (the
        // scheduler module docs, "Sleeping and waking").
        self.stealable_len() + usize::from(!self.core.next.load(Ordering::SeqCst).is_null())
    }

    /// Whether interactive work (`next`, high, woken) waits in this slot.
    pub(crate) fn has_interactive(&self) -> bool {
        !self.core.next.load(Ordering::Relaxed).is_null()
            || self.remote.interactive.load(Ordering::Relaxed) > 0
            || self.ring.len() > 0
    }

    /// Whether the slot is online.
    pub(crate) fn is_online(&self) -> bool {
        self.remote.online.load(Ordering::Acquire)
    }

    /// Runs `f` on the locked queue, keeping `len` current.
    pub(crate) fn with_queue<R>(&self, f: impl FnOnce(&mut RunQueue) -> R) -> R {
        let mut q = self.remote.queue.lock();
        let before = q.len();
        let r = f(&mut q);
        let after = q.len();
        if after != before {
            // SeqCst: the push side of the sleep protocol (module docs).
            self.remote.len.store(after, Ordering::SeqCst);
            self.remote
                .interactive
                .store(q.interactive_len(), Ordering::Relaxed);
            self.remote.high.store(q.high_len(), Ordering::Relaxed);
        }
        r
    }

    /// Queues a process pushed by the slot's worker (or by the worker that
    /// has just lost the slot): a normal-priority woken one into the ring,
    /// anything else into the locked queue.
    pub(crate) fn push(&self, process: Arc<Process>, class: Class) {
        if class == Class::Woken && process.priority() == Priority::Normal {
            self.push_woken(process);
        } else {
            self.with_queue(|q| q.push(process, class));
        }
    }

    /// Queues everything in `from` (taken from the injector, or stolen) at
    /// the back of the slot's queues, in order: the normal-priority woken
    /// processes into the ring, the rest under the lock.
    pub(crate) fn push_all(&self, from: &mut RunQueue) {
        while let Some(p) = from.pop_woken_front() {
            self.push(p, Class::Woken);
        }
        if from.len() > 0 {
            self.with_queue(|q| from.drain_into(q));
        }
    }

    /// Queues a normal-priority woken process at the back of the woken
    /// queue: into the ring, or, when the ring is full, after everything the
    /// ring holds, which moves to the locked queue's woken FIFO first (so
    /// that the locked woken processes stay older than the ring's).
    fn push_woken(&self, process: Arc<Process>) {
        if let Err(process) = self.ring.push(process) {
            self.with_queue(|q| {
                while let Some(p) = self.ring.pop() {
                    q.push_woken(p);
                }
                q.push_woken(process);
            });
        }
    }

    /// The next process to run from the slot's queues (`next` aside), with
    /// the worker's fairness counters: the ring alone without the lock when
    /// the locked queue is empty (then only woken work waits), else
    /// [`RunQueue::pop_with`].
    pub(crate) fn pop(&self, streaks: &mut Streaks) -> Option<(Arc<Process>, Class)> {
        // Only the worker that has just lost the slot may fill the locked
        // queue behind this worker's back; what it queues is seen next time.
        if self.remote.len.load(Ordering::Relaxed) == 0 {
            let p = self.ring.pop()?;
            streaks.count_woken_pick();
            return Some((p, Class::Woken));
        }
        self.with_queue(|q| q.pop_with(streaks, Some(&self.ring)))
    }

    /// Whether high-priority processes wait in the locked queue.
    pub(crate) fn has_high(&self) -> bool {
        self.remote.high.load(Ordering::Relaxed) > 0
    }

    /// Moves about half of the slot's queued processes (`next` aside) into
    /// `loot`, for a thief: half of the ring (rounded up), without the lock,
    /// if it holds any; else half of each of the locked queue's FIFOs. The
    /// locked queue is left alone while the ring has work: the worker's
    /// pushes and pops never wait for a thief then, and a process that a
    /// busy slot's worker preempted (a spawning loop, say) is not moved to
    /// another core at each of its slices while fresher work is there to take.
    pub(crate) fn steal_half_into(&self, loot: &mut RunQueue) -> usize {
        if self.ring.len() == 0 {
            if self.remote.len.load(Ordering::SeqCst) == 0 {
                return 0;
            }
            return self.with_queue(|q| q.steal_half(loot));
        }
        let mut moved = 0;
        for _ in 0..self.ring.len().div_ceil(2) {
            match self.ring.pop() {
                Some(p) => loot.push_woken(p),
                None => break,
            }
            moved += 1;
        }
        moved
    }

    /// Puts a process in `next`, returning the one it displaces.
    pub(crate) fn swap_next(&self, process: Arc<Process>) -> Option<Arc<Process>> {
        // SeqCst: the push side of the sleep protocol (scheduler module docs);
        // it also publishes the process to whoever takes it.
        let displaced = self
            .core
            .next
            .swap(Arc::into_raw(process).cast_mut(), Ordering::SeqCst);
        // SAFETY: a non-null `next` came from `Arc::into_raw` in this
        // function, and the swap moved its ownership to us alone.
        (!displaced.is_null()).then(|| unsafe { Arc::from_raw(displaced) })
    }

    /// Takes the `next` process.
    pub(crate) fn take_next(&self) -> Option<Arc<Process>> {
        if self.core.next.load(Ordering::Relaxed).is_null() {
            // Only a push by this slot's former worker can race with this
            // read, and that push unparks us if we park (`enqueue`).
            return None;
        }
        let taken = self.core.next.swap(ptr::null_mut(), Ordering::Acquire);
        // SAFETY: as in `swap_next`: the swap made us its only owner.
        (!taken.is_null()).then(|| unsafe { Arc::from_raw(taken) })
    }

    /// Moves everything queued here (with `next`) into `into`.
    pub(crate) fn drain_into(&self, into: &mut RunQueue) {
        self.with_queue(|q| q.drain_into(into));
        while let Some(p) = self.ring.pop() {
            into.push_woken(p);
        }
        if let Some(p) = self.take_next() {
            into.push(p, Class::Woken);
        }
    }

    /// Hands this slot to the worker `worker_id` (at start-up).
    pub(crate) fn assign(&self, worker_id: usize) {
        self.remote.owner.store(worker_id, Ordering::Release);
    }

    /// Records the parker of the worker serving the slot (before it first
    /// marks the slot parked), for unparking.
    pub(crate) fn set_parker(&self, parker: Arc<Parker>) {
        *self.remote.parker.lock() = Some(parker);
    }

    /// Wakes the slot's worker wherever it sleeps (`driver`: the pollset it
    /// may sleep in), or makes its next park return at once.
    pub(crate) fn unpark<D: Driver>(&self, driver: &D) {
        if let Some(parker) = &*self.remote.parker.lock() {
            parker.unpark(driver);
        }
    }
}

/// Model checks of the hand-off under loom; see `crate::loom` for the command.
///
/// The slot and the worker registry use `std`'s atomics and `parking_lot`
/// directly, so this is a model of their protocol, step for step, rather
/// than the code itself: the owner check and push to `next` of
/// `scheduler::enqueue` with `Scheduler::unpark_if_parked`, the hand-off of
/// `sysmon::retake` with `Workers::hand_over`, and a starting
/// spare's `Workers::wait_as_spare` then `worker::serve_slot`/`idle` (with
/// `notify_one` reduced to the one slot and `park_timeout` to `park`, so a
/// lost wake-up shows as a deadlock rather than a 100 ms delay).
///
/// loom treats `SeqCst` accesses as acquire-release (its documented
/// limitation), which would let both sides of the sleep protocol's Dekker
/// pattern miss each other; C++20's `SeqCst` accesses (what the product
/// relies on) forbid that, as a `SeqCst` fence between each side's store and
/// load does, so the model puts one there.
#[cfg(all(test, feature = "loom-models"))]
mod loom_models {
    use ::loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};
    use ::loom::sync::{Arc, Mutex};
    use ::loom::thread::{self, Thread};

    const NO_SLOT: usize = usize::MAX;
    const OLD: usize = 1;
    const SPARE: usize = 3;
    /// The process the hog wakes.
    const B: u32 = 7;

    #[derive(Default)]
    struct Model {
        // The slot.
        owner: AtomicUsize,
        /// `next`: 0 for none (`Slot::swap_next`, `take_next`: one swap each).
        next: AtomicU32,
        parked: AtomicBool,
        // The injector.
        injector: Mutex<Vec<u32>>,
        // The registry: listed spares, and the spare's fields.
        spares: Mutex<Vec<usize>>,
        spare_slot: AtomicUsize,
        spare_thread: Mutex<Option<Thread>>,
        /// Processes the spare ran.
        ran: Mutex<Vec<u32>>,
    }

    impl Model {
        fn unpark_spare(&self) {
            if let Some(t) = &*self.spare_thread.lock().unwrap() {
                t.unpark();
            }
        }

        /// `Scheduler::unpark_if_parked`, and `notify_one` for this slot.
        fn unpark_if_parked(&self) {
            fence(SeqCst);
            if self.parked.load(SeqCst) && self.parked.swap(false, SeqCst) {
                self.unpark_spare();
            }
        }

        /// `enqueue` on the old owner's thread, inside the hog's poll.
        fn wake_b(&self) {
            if self.owner.load(SeqCst) == OLD {
                assert_eq!(self.next.swap(B, SeqCst), 0);
                self.unpark_if_parked();
            } else {
                self.injector.lock().unwrap().push(B);
                self.unpark_if_parked();
            }
        }

        /// `retake` (`Workers::hand_over`): under the registry lock, take
        /// the spare, swap the owner and give the spare the slot, in one
        /// critical section; then wake it.
        fn retake(&self) {
            {
                let mut spares = self.spares.lock().unwrap();
                let spare = spares.pop().expect("the spare is listed");
                assert_eq!(spare, SPARE);
                self.owner
                    .compare_exchange(OLD, SPARE, SeqCst, SeqCst)
                    .expect("the old owner still owns the slot");
                self.spare_slot.store(0, SeqCst);
            }
            self.unpark_spare();
        }

        /// `wait_as_spare` then `serve_slot` until it has run `B`.
        fn spare(&self) {
            *self.spare_thread.lock().unwrap() = Some(thread::current());
            {
                let mut spares = self.spares.lock().unwrap();
                if self.spare_slot.load(SeqCst) == NO_SLOT && !spares.contains(&SPARE) {
                    spares.push(SPARE);
                }
            }
            while self.spare_slot.load(SeqCst) == NO_SLOT {
                thread::park();
            }
            assert_eq!(self.owner.load(SeqCst), SPARE);
            loop {
                let found = if self.next.load(SeqCst) != 0 {
                    Some(self.next.swap(0, SeqCst)).filter(|&p| p != 0)
                } else {
                    None
                }
                .or_else(|| self.injector.lock().unwrap().pop());
                if let Some(p) = found {
                    self.ran.lock().unwrap().push(p);
                    return;
                }
                // `idle`: announce, look once more, park.
                self.parked.store(true, SeqCst);
                fence(SeqCst);
                let has_work =
                    self.next.load(SeqCst) != 0 || !self.injector.lock().unwrap().is_empty();
                if !has_work {
                    while self.parked.load(SeqCst) {
                        thread::park();
                    }
                }
                self.parked.store(false, SeqCst);
            }
        }
    }

    /// The hog wakes B during its poll while the watchdog hands its slot to
    /// a spare whose thread is just starting: B runs on the spare (no lost
    /// wake-up: otherwise the spare parks for ever and loom reports a
    /// deadlock), and the spare, serving the slot, is not listed as a spare
    /// (it would be handed a second slot and leave this one without a
    /// thread).
    #[test]
    fn a_wake_during_a_poll_whose_slot_is_handed_off_reaches_the_new_worker() {
        crate::loom::model(
            "wake during a poll vs hand-off vs spare start",
            Some(3),
            || {
                let model = Arc::new(Model::default());
                model.owner.store(OLD, SeqCst);
                model.spare_slot.store(NO_SLOT, SeqCst);
                // Listed by `Workers::spawn` before its thread starts.
                model.spares.lock().unwrap().push(SPARE);
                let m = model.clone();
                let spare = thread::spawn(move || m.spare());
                let m = model.clone();
                let watchdog = thread::spawn(move || m.retake());
                model.wake_b();
                watchdog.join().unwrap();
                spare.join().unwrap();
                assert_eq!(*model.ran.lock().unwrap(), vec![B]);
                assert!(
                    model.spares.lock().unwrap().is_empty(),
                    "a worker serving a slot is listed as a spare"
                );
            },
        );
    }
}
