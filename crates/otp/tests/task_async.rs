//! Tasks and the task supervisor: await with timeout, yield, shutdown,
//! crash propagation with and without links.
//!
//! Modelled on Elixir's `Task` and `Task.Supervisor` documentation and
//! test suite (`task_test.exs`, `task/supervisor_test.exs`): `async`/`await`,
//! `yield`, `shutdown`, `async_nolink`. See `docs/semantics.md`, "OTP
//! behaviours / Task".

mod support;

use std::time::Duration;

use ember_otp::gen::StartOptions;
use ember_otp::supervisor::{Shutdown, SupervisorError};
use ember_otp::task::{Task, TaskError, TaskSupervisor};
use ember_runtime::{
    is_alive, monitor, receive, receive_any, self_pid, send, sleep, trap_exit, Down, ExitReason,
};

async fn down_reason(pid: ember_runtime::Pid) -> ExitReason {
    support::await_exit(pid).await
}

/// Spawns `body` monitored, so its exit reason is never lost to a race.
async fn exit_reason_of<F>(body: F) -> ExitReason
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (_, mref) = ember_runtime::spawn_monitor(body);
    receive::<Down>()
        .matching(move |d| d.monitor == mref)
        .timeout(support::WAIT)
        .await
        .expect("a Down within the wait limit")
        .reason
}

async fn mailbox_is_empty() -> bool {
    receive_any(|_| true)
        .timeout(Duration::ZERO)
        .await
        .is_none()
}

#[test]
fn awaiting_a_task_returns_its_result() {
    support::runtime().block_on(async {
        let task = Task::spawn(async { 6 * 7 });
        assert_eq!(task.await, Ok(42));
        let tasks: Vec<_> = (0..10u64)
            .map(|n| Task::spawn(async move { n * n }))
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.join().await.unwrap());
        }
        assert_eq!(results, (0..10).map(|n| n * n).collect::<Vec<_>>());
    });
}

/// Elixir's `Task.await/2` exits on timeout; here it returns `Timeout`
/// and kills the task, and no late result reaches the owner.
#[test]
fn a_join_that_times_out_kills_the_task_and_returns_timeout() {
    support::runtime().block_on(async {
        let task = Task::spawn(async {
            sleep(Duration::from_secs(30)).await;
            1
        });
        let pid = task.pid();
        assert_eq!(
            task.join_timeout(Duration::from_millis(10)).await,
            Err(TaskError::Timeout)
        );
        assert!(!is_alive(pid));
        assert!(mailbox_is_empty().await);
    });
}

#[test]
fn yield_returns_none_while_the_task_runs_and_the_result_once_done() {
    support::runtime().block_on(async {
        let me = self_pid();
        let mut task = Task::spawn(async move {
            receive::<()>().await;
            "done"
        });
        assert_eq!(task.yield_for(Duration::from_millis(5)).await, None);
        send(task.pid(), ());
        let _ = me;
        assert_eq!(
            task.yield_for(Duration::from_secs(5)).await,
            Some(Ok("done"))
        );
    });
}

#[test]
fn shutdown_stops_a_running_task_and_returns_a_finished_result() {
    support::runtime().block_on(async {
        let running = Task::spawn(async {
            sleep(Duration::from_secs(30)).await;
        });
        let pid = running.pid();
        assert_eq!(
            running
                .shutdown(Shutdown::Timeout(Duration::from_secs(1)))
                .await,
            None
        );
        assert!(!is_alive(pid));

        let finished = Task::spawn(async { 7 });
        down_reason(finished.pid()).await; // it is done
        assert_eq!(finished.shutdown(Shutdown::BrutalKill).await, Some(Ok(7)));
        assert!(mailbox_is_empty().await);
    });
}

/// Elixir: a crash in a `Task.async` task takes its (linked) owner down.
#[test]
fn a_crashing_linked_task_takes_its_owner_down() {
    support::runtime().block_on(async {
        let reason = exit_reason_of(async {
            let task = Task::spawn(async { panic!("task crashed") as u32 });
            let _ = task.join().await;
            unreachable!("the link kills the owner first");
        })
        .await;
        match reason {
            ExitReason::Panic(m) => assert!(m.contains("task crashed")),
            other => panic!("owner exited with {other}"),
        }
    });
}

/// An owner that traps exits gets the crash as an error instead.
#[test]
fn a_trapping_owner_gets_the_crash_of_a_linked_task_as_an_error() {
    support::runtime().block_on(async {
        trap_exit(true);
        let task = Task::spawn(async { panic!("task crashed") as u32 });
        match task.join().await {
            Err(TaskError::Exited(ExitReason::Panic(m))) => assert!(m.contains("task crashed")),
            other => panic!("unexpected {other:?}"),
        }
    });
}

/// Only the owner may await a task.
#[test]
fn a_task_awaited_by_another_process_is_refused() {
    support::runtime().block_on(async {
        let task = Task::spawn(async { 1 });
        let reason = exit_reason_of(async move {
            let _ = task.join().await;
        })
        .await;
        match reason {
            ExitReason::Panic(m) => assert!(m.contains("is owned by"), "{m}"),
            other => panic!("unexpected {other}"),
        }
    });
}

/// Tells a test task to finish.
struct Go;

/// A task dropped unawaited: its result never reaches the owner's mailbox
/// (only the monitor's `Down` does).
#[test]
fn the_result_of_a_dropped_task_is_discarded() {
    support::runtime().block_on(async {
        // The task finishes only when told, after it was dropped.
        let task = Task::spawn(async {
            let go = receive::<Go>().timeout(support::WAIT).await;
            assert!(go.is_some(), "the task was never told to finish");
            1
        });
        let pid = task.pid();
        drop(task);
        send(pid, Go);
        let down = receive::<Down>().timeout(support::WAIT).await;
        assert_eq!(down.map(|d| d.reason), Some(ExitReason::Normal));
        // Its result, sent before it ended, would be ahead of the `Down`.
        assert!(mailbox_is_empty().await);
    });
}

/// Task.Supervisor.async_nolink — a crashing task does not take the caller down.
#[test]
fn a_crashing_async_nolink_task_does_not_take_the_caller_down() {
    support::runtime().block_on(async {
        let tasks = TaskSupervisor::start_link().await.unwrap();
        let task = tasks
            .async_nolink(async { panic!("boom") as u32 })
            .await
            .unwrap();
        match task.await {
            Err(TaskError::Exited(ExitReason::Panic(m))) => assert!(m.contains("boom")),
            other => panic!("unexpected {other:?}"),
        }
        let ok = tasks.async_nolink(async { 5 }).await.unwrap();
        assert_eq!(ok.await, Ok(5));
        assert!(is_alive(self_pid()));
        assert!(is_alive(tasks.pid().unwrap()));
    });
}

/// Task.Supervisor.async — linked: a crash takes a non-trapping caller down.
#[test]
fn a_crashing_async_link_task_takes_the_caller_down() {
    support::runtime().block_on(async {
        let tasks = TaskSupervisor::start_link().await.unwrap();
        let reason = exit_reason_of(async move {
            let task = tasks
                .async_link(async { panic!("linked boom") as u32 })
                .await
                .unwrap();
            let _ = task.await;
        })
        .await;
        assert!(matches!(reason, ExitReason::Panic(_)), "{reason}");
    });
}

/// Task.Supervisor.start_child — fire and forget, supervised, listed while
/// it runs, and stopped with its supervisor.
#[test]
fn supervised_tasks_are_listed_and_stopped_with_their_supervisor() {
    support::runtime().block_on(async {
        trap_exit(true);
        let me = self_pid();
        let tasks = TaskSupervisor::start_link_with(StartOptions::new().name("tasks"), Some(2))
            .await
            .unwrap();
        let pid = tasks
            .start_child(async move {
                send(me, "running");
                receive::<()>().await;
            })
            .await
            .unwrap();
        assert_eq!(support::recv::<&str>().await, "running");
        let by_name = TaskSupervisor::from_name("tasks");
        assert_eq!(by_name.children().await.unwrap(), vec![pid]);
        let _second = tasks
            .async_nolink(async { sleep(Duration::from_secs(30)).await })
            .await
            .unwrap();
        assert_eq!(
            tasks.start_child(async {}).await,
            Err(SupervisorError::MaxChildren)
        );
        let mref = monitor(pid);
        tasks.stop().await.unwrap();
        let down = receive::<Down>()
            .matching(move |d| d.monitor == mref)
            .timeout(support::WAIT)
            .await
            .expect("a Down within the wait limit");
        assert_eq!(down.reason, ExitReason::Shutdown);
    });
}
