//! A long chain of linked processes (docs/semantics.md §7.4, §9.1).
//!
//! Kept alone in its own test binary: if propagation along links recursed on
//! the stack, a long chain would overflow it and abort the whole binary.

mod support;

use std::time::Duration;

use ember_runtime::{
    exit, monitor, receive, self_pid, send, spawn, spawn_link, Down, ExitReason, Pid, Runtime,
};

use support::{BoxedBody, Never};

/// Longer than `support::WAIT`: a hundred thousand processes must die first.
const WAIT: Duration = Duration::from_secs(20);

/// Processes in the chain. Erlang handles chains of any length: signals are
/// asynchronous, so propagation needs no stack.
const LENGTH: usize = 100_000;

/// A chain of `left` more processes, each linked to the one before it; the
/// last reports its pid to `tester`.
fn chain(left: usize, tester: Pid) -> BoxedBody {
    Box::pin(async move {
        if left == 0 {
            send(tester, self_pid());
        } else {
            spawn_link(chain(left - 1, tester));
        }
        receive::<Never>().await;
    })
}

// §7.4, §9.1: killing the head of a chain of linked processes kills every
// process in it, however long the chain, and the runtime survives.
#[test]
fn killing_the_head_of_a_long_link_chain_kills_every_process_in_it() {
    // The kill's cascade through 100,000 links runs inside one poll, long
    // enough for the watchdog to demote its thread: beside a CPU hog outside
    // the runtime, the starvation floor keeps it progressing.
    let rt = Runtime::builder().schedulers(2).build().expect("a runtime");
    rt.block_on(async {
        let head = spawn(chain(LENGTH - 1, self_pid()));
        let tail: Pid = receive().timeout(WAIT).await.expect("the chain was built");
        let watch = monitor(tail);
        exit(head, ExitReason::Kill);
        let down = receive::<Down>()
            .matching(move |d| d.monitor == watch)
            .timeout(WAIT)
            .await
            .expect("the tail died");
        assert_eq!(down.reason, ExitReason::Killed);
    });
}
