//! Ordered start, reverse-order stop, and shutdown timeouts.
//!
//! Ported from OTP's `lib/stdlib/test/supervisor_SUITE.erl`, group
//! `sup_stop` (`sup_stop_infinity`, `sup_stop_timeout`,
//! `sup_stop_brutal_kill`), plus the start and stop order that
//! supervisor.erl's `start_children/2` and `terminate_children/2`
//! guarantee. See `docs/semantics.md`, "OTP behaviours / Supervisor".

mod support;

use std::time::{Duration, Instant};

use ember_otp::supervisor::{ChildSpec, Flags, Shutdown, SupervisorSpec};
use ember_runtime::{monitor, receive, self_pid, trap_exit, Down, ExitReason, MonitorRef, Pid};
use support::{child, probe, started, Kind, ProbeInit, Stopped};

async fn down_of(mref: MonitorRef) -> ExitReason {
    receive::<Down>()
        .matching(move |d| d.monitor == mref)
        .timeout(Duration::from_secs(10))
        .await
        .expect("a down")
        .reason
}

fn spec(test: Pid, id: &'static str, kind: Kind, shutdown: Shutdown) -> ChildSpec {
    ChildSpec::worker(id, child(test, id, kind))
        .shutdown(shutdown)
        .build()
        .unwrap()
}

/// supervisor.erl's `start_children/2`: children start one after the
/// other, in spec order, each start returning before the next begins.
#[test]
fn children_start_in_spec_order() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let children = ["a", "b", "c", "d"]
            .into_iter()
            .map(|id| {
                ChildSpec::worker(id, probe(test, id, ProbeInit::Ok))
                    .build()
                    .unwrap()
            })
            .collect();
        let _sup = SupervisorSpec::new(Flags::new(), children)
            .unwrap()
            .start_link()
            .await
            .unwrap();
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(support::recv::<support::Started>().await.id);
        }
        assert_eq!(order, ["a", "b", "c", "d"]);
    });
}

/// supervisor.erl's `terminate_children/2`: stopping a supervisor stops
/// its children in reverse start order, each gone before the next is told.
#[test]
fn stopping_a_supervisor_stops_children_in_reverse_start_order() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let children = ["a", "b", "c", "d"]
            .into_iter()
            .map(|id| spec(test, id, Kind::Reporting, Shutdown::Infinity))
            .collect();
        let sup = SupervisorSpec::new(Flags::new(), children)
            .unwrap()
            .start_link()
            .await
            .unwrap();
        for id in ["a", "b", "c", "d"] {
            started(id).await;
        }
        sup.stop().await.unwrap();
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(support::recv::<Stopped>().await.id);
        }
        assert_eq!(order, ["d", "c", "b", "a"]);
    });
}

/// supervisor_SUITE:sup_stop_infinity — `infinity` is allowed for workers
/// and supervisors; both get `shutdown`.
#[test]
fn infinity_shutdown_waits_for_the_child_to_exit_with_shutdown() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let nested = SupervisorSpec::new(Flags::new(), vec![])
            .unwrap()
            .child_spec("child1")
            .build()
            .unwrap();
        let sup = SupervisorSpec::new(
            Flags::new(),
            vec![
                nested,
                spec(test, "child2", Kind::Plain, Shutdown::Infinity),
            ],
        )
        .unwrap()
        .start_link()
        .await
        .unwrap();
        let children = sup.which_children().await.unwrap();
        let c1 = monitor(children[0].status.pid().unwrap());
        let c2 = monitor(children[1].status.pid().unwrap());
        sup.stop().await.unwrap();
        assert_eq!(down_of(c1).await, ExitReason::Shutdown);
        assert_eq!(down_of(c2).await, ExitReason::Shutdown);
    });
}

/// supervisor_SUITE:sup_stop_timeout — a child that ignores `shutdown` is
/// killed once its shutdown timeout has passed, and not before.
#[test]
fn a_child_ignoring_shutdown_is_killed_after_its_timeout() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let limit = Duration::from_millis(200);
        let sup = SupervisorSpec::new(
            Flags::new(),
            vec![
                spec(test, "child1", Kind::Plain, Shutdown::Timeout(limit)),
                spec(test, "child2", Kind::Stubborn, Shutdown::Timeout(limit)),
            ],
        )
        .unwrap()
        .start_link()
        .await
        .unwrap();
        let c1 = monitor(started("child1").await);
        let c2 = monitor(started("child2").await);
        let t0 = Instant::now();
        sup.stop().await.unwrap();
        assert!(
            t0.elapsed() >= limit,
            "killed too early: {:?}",
            t0.elapsed()
        );
        assert_eq!(down_of(c1).await, ExitReason::Shutdown);
        assert_eq!(down_of(c2).await, ExitReason::Killed);
    });
}

/// supervisor_SUITE:sup_stop_brutal_kill.
#[test]
fn brutal_kill_kills_the_child_at_once() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let sup = SupervisorSpec::new(
            Flags::new(),
            vec![
                spec(
                    test,
                    "child1",
                    Kind::Plain,
                    Shutdown::Timeout(Duration::from_secs(30)),
                ),
                spec(test, "child2", Kind::Stubborn, Shutdown::BrutalKill),
            ],
        )
        .unwrap()
        .start_link()
        .await
        .unwrap();
        let c1 = monitor(started("child1").await);
        let c2 = monitor(started("child2").await);
        let t0 = Instant::now();
        sup.stop().await.unwrap();
        // Under a worker's default shutdown timeout (5 s), which a brutal
        // kill must not wait for; seconds of slack for a busy machine.
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(4), "took {took:?}");
        assert_eq!(down_of(c1).await, ExitReason::Shutdown);
        assert_eq!(down_of(c2).await, ExitReason::Killed);
    });
}

/// A gen_server child traps exits in its init: its `terminate` runs when
/// its supervisor stops it (gen_server.erl's parent-exit handling).
#[test]
fn a_gen_server_child_trapping_exits_runs_terminate_when_its_supervisor_stops() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let sup = SupervisorSpec::new(
            Flags::new(),
            vec![
                ChildSpec::worker("probe", probe(test, "probe", ProbeInit::Ok))
                    .build()
                    .unwrap(),
            ],
        )
        .unwrap()
        .start_link()
        .await
        .unwrap();
        started("probe").await;
        sup.stop().await.unwrap();
        assert_eq!(support::recv::<Stopped>().await.id, "probe");
    });
}

/// terminate_child uses the child's own shutdown too.
#[test]
fn terminate_child_honours_the_shutdown_timeout() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let limit = Duration::from_millis(100);
        let sup = SupervisorSpec::new(
            Flags::new(),
            vec![spec(
                test,
                "stubborn",
                Kind::Stubborn,
                Shutdown::Timeout(limit),
            )],
        )
        .unwrap()
        .start_link()
        .await
        .unwrap();
        let pid = started("stubborn").await;
        let mref = monitor(pid);
        let t0 = Instant::now();
        sup.terminate_child("stubborn").await.unwrap();
        assert!(t0.elapsed() >= limit);
        assert_eq!(down_of(mref).await, ExitReason::Killed);
    });
}
