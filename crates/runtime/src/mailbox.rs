//! The mailbox: an ordered queue of messages of any type, with selective receive.
//!
//! # Protocol
//!
//! * `inbox` is shared: senders push to its back under its lock, so messages
//!   from one sender keep their order.
//! * `saved` is the owner's: messages it has already looked at and left in
//!   place. Only the owning process (inside a poll) touches it. A receive scans
//!   `saved` from the front, then moves the whole inbox behind it and scans on,
//!   so the arrival order of all messages is kept.
//! * The owner takes `saved` out of its mutex while it runs a user predicate,
//!   so a predicate may itself send, even to its own process.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::mem;

use parking_lot::Mutex;

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
    saved: Mutex<Saved>,
}

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

    /// Removes and returns the first message, in arrival order, for which
    /// `matches` holds; `None` if there is none yet. Owner only.
    ///
    /// `cursor` remembers the saved messages a previous call of the same
    /// receive already rejected, so a waiting receive never looks at a message
    /// twice (unless another receive removed one meanwhile: then it rescans).
    pub(crate) fn take_first(
        &self,
        cursor: &mut Cursor,
        matches: &mut dyn FnMut(&Envelope) -> bool,
    ) -> Option<Envelope> {
        let mut owned = mem::take(&mut *self.saved.lock());
        if owned.removals != cursor.removals {
            cursor.scanned = 0;
        }
        let saved = &mut owned.queue;
        let found = loop {
            if let Some(offset) = saved.iter().skip(cursor.scanned).position(&mut *matches) {
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
        // Nothing else writes `saved`; put ours back (keeping its allocation).
        *self.saved.lock() = owned;
        found
    }

    /// Removes every message for which `matches` holds. Owner only.
    pub(crate) fn remove_all(&self, matches: &mut dyn FnMut(&Envelope) -> bool) -> usize {
        let mut owned = mem::take(&mut *self.saved.lock());
        owned.queue.append(&mut self.inbox.lock());
        let before = owned.queue.len();
        owned.queue.retain(|m| !matches(m));
        let removed = before - owned.queue.len();
        if removed > 0 {
            owned.removals += 1;
        }
        *self.saved.lock() = owned;
        removed
    }

    /// Number of messages waiting.
    pub(crate) fn len(&self) -> usize {
        self.saved.lock().queue.len() + self.inbox.lock().len()
    }

    /// Drops every message (the process is exiting). Returns them so the caller
    /// can drop them outside any lock.
    pub(crate) fn drain(&self) -> (VecDeque<Envelope>, VecDeque<Envelope>) {
        let saved = mem::take(&mut self.saved.lock().queue);
        let inbox = mem::take(&mut *self.inbox.lock());
        (saved, inbox)
    }

    /// Bytes held by queued messages, estimated.
    pub(crate) fn memory_estimate(&self) -> usize {
        let slots = self.saved.lock().queue.capacity() + self.inbox.lock().capacity();
        slots * mem::size_of::<Envelope>() + self.len() * 32
    }
}
