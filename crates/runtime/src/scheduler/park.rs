//! Parking: how an idle worker sleeps and how it is woken, and the
//! watchdog's doze.
//!
//! # The parker
//!
//! Each worker has one [`Parker`], whose single state word says where the
//! worker sleeps (the model is tokio's `multi_thread/park.rs`); the slot it
//! serves points at it (`Slot::set_parker`), so whoever wakes a slot wakes
//! the worker serving it:
//!
//! | state | meaning |
//! |---|---|
//! | `EMPTY` | awake, no notification pending |
//! | `PARKED_CONDVAR` | asleep on the parker's condition variable |
//! | `PARKED_DRIVER` | asleep in the driver (the pollset, `epoll_wait`) |
//! | `NOTIFIED` | a notification is pending: the next park returns at once |
//!
//! A parking worker first takes a pending notification (`NOTIFIED` →
//! `EMPTY`). Otherwise it parks on the driver if nobody else drives it (the
//! driver's lock is only ever `try_lock`ed), on the condition variable if
//! somebody does, announcing which by a compare-and-swap from `EMPTY`. An
//! unparker swaps in `NOTIFIED` and wakes what the old state names: the
//! condition variable (after taking its mutex, so the notification cannot
//! fall between the sleeper's check and its wait), or the driver (whose
//! wake-up persists, as an eventfd's does). Whatever the order, either the
//! parker's swap sees `NOTIFIED` or the unparker's swap sees `PARKED_*`: a
//! notification is never lost. After waking, the worker swaps `EMPTY` back,
//! consuming a notification that raced its timeout.
//!
//! The parker belongs to the worker, not to the slot: a worker that loses
//! its slot to a hand-off just as it parks (the watchdog judged its poll,
//! which then ended) sleeps on its own parker, at most until its nap ends,
//! and its successor on another; a notification meant for the slot goes to
//! whichever parker the slot names. Its loom models are below.
//!
//! Which slots are parked and must be notified, and how many workers look
//! for work meanwhile, is [`idle`](super::idle)'s business.
//!
//! # The doze
//!
//! While every online slot's worker is parked, no poll can be running on a
//! slot, so the watchdog has nothing to look at and sleeps for [`DOZE`]
//! instead of waking every 10 ms ([`Doze`]). A worker that leaves its park
//! wakes it.
//!
//! That protocol is a Dekker pair on two SeqCst flags: the watchdog stores
//! `dozing`, then reads every slot's `parked` mark; a worker clears its
//! slot's mark (or sees it cleared by its unparker), then reads `dozing`. In
//! the single total order of SeqCst operations, either the watchdog sees a
//! worker unparked (and does not doze), or that worker sees `dozing` (and
//! unparks the watchdog). The watchdog sleeps on a parker of its own, which
//! keeps an unpark that comes before the park.
//!
//! [`DOZE`] bounds the sleep anyway: the spares' and background workers'
//! housekeeping needs no faster look, and a poll started by a path that
//! does not wake the watchdog would be looked at within it.

use std::time::{Duration, Instant};

use crate::loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering::SeqCst};
use crate::loom::sync::{Condvar, Mutex};

/// Awake, nothing pending.
const EMPTY: usize = 0;
/// Asleep on the condition variable.
const PARKED_CONDVAR: usize = 1;
/// Asleep in the driver.
const PARKED_DRIVER: usize = 2;
/// A notification is pending.
const NOTIFIED: usize = 3;

/// What a parked worker can sleep in instead of on the condition variable:
/// the pollset (`net::reactor::Reactor`), which it then drives (its events
/// wake processes) while it sleeps.
pub(crate) trait Driver {
    /// The right to block in the driver, held while blocked.
    type Guard<'a>
    where
        Self: 'a;

    /// Takes the right to block in the driver, unless another thread has it.
    fn try_lock(&self) -> Option<Self::Guard<'_>>;

    /// Blocks in the driver for at most `timeout` (until woken, or events
    /// arrive) and dispatches what it finds.
    fn drive(&self, guard: &mut Self::Guard<'_>, timeout: Duration);

    /// Wakes the thread blocked in the driver; if none is, the next
    /// [`Driver::drive`] returns at once.
    fn wake(&self);
}

/// No driver: a parker that sleeps on its condition variable only.
pub(crate) struct NoDriver;

impl Driver for NoDriver {
    type Guard<'a> = ();

    fn try_lock(&self) -> Option<()> {
        None
    }

    fn drive(&self, _guard: &mut (), _timeout: Duration) {}

    fn wake(&self) {}
}

/// Where one slot's worker (or the watchdog) sleeps. See the module docs.
pub(crate) struct Parker {
    state: AtomicUsize,
    mutex: Mutex<()>,
    condvar: Condvar,
}

impl Default for Parker {
    fn default() -> Parker {
        Parker::new()
    }
}

impl Parker {
    /// A parker with nothing pending.
    pub(crate) fn new() -> Parker {
        Parker {
            state: AtomicUsize::new(EMPTY),
            mutex: Mutex::new(()),
            condvar: Condvar::new(),
        }
    }

    /// Sleeps until unparked or for at most `timeout`: in `driver` if nobody
    /// else drives it, else on the condition variable. Returns at once if a
    /// notification is pending (and takes it).
    pub(crate) fn park<D: Driver>(&self, driver: &D, timeout: Duration) {
        if self.take_notification() {
            return;
        }
        match driver.try_lock() {
            Some(mut guard) => self.park_driver(driver, &mut guard, timeout),
            None => self.park_condvar(timeout),
        }
    }

    /// Wakes the worker parked here, wherever it sleeps, or makes its next
    /// park return at once. `driver` is the one it parks in.
    pub(crate) fn unpark<D: Driver>(&self, driver: &D) {
        match self.state.swap(NOTIFIED, SeqCst) {
            EMPTY | NOTIFIED => {}
            PARKED_CONDVAR => {
                // Through the mutex: the sleeper holds it from its check of
                // the state until it waits, so the notification cannot fall
                // in between.
                drop(self.mutex.lock());
                self.condvar.notify_one();
            }
            PARKED_DRIVER => driver.wake(),
            other => crate::loom::protocol_assert!(false, "a parker in state {other}"),
        }
    }

    /// Takes a pending notification.
    fn take_notification(&self) -> bool {
        self.state
            .compare_exchange(NOTIFIED, EMPTY, SeqCst, SeqCst)
            .is_ok()
    }

    /// Announces the sleep (`EMPTY` → `parked`); false if a notification
    /// came first (then taken).
    fn announce(&self, parked: usize) -> bool {
        match self.state.compare_exchange(EMPTY, parked, SeqCst, SeqCst) {
            Ok(_) => true,
            Err(NOTIFIED) => {
                // Only an unparker changes it from here, to NOTIFIED again.
                self.state.swap(EMPTY, SeqCst);
                false
            }
            Err(other) => {
                // A second thread parking here: a bug, but no reason to
                // sleep or to crash; it returns as if notified.
                crate::loom::protocol_assert!(false, "two threads park on one parker ({other})");
                false
            }
        }
    }

    fn park_condvar(&self, timeout: Duration) {
        let mut guard = self.mutex.lock();
        if !self.announce(PARKED_CONDVAR) {
            return;
        }
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
            let timed_out;
            (guard, timed_out) = self.condvar.wait_for(guard, left);
            if self.take_notification() {
                return;
            }
            if timed_out || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            // A spurious wake-up: sleep on.
        }
        drop(guard);
        // Timed out: back to EMPTY, taking a notification that came just now
        // (the caller is awake and looks for work anyway).
        self.state.swap(EMPTY, SeqCst);
    }

    fn park_driver<D: Driver>(&self, driver: &D, guard: &mut D::Guard<'_>, timeout: Duration) {
        if !self.announce(PARKED_DRIVER) {
            return;
        }
        driver.drive(guard, timeout);
        // Woken, timed out or events: awake again, a notification taken.
        self.state.swap(EMPTY, SeqCst);
    }
}

/// The longest the watchdog dozes without being woken.
pub(crate) const DOZE: Duration = Duration::from_secs(1);

/// The watchdog's sleep: its doze flag and its parker (module docs).
#[derive(Default)]
pub(crate) struct Doze {
    dozing: AtomicBool,
    parker: Parker,
}

impl Doze {
    /// On the watchdog: sleeps between two looks, for at most `timeout`, or
    /// until [`Doze::wake`].
    pub(crate) fn sleep(&self, timeout: Duration) {
        self.parker.park(&NoDriver, timeout);
    }

    /// On the watchdog: dozes for at most `timeout` if `all_parked` still
    /// holds after announcing the doze. Returns whether a worker woke it
    /// (rather than: it did not doze, or the timeout ended the doze).
    pub(crate) fn doze(&self, all_parked: impl Fn() -> bool, timeout: Duration) -> bool {
        self.dozing.store(true, SeqCst);
        // The store before the loads of `parked` (a Dekker pair: see the
        // module docs); the fences make it explicit, and loom checks them.
        fence(SeqCst);
        if all_parked() {
            self.parker.park(&NoDriver, timeout);
        }
        // Still set: nobody took it, so no worker woke this thread.
        !self.dozing.swap(false, SeqCst)
    }

    /// On a worker that has just left its park (its slot's `parked` mark is
    /// clear, by its own swap or its unparker's), or anyone about to start a
    /// poll the watchdog must look at: wakes the watchdog if it dozes.
    pub(crate) fn wake_if_dozing(&self) {
        // The caller's look at `parked` before the load of `dozing`.
        fence(SeqCst);
        if self.dozing.load(SeqCst) && self.dozing.swap(false, SeqCst) {
            self.wake();
        }
    }

    /// Wakes the watchdog whatever it does (shutdown, a slot online).
    pub(crate) fn wake(&self) {
        self.parker.unpark(&NoDriver);
    }
}

/// A driver for the models: a pollset that a thread blocks in until woken,
/// whose wake-up persists until the next drive takes it, like the
/// reactor's eventfd. It ignores timeouts, so a lost wake-up leaves the
/// sleeper blocked, which loom reports as a deadlock.
#[cfg(all(test, feature = "loom-models"))]
pub(crate) mod model_driver {
    use std::time::Duration;

    use crate::loom::sync::{Condvar, Mutex};

    /// The model pollset.
    pub(crate) struct ModelDriver {
        /// Held by whoever drives.
        lock: Mutex<()>,
        /// A wake-up is pending.
        woken: Mutex<bool>,
        condvar: Condvar,
    }

    impl Default for ModelDriver {
        fn default() -> ModelDriver {
            ModelDriver {
                lock: Mutex::new(()),
                woken: Mutex::new(false),
                condvar: Condvar::new(),
            }
        }
    }

    impl super::Driver for ModelDriver {
        type Guard<'a> = ::loom::sync::MutexGuard<'a, ()>;

        fn try_lock(&self) -> Option<Self::Guard<'_>> {
            self.lock.try_lock()
        }

        fn drive(&self, _guard: &mut Self::Guard<'_>, timeout: Duration) {
            let mut woken = self.woken.lock();
            while !*woken {
                (woken, _) = self.condvar.wait_for(woken, timeout);
            }
            *woken = false;
        }

        fn wake(&self) {
            *self.woken.lock() = true;
            self.condvar.notify_one();
        }
    }
}

/// The parker under loom, on this very code (`crate::loom`'s types): a
/// notification racing a park is never lost, whichever the parker sleeps
/// on; and a parker with one transition broken (an unpark that does not
/// wake a driver-parked sleeper) is caught, so the model can fail.
///
/// Timeouts are ignored under loom (the facade's `Condvar::wait_for` waits
/// until notified), so a lost notification is a deadlock.
#[cfg(all(test, feature = "loom-models"))]
mod loom_models {
    use ::loom::sync::Arc;
    use ::loom::thread;
    use std::time::Duration;

    use super::model_driver::ModelDriver;
    use super::{Driver, NoDriver, Parker, NOTIFIED, PARKED_CONDVAR, PARKED_DRIVER};
    use crate::loom::sync::atomic::{AtomicBool, Ordering::SeqCst};

    const LONG: Duration = Duration::from_secs(3600);

    /// The worker's side: parks until the flag the unparker set is seen,
    /// as `worker::idle` loops on its slot's `parked` mark.
    fn park_until<D: Driver>(parker: &Parker, driver: &D, flag: &AtomicBool) {
        while !flag.load(SeqCst) {
            parker.park(driver, LONG);
        }
    }

    /// A notification (flag, then unpark) racing a park on the driver while
    /// a second parker on the same driver sleeps on the condition variable
    /// (the driver is taken): both wake.
    #[test]
    fn loom_models_a_notify_racing_a_park_is_never_lost() {
        crate::loom::model("a notify racing a park is never lost", Some(3), || {
            let driver = Arc::new(ModelDriver::default());
            let (a, b) = (Arc::new(Parker::new()), Arc::new(Parker::new()));
            let (fa, fb) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let sleeper = {
                let (driver, a, fa) = (driver.clone(), a.clone(), fa.clone());
                thread::spawn(move || park_until(&a, &*driver, &fa))
            };
            let other = {
                let (driver, b, fb) = (driver.clone(), b.clone(), fb.clone());
                thread::spawn(move || park_until(&b, &*driver, &fb))
            };
            fa.store(true, SeqCst);
            a.unpark(&*driver);
            fb.store(true, SeqCst);
            b.unpark(&*driver);
            sleeper.join().unwrap();
            other.join().unwrap();
        });
    }

    /// An early notification (taken by a park that then finds nothing to
    /// do, as a worker's stale one is) and the real one racing
    /// condition-variable parks: the sleeper wakes for the real one. (One
    /// notification is kept, not counted: two unparks before a park make
    /// one wake-up, as with `thread::park`.)
    #[test]
    fn loom_models_notifies_racing_condvar_parks_are_never_lost() {
        crate::loom::model("notifies racing condvar parks", None, || {
            let p = Arc::new(Parker::new());
            let flag = Arc::new(AtomicBool::new(false));
            let sleeper = {
                let (p, flag) = (p.clone(), flag.clone());
                thread::spawn(move || park_until(&p, &NoDriver, &flag))
            };
            p.unpark(&NoDriver);
            flag.store(true, SeqCst);
            p.unpark(&NoDriver);
            sleeper.join().unwrap();
        });
    }

    /// A parker whose unpark forgets the driver (as if `PARKED_DRIVER` were
    /// `PARKED_CONDVAR`'s business only): the model must catch it.
    struct Broken(Parker);

    impl Broken {
        fn unpark(&self, _driver: &ModelDriver) {
            match self.0.state.swap(NOTIFIED, SeqCst) {
                PARKED_CONDVAR => {
                    drop(self.0.mutex.lock());
                    self.0.condvar.notify_one();
                }
                // The seeded bug: a driver-parked sleeper is not woken.
                PARKED_DRIVER => {}
                _ => {}
            }
        }
    }

    /// The seeded mutation: with the broken unpark, some interleaving
    /// leaves the sleeper blocked in the driver, and loom must report the
    /// deadlock. Run in a child process of this test binary (loom aborts
    /// the process on a failed model: its cleanup panics again), which
    /// must fail, saying so.
    #[test]
    fn loom_models_a_lost_driver_wake_is_caught() {
        crate::loom::assert_seeded_bug_caught(
            "scheduler::park::loom_models::seeded_bug_broken_unpark",
            &["deadlock"],
            "an unpark that leaves the driver asleep",
        );
    }

    /// The broken parker's model, expected to fail (see above).
    #[test]
    #[ignore = "a seeded bug: run by loom_models_a_lost_driver_wake_is_caught, which expects it to fail"]
    fn seeded_bug_broken_unpark() {
        ::loom::model(|| {
            let driver = Arc::new(ModelDriver::default());
            let p = Arc::new(Broken(Parker::new()));
            let flag = Arc::new(AtomicBool::new(false));
            let sleeper = {
                let (driver, p, flag) = (driver.clone(), p.clone(), flag.clone());
                thread::spawn(move || park_until(&p.0, &*driver, &flag))
            };
            flag.store(true, SeqCst);
            p.unpark(&driver);
            sleeper.join().unwrap();
        });
    }

    /// The doze, on [`super::Doze`] itself: a worker parked on its slot,
    /// unparked by a waker (a send from outside, a socket event) while the
    /// watchdog decides to doze. Once the worker runs, the watchdog is awake
    /// or woken: a watchdog left asleep while a poll runs is a deadlock
    /// here, since the model's watchdog parks without a timeout (loom) and
    /// the test waits for it to have looked.
    #[test]
    fn loom_models_a_worker_leaving_its_park_wakes_a_dozing_watchdog() {
        crate::loom::model(
            "a worker leaving its park wakes a dozing watchdog",
            None,
            || {
                let doze = Arc::new(super::Doze::default());
                // The slot's `parked` mark (the worker starts parked).
                let parked = Arc::new(AtomicBool::new(true));
                let looked = Arc::new(AtomicBool::new(false));
                let watchdog = {
                    let (doze, parked, looked) = (doze.clone(), parked.clone(), looked.clone());
                    thread::spawn(move || {
                        // Two rounds of the watchdog's loop: doze while all
                        // parked, else look at the poll.
                        for _ in 0..2 {
                            doze.doze(|| parked.load(SeqCst), LONG);
                            if !parked.load(SeqCst) {
                                looked.store(true, SeqCst);
                                return;
                            }
                        }
                    })
                };
                // The waker: `Idle::take_parked` clears the mark.
                let waker = {
                    let parked = parked.clone();
                    thread::spawn(move || {
                        parked.swap(false, SeqCst);
                    })
                };
                // The worker: sees its mark cleared, then wakes the watchdog.
                while parked.load(SeqCst) {
                    thread::yield_now();
                }
                doze.wake_if_dozing();
                waker.join().unwrap();
                watchdog.join().unwrap();
                assert!(looked.load(SeqCst), "the watchdog never looked at the poll");
            },
        );
    }
}
