//! tokio's I/O and time driver, for processes that await tokio futures,
//! started when a process first needs it.
//!
//! Every scheduler thread enters the tokio runtime's context, so a tokio
//! socket, timer or task made in a process finds its driver. The driver runs
//! on a thread of its own, `ember-io`, which blocks in `epoll_wait` between
//! events. A runtime whose processes never use tokio never starts it.
//!
//! tokio has no hook that says "a resource was registered", so the thread
//! starts on the first of two signs that something may need it:
//! - **A process's waker is cloned** (`process::waker`). A tokio socket,
//!   timer or channel can only wake a process later if it keeps a clone of
//!   its waker, made while the process is polled; a future that needs the
//!   driver has therefore cloned a waker no later than its first `Pending`.
//!   Ember's own timers and reactor clone quietly, so they do not count.
//! - **tokio tasks are alive** (`tokio::spawn` from a process, whose result
//!   nobody awaits): looked at when a worker is about to park and at each of
//!   the watchdog's looks, so such a task starts within one look.
//!
//! Once started, the thread runs until the runtime is dropped. Its start and
//! its stop are one mutex's state; `started` spares the mutex once either
//! has happened.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};

use parking_lot::Mutex;

/// The thread's name.
pub(crate) const THREAD_NAME: &str = "ember-io";

/// tokio's current-thread runtime and the thread that drives it once needed.
pub(crate) struct TokioDriver {
    handle: tokio::runtime::Handle,
    /// Started or shut down: nothing left to start.
    started: AtomicBool,
    state: Mutex<DriverState>,
}

enum DriverState {
    /// Built, not driven: tokio's work waits in its queues.
    Idle(tokio::runtime::Runtime),
    /// Driven by its thread until `stop` is sent; the thread drops the
    /// runtime when it ends.
    Running {
        stop: tokio::sync::oneshot::Sender<()>,
        thread: JoinHandle<()>,
    },
    /// Shut down (or the moment in between, while the thread is taken out).
    Gone,
}

impl TokioDriver {
    /// tokio's runtime with its drivers, no thread yet.
    pub(crate) fn new() -> io::Result<TokioDriver> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(TokioDriver {
            handle: rt.handle().clone(),
            started: AtomicBool::new(false),
            state: Mutex::new(DriverState::Idle(rt)),
        })
    }

    /// The handle the scheduler threads enter.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Whether the driver thread runs (or ran, before a shutdown).
    pub(crate) fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Starts the driver thread unless it runs already: one load once it
    /// does.
    pub(crate) fn start(&self) {
        if !self.is_started() {
            self.start_slow();
        }
    }

    /// Starts the driver thread if tokio tasks are alive, which only it runs.
    pub(crate) fn start_if_tasks(&self) {
        if !self.is_started() && self.handle.metrics().num_alive_tasks() > 0 {
            self.start_slow();
        }
    }

    #[cold]
    fn start_slow(&self) {
        let mut state = self.state.lock();
        let DriverState::Idle(_) = &*state else {
            return;
        };
        let DriverState::Idle(rt) = std::mem::replace(&mut *state, DriverState::Gone) else {
            unreachable!("matched above")
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // Shared with the thread for as long as the spawn is in doubt: if
        // the thread cannot start, the runtime stays idle here (the handle
        // the schedulers entered is this runtime's) and a later sign tries
        // again. Once started, the thread holds the only count and drops
        // the runtime when it ends.
        let shared_rt = std::sync::Arc::new(rt);
        let driven = shared_rt.clone();
        // Before the thread can run anything: whatever it does happens after
        // a look at `is_started` says it runs.
        self.started.store(true, Ordering::Release);
        let spawned = thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                let _ = driven.block_on(stopped);
            });
        match spawned {
            Ok(thread) => {
                drop(shared_rt);
                *state = DriverState::Running { stop, thread };
            }
            Err(e) => {
                tracing::error!(error = %e, "ember: cannot start the tokio driver thread");
                match std::sync::Arc::try_unwrap(shared_rt) {
                    Ok(rt) => {
                        *state = DriverState::Idle(rt);
                        self.started.store(false, Ordering::Release);
                    }
                    Err(_) => unreachable!("the thread that would share it never started"),
                }
            }
        }
    }

    /// Stops the driver thread, if it runs, once it has dropped tokio's
    /// runtime; or drops the runtime here if it never ran. Nothing starts
    /// it after.
    pub(crate) fn shut_down(&self) {
        let state = std::mem::replace(&mut *self.state.lock(), DriverState::Gone);
        self.started.store(true, Ordering::Release);
        match state {
            DriverState::Running { stop, thread } => {
                let _ = stop.send(());
                let _ = thread.join();
            }
            DriverState::Idle(rt) => drop(rt),
            DriverState::Gone => {}
        }
    }
}
