//! Receiving: selective by type and predicate, arrival order kept for what is
//! left, `receive_any`, timeouts, `after 0`, `try_receive`, `sleep`
//! (docs/semantics.md §4).

mod support;

use std::time::{Duration, Instant};

use ember_runtime::introspect::process_info;
use ember_runtime::{
    receive, receive_any, self_pid, send, sleep, spawn, spawn_monitor, try_receive, Handle,
};

use support::{down_of, recv, runtime, Stop, WAIT};

fn drain<M: Send + 'static>() -> Vec<M> {
    std::iter::from_fn(try_receive::<M>).collect()
}

fn mailbox_len() -> usize {
    process_info(self_pid()).expect("alive").mailbox_len
}

// §4.1: receive takes the first message of the wanted type and leaves the
// others where they were.
#[test]
fn receive_takes_the_first_message_of_the_wanted_type() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        send(me, 1u32);
        send(me, String::from("a"));
        send(me, 2u32);
        send(me, String::from("b"));
        assert_eq!(recv::<String>().await, "a");
        assert_eq!(recv::<u32>().await, 1);
        assert_eq!(recv::<String>().await, "b");
        assert_eq!(recv::<u32>().await, 2);
        assert_eq!(mailbox_len(), 0);
    });
}

// §4.2, §4.3: a predicate picks the first match; the rest keep their order.
#[test]
fn receive_with_a_predicate_takes_the_first_match_and_leaves_the_rest_in_order() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        for n in 1..=10u32 {
            send(me, n);
        }
        let picked = receive::<u32>()
            .matching(|n| *n > 5 && n % 2 == 0)
            .timeout(WAIT)
            .await;
        assert_eq!(picked, Some(6));
        assert_eq!(drain::<u32>(), vec![1, 2, 3, 4, 5, 7, 8, 9, 10]);
    });
}

// §4.3: while a receive waits, messages it does not want pile up in arrival
// order and are all there afterwards.
#[test]
fn a_waiting_receive_skips_messages_that_arrive_and_do_not_match() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        spawn(async move {
            for n in 0..100u32 {
                send(me, n);
                if n % 10 == 0 {
                    ember_runtime::yield_point().await;
                }
            }
            send(me, Stop);
        });
        assert_eq!(recv::<Stop>().await, Stop);
        assert_eq!(drain::<u32>(), (0..100).collect::<Vec<_>>());
    });
}

// §4.3: a message of a type nobody asks for stays in the mailbox.
#[test]
fn a_message_of_an_unexpected_type_stays_in_the_mailbox() {
    let rt = runtime();
    rt.block_on(async {
        send(self_pid(), String::from("unexpected"));
        let got = receive::<u32>().timeout(Duration::from_millis(20)).await;
        assert_eq!(got, None);
        assert_eq!(mailbox_len(), 1);
        assert_eq!(try_receive::<u64>(), None, "no conversion between types");
        assert_eq!(recv::<String>().await, "unexpected");
        assert_eq!(mailbox_len(), 0);
    });
}

// §4.4: receive_any waits for several types at once and leaves the others.
#[test]
fn receive_any_waits_for_several_types_at_once() {
    #[derive(Debug, PartialEq)]
    struct A;
    #[derive(Debug, PartialEq)]
    struct B;
    #[derive(Debug, PartialEq)]
    struct C;
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        send(me, C);
        send(me, B);
        send(me, A);
        let wanted = |m: &ember_runtime::Envelope| m.is::<A>() || m.is::<B>();
        let first = receive_any(wanted).timeout(WAIT).await.expect("a message");
        assert!(first.is::<B>());
        assert_eq!(first.downcast::<B>().ok(), Some(B));
        let second = receive_any(wanted).timeout(WAIT).await.expect("a message");
        assert_eq!(second.downcast_ref::<A>(), Some(&A));
        assert!(receive_any(wanted).timeout(Duration::ZERO).await.is_none());
        assert_eq!(try_receive::<C>(), Some(C));
    });
}

// §4.5: a receive with a timeout gives up no earlier than the timeout.
#[test]
fn receive_timeout_gives_up_no_earlier_than_the_timeout() {
    let rt = runtime();
    rt.block_on(async {
        for ms in [1u64, 10, 50] {
            let timeout = Duration::from_millis(ms);
            let started = Instant::now();
            assert_eq!(receive::<u32>().timeout(timeout).await, None);
            let waited = started.elapsed();
            assert!(waited >= timeout, "{waited:?} < {timeout:?}");
            assert!(waited < timeout + Duration::from_secs(5), "{waited:?}");
        }
    });
}

// §4.5: a message that arrives in time is returned, without waiting for the
// timeout to pass.
#[test]
fn receive_timeout_returns_a_message_that_arrives_in_time() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let started = Instant::now();
        spawn(async move { send(me, 5u32) });
        let got = receive::<u32>().timeout(Duration::from_secs(60)).await;
        assert_eq!(got, Some(5));
        assert!(started.elapsed() < Duration::from_secs(30));
        // A timeout too large to represent waits as long as it takes.
        spawn(async move { send(me, 6u32) });
        assert_eq!(receive::<u32>().timeout(Duration::MAX).await, Some(6));
    });
}

// §4.6: a zero timeout looks at the mailbox once and does not wait.
#[test]
fn zero_timeout_checks_the_mailbox_once_without_waiting() {
    let rt = runtime();
    rt.block_on(async {
        assert_eq!(receive::<u32>().timeout(Duration::ZERO).await, None);
        send(self_pid(), 9u32);
        assert_eq!(receive::<u32>().timeout(Duration::ZERO).await, Some(9));
        let none = receive::<u32>()
            .matching(|n| *n == 1)
            .timeout(Duration::ZERO)
            .await;
        assert_eq!(none, None);
    });
}

// §4.6, §13.2: `after 0` sees the mailbox even when the reduction budget of the
// slice is used up (it must not come back empty just because it had to yield).
#[test]
fn zero_timeout_sees_the_mailbox_even_when_the_slice_is_used_up() {
    let rt = runtime();
    rt.block_on(async {
        let (dead, watch) = spawn_monitor(async {});
        down_of(watch).await;
        for round in 0..10u32 {
            send(self_pid(), round);
            // Each send costs a reduction and never yields: this spends the
            // whole budget of the slice.
            for _ in 0..5_000 {
                send(dead, ());
            }
            assert_eq!(receive::<u32>().timeout(Duration::ZERO).await, Some(round));
        }
    });
}

// §4.6: try_receive never waits: None on an empty mailbox (or no message of
// that type), the message otherwise.
#[test]
fn try_receive_takes_a_message_if_there_is_one_and_never_waits() {
    let rt = runtime();
    rt.block_on(async {
        assert_eq!(try_receive::<u32>(), None);
        send(self_pid(), String::from("other type"));
        assert_eq!(try_receive::<u32>(), None);
        send(self_pid(), 3u32);
        assert_eq!(try_receive::<u32>(), Some(3));
        assert_eq!(try_receive::<String>().as_deref(), Some("other type"));
    });
}

// §4.7: sleep waits at least as long as asked and leaves messages alone.
#[test]
fn sleep_leaves_messages_in_the_mailbox() {
    let rt = runtime();
    rt.block_on(async {
        send(self_pid(), 1u32);
        send(self_pid(), Stop);
        let started = Instant::now();
        sleep(Duration::from_millis(20)).await;
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(mailbox_len(), 2);
        assert_eq!(try_receive::<u32>(), Some(1));
        assert_eq!(try_receive::<Stop>(), Some(Stop));
    });
}

// §4.5, §12.5: a receive that ends before its timeout leaves no timer behind.
#[test]
fn a_receive_that_ends_early_leaves_no_timer_behind() {
    let rt = runtime();
    rt.block_on(async {
        let handle = Handle::current();
        let before = handle.runtime_info().timers;
        let me = self_pid();
        spawn(async move { send(me, 1u32) });
        assert_eq!(
            receive::<u32>().timeout(Duration::from_secs(3600)).await,
            Some(1)
        );
        assert_eq!(handle.runtime_info().timers, before);
    });
}

// §4.2: a predicate may itself send, even to its own process; what it sends
// arrives after what was already there.
#[test]
fn a_predicate_may_send_to_its_own_process() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        send(me, 1u32);
        send(me, 2u32);
        let got = receive::<u32>()
            .matching(move |n| {
                send(me, format!("looked at {n}"));
                *n == 2
            })
            .timeout(WAIT)
            .await;
        assert_eq!(got, Some(2));
        assert_eq!(try_receive::<u32>(), Some(1));
        assert_eq!(
            drain::<String>(),
            vec!["looked at 1".to_string(), "looked at 2".to_string()]
        );
    });
}

// §4.1: receiving outside a process is a programming error and panics.
#[test]
fn receiving_outside_a_process_panics() {
    let outcome = std::panic::catch_unwind(try_receive::<u32>);
    let payload = outcome.expect_err("try_receive outside a process must panic");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("inside an Ember process"), "{message}");
}
