//! Group leaders and the I/O protocol (docs/semantics.md, "Group leaders and
//! I/O"): output reaches the group leader as an `io_request` term,
//! inheritance across spawn, `set_group_leader`, a dead or silent group
//! leader, and `user`'s answers to requests it cannot serve.

mod support;

use std::time::Duration;

use ember_runtime::introspect::process_info;
use ember_runtime::io::{self, IoError, IoRequest};
use ember_runtime::{
    exit, is_alive, monitor, receive, self_pid, send, spawn, whereis, ExitReason, Pid, Spawn,
};
use ember_term::{term, Term};

use support::{down_of, recv, runtime, wait_forever, WAIT};

/// A request a test group leader received.
#[derive(Debug)]
struct Recorded(Term);

/// A group leader that forwards every request to `observer` and answers
/// `{io_reply, ReplyAs, ok}`.
fn recording_leader(observer: Pid) -> Pid {
    spawn(async move {
        loop {
            let term: Term = receive().await;
            let request = IoRequest::from_term(&term).expect("an io_request");
            send(observer, Recorded(term));
            assert!(request.reply(term!(ok)), "a local From");
        }
    })
}

/// The chars of the next recorded `put_chars` request, and its `From`.
async fn next_output() -> (String, Term) {
    let Recorded(term) = recv().await;
    let request = IoRequest::from_term(&term).expect("an io_request");
    (request.chars().expect("a put_chars request"), request.from)
}

#[derive(Debug)]
struct Done;

#[test]
fn output_reaches_the_group_leader_as_an_io_request() {
    runtime().block_on(async {
        let me = self_pid();
        let leader = recording_leader(me);
        let worker = Spawn::new()
            .group_leader(leader)
            .spawn(async move {
                io::println!("hello {}", 42).await;
                io::print!("no newline").await;
                send(me, Done);
            })
            .unwrap()
            .pid;
        let Recorded(first) = recv().await;
        let parts = first.as_tuple().expect("a tuple").to_vec();
        assert_eq!(parts.len(), 4, "{first}");
        assert!(parts[0].is_atom("io_request"), "{first}");
        assert_eq!(parts[1].as_pid().map(|p| p.id), Some(worker.number()));
        assert!(
            parts[2].as_reference().is_some(),
            "ReplyAs is the monitor reference: {first}"
        );
        assert_eq!(parts[3], term!({put_chars, unicode, "hello 42\n"}));
        assert_eq!(next_output().await.0, "no newline");
        let _: Done = recv().await;
    });
}

#[test]
fn spawned_processes_inherit_the_group_leader() {
    runtime().block_on(async {
        let me = self_pid();
        let leader = recording_leader(me);
        io::set_group_leader(leader);
        assert_eq!(io::group_leader(), leader);
        // A child, and a grandchild spawned by it, print through `leader`.
        let child = spawn(async move {
            assert_eq!(io::group_leader(), leader);
            let grandchild = spawn(async move {
                io::println!("grandchild").await;
                send(me, Done);
                wait_forever().await;
            });
            send(me, grandchild);
            io::println!("child").await;
            send(me, Done);
            wait_forever().await;
        });
        let grandchild: Pid = recv().await;
        let mut seen = vec![next_output().await.0, next_output().await.0];
        seen.sort();
        assert_eq!(seen, ["child\n", "grandchild\n"]);
        let _: Done = recv().await;
        let _: Done = recv().await;
        assert_eq!(process_info(child).map(|i| i.group_leader), Some(leader));
        assert_eq!(
            process_info(grandchild).map(|i| i.group_leader),
            Some(leader)
        );
        exit(child, ExitReason::Kill);
        exit(grandchild, ExitReason::Kill);
    });
}

#[test]
fn processes_spawned_from_outside_get_the_user_process() {
    let rt = runtime();
    let (tx, rx) = std::sync::mpsc::channel();
    rt.handle().spawn(async move {
        let _ = tx.send((
            io::group_leader(),
            whereis("user"),
            io::put_chars("").await.is_ok(),
        ));
    });
    let (leader, user, printed) = rx
        .recv_timeout(WAIT)
        .expect("a report within the wait limit");
    assert_eq!(
        Some(leader),
        user,
        "the default group leader is registered as `user`"
    );
    assert!(printed, "user answers ok");
    // Inside a process the default is the same `user`, and introspection says so.
    rt.block_on(async move {
        assert_eq!(io::group_leader(), leader);
        assert_eq!(
            process_info(self_pid()).map(|i| i.group_leader),
            Some(leader)
        );
    });
}

/// (The leaders here record alike; the next test tells them apart.)
#[test]
fn set_group_leader_redirects_output() {
    runtime().block_on(async {
        let me = self_pid();
        let first = recording_leader(me);
        let second = recording_leader(me);
        io::set_group_leader(first);
        io::println!("one").await;
        let (text, from) = next_output().await;
        assert_eq!(text, "one\n");
        assert_eq!(from.as_pid().map(|p| p.id), Some(me.number()));
        io::set_group_leader(second);
        io::println!("two").await;
        assert_eq!(next_output().await.0, "two\n");
        // Another process's group leader, set from outside it.
        let worker = spawn(async move {
            let _: Done = receive().await;
            io::println!("three").await;
            send(me, Done);
        });
        io::set_group_leader_of(worker, first).unwrap();
        send(worker, Done);
        assert_eq!(next_output().await.0, "three\n");
        let _: Done = recv().await;
        let dead = spawn(async {});
        let m = monitor(dead);
        down_of(m).await;
        assert_eq!(
            io::set_group_leader_of(dead, first),
            Err(io::NoProcess(dead))
        );
    });
}

#[test]
fn set_group_leader_sends_output_to_the_new_leader_only() {
    runtime().block_on(async {
        let me = self_pid();
        // Two leaders that report who they are.
        let named = |tag: &'static str| {
            spawn(async move {
                loop {
                    let term: Term = receive().await;
                    let request = IoRequest::from_term(&term).unwrap();
                    send(me, (tag, request.chars().unwrap()));
                    request.reply(term!(ok));
                }
            })
        };
        let a = named("a");
        let b = named("b");
        io::set_group_leader(a);
        io::print!("x").await;
        io::set_group_leader(b);
        io::print!("y").await;
        let first: (&str, String) = recv().await;
        let second: (&str, String) = recv().await;
        assert_eq!((first, second), (("a", "x".into()), ("b", "y".into())));
    });
}

#[test]
fn a_dead_group_leader_is_an_error_not_a_hang() {
    runtime().block_on(async {
        // Dead before the request: `noproc` at once.
        let gone = spawn(async {});
        down_of(monitor(gone)).await;
        io::set_group_leader(gone);
        match io::put_chars("lost").await {
            Err(IoError::GroupLeaderDead { leader, reason }) => {
                assert_eq!(leader, gone);
                assert_eq!(reason, ExitReason::NoProc);
            }
            other => panic!("expected GroupLeaderDead, got {other:?}"),
        }
        // Dies while the request waits: its reason.
        let dies = spawn(async {
            let _: Term = receive().await;
            ExitReason::error("crashed on purpose")
        });
        io::set_group_leader(dies);
        match io::put_chars("lost too").await {
            Err(IoError::GroupLeaderDead { reason, .. }) => {
                assert_eq!(reason, ExitReason::error("crashed on purpose"));
            }
            other => panic!("expected GroupLeaderDead, got {other:?}"),
        }
        // No Down is left behind in the mailbox.
        assert!(ember_runtime::try_receive::<ember_runtime::Down>().is_none());
        // The macros end the calling process with a panic that says why.
        let me = self_pid();
        let printer = Spawn::new()
            .group_leader(gone)
            .monitor()
            .spawn(async move {
                io::println!("nowhere").await;
                send(me, Done);
            })
            .unwrap();
        let down = down_of(printer.monitor.unwrap()).await;
        match down.reason {
            ExitReason::Panic(message) => assert!(message.contains("is dead"), "{message}"),
            other => panic!("expected a panic, got {other:?}"),
        }
    });
}

#[test]
fn a_silent_group_leader_times_out() {
    runtime().block_on(async {
        let silent = spawn(wait_forever());
        io::set_group_leader(silent);
        let started = std::time::Instant::now();
        match io::put_chars_timeout("unanswered", Duration::from_millis(50)).await {
            Err(IoError::Timeout { leader, waited }) => {
                assert_eq!(leader, silent);
                assert_eq!(waited, Duration::from_millis(50));
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < WAIT);
        assert!(is_alive(silent));
        exit(silent, ExitReason::Kill);
    });
}

#[test]
fn user_answers_requests_it_cannot_serve_and_survives_garbage() {
    runtime().block_on(async {
        let user = io::group_leader();
        assert_eq!(whereis("user"), Some(user));
        let cases = [
            (term!({get_line, unicode, "> "}), term!({error, request})),
            (term!(get_geometry), term!({error, enotsup})),
            (
                term!({put_chars, unicode, io_lib, format, ["~f", [1.5]]}),
                term!({error, {error, format}}),
            ),
            (
                term!({put_chars, unicode, lists, flatten, [["x"]]}),
                term!({error, request}),
            ),
            (
                term!({put_chars, unicode, io_lib, format, ["~p~n", [served]]}),
                term!(ok),
            ),
            (
                term!({put_chars, unicode, [55296]}),
                term!({error, {put_chars, unicode, [55296]}}),
            ),
            (term!({put_chars, latin1, ""}), term!(ok)),
        ];
        for (request, expected) in cases {
            let reply = io::request(user, request.clone(), WAIT).await;
            assert_eq!(reply.ok(), Some(expected), "for {request}");
        }
        // Garbage: a term that is no request, a Rust value that is no term.
        send(user, term!({hello, world}));
        send(user, 42u64);
        assert_eq!(
            io::request(user, term!({put_chars, unicode, ""}), WAIT)
                .await
                .ok(),
            Some(term!(ok))
        );
        assert!(is_alive(user));
        assert_eq!(process_info(user).map(|i| i.mailbox_len), Some(0));
    });
}

#[test]
fn a_killed_user_is_started_again() {
    runtime().block_on(async {
        let user = io::group_leader();
        let m = monitor(user);
        exit(user, ExitReason::Kill);
        down_of(m).await;
        let again = io::group_leader();
        assert_ne!(again, user);
        assert_eq!(whereis("user"), Some(again));
        io::put_chars("").await.expect("the new user answers");
    });
}

#[test]
fn introspection_starts_nothing() {
    let rt = runtime();
    let handle = rt.handle().clone();
    let user = handle
        .whereis("user")
        .expect("user starts with the runtime");
    let before = handle.runtime_info().process_count;
    let pid = handle.spawn(wait_forever());
    for _ in 0..10 {
        assert_eq!(handle.process_info(pid).map(|i| i.group_leader), Some(user));
    }
    // After `user` died, introspection shows the dead pid and starts no other.
    handle.exit(user, ExitReason::Kill);
    let deadline = std::time::Instant::now() + WAIT;
    // One spawned, one killed: back to `before`, unless introspection
    // started another `user`.
    loop {
        assert_eq!(handle.process_info(pid).map(|i| i.group_leader), Some(user));
        if handle.runtime_info().process_count == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} processes, expected {before}",
            handle.runtime_info().process_count
        );
        std::thread::yield_now();
    }
    assert!(!handle.is_alive(user));
    handle.exit(pid, ExitReason::Kill);
}
