//! Termination: a killed process is dead at once for everyone, sends nothing
//! more, and its body is dropped in its own context when its poll returns
//! (docs/semantics.md §9).

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ember_runtime::introspect::process_info;
use ember_runtime::{
    exit, is_alive, monitor, receive, register, self_pid, send, send_after, send_named, spawn,
    spawn_monitor, try_receive, whereis, Down, ExitReason, Pid, Spawn,
};
use tokio::sync::oneshot;

use support::{down_of, recv, runtime, wait_forever, WAIT};

/// Waits for a oneshot, inside a process (tokio interop, §14).
async fn signalled<T>(rx: oneshot::Receiver<T>) -> T {
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("signalled within the wait limit")
        .expect("the sender was used")
}

/// Reports, when dropped, which process it was dropped in.
struct DropReporter(Option<oneshot::Sender<Option<Pid>>>);

impl Drop for DropReporter {
    fn drop(&mut self) {
        let current = std::panic::catch_unwind(self_pid).ok();
        if let Some(tx) = self.0.take() {
            let _ = tx.send(current);
        }
    }
}

/// Returns `Pending` once (waking itself), then `Ready`: a real await point.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Late;

/// Sent by the test itself, after anything the victim could have caused.
struct Marker;

// §9.1: after exit(P, kill) returns, P is dead for everyone: not alive, no
// process_info, name free, linked processes dead, monitors' Down delivered,
// unread messages dropped.
#[test]
fn a_killed_process_is_dead_at_once_for_everyone() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let victim = spawn(async move {
            send(me, "ready");
            wait_forever().await;
        });
        assert_eq!(recv::<&str>().await, "ready");
        // Killed while parked in its receive (not inside a poll).
        let deadline = std::time::Instant::now() + WAIT;
        while process_info(victim).map(|i| i.status) != Some(ember_runtime::Status::Waiting) {
            assert!(std::time::Instant::now() < deadline, "never went idle");
            ember_runtime::yield_point().await;
        }
        register("victim", victim).expect("free name");
        let partner = spawn(async move {
            ember_runtime::link(victim).expect("alive");
            send(me, "linked");
            wait_forever().await;
        });
        assert_eq!(recv::<&str>().await, "linked");
        let watch = monitor(victim);
        let unread = Arc::new(AtomicBool::new(false));
        struct DropFlag(Arc<AtomicBool>);
        impl Drop for DropFlag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        // Sent in the same poll as the kill, so the victim has not looked at it.
        send(victim, DropFlag(unread.clone()));
        exit(victim, ExitReason::Kill);
        assert!(!is_alive(victim));
        assert!(process_info(victim).is_none());
        assert_eq!(whereis("victim"), None);
        assert!(!is_alive(partner), "the link fired before exit returned");
        let down = receive::<Down>()
            .matching(move |d| d.monitor == watch)
            .timeout(Duration::ZERO)
            .await
            .expect("the Down is delivered before exit returns");
        assert_eq!(down.reason, ExitReason::Killed);
        assert!(unread.load(Ordering::SeqCst), "unread messages are dropped");
        register("victim", me).expect("the name is free at once");
    });
}

// §9.3: a killed process's body is dropped on a scheduler, in the process's
// own context (self_pid works in destructors).
#[test]
fn a_killed_process_body_is_dropped_in_its_own_context() {
    let rt = runtime();
    rt.block_on(async {
        let (tx, rx) = oneshot::channel();
        // Built outside the body and moved in, so that it is dropped with the
        // body even if the process is killed before it first runs.
        let guard = DropReporter(Some(tx));
        let victim = spawn(async move {
            let _guard = guard;
            wait_forever().await;
        });
        exit(victim, ExitReason::Kill);
        assert_eq!(signalled(rx).await, Some(victim));
    });
}

// §9.3: a process killed while it runs is not interrupted: its body is dropped
// only when the current poll returns, and it is never polled again.
#[test]
fn a_process_killed_while_running_finishes_its_poll_and_is_not_polled_again() {
    let rt = runtime();
    rt.block_on(async {
        let after_kill = Arc::new(AtomicBool::new(false));
        let polled_again = Arc::new(AtomicBool::new(false));
        let (tx, rx) = oneshot::channel();
        let (flag1, flag2) = (after_kill.clone(), polled_again.clone());
        let guard = DropReporter(Some(tx));
        let victim = spawn(async move {
            let _guard = guard;
            exit(self_pid(), ExitReason::Kill);
            flag1.store(true, Ordering::SeqCst);
            YieldOnce(false).await;
            flag2.store(true, Ordering::SeqCst);
        });
        assert_eq!(signalled(rx).await, Some(victim));
        assert!(after_kill.load(Ordering::SeqCst));
        assert!(!polled_again.load(Ordering::SeqCst));
    });
}

// §9.2: once terminated, a process that is still running its current poll
// sends nothing more: send, send_named and sends from destructors are dropped.
#[test]
fn a_process_killed_while_running_sends_no_messages() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        register("tester", me).expect("free name");
        let (tx, rx) = oneshot::channel();
        struct SendOnDrop(Pid);
        impl Drop for SendOnDrop {
            fn drop(&mut self) {
                send(self.0, Late);
            }
        }
        let guard = DropReporter(Some(tx));
        let victim = spawn(async move {
            let _guard = guard;
            let _sender = SendOnDrop(me);
            exit(self_pid(), ExitReason::Kill);
            send(me, Late);
            let _ = send_named("tester", Late);
            YieldOnce(false).await;
        });
        assert_eq!(signalled(rx).await, Some(victim));
        assert_eq!(try_receive::<Late>(), None);
    });
}

// §9.2, §12.4: nor can it arm a timer that would deliver a message later.
#[test]
fn a_process_killed_while_running_cannot_arm_a_timer() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let (tx, rx) = oneshot::channel();
        let guard = DropReporter(Some(tx));
        let victim = spawn(async move {
            let _guard = guard;
            exit(self_pid(), ExitReason::Kill);
            send_after(me, Late, Duration::from_millis(5));
            YieldOnce(false).await;
        });
        assert_eq!(signalled(rx).await, Some(victim));
        // A marker timer armed now, with a later deadline: timers fire in
        // deadline order (§12.2), so a `Late` armed by the victim would come
        // first.
        send_after(me, Marker, Duration::from_millis(50));
        let first = ember_runtime::receive_any(|m| m.is::<Late>() || m.is::<Marker>())
            .timeout(WAIT)
            .await
            .expect("the marker within the wait limit");
        assert!(
            first.is::<Marker>(),
            "a dead process sent a message through a timer"
        );
    });
}

// §9.1, §9.4: termination fires monitors before links and releases the name
// before either, so whoever learns of the death finds the name free.
#[test]
fn the_name_is_free_before_anyone_learns_of_the_death() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        for round in 0..50 {
            let name = format!("transient_{round}");
            let observed = Arc::new(Mutex::new(None));
            let seen = observed.clone();
            let looked_up = name.clone();
            let victim = Spawn::new()
                .name(name.as_str())
                .spawn(wait_forever())
                .expect("free name")
                .pid;
            let watcher = Spawn::new()
                .trap_exit(true)
                .spawn(async move {
                    ember_runtime::link(victim).expect("alive");
                    send(me, "linked");
                    let _: ember_runtime::Exit = recv().await;
                    *seen.lock().expect("lock") = Some(whereis(&looked_up));
                    send(me, "done");
                })
                .expect("spawn")
                .pid;
            assert_eq!(recv::<&str>().await, "linked");
            exit(victim, ExitReason::error("crash"));
            assert_eq!(recv::<&str>().await, "done");
            assert_eq!(*observed.lock().expect("lock"), Some(None));
            let _ = watcher;
        }
    });
}

// §9.1: a process that finishes on its own is gone for everyone once its
// monitors hear of it.
#[test]
fn a_process_that_returns_is_gone_once_its_down_arrives() {
    let rt = runtime();
    rt.block_on(async {
        let (child, watch) = spawn_monitor(async { ExitReason::Shutdown });
        let down = down_of(watch).await;
        assert_eq!(down.reason, ExitReason::Shutdown);
        assert!(!is_alive(child));
        assert!(process_info(child).is_none());
    });
}

/// Kills the process it names when dropped.
struct KillOnDrop(Pid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        exit(self.0, ExitReason::Kill);
    }
}

// §9.3: a parked process is dropped by its killer, and a kill made by a
// destructor leaves the body to a scheduler: killing the head of a long chain
// of parked processes, each of whose bodies kills the next when dropped,
// never nests the drops on one stack (which would overflow it).
#[test]
fn a_chain_of_kills_made_by_destructors_does_not_nest_on_the_stack() {
    const CHAIN: usize = 100_000;
    let rt = runtime();
    rt.block_on(async {
        let (tx, rx) = oneshot::channel();
        let guard = DropReporter(Some(tx));
        let tail = spawn(async move {
            let _guard = guard;
            wait_forever().await;
        });
        let mut chain = vec![tail];
        for _ in 1..CHAIN {
            let kill_next = KillOnDrop(*chain.last().expect("the tail"));
            chain.push(spawn(async move {
                let _kill_next = kill_next;
                wait_forever().await;
            }));
        }
        // Every one parked in its receive, so each kill finds it parked.
        let deadline = std::time::Instant::now() + WAIT;
        for pid in &chain {
            while process_info(*pid).map(|i| i.status) != Some(ember_runtime::Status::Waiting) {
                assert!(std::time::Instant::now() < deadline, "{pid} never parked");
                ember_runtime::sleep(Duration::from_millis(1)).await;
            }
        }
        exit(*chain.last().expect("the head"), ExitReason::Kill);
        assert_eq!(signalled(rx).await, Some(tail));
        assert!(chain.iter().all(|pid| !is_alive(*pid)));
    });
}
