//! ppool: run/noalloc, sync_queue and async_queue ordering, slots released
//! by monitors, and pool isolation.
//!
//! The pool is the one of *Learn You Some Erlang*, "Building an
//! Application With OTP" (ppool_serv, ppool_sup, ppool_supersup,
//! ppool_worker_sup), whose behaviour these tests pin down. See
//! `docs/semantics.md`, "OTP behaviours / ppool".

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_otp::pool::{self, Pool, PoolError};
use ember_otp::supervisor::{SupervisorError, SupervisorRef};
use ember_runtime::{
    exit, is_alive, monitor, receive, self_pid, send, spawn, spawn_link, trap_exit, whereis, Down,
    ExitReason, Pid,
};
use support::eventually;

/// A job: its number, and whether its worker waits for [`Finish`].
#[derive(Clone, Copy, Debug)]
struct Job {
    id: u32,
    hold: bool,
}

/// A worker reports that it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Running {
    id: u32,
    pid: Pid,
}

/// Tells a holding worker to finish.
struct Finish;

fn hold(id: u32) -> Job {
    Job { id, hold: true }
}

async fn start_pool(name: &str, limit: usize) -> Pool<Job> {
    let test = self_pid();
    pool::start_pool(name, limit, move |job: Job| async move {
        Ok(spawn_link(async move {
            send(
                test,
                Running {
                    id: job.id,
                    pid: self_pid(),
                },
            );
            if job.hold {
                receive::<Finish>().await;
            }
        }))
    })
    .await
    .unwrap()
}

async fn running(id: u32) -> Pid {
    receive::<Running>()
        .matching(move |r| r.id == id)
        .timeout(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("job {id} did not run"))
        .pid
}

/// The next worker report (ids from 100 on are the test's own notes).
async fn next_running() -> Running {
    receive::<Running>()
        .matching(|r| r.id < 100)
        .timeout(Duration::from_secs(5))
        .await
        .expect("a job ran")
}

async fn finish(pid: Pid) {
    let mref = monitor(pid);
    send(pid, Finish);
    receive::<Down>()
        .matching(move |d| d.monitor == mref)
        .timeout(support::WAIT)
        .await
        .expect("a Down within the wait limit");
}

/// ppool_serv:handle_call({run, Args}, …) — a worker if a slot is free,
/// `noalloc` at once if not; the slot comes back when the worker exits.
#[test]
fn run_starts_a_worker_while_slots_are_free_and_answers_noalloc_at_once_when_full() {
    support::runtime().block_on(async {
        trap_exit(true);
        pool::start_pools().await.unwrap();
        let nagger = start_pool("nagger", 2).await;
        let w1 = nagger.run(hold(1)).await.unwrap();
        assert_eq!(running(1).await, w1);
        nagger.run(hold(2)).await.unwrap();
        let t0 = Instant::now();
        assert_eq!(nagger.run(hold(3)).await, Err(PoolError::NoAlloc));
        // At once: a run that queued would wait for ever (both workers
        // hold); seconds of slack for a busy machine.
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let stats = nagger.stats().await.unwrap();
        assert_eq!((stats.limit, stats.free, stats.running), (2, 0, 2));

        finish(w1).await;
        let stats = eventually(|| async {
            let stats = nagger.stats().await.unwrap();
            (stats.free == 1).then_some(stats)
        })
        .await;
        assert_eq!(stats.running, 1);
        nagger.run(hold(4)).await.unwrap();
        assert_eq!(nagger.run(hold(5)).await, Err(PoolError::NoAlloc));
    });
}

/// Many callers racing for few slots: exactly `limit` get a worker, every
/// other gets `noalloc`, none waits.
#[test]
fn under_load_exactly_limit_runs_succeed_and_the_rest_get_noalloc() {
    support::runtime().block_on(async {
        trap_exit(true);
        pool::start_pools().await.unwrap();
        let busy = start_pool("busy", 3).await;
        let me = self_pid();
        for n in 0..40 {
            let busy = busy.clone();
            spawn(async move {
                send(me, (n, busy.run(hold(n)).await.is_ok()));
            });
        }
        let mut ok = 0;
        for _ in 0..40 {
            let (_, started) = receive::<(u32, bool)>().await;
            ok += usize::from(started);
        }
        assert_eq!(ok, 3);
        assert_eq!(busy.stats().await.unwrap().running, 3);
    });
}

/// ppool_serv:handle_call({sync, Args}, …) and handle_down_worker — queued
/// callers wait, and get their workers in the order they queued.
#[test]
fn sync_queue_waits_for_a_slot_and_serves_callers_in_order() {
    support::runtime().block_on(async {
        trap_exit(true);
        pool::start_pools().await.unwrap();
        let queue = start_pool("queue", 1).await;
        let me = self_pid();
        let first = queue.sync_queue(hold(0)).await.unwrap();
        assert_eq!(running(0).await, first);
        for n in 1..=3 {
            let caller = queue.clone();
            spawn(async move {
                let pid = caller.sync_queue(hold(n)).await.unwrap();
                send(me, Running { id: 100 + n, pid });
            });
            eventually(|| async {
                (queue.stats().await.unwrap().queued == n as usize).then_some(())
            })
            .await;
        }
        let mut order = Vec::new();
        let mut current = first;
        for _ in 1..=3 {
            finish(current).await;
            let started = next_running().await;
            order.push(started.id);
            // The waiting caller got the same worker.
            assert_eq!(running(100 + started.id).await, started.pid);
            current = started.pid;
        }
        assert_eq!(order, [1, 2, 3]);
    });
}

/// ppool_serv:handle_cast({async, Args}, …) — async jobs are queued, start
/// in order as slots free up, never more than `limit` at once, and none is
/// lost.
#[test]
fn async_queue_runs_every_job_in_order_within_the_limit() {
    support::runtime().block_on(async {
        trap_exit(true);
        pool::start_pools().await.unwrap();
        let test = self_pid();
        let live = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (l, p) = (live.clone(), peak.clone());
        let jobs = pool::start_pool("jobs", 2, move |n: u32| {
            let (live, peak) = (l.clone(), p.clone());
            async move {
                Ok(spawn_link(async move {
                    let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    ember_runtime::yield_point().await;
                    live.fetch_sub(1, Ordering::SeqCst);
                    send(test, n);
                }))
            }
        })
        .await
        .unwrap();
        for n in 0..30u32 {
            jobs.async_queue(n);
        }
        let mut done = Vec::new();
        for _ in 0..30 {
            done.push(
                receive::<u32>()
                    .timeout(Duration::from_secs(5))
                    .await
                    .expect("a job finished"),
            );
        }
        done.sort_unstable();
        assert_eq!(done, (0..30).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 2, "{peak:?}");
        let stats = eventually(|| async {
            let stats = jobs.stats().await.unwrap();
            (stats.free == 2).then_some(stats)
        })
        .await;
        assert_eq!((stats.running, stats.queued), (0, 0));
    });
}

/// Async jobs start in the order they were queued.
#[test]
fn queued_async_jobs_start_in_queue_order() {
    support::runtime().block_on(async {
        trap_exit(true);
        pool::start_pools().await.unwrap();
        let serial = start_pool("serial", 1).await;
        let first = serial.run(hold(0)).await.unwrap();
        running(0).await;
        for n in 1..=5 {
            serial.async_queue(hold(n));
        }
        eventually(|| async { (serial.stats().await.unwrap().queued == 5).then_some(()) }).await;
        let mut current = first;
        let mut order = Vec::new();
        for _ in 1..=5 {
            finish(current).await;
            let next = next_running().await;
            order.push(next.id);
            current = next.pid;
        }
        assert_eq!(order, [1, 2, 3, 4, 5]);
    });
}

/// Slots are released by monitors: a worker that crashes or is killed
/// gives its slot to the next queued job.
#[test]
fn a_crashed_or_killed_worker_releases_its_slot_to_the_next_job() {
    support::runtime().block_on(async {
        trap_exit(true);
        pool::start_pools().await.unwrap();
        let test = self_pid();
        let crashy = pool::start_pool("crashy", 1, move |crash: bool| async move {
            Ok(spawn_link(async move {
                send(test, self_pid());
                receive::<()>().await;
                assert!(!crash, "worker crashed on purpose");
            }))
        })
        .await
        .unwrap();
        let w1 = crashy.run(false).await.unwrap();
        assert_eq!(support::recv::<Pid>().await, w1);
        exit(w1, ExitReason::Kill);
        let w2 = crashy.sync_queue(true).await.unwrap();
        assert_eq!(support::recv::<Pid>().await, w2);
        send(w2, ()); // it panics
        let w3 = crashy.sync_queue(false).await.unwrap();
        assert_eq!(support::recv::<Pid>().await, w3);
        assert!(!is_alive(w1) && !is_alive(w2) && is_alive(w3));
    });
}

/// One pool's collapse never takes another down: killing a pool's server
/// past its supervisor's intensity restarts that pool's subtree from the
/// pools supervisor; the other pool keeps its server and workers.
#[test]
fn a_collapsing_pool_never_takes_another_pool_down() {
    support::runtime().block_on(async {
        trap_exit(true);
        pool::start_pools().await.unwrap();
        let fragile = start_pool("fragile", 2).await;
        let sturdy = start_pool("sturdy", 2).await;
        let sturdy_server = sturdy.pid().unwrap();
        let sturdy_worker = sturdy.run(hold(1)).await.unwrap();
        running(1).await;
        let fragile_worker = fragile.run(hold(2)).await.unwrap();
        running(2).await;

        let pools = SupervisorRef::from_name(pool::POOLS);
        let fragile_sup =
            |children: &[ember_otp::supervisor::ChildInfo]| support::pid_of(children, "fragile");
        let sup0 = fragile_sup(&pools.which_children().await.unwrap()).unwrap();
        // Twice: the first restart is within the pool supervisor's
        // intensity (1), the second makes it give up and escalate.
        for _ in 0..2 {
            let server = eventually(|| async { fragile.pid() }).await;
            let mref = monitor(server);
            exit(server, ExitReason::Kill);
            receive::<Down>()
                .matching(move |d| d.monitor == mref)
                .timeout(support::WAIT)
                .await
                .expect("a Down within the wait limit");
            eventually(|| async { fragile.pid().filter(|p| *p != server).map(|_| ()) }).await;
        }
        let children =
            support::children_where(&pools, |c| fragile_sup(c).is_some_and(|p| p != sup0)).await;
        assert_ne!(fragile_sup(&children), Some(sup0));
        assert!(
            !is_alive(fragile_worker),
            "one_for_all took the workers down"
        );

        // The other pool is untouched.
        assert_eq!(sturdy.pid(), Some(sturdy_server));
        assert!(is_alive(sturdy_worker));
        assert_eq!(sturdy.stats().await.unwrap().running, 1);
        // And the restarted pool works, with all its slots free.
        let stats = fragile.stats().await.unwrap();
        assert_eq!((stats.free, stats.running), (2, 0));
        fragile.run(hold(3)).await.unwrap();
    });
}

/// ppool:stop_pool — the pool and its workers are gone; the name can be
/// used again. A second pool of the same name is refused.
#[test]
fn stop_pool_removes_the_pool_and_its_workers() {
    support::runtime().block_on(async {
        trap_exit(true);
        pool::start_pools().await.unwrap();
        let temp = start_pool("temp", 1).await;
        let worker = temp.run(hold(1)).await.unwrap();
        assert!(matches!(
            pool::start_pool("temp", 1, |_: u32| async { Ok(Pid::OUTSIDE) }).await,
            Err(PoolError::Supervisor(SupervisorError::AlreadyStarted(_)))
        ));
        pool::stop_pool("temp").await.unwrap();
        assert_eq!(whereis("temp"), None);
        assert!(!is_alive(worker));
        assert_eq!(
            temp.run(hold(2)).await,
            Err(PoolError::Call(ember_otp::gen::CallError::NoProc))
        );
        assert_eq!(
            pool::stop_pool("temp").await,
            Err(PoolError::Supervisor(SupervisorError::NotFound))
        );
        let again = start_pool("temp", 1).await;
        again.run(hold(3)).await.unwrap();
    });
}
