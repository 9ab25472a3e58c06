//! Scheduling: reductions and yielding, priorities, work stealing, schedulers
//! online (docs/semantics.md §13).
//!
//! `low_priority_gets_a_small_share_and_never_starves` ports erts'
//! `emulator/test/process_SUITE.erl` `low_prio`.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ember_runtime::introspect::process_info;
use ember_runtime::{
    exit, receive, self_pid, send, send_after, set_priority, spawn, yield_point, ExitReason,
    Handle, Pid, Preemption, Priority, Runtime, Spawn, Status,
};

use support::{one_scheduler, recv, runtime, two_processes_run_side_by_side, wait_forever, WAIT};

/// Two schedulers and no watchdog: a process that never awaits keeps its
/// slot, so only stealing can run a second one beside it (§13.5, §13.7).
fn two_schedulers_without_watchdog() -> Runtime {
    let mut preemption = Preemption::default();
    preemption.enabled = false;
    Runtime::builder()
        .schedulers(2)
        .preemption(preemption)
        .build()
        .expect("a runtime")
}

/// One scheduler and no watchdog: processes only take turns, as the run
/// queues decide. With the watchdog, a poll that happens to use 2 ms of CPU
/// (a mailbox of a million messages growing, on a loaded machine) is handed
/// off and its thread demoted, and twice makes its process a repeat
/// offender, served at idle priority: a matter of preemption (§13.7), not
/// of the run queues' mix.
fn one_scheduler_without_watchdog() -> Runtime {
    let mut preemption = Preemption::default();
    preemption.enabled = false;
    Runtime::builder()
        .schedulers(1)
        .preemption(preemption)
        .build()
        .expect("a runtime")
}

#[derive(Debug)]
struct Ping(Pid, u32);
#[derive(Debug)]
struct Pong(u32);
#[derive(Debug)]
struct Done;
#[derive(Debug)]
struct Progress;

/// Answers pings for ever.
async fn ponger() {
    loop {
        let Ping(from, n) = receive::<Ping>().await;
        send(from, Pong(n));
    }
}

/// Plays `rounds` round trips with `ponger`, telling `report` of progress every
/// `every` rounds and when done.
async fn pinger(ponger: Pid, rounds: u32, every: u32, report: Pid) {
    let me = self_pid();
    for n in 0..rounds {
        send(ponger, Ping(me, n));
        let Pong(m) = recv::<Pong>().await;
        assert_eq!(m, n);
        if (n + 1) % every == 0 {
            send(report, Progress);
        }
    }
    send(report, Done);
}

/// A process that counts its iterations and yields at every one.
async fn spinner(count: Arc<AtomicU64>) {
    loop {
        count.fetch_add(1, Ordering::Relaxed);
        yield_point().await;
    }
}

/// Never waits: reports `id` to `report` every 20 000 iterations.
async fn busy(id: u32, report: Pid) {
    let mut n = 0u64;
    loop {
        n += 1;
        if n % 20_000 == 0 {
            send(report, id);
        }
        yield_point().await;
    }
}

/// Does `n` units of work, yielding at each, then tells `report`.
async fn work(n: u64, report: Pid) {
    for _ in 0..n {
        yield_point().await;
    }
    send(report, Done);
}

/// Tells `server` its kind as fast as it can.
async fn client(server: Pid, kind: Kind) {
    loop {
        send(server, kind);
        yield_point().await;
    }
}

// §13.2: a process looping on yield_point shares a single scheduler with a
// message ping-pong: the ping-pong completes, and the looping process makes
// progress too.
#[test]
fn a_yield_point_loop_does_not_starve_a_ping_pong_on_one_scheduler() {
    let rt = one_scheduler();
    rt.block_on(async {
        let me = self_pid();
        let spins = Arc::new(AtomicU64::new(0));
        let hog = spawn(spinner(spins.clone()));
        let ponger = spawn(ponger());
        spawn(pinger(ponger, 2_000, 500, me));
        for _ in 0..4 {
            recv::<Progress>().await;
        }
        recv::<Done>().await;
        assert!(
            spins.load(Ordering::Relaxed) > 4_000,
            "the looping process did not get a whole slice"
        );
        exit(hog, ExitReason::Kill);
        exit(ponger, ExitReason::Kill);
    });
}

// §13.2: two processes that never wait take turns on one scheduler.
#[test]
fn two_busy_processes_on_one_scheduler_take_turns() {
    let rt = one_scheduler();
    rt.block_on(async {
        let me = self_pid();
        let a = spawn(busy(0, me));
        let b = spawn(busy(1, me));
        let mut seen = [0u32; 2];
        while seen.iter().any(|&s| s < 3) {
            let id: u32 = recv().await;
            seen[id as usize] += 1;
        }
        exit(a, ExitReason::Kill);
        exit(b, ExitReason::Kill);
    });
}

// §13.2: every yield_point counts one reduction, and process_info reports the
// reductions a process has used (counted when each poll ends).
#[test]
fn reductions_count_every_yield_point() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let worker = spawn(async move {
            for _ in 0..10_000 {
                yield_point().await;
            }
            send(me, Done);
            wait_forever().await;
        });
        recv::<Done>().await;
        let deadline = Instant::now() + WAIT;
        let info = loop {
            let info = process_info(worker).expect("alive");
            if info.status == Status::Waiting {
                break info;
            }
            assert!(Instant::now() < deadline, "the worker never went idle");
            yield_point().await;
        };
        assert!(
            (10_000..10_100).contains(&info.reductions),
            "{} reductions",
            info.reductions
        );
    });
}

// §13.2: send, spawn and send_after count reductions too.
#[test]
fn runtime_operations_count_reductions() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let worker = spawn(async move {
            let (dead, _) = ember_runtime::spawn_monitor(async {});
            for _ in 0..1_000 {
                send(dead, ());
            }
            for _ in 0..100 {
                spawn(async {});
            }
            for _ in 0..100 {
                send_after(dead, (), Duration::from_secs(3600));
            }
            send(me, Done);
            wait_forever().await;
        });
        recv::<Done>().await;
        let deadline = Instant::now() + WAIT;
        let info = loop {
            let info = process_info(worker).expect("alive");
            if info.status == Status::Waiting {
                break info;
            }
            assert!(Instant::now() < deadline, "the worker never went idle");
            yield_point().await;
        };
        assert!(info.reductions >= 1_200, "{} reductions", info.reductions);
    });
}

// §13.3: a high-priority process runs before queued normal and low ones, and
// a normal one before a low one when no low turn is due.
#[test]
fn high_priority_runs_before_queued_normal_and_low_ones() {
    let rt = one_scheduler();
    rt.block_on(async {
        let me = self_pid();
        let order = Arc::new(Mutex::new(Vec::new()));
        for (label, priority) in [
            ("low", Priority::Low),
            ("normal", Priority::Normal),
            ("high", Priority::High),
        ] {
            let order = order.clone();
            Spawn::new()
                .priority(priority)
                .spawn(async move {
                    order.lock().expect("lock").push(label);
                    send(me, Done);
                })
                .expect("spawn");
        }
        for _ in 0..3 {
            recv::<Done>().await;
        }
        assert_eq!(*order.lock().expect("lock"), vec!["high", "normal", "low"]);
    });
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Low,
    Normal,
}

// §13.3: low priority is mixed with normal at about one pick in nine: low
// processes get a small share and never starve.
// Port of process_SUITE:low_prio (counts instead of a fixed 2 s run).
#[test]
fn low_priority_gets_a_small_share_and_never_starves() {
    const NORMAL_MESSAGES: u64 = 200_000;
    let rt = one_scheduler_without_watchdog();
    rt.block_on(async {
        let me = self_pid();
        let server = spawn(async move {
            let (mut low, mut normal) = (0u64, 0u64);
            while normal < NORMAL_MESSAGES {
                match receive::<Kind>().await {
                    Kind::Low => low += 1,
                    Kind::Normal => normal += 1,
                }
            }
            send(me, (low, normal));
        });
        let normal_client = Spawn::new()
            .priority(Priority::Normal)
            .spawn(client(server, Kind::Normal))
            .expect("spawn")
            .pid;
        let low_client = Spawn::new()
            .priority(Priority::Low)
            .spawn(client(server, Kind::Low))
            .expect("spawn")
            .pid;
        let (low, normal): (u64, u64) = receive()
            .timeout(Duration::from_secs(20))
            .await
            .expect("the server counted enough");
        exit(normal_client, ExitReason::Kill);
        exit(low_client, ExitReason::Kill);
        let proportion = low as f64 / normal as f64;
        assert!(
            proportion < 1.0 && proportion > 1.0 / 32.0,
            "low {low}, normal {normal}: proportion {proportion}"
        );
    });
}

// §13.3: set_priority returns the previous priority; process_info shows it.
#[test]
fn set_priority_returns_the_previous_priority() {
    let rt = runtime();
    rt.block_on(async {
        assert_eq!(set_priority(Priority::High), Priority::Normal);
        assert_eq!(
            process_info(self_pid()).expect("alive").priority,
            Priority::High
        );
        assert_eq!(set_priority(Priority::Low), Priority::High);
        assert_eq!(set_priority(Priority::Normal), Priority::Low);
    });
}

// §13.5: processes spawned on one scheduler are stolen by an idle one, so two
// schedulers run two processes side by side.
#[test]
fn work_is_stolen_so_two_schedulers_run_processes_side_by_side() {
    let rt = two_schedulers_without_watchdog();
    rt.block_on(async {
        assert!(two_processes_run_side_by_side().await);
    });
}

// §13.6: schedulers can be taken offline and back while processes run; work
// carries on, an offline scheduler runs nothing, and the count is clamped to
// 1..=started.
#[test]
fn set_schedulers_online_works_while_processes_run() {
    // The closing side-by-side check uses polls that never await; the
    // watchdog would (rightly) hand those to other threads, so it is off
    // here: this test is about the schedulers online, not preemption.
    let rt = two_schedulers_without_watchdog();
    rt.block_on(async {
        let me = self_pid();
        let handle = Handle::current();
        assert_eq!(handle.schedulers_online(), 2);
        let spins = Arc::new(AtomicU64::new(0));
        let hog = spawn(spinner(spins.clone()));
        let first_ponger = spawn(ponger());
        spawn(pinger(first_ponger, 10_000, 500, me));
        let mut online = 2;
        loop {
            let message = ember_runtime::receive_any(|m| m.is::<Progress>() || m.is::<Done>())
                .timeout(WAIT)
                .await
                .expect("the ping-pong keeps going");
            if message.is::<Done>() {
                break;
            }
            let next = 3 - online;
            assert_eq!(handle.set_schedulers_online(next), online);
            online = next;
            assert_eq!(handle.schedulers_online(), online);
            let info = handle.runtime_info();
            assert_eq!(info.schedulers[1].online, online == 2);
        }
        assert!(spins.load(Ordering::Relaxed) > 0);
        exit(hog, ExitReason::Kill);
        exit(first_ponger, ExitReason::Kill);
        // An offline scheduler polls nothing: while parallel work runs, its
        // poll count stands still (once any poll it was inside has ended,
        // which on a loaded machine can take a while: hence the retries).
        handle.set_schedulers_online(1);
        let mut stood_still = false;
        for _ in 0..50 {
            let polls_before = handle.runtime_info().schedulers[1].polls;
            for _ in 0..4 {
                spawn(work(20_000, me));
            }
            for _ in 0..4 {
                recv::<Done>().await;
            }
            if handle.runtime_info().schedulers[1].polls == polls_before {
                stood_still = true;
                break;
            }
        }
        assert!(stood_still, "an offline scheduler kept running processes");
        handle.set_schedulers_online(2);
        assert!(two_processes_run_side_by_side().await);
        assert_eq!(handle.set_schedulers_online(0), 2);
        assert_eq!(handle.schedulers_online(), 1);
        assert_eq!(handle.set_schedulers_online(99), 1);
        assert_eq!(handle.schedulers_online(), 2);
    });
}

#[derive(Debug)]
struct Started(u32);

/// Spawns three processes in one poll, each reporting when it first runs,
/// and returns the order in which they ran.
async fn start_order(queued: bool) -> Vec<u32> {
    let me = self_pid();
    for i in 0..3 {
        let spawn = if queued {
            Spawn::new().queued()
        } else {
            Spawn::new()
        };
        spawn
            .spawn(async move { send(me, Started(i)) })
            .expect("spawned");
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(recv::<Started>().await.0);
    }
    order
}

/// A process spawned by a process runs right after its parent's poll (the
/// slot's `next`; one spawned before it moves to the back of the woken
/// queue), whereas `Spawn::queued` keeps spawn order (§13.4): what an
/// acceptor spawns per connection runs in the order the connections came.
#[test]
fn queued_spawns_run_in_spawn_order_and_default_ones_next() {
    let rt = one_scheduler_without_watchdog();
    rt.block_on(async {
        assert_eq!(start_order(true).await, vec![0, 1, 2]);
        assert_eq!(start_order(false).await, vec![2, 0, 1]);
    });
}
