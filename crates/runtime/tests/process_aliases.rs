//! Process aliases (`docs/semantics.md`, "Distribution"): a message through
//! an active alias arrives, through an inactive one it is dropped, and a
//! reply-demonitor alias lets exactly one message through and takes its
//! monitor with it.
//!
//! A message that must not arrive is checked by order, not by waiting a
//! while: the test sends itself a marker after it, and signals from one
//! process to another keep their order, so the marker is the next of the
//! two kinds to arrive.

mod support;

use ember_runtime::{
    alias, alias_monitor, exit, link, monitor, receive_any, self_pid, send, send_alias, spawn,
    trap_exit, try_receive, unalias, Down, ExitReason,
};
use support::{down_of, exit_from, recv, runtime, wait_forever, WAIT};

/// Sent by the test to itself, after what must not arrive.
struct Marker;

/// Sends `Marker` to the caller and asserts that it is the first message of
/// type `M` or `Marker` to arrive: nothing of type `M` came before it.
async fn assert_no_earlier<M: Send + 'static>(what: &str) {
    send(self_pid(), Marker);
    let first = receive_any(|m| m.is::<M>() || m.is::<Marker>())
        .timeout(WAIT)
        .await
        .expect("the marker within the wait limit");
    assert!(first.is::<Marker>(), "{what}");
}

#[test]
fn an_alias_delivers_until_unaliased() {
    runtime().block_on(async {
        let me = self_pid();
        let a = alias();
        // From another process, as a reply would come.
        spawn(async move {
            send_alias(a, 1u32);
            send(me, "sent");
        });
        assert_eq!(recv::<&str>().await, "sent");
        assert_eq!(recv::<u32>().await, 1);
        assert!(unalias(a));
        assert!(!unalias(a), "already inactive");
        send_alias(a, 2u32);
        assert_no_earlier::<u32>("a message through an inactive alias arrived").await;
    });
}

#[test]
fn a_reply_demonitor_alias_lets_one_message_through_and_removes_its_monitor() {
    runtime().block_on(async {
        let server = spawn(wait_forever());
        let watch = monitor(server);
        alias_monitor(watch);
        let tag = watch.reference();
        send_alias(tag, 7u32);
        send_alias(tag, 8u32);
        assert_eq!(recv::<u32>().await, 7);
        assert_no_earlier::<u32>("a second message through a reply-demonitor alias arrived").await;
        // The monitor went with the first message: the server's death
        // fires only a monitor made afterwards. Its monitors fire before its
        // links (§9.4), so once the EXIT of the link is here, every `Down`
        // of the death is here too.
        trap_exit(true);
        link(server).expect("the server is alive");
        let other = monitor(server);
        exit(server, ExitReason::Kill);
        exit_from(server).await;
        let down = try_receive::<Down>().expect("the new monitor's Down");
        assert_eq!(down.monitor, other, "only the new monitor fires");
        assert!(
            try_receive::<Down>().is_none(),
            "the monitor taken by the alias fired"
        );
    });
}

#[test]
fn an_alias_of_a_dead_process_drops_messages() {
    runtime().block_on(async {
        let me = self_pid();
        let child = spawn(async move {
            send(me, alias());
            wait_forever().await;
        });
        let a: ember_runtime::Ref = recv().await;
        let watch = monitor(child);
        exit(child, ExitReason::Kill);
        down_of(watch).await;
        send_alias(a, 1u32); // dropped: no one to deliver to, no panic
        assert!(!ember_runtime::is_alive(child));
    });
}
