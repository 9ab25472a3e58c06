//! Panics: a panic is its process's crash, with the panic message as the
//! reason; other processes, the scheduler threads and the timer service carry
//! on (docs/semantics.md §10).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ember_runtime::introspect::process_info;
use ember_runtime::{
    exit, receive, self_pid, send, send_after, spawn, spawn_link, spawn_monitor, trap_exit, Down,
    Exit, ExitReason, Handle, Status,
};

use support::{
    down_of, quiet_intentional_panics, recv, runtime, two_processes_run_side_by_side, wait_forever,
    WAIT,
};

/// A value whose destructor panics.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("intentional panic in a destructor");
    }
}

/// A body that panics with `message`.
async fn panics_with(message: String) {
    panic!("{message}");
}

// §10.1, §10.2: a thousand processes, half of which panic: each Down carries
// the right reason, and the runtime runs on with both schedulers.
#[test]
fn a_thousand_processes_half_panicking_are_reported_with_the_right_reasons() {
    quiet_intentional_panics();
    let rt = runtime();
    rt.block_on(async {
        let mut expected = HashMap::new();
        for i in 0..1000u32 {
            let (pid, watch) = spawn_monitor(async move {
                if i % 2 == 1 {
                    panic!("intentional panic {i}");
                }
            });
            let reason = if i % 2 == 1 {
                ExitReason::Panic(format!("intentional panic {i}").into())
            } else {
                ExitReason::Normal
            };
            expected.insert(watch, (pid, reason));
        }
        for _ in 0..1000 {
            let down: Down = recv().await;
            let (pid, reason) = expected
                .remove(&down.monitor)
                .expect("one Down per monitor");
            assert_eq!(down.pid, pid);
            assert_eq!(down.reason, reason);
        }
        assert!(expected.is_empty());
        assert_eq!(Handle::current().runtime_info().schedulers.len(), 2);
        assert!(two_processes_run_side_by_side().await);
        let me = self_pid();
        let echo = spawn(async move {
            let n: u32 = recv().await;
            send(me, n + 1);
        });
        send(echo, 41u32);
        assert_eq!(recv::<u32>().await, 42);
    });
}

// §10.1, §5.1: the panic message is the reason, formatted arguments included.
#[test]
fn the_panic_message_becomes_the_exit_reason() {
    quiet_intentional_panics();
    let rt = runtime();
    rt.block_on(async {
        let answer = 42;
        let (_, watch) = spawn_monitor(panics_with(format!("intentional boom {answer}")));
        let reason = down_of(watch).await.reason;
        assert_eq!(reason, ExitReason::Panic("intentional boom 42".into()));
        assert_eq!(reason.to_string(), "{panic,\"intentional boom 42\"}");
        let (_, watch) = spawn_monitor(async {
            assert_eq!(1 + 1, 3, "intentional failed assertion");
        });
        let reason = down_of(watch).await.reason;
        assert!(
            matches!(&reason, ExitReason::Panic(m) if m.contains("intentional failed assertion")),
            "{reason}"
        );
    });
}

// §10.1: a panic whose payload is not a string is a crash all the same.
#[test]
fn a_panic_with_a_non_string_payload_is_still_a_crash() {
    quiet_intentional_panics();
    let rt = runtime();
    rt.block_on(async {
        let (_, watch) = spawn_monitor(async {
            if true {
                std::panic::panic_any(7u32);
            }
        });
        assert_eq!(
            down_of(watch).await.reason,
            ExitReason::Panic("non-string panic payload".into())
        );
    });
}

// §10.1, §7.4: a panic travels along links like any abnormal reason.
#[test]
fn a_panic_kills_linked_processes_and_a_trapping_one_is_told() {
    quiet_intentional_panics();
    let rt = runtime();
    rt.block_on(async {
        let (middle, watch) = spawn_monitor(async {
            spawn_link(panics_with("intentional linked panic".into()));
            wait_forever().await;
        });
        let down = down_of(watch).await;
        assert_eq!(down.pid, middle);
        assert_eq!(
            down.reason,
            ExitReason::Panic("intentional linked panic".into())
        );
        trap_exit(true);
        let child = spawn_link(panics_with("intentional trapped panic".into()));
        let message: Exit = recv().await;
        assert_eq!(message.from, child);
        assert_eq!(
            message.reason,
            ExitReason::Panic("intentional trapped panic".into())
        );
    });
}

// §10.2, §9.3: a destructor that panics while a killed process's body is
// dropped is contained.
#[test]
fn a_panic_in_a_body_destructor_is_contained() {
    quiet_intentional_panics();
    let rt = runtime();
    rt.block_on(async {
        let (victim, watch) = spawn_monitor(async {
            let _bomb = PanicOnDrop;
            wait_forever().await;
        });
        exit(victim, ExitReason::Kill);
        assert_eq!(down_of(watch).await.reason, ExitReason::Killed);
        assert!(two_processes_run_side_by_side().await);
    });
}

// §16: block_on reports a panic of its process by panicking, and the runtime
// stays usable.
#[test]
fn block_on_panics_when_its_process_panics_and_the_runtime_stays_usable() {
    quiet_intentional_panics();
    let rt = runtime();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async { panic!("intentional panic in block_on") })
    }));
    assert!(outcome.is_err());
    assert_eq!(rt.block_on(async { 6 * 7 }), 42);
}

// §10.2, §9.3: a message whose destructor panics, left unread in the mailbox
// of a process that then exits, must not take its scheduler thread down: the
// process still terminates (its Down arrives) and both schedulers keep
// running processes.
#[test]
fn a_panicking_message_left_in_a_mailbox_does_not_stop_a_scheduler() {
    quiet_intentional_panics();
    let rt = runtime();
    let handle = rt.handle().clone();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let report = tx.clone();
    handle.spawn(async move {
        let (victim, watch) = spawn_monitor(async {
            let _: u8 = recv().await;
        });
        send(victim, PanicOnDrop);
        send(victim, 1u8);
        let down = receive::<Down>()
            .matching(move |d| d.monitor == watch)
            .timeout(Duration::from_secs(10))
            .await;
        let _ = report.send(format!("{:?}", down.map(|d| d.reason)));
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).as_deref(),
        Ok("Some(normal)"),
        "the process holding the message never finished terminating"
    );
    handle.spawn(async move {
        let _ = tx.send(two_processes_run_side_by_side().await.to_string());
    });
    assert_eq!(rx.recv_timeout(WAIT).as_deref(), Ok("true"));
}

// §10.2, §6.1: killing a process whose mailbox holds a message with a
// panicking destructor must not crash the killer (exit/2 never fails).
#[test]
fn killing_a_process_holding_a_panicking_message_does_not_crash_the_killer() {
    quiet_intentional_panics();
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let victim = spawn(wait_forever());
        // Wait until the victim is parked in its receive, so that the message
        // below stays unread (the victim is woken onto the killer's own
        // scheduler and cannot run before the kill).
        let deadline = Instant::now() + WAIT;
        while process_info(victim).map(|i| i.status) != Some(Status::Waiting) {
            assert!(Instant::now() < deadline, "the victim never went idle");
            ember_runtime::yield_point().await;
        }
        let (_, watch) = spawn_monitor(async move {
            send(victim, PanicOnDrop);
            exit(victim, ExitReason::Kill);
            send(me, "the killer carried on");
        });
        let down = down_of(watch).await;
        assert_eq!(down.reason, ExitReason::Normal, "the killer crashed");
        assert_eq!(recv::<&str>().await, "the killer carried on");
    });
}

// §10.2, §12.4: a timer message with a panicking destructor, dropped because
// its target is dead, must not stop the timer service: later timers and
// receive timeouts still fire.
#[test]
fn a_panicking_timer_message_does_not_stop_the_timer_service() {
    quiet_intentional_panics();
    let rt = runtime();
    let handle = rt.handle().clone();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    handle.spawn(async move {
        let (dead, watch) = spawn_monitor(async {});
        down_of(watch).await;
        send_after(dead, PanicOnDrop, Duration::from_millis(1));
        let timed_out = receive::<u8>().timeout(Duration::from_millis(50)).await;
        send_after(self_pid(), 5u8, Duration::from_millis(10));
        let fired = receive::<u8>().timeout(Duration::from_secs(10)).await;
        let _ = tx.send(format!("{timed_out:?} {fired:?}"));
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).as_deref(),
        Ok("None Some(5)"),
        "the timer service stopped"
    );
}

// §10.1: a panic in one process leaves a process that monitors it, and one
// that does not, untouched.
#[test]
fn a_panic_does_not_affect_unrelated_processes() {
    quiet_intentional_panics();
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let bystander = spawn(async move {
            let n: u32 = recv().await;
            send(me, n * 2);
        });
        let (_, watch) = spawn_monitor(panics_with("intentional crash".into()));
        let down = down_of(watch).await;
        assert_eq!(down.reason, ExitReason::Panic("intentional crash".into()));
        send(bystander, 21u32);
        assert_eq!(recv::<u32>().await, 42);
    });
}
