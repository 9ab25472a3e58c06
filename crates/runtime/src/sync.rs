//! Channels between processes that never need tokio's driver: a
//! [`oneshot`] for one answer, a bounded [`mpsc`] queue and a [`watch`] of
//! the latest value.
//!
//! They work as tokio's channels of the same names do, inside processes and
//! in tokio tasks alike. The difference is what a waiting process costs. A
//! process's waker cloned by code outside Ember is a sign that tokio's
//! driver may have to wake it later, so the runtime starts the driver's
//! thread (`ember-io`) at the first such clone. tokio's channels clone
//! their waiters' wakers, so a process waiting on one starts that thread
//! although only the channel's other end will ever wake it. These channels
//! keep their waiters' wakers as Ember's own timers and sockets do, without
//! that sign: a node whose processes only use Ember's primitives runs
//! without the thread.
//!
//! Each is a mutex around the channel's state. Every waker is taken out
//! under the lock and woken (or dropped) after it: a waker of a process
//! dropped under the lock could end that process's last reference there.
//! The loom models next to each check that no value and no wake-up is lost.

pub mod mpsc;
pub mod oneshot;
pub mod watch;

use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Waker;

/// A send found no receiver left; the value is given back. Each channel
/// names it as tokio's does: `mpsc::SendError`, `watch::SendError`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no receiver is left")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// The sender is gone: a `oneshot`'s was dropped without sending (or its
/// value was taken already); a `watch`'s was dropped and, for `changed`,
/// its last value seen. Named `oneshot::RecvError` and `watch::RecvError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvError;

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the sender is gone")
    }
}

impl std::error::Error for RecvError {}

/// Runs `future` with its process's waker made quiet: wakers it keeps do
/// not start tokio's driver thread.
///
/// For a future that only Ember's primitives wake (its sockets, timers,
/// channels and messages) or that wakes itself, but keeps wakers in
/// structures of its own: hyper's connection over an Ember socket, whose
/// body channels the connection's own state machine feeds. Never for a
/// future that awaits a tokio socket, timer or task: with no other process
/// needing it, tokio's driver would not start, and that future would wait
/// forever. Outside a process (a tokio task) it is `future` itself.
pub async fn woken_by_ember<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    poll_fn(|cx| crate::process::poll_quietly(future.as_mut(), cx)).await
}

/// The seeded bugs of the channels' loom models, each a missing wake-up the
/// models must catch: a flag each, set only by its seeded model; without
/// the models, each check is `false`.
mod seeded_bug {
    macro_rules! flags {
        ($($(#[$doc:meta])* $check:ident: $flag:ident;)*) => {$(
            #[cfg(all(test, feature = "loom-models"))]
            pub(super) static $flag: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);

            $(#[$doc])*
            #[inline(always)]
            pub(super) fn $check() -> bool {
                #[cfg(all(test, feature = "loom-models"))]
                if $flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return true;
                }
                false
            }
        )*};
    }

    flags! {
        /// A dropped `oneshot` sender does not wake its receiver.
        oneshot_silent_drop: ONESHOT_SILENT_DROP;
        /// An `mpsc` take does not wake a send waiting for room.
        mpsc_no_room_wake_up: MPSC_NO_ROOM_WAKE_UP;
        /// A dropped `watch` sender does not wake the waiting receivers.
        watch_silent_drop: WATCH_SILENT_DROP;
    }
}

/// The futures waiting on a channel (`mpsc`'s sends waiting for room,
/// `watch`'s `changed`), in arrival order, each under a ticket it keeps so
/// that its drop can take it out of line. Every waker taken out is returned
/// for the caller to wake or drop once the channel's lock is released.
struct Waiters {
    line: VecDeque<(u64, Option<Waker>)>,
    next_ticket: u64,
}

impl Waiters {
    fn new() -> Waiters {
        Waiters {
            line: VecDeque::new(),
            next_ticket: 0,
        }
    }

    /// Keeps `waker` under `ticket` (a new one if `None`), joining the back
    /// of the line if not in it (new, or taken out by a wake-up); returns
    /// the waker it replaced.
    #[must_use = "the replaced waker is to be dropped after the lock"]
    fn keep(&mut self, ticket: &mut Option<u64>, waker: &Waker) -> Option<Waker> {
        let ticket = *ticket.get_or_insert_with(|| {
            self.next_ticket += 1;
            self.next_ticket
        });
        match self.line.iter_mut().find(|(t, _)| *t == ticket) {
            Some((_, kept)) => crate::process::keep_quietly(kept, waker),
            None => {
                let waker = crate::process::clone_quietly(waker);
                self.line.push_back((ticket, Some(waker)));
                None
            }
        }
    }

    /// Takes `ticket` out of line; `None` if it was not in it (woken).
    #[must_use = "the waker is to be dropped after the lock"]
    fn remove(&mut self, ticket: u64) -> Option<Waker> {
        let at = self.line.iter().position(|(t, _)| *t == ticket)?;
        self.line.remove(at).and_then(|(_, waker)| waker)
    }

    /// The first in line, taken out.
    fn pop_front(&mut self) -> Option<Waker> {
        self.line.pop_front().and_then(|(_, waker)| waker)
    }

    /// Everyone in line, taken out.
    fn take_all(&mut self) -> impl Iterator<Item = Waker> {
        std::mem::take(&mut self.line)
            .into_iter()
            .filter_map(|(_, waker)| waker)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.line.len()
    }
}
