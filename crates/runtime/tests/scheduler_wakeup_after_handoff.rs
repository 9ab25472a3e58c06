//! A process woken by a process that then computes natively (no await) runs
//! at once on another scheduler, or after the watchdog hands the hog's
//! scheduler to another thread: the wake-up is never lost to the hand-off
//! (docs/semantics.md, "Preemption"; docs/architecture.md, "Hand-off").

mod support;

use std::time::{Duration, Instant};

use ember_runtime::{receive, self_pid, send, spawn, Preemption, Runtime};
use support::CpuLoad;

/// Spins on the CPU for `d` without awaiting.
fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// One round of the minimal case, `pairs` times at once: B waits for a
/// message; A sends it and then spins natively for `hog`; B answers the test.
/// Returns whether every B answered within `deadline`.
fn round(rt: &Runtime, pairs: usize, hog: Duration, deadline: Duration) -> bool {
    rt.block_on(async move {
        let me = self_pid();
        for _ in 0..pairs {
            let b = spawn(async move {
                let _: u32 = receive::<u32>().await;
                send(me, "b ran");
            });
            spawn(async move {
                send(b, 1u32);
                spin_for(hog);
            });
        }
        for _ in 0..pairs {
            if receive::<&'static str>().timeout(deadline).await.is_none() {
                return false;
            }
        }
        true
    })
}

/// Runs `rounds` rounds on one runtime with two schedulers; panics naming
/// the first round whose wake-up was lost, and prints how many ran.
fn rounds(label: &str, rounds: usize, pairs: usize, hog: Duration) {
    rounds_on(label, runtime(1), rounds, pairs, hog)
}

/// A runtime with two schedulers and `spares` spare threads.
fn runtime(spares: usize) -> Runtime {
    let mut preemption = Preemption::default();
    preemption.spare_threads = spares;
    Runtime::builder()
        .schedulers(2)
        .preemption(preemption)
        .build()
        .expect("a runtime")
}

fn rounds_on(label: &str, rt: Runtime, rounds: usize, pairs: usize, hog: Duration) {
    let started = Instant::now();
    let mut lost = Vec::new();
    for i in 0..rounds {
        if !round(&rt, pairs, hog, Duration::from_secs(5)) {
            lost.push(i);
            if lost.len() >= 3 {
                break;
            }
        }
    }
    if !lost.is_empty() {
        println!("{label}: after the loss: {:#?}", rt.handle().runtime_info());
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
    rounds("one pair", 300, 1, Duration::from_millis(20));
}

#[test]
fn a_process_woken_by_a_native_hog_runs_under_a_competing_cpu_load() {
    let _load = CpuLoad::start(2);
    rounds(
        "one pair, competing load",
        300,
        1,
        Duration::from_millis(20),
    );
}

#[test]
fn processes_woken_by_hogs_on_both_schedulers_run_under_a_competing_cpu_load() {
    let _load = CpuLoad::start(2);
    rounds(
        "three pairs, competing load",
        400,
        3,
        Duration::from_millis(5),
    );
}

/// The minimal case on a fresh runtime each time: the first hand-offs of a
/// runtime race with its spare threads' start.
fn fresh_rounds(label: &str, rounds: usize, hog: Duration) {
    let started = Instant::now();
    let mut lost = Vec::new();
    for i in 0..rounds {
        let rt = Runtime::builder().schedulers(2).build().expect("a runtime");
        if !round(&rt, 1, hog, Duration::from_secs(5)) {
            println!("{label}: round {i} lost: {:#?}", rt.handle().runtime_info());
            lost.push(i);
            if lost.len() >= 3 {
                break;
            }
        }
    }
    println!(
        "{label}: {rounds} fresh runtimes in {:?}, lost: {lost:?}",
        started.elapsed()
    );
    assert!(lost.is_empty(), "{label}: wake-ups lost in rounds {lost:?}");
}

#[test]
fn a_process_woken_by_a_native_hog_on_a_fresh_runtime_runs_under_a_competing_cpu_load() {
    let _load = CpuLoad::start(2);
    fresh_rounds(
        "fresh runtimes, competing load",
        100,
        Duration::from_millis(20),
    );
}

// Without spare threads every hand-off starts the thread that takes the slot
// over, and that thread's start races with the hand-off itself.
#[test]
fn processes_woken_by_hogs_run_when_every_handoff_starts_a_thread() {
    let _load = CpuLoad::start(2);
    rounds_on(
        "three pairs, no spares, competing load",
        runtime(0),
        500,
        3,
        Duration::from_millis(5),
    );
}
