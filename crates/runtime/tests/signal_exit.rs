//! Exit signals and exit reasons: `exit/2`, `kill` versus `killed`, `normal`,
//! `trap_exit`, `exit_self` (docs/semantics.md §5 and §6).
//!
//! Several cases are ports of erts' `emulator/test/process_SUITE.erl`
//! (`t_exit_2_*`, `self_exit`, `*_suicide_exit`, `trap_exit_badarg`,
//! `exit_and_timeout`, `exit_twice`) and `signal_SUITE.erl` (`xm_sig_order`);
//! each says which.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_runtime::introspect::process_info;
use ember_runtime::{
    exit, exit_self, is_alive, monitor, receive, self_pid, send, spawn_link, spawn_monitor,
    trap_exit, try_receive, yield_point, Down, Exit, ExitReason, Priority, Spawn, Status,
};

use support::{down_of, exit_from, recv, runtime, wait_forever, Never, WAIT};

/// A process that keeps working (and yielding) for ever.
async fn spin_forever() {
    loop {
        yield_point().await;
    }
}

/// A reason that carries a lot of data (process_SUITE's `kb_128()`).
fn big_reason(tag: &str) -> ExitReason {
    ExitReason::error(format!("{tag}:{}", "x".repeat(128 * 1024)))
}

// §6.1: exit/2 with an abnormal reason ends a process that does not trap exits.
// Port of process_SUITE:t_exit_2_other (the reason is large on purpose).
#[test]
fn exit_2_kills_a_linked_process_and_the_link_reports_the_reason() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        for round in 0..10 {
            let child = spawn_link(wait_forever());
            let reason = big_reason(&format!("garbage {round}"));
            exit(child, reason.clone());
            let exit_message = exit_from(child).await;
            assert_eq!(exit_message.reason, reason);
            assert!(!is_alive(child));
        }
    });
}

// §6.3: a `normal` exit signal from another process is ignored.
// Port of process_SUITE:t_exit_2_other_normal.
#[test]
fn exit_2_with_normal_does_not_kill_another_process() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        let child = spawn_link(wait_forever());
        exit(child, ExitReason::Normal);
        // exit/2 is synchronous in Ember (§6.1): had it killed the child, its
        // Exit would be in our mailbox already.
        assert!(try_receive::<Exit>().is_none());
        assert!(is_alive(child));
        assert!(process_info(child).is_some());
        exit(child, ExitReason::Kill);
        assert_eq!(exit_from(child).await.reason, ExitReason::Killed);
    });
}

// §6.4: an exit signal a trapping process sends itself becomes an Exit message.
// Port of process_SUITE:self_exit.
#[test]
fn exit_2_to_self_while_trapping_becomes_an_exit_message() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        let me = self_pid();
        for round in 0..200 {
            let reason = ExitReason::error(format!("garbage {round}"));
            exit(me, reason.clone());
            let message = exit_from(me).await;
            assert_eq!(message.reason, reason);
        }
        assert!(is_alive(me));
    });
}

// §6.3: exit(self(), normal) ends a process that does not trap exits.
// Port of process_SUITE:normal_suicide_exit.
#[test]
fn exit_2_normal_to_self_ends_a_process_that_does_not_trap() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        let child = spawn_link(async {
            exit(self_pid(), ExitReason::Normal);
            wait_forever().await;
            ExitReason::error("still running after exit(self(), normal)")
        });
        assert_eq!(exit_from(child).await.reason, ExitReason::Normal);
        assert!(try_receive::<Exit>().is_none());
    });
}

// §6.1: exit(self(), Reason) is the same as ending with Reason.
// Port of process_SUITE:abnormal_suicide_exit.
#[test]
fn exit_2_to_self_with_a_reason_ends_the_process_with_that_reason() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        let reason = big_reason("suicide");
        let sent = reason.clone();
        let child = spawn_link(async move {
            exit(self_pid(), sent);
            wait_forever().await;
        });
        assert_eq!(exit_from(child).await.reason, reason);
    });
}

// §6.1, §9.1: the reason of exit(self(), R) cannot be overridden by what the
// body does or returns afterwards. Port of process_SUITE:t_exit_2_catch (Rust
// has no `catch`; returning normally is the closest way to try).
#[test]
fn returning_normally_after_exit_2_to_self_does_not_change_the_reason() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        let child = spawn_link(async {
            exit(self_pid(), ExitReason::error("die"));
            ExitReason::Normal
        });
        assert_eq!(exit_from(child).await.reason, ExitReason::error("die"));
        let child = spawn_link(async {
            exit(self_pid(), ExitReason::error("die"));
            Ok::<(), String>(())
        });
        assert_eq!(exit_from(child).await.reason, ExitReason::error("die"));
    });
}

// §6.4, §5.2: a trapping process receives the crash reason of a linked process.
// Port of process_SUITE:trap_exit_badarg and trap_exit_badarg_in_bif.
#[test]
fn trapping_process_receives_the_error_of_a_crashed_linked_process() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        for _ in 0..10 {
            let child =
                spawn_link(async { Err::<(), _>(format!("badarg: abs({})", "x".repeat(1024))) });
            let reason = exit_from(child).await.reason;
            assert!(matches!(&reason, ExitReason::Error(m) if m.starts_with("badarg: abs(")));
        }
    });
}

// §6.1, §12.5: an exit signal reaches a process waiting in a receive with a
// timeout, and the timer that would have woken it does no harm afterwards.
// Port of process_SUITE:exit_and_timeout (times scaled down).
#[test]
fn exit_signal_reaches_a_process_waiting_in_a_receive_with_timeout() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        let low = spawn_link(async {
            let _ = receive::<Never>().timeout(Duration::from_secs(60)).await;
            let _ = receive::<u64>().timeout(Duration::from_secs(1)).await;
        });
        let high = Spawn::new()
            .priority(Priority::High)
            .link()
            .spawn(async move {
                // Strike once `low` waits in its receive with a timeout.
                let deadline = Instant::now() + WAIT;
                while process_info(low).map(|i| i.status) != Some(Status::Waiting) {
                    assert!(Instant::now() < deadline, "{low} never waited");
                    yield_point().await;
                }
                exit(low, ExitReason::error("you are dead"));
                for _ in 0..100_000 {
                    yield_point().await;
                }
            })
            .expect("spawn")
            .pid;
        let first = receive::<Exit>().timeout(WAIT).await.expect("an Exit");
        let second = receive::<Exit>().timeout(WAIT).await.expect("an Exit");
        let mut got = [first, second];
        got.sort_by_key(|e| e.from != low);
        assert_eq!(got[0].from, low);
        assert_eq!(got[0].reason, ExitReason::error("you are dead"));
        assert_eq!(got[1].from, high);
        assert_eq!(got[1].reason, ExitReason::Normal);
    });
}

// §6.1, §9.1: only the first of two exit signals counts.
// Port of process_SUITE:exit_twice.
#[test]
fn only_the_first_of_two_exit_signals_counts() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        let low = spawn_link(spin_forever());
        let high = Spawn::new()
            .priority(Priority::High)
            .link()
            .spawn(async move {
                exit(low, ExitReason::error("first"));
                exit(low, ExitReason::error("second"));
            })
            .expect("spawn")
            .pid;
        assert_eq!(exit_from(low).await.reason, ExitReason::error("first"));
        assert_eq!(exit_from(high).await.reason, ExitReason::Normal);
        assert!(try_receive::<Exit>().is_none());
    });
}

// §6.2: `kill` cannot be trapped; the victim dies with `killed`.
#[test]
fn exit_kill_cannot_be_trapped_and_the_victim_dies_with_killed() {
    let rt = runtime();
    rt.block_on(async {
        let victim = Spawn::new()
            .trap_exit(true)
            .spawn(wait_forever())
            .expect("spawn")
            .pid;
        let watch = monitor(victim);
        exit(victim, ExitReason::Kill);
        assert!(!is_alive(victim));
        assert_eq!(down_of(watch).await.reason, ExitReason::Killed);
    });
}

// §6.2: exit(self(), kill) kills with `killed`, trapping or not.
#[test]
fn exit_kill_to_self_kills_with_killed_even_when_trapping() {
    let rt = runtime();
    rt.block_on(async {
        for trapping in [false, true] {
            let (child, watch) = spawn_monitor(async move {
                trap_exit(trapping);
                exit(self_pid(), ExitReason::Kill);
                wait_forever().await;
            });
            let down = down_of(watch).await;
            assert_eq!(down.pid, child);
            assert_eq!(down.reason, ExitReason::Killed);
        }
    });
}

// §6.2, §6.4: only `kill` is untrappable: `killed` sent with exit/2 is an
// ordinary reason and a trapping process receives it as a message.
#[test]
fn exit_with_reason_killed_is_trappable() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let trapper = Spawn::new()
            .trap_exit(true)
            .spawn(async move {
                let message: Exit = recv().await;
                send(me, message);
            })
            .expect("spawn")
            .pid;
        exit(trapper, ExitReason::Killed);
        let message: Exit = recv().await;
        assert_eq!(message.from, me);
        assert_eq!(message.reason, ExitReason::Killed);
    });
}

// §6.3, §6.4: `normal` sent to a trapping process becomes an Exit message.
#[test]
fn exit_2_normal_to_a_trapping_process_becomes_an_exit_message() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let trapper = Spawn::new()
            .trap_exit(true)
            .spawn(async move {
                let message: Exit = recv().await;
                send(me, message);
                wait_forever().await;
            })
            .expect("spawn")
            .pid;
        exit(trapper, ExitReason::Normal);
        let message: Exit = recv().await;
        assert_eq!(
            message,
            Exit {
                from: me,
                reason: ExitReason::Normal
            }
        );
        assert!(is_alive(trapper));
    });
}

// §6.4: trap_exit returns the previous value, and turning it off makes exit
// signals kill again.
#[test]
fn trap_exit_returns_the_previous_flag_and_can_be_turned_off() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let (child, watch) = spawn_monitor(async move {
            assert!(!trap_exit(true));
            assert!(trap_exit(true));
            send(me, "trapping");
            let first: Exit = recv().await;
            assert_eq!(first.reason, ExitReason::error("first"));
            assert!(trap_exit(false));
            send(me, "not trapping");
            wait_forever().await;
        });
        assert_eq!(recv::<&str>().await, "trapping");
        exit(child, ExitReason::error("first"));
        assert_eq!(recv::<&str>().await, "not trapping");
        exit(child, ExitReason::error("second"));
        assert_eq!(down_of(watch).await.reason, ExitReason::error("second"));
        assert_eq!(process_info(self_pid()).map(|i| i.trap_exit), Some(false));
    });
}

// §6.5: an exit signal to a dead pid does nothing (and does not fail).
#[test]
fn exit_to_a_dead_pid_does_nothing() {
    let rt = runtime();
    rt.block_on(async {
        let (dead, watch) = spawn_monitor(async {});
        down_of(watch).await;
        for reason in [
            ExitReason::Normal,
            ExitReason::Kill,
            ExitReason::error("late"),
        ] {
            exit(dead, reason);
        }
        assert!(!is_alive(dead));
        assert!(is_alive(self_pid()));
        assert!(try_receive::<Exit>().is_none());
        assert!(try_receive::<Down>().is_none());
    });
}

// §6.6: exit_self ends the process with its reason even when it traps exits,
// and code after it never runs.
#[test]
fn exit_self_ends_the_process_even_when_trapping_and_never_returns() {
    let rt = runtime();
    rt.block_on(async {
        let ran_on = Arc::new(AtomicBool::new(false));
        let flag = ran_on.clone();
        let (_, watch) = spawn_monitor(async move {
            trap_exit(true);
            exit_self(ExitReason::ShutdownWith("bye".into())).await;
            flag.store(true, Ordering::SeqCst);
        });
        let down = down_of(watch).await;
        assert_eq!(down.reason, ExitReason::ShutdownWith("bye".into()));
        assert!(!ran_on.load(Ordering::SeqCst));
    });
}

// §6.1, §3.4: messages sent before an exit signal are seen; messages sent after
// it never are. Port of signal_SUITE:xm_sig_order (local part).
#[test]
fn messages_sent_before_an_exit_signal_are_seen_and_later_ones_are_not() {
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Probe {
        MayReach,
        MayNotReach,
    }
    let rt = runtime();
    rt.block_on(async {
        for _ in 0..200 {
            let (target, watch) = spawn_monitor(async {
                loop {
                    match try_receive::<Probe>() {
                        Some(Probe::MayNotReach) => return ExitReason::error("bad signal order"),
                        Some(Probe::MayReach) => {}
                        None => yield_point().await,
                    }
                }
            });
            for _ in 0..3 {
                send(target, Probe::MayReach);
            }
            exit(target, ExitReason::error("good signal order"));
            for _ in 0..3 {
                send(target, Probe::MayNotReach);
            }
            assert_eq!(
                down_of(watch).await.reason,
                ExitReason::error("good signal order")
            );
        }
    });
}

// §6.7: an exit signal from outside any process (a Handle) with reason `normal`
// is ignored, as `normal` from any sender other than the target itself is.
#[test]
fn normal_exit_signal_from_a_handle_does_not_kill_the_process() {
    let rt = runtime();
    let handle = rt.handle().clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = handle.spawn(async move {
        wait_forever().await;
        let _ = tx.send(());
    });
    handle.exit(pid, ExitReason::Normal);
    assert!(
        handle.is_alive(pid),
        "exit(pid, normal) from a Handle killed the process"
    );
    handle.exit(pid, ExitReason::Kill);
    assert!(!handle.is_alive(pid));
    drop(rx);
}

// §6.7, §6.2: `kill` from a Handle kills with `killed`.
#[test]
fn kill_from_a_handle_kills_with_killed() {
    let rt = runtime();
    let handle = rt.handle().clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let victim = handle.spawn(wait_forever());
    handle.spawn(async move {
        let watch = monitor(victim);
        let _ = tx.send("watching".to_string());
        let down = down_of(watch).await;
        let _ = tx.send(down.reason.to_string());
    });
    assert_eq!(rx.recv_timeout(WAIT).as_deref(), Ok("watching"));
    handle.exit(victim, ExitReason::Kill);
    assert!(!handle.is_alive(victim));
    assert_eq!(rx.recv_timeout(WAIT).as_deref(), Ok("killed"));
}

// §5.1: reasons print the way OTP prints them.
#[test]
fn exit_reasons_print_like_erlang_terms() {
    let cases = [
        (ExitReason::Normal, "normal"),
        (ExitReason::Shutdown, "shutdown"),
        (
            ExitReason::ShutdownWith("app_stop".into()),
            "{shutdown,app_stop}",
        ),
        (ExitReason::Kill, "kill"),
        (ExitReason::Killed, "killed"),
        (ExitReason::NoProc, "noproc"),
        (ExitReason::NoConnection, "noconnection"),
        (ExitReason::Panic("boom".into()), "{panic,\"boom\"}"),
        (ExitReason::error("bad input"), "{error,\"bad input\"}"),
    ];
    for (reason, printed) in cases {
        assert_eq!(reason.to_string(), printed);
        assert_eq!(format!("{reason:?}"), printed);
    }
    assert!(ExitReason::Normal.is_normal());
    assert!(!ExitReason::Shutdown.is_normal());
    for orderly in [
        ExitReason::Normal,
        ExitReason::Shutdown,
        ExitReason::ShutdownWith("x".into()),
    ] {
        assert!(orderly.is_orderly());
    }
    for abnormal in [
        ExitReason::Kill,
        ExitReason::Killed,
        ExitReason::NoProc,
        ExitReason::error("e"),
        ExitReason::Panic("p".into()),
    ] {
        assert!(!abnormal.is_orderly());
    }
}

// §5.2: every reason but `normal` kills a linked process that does not trap
// exits, and the linked process dies with the same reason (`kill` through a
// link included, §7.5).
#[test]
fn every_reason_but_normal_propagates_through_a_link_unchanged() {
    let rt = runtime();
    rt.block_on(async {
        for reason in [
            ExitReason::Shutdown,
            ExitReason::ShutdownWith("detail".into()),
            ExitReason::Kill,
            ExitReason::Killed,
            ExitReason::NoProc,
            ExitReason::NoConnection,
            ExitReason::Panic("p".into()),
            ExitReason::error("e"),
        ] {
            let sent = reason.clone();
            let (middle, watch) = spawn_monitor(async move {
                spawn_link(async move { sent });
                wait_forever().await;
            });
            let down = down_of(watch).await;
            assert_eq!(down.pid, middle);
            assert_eq!(down.reason, reason);
        }
    });
}
