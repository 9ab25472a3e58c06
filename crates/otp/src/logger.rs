//! Overload protection for the reports the OTP layer writes (supervisor
//! reports, generic server crash reports), after Erlang's logger.
//!
//! A crash storm — a million supervised workers failing at 1% a second is
//! ten thousand `child_terminated` reports a second — must not become a
//! disk-filling log storm, nor slow the supervisors down with the writing.
//! Erlang's logger guards its handlers with a *burst limit* (by default at
//! most 500 events per 1000 ms; the rest are dropped) and reports what it
//! dropped in one line. Ember does the same for every report this crate
//! writes, through one [`Limiter`], [`reports`]:
//!
//! * **Write** mode: within the current window (1 s by default) the first
//!   `max` reports (500 by default) are written, by the thread that emits
//!   them, as before. (A report no subscriber would record is skipped
//!   before it reaches the limiter.)
//! * **Drop** mode: past that, reports are dropped until the window ends.
//!   Dropping costs a lock and a counter: nothing is formatted.
//! * **Flush**: when the window ends the count of what was dropped is
//!   written as one line, `"N reports dropped"` (level warn, target
//!   `ember_otp::logger`, fields `limiter` and `dropped`), and the next
//!   window starts in write mode. The line comes with the next report, or
//!   from a short-lived flusher thread (started only while reports are being
//!   dropped) if the storm stopped, so a count is never left unsaid.
//!
//! Erlang's logger also switches to drop and flush modes on the length of a
//! handler's message queue. Reports here are written synchronously by the
//! emitting thread, so no queue builds up; the burst limit is what bounds
//! the volume. Totals (written, dropped) are kept for metrics and tests:
//! [`Limiter::stats`].
//!
//! ```
//! use std::time::Duration;
//! use ember_otp::logger::Limiter;
//!
//! static LIMITER: Limiter = Limiter::new("example", 2, Duration::from_secs(3600));
//! let written = (0..10).filter(|_| LIMITER.admit()).count();
//! assert_eq!(written, 2);
//! assert_eq!(LIMITER.flush(), 8); // writes "8 reports dropped"
//! let stats = LIMITER.stats();
//! assert_eq!((stats.written, stats.dropped), (2, 8));
//! ```

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Erlang's `burst_limit_max_count` default: reports per window.
pub const DEFAULT_BURST_MAX: u32 = 500;

/// Erlang's `burst_limit_window_time` default.
pub const DEFAULT_BURST_WINDOW: Duration = Duration::from_millis(1000);

/// The limiter every report of this crate goes through: supervisor reports
/// and generic server crash reports.
pub fn reports() -> &'static Limiter {
    static REPORTS: Limiter = Limiter::new("reports", DEFAULT_BURST_MAX, DEFAULT_BURST_WINDOW);
    &REPORTS
}

/// A burst limiter for log reports: at most `max` per window, the rest
/// dropped and counted, and the count written as one line when the window
/// ends. See the [module docs](self).
#[derive(Debug)]
pub struct Limiter {
    name: &'static str,
    state: Mutex<State>,
}

/// The limiter's state. All of it is behind one lock: admitting a report
/// is a few comparisons, cheaper than the write it guards.
#[derive(Debug)]
struct State {
    max: u32,
    window: Duration,
    /// When the current window started; `None` before the first report.
    started: Option<Instant>,
    /// Reports admitted in the current window.
    admitted: u32,
    /// Reports dropped and not yet reported as dropped.
    pending: u64,
    /// Of the dropped reports taken from `pending`, those whose "dropped"
    /// line is being written (outside the lock) right now.
    announcing: u64,
    /// Whether a flusher thread is running.
    flusher: bool,
    written: u64,
    dropped: u64,
}

impl State {
    /// Takes the dropped reports not yet announced, for a "dropped" line to
    /// be written outside the lock: until it is, they still count as
    /// pending in [`Limiter::stats`].
    fn take_pending(&mut self) -> u64 {
        let pending = std::mem::take(&mut self.pending);
        self.announcing += pending;
        pending
    }
}

/// Totals of a [`Limiter`], since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimiterStats {
    /// Reports admitted (written).
    pub written: u64,
    /// Reports dropped by the burst limit.
    pub dropped: u64,
    /// Dropped reports not yet announced by a "reports dropped" line.
    pub pending: u64,
    /// Whether the limiter is dropping now (the window's burst is spent).
    pub dropping: bool,
}

impl Limiter {
    /// A limiter named `name` (the `limiter` field of its "dropped" lines)
    /// admitting `max` reports per `window`.
    pub const fn new(name: &'static str, max: u32, window: Duration) -> Limiter {
        Limiter {
            name,
            state: Mutex::new(State {
                max,
                window,
                started: None,
                admitted: 0,
                pending: 0,
                announcing: 0,
                flusher: false,
                written: 0,
                dropped: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (plain counters).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the burst limit: `max` reports per `window` (a zero window is
    /// taken as 1 ms). Takes effect from the next window.
    pub fn set_burst_limit(&self, max: u32, window: Duration) {
        let mut state = self.lock();
        state.max = max;
        state.window = window.max(Duration::from_millis(1));
    }

    /// Whether to write a report now: true (counted as written) within the
    /// window's burst, false (counted as dropped) past it. Writes the
    /// "reports dropped" line of the previous window first if one is due.
    #[must_use = "a report admitted must be written, one refused must not"]
    pub fn admit(&'static self) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        let mut announce = 0;
        if state
            .started
            .is_none_or(|started| now.duration_since(started) >= state.window)
        {
            state.started = Some(now);
            state.admitted = 0;
            announce = state.take_pending();
        }
        let admitted = state.admitted < state.max;
        if admitted {
            state.admitted += 1;
            state.written += 1;
        } else {
            state.pending += 1;
            state.dropped += 1;
        }
        let start_flusher = !admitted && !state.flusher;
        if start_flusher {
            state.flusher = true;
        }
        drop(state);
        if announce > 0 {
            self.announce(announce);
        }
        if start_flusher {
            self.start_flusher();
        }
        admitted
    }

    /// Writes the "reports dropped" line for the reports dropped so far and
    /// not yet announced, now; returns how many that was (0: no line).
    pub fn flush(&self) -> u64 {
        let pending = self.lock().take_pending();
        if pending > 0 {
            self.announce(pending);
        }
        pending
    }

    /// Totals since the limiter was created.
    pub fn stats(&self) -> LimiterStats {
        let now = Instant::now();
        let state = self.lock();
        LimiterStats {
            written: state.written,
            dropped: state.dropped,
            pending: state.pending + state.announcing,
            dropping: state.admitted >= state.max
                && state
                    .started
                    .is_some_and(|started| now.duration_since(started) < state.window),
        }
    }

    /// Writes the "dropped" line for `dropped` reports taken with
    /// [`State::take_pending`], then counts them announced.
    fn announce(&self, dropped: u64) {
        tracing::warn!(
            target: "ember_otp::logger",
            limiter = self.name,
            dropped,
            "{dropped} reports dropped (burst limit)"
        );
        self.lock().announcing -= dropped;
    }

    /// Starts the thread that announces what was dropped once the window
    /// ends, in case no report comes to do it. It stops at the first window
    /// that dropped nothing. If the thread cannot start, the next report
    /// announces the count instead.
    fn start_flusher(&'static self) {
        let started = std::thread::Builder::new()
            .name("ember-log-flusher".into())
            .spawn(move || loop {
                let wait = {
                    let state = self.lock();
                    let end = state.started.map_or(Instant::now(), |s| s + state.window);
                    end.saturating_duration_since(Instant::now())
                };
                std::thread::sleep(wait + Duration::from_millis(1));
                let mut state = self.lock();
                let now = Instant::now();
                if state
                    .started
                    .is_some_and(|started| now.duration_since(started) < state.window)
                {
                    continue; // a report opened a new window meanwhile
                }
                let pending = state.take_pending();
                if pending == 0 {
                    state.flusher = false;
                    return;
                }
                drop(state);
                self.announce(pending);
            });
        if started.is_err() {
            self.lock().flusher = false;
        }
    }
}
