//! Links: propagation, `normal`, bidirectionality, idempotence, linking to a
//! dead process, the unlink guarantee, and `kill` through a link
//! (docs/semantics.md §7).
//!
//! The `kill` chain cases are a port of erts' `emulator/test/signal_SUITE.erl`
//! `kill2killed`.

mod support;

use std::time::Duration;

use ember_runtime::introspect::process_info;
use ember_runtime::{
    exit, exit_self, is_alive, link, monitor, receive, self_pid, send, spawn, spawn_link,
    spawn_monitor, trap_exit, try_receive, unlink, yield_point, Down, Exit, ExitReason, LinkError,
    Pid, Spawn,
};

use support::{down_of, exit_from, recv, runtime, wait_forever, BoxedBody, WAIT};

#[derive(Debug, PartialEq, Eq)]
struct Ping(Pid);
#[derive(Debug, PartialEq, Eq)]
struct Pong;

/// Answers pings until it dies.
async fn ponger() {
    loop {
        let Ping(from) = receive::<Ping>().await;
        send(from, Pong);
    }
}

fn links_of(pid: Pid) -> Vec<Pid> {
    process_info(pid).expect("alive").links
}

// §7.4, §5.2: an abnormal exit kills a linked process that does not trap exits,
// with the same reason.
#[test]
fn abnormal_exit_kills_a_linked_process_that_does_not_trap_exits() {
    let rt = runtime();
    rt.block_on(async {
        let (middle, watch) = spawn_monitor(async {
            spawn_link(async { Err::<(), _>("boom") });
            wait_forever().await;
        });
        let down = down_of(watch).await;
        assert_eq!(down.pid, middle);
        assert_eq!(down.reason, ExitReason::error("boom"));
    });
}

// §7.4: a `normal` exit does not kill a linked process; the link is gone
// afterwards and the survivor keeps working.
#[test]
fn normal_exit_does_not_kill_linked_process() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let (survivor, watch) = spawn_monitor(async move {
            let child = spawn_link(async {});
            let child_watch = monitor(child);
            down_of(child_watch).await;
            // The link signal may still be on its way: it has been received
            // once the link is gone from our side.
            while links_of(self_pid()).contains(&child) {
                yield_point().await;
            }
            send(me, "survived");
            ponger().await;
        });
        assert_eq!(recv::<&str>().await, "survived");
        send(survivor, Ping(me));
        assert_eq!(recv::<Pong>().await, Pong);
        assert!(is_alive(survivor));
        assert!(try_receive::<Down>().is_none());
        exit(survivor, ExitReason::Kill);
        assert_eq!(down_of(watch).await.reason, ExitReason::Killed);
    });
}

// §7.4, §6.4: a trapping process receives a linked process's normal exit as an
// Exit message.
#[test]
fn trapping_process_receives_normal_exit_of_linked_process_as_exit_message() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        let child = spawn_link(async {});
        assert_eq!(
            exit_from(child).await,
            Exit {
                from: child,
                reason: ExitReason::Normal
            }
        );
        assert!(links_of(self_pid()).is_empty());
    });
}

// §7.1: a link made by either side carries signals both ways.
#[test]
fn links_are_bidirectional() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        for kill_the_linker in [true, false] {
            let other = spawn(wait_forever());
            let linker = spawn(async move {
                link(other).expect("other is alive");
                send(me, "linked");
                wait_forever().await;
            });
            assert_eq!(recv::<&str>().await, "linked");
            assert_eq!(links_of(other), vec![linker]);
            assert_eq!(links_of(linker), vec![other]);
            let (victim, partner) = if kill_the_linker {
                (linker, other)
            } else {
                (other, linker)
            };
            // exit/2 runs the whole termination, links included, before it
            // returns (§9.1), so the partner is already dead.
            exit(victim, ExitReason::error("gone"));
            assert!(!is_alive(partner));
        }
    });
}

// §7.1, §7.2: linking twice makes one link, which one unlink removes.
#[test]
fn link_is_idempotent_and_one_unlink_removes_it() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        let me = self_pid();
        let other = spawn(wait_forever());
        link(other).expect("alive");
        link(other).expect("alive");
        assert_eq!(links_of(me), vec![other]);
        assert_eq!(links_of(other), vec![me]);
        unlink(other);
        assert!(links_of(me).is_empty());
        assert!(links_of(other).is_empty());
        exit(other, ExitReason::error("after unlink"));
        assert!(try_receive::<Exit>().is_none());
    });
}

// §7.1: linking to oneself does nothing.
#[test]
fn linking_to_oneself_does_nothing() {
    let rt = runtime();
    rt.block_on(async {
        assert_eq!(link(self_pid()), Ok(()));
        assert!(links_of(self_pid()).is_empty());
        unlink(self_pid());
        assert!(is_alive(self_pid()));
    });
}

// §7.3: linking to a dead process fails with noproc; a process that does not
// trap exits gets no message and lives on.
#[test]
fn linking_to_a_dead_process_fails_with_noproc() {
    let rt = runtime();
    rt.block_on(async {
        let (dead, watch) = spawn_monitor(async {});
        down_of(watch).await;
        let error = link(dead).expect_err("the process is dead");
        assert_eq!(error, LinkError::NoProc(dead));
        assert_eq!(error.to_string(), format!("noproc: {dead} is not alive"));
        assert!(links_of(self_pid()).is_empty());
        assert!(try_receive::<Exit>().is_none());
        assert!(is_alive(self_pid()));
    });
}

// §7.3: when trapping exits, linking to a dead process also delivers
// {'EXIT', Pid, noproc}.
#[test]
fn linking_to_a_dead_process_while_trapping_also_delivers_a_noproc_exit() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        let (dead, watch) = spawn_monitor(async {});
        down_of(watch).await;
        assert_eq!(link(dead), Err(LinkError::NoProc(dead)));
        assert_eq!(
            try_receive::<Exit>(),
            Some(Exit {
                from: dead,
                reason: ExitReason::NoProc
            })
        );
    });
}

// §7.2: after unlink returns, no exit signal from that link reaches the caller,
// whichever side unlinks.
#[test]
fn unlink_guarantees_no_exit_signal_from_that_link_afterwards() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        trap_exit(true);
        // The caller unlinks.
        let other = spawn_link(wait_forever());
        unlink(other);
        exit(other, ExitReason::error("crash"));
        assert!(try_receive::<Exit>().is_none());
        // The other side unlinks.
        let other = spawn_link(async move {
            unlink(me);
            send(me, "unlinked");
            wait_forever().await;
        });
        assert_eq!(recv::<&str>().await, "unlinked");
        exit(other, ExitReason::error("crash"));
        assert!(try_receive::<Exit>().is_none());
        // A process that does not trap exits survives too.
        trap_exit(false);
        let other = spawn_link(wait_forever());
        unlink(other);
        exit(other, ExitReason::error("crash"));
        assert!(is_alive(me));
    });
}

// §7.2: unlinking something that is not linked, or dead, does nothing.
#[test]
fn unlink_of_a_pid_that_is_not_linked_or_is_dead_does_nothing() {
    let rt = runtime();
    rt.block_on(async {
        let stranger = spawn(wait_forever());
        unlink(stranger);
        let (dead, watch) = spawn_monitor(async {});
        down_of(watch).await;
        unlink(dead);
        assert!(is_alive(stranger));
        assert!(links_of(self_pid()).is_empty());
    });
}

/// How the end of a `kill2killed` line dies.
#[derive(Clone, Copy, Debug)]
enum LineEnd {
    /// The tester sends it exit(Pid, kill) (`other_exit2`).
    KilledByTester,
    /// It calls exit(self(), kill) (`exit2`).
    KillsItself,
    /// It exits with reason kill (`exit1`).
    ExitsWithKill,
}

/// A line of `left` more processes, each linked to the one before it.
fn line(left: usize, end: LineEnd, tester: Pid) -> BoxedBody {
    Box::pin(async move {
        if left == 0 {
            match end {
                LineEnd::KilledByTester => send(tester, self_pid()),
                LineEnd::KillsItself => exit(self_pid(), ExitReason::Kill),
                LineEnd::ExitsWithKill => exit_self(ExitReason::Kill).await,
            }
        } else {
            spawn_link(line(left - 1, end, tester));
        }
        wait_forever().await;
    })
}

// §6.2, §7.5: `kill` sent with exit/2 makes the victim die with `killed`, and
// `killed` is what travels along the links; a process that itself exits with
// reason `kill` sends `kill` along its links, where it is an ordinary, trappable
// reason. Port of signal_SUITE:kill2killed (local node part).
#[test]
fn kill_becomes_killed_only_for_the_process_it_was_sent_to() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        let me = self_pid();
        for end in [
            LineEnd::KilledByTester,
            LineEnd::KillsItself,
            LineEnd::ExitsWithKill,
        ] {
            for length in [1, 2, 9, 10] {
                let first = spawn_link(line(length - 1, end, me));
                if let LineEnd::KilledByTester = end {
                    let end_of_line: Pid = recv().await;
                    exit(end_of_line, ExitReason::Kill);
                }
                let expected = match end {
                    LineEnd::ExitsWithKill => ExitReason::Kill,
                    _ => ExitReason::Killed,
                };
                let message = exit_from(first).await;
                assert_eq!(message.reason, expected, "{end:?}, length {length}");
            }
        }
    });
}

// §7.5: a link signal with reason `kill` is trappable.
#[test]
fn a_link_signal_with_reason_kill_is_trappable() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        let child = spawn_link(exit_self(ExitReason::Kill));
        assert_eq!(exit_from(child).await.reason, ExitReason::Kill);
        assert!(is_alive(self_pid()));
    });
}

// §7.5: a link signal with reason `kill` kills a process that does not trap
// exits with reason `kill` (not `killed`).
#[test]
fn a_link_signal_with_reason_kill_kills_a_non_trapping_process_with_reason_kill() {
    let rt = runtime();
    rt.block_on(async {
        let (_, watch) = spawn_monitor(async {
            spawn_link(exit_self(ExitReason::Kill));
            wait_forever().await;
        });
        assert_eq!(down_of(watch).await.reason, ExitReason::Kill);
    });
}

// §7.4: the option form links too, and trap_exit set at spawn applies from the
// first signal on.
#[test]
fn spawn_option_link_with_trap_exit_receives_the_parent_exit_as_a_message() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let (parent, watch) = spawn_monitor(async move {
            let child = Spawn::new()
                .trap_exit(true)
                .link()
                .spawn(async move {
                    let message: Exit = recv().await;
                    send(me, message);
                })
                .expect("spawn")
                .pid;
            send(me, child);
            wait_forever().await;
        });
        let child: Pid = recv().await;
        exit(parent, ExitReason::error("parent crashed"));
        assert_eq!(
            down_of(watch).await.reason,
            ExitReason::error("parent crashed")
        );
        let message: Exit = recv().await;
        assert_eq!(message.from, parent);
        assert_eq!(message.reason, ExitReason::error("parent crashed"));
        let _ = child;
    });
}

// §7.1, §9.2: a process that has been killed but is still inside its current
// poll cannot leave a link behind: the process it links to must never stay
// linked to a dead process (it would never receive the exit signal).
#[test]
fn link_from_a_killed_process_does_not_leave_a_dangling_link() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let target = Spawn::new()
            .trap_exit(true)
            .spawn(wait_forever())
            .expect("spawn")
            .pid;
        let (tx, rx) = tokio::sync::oneshot::channel::<Pid>();
        let (killed, watch) = spawn_monitor(async move {
            exit(self_pid(), ExitReason::Kill);
            let _ = link(target);
            let _ = tx.send(self_pid());
            wait_forever().await;
        });
        assert_eq!(down_of(watch).await.reason, ExitReason::Killed);
        let reported = tokio::time::timeout(WAIT, rx)
            .await
            .expect("the killed process ran to its next await")
            .expect("it reported");
        assert_eq!(reported, killed);
        assert!(
            !links_of(target).contains(&killed),
            "{target} is linked to the dead {killed} and will never get its exit signal"
        );
        let _ = me;
    });
}

// §7.1, §2.2, §9.2: likewise, a child spawn_linked by a process that has
// already been killed must not outlive its dead parent unnoticed: either it is
// never started, or the link kills it.
#[test]
fn spawn_link_from_a_killed_process_does_not_leave_an_orphan_linked_child() {
    let rt = runtime();
    rt.block_on(async {
        let (tx, rx) = tokio::sync::oneshot::channel::<Pid>();
        let (_, watch) = spawn_monitor(async move {
            exit(self_pid(), ExitReason::Kill);
            let child = spawn_link(wait_forever());
            let _ = tx.send(child);
            wait_forever().await;
        });
        assert_eq!(down_of(watch).await.reason, ExitReason::Killed);
        let child = tokio::time::timeout(WAIT, rx)
            .await
            .expect("the killed process ran to its next await")
            .expect("it reported");
        let child_watch = monitor(child);
        let outcome = receive::<Down>()
            .matching(move |d| d.monitor == child_watch)
            .timeout(Duration::from_secs(2))
            .await;
        assert!(
            outcome.is_some(),
            "{child} was spawn_linked to a dead process and lives on"
        );
    });
}
