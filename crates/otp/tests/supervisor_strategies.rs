//! Strategy × escalation: one_for_one, one_for_all and rest_for_one, and
//! what happens when the restart intensity is exceeded.
//!
//! Ported from OTP's `lib/stdlib/test/supervisor_SUITE.erl`, groups
//! `restart_one_for_one`, `restart_one_for_all`, `restart_rest_for_one`,
//! and the cases `temporary_bystander`, `multiple_restarts` and `tree`.
//! See `docs/semantics.md`, "OTP behaviours / Supervisor".

mod support;

use std::time::Duration;

use ember_otp::supervisor::{
    ChildSpec, ChildStatus, Flags, Restart, Strategy, SupervisorRef, SupervisorSpec,
};
use ember_runtime::{monitor, receive, self_pid, trap_exit, Down, ExitReason, Pid};
use support::{
    child, child_failing_restarts, child_failing_start, child_trapping, end_child, exit_of, pid_of,
    started, How, Kind, StartRefused, Stopped,
};

fn flags(strategy: Strategy, intensity: u32) -> Flags {
    Flags::new()
        .strategy(strategy)
        .intensity(intensity)
        .period(Duration::from_secs(3600))
}

async fn start_sup(strategy: Strategy, intensity: u32, children: Vec<ChildSpec>) -> SupervisorRef {
    SupervisorSpec::new(flags(strategy, intensity), children)
        .unwrap()
        .start_link()
        .await
        .unwrap()
}

fn worker(test: Pid, id: &'static str) -> ChildSpec {
    ChildSpec::worker(id, child(test, id, Kind::Plain))
        .build()
        .unwrap()
}

/// supervisor_SUITE:one_for_one — only the failed child restarts; the
/// third restart within the period exceeds intensity 2 and the supervisor
/// exits with `shutdown`.
#[test]
fn one_for_one_restarts_only_the_failed_child_and_escalates_past_its_intensity() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let sup = start_sup(
            Strategy::OneForOne,
            2,
            vec![worker(test, "child1"), worker(test, "child2")],
        )
        .await;
        let c1 = started("child1").await;
        let c2 = started("child2").await;

        end_child(c1, How::Abnormal).await;
        let c1b = started("child1").await;
        let children = sup.which_children().await.unwrap();
        assert_eq!(pid_of(&children, "child1"), Some(c1b));
        assert_eq!(pid_of(&children, "child2"), Some(c2));
        let counts = sup.count_children().await.unwrap();
        assert_eq!((counts.specs, counts.active), (2, 2));

        end_child(c2, How::Abnormal).await;
        started("child2").await;
        end_child(c1b, How::Abnormal).await;
        assert_eq!(exit_of(sup.pid().unwrap()).await, ExitReason::Shutdown);
    });
}

/// supervisor_SUITE:one_for_one_escalation — a child whose restarts keep
/// failing is retried until the intensity is exceeded; then the supervisor
/// and its other children exit.
#[test]
fn one_for_one_escalates_when_a_restart_keeps_failing() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let failing = ChildSpec::worker("child1", child_failing_restarts(test, "child1"))
            .build()
            .unwrap();
        let sup = start_sup(
            Strategy::OneForOne,
            4,
            vec![failing, worker(test, "child2")],
        )
        .await;
        let c1 = started("child1").await;
        let c2 = started("child2").await;
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

/// supervisor_SUITE:one_for_all — the failed child's siblings are
/// terminated and all are started again; two more failures exceed
/// intensity 2.
#[test]
fn one_for_all_restarts_every_child_and_escalates_past_its_intensity() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let sup = start_sup(
            Strategy::OneForAll,
            2,
            vec![worker(test, "child1"), worker(test, "child2")],
        )
        .await;
        let c1 = started("child1").await;
        let c2 = started("child2").await;
        let c2_down = monitor(c2);

        end_child(c1, How::Abnormal).await;
        let down = receive::<Down>()
            .matching(move |d| d.monitor == c2_down)
            .timeout(support::WAIT)
            .await
            .expect("a Down within the wait limit");
        assert_eq!(down.reason, ExitReason::Shutdown);
        let c1b = started("child1").await;
        let c2b = started("child2").await;
        let children = sup.which_children().await.unwrap();
        assert_eq!(pid_of(&children, "child1"), Some(c1b));
        assert_eq!(pid_of(&children, "child2"), Some(c2b));
        assert!(![c1b, c2b].contains(&c1) && ![c1b, c2b].contains(&c2));

        end_child(c1b, How::Abnormal).await;
        let c1c = started("child1").await;
        started("child2").await;
        end_child(c1c, How::Abnormal).await;
        assert_eq!(exit_of(sup.pid().unwrap()).await, ExitReason::Shutdown);
    });
}

/// supervisor_SUITE:one_for_all_escalation.
#[test]
fn one_for_all_escalates_when_a_restart_keeps_failing() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let failing = ChildSpec::worker("child2", child_failing_restarts(test, "child2"))
            .build()
            .unwrap();
        let sup = start_sup(
            Strategy::OneForAll,
            4,
            vec![worker(test, "child1"), failing],
        )
        .await;
        let c1 = started("child1").await;
        let c2 = started("child2").await;
        let c2_down = monitor(c2);
        end_child(c1, How::Abnormal).await;
        let down = receive::<Down>()
            .matching(move |d| d.monitor == c2_down)
            .timeout(support::WAIT)
            .await
            .expect("a Down within the wait limit");
        assert_eq!(down.reason, ExitReason::Shutdown);
        assert_eq!(exit_of(sup.pid().unwrap()).await, ExitReason::Shutdown);
    });
}

/// supervisor_SUITE:one_for_all_other_child_fails_restart — when a sibling
/// fails to start during a one_for_all restart, the children this pass
/// already started are terminated (with `shutdown`) before the supervisor
/// tries again.
#[test]
fn one_for_all_terminates_restarted_children_when_a_sibling_fails_to_start() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let child1 = ChildSpec::worker("child1", child_trapping(test, "child1"))
            .build()
            .unwrap();
        let child2 = ChildSpec::worker("child2", child_failing_start(test, "child2", 2))
            .build()
            .unwrap();
        let _sup = start_sup(Strategy::OneForAll, 3, vec![child1, child2]).await;
        let c1 = started("child1").await;
        started("child2").await;

        end_child(c1, How::Abnormal).await;
        let c1b = started("child1").await;
        receive::<StartRefused>()
            .matching(|r| r.id == "child2")
            .timeout(support::WAIT)
            .await
            .expect("a StartRefused within the wait limit");
        receive::<Stopped>()
            .matching(|s| s.id == "child1")
            .timeout(support::WAIT)
            .await
            .expect("a Stopped within the wait limit");
        let c1c = started("child1").await;
        started("child2").await;
        assert!(c1 != c1b && c1b != c1c);
    });
}

/// supervisor_SUITE:rest_for_one — the failed child and the ones started
/// after it restart; the ones before keep running.
#[test]
fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let sup = start_sup(
            Strategy::RestForOne,
            2,
            vec![
                worker(test, "child1"),
                worker(test, "child2"),
                worker(test, "child3"),
            ],
        )
        .await;
        let c1 = started("child1").await;
        let c2 = started("child2").await;
        let c3 = started("child3").await;
        let c3_down = monitor(c3);

        end_child(c2, How::Abnormal).await;
        let down = receive::<Down>()
            .matching(move |d| d.monitor == c3_down)
            .timeout(support::WAIT)
            .await
            .expect("a Down within the wait limit");
        assert_eq!(down.reason, ExitReason::Shutdown);
        let c2b = started("child2").await;
        let c3b = started("child3").await;
        let children = sup.which_children().await.unwrap();
        assert_eq!(pid_of(&children, "child1"), Some(c1));
        assert_eq!(pid_of(&children, "child2"), Some(c2b));
        assert_eq!(pid_of(&children, "child3"), Some(c3b));

        end_child(c3b, How::Abnormal).await;
        started("child3").await;
        end_child(c2b, How::Abnormal).await;
        assert_eq!(exit_of(sup.pid().unwrap()).await, ExitReason::Shutdown);
    });
}

/// supervisor_SUITE:rest_for_one_escalation.
#[test]
fn rest_for_one_escalates_when_a_restart_keeps_failing() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let failing = ChildSpec::worker("child2", child_failing_restarts(test, "child2"))
            .build()
            .unwrap();
        let sup = start_sup(
            Strategy::RestForOne,
            4,
            vec![worker(test, "child1"), failing],
        )
        .await;
        let c1 = started("child1").await;
        let c2 = started("child2").await;
        let c2_down = monitor(c2);
        end_child(c1, How::Abnormal).await;
        let down = receive::<Down>()
            .matching(move |d| d.monitor == c2_down)
            .timeout(support::WAIT)
            .await
            .expect("a Down within the wait limit");
        assert_eq!(down.reason, ExitReason::Shutdown);
        assert_eq!(exit_of(sup.pid().unwrap()).await, ExitReason::Shutdown);
    });
}

/// supervisor_SUITE:rest_for_one_other_child_fails_restart — children
/// started before the one that failed to start keep running; the retry
/// starts from the failed one.
#[test]
fn rest_for_one_retries_from_the_child_that_failed_to_start() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let child2 = ChildSpec::worker("child2", child_failing_start(test, "child2", 2))
            .build()
            .unwrap();
        let sup = start_sup(
            Strategy::RestForOne,
            3,
            vec![worker(test, "child1"), child2],
        )
        .await;
        let c1 = started("child1").await;
        started("child2").await;

        end_child(c1, How::Abnormal).await;
        let c1b = started("child1").await;
        receive::<StartRefused>()
            .matching(|r| r.id == "child2")
            .timeout(support::WAIT)
            .await
            .expect("a StartRefused within the wait limit");
        let c2c = started("child2").await;
        let children = sup.which_children().await.unwrap();
        assert_eq!(pid_of(&children, "child1"), Some(c1b));
        assert_eq!(pid_of(&children, "child2"), Some(c2c));
        assert!(support::no_start_of("child1").await);
    });
}

/// supervisor_SUITE:temporary_bystander — a temporary child terminated as
/// part of a one_for_all or rest_for_one restart is not restarted.
#[test]
fn temporary_bystander_of_a_group_restart_is_not_restarted() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        for strategy in [Strategy::OneForAll, Strategy::RestForOne] {
            let temporary = ChildSpec::worker("child2", child(test, "child2", Kind::Plain))
                .restart(Restart::Temporary)
                .build()
                .unwrap();
            let sup = start_sup(strategy, 2, vec![worker(test, "child1"), temporary]).await;
            let c1 = started("child1").await;
            started("child2").await;
            end_child(c1, How::Normal).await;
            started("child1").await;
            let children = sup.which_children().await.unwrap();
            assert_eq!(children.len(), 1, "{strategy}: {children:?}");
            assert_eq!(children[0].id.as_deref(), Some("child1"));
            assert!(support::no_start_of("child2").await);
            sup.stop().await.unwrap();
            let _ = exit_of(sup.pid().unwrap_or(Pid::OUTSIDE)).await;
        }
    });
}

/// supervisor_SUITE:multiple_restarts — restarts spread wider than the
/// period never add up to the intensity. (The one test that must let time
/// pass: the period is the subject.)
#[test]
fn restarts_spread_over_more_than_the_period_do_not_escalate() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let flags = Flags::new().intensity(1).period(Duration::from_millis(100));
        let sup = SupervisorSpec::new(flags, vec![worker(test, "child1")])
            .unwrap()
            .start_link()
            .await
            .unwrap();
        let mut pid = started("child1").await;
        for _ in 0..4 {
            end_child(pid, How::Abnormal).await;
            pid = started("child1").await;
            ember_runtime::sleep(Duration::from_millis(150)).await;
        }
        assert_eq!(
            sup.which_children().await.unwrap()[0].status,
            ChildStatus::Running(pid)
        );
        sup.terminate_child("child1").await.unwrap();
        sup.delete_child("child1").await.unwrap();
    });
}

/// supervisor_SUITE:tree — in a tree, a worker's failure restarts only that
/// worker; a child supervisor that gives up is restarted by its parent,
/// which under one_for_all restarts its sibling supervisor too, without the
/// children added dynamically.
#[test]
fn a_supervision_tree_contains_failures_at_the_lowest_level_that_can_handle_them() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let sup1 = SupervisorSpec::new(
            flags(Strategy::OneForOne, 4),
            vec![worker(test, "child1"), worker(test, "child2")],
        )
        .unwrap();
        let sup2 = SupervisorSpec::new(flags(Strategy::OneForOne, 4), vec![]).unwrap();
        let top = start_sup(
            Strategy::OneForAll,
            4,
            vec![
                sup1.child_spec("supchild1").build().unwrap(),
                sup2.child_spec("supchild2").build().unwrap(),
            ],
        )
        .await;
        let c1 = started("child1").await;
        started("child2").await;
        let counts = top.count_children().await.unwrap();
        assert_eq!((counts.specs, counts.active, counts.supervisors), (2, 2, 2));
        let children = top.which_children().await.unwrap();
        let sup1_pid = pid_of(&children, "supchild1").unwrap();
        let sup2_pid = pid_of(&children, "supchild2").unwrap();
        let sup2_ref = SupervisorRef::from_pid(sup2_pid);
        let failing = ChildSpec::worker("child3", child_failing_restarts(test, "child3"))
            .build()
            .unwrap();
        sup2_ref.start_child(failing).await.unwrap();
        let c3 = started("child3").await;
        sup2_ref.start_child(worker(test, "child4")).await.unwrap();
        let c4 = started("child4").await;

        // Only the failed worker restarts.
        end_child(c4, How::Abnormal).await;
        let c4b = started("child4").await;
        assert_ne!(c4, c4b);
        // supchild2 handled the exit (it restarted child4) before it answers
        // this; had it given up, top would have restarted both subtrees
        // before answering the next call.
        let under2 = sup2_ref.which_children().await.unwrap();
        assert_eq!(pid_of(&under2, "child4"), Some(c4b));
        let children = top.which_children().await.unwrap();
        assert_eq!(pid_of(&children, "supchild1"), Some(sup1_pid));
        assert_eq!(pid_of(&children, "supchild2"), Some(sup2_pid));
        let under1 = SupervisorRef::from_pid(sup1_pid)
            .which_children()
            .await
            .unwrap();
        assert_eq!(pid_of(&under1, "child1"), Some(c1));
        assert!(support::no_start_of("child1").await);

        // child3 cannot restart: supchild2 gives up, the top restarts both subtrees.
        end_child(c3, How::Abnormal).await;
        started("child1").await;
        started("child2").await;
        let children = support::children_where(&top, |c| {
            pid_of(c, "supchild2").is_some_and(|p| p != sup2_pid)
        })
        .await;
        let new_sup2 = SupervisorRef::from_pid(pid_of(&children, "supchild2").unwrap());
        assert!(new_sup2.which_children().await.unwrap().is_empty());
    });
}
