//! Sending: any `Send + 'static` value, dead pids, `send_named`, ordering per
//! sender and receiver (docs/semantics.md §3).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ember_runtime::{
    receive_any, register, self_pid, send, send_named, spawn, spawn_link, spawn_monitor, trap_exit,
    try_receive, Down, Exit, ExitReason, NameNotFound, Pid,
};

use support::{down_of, recv, runtime, WAIT};

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Point {
    x: i32,
    y: i32,
}

// §3.1: any Send + 'static value is a message, received by its type.
#[test]
fn any_send_static_value_can_be_a_message() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let shared = Arc::new(Mutex::new(vec![1, 2]));
        let (tx, rx) = tokio::sync::oneshot::channel::<&'static str>();
        send(me, String::from("text"));
        send(me, vec![1u8, 2, 3]);
        send(me, Point { x: 1, y: -1 });
        send(me, Box::new(|| 40 + 2) as Box<dyn FnOnce() -> i32 + Send>);
        send(me, shared.clone());
        send(me, tx);
        send(me, ());
        send(me, (7u8, 'c'));
        assert_eq!(recv::<String>().await, "text");
        assert_eq!(recv::<Vec<u8>>().await, vec![1, 2, 3]);
        assert_eq!(recv::<Point>().await, Point { x: 1, y: -1 });
        let function: Box<dyn FnOnce() -> i32 + Send> = recv().await;
        assert_eq!(function(), 42);
        let received: Arc<Mutex<Vec<i32>>> = recv().await;
        assert!(Arc::ptr_eq(&received, &shared));
        recv::<tokio::sync::oneshot::Sender<&'static str>>()
            .await
            .send("through a channel in a message")
            .expect("receiver alive");
        assert_eq!(rx.await.as_deref(), Ok("through a channel in a message"));
        recv::<()>().await;
        assert_eq!(recv::<(u8, char)>().await, (7, 'c'));
    });
}

// §3.2: sending to a dead pid is silently dropped, at once, in the sender.
#[test]
fn sending_to_a_dead_pid_is_silently_dropped() {
    let rt = runtime();
    rt.block_on(async {
        let (dead, watch) = spawn_monitor(async {});
        down_of(watch).await;
        let dropped = Arc::new(AtomicBool::new(false));
        send(dead, DropFlag(dropped.clone()));
        assert!(dropped.load(Ordering::SeqCst));
        rt_handle_send_to_dead(dead);
    });
}

// §3.2 with a kept target: a process that sends to one pid again and again
// skips the process table after its second send; once that process has
// died, what it sends there is still dropped at once.
#[test]
fn sends_to_a_pid_sent_to_again_and_again_are_dropped_once_it_died() {
    let rt = runtime();
    rt.block_on(async {
        let (target, watch) = spawn_monitor(async {
            for _ in 0..3 {
                let _: u32 = recv().await;
            }
        });
        for n in 0..3u32 {
            send(target, n);
        }
        down_of(watch).await;
        let dropped = Arc::new(AtomicBool::new(false));
        send(target, DropFlag(dropped.clone()));
        assert!(
            dropped.load(Ordering::SeqCst),
            "a message to a dead process it kept was not dropped"
        );
    });
}

fn rt_handle_send_to_dead(dead: Pid) {
    ember_runtime::Handle::current().send(dead, "also dropped");
}

// §3.3: send_named delivers to the registered process.
#[test]
fn send_named_delivers_to_the_registered_process() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let echo = spawn(async move {
            let text: String = recv().await;
            send(me, text);
        });
        register("echo", echo).expect("free name");
        send_named("echo", String::from("hello")).expect("registered");
        assert_eq!(recv::<String>().await, "hello");
    });
}

// §3.3: send_named to an unknown name fails and gives the message back
// (Erlang raises badarg).
#[test]
fn send_named_to_an_unknown_name_gives_the_message_back() {
    let rt = runtime();
    rt.block_on(async {
        let error = send_named("nobody", vec![42u8]).expect_err("no such name");
        assert_eq!(
            error,
            NameNotFound {
                name: "nobody".into(),
                message: vec![42u8]
            }
        );
        assert_eq!(error.to_string(), "no process is registered as \"nobody\"");
        assert!(try_receive::<Vec<u8>>().is_none());
    });
}

// §3.3, §11.3: once the owner of a name has exited, send_named fails.
#[test]
fn send_named_to_a_name_whose_owner_exited_fails() {
    let rt = runtime();
    rt.block_on(async {
        let (owner, watch) = spawn_monitor(async {
            let _: u32 = recv().await;
        });
        register("short_lived", owner).expect("free name");
        send_named("short_lived", 1u32).expect("registered");
        down_of(watch).await;
        let error = send_named("short_lived", 2u32).expect_err("released");
        assert_eq!(error.message, 2);
    });
}

// §3.4: messages from one process to another arrive in sending order.
#[test]
fn messages_between_one_pair_arrive_in_sending_order() {
    const N: u32 = 20_000;
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let receiver = spawn(async move {
            for expected in 0..N {
                let n: u32 = recv().await;
                assert_eq!(n, expected);
            }
            send(me, "in order");
        });
        spawn(async move {
            for n in 0..N {
                send(receiver, n);
            }
        });
        assert_eq!(recv::<&str>().await, "in order");
    });
}

// §3.4: with several senders interleaving, each sender's messages keep their
// order (no order is promised between senders).
#[test]
fn each_senders_messages_keep_their_order_when_senders_interleave() {
    const SENDERS: usize = 4;
    const EACH: u32 = 5_000;
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        for sender in 0..SENDERS {
            spawn(async move {
                for n in 0..EACH {
                    send(me, (sender, n));
                }
            });
        }
        let mut next = [0u32; SENDERS];
        for _ in 0..SENDERS * EACH as usize {
            let (sender, n): (usize, u32) = recv().await;
            assert_eq!(n, next[sender], "sender {sender} out of order");
            next[sender] += 1;
        }
    });
}

#[derive(Debug, PartialEq, Eq)]
struct Last(u32);

// §3.4, §7.4: a message a process sends before it dies arrives before the exit
// signal its death sends over a link.
#[test]
fn messages_sent_before_dying_arrive_before_the_exit_message() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        for round in 0..200 {
            let me = self_pid();
            let child = spawn_link(async move {
                send(me, Last(round));
                ExitReason::error("done")
            });
            let first = receive_any(move |m| {
                m.downcast_ref::<Last>().is_some()
                    || m.downcast_ref::<Exit>().is_some_and(|e| e.from == child)
            })
            .timeout(WAIT)
            .await
            .expect("a message");
            assert_eq!(first.downcast::<Last>().ok(), Some(Last(round)));
            let exit: Exit = recv().await;
            assert_eq!(exit.from, child);
        }
    });
}

// §3.4, §8.1: likewise a message sent before dying arrives before the Down.
#[test]
fn messages_sent_before_dying_arrive_before_the_down() {
    let rt = runtime();
    rt.block_on(async {
        for round in 0..200 {
            let me = self_pid();
            let (_, watch) = spawn_monitor(async move {
                send(me, Last(round));
            });
            let first = receive_any(move |m| {
                m.downcast_ref::<Last>().is_some()
                    || m.downcast_ref::<Down>().is_some_and(|d| d.monitor == watch)
            })
            .timeout(WAIT)
            .await
            .expect("a message");
            assert_eq!(first.downcast::<Last>().ok(), Some(Last(round)));
            down_of(watch).await;
        }
    });
}

// §3.5: a Handle sends from outside the runtime; one thread's messages keep
// their order.
#[test]
fn handle_send_delivers_from_outside_the_runtime_in_order() {
    let rt = runtime();
    let handle = rt.handle().clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let receiver = handle.spawn(async move {
        let mut got = Vec::new();
        for _ in 0..1000 {
            got.push(recv::<u32>().await);
        }
        let _ = tx.send(got);
    });
    for n in 0..1000u32 {
        handle.send(receiver, n);
    }
    let got = rx.recv_timeout(WAIT).expect("the receiver finished");
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
}
