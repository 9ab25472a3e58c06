//! Introspection: `process_info`, `processes`, `sample_processes`,
//! `runtime_info` (docs/semantics.md §15).
//!
//! `process_info_describes_a_waiting_process` follows erts'
//! `emulator/test/process_SUITE.erl` `t_process_info` and
//! `process_info_other_msg`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_runtime::introspect::{process_info, processes};
use ember_runtime::{
    cancel_timer, demonitor, monitor, register, self_pid, send, send_after, spawn, spawn_monitor,
    try_receive, yield_point, Handle, Pid, Priority, Spawn, Status,
};

use support::{down_of, recv, runtime, wait_for_stop, Stop, WAIT};

#[derive(Debug, PartialEq, Eq)]
struct Payload(u32);

/// Waits (yielding) until `pid` is parked in a receive.
async fn until_waiting(pid: Pid) {
    let deadline = Instant::now() + WAIT;
    while process_info(pid).map(|i| i.status) != Some(Status::Waiting) {
        assert!(Instant::now() < deadline, "{pid} never went idle");
        yield_point().await;
    }
}

// §15.1: process_info reports what a process is, what it holds and who it is
// related to; messages it has not taken are counted.
#[test]
fn process_info_describes_a_waiting_process() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let spawned = Spawn::new()
            .name("described")
            .label("a described process")
            .priority(Priority::High)
            .trap_exit(true)
            .link()
            .spawn(async move {
                send(me, "started");
                let _: Stop = recv().await;
                send(me, std::iter::from_fn(try_receive::<Payload>).count());
            })
            .expect("spawn");
        let pid = spawned.pid;
        assert_eq!(recv::<&str>().await, "started");
        let watch = monitor(pid);
        until_waiting(pid).await;
        let info = process_info(pid).expect("alive");
        assert_eq!(info.pid, pid);
        assert_eq!(info.status, Status::Waiting);
        assert_eq!(info.spawned_as, "a described process");
        assert_eq!(info.name.as_deref(), Some("described"));
        assert_eq!(info.priority, Priority::High);
        assert!(info.trap_exit);
        assert_eq!(info.links, vec![me]);
        assert_eq!(info.monitored_by, vec![me]);
        assert!(info.monitors.is_empty());
        assert_eq!(info.mailbox_len, 0);
        assert!(info.reductions > 0);
        assert!(info.memory_bytes > 0);
        let empty_memory = info.memory_bytes;
        for n in 0..5 {
            send(pid, Payload(n));
        }
        let info = process_info(pid).expect("alive");
        assert_eq!(info.mailbox_len, 5);
        assert!(info.memory_bytes > empty_memory);
        send(pid, Stop);
        assert_eq!(recv::<usize>().await, 5);
        down_of(watch).await;
        assert!(process_info(pid).is_none());
    });
}

// §15.1: a process asking about itself sees itself running, with its own
// monitors and name.
#[test]
fn process_info_of_self_shows_running() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        register("myself", me).expect("free name");
        let other = spawn(wait_for_stop());
        let watch = monitor(other);
        let info = process_info(me).expect("alive");
        assert_eq!(info.status, Status::Running);
        assert_eq!(info.name.as_deref(), Some("myself"));
        assert_eq!(info.monitors, vec![(watch, other)]);
        assert!(!info.trap_exit);
        assert_eq!(info.priority, Priority::Normal);
        assert_eq!(info.spawned_as, "block_on");
        assert!(demonitor(watch, false));
        send(other, Stop);
    });
}

// §15.1: a dead pid has no info, from inside or outside.
#[test]
fn process_info_of_a_dead_pid_is_none() {
    let rt = runtime();
    let dead = rt.block_on(async {
        let (dead, watch) = spawn_monitor(async {});
        down_of(watch).await;
        assert!(process_info(dead).is_none());
        dead
    });
    assert!(rt.handle().process_info(dead).is_none());
}

// §15.2: processes and sample_processes list the live processes.
#[test]
fn processes_and_samples_list_live_processes() {
    let rt = runtime();
    let handle = rt.handle().clone();
    let pids = rt.block_on(async {
        let pids: Vec<Pid> = (0..10).map(|_| spawn(wait_for_stop())).collect();
        let listed = processes();
        for pid in &pids {
            assert!(listed.contains(pid));
        }
        assert!(listed.contains(&self_pid()));
        pids
    });
    let listed = handle.processes();
    for pid in &pids {
        assert!(listed.contains(pid));
    }
    let samples = handle.sample_processes();
    for pid in &pids {
        assert!(samples.iter().any(|s| s.pid == *pid));
    }
    for pid in pids {
        handle.send(pid, Stop);
    }
}

// §15.2: runtime_info reports schedulers, processes, timers and memory; busy
// time and utilisation behave.
#[test]
fn runtime_info_reports_schedulers_processes_and_timers() {
    let rt = runtime();
    let handle = rt.handle().clone();
    let before = handle.runtime_info();
    assert_eq!(before.schedulers.len(), 2);
    assert!(before.schedulers.iter().all(|s| s.online));
    assert_eq!(
        before
            .schedulers
            .iter()
            .map(|s| s.index)
            .collect::<Vec<_>>(),
        vec![0, 1]
    );
    rt.block_on(async {
        let handle = Handle::current();
        let timers_before = handle.runtime_info().timers;
        let timer = send_after(self_pid(), Stop, Duration::from_secs(3600));
        assert_eq!(handle.runtime_info().timers, timers_before + 1);
        assert!(cancel_timer(timer).is_some());
        assert_eq!(handle.runtime_info().timers, timers_before);
        let idle: Vec<Pid> = (0..50).map(|_| spawn(wait_for_stop())).collect();
        assert!(handle.runtime_info().process_count >= 51);
        for _ in 0..20_000 {
            yield_point().await;
        }
        for pid in idle {
            send(pid, Stop);
        }
    });
    let after = handle.runtime_info();
    assert!(after.uptime > before.uptime);
    let busy: Duration = after.schedulers.iter().map(|s| s.busy).sum();
    assert!(busy > Duration::ZERO);
    // Counted when each poll ends: the last poll of block_on's process may
    // not be in yet.
    assert!(after.schedulers.iter().map(|s| s.reductions).sum::<u64>() >= 12_000);
    for utilization in after.utilization_since(&before) {
        assert!((0.0..=1.0).contains(&utilization), "{utilization}");
    }
    if cfg!(target_os = "linux") {
        assert!(after.memory_rss_bytes > 0);
    }
}

// §15.1, §13.2: CPU time and reductions of a busy process grow.
#[test]
fn a_busy_process_accumulates_cpu_time_and_reductions() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let worker = spawn(async move {
            let mut x = 0u64;
            for i in 0..50_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
                yield_point().await;
            }
            send(me, x);
            let _: Stop = recv().await;
        });
        let _: u64 = recv().await;
        until_waiting(worker).await;
        let info = process_info(worker).expect("alive");
        assert!(info.reductions >= 50_000);
        assert!(info.cpu_time > Duration::ZERO);
        send(worker, Stop);
    });
}

// §15.1, §9.2: a process killed inside a poll is dead for everyone, but
// introspection still shows it, as `Exiting` with a kill pending, until that
// poll returns and its body is dropped.
#[test]
fn a_process_killed_inside_a_poll_is_shown_as_kill_pending_until_the_poll_returns() {
    let rt = runtime();
    rt.block_on(async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (victim, watch) = ember_runtime::spawn_monitor(async move {
            ember_runtime::exit(self_pid(), ember_runtime::ExitReason::Kill);
            let seen = process_info(self_pid())
                .map(|i| (i.status, i.current_poll.map(|p| p.kill_pending)));
            let _ = tx.send(seen);
        });
        let seen = tokio::time::timeout(WAIT, rx)
            .await
            .expect("the victim reported")
            .expect("sent");
        assert_eq!(seen, Some((Status::Exiting, Some(true))));
        down_of(watch).await;
        assert!(process_info(victim).is_none());
    });
}

// §15.1: a process running natively (one long poll that never awaits) is
// charged for that poll as it runs, by `process_info` and by
// `sample_processes`, not only once the poll returns.
#[test]
fn cpu_time_includes_the_poll_in_progress() {
    let rt = runtime();
    rt.block_on(async {
        let release = Arc::new(AtomicBool::new(false));
        let (hog, watch) = spawn_monitor({
            let release = release.clone();
            async move {
                // Native work: no await until released (or the limit).
                let deadline = Instant::now() + WAIT;
                while !release.load(Ordering::Relaxed) && Instant::now() < deadline {
                    std::hint::spin_loop();
                }
            }
        });
        let limit = Instant::now() + WAIT;
        let (info, poll) = loop {
            let info = process_info(hog).expect("the hog is alive");
            if let Some(poll) = info.current_poll.clone() {
                if poll.running_for >= Duration::from_millis(200) {
                    break (info, poll);
                }
            }
            assert!(Instant::now() < limit, "the hog never ran for 200 ms");
            yield_point().await;
        };
        assert!(
            info.cpu_time >= poll.running_for,
            "cpu time {:?} leaves out the poll running for {:?}",
            info.cpu_time,
            poll.running_for
        );
        let sample = Handle::current()
            .sample_processes()
            .into_iter()
            .find(|s| s.pid == hog)
            .expect("the hog is sampled");
        assert!(
            sample.cpu_ns >= poll.running_for.as_nanos() as u64,
            "sampled cpu {} ns leaves out the poll running for {:?}",
            sample.cpu_ns,
            poll.running_for
        );
        release.store(true, Ordering::Relaxed);
        down_of(watch).await;
    });
}
