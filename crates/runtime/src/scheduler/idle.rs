//! Idle slots: which slots' workers are parked and wait for a notification,
//! and how many workers search for work (spin and steal) at once.
//!
//! The model is tokio's `multi_thread/idle.rs`. A worker that runs out of
//! work *searches*: it spins briefly, looking at the injector, every slot's
//! queue and the pollset. At most half of the online slots' workers search
//! at once (one of two, one of one); the others park at once. A push does
//! not notify a parked slot while a worker searches: the searcher finds the
//! work. When the last searcher finds work it notifies a parked slot if
//! more work waits, so work that arrives in a burst still spreads; this
//! wakes no more workers than there is work for.
//!
//! # No lost wake-ups
//!
//! A pusher makes its work visible (a queue length), then reads
//! `searching` and `sleepers`. A searcher that stops without work marks its
//! slot parked and counts itself in `sleepers` after it leaves the count of
//! searchers, then looks at every queue once more. All of these are
//! `SeqCst`: a pusher that saw the searcher (and notified nobody) comes
//! before its last look, which sees the work; one that came after sees the
//! sleeper and notifies it. A searcher that finds work and was the last
//! one looks for more after leaving the count, with the same argument.
//!
//! A slot's `parked` mark is the notification's token: whoever swaps it
//! from true to false owns the decrement of `sleepers` and the unpark of
//! the slot's [`Parker`](super::park::Parker).

use crate::loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

/// Parked slots and searching workers.
pub(crate) struct Idle {
    /// Per slot: parked and waiting to be notified.
    parked: Box<[AtomicBool]>,
    /// Slots marked parked.
    sleepers: AtomicUsize,
    /// Workers searching for work.
    searching: AtomicUsize,
}

impl Idle {
    /// No slot parked, no worker searching, for `slots` slots.
    pub(crate) fn new(slots: usize) -> Idle {
        Idle {
            parked: (0..slots).map(|_| AtomicBool::new(false)).collect(),
            sleepers: AtomicUsize::new(0),
            searching: AtomicUsize::new(0),
        }
    }

    /// A worker out of work asks to search; `online` is how many slots are
    /// online. True (and counted) if fewer than half of them search.
    pub(crate) fn start_searching(&self, online: usize) -> bool {
        if 2 * self.searching.load(SeqCst) >= online.max(1) {
            return false;
        }
        self.searching.fetch_add(1, SeqCst);
        true
    }

    /// A searching worker stops searching (it found work, or parks, or
    /// leaves). Returns whether it was the last searcher: then, if work
    /// waits, it must see that a parked slot is notified.
    pub(crate) fn stop_searching(&self) -> bool {
        self.searching.fetch_sub(1, SeqCst) == 1
    }

    /// Whether a pusher must notify a parked slot: one is parked and no
    /// worker searches (a searcher would find the work).
    pub(crate) fn needs_notify(&self) -> bool {
        self.sleepers.load(SeqCst) > 0 && self.searching.load(SeqCst) == 0
    }

    /// Marks slot `index` parked (before its worker's last look for work).
    pub(crate) fn mark_parked(&self, index: usize) {
        if let Some(parked) = self.parked.get(index) {
            parked.store(true, SeqCst);
            self.sleepers.fetch_add(1, SeqCst);
        }
    }

    /// Whether slot `index` is marked parked.
    pub(crate) fn is_parked(&self, index: usize) -> bool {
        self.parked.get(index).is_some_and(|p| p.load(SeqCst))
    }

    /// Takes slot `index`'s parked mark, if it has one: the caller (the
    /// slot's worker leaving its park, or a notifier) owns the decrement.
    pub(crate) fn take_parked(&self, index: usize) -> bool {
        let Some(parked) = self.parked.get(index) else {
            return false;
        };
        if parked.load(SeqCst) && parked.swap(false, SeqCst) {
            self.sleepers.fetch_sub(1, SeqCst);
            return true;
        }
        false
    }

    /// Takes the parked mark of the first parked slot `eligible` accepts
    /// and returns its index.
    pub(crate) fn take_one(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        if self.sleepers.load(SeqCst) == 0 {
            return None;
        }
        (0..self.parked.len()).find(|&i| eligible(i) && self.take_parked(i))
    }
}

#[cfg(all(test, not(feature = "loom-models")))]
mod tests {
    use super::Idle;

    #[test]
    fn at_most_half_the_online_slots_search() {
        let idle = Idle::new(4);
        assert!(idle.start_searching(4));
        assert!(idle.start_searching(4));
        assert!(!idle.start_searching(4));
        assert!(!idle.stop_searching());
        assert!(idle.stop_searching());
        // One slot online: its worker may search.
        assert!(idle.start_searching(1));
        assert!(!idle.start_searching(1));
    }

    #[test]
    fn a_parked_slot_is_notified_once_and_not_while_a_worker_searches() {
        let idle = Idle::new(2);
        assert!(!idle.needs_notify());
        idle.mark_parked(1);
        assert!(idle.needs_notify());
        assert!(idle.start_searching(2));
        assert!(!idle.needs_notify());
        idle.stop_searching();
        assert_eq!(idle.take_one(|_| true), Some(1));
        assert_eq!(idle.take_one(|_| true), None);
        assert!(!idle.take_parked(1));
        assert!(!idle.needs_notify());
    }
}
