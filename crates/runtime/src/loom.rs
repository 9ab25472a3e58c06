//! The synchronization primitives of the concurrency-critical core, routed
//! through one place so that the [loom] model checker can replace them.
//!
//! Normally these are `std`'s atomics, `parking_lot`'s mutex and a
//! zero-cost [`cell::UnsafeCell`] wrapper. In the lib's tests built with the
//! `loom-models` feature, they are loom's, and the `loom_models` tests explore
//! the interleavings of small scenarios (all of them, or all within a
//! preemption bound) and the weak-memory outcomes loom models:
//!
//! ```text
//! cargo test -p ember-runtime --lib --features loom-models \
//!     -- loom_models --test-threads=1
//! ```
//!
//! (The test profile, where loom's own crates are optimised (the workspace's
//! `Cargo.toml`): a model spends most of its time in loom. `--release` works
//! too, with the protocols' own checks kept on by [`protocol_assert`]. One
//! test thread is faster, as loom's model threads contend for memory maps.) Each model prints how many interleavings it explored and under what
//! preemption bound (see `model` below); `--nocapture` shows it.
//! `LOOM_MAX_PREEMPTIONS=n` sets the bound of every model, `LOOM_LOG=1` and
//! `LOOM_LOCATION=1` help debug a failure.
//!
//! Only the modules whose protocol we model use this facade: the process
//! state byte (`process/state.rs`, with the runtime's teardown, and the
//! suspension count of a busy distribution connection, `dist.rs`), the
//! mailbox (`mailbox.rs`, and its lock-free inbox, `mailbox/inbox.rs`), the per-slot timer wheels (`timer.rs`: arming
//! against a sleeping worker, a cancel racing the firing), the relations lock of the link protocol
//! (`process.rs`, `signal.rs`), the parker of an idle worker with the
//! watchdog's doze (`scheduler/park.rs`), the start and shutdown of
//! tokio's driver thread (`runtime/tokio_driver.rs`) and the channels
//! (`sync/oneshot.rs`, `sync/mpsc.rs`, `sync/watch.rs`: no lost value or
//! wake-up, driven by loom's `block_on`). The hand-off of a slot (`scheduler/slot.rs`)
//! is modelled on loom's types directly, as a step-for-step copy of the
//! protocol, since the scheduler itself is built on `std` and `parking_lot`.
//! loom's types panic outside a model, so with the feature run only the
//! models.
//!
//! [loom]: https://docs.rs/loom

/// `debug_assert!` for a protocol's own checks: also on in the loom models
/// built in release (a model runs millions of interleavings), which must
/// still catch a transition from a state the protocol never allows.
macro_rules! protocol_assert {
    ($($arg:tt)*) => {
        if cfg!(any(debug_assertions, all(test, feature = "loom-models"))) {
            assert!($($arg)*);
        }
    };
}
pub(crate) use protocol_assert;

#[cfg(not(all(test, feature = "loom-models")))]
pub(crate) mod sync {
    use std::time::Duration;

    pub(crate) use parking_lot::{Mutex, MutexGuard};

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{
            fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
        };
    }

    /// `parking_lot`'s condition variable, with a by-value guard so that
    /// loom's can stand in for it.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(parking_lot::Condvar);

    impl Condvar {
        pub(crate) const fn new() -> Condvar {
            Condvar(parking_lot::Condvar::new())
        }

        /// Waits for a notification or `timeout`; returns the guard and
        /// whether it timed out.
        pub(crate) fn wait_for<'a, T>(
            &self,
            mut guard: parking_lot::MutexGuard<'a, T>,
            timeout: Duration,
        ) -> (parking_lot::MutexGuard<'a, T>, bool) {
            let timed_out = self.0.wait_for(&mut guard, timeout).timed_out();
            (guard, timed_out)
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
    }
}

#[cfg(all(test, feature = "loom-models"))]
pub(crate) mod sync {
    pub(crate) use ::loom::sync::MutexGuard;

    /// loom's mutex with `parking_lot`'s API (no poisoning).
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(::loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Mutex<T> {
            Mutex(::loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> ::loom::sync::MutexGuard<'_, T> {
            self.0.lock().expect("a model thread panicked")
        }

        /// The lock if it is free now (`parking_lot`'s `try_lock`; the
        /// watchdog reads a hog's label with it).
        pub(crate) fn try_lock(&self) -> Option<::loom::sync::MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
    }

    pub(crate) mod atomic {
        pub(crate) use ::loom::sync::atomic::{
            fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
        };
    }

    /// loom's condition variable with the facade's API. Timeouts are
    /// ignored: a wait ends only when notified, so a lost notification is a
    /// deadlock loom reports, not a delay.
    #[derive(Debug)]
    pub(crate) struct Condvar(::loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Condvar {
            Condvar(::loom::sync::Condvar::new())
        }

        /// Waits for a notification (never times out under loom).
        pub(crate) fn wait_for<'a, T>(
            &self,
            guard: ::loom::sync::MutexGuard<'a, T>,
            _timeout: std::time::Duration,
        ) -> (::loom::sync::MutexGuard<'a, T>, bool) {
            (self.0.wait(guard).expect("a model thread panicked"), false)
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
    }
}

pub(crate) mod cell {
    /// An `UnsafeCell` with loom's closure-based API, so that loom can check
    /// every access for a data race; without loom it compiles to a plain
    /// `std::cell::UnsafeCell::get`.
    #[cfg(not(all(test, feature = "loom-models")))]
    #[derive(Debug, Default)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(all(test, feature = "loom-models")))]
    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> UnsafeCell<T> {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        /// Gives `f` a pointer for writing. Dereferencing it is up to the
        /// caller's `unsafe` and its argument, as with `std`'s `get`.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    #[cfg(all(test, feature = "loom-models"))]
    pub(crate) use ::loom::cell::UnsafeCell;
}

/// Runs a loom model and reports how much it explored.
///
/// `preemptions` bounds how many times a thread may be switched out against
/// its will per interleaving (`None`: no bound, every interleaving). Most
/// concurrency bugs need two or three; models that would take minutes
/// exhaustively take a bound of four. `LOOM_MAX_PREEMPTIONS` overrides it.
#[cfg(all(test, feature = "loom-models"))]
pub(crate) fn model(name: &str, preemptions: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    let mut builder = ::loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = preemptions;
    }
    let iterations = Arc::new(AtomicUsize::new(0));
    let counter = iterations.clone();
    let started = Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let bound = match builder.preemption_bound {
        Some(n) => format!("at most {n} preemptions"),
        None => "exhaustive".to_owned(),
    };
    println!(
        "loom: {name}: {} interleavings ({bound}) in {:.2?}",
        iterations.load(Ordering::Relaxed),
        started.elapsed()
    );
}

/// Asserts that the seeded bug `bug` is caught: the ignored test `test`
/// (its model) must fail, printing one of `reports` (what the model says
/// when it catches the bug).
#[cfg(all(test, feature = "loom-models"))]
pub(crate) fn assert_seeded_bug_caught(test: &str, reports: &[&str], bug: &str) {
    let (succeeded, text) = run_seeded_bug(test);
    assert!(
        !succeeded && reports.iter().any(|report| text.contains(report)),
        "the model did not catch {bug}: {text}"
    );
    println!("loom: {bug} (seeded bug) is caught");
}

/// Runs the ignored test `test` (a seeded bug's model, which must fail) in
/// a child process of this test binary — loom aborts the process on a
/// failed model — and returns whether it succeeded and all it printed.
/// Panics if the model did not run at all.
#[cfg(all(test, feature = "loom-models"))]
fn run_seeded_bug(test: &str) -> (bool, String) {
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", test, "--ignored", "--test-threads=1"])
        .output()
        .expect("the test binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("running 1 test"),
        "the seeded model did not run: {text}"
    );
    (out.status.success(), text)
}
