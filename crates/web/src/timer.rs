//! hyper's timer (header read timeout, keep-alive) on Ember's timer wheels:
//! the connection's process is woken by the wheel of the slot it runs on,
//! with no tokio time driver anywhere.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ember_runtime::{time, Handle};

/// A [`hyper::rt::Timer`] whose sleeps are [`time::Sleep`]s of one runtime.
#[derive(Clone, Debug)]
pub(crate) struct EmberTimer {
    runtime: Handle,
}

impl EmberTimer {
    /// A timer on the runtime of the calling process.
    pub(crate) fn current() -> EmberTimer {
        EmberTimer {
            runtime: Handle::current(),
        }
    }
}

/// A [`time::Sleep`] as hyper's [`hyper::rt::Sleep`].
struct HyperSleep(time::Sleep);

impl Future for HyperSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

impl hyper::rt::Sleep for HyperSleep {}

impl hyper::rt::Timer for EmberTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(self.runtime.sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(self.runtime.sleep_until(deadline)))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<HyperSleep>() {
            Some(ours) => ours.get_mut().0.reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}
