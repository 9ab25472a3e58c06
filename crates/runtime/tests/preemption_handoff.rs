//! Preemption: a process that never awaits cannot stall the others
//! (`docs/semantics.md`, "Preemption"). These tests wait on events, never on
//! time; the timing targets live in `bench/run responsiveness`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ember_runtime::{
    monitor, receive, self_pid, send, spawn, yield_point, Down, ExitReason, Handle, Runtime,
};

use support::one_scheduler;

/// Spins without ever awaiting until `stop` is set.
async fn hog(stop: Arc<AtomicBool>) {
    let mut x: u64 = 1;
    while !stop.load(Ordering::Relaxed) {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    std::hint::black_box(x);
}

#[test]
fn a_process_that_never_awaits_does_not_block_others_on_its_scheduler() {
    let rt = one_scheduler();
    let stop = Arc::new(AtomicBool::new(false));
    let hog_stop = stop.clone();
    rt.block_on(async move {
        let me = self_pid();
        let spinning = hog_stop.clone();
        let hog_pid = spawn(async move {
            send(me, "the hog started");
            hog(spinning).await;
        });
        // We only see this once the single scheduler is handed away from the
        // hog, which spins right after sending it.
        let started: &str = receive().await;
        assert_eq!(started, "the hog started");
        spawn(async move { send(me, "the other process ran") });
        let note: &str = receive().await;
        assert_eq!(note, "the other process ran");
        let watch = monitor(hog_pid);
        hog_stop.store(true, Ordering::Relaxed);
        let down: Down = receive::<Down>()
            .matching(move |d| d.monitor == watch)
            .await;
        assert_eq!(down.reason, ExitReason::Normal);
        // (A demotion usually follows too, unless the machine is so loaded
        // that the hog looked blocked rather than busy: not asserted.)
        let threads = Handle::current().runtime_info().threads;
        assert!(threads.handoffs >= 1, "{threads:?}");
    });
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn cooperative_processes_all_progress_while_hogs_run() {
    let rt = one_scheduler();
    let stop = Arc::new(AtomicBool::new(false));
    let hogs_stop = stop.clone();
    rt.block_on(async move {
        for _ in 0..4 {
            spawn(hog(hogs_stop.clone()));
        }
        let me = self_pid();
        let counters: Vec<Arc<AtomicU64>> = (0..4).map(|_| Arc::new(AtomicU64::new(0))).collect();
        for counter in &counters {
            let counter = counter.clone();
            spawn(async move {
                loop {
                    if counter.fetch_add(1, Ordering::Relaxed) == 10_000 {
                        send(me, ());
                    }
                    yield_point().await;
                }
            });
        }
        for _ in 0..4 {
            receive::<()>().await;
        }
        hogs_stop.store(true, Ordering::Relaxed);
    });
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn killing_a_hog_is_seen_at_once_and_its_body_is_dropped_when_it_returns() {
    let rt = one_scheduler();
    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let (hog_stop, hog_dropped) = (stop.clone(), dropped.clone());
    rt.block_on(async move {
        struct Guard(Arc<AtomicBool>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let me = self_pid();
        let stop = hog_stop.clone();
        let hog_pid = spawn(async move {
            let _guard = Guard(hog_dropped);
            send(me, ());
            // Never awaits until told to stop, then awaits forever.
            while !stop.load(Ordering::Relaxed) && !ember_runtime::should_stop() {
                std::hint::spin_loop();
            }
            ember_runtime::sleep(Duration::from_secs(3600)).await;
        });
        receive::<()>().await; // we run again: the spinning hog was handed off
        let watch = monitor(hog_pid);
        ember_runtime::exit(hog_pid, ExitReason::Kill);
        // Dead at once for everyone: the monitor fires while it still spins.
        let down: Down = receive().await;
        assert_eq!(down.monitor, watch);
        assert_eq!(down.reason, ExitReason::Killed);
        assert!(!ember_runtime::is_alive(hog_pid));
        // Introspection is honest about the stuck poll, if it is still running.
        if let Some(info) = ember_runtime::process_info(hog_pid) {
            if let Some(poll) = info.current_poll {
                assert!(poll.kill_pending, "{poll}");
            }
        }
    });
    // The hog saw `should_stop()`, reached its await, and its body was dropped.
    let handle = rt.handle().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the hog's body was never dropped"
        );
        std::thread::yield_now();
    }
    drop(handle);
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn the_thread_count_returns_to_its_resting_level_after_hogs_finish() {
    let mut preemption = ember_runtime::Preemption::default();
    preemption.background_idle = Duration::from_millis(50);
    let rt = Runtime::builder()
        .schedulers(1)
        .preemption(preemption)
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let resting = handle.runtime_info().threads.workers;
    let stop = Arc::new(AtomicBool::new(false));
    let hogs_stop = stop.clone();
    rt.block_on(async move {
        let watches: Vec<_> = (0..3)
            .map(|_| monitor(spawn(hog(hogs_stop.clone()))))
            .collect();
        // Every hog got handed off (we run again after each), then stop them.
        while Handle::current().runtime_info().threads.handoffs < 3 {
            ember_runtime::sleep(Duration::from_millis(1)).await;
        }
        hogs_stop.store(true, Ordering::Relaxed);
        for watch in watches {
            receive::<Down>()
                .matching(move |d| d.monitor == watch)
                .await;
        }
    });
    // Background threads leave once idle; surplus spares too.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let threads = handle.runtime_info().threads;
        if threads.workers <= resting && threads.background == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "threads stayed up: {threads:?}"
        );
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn a_burst_of_healthy_short_polls_under_load_never_triggers_demotion() {
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    rt.block_on(async {
        let me = self_pid();
        let stop = Arc::new(AtomicBool::new(false));
        // Cooperative load: busy loops that yield.
        for _ in 0..8 {
            let stop = stop.clone();
            spawn(async move {
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    x = x.wrapping_mul(3).wrapping_add(1);
                    yield_point().await;
                }
                std::hint::black_box(x);
            });
        }
        // A burst of short interactive polls: 20 pairs ping-ponging.
        for _ in 0..20 {
            let echo = spawn(async {
                loop {
                    let (from, n): (ember_runtime::Pid, u32) = receive().await;
                    send(from, n);
                }
            });
            spawn(async move {
                let my = self_pid();
                for n in 0..2_000u32 {
                    send(echo, (my, n));
                    let back: u32 = receive().await;
                    assert_eq!(back, n);
                }
                send(me, ());
            });
        }
        for _ in 0..20 {
            receive::<()>().await;
        }
        stop.store(true, Ordering::Relaxed);
        let threads = Handle::current().runtime_info().threads;
        assert_eq!(threads.demotions, 0, "{threads:?}");
    });
}

/// The calling thread's kernel id, from `/proc/thread-self`.
fn thread_id() -> String {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    let tid = link.file_name().expect("a thread id");
    tid.to_string_lossy().into_owned()
}

/// Thread `tid`'s nice value (field 19 of its `stat`), if it still runs.
fn nice_of(tid: &str) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(16)?.parse().ok()
}

/// Thread `tid`'s EEVDF slice in ns, where the kernel honours requested
/// slices (6.12 and later) and reports them.
fn requested_slice_of(tid: &str) -> Option<u64> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut version = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = version.next()?.parse().ok()?;
    let minor: u32 = version.next()?.parse().ok()?;
    if (major, minor) < (6, 12) {
        return None;
    }
    let sched = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")).ok()?;
    let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
    line.rsplit(':').next()?.trim().parse().ok()
}

#[test]
fn a_hog_thread_is_demoted_with_a_long_slice() {
    let mut preemption = ember_runtime::Preemption::default();
    // One step only, so the thread is still at it when we look.
    preemption.demotion = vec![(Duration::ZERO, 5)];
    let rt = Runtime::builder()
        .schedulers(1)
        .preemption(preemption.clone())
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let hog_stop = stop.clone();
    let tid = rt.block_on(async move {
        let me = self_pid();
        spawn(async move {
            send(me, thread_id());
            hog(hog_stop).await;
        });
        // We run again once the scheduler was handed away from the hog.
        let tid: String = receive().await;
        tid
    });
    // Demoted at hand-off, or soon after if it first looked blocked.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while nice_of(&tid) != Some(5) {
        assert!(std::time::Instant::now() < deadline, "never demoted");
        std::thread::sleep(Duration::from_millis(1));
    }
    if let Some(slice) = requested_slice_of(&tid) {
        assert_eq!(slice, preemption.demoted_slice.as_nanos() as u64);
    }
    stop.store(true, Ordering::Relaxed);
}
