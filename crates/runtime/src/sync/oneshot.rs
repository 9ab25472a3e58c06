//! A channel for one value: one [`Sender`], one [`Receiver`] that is a
//! future of the value.
//!
//! ```
//! use ember_runtime::sync::oneshot;
//!
//! let rt = ember_runtime::Runtime::new().unwrap();
//! rt.block_on(async {
//!     let (reply, answer) = oneshot::channel();
//!     ember_runtime::spawn(async move {
//!         let _ = reply.send(6 * 7);
//!     });
//!     assert_eq!(answer.await, Ok(42));
//! });
//! ```
//!
//! A sender dropped without sending ends the wait with [`RecvError`]: a
//! process killed before it answered is noticed as soon as its body is
//! dropped.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::loom::sync::Mutex;

/// Makes a channel for one value.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Mutex::new(State {
        value: None,
        waker: None,
        sender: true,
        receiver: true,
    }));
    (
        Sender {
            chan: Some(chan.clone()),
        },
        Receiver { chan },
    )
}

struct State<T> {
    value: Option<T>,
    /// The receiver's, while it waits.
    waker: Option<Waker>,
    /// Neither sent nor dropped yet.
    sender: bool,
    /// Not dropped yet.
    receiver: bool,
}

/// The sending end: [`send`](Sender::send) consumes it.
pub struct Sender<T> {
    /// `None` once sent.
    chan: Option<Arc<Mutex<State<T>>>>,
}

/// The receiving end: a future of the value, or of [`RecvError`] if the
/// sender was dropped without sending.
pub struct Receiver<T> {
    chan: Arc<Mutex<State<T>>>,
}

/// The sender was dropped without sending (or the value was taken already).
pub use super::RecvError;

/// Why [`Receiver::try_recv`] found no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// Not sent yet.
    Empty,
    /// The sender was dropped without sending (or the value was taken).
    Closed,
}

impl<T> Sender<T> {
    /// Sends `value`, waking the receiver; gives it back if the receiver was
    /// dropped.
    ///
    /// # Errors
    ///
    /// `Err(value)` if the receiver is gone.
    pub fn send(mut self, value: T) -> Result<(), T> {
        let chan = self.chan.take().expect("a sender sends once");
        let mut state = chan.lock();
        if !state.receiver {
            return Err(value);
        }
        state.value = Some(value);
        state.sender = false;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver was dropped: nobody waits for the value.
    pub fn is_closed(&self) -> bool {
        self.chan.as_ref().is_none_or(|chan| !chan.lock().receiver)
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let Some(chan) = self.chan.take() else {
            return;
        };
        let mut state = chan.lock();
        state.sender = false;
        let waker = if crate::sync::seeded_bug::oneshot_silent_drop() {
            None
        } else {
            state.waker.take()
        };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The value if it was sent, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if it was not sent yet,
    /// [`TryRecvError::Closed`] if it never will be (or was taken).
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut state = self.chan.lock();
        match state.value.take() {
            Some(value) => Ok(value),
            None if state.sender => Err(TryRecvError::Empty),
            None => Err(TryRecvError::Closed),
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.chan.lock();
        if let Some(value) = state.value.take() {
            return Poll::Ready(Ok(value));
        }
        if !state.sender {
            return Poll::Ready(Err(RecvError));
        }
        let replaced = crate::process::keep_quietly(&mut state.waker, cx.waker());
        drop(state);
        drop(replaced);
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.chan.lock();
        state.receiver = false;
        let value = state.value.take();
        let waker = state.waker.take();
        drop(state);
        drop((value, waker));
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("oneshot::Sender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("oneshot::Receiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::{channel, RecvError, TryRecvError};

    #[test]
    fn a_value_sent_is_received_once_and_a_dropped_sender_closes() {
        let (tx, mut rx) = channel();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert!(!tx.is_closed());
        tx.send(5).unwrap();
        assert_eq!(rx.try_recv(), Ok(5));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));

        let (tx, mut rx) = channel::<u8>();
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));

        let (tx, rx) = channel::<String>();
        drop(rx);
        assert_eq!(tx.send("back".into()), Err("back".to_owned()));
    }

    #[test]
    fn a_waiting_process_gets_the_value_or_the_senders_drop() {
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            let (tx, rx) = channel();
            crate::spawn(async move {
                crate::sleep(std::time::Duration::from_millis(5)).await;
                tx.send(String::from("late")).unwrap();
            });
            assert_eq!(rx.await, Ok(String::from("late")));

            let (tx, rx) = channel::<u8>();
            let holder = crate::spawn(async move {
                let _tx = tx;
                std::future::pending::<()>().await;
            });
            crate::exit(holder, crate::ExitReason::Kill);
            assert_eq!(rx.await, Err(RecvError));
        });
    }
}

#[cfg(all(test, feature = "loom-models"))]
mod loom_models {
    use super::{channel, RecvError};
    use ::loom::future::block_on;
    use ::loom::thread;

    /// A sender that sends or drops on another thread while the receiver
    /// waits: the receiver always wakes, with the value or the drop.
    fn send_or_drop_against_a_wait(send: bool) {
        let (tx, rx) = channel::<u32>();
        let sender = thread::spawn(move || {
            if send {
                tx.send(7).unwrap();
            } else {
                drop(tx);
            }
        });
        let got = block_on(rx);
        assert_eq!(got, if send { Ok(7) } else { Err(RecvError) });
        sender.join().unwrap();
    }

    /// A send against the receiver's drop: the value is either delivered
    /// to nobody and dropped, or given back; never kept.
    fn send_against_a_receivers_drop() {
        let (tx, rx) = channel::<std::sync::Arc<()>>();
        let value = std::sync::Arc::new(());
        let sent = value.clone();
        let sender = thread::spawn(move || tx.send(sent).is_ok());
        drop(rx);
        let _delivered = sender.join().unwrap();
        assert_eq!(std::sync::Arc::strong_count(&value), 1, "a value was kept");
    }

    #[test]
    fn loom_models_oneshot_wakes_its_receiver_on_a_send_or_a_drop() {
        crate::loom::model("oneshot: a send against a wait", None, || {
            send_or_drop_against_a_wait(true)
        });
        crate::loom::model("oneshot: a drop against a wait", None, || {
            send_or_drop_against_a_wait(false)
        });
        crate::loom::model(
            "oneshot: a send against the receiver's drop",
            None,
            send_against_a_receivers_drop,
        );
    }

    /// The seeded mutation: a sender dropped without waking its receiver
    /// leaves it waiting forever; loom must report the deadlock. Run in a
    /// child process (loom aborts on a failed model).
    #[test]
    fn loom_models_oneshot_silent_drop_is_caught() {
        crate::loom::assert_seeded_bug_caught(
            "sync::oneshot::loom_models::seeded_bug_silent_drop",
            &["deadlock"],
            "a oneshot sender dropped without a wake-up",
        );
    }

    #[test]
    #[ignore = "a seeded bug: run by loom_models_oneshot_silent_drop_is_caught, which expects it to fail"]
    fn seeded_bug_silent_drop() {
        crate::sync::seeded_bug::ONESHOT_SILENT_DROP
            .store(true, std::sync::atomic::Ordering::Relaxed);
        crate::loom::model("oneshot: a silent drop", None, || {
            send_or_drop_against_a_wait(false)
        });
    }
}
