//! A slot: one scheduler's run queues, `next` process, flags and counters.
//! Everything here is shared-safe (locked or atomic), so the slot can pass
//! from one thread to another at any moment (a watchdog hand-off) without the
//! old thread's late accesses doing harm: they only add work to the slot.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;

use parking_lot::Mutex;

use super::queue::{Class, RunQueue};
use crate::process::Process;

/// `Slot::owner` when no worker serves the slot.
pub(crate) const NO_WORKER: usize = usize::MAX;

/// One scheduler's state. See the scheduler module docs.
pub(crate) struct Slot {
    pub(crate) index: usize,
    queue: Mutex<RunQueue>,
    /// Length of `queue`, readable without the lock.
    len: AtomicUsize,
    /// High-priority and woken processes in `queue`, readable without the lock.
    interactive: AtomicUsize,
    /// The process to run right after the current poll (not stealable).
    /// Normally only the slot's worker touches it, but a worker that has just
    /// lost the slot to a hand-off may still push here while the new one
    /// takes: the lock keeps `has_next` equal to `next.is_some()`.
    next: Mutex<Option<Arc<Process>>>,
    /// Whether `next` holds a process, readable without the lock.
    has_next: AtomicBool,
    /// The id of the worker serving this slot.
    pub(crate) owner: AtomicUsize,
    /// That worker's thread, to unpark it.
    thread: Mutex<Option<Thread>>,
    /// Parked and waiting to be unparked.
    pub(crate) parked: AtomicBool,
    /// Its worker is (about to be) blocked in the pollset while parked: an
    /// unpark must also wake the pollset.
    pub(crate) in_reactor: AtomicBool,
    /// Whether this scheduler is online (takes work).
    pub(crate) online: AtomicBool,
    /// The current poll is of a batch process.
    pub(crate) running_batch: AtomicBool,
    /// Interactive work arrived: the batch process polled now should yield.
    pub(crate) preempt: AtomicBool,
    /// Nanoseconds spent polling processes.
    pub(crate) busy_ns: AtomicU64,
    /// Polls done.
    pub(crate) polls: AtomicU64,
    /// Reductions executed.
    pub(crate) reductions: AtomicU64,
}

impl Slot {
    pub(crate) fn new(index: usize) -> Slot {
        Slot {
            index,
            queue: Mutex::new(RunQueue::default()),
            len: AtomicUsize::new(0),
            interactive: AtomicUsize::new(0),
            next: Mutex::new(None),
            has_next: AtomicBool::new(false),
            owner: AtomicUsize::new(NO_WORKER),
            thread: Mutex::new(None),
            parked: AtomicBool::new(false),
            in_reactor: AtomicBool::new(false),
            online: AtomicBool::new(true),
            running_batch: AtomicBool::new(false),
            preempt: AtomicBool::new(false),
            busy_ns: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            reductions: AtomicU64::new(0),
        }
    }

    /// Processes other slots could steal from this one (all but `next`).
    pub(crate) fn stealable_len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// Processes waiting in this slot, `next` included.
    pub(crate) fn queue_len(&self) -> usize {
        // SeqCst: read by a worker about to park, against `swap_next` (the
        // scheduler module docs, "Sleeping and waking").
        self.stealable_len() + usize::from(self.has_next.load(Ordering::SeqCst))
    }

    /// Whether interactive work (`next`, high, woken) waits in this slot.
    pub(crate) fn has_interactive(&self) -> bool {
        self.has_next.load(Ordering::Relaxed) || self.interactive.load(Ordering::Relaxed) > 0
    }

    /// Whether the slot is online.
    pub(crate) fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Runs `f` on the queue, keeping `len` current.
    pub(crate) fn with_queue<R>(&self, f: impl FnOnce(&mut RunQueue) -> R) -> R {
        let mut q = self.queue.lock();
        let before = q.len();
        let r = f(&mut q);
        let after = q.len();
        if after != before {
            // SeqCst: the push side of the sleep protocol (module docs).
            self.len.store(after, Ordering::SeqCst);
            self.interactive
                .store(q.interactive_len(), Ordering::Relaxed);
        }
        r
    }

    /// Puts a process in `next`, returning the one it displaces.
    pub(crate) fn swap_next(&self, process: Arc<Process>) -> Option<Arc<Process>> {
        let mut next = self.next.lock();
        // SeqCst: the push side of the sleep protocol (scheduler module docs).
        self.has_next.store(true, Ordering::SeqCst);
        next.replace(process)
    }

    /// Takes the `next` process.
    pub(crate) fn take_next(&self) -> Option<Arc<Process>> {
        if !self.has_next.load(Ordering::Relaxed) {
            // Only a push by this slot's former worker can race with this
            // read, and that push unparks us if we park (`enqueue`).
            return None;
        }
        let mut next = self.next.lock();
        self.has_next.store(false, Ordering::Relaxed);
        next.take()
    }

    /// Moves everything queued here (with `next`) into `into`.
    pub(crate) fn drain_into(&self, into: &mut RunQueue) {
        self.with_queue(|q| q.drain_into(into));
        if let Some(p) = self.take_next() {
            into.push(p, Class::Woken);
        }
    }

    /// Hands this slot to the worker `worker_id` (at start-up).
    pub(crate) fn assign(&self, worker_id: usize) {
        self.owner.store(worker_id, Ordering::Release);
    }

    /// Records the thread serving the slot, for unparking.
    pub(crate) fn set_thread(&self, thread: Thread) {
        *self.thread.lock() = Some(thread);
    }

    /// Unparks the slot's thread (the caller also wakes the pollset when
    /// `in_reactor` is set: see `Scheduler::unpark`).
    pub(crate) fn unpark_thread(&self) {
        if let Some(t) = &*self.thread.lock() {
            t.unpark();
        }
    }
}
