//! The mailbox: an ordered queue of messages of any type, with selective receive.
//!
//! # Protocol
//!
//! * `inbox` is shared: senders push onto it without a lock, and the owner
//!   takes all of it at once, in arrival order, so messages from one sender
//!   keep their order (`mailbox/inbox.rs` has its protocol and loom model).
//! * `saved` belongs to the owner: messages it has already looked at and left
//!   in place. Only the thread polling the process touches it (see Safety). A
//!   receive scans `saved` from the front, then moves the whole inbox behind it
//!   and scans on, so the arrival order of all messages is kept.
//! * While a user predicate runs, the owner has taken `saved` out of its cell,
//!   so a predicate may itself send or even receive; whatever a nested receive
//!   leaves behind is merged back after the older messages.
//! * `saved_len` mirrors `saved`'s length for readers on other threads; the
//!   inbox counts itself. A receive that finds nothing new writes nothing. A
//!   message pushed just after that look is not lost: its sender wakes the
//!   process after the push, so the process is polled again and looks again.
//!
//! # Safety
//!
//! `saved` is an `UnsafeCell`, reached only through an [`Owner`]: the
//! process's `RUNNING` guard, `crate::process::Running`, which holds the only
//! `unsafe` that touches it (moving the queue out and back in). Every
//! process-facing call reaches it through [`crate::context::with_running`],
//! the guard held by the poll (or by the body's drop, `Running::exit`); the
//! runtime's teardown also gets a guard first (`process::state`, "Who drops
//! the body"). No reference into the cell outlives the accessor that made
//! it, so nested receives cannot alias.

mod inbox;

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::mem;

use crate::loom::cell::UnsafeCell;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use inbox::{Inbox, Link, Node, Taken};

/// One message of any type, as it sits in a mailbox. Its allocation also
/// holds the inbox's link, so sending allocates once.
pub struct Envelope(Box<Node<dyn Any + Send>>);

impl Envelope {
    /// Wraps a value.
    pub fn new<M: Send + 'static>(message: M) -> Envelope {
        Envelope(Box::new(Node {
            link: Link::new::<M>(),
            message,
        }))
    }

    /// Whether the message is a `M`.
    pub fn is<M: 'static>(&self) -> bool {
        self.0.message.is::<M>()
    }

    /// Borrows the message as a `M`, if it is one.
    pub fn downcast_ref<M: 'static>(&self) -> Option<&M> {
        self.0.message.downcast_ref()
    }

    /// Unwraps the message as a `M`, or gives the envelope back.
    pub fn downcast<M: 'static>(self) -> Result<M, Envelope> {
        if !self.is::<M>() {
            return Err(self);
        }
        let node = Box::into_raw(self.0).cast::<Node<M>>();
        // SAFETY: the message is a `M` (checked above), so the allocation,
        // made by `new::<M>`, is a `Node<M>`.
        let node = unsafe { Box::from_raw(node) };
        Ok(node.message)
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Envelope(..)")
    }
}

/// A process's mailbox; see the module docs for who touches what.
#[derive(Default)]
pub(crate) struct Mailbox {
    inbox: Inbox,
    saved: UnsafeCell<Saved>,
    saved_len: AtomicUsize,
}

// `Mailbox` is `Sync` by an `unsafe impl` in `process::running`, beside
// the only `unsafe` that touches `saved` (module docs, "Safety").

/// The owner's part of the mailbox.
#[derive(Default)]
pub(crate) struct Saved {
    queue: VecDeque<Envelope>,
    /// Counts removals, so that a [`Cursor`] notices the queue shifted under it.
    removals: u64,
}

/// How far one receive has already scanned the saved messages.
#[derive(Default, Debug)]
pub(crate) struct Cursor {
    scanned: usize,
    removals: u64,
}

/// Exclusive use of one mailbox's saved queue: what a process's receives
/// need. Implemented by the process's `RUNNING` guard
/// (`crate::process::Running`), which holds the `unsafe` that makes its two
/// accessors sound; the receive algorithms below are safe code on top.
pub(crate) trait Owner {
    /// The mailbox.
    fn mailbox(&self) -> &Mailbox;

    /// Moves the saved queue out of its cell, leaving it empty.
    fn take_saved(&self) -> Saved;

    /// Puts `saved` in the cell, returning what was there.
    fn replace_saved(&self, saved: Saved) -> Saved;

    /// Puts the saved queue back, after anything a nested receive left there.
    fn put_saved(&self, owned: Saved) {
        let (len, removals) = (owned.queue.len(), owned.removals);
        let nested = self.replace_saved(owned);
        if nested.queue.is_empty() && nested.removals <= removals {
            // No nested receive changed anything: the common case, one move.
            self.mailbox().saved_len.store(len, Ordering::Relaxed);
            if nested.queue.capacity() == 0 {
                // The empty queue `take_saved` left: nothing to free, and
                // its drop is a call on the hot path.
                mem::forget(nested);
            }
            return;
        }
        let mut owned = self.take_saved();
        let mut nested = nested;
        if !nested.queue.is_empty() {
            // A nested receive pulled newer messages from the inbox: they go after ours.
            owned.queue.append(&mut nested.queue);
            owned.removals += 1;
        }
        owned.removals = owned.removals.max(nested.removals);
        self.mailbox()
            .saved_len
            .store(owned.queue.len(), Ordering::Relaxed);
        let _empty = self.replace_saved(owned);
    }

    /// Removes and returns the first message, in arrival order, for which
    /// `matches` holds; `None` if there is none yet.
    ///
    /// `cursor` remembers the saved messages a previous call of the same
    /// receive already rejected, so a waiting receive never looks at a message
    /// twice (unless another receive removed one meanwhile: then it rescans).
    fn take_first(
        &self,
        cursor: &mut Cursor,
        matches: &mut dyn FnMut(&Envelope) -> bool,
    ) -> Option<Envelope> {
        let mailbox = self.mailbox();
        // Nothing saved and nothing new: the common end of a waiting
        // receive's poll, without moving the saved queue out and back. (Only
        // the owner writes `saved_len`.)
        if mailbox.saved_len.load(Ordering::Relaxed) == 0 && mailbox.inbox.is_empty() {
            return None;
        }
        let mut owned = self.take_saved();
        if owned.removals != cursor.removals {
            cursor.scanned = 0;
        }
        let saved = &mut owned.queue;
        let found = loop {
            if let Some(offset) = saved.range(cursor.scanned..).position(&mut *matches) {
                owned.removals += 1;
                let at = cursor.scanned + offset;
                // The first message matched (usually the only one).
                break if at == 0 {
                    saved.pop_front()
                } else {
                    saved.remove(at)
                };
            }
            cursor.scanned = saved.len();
            match mailbox.inbox.take_lone_or_into(saved) {
                Taken::Nothing => break None,
                Taken::Queued => {}
                // One new message behind nothing unscanned: tested where it
                // is, and saved only if it does not match (the common
                // receive, without a trip through the saved queue).
                Taken::Lone(envelope) => {
                    if matches(&envelope) {
                        break Some(envelope);
                    }
                    saved.push_back(envelope);
                    cursor.scanned = saved.len();
                }
            }
        };
        cursor.removals = owned.removals;
        self.put_saved(owned);
        found
    }

    /// Removes every message for which `matches` holds.
    fn remove_all(&self, matches: &mut dyn FnMut(&Envelope) -> bool) -> usize {
        let mut owned = self.take_saved();
        self.mailbox().inbox.take_into(&mut owned.queue);
        let before = owned.queue.len();
        owned.queue.retain(|m| !matches(m));
        let removed = before - owned.queue.len();
        if removed > 0 {
            owned.removals += 1;
        }
        self.put_saved(owned);
        removed
    }

    /// Takes every saved message out, to drop (the body is being dropped).
    fn take_all_saved(&self) -> Saved {
        let owned = self.take_saved();
        self.mailbox().saved_len.store(0, Ordering::Relaxed);
        owned
    }
}

impl Mailbox {
    /// Appends a message (any thread).
    pub(crate) fn push(&self, message: Envelope) {
        self.inbox.push(message);
    }

    /// The saved queue's cell, for its [`Owner`]'s `unsafe` accessors
    /// (the process's `Running` guard, in `crate::process`).
    pub(crate) fn saved_cell(&self) -> &UnsafeCell<Saved> {
        &self.saved
    }

    /// Number of messages waiting (any thread; approximate while it changes).
    pub(crate) fn len(&self) -> usize {
        self.saved_len.load(Ordering::Relaxed) + self.inbox.len()
    }

    /// Takes every message not yet seen by the owner (any thread), with the
    /// inbox's swap even if it looks empty (an exit's last take,
    /// `crate::message`, "Kept targets"). The caller drops them outside any
    /// lock.
    pub(crate) fn drain_inbox(&self) -> VecDeque<Envelope> {
        let mut taken = VecDeque::new();
        self.inbox.drain_into(&mut taken);
        taken
    }

    /// Bytes held by queued messages, estimated (any thread).
    pub(crate) fn memory_estimate(&self) -> usize {
        // A pointer in the saved queue (or the inbox's link) per message,
        // and the message's allocation.
        self.len() * (mem::size_of::<Envelope>() + mem::size_of::<Link>() + 32)
    }
}

#[cfg(test)]
use solo::Solo;

#[cfg(test)]
mod solo {
    use super::*;

    /// The tests' owner of a mailbox: the one thread that receives from it
    /// (in the loom model, the holder of the model's `RUNNING`).
    pub(crate) struct Solo<'a>(pub(crate) &'a Mailbox);

    impl Owner for Solo<'_> {
        fn mailbox(&self) -> &Mailbox {
            self.0
        }

        fn take_saved(&self) -> Saved {
            self.0.saved.with_mut(|cell| {
                // SAFETY: only the test's owner thread receives (loom checks
                // the accesses for races); the reference ends here.
                unsafe { mem::take(&mut *cell) }
            })
        }

        fn replace_saved(&self, saved: Saved) -> Saved {
            self.0.saved.with_mut(|cell| {
                // SAFETY: as in `take_saved`.
                unsafe { mem::replace(&mut *cell, saved) }
            })
        }
    }
}

#[cfg(all(test, not(feature = "loom-models")))]
mod tests {
    use super::*;

    fn take_u32(mailbox: &Mailbox, cursor: &mut Cursor, pred: impl Fn(u32) -> bool) -> Option<u32> {
        Solo(mailbox)
            .take_first(cursor, &mut |m| {
                m.downcast_ref::<u32>().is_some_and(|n| pred(*n))
            })
            .and_then(|m| m.downcast().ok())
    }

    #[test]
    fn selective_take_keeps_the_order_of_the_rest() {
        let mailbox = Mailbox::default();
        for n in [1u32, 2, 3, 4] {
            mailbox.push(Envelope::new(n));
        }
        mailbox.push(Envelope::new("text"));
        assert_eq!(
            take_u32(&mailbox, &mut Cursor::default(), |n| n == 3),
            Some(3)
        );
        assert_eq!(take_u32(&mailbox, &mut Cursor::default(), |n| n > 10), None);
        let rest: Vec<u32> =
            std::iter::from_fn(|| take_u32(&mailbox, &mut Cursor::default(), |_| true)).collect();
        assert_eq!(rest, vec![1, 2, 4]);
        assert_eq!(mailbox.len(), 1);
    }

    #[test]
    fn a_lone_new_message_is_tested_once_and_kept_in_order_if_it_does_not_match() {
        let mailbox = Mailbox::default();
        let mut waiting = Cursor::default();
        let mut tests = 0;
        let mut wants_two = |m: &Envelope| {
            tests += 1;
            m.downcast_ref::<u32>() == Some(&2)
        };
        mailbox.push(Envelope::new(1u32));
        assert!(Solo(&mailbox)
            .take_first(&mut waiting, &mut wants_two)
            .is_none());
        mailbox.push(Envelope::new(2u32));
        let got = Solo(&mailbox).take_first(&mut waiting, &mut wants_two);
        assert_eq!(got.and_then(|m| m.downcast::<u32>().ok()), Some(2));
        assert_eq!(tests, 2, "a message was tested twice by one receive");
        assert_eq!(mailbox.len(), 1);
        assert_eq!(
            take_u32(&mailbox, &mut Cursor::default(), |_| true),
            Some(1)
        );
        assert_eq!(mailbox.len(), 0);
    }

    #[test]
    fn a_cursor_rescans_after_another_receive_removed_a_message() {
        let mailbox = Mailbox::default();
        for n in [1u32, 2, 3] {
            mailbox.push(Envelope::new(n));
        }
        let mut waiting = Cursor::default();
        assert_eq!(take_u32(&mailbox, &mut waiting, |n| n == 9), None);
        assert_eq!(
            take_u32(&mailbox, &mut Cursor::default(), |n| n == 1),
            Some(1)
        );
        mailbox.push(Envelope::new(9u32));
        assert_eq!(
            take_u32(&mailbox, &mut waiting, |n| n == 9 || n == 2),
            Some(2)
        );
    }
}

/// Model checks under loom; see `crate::loom` for the command and bounds.
#[cfg(all(test, feature = "loom-models"))]
mod loom_models {
    use ::loom::sync::Arc;
    use ::loom::thread;

    use super::*;
    use crate::loom::sync::Mutex;
    use crate::process::{State, TransitionToIdle, TransitionToRunning, TransitionToScheduled};

    /// Message `n` of sender `from`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Msg {
        from: u8,
        n: u8,
    }

    fn take(mailbox: &Mailbox, cursor: &mut Cursor, matches: impl Fn(Msg) -> bool) -> Option<Msg> {
        Solo(mailbox)
            .take_first(cursor, &mut |m| {
                m.downcast_ref::<Msg>().is_some_and(|m| matches(*m))
            })
            .map(|m| m.downcast().unwrap())
    }

    /// Two senders push two messages each while the owner waits for
    /// sender 1's messages with one receive (the same cursor across attempts,
    /// as a parked `receive` keeps it), then takes everything left: no message
    /// is lost or duplicated, each sender's messages come out in the order
    /// sent, and the messages left behind come out in arrival order.
    #[test]
    fn two_senders_and_a_selective_receive_lose_nothing_and_keep_order() {
        // Exhaustive: 378 interleavings since the inbox has no lock (with
        // the lock and a length atomic beside it, four preemptions were
        // 126,092 and an exhaustive run did not end in ten minutes).
        crate::loom::model("two senders vs selective receive", None, || {
            let mailbox = Arc::new(Mailbox::default());
            // Arrival order, recorded under a lock held across the push.
            let arrivals = Arc::new(Mutex::new(Vec::new()));
            let senders: Vec<_> = (0..2)
                .map(|from| {
                    let (mailbox, arrivals) = (mailbox.clone(), arrivals.clone());
                    thread::spawn(move || {
                        for n in 0..2 {
                            let msg = Msg { from, n };
                            let mut arrivals = arrivals.lock();
                            mailbox.push(Envelope::new(msg));
                            arrivals.push(msg);
                        }
                    })
                })
                .collect();
            let mut got = Vec::new();
            let mut cursor = Cursor::default();
            for _ in 0..3 {
                if let Some(msg) = take(&mailbox, &mut cursor, |m| m.from == 1) {
                    got.push(msg);
                    cursor = Cursor::default();
                }
            }
            for sender in senders {
                sender.join().unwrap();
            }
            assert_eq!(mailbox.len(), 4 - got.len());
            let rest: Vec<Msg> =
                std::iter::from_fn(|| take(&mailbox, &mut Cursor::default(), |_| true)).collect();
            assert_eq!(mailbox.len(), 0);

            let arrivals = arrivals.lock().clone();
            let from_1: Vec<Msg> = arrivals.iter().copied().filter(|m| m.from == 1).collect();
            assert_eq!(
                got[..],
                from_1[..got.len()],
                "selective receive out of order"
            );
            let left: Vec<Msg> = arrivals
                .iter()
                .copied()
                .filter(|m| !got.contains(m))
                .collect();
            assert_eq!(rest, left, "messages left behind lost their arrival order");
        });
    }

    /// The owner's `saved` queue has no lock: a process parked by one
    /// scheduler thread and woken onto another relies on the state byte's
    /// transitions (and the run queue) to order the two polls. Here a sender
    /// wakes the process twice while two schedulers take turns polling a
    /// selective receive that first leaves a message in `saved`; loom checks
    /// every access to `saved` for a data race, and nothing is lost.
    #[test]
    fn the_saved_queue_passes_between_scheduler_threads_without_a_race() {
        struct Proc {
            state: State,
            mailbox: Mailbox,
            /// The run queue: whether the process is in it.
            queued: Mutex<bool>,
            /// What the receive got, owned like `saved` by the RUNNING holder.
            got: crate::loom::cell::UnsafeCell<Option<Msg>>,
        }

        // SAFETY: `got` is only touched by the RUNNING holder or after the
        // other threads are joined, like the mailbox's `saved`.
        unsafe impl Sync for Proc {}

        impl Proc {
            fn wake(&self) {
                if let TransitionToScheduled::Queue =
                    self.state.transition_to_scheduled_after_push()
                {
                    let mut queued = self.queued.lock();
                    assert!(!*queued);
                    *queued = true;
                }
            }

            /// One scheduler turn: pop, poll the receive once, file it.
            fn run_one(&self) {
                if !mem::take(&mut *self.queued.lock()) {
                    return;
                }
                let TransitionToRunning::Poll(claim) = self.state.transition_to_running() else {
                    unreachable!("nobody kills it")
                };
                if let Some(msg) = take(&self.mailbox, &mut Cursor::default(), |m| m.from == 1) {
                    self.got.with_mut(|got| {
                        // SAFETY: this thread holds RUNNING.
                        unsafe { *got = Some(msg) }
                    });
                }
                match self.state.transition_to_idle(claim) {
                    TransitionToIdle::Idle => {}
                    TransitionToIdle::Requeue => *self.queued.lock() = true,
                    TransitionToIdle::Exiting(_) => unreachable!(),
                }
            }
        }

        crate::loom::model("saved queue handed between schedulers", Some(4), || {
            let process = Arc::new(Proc {
                state: State::new_scheduled(),
                mailbox: Mailbox::default(),
                queued: Mutex::new(true),
                got: crate::loom::cell::UnsafeCell::new(None),
            });
            let p = process.clone();
            let sender = thread::spawn(move || {
                for msg in [Msg { from: 0, n: 0 }, Msg { from: 1, n: 0 }] {
                    p.mailbox.push(Envelope::new(msg));
                    p.wake();
                }
            });
            let p = process.clone();
            let scheduler = thread::spawn(move || {
                p.run_one();
                p.run_one();
            });
            process.run_one();
            process.run_one();
            sender.join().unwrap();
            scheduler.join().unwrap();
            process.run_one();
            let got = process.got.with_mut(|got| {
                // SAFETY: every other thread is joined.
                unsafe { *got }
            });
            assert_eq!(got, Some(Msg { from: 1, n: 0 }), "a wake-up was lost");
            let rest = take(&process.mailbox, &mut Cursor::default(), |_| true);
            assert_eq!(rest, Some(Msg { from: 0, n: 0 }));
        });
    }
}
