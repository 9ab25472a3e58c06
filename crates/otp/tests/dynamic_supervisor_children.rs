//! The dynamic supervisor (simple_one_for_one): children started with
//! arguments, restarts with the same arguments, intensity, max_children,
//! and the concurrent shutdown.
//!
//! Ported from OTP's `lib/stdlib/test/supervisor_SUITE.erl`:
//! `simple_one_for_one`, `simple_one_for_one_escalation`,
//! `simple_one_for_one_shutdown`, `child_adm_simple`, `count_children`,
//! `sup_start_ignore_permanent_child_start_child_simple`; and Elixir's
//! `DynamicSupervisor` `max_children`. See `docs/semantics.md`, "OTP
//! behaviours / DynamicSupervisor".

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_otp::dynamic_supervisor::{DynamicSupervisorRef, DynamicSupervisorSpec};
use ember_otp::gen::StartError;
use ember_otp::supervisor::{ChildStatus, Restart, Shutdown, SpecError, SupervisorError};
use ember_runtime::{
    exit, is_alive, monitor, receive, self_pid, send, spawn, spawn_link, trap_exit, Down,
    ExitReason, Pid, Spawn,
};
use support::{end_child, eventually, exit_of, How};

/// A dynamic child reports its argument and pid when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Up(u32, Pid);

async fn dyn_child(test: Pid, n: u32) {
    send(test, Up(n, self_pid()));
    let support::Cmd::Die(reason) = receive::<support::Cmd>().await;
    ember_runtime::exit_self(reason).await;
}

async fn up(n: u32) -> Pid {
    receive::<Up>()
        .matching(move |u| u.0 == n)
        .timeout(Duration::from_secs(5))
        .await
        .expect("child started")
        .1
}

async fn start_sup(
    restart: Restart,
    intensity: u32,
    max: Option<usize>,
) -> DynamicSupervisorRef<u32> {
    let test = self_pid();
    let mut builder =
        DynamicSupervisorSpec::worker(
            move |n: u32| async move { Ok(spawn_link(dyn_child(test, n))) },
        )
        .restart(restart)
        .intensity(intensity)
        .period(Duration::from_secs(3600));
    if let Some(max) = max {
        builder = builder.max_children(max);
    }
    builder.build().unwrap().start_link().await.unwrap()
}

/// supervisor_SUITE:simple_one_for_one — a crashed child restarts with the
/// arguments it was started with; the third restart exceeds intensity 2.
#[test]
fn a_dynamic_child_restarts_with_its_own_arguments_until_the_intensity_is_exceeded() {
    support::runtime().block_on(async {
        trap_exit(true);
        let sup = start_sup(Restart::Permanent, 2, None).await;
        let c1 = sup.start_child(1).await.unwrap().unwrap();
        let c2 = sup.start_child(2).await.unwrap().unwrap();
        assert_eq!(up(1).await, c1);
        assert_eq!(up(2).await, c2);

        end_child(c1, How::Abnormal).await;
        let c1b = up(1).await;
        let children = sup.which_children().await.unwrap();
        assert_eq!(children.len(), 2);
        assert!(children.iter().all(|c| c.id.is_none()));
        let pids: Vec<_> = children.iter().filter_map(|c| c.status.pid()).collect();
        assert!(pids.contains(&c1b) && pids.contains(&c2));
        let counts = sup.count_children().await.unwrap();
        assert_eq!((counts.specs, counts.active, counts.workers), (1, 2, 2));

        end_child(c2, How::Abnormal).await;
        let c2b = up(2).await;
        end_child(c2b, How::Abnormal).await;
        assert_eq!(exit_of(sup.pid().unwrap()).await, ExitReason::Shutdown);
        assert!(!is_alive(c1b));
    });
}

/// supervisor_SUITE:simple_one_for_one_escalation — a child whose restart
/// keeps failing makes the supervisor give up and take the others down.
#[test]
fn a_dynamic_supervisor_escalates_when_a_restart_keeps_failing() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let starts = Arc::new(AtomicUsize::new(0));
        let sup = DynamicSupervisorSpec::worker(move |n: u32| {
            let first = starts.fetch_add(1, Ordering::SeqCst) < 2;
            async move {
                if first || n != 1 {
                    Ok(spawn_link(dyn_child(test, n)))
                } else {
                    Err(StartError::Failed(ExitReason::error("no restart")))
                }
            }
        })
        .intensity(4)
        .build()
        .unwrap()
        .start_link()
        .await
        .unwrap();
        sup.start_child(1).await.unwrap();
        sup.start_child(2).await.unwrap();
        let c1 = up(1).await;
        let c2 = up(2).await;
        let c2_down = monitor(c2);
        end_child(c1, How::Abnormal).await;
        assert_eq!(exit_of(sup.pid().unwrap()).await, ExitReason::Shutdown);
        let down = receive::<Down>()
            .matching(move |d| d.monitor == c2_down)
            .timeout(support::WAIT)
            .await
            .expect("a Down within the wait limit");
        assert_eq!(down.reason, ExitReason::Shutdown);
    });
}

/// Elixir's DynamicSupervisor `max_children`: a start beyond the limit is
/// refused at once; a slot frees when a child exits.
#[test]
fn max_children_refuses_starts_beyond_the_limit() {
    support::runtime().block_on(async {
        trap_exit(true);
        let sup = start_sup(Restart::Temporary, 1, Some(2)).await;
        let c1 = sup.start_child(1).await.unwrap().unwrap();
        sup.start_child(2).await.unwrap().unwrap();
        assert_eq!(sup.start_child(3).await, Err(SupervisorError::MaxChildren));
        end_child(c1, How::Normal).await;
        eventually(|| async { (sup.count_children().await.unwrap().active == 1).then_some(()) })
            .await;
        assert!(sup.start_child(3).await.unwrap().is_some());
        assert_eq!(sup.start_child(4).await, Err(SupervisorError::MaxChildren));
    });
}

/// supervisor_SUITE:child_adm_simple — terminate_child by pid: a child is
/// terminated, a dead pid is fine, a live stranger is not_found.
#[test]
fn terminate_child_takes_a_pid_and_refuses_strangers() {
    support::runtime().block_on(async {
        trap_exit(true);
        let sup = start_sup(Restart::Permanent, 2, None).await;
        let c1 = sup.start_child(1).await.unwrap().unwrap();
        sup.start_child(2).await.unwrap().unwrap();
        let down = monitor(c1);
        sup.terminate_child(c1).await.unwrap();
        let reason = receive::<Down>()
            .matching(move |d| d.monitor == down)
            .timeout(support::WAIT)
            .await
            .expect("a Down within the wait limit")
            .reason;
        assert_eq!(reason, ExitReason::Shutdown);
        assert_eq!(sup.which_children().await.unwrap().len(), 1);
        sup.terminate_child(c1).await.unwrap();
        let stranger = spawn(async { receive::<()>().await });
        assert_eq!(
            sup.terminate_child(stranger).await,
            Err(SupervisorError::NotFound)
        );
        assert!(is_alive(stranger));
        exit(stranger, ExitReason::Kill);
    });
}

/// supervisor_SUITE:sup_start_ignore_permanent_child_start_child_simple.
#[test]
fn a_dynamic_child_whose_start_ignores_is_not_kept() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let sup = DynamicSupervisorSpec::worker(move |n: u32| async move {
            if n == 0 {
                Err(StartError::Ignore)
            } else {
                Ok(spawn_link(dyn_child(test, n)))
            }
        })
        .build()
        .unwrap()
        .start_link()
        .await
        .unwrap();
        assert_eq!(sup.start_child(0).await, Ok(None));
        let pid = sup.start_child(1).await.unwrap().unwrap();
        let children = sup.which_children().await.unwrap();
        assert_eq!(children.len(), 1);
        assert_eq!(children[0].status, ChildStatus::Running(pid));
        sup.stop().await.unwrap();
    });
}

/// supervisor_SUITE:simple_one_for_one_shutdown — all children get the
/// shutdown signal at once and share one timeout, after which the
/// stubborn ones are killed.
#[test]
fn dynamic_children_are_shut_down_together_within_one_timeout() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        // Ten stubborn children: one after another they would take ten
        // limits; together, one. The bound between leaves a busy machine
        // four limits of slack.
        let limit = Duration::from_millis(500);
        let sup = DynamicSupervisorSpec::worker(move |stubborn: bool| async move {
            let spawned = Spawn::new()
                .link()
                .trap_exit(stubborn)
                .spawn(async move {
                    send(test, Up(0, self_pid()));
                    loop {
                        receive::<ember_runtime::Exit>().await;
                    }
                })
                .unwrap();
            Ok(spawned.pid)
        })
        .shutdown(Shutdown::Timeout(limit))
        .build()
        .unwrap()
        .start_link()
        .await
        .unwrap();
        let mut downs = Vec::new();
        for stubborn in [false, false].into_iter().chain([true; 10]) {
            let pid = sup.start_child(stubborn).await.unwrap().unwrap();
            downs.push((stubborn, monitor(pid)));
        }
        let t0 = Instant::now();
        sup.stop().await.unwrap();
        let took = t0.elapsed();
        assert!(took >= limit, "{took:?}");
        assert!(took < limit * 5, "not concurrent: {took:?}");
        for (stubborn, mref) in downs {
            let reason = receive::<Down>()
                .matching(move |d| d.monitor == mref)
                .timeout(support::WAIT)
                .await
                .expect("a Down within the wait limit")
                .reason;
            let wanted = if stubborn {
                ExitReason::Killed
            } else {
                ExitReason::Shutdown
            };
            assert_eq!(reason, wanted);
        }
    });
}

/// supervisor_SUITE:count_children — a thousand temporary children are
/// counted, and forgotten once killed.
#[test]
fn count_children_tracks_a_thousand_temporary_children() {
    support::runtime().block_on(async {
        trap_exit(true);
        let sup = start_sup(Restart::Temporary, 1, None).await;
        for n in 0..1000 {
            sup.start_child(n).await.unwrap();
        }
        let counts = sup.count_children().await.unwrap();
        assert_eq!(
            (counts.specs, counts.active, counts.workers),
            (1, 1000, 1000)
        );
        let children = sup.which_children().await.unwrap();
        assert_eq!(children.len(), 1000);
        for child in &children {
            exit(child.status.pid().unwrap(), ExitReason::Kill);
        }
        eventually(|| async { (sup.count_children().await.unwrap().active == 0).then_some(()) })
            .await;
        assert_eq!(sup.count_children().await.unwrap().workers, 0);
    });
}

/// A transient dynamic child restarts only after an abnormal exit.
#[test]
fn a_transient_dynamic_child_restarts_only_after_an_abnormal_exit() {
    support::runtime().block_on(async {
        trap_exit(true);
        let sup = start_sup(Restart::Transient, 5, None).await;
        let c1 = sup.start_child(1).await.unwrap().unwrap();
        up(1).await;
        end_child(c1, How::Abnormal).await;
        let c1b = up(1).await;
        end_child(c1b, How::Normal).await;
        // The supervisor restarts inside the handling of the exit, so once
        // it lists no child it has handled it without a restart; an `Up`
        // from an earlier stray start would already be here.
        eventually(|| async { sup.which_children().await.unwrap().is_empty().then_some(()) }).await;
        assert!(receive::<Up>().timeout(Duration::ZERO).await.is_none());
    });
}

/// Invalid dynamic supervisor specs are rejected when built.
#[test]
fn invalid_dynamic_supervisor_specs_are_rejected_when_built() {
    let start = |_: u32| async { Ok(Pid::OUTSIDE) };
    assert_eq!(
        DynamicSupervisorSpec::worker(start)
            .max_children(0)
            .build()
            .unwrap_err(),
        SpecError::InvalidMaxChildren
    );
    assert_eq!(
        DynamicSupervisorSpec::worker(start)
            .period(Duration::ZERO)
            .build()
            .unwrap_err()
            .to_string(),
        "invalid supervisor flags: period: must be greater than zero"
    );
}
