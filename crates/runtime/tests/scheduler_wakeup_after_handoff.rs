//! A process woken by a process that then computes natively (no await) runs
//! at once on another scheduler, or after the watchdog hands the hog's
//! scheduler to another thread: the wake-up is never lost to the hand-off
//! (docs/semantics.md, "Preemption"; docs/architecture.md, "Hand-off").

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ember_runtime::{receive, self_pid, send, spawn, Runtime};

/// Spins on the CPU for `d` without awaiting.
fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// A competing CPU hog outside the runtime, one per core, so that hogs and
/// hand-offs run on a starved machine; stops when the guard drops.
struct Load(Arc<AtomicBool>, Vec<thread::JoinHandle<()>>);

impl Load {
    fn start(threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        spin_for(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        Load(stop, handles)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for h in self.1.drain(..) {
            let _ = h.join();
        }
    }
}

/// One round of the minimal case: B waits for a message; A sends it and then
/// spins natively for `hog`; B answers the test. Returns whether B answered
/// within `deadline`.
fn round(rt: &Runtime, hog: Duration, deadline: Duration) -> bool {
    rt.block_on(async move {
        let me = self_pid();
        let b = spawn(async move {
            let _: u32 = receive::<u32>().await;
            send(me, "b ran");
        });
        spawn(async move {
            send(b, 1u32);
            spin_for(hog);
        });
        receive::<&'static str>().timeout(deadline).await.is_some()
    })
}

/// Runs `rounds` rounds on one runtime with two schedulers; panics naming
/// the first round whose wake-up was lost, and prints how many ran.
fn rounds(label: &str, rounds: usize, hog: Duration) {
    let rt = Runtime::builder().schedulers(2).build().expect("a runtime");
    let started = Instant::now();
    let mut lost = Vec::new();
    for i in 0..rounds {
        if !round(&rt, hog, Duration::from_secs(5)) {
            lost.push(i);
            if lost.len() >= 3 {
                break;
            }
        }
    }
    let info = rt.handle().runtime_info();
    println!(
        "{label}: {} rounds in {:?}, {} hand-offs, {} lost: {lost:?}",
        rounds,
        started.elapsed(),
        info.threads.handoffs,
        lost.len()
    );
    assert!(lost.is_empty(), "{label}: wake-ups lost in rounds {lost:?}");
}

#[test]
fn a_process_woken_by_a_native_hog_runs_while_the_hog_spins() {
    rounds("idle machine", 300, Duration::from_millis(20));
}

#[test]
fn a_process_woken_by_a_native_hog_runs_under_a_competing_cpu_load() {
    let _load = Load::start(2);
    rounds("competing load", 300, Duration::from_millis(20));
}
