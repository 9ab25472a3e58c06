//! Helpers shared by the runtime's integration tests: runtimes, waits with a
//! limit, processes that only wait, and a panic hook that hides deliberate
//! panics.

// Each test binary (one per file in `tests/`) includes this module and uses
// only a subset of it; the rest would warn as unused in that binary.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::thread;
use std::time::{Duration, Instant};

use ember_runtime::{receive, self_pid, send, spawn, Down, Exit, MonitorRef, Pid, Runtime};

/// How long a test waits for a message before it fails.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A runtime with two schedulers, each test's own.
pub(crate) fn runtime() -> Runtime {
    Runtime::builder().schedulers(2).build().expect("a runtime")
}

/// A runtime with a single scheduler, so processes can only take turns.
pub(crate) fn one_scheduler() -> Runtime {
    Runtime::builder().schedulers(1).build().expect("a runtime")
}

/// Receives the first message of type `M`, failing after [`WAIT`].
pub(crate) async fn recv<M: Send + 'static>() -> M {
    receive::<M>()
        .timeout(WAIT)
        .await
        .expect("a message within the wait limit")
}

/// Receives the `Down` of `monitor`, failing after [`WAIT`].
pub(crate) async fn down_of(monitor: MonitorRef) -> Down {
    receive::<Down>()
        .matching(move |d| d.monitor == monitor)
        .timeout(WAIT)
        .await
        .expect("a Down message within the wait limit")
}

/// Receives the `Exit` message from `pid` (when trapping exits), failing
/// after [`WAIT`].
pub(crate) async fn exit_from(pid: Pid) -> Exit {
    receive::<Exit>()
        .matching(move |e| e.from == pid)
        .timeout(WAIT)
        .await
        .expect("an Exit message within the wait limit")
}

/// A message no test sends: a receive of it only waits.
pub(crate) struct Never;

/// A process that waits for ever (until a signal ends it).
pub(crate) async fn wait_forever() {
    receive::<Never>().await;
}

/// Tells a waiting process to stop.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stop;

/// Waits, without a limit, until a [`Stop`] arrives.
pub(crate) async fn wait_for_stop() {
    receive::<Stop>().await;
}

/// A process body, boxed so that it can spawn itself recursively.
pub(crate) type BoxedBody = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Keeps the deliberate panics of a test binary (messages starting with
/// "intentional") out of the test output; any other panic (a failed
/// assertion) is still reported.
pub(crate) fn quiet_intentional_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The first runtime built installs Ember's own hook (one line per
        // crashed process); ours goes on top of it.
        drop(Runtime::builder().schedulers(1).build());
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied());
            let deliberate = message
                .is_none_or(|m| m.starts_with("intentional") || m.contains("failed: intentional"));
            if !deliberate {
                previous(info);
            }
        }));
    });
}

/// Whether two processes can run at the same time: true only if both
/// scheduler threads are alive and taking work (one is stolen from the other).
pub(crate) async fn two_processes_run_side_by_side() -> bool {
    let me = self_pid();
    let started = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let started = started.clone();
        spawn(async move {
            started.fetch_add(1, Ordering::SeqCst);
            // Busy on purpose: the other one can only start on another thread.
            let deadline = Instant::now() + Duration::from_secs(5);
            while started.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
                std::hint::spin_loop();
            }
            send(me, started.load(Ordering::SeqCst) >= 2);
        });
    }
    let first: bool = recv().await;
    let second: bool = recv().await;
    first && second
}

/// A competing CPU load outside the runtime: `threads` threads spinning
/// until the guard drops, so that the runtime's threads (demoted hogs
/// above all) run on a starved machine.
pub(crate) struct CpuLoad(Arc<AtomicBool>, Vec<thread::JoinHandle<()>>);

impl CpuLoad {
    /// Starts `threads` spinning threads.
    pub(crate) fn start(threads: usize) -> CpuLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        CpuLoad(stop, handles)
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for h in self.1.drain(..) {
            let _ = h.join();
        }
    }
}
