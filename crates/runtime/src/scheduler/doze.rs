//! The watchdog's doze: while every online slot's worker is parked, no poll
//! can be running on a slot, so the watchdog has nothing to look at and
//! sleeps for [`DOZE`] instead of waking every 10 ms. A worker that leaves
//! its park wakes it.
//!
//! The protocol is a Dekker pair on two SeqCst flags: the watchdog stores
//! `dozing`, then reads every slot's `parked`; a worker clears its slot's
//! `parked` (or sees it cleared by its unparker), then reads `dozing`. In
//! the single total order of SeqCst operations, either the watchdog sees a
//! worker unparked (and does not doze), or that worker sees `dozing` (and
//! unparks the watchdog). `thread::park` keeps an unpark that comes before
//! the park, so that one is not lost either. Its loom model is below.
//!
//! [`DOZE`] bounds the sleep anyway: the spares' and background workers'
//! housekeeping needs no faster look, and a poll started by a path that
//! does not wake the watchdog would be looked at within it.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::{self, Thread};
use std::time::Duration;

/// The longest the watchdog dozes without being woken.
pub(crate) const DOZE: Duration = Duration::from_secs(1);

/// The watchdog's doze flag and thread.
#[derive(Default)]
pub(crate) struct Doze {
    dozing: AtomicBool,
    watchdog: OnceLock<Thread>,
}

impl Doze {
    /// Records the calling thread as the watchdog (once, at its start).
    pub(crate) fn register_watchdog(&self) {
        let _ = self.watchdog.set(thread::current());
    }

    /// On the watchdog: dozes for at most `timeout` if `all_parked` still
    /// holds after announcing the doze. Returns whether a worker woke it
    /// (rather than: it did not doze, or the timeout ended the doze).
    pub(crate) fn doze(&self, all_parked: impl Fn() -> bool, timeout: Duration) -> bool {
        self.dozing.store(true, Ordering::SeqCst);
        // The store before the loads of `parked` (a Dekker pair: see the
        // module docs); the fences make it explicit, and loom checks them.
        fence(Ordering::SeqCst);
        if all_parked() {
            thread::park_timeout(timeout);
        }
        // Still set: nobody took it, so no worker woke this thread.
        !self.dozing.swap(false, Ordering::SeqCst)
    }

    /// On a worker that has just left its park (its slot's `parked` flag is
    /// false, by its own swap or its unparker's), or anyone about to start a
    /// poll the watchdog must look at: wakes the watchdog if it dozes.
    pub(crate) fn wake_if_dozing(&self) {
        // The caller's look at `parked` before the load of `dozing`.
        fence(Ordering::SeqCst);
        if self.dozing.load(Ordering::SeqCst) && self.dozing.swap(false, Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Wakes the watchdog whatever it does (shutdown).
    pub(crate) fn wake(&self) {
        if let Some(watchdog) = self.watchdog.get() {
            watchdog.unpark();
        }
    }
}

/// The doze protocol, step for step on loom's types (the scheduler is built
/// on `std`): a worker parked on its slot, unparked by a waker (a send from
/// outside, a socket event) while the watchdog decides to doze. In every
/// interleaving, once the worker runs, the watchdog is awake or woken: a
/// watchdog left asleep while a poll runs is a deadlock here, since the
/// model's watchdog parks without a timeout and the worker's poll waits
/// for the watchdog to have looked.
#[cfg(all(test, loom))]
mod loom_models {
    use ::loom::sync::atomic::{fence, AtomicBool, Ordering::SeqCst};
    use ::loom::sync::{Arc, Mutex};
    use ::loom::thread::{self, Thread};

    #[derive(Default)]
    struct Model {
        /// The slot's `parked` flag (the worker starts parked).
        parked: AtomicBool,
        /// `Doze::dozing`.
        dozing: AtomicBool,
        watchdog: Mutex<Option<Thread>>,
        /// The watchdog looked at the running poll.
        looked: AtomicBool,
    }

    impl Model {
        /// `Doze::wake_if_dozing`.
        fn wake_if_dozing(&self) {
            fence(SeqCst);
            if self.dozing.load(SeqCst) && self.dozing.swap(false, SeqCst) {
                if let Some(t) = &*self.watchdog.lock().unwrap() {
                    t.unpark();
                }
            }
        }
    }

    #[test]
    fn loom_models_a_worker_leaving_its_park_wakes_a_dozing_watchdog() {
        crate::loom::model(
            "a worker leaving its park wakes a dozing watchdog",
            None,
            || {
                let m = Arc::new(Model::default());
                m.parked.store(true, SeqCst);
                *m.watchdog.lock().unwrap() = None;
                let watchdog = {
                    let m = m.clone();
                    thread::spawn(move || {
                        *m.watchdog.lock().unwrap() = Some(thread::current());
                        // Two rounds of the watchdog's loop: doze while all
                        // parked, else look at the poll.
                        for _ in 0..2 {
                            m.dozing.store(true, SeqCst);
                            fence(SeqCst);
                            if m.parked.load(SeqCst) {
                                // Parks until unparked: no timeout here.
                                thread::park();
                            }
                            m.dozing.store(false, SeqCst);
                            if !m.parked.load(SeqCst) {
                                m.looked.store(true, SeqCst);
                                return;
                            }
                        }
                    })
                };
                // The waker: `unpark_if_parked` clears the flag.
                let waker = {
                    let m = m.clone();
                    thread::spawn(move || {
                        m.parked.swap(false, SeqCst);
                    })
                };
                // The worker: sees its flag cleared, then wakes the watchdog.
                while m.parked.load(SeqCst) {
                    thread::yield_now();
                }
                m.wake_if_dozing();
                waker.join().unwrap();
                watchdog.join().unwrap();
                assert!(
                    m.looked.load(SeqCst),
                    "the watchdog never looked at the poll"
                );
            },
        );
    }
}
