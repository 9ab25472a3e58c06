//! The mailbox: an ordered queue of messages of any type, with selective receive.
//!
//! # Protocol
//!
//! * `inbox` is shared: senders push to its back under its lock, so messages
//!   from one sender keep their order.
//! * `saved` belongs to the owner: messages it has already looked at and left
//!   in place. Only the thread polling the process touches it (see Safety). A
//!   receive scans `saved` from the front, then moves the whole inbox behind it
//!   and scans on, so the arrival order of all messages is kept.
//! * While a user predicate runs, the owner has taken `saved` out of its cell,
//!   so a predicate may itself send or even receive; whatever a nested receive
//!   leaves behind is merged back after the older messages.
//! * `saved_len` mirrors `saved`'s length for readers on other threads.
//!
//! # Safety
//!
//! `saved` is an `UnsafeCell`. The `unsafe fn`s that touch it require that the
//! caller has exclusive use of the process: it is the scheduler thread holding
//! the process's `RUNNING` bit (every process-facing call reaches the mailbox
//! through [`crate::context`]'s current process, which is only set for the
//! duration of such a poll or of dropping the body), or the runtime tearing
//! down after all scheduler threads have stopped. No reference into the cell
//! outlives the function that made it, so nested calls cannot alias.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::mem;

use crate::loom::cell::UnsafeCell;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use crate::loom::sync::Mutex;

/// One message of any type, as it sits in a mailbox.
pub struct Envelope(Box<dyn Any + Send>);

impl Envelope {
    /// Wraps a value.
    pub fn new<M: Send + 'static>(message: M) -> Envelope {
        Envelope(Box::new(message))
    }

    /// Whether the message is a `M`.
    pub fn is<M: 'static>(&self) -> bool {
        self.0.is::<M>()
    }

    /// Borrows the message as a `M`, if it is one.
    pub fn downcast_ref<M: 'static>(&self) -> Option<&M> {
        self.0.downcast_ref()
    }

    /// Unwraps the message as a `M`, or gives the envelope back.
    pub fn downcast<M: 'static>(self) -> Result<M, Envelope> {
        self.0.downcast().map(|b| *b).map_err(Envelope)
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
    inbox: Mutex<VecDeque<Envelope>>,
    saved: UnsafeCell<Saved>,
    saved_len: AtomicUsize,
}

// SAFETY: `inbox` is behind a mutex; `saved` is only accessed through the
// `unsafe fn`s below, whose contract gives one thread exclusive use of it at a
// time (module docs, "Safety"); `saved_len` is atomic. Envelopes are `Send`.
unsafe impl Sync for Mailbox {}

/// The owner's part of the mailbox.
#[derive(Default)]
struct Saved {
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

impl Mailbox {
    /// Appends a message (any thread).
    pub(crate) fn push(&self, message: Envelope) {
        self.inbox.lock().push_back(message);
    }

    /// Takes the saved queue out of its cell.
    ///
    /// # Safety
    ///
    /// The caller has exclusive use of the process (module docs).
    unsafe fn take_saved(&self) -> Saved {
        self.saved.with_mut(|cell| {
            // SAFETY: exclusive use per this fn's contract; the reference does
            // not outlive this statement.
            unsafe { mem::take(&mut *cell) }
        })
    }

    /// Puts the saved queue back, after anything a nested receive left there.
    ///
    /// # Safety
    ///
    /// The caller has exclusive use of the process (module docs).
    unsafe fn put_saved(&self, mut owned: Saved) {
        self.saved.with_mut(|cell| {
            // SAFETY: exclusive use per this fn's contract; the reference does
            // not outlive this closure and no user code runs while it exists.
            let cell = unsafe { &mut *cell };
            if !cell.queue.is_empty() {
                // A nested receive pulled newer messages from the inbox: they go after ours.
                owned.queue.append(&mut cell.queue);
                owned.removals += 1;
            }
            owned.removals = owned.removals.max(cell.removals);
            self.saved_len.store(owned.queue.len(), Ordering::Relaxed);
            *cell = owned;
        });
    }

    /// Removes and returns the first message, in arrival order, for which
    /// `matches` holds; `None` if there is none yet.
    ///
    /// `cursor` remembers the saved messages a previous call of the same
    /// receive already rejected, so a waiting receive never looks at a message
    /// twice (unless another receive removed one meanwhile: then it rescans).
    ///
    /// # Safety
    ///
    /// The caller has exclusive use of the process (module docs).
    pub(crate) unsafe fn take_first(
        &self,
        cursor: &mut Cursor,
        matches: &mut dyn FnMut(&Envelope) -> bool,
    ) -> Option<Envelope> {
        // SAFETY: forwarded from this fn's contract.
        let mut owned = unsafe { self.take_saved() };
        if owned.removals != cursor.removals {
            cursor.scanned = 0;
        }
        let saved = &mut owned.queue;
        let found = loop {
            if let Some(offset) = saved.range(cursor.scanned..).position(&mut *matches) {
                owned.removals += 1;
                break saved.remove(cursor.scanned + offset);
            }
            cursor.scanned = saved.len();
            let mut inbox = self.inbox.lock();
            if inbox.is_empty() {
                break None;
            }
            if saved.is_empty() {
                mem::swap(saved, &mut inbox);
            } else {
                saved.append(&mut inbox);
            }
        };
        cursor.removals = owned.removals;
        // SAFETY: forwarded from this fn's contract.
        unsafe { self.put_saved(owned) };
        found
    }

    /// Removes every message for which `matches` holds.
    ///
    /// # Safety
    ///
    /// The caller has exclusive use of the process (module docs).
    pub(crate) unsafe fn remove_all(&self, matches: &mut dyn FnMut(&Envelope) -> bool) -> usize {
        // SAFETY: forwarded from this fn's contract.
        let mut owned = unsafe { self.take_saved() };
        owned.queue.append(&mut self.inbox.lock());
        let before = owned.queue.len();
        owned.queue.retain(|m| !matches(m));
        let removed = before - owned.queue.len();
        if removed > 0 {
            owned.removals += 1;
        }
        // SAFETY: forwarded from this fn's contract.
        unsafe { self.put_saved(owned) };
        removed
    }

    /// Drops the saved messages (the body is being dropped).
    ///
    /// # Safety
    ///
    /// The caller has exclusive use of the process (module docs).
    pub(crate) unsafe fn clear_saved(&self) {
        // SAFETY: forwarded from this fn's contract.
        let owned = unsafe { self.take_saved() };
        self.saved_len.store(0, Ordering::Relaxed);
        drop(owned);
    }

    /// Number of messages waiting (any thread; approximate while it changes).
    pub(crate) fn len(&self) -> usize {
        self.saved_len.load(Ordering::Relaxed) + self.inbox.lock().len()
    }

    /// Takes every message not yet seen by the owner (any thread). The caller
    /// drops them outside any lock.
    pub(crate) fn drain_inbox(&self) -> VecDeque<Envelope> {
        mem::take(&mut *self.inbox.lock())
    }

    /// Bytes held by queued messages, estimated (any thread).
    pub(crate) fn memory_estimate(&self) -> usize {
        let queued = self.len();
        let slots = self.inbox.lock().capacity() + self.saved_len.load(Ordering::Relaxed);
        slots * mem::size_of::<Envelope>() + queued * 32
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn take_u32(mailbox: &Mailbox, cursor: &mut Cursor, pred: impl Fn(u32) -> bool) -> Option<u32> {
        // SAFETY: the test owns the mailbox exclusively.
        unsafe {
            mailbox.take_first(cursor, &mut |m| {
                m.downcast_ref::<u32>().is_some_and(|n| pred(*n))
            })
        }
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
