//! The inbox: where senders leave messages for a process, without a lock.
//!
//! # Protocol
//!
//! A Treiber stack of the envelopes themselves. Every envelope's
//! allocation begins with a [`Link`], so a push allocates nothing: it
//! points the envelope at the current top and swings `head` to it with one
//! compare-exchange (`Release`, publishing the message and the link). The
//! owner takes the whole stack with one swap (`Acquire`) and reverses the
//! chain into arrival order (`take_into`). Anyone may take (each swap takes
//! a chain nobody else can reach); only the process's `RUNNING` holder does
//! while the process lives, and whoever tears it down after.
//!
//! The exchanges also order the other way: a take releases and a push
//! acquires, so a sender whose push lands after a take sees what the taker
//! did before it, if the take swapped (`drain_into`, even when the inbox
//! looked empty). An exiting process is marked exiting before its last take;
//! a sender that reached it without the process table pushes, then looks
//! for the mark (`crate::message`, "Kept targets").
//!
//! Order: one sender's pushes are one after another, so each goes on top of
//! the previous one and comes out after it. Pushes of different senders are
//! ordered by their compare-exchanges on `head`.
//!
//! Nothing here waits: a sender that is descheduled (a demoted hog's thread,
//! say) in the middle of a push holds nobody up. With a lock, a receiver at
//! normal priority could wait on a sender at `SCHED_IDLE`.
//!
//! # The count
//!
//! Readers on other threads (introspection) ask how many messages wait. A
//! counter beside `head` would cost every push a second read-modify-write,
//! as the lock did. Instead, the top 16 bits of the `head` word
//! count the envelopes in the stack, updated by the same compare-exchange:
//! user-space addresses on 64-bit Linux (x86-64, aarch64) fit in 48 bits
//! unless a program asks the kernel for higher ones (a hint to `mmap`, or
//! tagged pointers), which the allocators Ember runs on do not. A push
//! checks it. Past [`MAX_COUNT`] envelopes in one stack the count stays at
//! its maximum and each further push adds one to `uncounted` (one more
//! read-modify-write, for an inbox 65,535 deep); the taker subtracts what it
//! took beyond the maximum. The count is exact whenever no push or take is
//! under way.

use std::any::Any;
use std::collections::VecDeque;
use std::ptr;

use super::Envelope;
use crate::loom::cell::UnsafeCell;
use crate::loom::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

const _: () = assert!(usize::BITS == 64, "Ember's inbox needs 64-bit pointers");

/// Bits of the `head` word that hold an address.
const ADDRESS_BITS: u32 = 48;
/// The most envelopes the `head` word counts, in its top 16 bits. The loom
/// models count to 2, so that their few pushes go past it.
#[cfg(not(all(test, feature = "loom-models")))]
const MAX_COUNT: usize = (1 << (usize::BITS - ADDRESS_BITS)) - 1;
#[cfg(all(test, feature = "loom-models"))]
const MAX_COUNT: usize = 2;
const ADDRESS_MASK: usize = (1 << ADDRESS_BITS) - 1;

/// The start of every envelope's allocation: the inbox's link to the next
/// (older) envelope, and how to turn the allocation back into an envelope.
pub(crate) struct Link {
    /// The envelope pushed just before this one (null: none). Written by
    /// the pusher before its compare-exchange, read by the taker after its
    /// swap.
    next: UnsafeCell<*mut Link>,
    /// Rebuilds the envelope (its message type's vtable) from the link.
    revive: unsafe fn(*mut Link) -> Envelope,
}

// SAFETY: `next` is only read and written by whoever owns the envelope (its
// creator, a pusher before publishing it, the taker that swapped it out);
// the inbox's `Release`/`Acquire` pair orders the hand-over. Elsewhere the
// link is inert data, and the message beside it is `Send`.
unsafe impl Send for Link {}

impl Link {
    /// The link of a new envelope whose message is a `M`.
    pub(crate) fn new<M: Any + Send>() -> Link {
        Link {
            next: UnsafeCell::new(ptr::null_mut()),
            revive: revive::<M>,
        }
    }
}

/// An envelope's allocation: its link, then the message.
#[repr(C)]
pub(crate) struct Node<M: ?Sized> {
    pub(crate) link: Link,
    pub(crate) message: M,
}

/// `Link::revive` for a message of type `M`.
///
/// # Safety
///
/// `link` came from [`Envelope::into_link`] of an envelope whose message is
/// a `M`, and is revived once.
unsafe fn revive<M: Any + Send>(link: *mut Link) -> Envelope {
    // SAFETY: the allocation is a `Node<M>` (the caller's contract), whose
    // link is its first field (`repr(C)`); `into_link` gave up the box.
    let node: Box<Node<M>> = unsafe { Box::from_raw(link.cast::<Node<M>>()) };
    Envelope(node)
}

impl Envelope {
    /// Gives up the box, as a pointer to its link.
    fn into_link(self) -> *mut Link {
        Box::into_raw(self.0).cast::<Link>()
    }

    /// The envelope whose link this is.
    ///
    /// # Safety
    ///
    /// `link` came from `into_link` and is revived once.
    unsafe fn from_link(link: *mut Link) -> Envelope {
        // SAFETY: `link` is a live envelope's link (the caller's contract),
        // and `revive` is the one its message type set.
        unsafe { ((*link).revive)(link) }
    }
}

/// What [`Inbox::take_lone_or_into`] took.
pub(crate) enum Taken {
    /// The inbox was empty.
    Nothing,
    /// One envelope, given back as is.
    Lone(Envelope),
    /// Two or more, now at the back of the queue given.
    Queued,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct Inbox {
    /// The newest envelope's link, with the stack's count in its top bits.
    head: AtomicPtr<Link>,
    /// Envelopes pushed past [`MAX_COUNT`], less those taken (wrapping: a
    /// taker may subtract before the pusher has added).
    uncounted: AtomicUsize,
}

fn count_of(head: *mut Link) -> usize {
    head.addr() >> ADDRESS_BITS
}

fn link_of(head: *mut Link) -> *mut Link {
    head.map_addr(|a| a & ADDRESS_MASK)
}

/// The ordering a push's exchange succeeds with: `AcqRel` (module docs),
/// but for the seeded bug of the loom models.
#[inline(always)]
fn publish() -> Ordering {
    #[cfg(all(test, feature = "loom-models"))]
    if loom_models::SEEDED_RELAXED_PUSH.load(std::sync::atomic::Ordering::Relaxed) {
        return Ordering::Relaxed;
    }
    Ordering::AcqRel
}

impl Inbox {
    /// Leaves `envelope` in the inbox (any thread).
    pub(crate) fn push(&self, envelope: Envelope) {
        let link = envelope.into_link();
        assert!(
            link.addr() <= ADDRESS_MASK,
            "ember: an allocation above 2^48 (a tagged or high pointer) cannot go in an inbox"
        );
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let count = count_of(head);
            // SAFETY: the envelope is ours until the exchange publishes it.
            unsafe { (*link).next.with_mut(|next| *next = link_of(head)) };
            let counted = count.saturating_add(1).min(MAX_COUNT);
            let new = link.map_addr(|a| a | counted << ADDRESS_BITS);
            match self
                .head
                .compare_exchange(head, new, publish(), Ordering::Relaxed)
            {
                Ok(_) => {
                    if count == MAX_COUNT {
                        self.uncounted.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                Err(now) => head = now,
            }
        }
    }

    /// Whether the inbox looks empty. A push under way may not be seen
    /// yet; its sender wakes the process after it.
    pub(crate) fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed).is_null()
    }

    /// How many envelopes wait (any thread; approximate while pushes or a
    /// take are under way).
    pub(crate) fn len(&self) -> usize {
        let counted = count_of(self.head.load(Ordering::Acquire));
        let uncounted = self.uncounted.load(Ordering::Relaxed) as isize;
        counted + uncounted.max(0) as usize
    }

    /// Moves every envelope in the inbox to the back of `into`, in arrival
    /// order; returns how many. Takes nothing, and writes nothing, if the
    /// inbox looks empty: the owner's receive, which a push's wake-up
    /// brings back.
    pub(crate) fn take_into(&self, into: &mut VecDeque<Envelope>) -> usize {
        if self.is_empty() {
            return 0;
        }
        self.drain_into(into)
    }

    /// As [`Inbox::take_into`], but a lone envelope comes back as is instead
    /// of going to the back of `into` (the common case of a receive that
    /// finds one new message: it is tested where it is).
    pub(crate) fn take_lone_or_into(&self, into: &mut VecDeque<Envelope>) -> Taken {
        if self.is_empty() {
            return Taken::Nothing;
        }
        let head = self.head.swap(ptr::null_mut(), Ordering::AcqRel);
        let link = link_of(head);
        if link.is_null() {
            return Taken::Nothing;
        }
        // SAFETY: the swap made the chain ours alone and acquired its links
        // (as in `drain_into`).
        let next = unsafe { (*link).next.with_mut(|next| *next) };
        if next.is_null() {
            // A lone envelope counts as one, never past `MAX_COUNT`.
            // SAFETY: the link came from `into_link` and leaves the chain here.
            return Taken::Lone(unsafe { Envelope::from_link(link) });
        }
        self.revive_chain(head, into);
        Taken::Queued
    }

    /// As [`Inbox::take_into`], but always with the swap, even if the inbox
    /// looks empty: what an exit's last take needs, since the swap is what
    /// orders it with a later push (module docs).
    pub(crate) fn drain_into(&self, into: &mut VecDeque<Envelope>) -> usize {
        let head = self.head.swap(ptr::null_mut(), Ordering::AcqRel);
        self.revive_chain(head, into)
    }

    /// Moves the chain `head` (a `head` word just swapped out, with its
    /// count) to the back of `into`, oldest first; returns how many.
    fn revive_chain(&self, head: *mut Link, into: &mut VecDeque<Envelope>) -> usize {
        // Reverse the chain (newest first) in place: the oldest ends on top.
        let mut link = link_of(head);
        let mut oldest = ptr::null_mut::<Link>();
        let mut taken = 0;
        while !link.is_null() {
            // SAFETY: the swap made this chain ours alone, and its links
            // were published by the pushes' exchanges (a release sequence
            // on `head`), which the swap acquired.
            let next = unsafe {
                (*link)
                    .next
                    .with_mut(|next| std::mem::replace(&mut *next, oldest))
            };
            oldest = link;
            link = next;
            taken += 1;
        }
        into.reserve(taken);
        let mut link = oldest;
        while !link.is_null() {
            // SAFETY: as above; each link is revived once, after its next
            // is read.
            let next = unsafe { (*link).next.with_mut(|next| *next) };
            // SAFETY: the link came from `into_link` and leaves the chain here.
            into.push_back(unsafe { Envelope::from_link(link) });
            link = next;
        }
        if count_of(head) == MAX_COUNT && taken > MAX_COUNT {
            self.uncounted
                .fetch_sub(taken - MAX_COUNT, Ordering::Relaxed);
        }
        taken
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut left = VecDeque::new();
        self.drain_into(&mut left);
    }
}

#[cfg(all(test, not(feature = "loom-models")))]
mod tests {
    use super::*;

    fn take_all(inbox: &Inbox) -> Vec<u32> {
        let mut taken = VecDeque::new();
        inbox.take_into(&mut taken);
        taken
            .into_iter()
            .map(|e| e.downcast::<u32>().unwrap())
            .collect()
    }

    #[test]
    fn messages_come_out_in_the_order_pushed() {
        let inbox = Inbox::default();
        assert!(inbox.is_empty());
        for n in 0..5u32 {
            inbox.push(Envelope::new(n));
        }
        assert_eq!(inbox.len(), 5);
        assert_eq!(take_all(&inbox), vec![0, 1, 2, 3, 4]);
        assert!(inbox.is_empty());
        assert_eq!(inbox.len(), 0);
    }

    #[test]
    fn the_count_stays_exact_past_what_the_head_word_holds() {
        let inbox = Inbox::default();
        let n = MAX_COUNT as u32 + 1000;
        for i in 0..n {
            inbox.push(Envelope::new(i));
        }
        assert_eq!(inbox.len(), n as usize);
        let taken = take_all(&inbox);
        assert_eq!(taken.len(), n as usize);
        assert!(taken.iter().copied().eq(0..n), "out of order");
        assert_eq!(inbox.len(), 0);
        inbox.push(Envelope::new(7u32));
        assert_eq!(inbox.len(), 1);
    }

    #[test]
    fn an_inbox_dropped_with_messages_drops_them() {
        let alive = std::sync::Arc::new(());
        {
            let inbox = Inbox::default();
            for _ in 0..3 {
                inbox.push(Envelope::new(alive.clone()));
            }
            assert_eq!(std::sync::Arc::strong_count(&alive), 4);
        }
        assert_eq!(std::sync::Arc::strong_count(&alive), 1);
    }

    #[test]
    fn concurrent_senders_keep_their_own_order() {
        let inbox = std::sync::Arc::new(Inbox::default());
        let senders: Vec<_> = (0..4u32)
            .map(|from| {
                let inbox = inbox.clone();
                std::thread::spawn(move || {
                    for n in 0..10_000u32 {
                        inbox.push(Envelope::new((from, n)));
                    }
                })
            })
            .collect();
        let mut got = VecDeque::new();
        while senders.iter().any(|s| !s.is_finished()) {
            inbox.take_into(&mut got);
        }
        for s in senders {
            s.join().unwrap();
        }
        inbox.take_into(&mut got);
        assert_eq!(got.len(), 40_000);
        let mut next = [0u32; 4];
        for envelope in got {
            let (from, n) = envelope.downcast::<(u32, u32)>().unwrap();
            assert_eq!(n, next[from as usize], "sender {from} out of order");
            next[from as usize] += 1;
        }
    }
}

/// Model checks under loom; see `crate::loom` for the command and bounds.
#[cfg(all(test, feature = "loom-models"))]
mod loom_models {
    use ::loom::sync::Arc;
    use ::loom::thread;

    use super::*;

    /// Makes `push` publish with `Relaxed`: the seeded bug.
    pub(crate) static SEEDED_RELAXED_PUSH: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    /// Two senders push two messages each while the owner takes twice,
    /// reading the count between; then the owner takes what is left.
    /// Every message comes out once, each sender's in the order sent, and
    /// the count (which goes past the models' `MAX_COUNT`) ends at zero.
    fn two_senders_and_a_taker() {
        let inbox = Arc::new(Inbox::default());
        let senders: Vec<_> = (0..2u8)
            .map(|from| {
                let inbox = inbox.clone();
                thread::spawn(move || {
                    for n in 0..2u8 {
                        inbox.push(Envelope::new((from, n)));
                    }
                })
            })
            .collect();
        let mut got = VecDeque::new();
        inbox.take_into(&mut got);
        assert!(inbox.len() + got.len() <= 4, "more counted than sent");
        inbox.take_into(&mut got);
        for sender in senders {
            sender.join().unwrap();
        }
        assert_eq!(inbox.len(), 4 - got.len(), "the count is off");
        inbox.take_into(&mut got);
        assert_eq!(inbox.len(), 0, "the count is off after the last take");
        let got: Vec<(u8, u8)> = got.into_iter().map(|e| e.downcast().unwrap()).collect();
        assert_eq!(got.len(), 4, "a message lost or duplicated: {got:?}");
        for from in 0..2 {
            let mine: Vec<u8> = got.iter().filter(|m| m.0 == from).map(|m| m.1).collect();
            assert_eq!(mine, vec![0, 1], "sender {from} out of order");
        }
    }

    /// Bounded: an exhaustive run passed too (5,795,115 interleavings, about
    /// seven minutes); four preemptions take well under a minute.
    #[test]
    fn loom_models_inbox_loses_nothing_and_keeps_each_senders_order() {
        crate::loom::model(
            "inbox: two senders and a taker",
            Some(4),
            two_senders_and_a_taker,
        );
    }

    /// The seeded mutation: a push that publishes with `Relaxed` lets the
    /// taker read a link its pusher wrote without ordering; loom must
    /// report it. Run in a child process (loom aborts on a failed model).
    #[test]
    fn loom_models_inbox_relaxed_push_is_caught() {
        crate::loom::assert_seeded_bug_caught(
            "mailbox::inbox::loom_models::seeded_bug_relaxed_push",
            &["Causality violation"],
            "a push published with Relaxed",
        );
    }

    #[test]
    #[ignore = "a seeded bug: run by loom_models_inbox_relaxed_push_is_caught, which expects it to fail"]
    fn seeded_bug_relaxed_push() {
        SEEDED_RELAXED_PUSH.store(true, std::sync::atomic::Ordering::Relaxed);
        crate::loom::model(
            "inbox: a push published with Relaxed",
            Some(3),
            two_senders_and_a_taker,
        );
    }
}
