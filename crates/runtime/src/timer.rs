//! Timers: `send_after`, `cancel_timer`, `read_timer`, and the wake-ups behind
//! receive timeouts and [`sleep`](crate::sleep).
//!
//! All timers of a runtime live in one hierarchical timing wheel
//! ([`wheel::Wheel`]) with millisecond resolution, behind one mutex: arming
//! and cancelling are O(1), and a million pending timers cost a few tens of
//! megabytes. A dedicated thread sleeps until the earliest deadline and then
//! delivers what fired. An insert only notifies that thread when it moves the
//! earliest deadline forward in time, so arming in bulk costs no wake-ups.

mod wheel;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

pub(crate) use wheel::TimerKey;
use wheel::Wheel;

use crate::context;
use crate::mailbox::Envelope;
use crate::pid::{Pid, TimerRef};
use crate::process::Process;
use crate::runtime::Shared;
use crate::scheduler;

/// What happens when a timer fires.
pub(crate) enum TimerAction {
    /// Deliver a message (`send_after`): boxed, so that the wheel's slots
    /// stay small for the receive timeouts of a million sleeping processes.
    Send(Box<(Pid, Envelope)>),
    /// Wake a process (receive timeouts).
    Wake(Arc<Process>),
}

struct TimerState {
    wheel: Wheel<TimerAction>,
    /// The deadline the timer thread sleeps until: `u64::MAX` when it waits
    /// for the first timer, 0 while it is awake.
    sleeping_until: u64,
    shutdown: bool,
}

/// The timer service of one runtime.
pub(crate) struct Timers {
    state: Mutex<TimerState>,
    wakeup: Condvar,
    origin: Instant,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers {
            state: Mutex::new(TimerState {
                wheel: Wheel::new(0),
                sleeping_until: 0,
                shutdown: false,
            }),
            wakeup: Condvar::new(),
            origin: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Milliseconds since the origin, rounded up so a timer never fires early.
    fn deadline_ms(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        let ms = since.as_millis() as u64;
        if since > Duration::from_millis(ms) {
            ms + 1
        } else {
            ms
        }
    }

    fn insert(&self, deadline: u64, action: TimerAction) -> TimerKey {
        let mut state = self.state.lock();
        let key = state.wheel.insert(deadline, action);
        if deadline < state.sleeping_until {
            state.sleeping_until = 0;
            self.wakeup.notify_one();
        }
        key
    }

    /// Arms a wake-up of `process` at `at`.
    pub(crate) fn wake_at(&self, at: Instant, process: Arc<Process>) -> TimerKey {
        self.insert(self.deadline_ms(at), TimerAction::Wake(process))
    }

    /// Disarms a timer; returns its deadline (ms) if it was pending.
    pub(crate) fn cancel_key(&self, key: TimerKey) -> Option<u64> {
        let removed = self.state.lock().wheel.remove(key);
        removed.map(|(deadline, action)| {
            scheduler::drop_contained(action);
            deadline
        })
    }

    /// Time left until `deadline`, in whole milliseconds rounded down, so it
    /// never exceeds the timeout the timer was armed with.
    fn remaining(&self, deadline: u64) -> Duration {
        let left = (self.origin + Duration::from_millis(deadline))
            .saturating_duration_since(Instant::now());
        Duration::from_millis(left.as_millis() as u64)
    }

    /// Cancels every timer in `keys` (their target exited); stale keys are
    /// skipped.
    pub(crate) fn cancel_all(&self, keys: &[TimerKey]) {
        if keys.is_empty() {
            return;
        }
        let mut cancelled = Vec::new();
        {
            let mut state = self.state.lock();
            for key in keys {
                if let Some((_, action)) = state.wheel.remove(*key) {
                    cancelled.push(action);
                }
            }
        }
        scheduler::drop_contained(cancelled);
    }

    /// Keeps only the keys of timers still pending.
    pub(crate) fn retain_pending(&self, keys: &mut Vec<TimerKey>) {
        let state = self.state.lock();
        keys.retain(|key| state.wheel.deadline(*key).is_some());
    }

    /// Number of pending timers.
    pub(crate) fn pending(&self) -> usize {
        self.state.lock().wheel.len()
    }

    pub(crate) fn shut_down(&self) {
        self.state.lock().shutdown = true;
        self.wakeup.notify_all();
    }

    /// The timer thread's loop.
    pub(crate) fn run(&self, rt: &Shared) {
        let mut fired = Vec::new();
        let mut state = self.state.lock();
        // The wheel's time, advanced at most 1 ms per lock hold so that
        // arming a timer never waits behind a huge batch of expirations.
        let mut wheel_now = 0;
        while !state.shutdown {
            wheel_now = self.now_ms().min(wheel_now + 1).max(wheel_now);
            state.wheel.advance(wheel_now, &mut fired);
            if !fired.is_empty() || wheel_now < self.now_ms() {
                drop(state);
                for (_key, action) in fired.drain(..) {
                    match action {
                        TimerAction::Send(send) => {
                            let (to, message) = *send;
                            rt.send_envelope(to, message);
                        }
                        TimerAction::Wake(process) => scheduler::wake(&process),
                    }
                }
                state = self.state.lock();
                continue;
            }
            match state.wheel.next_deadline() {
                Some(deadline) => {
                    state.sleeping_until = deadline;
                    let at = self.origin + Duration::from_millis(deadline);
                    self.wakeup.wait_until(&mut state, at);
                }
                None => {
                    state.sleeping_until = u64::MAX;
                    self.wakeup.wait(&mut state);
                }
            }
            state.sleeping_until = 0;
        }
        // Drop what never fired outside the lock (it may hold processes).
        let mut rest = Vec::new();
        state.wheel.advance(u64::MAX, &mut rest);
        drop(state);
        scheduler::drop_contained(rest);
    }
}

/// Sends `message` to `to` after `after` (Erlang's `erlang:send_after/3`).
/// The message is dropped if `to` is dead by then. Millisecond resolution;
/// never fires early.
pub fn send_after<M: Send + 'static>(to: Pid, message: M, after: Duration) -> TimerRef {
    context::with_runtime("send_after", |rt| {
        context::consume_reductions(1);
        // A terminated process sends nothing more, not even later; and a
        // timer to a dead process is cancelled at once (as in OTP).
        // Most timers target their own process: no table lookup for those.
        let target = context::try_with_current(|me| (me.pid == to).then(|| me.clone()))
            .flatten()
            .or_else(|| rt.lookup(to));
        let Some(target) = target.filter(|_| !crate::message::sender_is_dead()) else {
            scheduler::drop_contained(message);
            return TimerRef(u64::MAX);
        };
        let at = Instant::now().checked_add(after).unwrap_or_else(far_future);
        let key = rt.timers.insert(
            rt.timers.deadline_ms(at),
            TimerAction::Send(Box::new((to, Envelope::new(message)))),
        );
        // Recorded on the target, so that its exit cancels the timer.
        let recorded = target.with_live_relations(|r| {
            let r = r.more_mut();
            r.timers.push(key);
            if r.timers.len() >= r.timers_prune_at {
                rt.timers.retain_pending(&mut r.timers);
                r.timers_prune_at = (r.timers.len() * 2).max(16);
            }
        });
        if recorded.is_none() {
            rt.timers.cancel_key(key);
        }
        TimerRef(key.to_u64())
    })
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Cancels a timer. Returns the time that was left, or `None` if it already
/// fired or was cancelled (Erlang's `erlang:cancel_timer/1` returning `false`).
pub fn cancel_timer(timer: TimerRef) -> Option<Duration> {
    context::with_runtime("cancel_timer", |rt| {
        let deadline = rt.timers.cancel_key(TimerKey::from_u64(timer.0))?;
        Some(rt.timers.remaining(deadline))
    })
}

/// The time left before a timer fires, or `None` if it fired or was cancelled.
pub fn read_timer(timer: TimerRef) -> Option<Duration> {
    context::with_runtime("read_timer", |rt| {
        let deadline = rt
            .timers
            .state
            .lock()
            .wheel
            .deadline(TimerKey::from_u64(timer.0))?;
        Some(rt.timers.remaining(deadline))
    })
}
