//! Memory limits: a process over its limit is killed with the untrappable
//! reason `memory_limit`, across awaits or inside one long poll, while the
//! node lives on (docs/semantics.md §9.5).

// The accounting needs the counting allocator.
#[global_allocator]
static ALLOC: ember_runtime::alloc::CountingAlloc = ember_runtime::alloc::CountingAlloc;

mod support;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ember_runtime::introspect::process_info;
use ember_runtime::{
    memory_kill, memory_limit, self_pid, send, set_memory_limit, should_stop, trap_exit,
    try_receive, yield_point, Down, Exit, ExitReason, Preemption, Runtime, Spawn,
};

use support::{down_of, exit_from, recv, runtime, wait_forever, Stop, WAIT};

const MIB: usize = 1 << 20;

/// Allocates `n` MiB in 1 MiB blocks, awaiting between them, and holds them.
async fn hold_across_awaits(n: usize) -> Vec<Vec<u8>> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(black_box(vec![1u8; MIB]));
        yield_point().await;
    }
    held
}

#[derive(Debug, PartialEq, Eq)]
struct Survived;

/// A runtime without the watchdog: only the worker's check after a poll
/// (and the yield at the next await point) can end a process.
fn runtime_without_watchdog() -> Runtime {
    let mut preemption = Preemption::default();
    preemption.enabled = false;
    Runtime::builder()
        .schedulers(2)
        .preemption(preemption)
        .build()
        .expect("a runtime")
}

/// §9.5: allocations across awaits take a process over its limit: it yields
/// at its next await point and dies with `memory_limit` when that poll
/// returns (no watchdog needed); its monitor and its trapping linked parent
/// see the reason, its own `trap_exit` does not save it, and it does not
/// run on; the runtime records the kill.
#[test]
fn a_process_over_its_limit_across_awaits_dies_with_memory_limit() {
    runtime_without_watchdog().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let spawned = Spawn::new()
            .memory_limit(MIB)
            .link()
            .monitor()
            .spawn(async move {
                trap_exit(true);
                let held = hold_across_awaits(16).await;
                send(test, Survived);
                black_box(held);
            })
            .unwrap();
        let down = down_of(spawned.monitor.unwrap()).await;
        assert_eq!(down.reason, ExitReason::memory_limit());
        assert!(down.reason.is_memory_limit());
        assert_eq!(down.reason.to_string(), "memory_limit");
        let exit: Exit = exit_from(spawned.pid).await;
        assert_eq!(exit.reason, ExitReason::memory_limit());
        assert!(try_receive::<Survived>().is_none());
        let kill = memory_kill(spawned.pid).expect("the kill is recorded");
        assert_eq!(kill.limit_bytes, MIB);
        assert!(kill.used_bytes > MIB, "{kill:?}");
        assert!(kill.used_bytes < 4 * MIB, "killed late: {kill:?}");
    });
}

/// §9.5: inside one poll that never awaits, the watchdog kills the process
/// while it still runs: its monitor sees `memory_limit` before the poll
/// returns, and `should_stop()` turns true so its loop can end.
#[test]
fn a_process_over_its_limit_inside_one_poll_is_killed_while_it_runs() {
    runtime().block_on(async {
        // Set by the test once it has the `Down`: the body is still running.
        let released = Arc::new(AtomicBool::new(false));
        // What the body saw: should_stop() turned true, then the release.
        let saw_stop = Arc::new(AtomicBool::new(false));
        let saw_release = Arc::new(AtomicBool::new(false));
        let (r, s, sr) = (released.clone(), saw_stop.clone(), saw_release.clone());
        let spawned = Spawn::new()
            .memory_limit(MIB)
            .monitor()
            .spawn(async move {
                let started = Instant::now();
                let mut held = Vec::new();
                for _ in 0..16 {
                    held.push(black_box(vec![1u8; MIB]));
                }
                while !should_stop() && started.elapsed() < WAIT {
                    std::hint::spin_loop();
                }
                s.store(should_stop(), Ordering::SeqCst);
                while !r.load(Ordering::SeqCst) && started.elapsed() < WAIT {
                    std::hint::spin_loop();
                }
                sr.store(r.load(Ordering::SeqCst), Ordering::SeqCst);
                black_box(held);
            })
            .unwrap();
        let down = down_of(spawned.monitor.unwrap()).await;
        assert_eq!(down.reason, ExitReason::memory_limit());
        released.store(true, Ordering::SeqCst);
        // The body ends its loops (or gives up at its deadline, failing
        // below); its poll is invisible now, so wait for its flag.
        let deadline = Instant::now() + WAIT;
        while !saw_release.load(Ordering::SeqCst) && Instant::now() < deadline {
            ember_runtime::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(
            saw_stop.load(Ordering::SeqCst),
            "should_stop() stayed false"
        );
        assert!(
            saw_release.load(Ordering::SeqCst),
            "the Down came only after the poll returned"
        );
    });
}

/// §9.5: without a limit the same allocations are fine, in a long poll or
/// across awaits.
#[test]
fn a_process_without_a_limit_allocates_freely() {
    runtime().block_on(async {
        let spawned = Spawn::new()
            .monitor()
            .spawn(async move {
                let mut held = hold_across_awaits(16).await;
                for _ in 0..16 {
                    held.push(black_box(vec![1u8; MIB]));
                }
                assert_eq!(memory_limit(), None);
                black_box(held);
            })
            .unwrap();
        let down = down_of(spawned.monitor.unwrap()).await;
        assert_eq!(down.reason, ExitReason::Normal);
    });
}

/// §9.5: memory freed within the process is credited back: 100 MiB
/// allocated and freed in 256 KiB blocks under a 1 MiB limit, across awaits
/// and within polls, leaves it alive, and its count stays under the limit.
#[test]
fn memory_freed_by_the_process_keeps_it_under_its_limit() {
    runtime().block_on(async {
        let test = self_pid();
        let spawned = Spawn::new()
            .memory_limit(MIB)
            .monitor()
            .spawn(async move {
                let mut highest = 0;
                for i in 0..400 {
                    let block = black_box(vec![1u8; MIB / 4]);
                    let (_, used) = memory_limit().expect("a limit");
                    highest = highest.max(used);
                    drop(block);
                    if i % 4 == 0 {
                        yield_point().await;
                    }
                }
                send(test, highest);
            })
            .unwrap();
        let highest: usize = recv().await;
        assert!(highest >= MIB / 4, "the blocks were not counted: {highest}");
        assert!(highest < MIB, "{highest}");
        let down = down_of(spawned.monitor.unwrap()).await;
        assert_eq!(down.reason, ExitReason::Normal);
        assert!(memory_kill(spawned.pid).is_none());
    });
}

/// §9.5: `set_memory_limit` limits the calling process from then on (what
/// it allocated before is not counted), `process_info` shows the limit and
/// the count, and the node goes on running processes after a kill.
#[test]
fn set_memory_limit_applies_to_the_caller_and_process_info_shows_it() {
    runtime().block_on(async {
        let test = self_pid();
        let holder = Spawn::new()
            .monitor()
            .spawn(async move {
                let before = black_box(vec![1u8; 4 * MIB]);
                assert_eq!(set_memory_limit(Some(MIB)).unwrap(), None);
                let half = black_box(vec![1u8; MIB / 2]);
                send(test, Survived);
                let _: Stop = recv().await;
                let more = hold_across_awaits(4).await;
                black_box((before, half, more));
            })
            .unwrap();
        let _: Survived = recv().await;
        let info = process_info(holder.pid).expect("alive");
        assert_eq!(info.memory_limit, Some(MIB));
        let counted = info.memory_attributed_bytes.expect("counted");
        assert!((MIB / 2..MIB).contains(&counted), "{counted}");
        send(holder.pid, Stop);
        let down = down_of(holder.monitor.unwrap()).await;
        assert_eq!(down.reason, ExitReason::memory_limit());

        // Lowering a limit below the count kills at the end of the poll;
        // removing it lets the process allocate freely again.
        let (lowered, monitor) = ember_runtime::spawn_monitor(async {
            set_memory_limit(Some(4 * MIB)).unwrap();
            let held = black_box(vec![1u8; 2 * MIB]);
            assert_eq!(set_memory_limit(Some(MIB)).unwrap(), Some(4 * MIB));
            black_box(held);
            wait_forever().await;
        });
        let down = down_of(monitor).await;
        assert_eq!(down.pid, lowered);
        assert_eq!(down.reason, ExitReason::memory_limit());
        let (_, monitor) = ember_runtime::spawn_monitor(async {
            set_memory_limit(Some(MIB)).unwrap();
            assert_eq!(set_memory_limit(None).unwrap(), Some(MIB));
            black_box(hold_across_awaits(4).await);
        });
        assert_eq!(down_of(monitor).await.reason, ExitReason::Normal);
        let process_info_none: Option<Down> = try_receive();
        assert!(process_info_none.is_none());
    });
}
