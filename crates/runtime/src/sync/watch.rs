//! One value, many readers told of each change: a [`Sender`] replaces it,
//! each [`Receiver`] reads the latest and waits for the next.
//!
//! ```
//! use ember_runtime::sync::watch;
//!
//! let rt = ember_runtime::Runtime::new().unwrap();
//! rt.block_on(async {
//!     let (tx, mut rx) = watch::channel(0);
//!     ember_runtime::spawn(async move {
//!         for n in 1..=3 {
//!             tx.send_replace(n);
//!         }
//!     });
//!     // Readers see the latest value, not every one.
//!     while rx.changed().await.is_ok() {
//!         if *rx.borrow_and_update() == 3 {
//!             break;
//!         }
//!     }
//! });
//! ```
//!
//! * Each value has a version; a receiver remembers the last version it
//!   saw ([`Receiver::borrow_and_update`], or a [`Receiver::changed`] that
//!   returned), and `changed` returns at once if a newer one exists.
//! * `changed` fails once the sender is dropped and the receiver has seen
//!   its last value.
//! * [`Receiver::borrow`] (and every other `borrow`, and `wait_for`'s
//!   result) holds the channel's one lock while the reference lives: clone
//!   what you need and let it go before awaiting or calling anything else
//!   on the channel, from either end. Unlike tokio's read lock, two
//!   references at once on one thread (`*rx.borrow() != *tx.borrow()`)
//!   deadlock.
//! * Unlike tokio's, a receiver whose sender is gone still gets the value
//!   it has not seen: `has_changed` says `Ok(true)` and `changed` returns
//!   once more before failing.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::Waiters;
use crate::loom::sync::{Mutex, MutexGuard};

/// Makes a channel holding `value`; the receiver has seen it.
pub fn channel<T>(value: T) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Mutex::new(State {
        value,
        version: 0,
        sender: true,
        receivers: 1,
        waiting: Waiters::new(),
    }));
    (Sender { chan: chan.clone() }, Receiver { chan, seen: 0 })
}

struct State<T> {
    value: T,
    /// Bumped by every send.
    version: u64,
    /// The sender is not dropped yet.
    sender: bool,
    receivers: usize,
    /// `changed` futures waiting.
    waiting: Waiters,
}

impl<T> State<T> {
    /// A new version: every waiting receiver's waker, to wake once the lock
    /// is released.
    fn bump(&mut self) -> Vec<Waker> {
        self.version += 1;
        self.waiting.take_all().collect()
    }
}

fn wake_all(waiting: Vec<Waker>) {
    for waker in waiting {
        waker.wake();
    }
}

/// The sending end.
pub struct Sender<T> {
    chan: Arc<Mutex<State<T>>>,
}

/// A receiving end; [`Sender::subscribe`] or `clone` makes more.
pub struct Receiver<T> {
    chan: Arc<Mutex<State<T>>>,
    /// The last version this receiver saw.
    seen: u64,
}

/// A reference to the value, holding the channel's lock.
pub struct Ref<'a, T> {
    guard: MutexGuard<'a, State<T>>,
}

impl<T> Deref for Ref<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.guard.value
    }
}

/// The sender was dropped (for [`Receiver::changed`]: and its last value
/// was seen).
pub use super::RecvError;

/// No receiver was left; the value is given back.
pub use super::SendError;

impl<T> Sender<T> {
    /// Replaces the value if a receiver is left, waking every waiting one.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the value if no receiver is left.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        let mut state = self.chan.lock();
        if state.receivers == 0 {
            return Err(SendError(value));
        }
        let old = std::mem::replace(&mut state.value, value);
        let waiting = state.bump();
        drop(state);
        drop(old);
        wake_all(waiting);
        Ok(())
    }

    /// Replaces the value, with or without receivers, and returns the old
    /// one.
    pub fn send_replace(&self, value: T) -> T {
        let mut state = self.chan.lock();
        let old = std::mem::replace(&mut state.value, value);
        let waiting = state.bump();
        drop(state);
        wake_all(waiting);
        old
    }

    /// Changes the value in place, with or without receivers.
    pub fn send_modify(&self, modify: impl FnOnce(&mut T)) {
        let mut state = self.chan.lock();
        modify(&mut state.value);
        let waiting = state.bump();
        drop(state);
        wake_all(waiting);
    }

    /// The current value (holding the lock; see the module docs).
    pub fn borrow(&self) -> Ref<'_, T> {
        Ref {
            guard: self.chan.lock(),
        }
    }

    /// A new receiver, which has seen the current value.
    pub fn subscribe(&self) -> Receiver<T> {
        let mut state = self.chan.lock();
        state.receivers += 1;
        let seen = state.version;
        drop(state);
        Receiver {
            chan: self.chan.clone(),
            seen,
        }
    }

    /// How many receivers are left.
    pub fn receiver_count(&self) -> usize {
        self.chan.lock().receivers
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.chan.lock();
        state.sender = false;
        let waiting = if crate::sync::seeded_bug::watch_silent_drop() {
            Vec::new()
        } else {
            state.waiting.take_all().collect()
        };
        drop(state);
        wake_all(waiting);
    }
}

impl<T> Receiver<T> {
    /// The current value, without marking it seen (holding the lock).
    pub fn borrow(&self) -> Ref<'_, T> {
        Ref {
            guard: self.chan.lock(),
        }
    }

    /// The current value, marked seen (holding the lock).
    pub fn borrow_and_update(&mut self) -> Ref<'_, T> {
        let guard = self.chan.lock();
        self.seen = guard.version;
        Ref { guard }
    }

    /// Whether a value newer than the last one seen exists.
    ///
    /// # Errors
    ///
    /// [`RecvError`] if the sender is gone and there is none.
    pub fn has_changed(&self) -> Result<bool, RecvError> {
        let state = self.chan.lock();
        if state.version != self.seen {
            Ok(true)
        } else if state.sender {
            Ok(false)
        } else {
            Err(RecvError)
        }
    }

    /// Waits until the value satisfies `ready` (now, or after a change) and
    /// returns it, marked seen (holding the lock).
    ///
    /// # Errors
    ///
    /// [`RecvError`] if the sender is gone and its last value is not ready.
    pub async fn wait_for(
        &mut self,
        mut ready: impl FnMut(&T) -> bool,
    ) -> Result<Ref<'_, T>, RecvError> {
        // Split borrows: the returned lock borrows `chan` only.
        let Receiver { chan, seen } = self;
        loop {
            // A lock is never held across the wait (the future stays `Send`).
            match ready_now(chan, seen, &mut ready) {
                Ok(value) => return Ok(value),
                Err(Some(error)) => return Err(error),
                Err(None) => {}
            }
            Changed {
                chan,
                seen: &mut *seen,
                ticket: None,
            }
            .await?;
        }
    }

    /// Waits for a value newer than the last one seen, and marks it seen.
    /// Read it with [`borrow_and_update`](Receiver::borrow_and_update): a
    /// newer one may have come since, and this marks that one seen too.
    ///
    /// # Errors
    ///
    /// [`RecvError`] once the sender is gone and its last value was seen.
    pub fn changed(&mut self) -> Changed<'_, T> {
        Changed {
            chan: &self.chan,
            seen: &mut self.seen,
            ticket: None,
        }
    }
}

/// The value, marked seen, if it is `ready`; else whether a change may
/// still come (`None`) or not (the sender is gone).
fn ready_now<'a, T>(
    chan: &'a Arc<Mutex<State<T>>>,
    seen: &mut u64,
    ready: &mut impl FnMut(&T) -> bool,
) -> Result<Ref<'a, T>, Option<RecvError>> {
    let guard = chan.lock();
    *seen = guard.version;
    if ready(&guard.value) {
        Ok(Ref { guard })
    } else if guard.sender {
        Err(None)
    } else {
        Err(Some(RecvError))
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Receiver<T> {
        self.chan.lock().receivers += 1;
        Receiver {
            chan: self.chan.clone(),
            seen: self.seen,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.chan.lock().receivers -= 1;
    }
}

/// The future of [`Receiver::changed`].
#[must_use = "waits for nothing unless awaited"]
pub struct Changed<'a, T> {
    chan: &'a Arc<Mutex<State<T>>>,
    /// The receiver's last version seen.
    seen: &'a mut u64,
    /// Its place among the waiting, once it waited.
    ticket: Option<u64>,
}

impl<T> Unpin for Changed<'_, T> {}

impl<T> Future for Changed<'_, T> {
    type Output = Result<(), RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = this.chan.lock();
        if state.version != *this.seen {
            *this.seen = state.version;
            let left_line = this.ticket.take().and_then(|t| state.waiting.remove(t));
            drop(state);
            drop(left_line);
            return Poll::Ready(Ok(()));
        }
        if !state.sender {
            this.ticket = None;
            return Poll::Ready(Err(RecvError));
        }
        let replaced = state.waiting.keep(&mut this.ticket, cx.waker());
        drop(state);
        drop(replaced);
        Poll::Pending
    }
}

impl<T> Drop for Changed<'_, T> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            let mut state = self.chan.lock();
            let waker = state.waiting.remove(ticket);
            drop(state);
            drop(waker);
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("watch::Sender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("watch::Receiver")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::{channel, RecvError};

    #[test]
    fn receivers_see_the_latest_value_once_and_the_senders_end() {
        let (tx, mut rx) = channel(1);
        assert_eq!(rx.has_changed(), Ok(false));
        let mut late = tx.subscribe();
        tx.send_replace(2);
        tx.send_modify(|v| *v += 1);
        assert_eq!(rx.has_changed(), Ok(true));
        assert_eq!(*rx.borrow_and_update(), 3);
        assert_eq!(rx.has_changed(), Ok(false));
        assert_eq!(*late.borrow(), 3);
        assert_eq!(late.has_changed(), Ok(true), "borrow does not mark seen");
        drop(tx);
        assert_eq!(rx.has_changed(), Err(RecvError));
        assert_eq!(late.has_changed(), Ok(true), "its last value is unseen");
        assert_eq!(*late.borrow_and_update(), 3);
        assert_eq!(late.has_changed(), Err(RecvError));

        let (tx, rx) = channel(0);
        drop(rx);
        assert_eq!(tx.receiver_count(), 0);
        assert!(tx.send(1).is_err());
    }

    #[test]
    fn a_waiting_process_wakes_on_a_change_and_on_the_senders_drop() {
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            let (tx, mut rx) = channel(0u32);
            crate::spawn(async move {
                for n in 1..=100 {
                    tx.send_replace(n);
                    crate::time::sleep(std::time::Duration::from_micros(50)).await;
                }
            });
            let mut last = 0;
            while rx.changed().await.is_ok() {
                let now = *rx.borrow_and_update();
                assert!(now > last, "{now} after {last}");
                last = now;
            }
            assert_eq!(last, 100);

            let (tx, mut rx) = channel(0u32);
            crate::spawn(async move {
                for n in 1..=10 {
                    tx.send_replace(n);
                    crate::time::sleep(std::time::Duration::from_micros(50)).await;
                }
            });
            let ready = *rx.wait_for(|n| *n >= 5).await.unwrap();
            assert!((5..=10).contains(&ready), "{ready}");
            assert!(rx.wait_for(|n| *n > 10).await.is_err(), "never ready");
        });
    }
}

#[cfg(all(test, feature = "loom-models"))]
mod loom_models {
    use super::channel;
    use ::loom::future::block_on;
    use ::loom::thread;

    /// A sender sends twice and goes while two receivers wait for changes:
    /// each receiver ends having seen the last value, and neither waits
    /// forever.
    fn two_receivers_follow_a_sender() {
        let (tx, rx) = channel(0u8);
        let receivers: Vec<_> = [rx.clone(), rx]
            .into_iter()
            .map(|mut rx| {
                thread::spawn(move || {
                    let mut last = 0;
                    while block_on(rx.changed()).is_ok() {
                        let now = *rx.borrow_and_update();
                        assert!(now > last, "{now} seen after {last}");
                        last = now;
                    }
                    assert_eq!(last, 2, "the last value was missed");
                })
            })
            .collect();
        tx.send_replace(1);
        tx.send_replace(2);
        drop(tx);
        for receiver in receivers {
            receiver.join().unwrap();
        }
    }

    #[test]
    fn loom_models_watch_wakes_every_receiver_on_each_change_and_the_end() {
        crate::loom::model(
            "watch: two receivers follow a sender",
            Some(3),
            two_receivers_follow_a_sender,
        );
    }

    /// The seeded mutation: a dropped sender that does not wake the waiting
    /// receivers leaves them waiting forever; loom must report the
    /// deadlock. Run in a child process (loom aborts on a failed model).
    #[test]
    fn loom_models_watch_silent_drop_is_caught() {
        crate::loom::assert_seeded_bug_caught(
            "sync::watch::loom_models::seeded_bug_silent_drop",
            &["deadlock"],
            "a watch sender dropped without a wake-up",
        );
    }

    #[test]
    #[ignore = "a seeded bug: run by loom_models_watch_silent_drop_is_caught, which expects it to fail"]
    fn seeded_bug_silent_drop() {
        crate::sync::seeded_bug::WATCH_SILENT_DROP
            .store(true, std::sync::atomic::Ordering::Relaxed);
        crate::loom::model(
            "watch: a silent drop",
            Some(3),
            two_receivers_follow_a_sender,
        );
    }
}
