//! Deadlines as plain futures, on the runtime's timer wheels: [`Sleep`],
//! [`timeout`] and [`Interval`].
//!
//! [`sleep`](crate::sleep) at the crate root is Erlang's `timer:sleep/1`: it
//! suspends the calling *process*. The futures here are for code that waits
//! for a deadline *beside* something else — a `select!` between a socket and
//! a timeout, hyper's header timer, a heartbeat in a response stream — and
//! can be polled anywhere: in a process, or in a future some other executor
//! runs. They need no tokio driver: a pending [`Sleep`] is one entry on the
//! wheel of the slot that armed it, holding the waker of its last poll, and
//! the scheduler's workers fire it (see `timer.rs`).
//!
//! Resolution is a millisecond and a deadline never fires early: a [`Sleep`]
//! is ready once `Instant::now() >= deadline`. The wake-up protocol is the
//! wheel's own (arm, cancel racing a firing: the loom models in `timer.rs`);
//! a [`Sleep`] adds only that it re-arms when it is polled with another
//! waker, and a firing that raced that re-arm is a spurious wake-up of the
//! old waker, never a lost one (the new entry is armed before `Pending` is
//! returned). A [`Sleep`] whose runtime has been dropped never completes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::context;
use crate::runtime::{Handle, Shared};
use crate::timer::{TimerAction, TimerKey};

/// A future that is ready at a deadline (tokio's `Sleep`, on Ember's
/// wheels). Dropping it disarms its timer.
pub struct Sleep {
    rt: Arc<Shared>,
    deadline: Instant,
    /// The timer on the wheel and the waker it will wake, while armed.
    armed: Option<(TimerKey, Waker)>,
}

/// A [`Sleep`] that is ready `duration` from now, on the current runtime.
///
/// # Panics
///
/// Outside an Ember runtime (a process or a scheduler thread); elsewhere use
/// [`Handle::sleep_until`].
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(deadline_after(duration))
}

/// A [`Sleep`] that is ready at `deadline`, on the current runtime.
///
/// # Panics
///
/// Outside an Ember runtime; elsewhere use [`Handle::sleep_until`].
pub fn sleep_until(deadline: Instant) -> Sleep {
    context::with_runtime("time::sleep", |rt| Sleep::new(rt.clone(), deadline))
}

impl Handle {
    /// A [`Sleep`] on this runtime's wheels that is ready at `deadline`;
    /// usable from any thread.
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep::new(self.shared.clone(), deadline)
    }

    /// A [`Sleep`] on this runtime's wheels that is ready `duration` from
    /// now; usable from any thread.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        self.sleep_until(deadline_after(duration))
    }
}

/// `now + duration`, saturating a century out.
fn deadline_after(duration: Duration) -> Instant {
    Instant::now()
        .checked_add(duration)
        .unwrap_or_else(crate::timer::far_future)
}

impl Sleep {
    fn new(rt: Arc<Shared>, deadline: Instant) -> Sleep {
        Sleep {
            rt,
            deadline,
            armed: None,
        }
    }

    /// The instant this sleep is ready at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Moves the deadline (earlier or later); the next poll arms it.
    pub fn reset(&mut self, deadline: Instant) {
        if deadline != self.deadline {
            self.deadline = deadline;
            self.disarm();
        }
    }

    fn disarm(&mut self) {
        if let Some((key, _)) = self.armed.take() {
            self.rt.timers.cancel_key(key);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.is_elapsed() {
            this.disarm();
            return Poll::Ready(());
        }
        // Armed for this waker: still on the wheel (a firing makes the
        // deadline pass, and the check above sees it). Otherwise arm anew
        // before answering `Pending`, so no firing can be missed.
        if !matches!(&this.armed, Some((_, waker)) if crate::process::same_waker(waker, cx.waker()))
        {
            this.disarm();
            let waker = crate::process::clone_quietly(cx.waker());
            let at = this.rt.timers.deadline_ms(this.deadline);
            let key = this.rt.timers.insert(
                &this.rt,
                at,
                at,
                TimerAction::Waker(Box::new(crate::process::clone_quietly(&waker))),
            );
            this.armed = Some((key, waker));
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("armed", &self.armed.is_some())
            .finish()
    }
}

/// The error of a [`timeout`] whose deadline passed first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed(());

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(_: Elapsed) -> std::io::Error {
        std::io::ErrorKind::TimedOut.into()
    }
}

pin_project_lite::pin_project! {
    /// The future of [`timeout`].
    #[derive(Debug)]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        sleep: Sleep,
    }
}

/// Runs `future` for at most `duration`: its output, or [`Elapsed`] if the
/// deadline passed first (then `future` is dropped with the `Timeout`). The
/// future is polled first, so one that is ready at once is never timed out.
///
/// # Panics
///
/// Outside an Ember runtime.
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep(duration),
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        Pin::new(this.sleep).poll(cx).map(|()| Err(Elapsed(())))
    }
}

/// Ticks every `period`; a tick that comes late delays the ticks after it
/// (tokio's `MissedTickBehavior::Delay`): the next one is a period after
/// the late tick was taken, never a burst to catch up.
#[derive(Debug)]
pub struct Interval {
    sleep: Sleep,
    period: Duration,
}

/// An [`Interval`] whose first tick is at `start`, then every `period`
/// (at least a millisecond).
///
/// # Panics
///
/// Outside an Ember runtime.
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    Interval {
        sleep: sleep_until(start),
        period: period.max(Duration::from_millis(1)),
    }
}

impl Interval {
    /// Ready with the tick's instant once the next tick is due.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        if Pin::new(&mut self.sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let ticked = self.sleep.deadline();
        self.sleep.reset(deadline_after(self.period));
        Poll::Ready(ticked)
    }

    /// Waits for the next tick.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// The time between ticks.
    pub fn period(&self) -> Duration {
        self.period
    }
}

#[cfg(test)]
mod tests {
    use std::future::{poll_fn, Future};
    use std::pin::pin;
    use std::task::Poll;
    use std::time::Duration;

    /// A sleep polled again by its process, quietly or not, stays on the
    /// wheel as armed: a quiet waker matches the one it keeps.
    #[test]
    fn a_sleep_polled_again_quietly_or_not_is_not_armed_anew() {
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            let mut sleep = pin!(super::sleep(Duration::from_secs(60)));
            poll_fn(|cx| {
                assert!(crate::process::poll_quietly(sleep.as_mut(), cx).is_pending());
                let key = |s: &super::Sleep| s.armed.as_ref().map(|(key, _)| *key);
                let first = key(&sleep).expect("armed");
                assert!(crate::process::poll_quietly(sleep.as_mut(), cx).is_pending());
                assert_eq!(key(&sleep), Some(first), "armed anew for a quiet poll");
                assert!(sleep.as_mut().poll(cx).is_pending());
                assert_eq!(key(&sleep), Some(first), "armed anew for a plain poll");
                Poll::Ready(())
            })
            .await;
        });
    }
}
