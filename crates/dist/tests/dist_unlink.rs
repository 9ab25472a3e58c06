//! OTP's link protocol (`DFLAG_UNLINK_ID`) and connection numbers against
//! a real `erl` node: an erl process that links back once it has seen an
//! Ember process's unlink is linked (Ember applied the `UNLINK_ID_ACK`
//! before the `LINK` behind it, so the `LINK` is not taken for one that
//! crossed the unlink); `unlink` then `link` at once makes a link that
//! takes the erl process's exit; and after a connection is lost and made
//! again, links are made and fire on the new connection. The crossing
//! cases themselves (a `LINK` or `EXIT` arriving while an unlink is in
//! flight, signals of a replaced connection) cannot be timed against a
//! real node: `crates/runtime/tests/dist_seam.rs` drives them exactly.
//!
//! Needs `erl` (see dist_erl_interop.rs for how it is found or skipped).
//! Every wait has a deadline; where two signals must be in place before
//! the next step, the test waits for a message that travelled behind them
//! (signals from one process to another keep their order).

mod support;

use ember_runtime::dist;
use ember_runtime::{link, receive, self_pid, send, trap_exit, unlink, Exit, ExitReason, Spawn};
use ember_term::Term;
use ember_testkit::{erl_required, free_port, random_cookie, start_erl, unique, DEADLINE};
use support::ember::{next_term, EmberNode, Reports};

#[test]
fn unlink_acks_relinks_and_reconnects_work_with_erl() {
    if !erl_required() {
        return;
    }
    let port = free_port();
    let cookie = random_cookie();
    let ember = EmberNode::start(&unique("ember"), &cookie, port);
    let mut erl = start_erl(&unique("erl"), &cookie, port, &[]);
    let e = ember.name.clone();
    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
    let (tx, reports) = Reports::new();

    // 1. Ember links to V1 and unlinks; V1, having seen the unlink (its
    // {link_me, ...} comes behind it), links back. Ember must take that
    // LINK: when the Ember process is killed, V1 (trapping) gets its EXIT.
    let tx1 = tx.clone();
    let unlinker = ember
        .handle()
        .spawn_with(Spawn::new().name("unlinker"), async move {
            trap_exit(true);
            let m = next_term().await; // {V1, Tester}
            let [v, tester] = m.as_tuple().unwrap() else {
                panic!("{m}")
            };
            let v1 = dist::pid_from_term(v).unwrap();
            link(v1).unwrap();
            unlink(v1);
            send(
                v1,
                Term::tuple([
                    Term::atom("link_me"),
                    dist::pid_to_term(self_pid()),
                    tester.clone(),
                ]),
            );
            // V1 sends `linked` behind its LINK.
            tx1.send(next_term().await.to_string()).unwrap();
            receive::<()>().await;
        })
        .unwrap()
        .pid;
    erl.eval(
        "put(v1, spawn(fun() -> process_flag(trap_exit, true), \
         receive {link_me, EP, T} -> link(EP), EP ! linked, \
         receive {'EXIT', EP, R} -> T ! {v1_exit, R} after 20000 -> T ! {v1_exit, none} end \
         end end)).",
    );
    erl.eval(&format!("{{unlinker, '{e}'}} ! {{get(v1), self()}}, ok."));
    assert_eq!(reports.next("V1's message behind its LINK"), "linked");
    ember.handle().exit(unlinker, ExitReason::Kill);
    assert_eq!(
        erl.eval("receive {v1_exit, R} -> R after 30000 -> timeout end."),
        "killed",
        "the LINK V1 made after the unlink was not taken"
    );

    // 2. unlink then link at once: a new link, which takes V2's exit.
    let tx2 = tx.clone();
    ember
        .handle()
        .spawn_with(Spawn::new().name("relinker"), async move {
            trap_exit(true);
            let m = next_term().await; // {V2, Tester}
            let [v, tester] = m.as_tuple().unwrap() else {
                panic!("{m}")
            };
            let v2 = dist::pid_from_term(v).unwrap();
            link(v2).unwrap();
            unlink(v2);
            link(v2).unwrap();
            send(v2, Term::tuple([Term::atom("ack"), tester.clone()]));
            let exit: Exit = receive().timeout(DEADLINE).await.expect("V2's exit");
            assert_eq!(exit.from, v2);
            tx2.send(exit.reason.to_string()).unwrap();
        })
        .unwrap();
    erl.eval(
        "put(v2, spawn(fun() -> receive {ack, T} -> T ! acked end, receive never -> ok end end)).",
    );
    assert_eq!(
        erl.eval(&format!(
            "{{relinker, '{e}'}} ! {{get(v2), self()}}, receive acked -> ok after 10000 -> timeout end."
        )),
        "ok"
    );
    assert_eq!(
        erl.eval("{links, L} = process_info(get(v2), links), length(L)."),
        "1"
    );
    erl.eval("exit(get(v2), kill).");
    assert_eq!(reports.next("V2's exit along the new link"), "killed");

    // 3. A link fires with noconnection when erl drops the connection (V3
    // traps exits, so it survives its side firing); linked again over the
    // next connection, it holds and fires there.
    let tx3 = tx.clone();
    ember
        .handle()
        .spawn_with(Spawn::new().name("reconnecter"), async move {
            trap_exit(true);
            let m = next_term().await; // {V3, Tester}
            let [v, tester] = m.as_tuple().unwrap() else {
                panic!("{m}")
            };
            let v3 = dist::pid_from_term(v).unwrap();
            for _ in 0..2 {
                link(v3).unwrap();
                send(v3, Term::tuple([Term::atom("ack"), tester.clone()]));
                let exit: Exit = receive().timeout(DEADLINE).await.expect("V3's exit");
                assert_eq!(exit.from, v3);
                tx3.send(exit.reason.to_string()).unwrap();
            }
        })
        .unwrap();
    erl.eval(
        "put(v3, spawn(fun() -> process_flag(trap_exit, true), \
         L = fun L() -> receive {ack, T} -> T ! acked, L() end end, L() end)).",
    );
    assert_eq!(
        erl.eval(&format!(
            "{{reconnecter, '{e}'}} ! {{get(v3), self()}}, receive acked -> ok after 10000 -> timeout end."
        )),
        "ok"
    );
    assert_eq!(erl.eval(&format!("disconnect_node('{e}').")), "true");
    assert_eq!(reports.next("the link's noconnection"), "noconnection");
    // The Ember process links again: a new connection, and V3's ack
    // behind the LINK says it is in place.
    assert_eq!(
        erl.eval("receive acked -> ok after 10000 -> timeout end."),
        "ok"
    );
    assert_eq!(
        erl.eval("{links, L} = process_info(get(v3), links), length(L)."),
        "1"
    );
    erl.eval("exit(get(v3), kill).");
    assert_eq!(reports.next("V3's exit on the new connection"), "killed");
}

/// The same between two Ember nodes: Q on B links back to P on A once it
/// has seen P's unlink (the `UNLINK_ID_ACK` goes before Q's `LINK`), so A
/// takes the `LINK` and P's death reaches Q; and a process that unlinks
/// and links again at once takes the peer's exit.
#[test]
fn unlink_acks_and_relinks_work_between_ember_nodes() {
    let port = free_port();
    let cookie = random_cookie();
    let a = EmberNode::start(&unique("a"), &cookie, port);
    let b = EmberNode::start(&unique("b"), &cookie, port);
    let (tx, reports) = Reports::new();

    // Q on B: links back to whoever asks, says so behind its LINK, and
    // reports the exit signal that comes along the link.
    let txq = tx.clone();
    let q = b
        .handle()
        .spawn_with(Spawn::new().name("q"), async move {
            trap_exit(true);
            let m = next_term().await; // {link_me, P}
            let p = dist::pid_from_term(&m.as_tuple().unwrap()[1]).unwrap();
            link(p).unwrap();
            send(p, Term::atom("linked"));
            let exit: Exit = receive().timeout(DEADLINE).await.expect("P's exit");
            assert_eq!(exit.from, p);
            txq.send(format!("q got {}", exit.reason)).unwrap();
        })
        .unwrap()
        .pid;
    let q_term = b.rt.block_on(async move { dist::pid_to_term(q) });
    let b_name = b.name.clone();

    let txp = tx.clone();
    let p = a
        .handle()
        .spawn_with(Spawn::new().name("p"), async move {
            trap_exit(true);
            let q = dist::pid_from_term(&q_term).unwrap();
            link(q).unwrap();
            unlink(q);
            dist::send_named(
                "q",
                &b_name,
                Term::tuple([Term::atom("link_me"), dist::pid_to_term(self_pid())]),
            );
            txp.send(next_term().await.to_string()).unwrap();
            receive::<()>().await;
        })
        .unwrap()
        .pid;
    assert_eq!(reports.next("Q's message behind its LINK"), "linked");
    a.handle().exit(p, ExitReason::Kill);
    assert_eq!(reports.next("P's exit at Q"), "q got killed");

    // R on A links to S on B, unlinks and links again at once; S dies.
    let s = b
        .handle()
        .spawn_with(Spawn::new().name("s"), async move {
            let _ = next_term().await;
        })
        .unwrap()
        .pid;
    let s_term = b.rt.block_on(async move { dist::pid_to_term(s) });
    let b_name = b.name.clone();
    let txr = tx.clone();
    a.handle()
        .spawn_with(Spawn::new().name("r"), async move {
            trap_exit(true);
            let s = dist::pid_from_term(&s_term).unwrap();
            link(s).unwrap();
            unlink(s);
            link(s).unwrap();
            // Behind the LINK: S ends (normally: a trapping process gets
            // that reason too).
            dist::send_named("s", &b_name, Term::atom("go"));
            let exit: Exit = receive().timeout(DEADLINE).await.expect("S's exit");
            assert_eq!(exit.from, s);
            txr.send(format!("r got {}", exit.reason)).unwrap();
        })
        .unwrap();
    assert_eq!(reports.next("S's exit at R"), "r got normal");
}
