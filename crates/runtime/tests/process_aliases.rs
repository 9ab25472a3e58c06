//! Process aliases (`docs/semantics.md`, "Distribution"): a message through
//! an active alias arrives, through an inactive one it is dropped, and a
//! reply-demonitor alias lets exactly one message through and takes its
//! monitor with it.

use std::time::Duration;

use ember_runtime::{
    alias, alias_monitor, exit, monitor, receive, self_pid, send, send_alias, spawn, unalias, Down,
    ExitReason, Runtime,
};

#[test]
fn an_alias_delivers_until_unaliased() {
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    rt.block_on(async {
        let me = self_pid();
        let a = alias();
        // From another process, as a reply would come.
        spawn(async move {
            send_alias(a, 1u32);
            send(me, "sent");
        });
        assert_eq!(receive::<&str>().await, "sent");
        assert_eq!(
            receive::<u32>().timeout(Duration::from_secs(5)).await,
            Some(1)
        );
        assert!(unalias(a));
        assert!(!unalias(a), "already inactive");
        send_alias(a, 2u32);
        assert_eq!(
            receive::<u32>().timeout(Duration::from_millis(50)).await,
            None
        );
    });
}

#[test]
fn a_reply_demonitor_alias_lets_one_message_through_and_removes_its_monitor() {
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    rt.block_on(async {
        let server = spawn(async {
            receive::<()>().await;
        });
        let watch = monitor(server);
        alias_monitor(watch);
        let tag = watch.reference();
        send_alias(tag, 7u32);
        send_alias(tag, 8u32);
        assert_eq!(
            receive::<u32>().timeout(Duration::from_secs(5)).await,
            Some(7)
        );
        assert_eq!(
            receive::<u32>().timeout(Duration::from_millis(50)).await,
            None
        );
        // The monitor went with the first message: the server's death
        // sends no Down.
        exit(server, ExitReason::Kill);
        let other = monitor(server);
        let down: Down = receive().timeout(Duration::from_secs(5)).await.unwrap();
        assert_eq!(down.monitor, other, "only the new monitor fires");
        assert!(receive::<Down>()
            .timeout(Duration::from_millis(50))
            .await
            .is_none());
    });
}

#[test]
fn an_alias_of_a_dead_process_drops_messages() {
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    rt.block_on(async {
        let me = self_pid();
        let child = spawn(async move {
            send(me, alias());
            receive::<()>().await;
        });
        let a: ember_runtime::Ref = receive().await;
        let watch = monitor(child);
        exit(child, ExitReason::Kill);
        let _: Down = receive().matching(move |d: &Down| d.monitor == watch).await;
        send_alias(a, 1u32); // dropped: no one to deliver to, no panic
        assert!(!ember_runtime::is_alive(child));
    });
}
