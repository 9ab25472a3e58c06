//! The order of a death's signals to one receiver (`docs/semantics.md`
//! §3.4, §9.4): a process linked to and monitoring a process that dies is
//! killed by the link's exit signal before the `Down` reaches it, so a
//! non-trapping one never acts on that `Down`, even while it is running on
//! another scheduler thread when the death happens. A trapping one finds
//! the `Exit` before the `Down`.
//!
//! The peer spins inside one poll, looking at its mailbox, while the other
//! process dies on the other scheduler thread; it must see itself
//! terminated (`should_stop`) and never receive the `Down`. With the `Down`
//! sent before the link signal, the peer catches it within a few rounds
//! (debug build, 2 cores: at rounds 2, 9 and 15 of three runs). A peer
//! killed by the link holds no monitor any more, so the `Down` never reaches
//! it at all.

mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ember_runtime::{
    link, monitor, receive, self_pid, send, should_stop, sleep, spawn, trap_exit, try_receive,
    Down, Exit, ExitReason,
};
use support::{down_of, recv, runtime, wait_for_stop, Stop, WAIT};

/// Rounds of the race.
const ROUNDS: usize = 200;

const KILLED_FIRST: u8 = 1;
const SAW_THE_DOWN: u8 = 2;
const GAVE_UP: u8 = 3;
const RECEIVED_AFTER_ITS_DEATH: u8 = 4;

fn crash() -> ExitReason {
    ExitReason::error("crash")
}

#[test]
fn a_linked_death_kills_a_running_peer_before_its_down_arrives() {
    runtime().block_on(async {
        let mut killed = 0;
        for round in 0..ROUNDS {
            let me = self_pid();
            let dying = spawn(async {
                wait_for_stop().await;
                crash()
            });
            // What the peer saw, in order; the channel closes when its body
            // is dropped.
            let (seen, outcomes) = mpsc::channel::<u8>();
            let peer = spawn(async move {
                link(dying).expect("the dying process is alive");
                monitor(dying);
                send(me, "ready");
                // One poll, spinning: the death lands while it runs.
                let deadline = Instant::now() + WAIT;
                let outcome = loop {
                    if should_stop() {
                        break KILLED_FIRST;
                    }
                    if try_receive::<Down>().is_some() {
                        break SAW_THE_DOWN;
                    }
                    if Instant::now() > deadline {
                        break GAVE_UP;
                    }
                    std::hint::spin_loop();
                };
                let _ = seen.send(outcome);
                if outcome == KILLED_FIRST {
                    // Terminated: a receive hands out nothing more, not even
                    // the `Down` that follows the link signal into the
                    // mailbox (given a moment to arrive, still in this poll).
                    let settle = Instant::now() + Duration::from_millis(2);
                    while Instant::now() < settle {
                        std::hint::spin_loop();
                    }
                    if try_receive::<Down>().is_some() {
                        let _ = seen.send(RECEIVED_AFTER_ITS_DEATH);
                    }
                    let _ = receive::<Down>().await;
                    let _ = seen.send(RECEIVED_AFTER_ITS_DEATH);
                }
                ExitReason::Normal
            });
            let peer_monitor = monitor(peer);
            assert_eq!(recv::<&str>().await, "ready", "round {round}");
            send(dying, Stop);
            // The peer is dead for everyone (its `Down` comes) while its
            // poll still runs: wait for its body to go too.
            let down = down_of(peer_monitor).await;
            let mut saw = Vec::new();
            let deadline = Instant::now() + WAIT;
            loop {
                match outcomes.try_recv() {
                    Ok(outcome) => saw.push(outcome),
                    Err(mpsc::TryRecvError::Disconnected) => break,
                    Err(mpsc::TryRecvError::Empty) => {
                        assert!(
                            Instant::now() < deadline,
                            "round {round}: the peer's body was never dropped"
                        );
                        sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            match saw.as_slice() {
                [KILLED_FIRST] => killed += 1,
                [SAW_THE_DOWN] => {
                    panic!("round {round}: the peer received the Down before the link killed it")
                }
                [GAVE_UP] => panic!("round {round}: the peer was never killed"),
                [KILLED_FIRST, RECEIVED_AFTER_ITS_DEATH, ..] => {
                    panic!("round {round}: a terminated peer still received its Down")
                }
                other => panic!("round {round}: the peer saw {other:?}, {down:?}"),
            }
            assert_eq!(down.reason, crash(), "round {round}: the link's reason");
        }
        assert_eq!(killed, ROUNDS);
    });
}

#[test]
fn a_trapping_peer_gets_the_exit_before_the_down() {
    runtime().block_on(async {
        trap_exit(true);
        for round in 0..ROUNDS {
            let dying = spawn(async {
                wait_for_stop().await;
                crash()
            });
            link(dying).expect("the dying process is alive");
            let reference = monitor(dying);
            send(dying, Stop);
            let first = ember_runtime::receive_any(|m| m.is::<Exit>() || m.is::<Down>())
                .timeout(WAIT)
                .await
                .expect("a signal of the death within the wait limit");
            assert!(
                first.is::<Exit>(),
                "round {round}: the Down came before the Exit"
            );
            let down = down_of(reference).await;
            assert_eq!(down.reason, crash());
        }
    });
}
