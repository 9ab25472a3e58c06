//! Restart type × exit reason: which children a supervisor restarts.
//!
//! Ported from OTP's `lib/stdlib/test/supervisor_SUITE.erl`, groups
//! `normal_termination`, `shutdown_termination` and `abnormal_termination`
//! (`permanent_normal` … `temporary_abnormal`), plus the `kill` column that
//! `do_not_save_child_specs_for_temporary_children` exercises. See
//! `docs/semantics.md`, "OTP behaviours / Supervisor".

mod support;

use std::time::Duration;

use ember_otp::supervisor::{ChildSpec, ChildStatus, Flags, Restart, SupervisorSpec};
use ember_runtime::{self_pid, trap_exit};
use support::{child, children_where, end_child, no_start_of, pid_of, started, How, Kind};

fn check(restart: Restart, how: How, restarted: bool) {
    support::runtime().block_on(async move {
        trap_exit(true);
        let test = self_pid();
        let flags = Flags::new().intensity(2).period(Duration::from_secs(3600));
        let sup = SupervisorSpec::new(flags, vec![])
            .unwrap()
            .start_link()
            .await
            .unwrap();
        let spec = ChildSpec::worker("child1", child(test, "child1", Kind::Plain))
            .restart(restart)
            .build()
            .unwrap();
        let pid = sup.start_child(spec).await.unwrap().unwrap();
        assert_eq!(started("child1").await, pid);

        end_child(pid, how).await;

        let counts = if restarted {
            let new = started("child1").await;
            assert_ne!(new, pid);
            let children = sup.which_children().await.unwrap();
            assert_eq!(pid_of(&children, "child1"), Some(new));
            sup.count_children().await.unwrap()
        } else if restart == Restart::Temporary {
            children_where(&sup, |c| c.is_empty()).await;
            sup.count_children().await.unwrap()
        } else {
            let children = children_where(&sup, |c| pid_of(c, "child1").is_none()).await;
            assert_eq!(children[0].status, ChildStatus::Undefined);
            assert!(no_start_of("child1").await);
            sup.count_children().await.unwrap()
        };
        let expected = match (restarted, restart) {
            (true, _) => (1, 1, 0, 1),
            (false, Restart::Temporary) => (0, 0, 0, 0),
            (false, _) => (1, 0, 0, 1),
        };
        assert_eq!(
            (
                counts.specs,
                counts.active,
                counts.supervisors,
                counts.workers
            ),
            expected
        );
    });
}

macro_rules! matrix {
    ($($name:ident: $restart:ident, $how:ident => $restarted:expr;)*) => {
        $(
            #[test]
            fn $name() {
                check(Restart::$restart, How::$how, $restarted);
            }
        )*
    };
}

matrix! {
    // supervisor_SUITE:permanent_normal, permanent_shutdown, permanent_abnormal
    permanent_child_is_restarted_after_a_normal_exit: Permanent, Normal => true;
    permanent_child_is_restarted_after_a_shutdown_exit: Permanent, Shutdown => true;
    permanent_child_is_restarted_after_a_shutdown_with_info_exit: Permanent, ShutdownWith => true;
    permanent_child_is_restarted_after_an_abnormal_exit: Permanent, Abnormal => true;
    permanent_child_is_restarted_after_being_killed: Permanent, Kill => true;
    // supervisor_SUITE:transient_normal, transient_shutdown, transient_abnormal
    transient_child_is_not_restarted_after_a_normal_exit: Transient, Normal => false;
    transient_child_is_not_restarted_after_a_shutdown_exit: Transient, Shutdown => false;
    transient_child_is_not_restarted_after_a_shutdown_with_info_exit: Transient, ShutdownWith => false;
    transient_child_is_restarted_after_an_abnormal_exit: Transient, Abnormal => true;
    transient_child_is_restarted_after_being_killed: Transient, Kill => true;
    // supervisor_SUITE:temporary_normal, temporary_shutdown, temporary_abnormal
    temporary_child_is_forgotten_after_a_normal_exit: Temporary, Normal => false;
    temporary_child_is_forgotten_after_a_shutdown_exit: Temporary, Shutdown => false;
    temporary_child_is_forgotten_after_a_shutdown_with_info_exit: Temporary, ShutdownWith => false;
    temporary_child_is_forgotten_after_an_abnormal_exit: Temporary, Abnormal => false;
    temporary_child_is_forgotten_after_being_killed: Temporary, Kill => false;
}

/// supervisor_SUITE:transient_shutdown — a transient child that stopped
/// with `shutdown` keeps its spec and can be restarted by hand.
#[test]
fn transient_child_stopped_with_shutdown_can_be_restarted_by_hand() {
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let sup = SupervisorSpec::new(Flags::new().intensity(2), vec![])
            .unwrap()
            .start_link()
            .await
            .unwrap();
        let spec = ChildSpec::worker("child1", child(test, "child1", Kind::Plain))
            .restart(Restart::Transient)
            .build()
            .unwrap();
        let pid = sup.start_child(spec).await.unwrap().unwrap();
        started("child1").await;
        end_child(pid, How::Shutdown).await;
        children_where(&sup, |c| pid_of(c, "child1").is_none()).await;
        let again = sup.restart_child("child1").await.unwrap().unwrap();
        assert_eq!(started("child1").await, again);
    });
}
