//! `init` → `ignore` under `start_link`: the start returns
//! `Err(StartError::Ignore)`, the process exits `normal`, and no `Exit`
//! reaches the linked caller, even one that traps exits — a deliberate
//! difference from OTP, which sends `{'EXIT', Pid, normal}`. See
//! `docs/semantics.md`, "The gen core", the `init` outcome table.

mod support;

use std::time::Duration;

use ember_otp::gen::{ReplyTo, StartError};
use ember_otp::gen_server::{self, CallReturn, GenServer, Init};
use ember_runtime::introspect::process_info;
use ember_runtime::{
    monitor, receive, self_pid, send, trap_exit, try_receive, Down, Exit, ExitReason, Pid,
};

/// Tells its starter its pid, then ignores.
struct Ignorer;

/// The pid an `Ignorer` reports from `init`.
struct Born(Pid);

impl GenServer for Ignorer {
    type Args = Pid;
    type Call = ();
    type Reply = ();
    type Cast = ();
    type Continue = ();

    async fn init(test: Pid) -> Init<Self> {
        send(test, Born(self_pid()));
        Init::Ignore
    }

    async fn handle_call(&mut self, _: (), _: &ReplyTo<()>) -> CallReturn<Self> {
        CallReturn::Reply(())
    }
}

#[test]
fn init_ignore_sends_no_exit_to_a_linked_trapping_caller() {
    support::runtime().block_on(async {
        trap_exit(true);
        let me = self_pid();
        assert_eq!(
            gen_server::start_link::<Ignorer>(me).await.err(),
            Some(StartError::Ignore)
        );
        let Born(pid) = receive::<Born>()
            .timeout(Duration::ZERO)
            .await
            .expect("init reported before the start returned");
        // Unlinked on both sides before the start returned (`unlink` is
        // done when it returns, §7.2): nothing can come along that link.
        let my_links = process_info(me).map(|i| i.links).unwrap_or_default();
        assert!(!my_links.contains(&pid), "still linked to {pid}");
        let watch = monitor(pid);
        let down = receive::<Down>()
            .matching(move |d| d.monitor == watch)
            .timeout(Duration::from_secs(10))
            .await
            .expect("the ignoring process exits");
        assert!(
            matches!(down.reason, ExitReason::Normal | ExitReason::NoProc),
            "{:?}",
            down.reason
        );
        assert!(
            try_receive::<Exit>().is_none(),
            "an Exit reached the caller"
        );
    });
}
