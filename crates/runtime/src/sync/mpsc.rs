//! A bounded queue from many [`Sender`]s to one [`Receiver`], with
//! back-pressure: a send waits while the queue is full.
//!
//! ```
//! use ember_runtime::sync::mpsc;
//!
//! let rt = ember_runtime::Runtime::new().unwrap();
//! rt.block_on(async {
//!     let (tx, mut rx) = mpsc::channel(2);
//!     ember_runtime::spawn(async move {
//!         for i in 0..5 {
//!             if tx.send(i).await.is_err() {
//!                 break; // the receiver is gone
//!             }
//!         }
//!     });
//!     let mut got = Vec::new();
//!     while let Some(i) = rx.recv().await {
//!         got.push(i);
//!     }
//!     assert_eq!(got, [0, 1, 2, 3, 4]);
//! });
//! ```
//!
//! * Values from one sender arrive in the order it sent them.
//! * [`Receiver::recv`] gives `None` once every sender is dropped and the
//!   queue is empty.
//! * A dropped receiver fails every send with the value given back, and
//!   drops what was queued.
//! * A sender that waits for room is woken when the receiver takes a value,
//!   first come first served among waiting senders. A send that finds room
//!   takes it even if others wait (they are woken again at the next take).
//!   A waiting send dropped after its wake-up passes the wake-up on.

use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::Waiters;
use crate::loom::sync::Mutex;

/// Makes a queue that holds up to `capacity` values.
///
/// # Panics
///
/// If `capacity` is 0.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(capacity > 0, "an mpsc channel needs room for a value");
    let chan = Arc::new(Mutex::new(State {
        queue: VecDeque::new(),
        capacity,
        senders: 1,
        receiver: true,
        receiver_waker: None,
        waiting: Waiters::new(),
    }));
    (Sender { chan: chan.clone() }, Receiver { chan })
}

struct State<T> {
    queue: VecDeque<T>,
    capacity: usize,
    /// Live senders.
    senders: usize,
    /// The receiver is not dropped yet.
    receiver: bool,
    receiver_waker: Option<Waker>,
    /// Sends waiting for room, first come first.
    waiting: Waiters,
}

impl<T> State<T> {
    fn has_room(&self) -> bool {
        self.queue.len() < self.capacity
    }

    /// The first waiting send's waker, taken out of the line, if there is
    /// room for it.
    fn next_waiting(&mut self) -> Option<Waker> {
        if self.has_room() {
            self.waiting.pop_front()
        } else {
            None
        }
    }
}

/// A sending end; clone it for more senders.
pub struct Sender<T> {
    chan: Arc<Mutex<State<T>>>,
}

/// The receiving end.
pub struct Receiver<T> {
    chan: Arc<Mutex<State<T>>>,
}

/// The receiver was dropped; the value is given back.
pub use super::SendError;

/// Why [`Sender::try_send`] did not queue the value (given back).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue is full.
    Full(T),
    /// The receiver was dropped.
    Closed(T),
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("the queue is full"),
            TrySendError::Closed(_) => f.write_str("the receiver was dropped"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// Why [`Receiver::try_recv`] found no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing queued now.
    Empty,
    /// Nothing queued, and every sender is gone.
    Disconnected,
}

impl<T> Sender<T> {
    /// Queues `value`, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the value if the receiver is gone (before or while
    /// waiting).
    pub fn send(&self, value: T) -> Send<'_, T> {
        Send {
            sender: self,
            value: Some(value),
            ticket: None,
        }
    }

    /// Queues `value` if there is room now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], with the value.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let mut state = self.chan.lock();
        if !state.receiver {
            return Err(TrySendError::Closed(value));
        }
        if !state.has_room() {
            return Err(TrySendError::Full(value));
        }
        state.queue.push_back(value);
        let waker = state.receiver_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver was dropped: every send will fail.
    pub fn is_closed(&self) -> bool {
        !self.chan.lock().receiver
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.chan.lock().senders += 1;
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.chan.lock();
        state.senders -= 1;
        let waker = if state.senders == 0 {
            state.receiver_waker.take()
        } else {
            None
        };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The future of [`Sender::send`].
#[must_use = "a send does nothing unless awaited"]
pub struct Send<'a, T> {
    sender: &'a Sender<T>,
    /// `None` once queued or given back.
    value: Option<T>,
    /// Its place in the line of waiting sends, once it had to wait.
    ticket: Option<u64>,
}

impl<T> Unpin for Send<'_, T> {}

impl<T> Future for Send<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = this.sender.chan.lock();
        let Some(value) = this.value.take() else {
            panic!("a send polled after it finished");
        };
        if !state.receiver {
            this.ticket = None;
            return Poll::Ready(Err(SendError(value)));
        }
        if state.has_room() {
            let left_line = this.ticket.take().and_then(|t| state.waiting.remove(t));
            state.queue.push_back(value);
            let waker = state.receiver_waker.take();
            drop(state);
            drop(left_line);
            if let Some(waker) = waker {
                waker.wake();
            }
            return Poll::Ready(Ok(()));
        }
        this.value = Some(value);
        // New, or woken and then beaten to the room: (back) in line.
        let replaced = state.waiting.keep(&mut this.ticket, cx.waker());
        drop(state);
        drop(replaced);
        Poll::Pending
    }
}

impl<T> Drop for Send<'_, T> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket else {
            return;
        };
        let mut state = self.sender.chan.lock();
        let left_line = state.waiting.remove(ticket);
        // Not in line any more: it was woken for room it will not use, so
        // the next in line gets the wake-up.
        let passed_on = if left_line.is_none() {
            state.next_waiting()
        } else {
            None
        };
        drop(state);
        drop(left_line);
        if let Some(waker) = passed_on {
            waker.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The next value; `None` once every sender is gone and nothing is
    /// queued.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next value, keeping `cx`'s waker while there is none.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.chan.lock();
        if let Some(value) = state.queue.pop_front() {
            let waker = if crate::sync::seeded_bug::mpsc_no_room_wake_up() {
                None
            } else {
                state.next_waiting()
            };
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
            return Poll::Ready(Some(value));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        let replaced = crate::process::keep_quietly(&mut state.receiver_waker, cx.waker());
        drop(state);
        drop(replaced);
        Poll::Pending
    }

    /// The next value if one is queued now.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`], or [`TryRecvError::Disconnected`] once
    /// every sender is gone.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut state = self.chan.lock();
        match state.queue.pop_front() {
            Some(value) => {
                let waker = state.next_waiting();
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
                Ok(value)
            }
            None if state.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.chan.lock();
        state.receiver = false;
        let queued = std::mem::take(&mut state.queue);
        let waiting: Vec<Waker> = state.waiting.take_all().collect();
        let waker = state.receiver_waker.take();
        drop(state);
        drop((queued, waker));
        for waker in waiting {
            waker.wake();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("mpsc::Sender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("mpsc::Receiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use super::{channel, TryRecvError, TrySendError};

    #[test]
    fn a_full_queue_refuses_and_a_dropped_receiver_gives_values_back() {
        let (tx, mut rx) = channel(1);
        tx.try_send(1).unwrap();
        assert!(matches!(tx.try_send(2), Err(TrySendError::Full(2))));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        tx.try_send(3).unwrap();
        drop(rx);
        assert!(tx.is_closed());
        assert!(matches!(tx.try_send(4), Err(TrySendError::Closed(4))));

        let (tx, mut rx) = channel::<u8>(4);
        let tx2 = tx.clone();
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx2);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn a_waiting_send_dropped_after_its_wake_up_passes_it_on() {
        let (tx, mut rx) = channel(1);
        tx.try_send(0).unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut first = tx.send(1);
        let mut second = tx.send(2);
        assert!(Pin::new(&mut first).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut second).poll(&mut cx).is_pending());
        // The take wakes `first`, which is dropped unused: `second` must be
        // next, and take the room.
        assert_eq!(rx.try_recv(), Ok(0));
        let state = tx.chan.lock();
        assert_eq!(state.waiting.len(), 1, "the first in line was woken");
        drop(state);
        drop(first);
        assert!(
            tx.chan.lock().waiting.len() == 0,
            "the wake-up was passed on"
        );
        assert_eq!(Pin::new(&mut second).poll(&mut cx), Poll::Ready(Ok(())));
        assert_eq!(rx.try_recv(), Ok(2));
    }

    #[test]
    fn a_producer_process_waits_for_room_and_sees_the_receiver_go() {
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            let (tx, mut rx) = channel::<u32>(2);
            let (done, finished) = crate::sync::oneshot::channel();
            crate::spawn(async move {
                let mut sent = 0;
                while tx.send(sent).await.is_ok() {
                    sent += 1;
                }
                let _ = done.send(sent);
            });
            for i in 0..100 {
                assert_eq!(rx.recv().await, Some(i));
            }
            drop(rx);
            let sent = finished.await.unwrap();
            assert!((100..=103).contains(&sent), "sent {sent}");
        });
    }
}

#[cfg(all(test, feature = "loom-models"))]
mod loom_models {
    use super::channel;
    use ::loom::future::block_on;
    use ::loom::thread;

    /// Two senders send two values and one through a queue of one while
    /// the receiver takes them: every value arrives once, each sender's in
    /// order, no send waits forever, and the end is seen.
    fn two_senders_through_a_queue_of_one() {
        const SENT: [u8; 2] = [2, 1];
        let (tx, mut rx) = channel::<(u8, u8)>(1);
        let senders: Vec<_> = (0..2u8)
            .map(|id| {
                let tx = tx.clone();
                thread::spawn(move || {
                    for n in 0..SENT[id as usize] {
                        block_on(tx.send((id, n))).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = [0u8; 2];
        while let Some((id, n)) = block_on(rx.recv()) {
            assert_eq!(n, next[id as usize], "sender {id}'s values out of order");
            next[id as usize] += 1;
        }
        assert_eq!(next, SENT, "a value was lost");
        for sender in senders {
            sender.join().unwrap();
        }
    }

    #[test]
    fn loom_models_mpsc_loses_no_value_and_no_wake_up() {
        crate::loom::model(
            "mpsc: two senders through a queue of one",
            Some(2),
            two_senders_through_a_queue_of_one,
        );
    }

    /// The seeded mutation: a take that does not wake a send waiting for
    /// room leaves it waiting forever; loom must report the deadlock. Run
    /// in a child process (loom aborts on a failed model).
    #[test]
    fn loom_models_mpsc_take_without_wake_up_is_caught() {
        crate::loom::assert_seeded_bug_caught(
            "sync::mpsc::loom_models::seeded_bug_no_room_wake_up",
            &["deadlock"],
            "a take that wakes no waiting send",
        );
    }

    #[test]
    #[ignore = "a seeded bug: run by loom_models_mpsc_take_without_wake_up_is_caught, which expects it to fail"]
    fn seeded_bug_no_room_wake_up() {
        crate::sync::seeded_bug::MPSC_NO_ROOM_WAKE_UP
            .store(true, std::sync::atomic::Ordering::Relaxed);
        crate::loom::model(
            "mpsc: a take without a wake-up",
            Some(2),
            two_senders_through_a_queue_of_one,
        );
    }
}
