//! Monitors: `Down` with the reason, `noproc`, several monitors, `demonitor`
//! and its flush, and cleanup (docs/semantics.md §8).
//!
//! Most cases are ports of erts' `emulator/test/monitor_SUITE.erl` (local node
//! parts); each says which.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ember_runtime::introspect::process_info;
use ember_runtime::{
    demonitor, exit, is_alive, monitor, receive, register, self_pid, send, sleep, spawn,
    spawn_link, spawn_monitor, trap_exit, try_receive, unregister, whereis, Down, Exit, ExitReason,
    MonitorRef, Pid,
};

use support::{down_of, recv, runtime, wait_forever, WAIT};

/// Takes the Down of `monitor` if it is in the mailbox now (`after 0`).
fn take_down_now(monitor: MonitorRef) -> Option<Down> {
    let mut others = Vec::new();
    let mut found = None;
    while let Some(down) = try_receive::<Down>() {
        if down.monitor == monitor && found.is_none() {
            found = Some(down);
        } else {
            others.push(down);
        }
    }
    // Put the others back (a process may send to itself).
    for down in others {
        send(self_pid(), down);
    }
    found
}

#[derive(Debug)]
struct Go;

// §8.1, §6.1: A monitors B; B kills A and exits; A dies with B's reason.
// Port of monitor_SUITE:case_1 (monitor/1) and case_1a (spawn_monitor).
#[test]
fn a_process_killed_by_the_process_it_monitors_dies_with_that_reason() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        for use_spawn_monitor in [false, true] {
            let a = spawn_link(async move {
                let me = self_pid();
                let killer = async move {
                    let _: Go = recv().await;
                    exit(me, ExitReason::error("foo"));
                };
                let b = if use_spawn_monitor {
                    spawn_monitor(killer).0
                } else {
                    let b = spawn(killer);
                    monitor(b);
                    b
                };
                send(b, Go);
                wait_forever().await;
            });
            let message: Exit = recv().await;
            assert_eq!(message.from, a);
            assert_eq!(message.reason, ExitReason::error("foo"));
        }
    });
}

// §8.4: a process cannot remove a monitor it does not hold: demonitor with
// someone else's reference returns false and the owner still gets its Down.
// Port of monitor_SUITE:case_2, case_2a and demon_e_1 (ref from the wrong end;
// OTP raises badarg, Ember returns false).
#[test]
fn demonitor_by_another_process_does_not_remove_my_monitor() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        for use_spawn_monitor in [false, true] {
            let body = async move {
                let theirs: MonitorRef = recv().await;
                send(me, demonitor(theirs, true));
            };
            let (b, watch) = if use_spawn_monitor {
                spawn_monitor(body)
            } else {
                let b = spawn(body);
                (b, monitor(b))
            };
            send(b, watch);
            assert!(!recv::<bool>().await);
            let down = down_of(watch).await;
            assert_eq!(down.pid, b);
            assert_eq!(down.reason, ExitReason::Normal);
        }
    });
}

// §8.1, §8.2: Down carries normal, any other reason, or noproc.
// Port of monitor_SUITE:mon_1 (local part).
#[test]
fn monitor_reports_normal_exit_other_reasons_and_noproc() {
    let rt = runtime();
    rt.block_on(async {
        // Normal exit: the process may already be gone when monitored.
        let quick = spawn(async {});
        let watch = monitor(quick);
        let down = down_of(watch).await;
        assert_eq!(down.pid, quick);
        assert!(matches!(
            down.reason,
            ExitReason::Normal | ExitReason::NoProc
        ));
        // spawn_monitor cannot miss the exit (§2.2).
        let (quick, watch) = spawn_monitor(async {});
        assert_eq!(
            down_of(watch).await,
            Down {
                monitor: watch,
                pid: quick,
                name: None,
                reason: ExitReason::Normal
            }
        );
        // Another reason.
        let sleeper = spawn(wait_forever());
        let watch = monitor(sleeper);
        exit(sleeper, ExitReason::error("frop"));
        assert_eq!(down_of(watch).await.reason, ExitReason::error("frop"));
        let (sleeper2, watch) = spawn_monitor(wait_forever());
        exit(sleeper2, ExitReason::error("frop"));
        assert_eq!(down_of(watch).await.reason, ExitReason::error("frop"));
        // Monitoring a dead process gives noproc at once.
        let watch = monitor(sleeper);
        let down = take_down_now(watch).expect("noproc is delivered at once");
        assert_eq!(down.pid, sleeper);
        assert_eq!(down.reason, ExitReason::NoProc);
    });
}

// §8.3: each monitor gets its own Down, with its own reference.
#[test]
fn several_monitors_on_one_process_each_get_their_own_down() {
    let rt = runtime();
    rt.block_on(async {
        let target = spawn(wait_forever());
        let watches: Vec<MonitorRef> = (0..5).map(|_| monitor(target)).collect();
        assert_eq!(watches.iter().collect::<HashSet<_>>().len(), 5);
        exit(target, ExitReason::Shutdown);
        for watch in watches {
            let down = down_of(watch).await;
            assert_eq!(down.pid, target);
            assert_eq!(down.reason, ExitReason::Shutdown);
        }
        assert!(try_receive::<Down>().is_none());
    });
}

// §8.4: demonitor of a reference that is not an active monitor returns false.
// Port of monitor_SUITE:demon_1 (OTP's demonitor/1 answers true; Ember's
// answers like demonitor/2 with [info]).
#[test]
fn demonitor_of_an_unknown_reference_returns_false() {
    let rt = runtime();
    rt.block_on(async {
        let (_, fired) = spawn_monitor(async {});
        down_of(fired).await;
        assert!(!demonitor(fired, false));
        assert!(!demonitor(fired, true));
        assert!(try_receive::<Down>().is_none());
    });
}

// §8.4: a monitor on oneself can be removed once; nothing is delivered.
// Port of monitor_SUITE:demon_2 (first part).
#[test]
fn demonitor_of_a_monitor_on_oneself() {
    let rt = runtime();
    rt.block_on(async {
        let watch = monitor(self_pid());
        assert!(demonitor(watch, false));
        assert!(!demonitor(watch, false));
        assert!(try_receive::<Down>().is_none());
    });
}

// §8.4: after demonitor returns, no Down for that monitor is ever delivered.
// Port of monitor_SUITE:demon_2 ("demonitor before DOWN").
#[test]
fn demonitor_before_the_target_dies_means_no_down() {
    let rt = runtime();
    rt.block_on(async {
        let target = spawn(wait_forever());
        let watch = monitor(target);
        assert!(demonitor(watch, false));
        // exit/2 runs the whole termination before it returns (§9.1).
        exit(target, ExitReason::error("frop"));
        assert!(try_receive::<Down>().is_none());
        assert!(process_info(self_pid()).expect("alive").monitors.is_empty());
    });
}

// §8.4: flush removes a Down already delivered; without flush it stays.
// Port of monitor_SUITE:demonitor_flush (local part).
#[test]
fn demonitor_with_flush_removes_a_down_already_delivered() {
    let rt = runtime();
    rt.block_on(async {
        let target = spawn(wait_forever());
        let m1 = monitor(target);
        let m2 = monitor(target);
        let m3 = monitor(target);
        let m4 = monitor(target);
        assert!(demonitor(m1, true));
        exit(target, ExitReason::error("bang"));
        assert_eq!(down_of(m2).await.reason, ExitReason::error("bang"));
        // m3 and m4 have fired: their Down messages are in the mailbox.
        assert!(!demonitor(m3, true));
        assert!(!demonitor(m4, false));
        assert_eq!(down_of(m4).await.reason, ExitReason::error("bang"));
        assert!(take_down_now(m1).is_none());
        assert!(take_down_now(m3).is_none());
        assert!(try_receive::<Down>().is_none());
    });
}

// §8.4: demonitor answers true only if it removed the monitor before the target
// died (then no Down will ever come), and false only if the monitor already
// fired (then its Down is already in the mailbox).
// Port of monitor_SUITE:local_remove_monitor, which races demonitor against
// the exits of short-lived processes. Here each target exits on a timer (so on
// whichever scheduler picks it up) while the tester watches it without
// yielding and calls demonitor the moment it stops being alive; the target
// holds many monitors of its own, so its termination takes a while.
#[test]
fn demonitor_returning_false_means_the_down_is_already_in_the_mailbox() {
    const ROUNDS: usize = 100;
    let rt = runtime();
    rt.block_on(async {
        let bystander = spawn(wait_forever());
        let (mut removed, mut fired, mut broken) = (0usize, 0usize, 0usize);
        for _ in 0..ROUNDS {
            let target = spawn(async move {
                for _ in 0..4_000 {
                    monitor(bystander);
                }
                sleep(Duration::from_millis(1)).await;
            });
            let watch = monitor(target);
            let started = Instant::now();
            while is_alive(target) && started.elapsed() < WAIT {
                std::hint::spin_loop();
            }
            let was_active = demonitor(watch, false);
            let down_now = receive::<Down>()
                .matching(move |d| d.monitor == watch)
                .timeout(Duration::ZERO)
                .await
                .is_some();
            if was_active {
                removed += 1;
                broken += usize::from(down_now);
            } else {
                fired += 1;
                broken += usize::from(!down_now);
            }
        }
        assert_eq!(
            broken, 0,
            "{broken} of {ROUNDS} demonitor answers broke the guarantee \
             (true: {removed}, false: {fired})"
        );
    });
}

// §8.1, §5.1: a large reason arrives intact.
// Port of monitor_SUITE:large_exit.
#[test]
fn down_carries_a_large_exit_reason_intact() {
    let rt = runtime();
    rt.block_on(async {
        for round in 0..100 {
            let reason = ExitReason::error(format!("{round}:{}", "big tuple ".repeat(4096)));
            let sent = reason.clone();
            let target = spawn(async move {
                let _: Go = recv().await;
                sent
            });
            let watch = monitor(target);
            send(target, Go);
            assert_eq!(down_of(watch).await.reason, reason);
        }
    });
}

fn monitors_of(pid: Pid) -> (Vec<Pid>, Vec<Pid>) {
    let info = process_info(pid).expect("alive");
    let mut monitors: Vec<Pid> = info.monitors.iter().map(|(_, p)| *p).collect();
    let mut monitored_by = info.monitored_by;
    monitors.sort();
    monitored_by.sort();
    (monitors, monitored_by)
}

// §8.1, §15.1: process_info lists monitors both ways and they are cleaned up
// on demonitor, on Down and when the monitoring process dies.
// Port of monitor_SUITE:list_cleanup (local part).
#[test]
fn process_info_lists_monitors_and_cleans_them_up() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        // Monitor and demonitor.
        let jeeves = spawn(wait_forever());
        assert_eq!(monitors_of(me), (vec![], vec![]));
        let watch = monitor(jeeves);
        assert_eq!(monitors_of(me), (vec![jeeves], vec![]));
        assert_eq!(monitors_of(jeeves), (vec![], vec![me]));
        assert_eq!(
            process_info(me).expect("alive").monitors,
            vec![(watch, jeeves)]
        );
        assert!(demonitor(watch, false));
        assert_eq!(monitors_of(me), (vec![], vec![]));
        assert_eq!(monitors_of(jeeves), (vec![], vec![]));
        // Monitor again, then the target exits.
        let watch = monitor(jeeves);
        exit(jeeves, ExitReason::Shutdown);
        down_of(watch).await;
        assert_eq!(monitors_of(me), (vec![], vec![]));
        // The monitoring process crashes.
        let watcher = spawn(async move {
            monitor(me);
            send(me, "monitoring");
            let _: Go = recv().await;
            ExitReason::error("frop")
        });
        let watch = monitor(watcher);
        assert_eq!(recv::<&str>().await, "monitoring");
        assert_eq!(monitors_of(me), (vec![watcher], vec![watcher]));
        send(watcher, Go);
        assert_eq!(down_of(watch).await.reason, ExitReason::error("frop"));
        // A process's own monitors are released before its Down messages go
        // out (§9.4), so the cleanup is visible now.
        assert_eq!(monitors_of(me), (vec![], vec![]));
    });
}

// §8.3, §15.1: many processes monitoring one are all listed, and the list
// empties as they exit. Port of monitor_SUITE:mixer (local part).
#[test]
fn many_monitors_on_one_process_are_listed_and_cleaned_up() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let mut watchers = Vec::new();
        for _ in 0..20 {
            let watcher = spawn(async move {
                monitor(me);
                send(me, self_pid());
                let _: Go = recv().await;
                ExitReason::error("flaff")
            });
            let watch = monitor(watcher);
            assert_eq!(recv::<Pid>().await, watcher);
            watchers.push((watcher, watch));
        }
        let mut expected: Vec<Pid> = watchers.iter().map(|(p, _)| *p).collect();
        expected.sort();
        assert_eq!(monitors_of(me), (expected.clone(), expected));
        for (watcher, _) in &watchers {
            send(*watcher, Go);
        }
        for (_, watch) in &watchers {
            down_of(*watch).await;
        }
        assert_eq!(monitors_of(me), (vec![], vec![]));
    });
}

// §8.1, §11.3, §9.4: the Down for a registered process arrives after its name
// has been released, so the name can be taken at once.
// Port of monitor_SUITE:named_down.
#[test]
fn down_for_a_registered_process_arrives_after_its_name_is_free() {
    let rt = runtime();
    rt.block_on(async {
        for round in 0..100 {
            let name = format!("monitor_named_down_{round}");
            let named = spawn(async {
                let _: Go = recv().await;
                ExitReason::error("bang")
            });
            register(&name, named).expect("free name");
            let watch = monitor(named);
            send(named, Go);
            down_of(watch).await;
            assert_eq!(whereis(&name), None);
            register(&name, self_pid()).expect("the name is free once Down arrives");
            unregister(&name).expect("registered");
        }
    });
}

// §8.5: a monitor is one-way and never kills: the watcher survives the
// target's crash, and the target survives the watcher's.
#[test]
fn monitors_do_not_propagate_exits() {
    let rt = runtime();
    rt.block_on(async {
        let target = spawn(wait_forever());
        let watcher = spawn(async move {
            monitor(target);
            let _: Go = recv().await;
            ExitReason::error("watcher crashed")
        });
        let watch_watcher = monitor(watcher);
        send(watcher, Go);
        down_of(watch_watcher).await;
        assert!(is_alive(target));
        let watch_target = monitor(target);
        exit(target, ExitReason::error("target crashed"));
        assert_eq!(
            down_of(watch_target).await.reason,
            ExitReason::error("target crashed")
        );
        assert!(is_alive(self_pid()));
    });
}
