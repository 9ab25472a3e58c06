//! The child administration API and spec validation.
//!
//! Ported from OTP's `lib/stdlib/test/supervisor_SUITE.erl`: `child_adm`,
//! `child_specs`, `sup_flags`, `sup_start_map_faulty_specs`, group
//! `sup_start` (`sup_start_ignore_init`, `sup_start_ignore_child`,
//! `sup_start_ignore_temporary_child`, `sup_start_fail`), `extra_return`
//! and `count_children`. See `docs/semantics.md`, "OTP behaviours /
//! Supervisor".

mod support;

use std::time::Duration;

use ember_otp::gen::{CallError, StartError, StartOptions};
use ember_otp::supervisor::{
    self, check_child_specs, ChildSpec, ChildStatus, ChildType, Flags, Init, Restart, Shutdown,
    SpecError, Supervisor, SupervisorError, SupervisorRef, SupervisorSpec,
};
use ember_runtime::{monitor, receive, self_pid, send, trap_exit, whereis, Down, ExitReason, Pid};
use support::{child, probe, started, Kind, ProbeInit, Stopped};

fn worker(test: Pid, id: &'static str) -> ChildSpec {
    ChildSpec::worker(id, child(test, id, Kind::Plain))
        .build()
        .unwrap()
}

/// The supervisor called the start function of this child (sent from the
/// supervisor itself, before the start).
#[derive(Debug, PartialEq, Eq)]
struct StartCalled(&'static str);

/// Like [`worker`], and the start function reports [`StartCalled`].
fn worker_reporting_calls(test: Pid, id: &'static str) -> ChildSpec {
    let start = child(test, id, Kind::Plain);
    ChildSpec::worker(id, move || {
        send(test, StartCalled(id));
        start()
    })
    .build()
    .unwrap()
}

fn counts(c: supervisor::ChildCounts) -> [usize; 4] {
    [c.specs, c.active, c.supervisors, c.workers]
}

/// supervisor_SUITE:child_adm — start_child, terminate_child,
/// restart_child, delete_child, which_children and count_children, with
/// every error they can return.
#[test]
fn child_administration_follows_otp() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let sup = SupervisorSpec::new(Flags::new().intensity(2), vec![worker(test, "child1")])
            .unwrap()
            .start_link_with(StartOptions::new().name("sup_test"))
            .await
            .unwrap();
        let cpid = started("child1").await;
        let children = sup.which_children().await.unwrap();
        assert_eq!(children.len(), 1);
        assert_eq!(children[0].id.as_deref(), Some("child1"));
        assert_eq!(children[0].status, ChildStatus::Running(cpid));
        assert_eq!(children[0].child_type, ChildType::Worker);
        assert_eq!(counts(sup.count_children().await.unwrap()), [1, 1, 0, 1]);

        // Start of an already running child.
        assert_eq!(
            sup.start_child(worker(test, "child1")).await,
            Err(SupervisorError::AlreadyStarted(cpid))
        );

        // Termination.
        assert_eq!(
            sup.terminate_child("hej").await,
            Err(SupervisorError::NotFound)
        );
        let foo = SupervisorRef::from_name("foo");
        assert_eq!(
            foo.terminate_child("child1").await,
            Err(SupervisorError::Call(CallError::NoProc))
        );
        let down = monitor(cpid);
        sup.terminate_child("child1").await.unwrap();
        let reason = receive::<Down>()
            .matching(move |d| d.monitor == down)
            .timeout(support::WAIT)
            .await
            .expect("a Down within the wait limit")
            .reason;
        assert_eq!(reason, ExitReason::Shutdown);
        assert_eq!(
            sup.which_children().await.unwrap()[0].status,
            ChildStatus::Undefined
        );
        assert_eq!(counts(sup.count_children().await.unwrap()), [1, 0, 0, 1]);
        // Terminating a terminated child succeeds.
        sup.terminate_child("child1").await.unwrap();

        // Start of an existing child that is not running.
        assert_eq!(
            sup.start_child(worker(test, "child1")).await,
            Err(SupervisorError::AlreadyPresent)
        );

        // Restart.
        let cpid2 = sup.restart_child("child1").await.unwrap().unwrap();
        assert_eq!(started("child1").await, cpid2);
        assert_eq!(counts(sup.count_children().await.unwrap()), [1, 1, 0, 1]);
        assert_eq!(
            sup.restart_child("child1").await,
            Err(SupervisorError::Running)
        );
        assert_eq!(
            sup.restart_child("child2").await,
            Err(SupervisorError::NotFound)
        );

        // Deletion.
        assert_eq!(
            sup.delete_child("child1").await,
            Err(SupervisorError::Running)
        );
        assert_eq!(
            sup.delete_child("hej").await,
            Err(SupervisorError::NotFound)
        );
        assert_eq!(
            foo.delete_child("child1").await,
            Err(SupervisorError::Call(CallError::NoProc))
        );
        sup.terminate_child("child1").await.unwrap();
        sup.delete_child("child1").await.unwrap();
        assert_eq!(
            sup.restart_child("child1").await,
            Err(SupervisorError::NotFound)
        );
        assert!(sup.which_children().await.unwrap().is_empty());
        assert_eq!(counts(sup.count_children().await.unwrap()), [0, 0, 0, 0]);

        // Start.
        assert_eq!(
            foo.start_child(worker(test, "child1")).await,
            Err(SupervisorError::Call(CallError::NoProc))
        );
        let cpid3 = sup
            .start_child(worker(test, "child1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(started("child1").await, cpid3);
        assert_eq!(counts(sup.count_children().await.unwrap()), [1, 1, 0, 1]);
        assert_eq!(foo.which_children().await, Err(CallError::NoProc));
        assert_eq!(foo.count_children().await, Err(CallError::NoProc));

        let spec = sup.get_childspec("child1").await.unwrap();
        assert_eq!(
            (spec.restart_type(), spec.shutdown_type(), spec.child_type()),
            (
                Restart::Permanent,
                Shutdown::Timeout(Duration::from_millis(5000)),
                ChildType::Worker
            )
        );
        assert!(matches!(
            sup.get_childspec("child9").await,
            Err(SupervisorError::NotFound)
        ));
    });
}

/// supervisor_SUITE:child_specs and sup_start_map_faulty_specs — invalid
/// specs are rejected when built, and the message names the field.
#[test]
fn invalid_child_specs_are_rejected_when_built_naming_the_field() {
    let start = || async { Ok(Pid::OUTSIDE) };
    let missing_id = ChildSpec::worker("", start).build().unwrap_err();
    assert_eq!(missing_id, SpecError::MissingId);
    assert_eq!(
        missing_id.to_string(),
        "invalid child spec: id: must not be empty"
    );

    let shutdown = ChildSpec::worker("child", start)
        .shutdown(Shutdown::Timeout(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(
        shutdown.to_string(),
        "invalid child spec \"child\": shutdown: a timeout must be greater than zero"
    );

    // Valid ones, OTP's C1..C5.
    for spec in [
        ChildSpec::supervisor("child", start).build(),
        ChildSpec::supervisor("child", start)
            .shutdown(Shutdown::Timeout(Duration::from_millis(1000)))
            .build(),
        ChildSpec::worker("child", start)
            .restart(Restart::Temporary)
            .build(),
        ChildSpec::worker("child", start)
            .restart(Restart::Transient)
            .build(),
        ChildSpec::worker("child", start)
            .shutdown(Shutdown::Infinity)
            .build(),
    ] {
        check_child_specs(&[spec.unwrap()]).unwrap();
    }

    let c1 = ChildSpec::supervisor("child", start).build().unwrap();
    let c2 = ChildSpec::worker("child", start).build().unwrap();
    let duplicate = check_child_specs(&[c1.clone(), c2.clone()]).unwrap_err();
    assert_eq!(duplicate, SpecError::DuplicateChildName("child".into()));
    assert_eq!(
        duplicate.to_string(),
        "invalid child specs: id: \"child\" is used twice"
    );
    assert!(SupervisorSpec::new(Flags::new(), vec![c1, c2]).is_err());
}

/// supervisor_SUITE:sup_flags — a zero period is rejected, naming the field.
#[test]
fn invalid_supervisor_flags_are_rejected_naming_the_field() {
    let error = SupervisorSpec::new(Flags::new().period(Duration::ZERO), vec![]).unwrap_err();
    assert_eq!(error, SpecError::InvalidPeriod);
    assert_eq!(
        error.to_string(),
        "invalid supervisor flags: period: must be greater than zero"
    );
    let defaults = Flags::default();
    assert_eq!(
        defaults,
        Flags::new()
            .strategy(supervisor::Strategy::OneForOne)
            .intensity(1)
            .period(Duration::from_secs(5))
    );
}

/// supervisor_SUITE:sup_start_ignore_child — a child whose start returns
/// ignore is kept, not running.
#[test]
fn a_child_whose_init_ignores_is_kept_but_not_running() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let sup = SupervisorSpec::new(Flags::new(), vec![])
            .unwrap()
            .start_link()
            .await
            .unwrap();
        let ignoring = ChildSpec::worker("child1", probe(test, "child1", ProbeInit::Ignore))
            .build()
            .unwrap();
        assert_eq!(sup.start_child(ignoring).await, Ok(None));
        let cpid2 = sup.start_child(worker(test, "child2")).await.unwrap();
        let children = sup.which_children().await.unwrap();
        assert_eq!(children[0].status, ChildStatus::Undefined);
        assert_eq!(children[1].status.pid(), cpid2);
        assert_eq!(counts(sup.count_children().await.unwrap()), [2, 1, 0, 2]);
    });
}

/// supervisor_SUITE:sup_start_ignore_temporary_child — a temporary child
/// whose start returns ignore is not kept, at init or from start_child.
#[test]
fn a_temporary_child_whose_init_ignores_is_forgotten() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let ignoring = ChildSpec::worker("child1", probe(test, "child1", ProbeInit::Ignore))
            .restart(Restart::Temporary)
            .build()
            .unwrap();
        let temporary = ChildSpec::worker("child2", child(test, "child2", Kind::Plain))
            .restart(Restart::Temporary)
            .build()
            .unwrap();
        let sup = SupervisorSpec::new(Flags::new(), vec![ignoring.clone(), temporary])
            .unwrap()
            .start_link()
            .await
            .unwrap();
        let children = sup.which_children().await.unwrap();
        assert_eq!(children.len(), 1);
        assert_eq!(children[0].id.as_deref(), Some("child2"));
        assert_eq!(sup.start_child(ignoring).await, Ok(None));
        assert_eq!(counts(sup.count_children().await.unwrap()), [1, 1, 0, 1]);
    });
}

/// supervisor_SUITE:sup_start_fail — a child that fails to start makes the
/// supervisor's start fail with `{shutdown, {failed_to_start_child, ...}}`,
/// after terminating the children already started.
#[test]
fn a_child_failing_to_start_fails_the_supervisor_start_and_stops_its_siblings() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let result = SupervisorSpec::new(
            Flags::new(),
            vec![
                ChildSpec::worker("first", probe(test, "first", ProbeInit::Ok))
                    .build()
                    .unwrap(),
                ChildSpec::worker("broken", probe(test, "broken", ProbeInit::Fail))
                    .build()
                    .unwrap(),
                worker_reporting_calls(test, "never"),
            ],
        )
        .unwrap()
        .start_link_with(StartOptions::new().name("failing_sup"))
        .await;
        let Err(StartError::Failed(ExitReason::ShutdownWith(info))) = result else {
            panic!("unexpected {result:?}");
        };
        assert!(info.starts_with("{failed_to_start_child,broken,"), "{info}");
        assert_eq!(support::recv::<Stopped>().await.id, "first");
        // The supervisor's answer came after anything it sent before: had
        // it called the start function of "never", that report would be here.
        assert_eq!(receive::<StartCalled>().timeout(Duration::ZERO).await, None);
        assert!(support::no_start_of("never").await);
        assert_eq!(whereis("failing_sup"), None);
    });
}

struct IgnoringSupervisor;

impl Supervisor for IgnoringSupervisor {
    type Args = ();
    async fn init(_: ()) -> Init {
        Init::Ignore
    }
}

/// supervisor_SUITE:sup_start_ignore_init — a supervisor module whose init
/// returns ignore.
#[test]
fn a_supervisor_whose_init_ignores_starts_nothing() {
    support::runtime().block_on(async {
        trap_exit(true);
        assert_eq!(
            supervisor::start_link::<IgnoringSupervisor>(()).await,
            Err(StartError::Ignore)
        );
    });
}

/// gen_server_SUITE:start (local register) applied to supervisors — a
/// registered supervisor cannot be started twice.
#[test]
fn a_named_supervisor_cannot_be_started_twice() {
    support::runtime().block_on(async {
        trap_exit(true);
        let spec = SupervisorSpec::new(Flags::new(), vec![]).unwrap();
        let sup = spec
            .clone()
            .start_link_with(StartOptions::new().name("only_one"))
            .await
            .unwrap();
        let pid = whereis("only_one").unwrap();
        assert_eq!(sup.pid(), Some(pid));
        assert_eq!(
            spec.start_link_with(StartOptions::new().name("only_one"))
                .await,
            Err(StartError::AlreadyStarted(pid))
        );
    });
}

/// A supervisor that has exited answers every call with an error, at once.
#[test]
fn calling_a_dead_supervisor_returns_noproc() {
    support::runtime().block_on(async {
        trap_exit(true);
        let sup = SupervisorSpec::new(Flags::new(), vec![])
            .unwrap()
            .start_link()
            .await
            .unwrap();
        sup.stop().await.unwrap();
        assert_eq!(sup.which_children().await, Err(CallError::NoProc));
        assert_eq!(sup.stop().await, Err(CallError::NoProc));
    });
}
