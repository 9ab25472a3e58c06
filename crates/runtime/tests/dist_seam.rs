//! The runtime's side of distribution (`docs/semantics.md` §19) against a
//! recording `Distribution` seam, without sockets: what the runtime hands
//! the seam for remote pids, and what it does with signals the seam
//! delivers through `Incoming`.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use ember_runtime::dist::{self, Distribution, Incoming, NodeDown, RemoteSignal, Target};
use ember_runtime::{
    exit, link, make_ref, monitor, receive, self_pid, send, spawn, trap_exit, Down, Exit,
    ExitReason, Handle, LinkError, Runtime,
};
use ember_term::{Atom, Pid as TermPid, Reference, Term};

/// Records every signal the runtime hands over.
struct Recorder(std::sync::Mutex<mpsc::Sender<(Atom, RemoteSignal)>>);

impl Distribution for Recorder {
    fn signal(&self, node: &Atom, signal: RemoteSignal) {
        let _ = self.0.lock().unwrap().send((node.clone(), signal));
    }
}

fn node() -> (Runtime, Incoming, mpsc::Receiver<(Atom, RemoteSignal)>) {
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let incoming = rt
        .handle()
        .start_distribution("a@h", 7, Arc::new(Recorder(std::sync::Mutex::new(tx))))
        .unwrap();
    (rt, incoming, rx)
}

/// How long a test waits for anything before it fails.
const WAIT: Duration = Duration::from_secs(10);

fn next(rx: &mpsc::Receiver<(Atom, RemoteSignal)>) -> (Atom, RemoteSignal) {
    rx.recv_timeout(WAIT).expect("a signal")
}

/// The next report of a test process, within [`WAIT`].
fn report(reports: &mpsc::Receiver<String>) -> String {
    reports
        .recv_timeout(WAIT)
        .expect("a report within the wait limit")
}

/// Receives the next `M` within [`WAIT`].
async fn recv<M: Send + 'static>() -> M {
    receive::<M>()
        .timeout(WAIT)
        .await
        .expect("a message within the wait limit")
}

/// Drops the runtime (and with it the seam's sender) and asserts that the
/// seam was handed nothing more. Dropping the runtime joins its threads, so
/// a signal sent late still arrives here, before the channel disconnects:
/// an ordering, not a guess of how long to wait.
fn assert_nothing_more(rt: Runtime, rx: mpsc::Receiver<(Atom, RemoteSignal)>, why: &str) {
    drop(rt);
    match rx.recv_timeout(WAIT) {
        Err(RecvTimeoutError::Disconnected) => {}
        Ok(signal) => panic!("{why}, but the seam was handed {signal:?}"),
        Err(RecvTimeoutError::Timeout) => panic!("the dropped runtime never let go of the seam"),
    }
}

fn remote(id: u32) -> TermPid {
    TermPid {
        node: Atom::new("b@h"),
        id,
        serial: 0,
        creation: 3,
    }
}

#[test]
fn pids_and_references_cross_as_this_nodes_and_an_old_incarnation_is_dead() {
    let (rt, incoming, rx) = node();
    assert!(matches!(
        rt.handle().start_distribution(
            "c@h",
            1,
            Arc::new(Recorder(std::sync::Mutex::new(mpsc::channel().0)))
        ),
        Err(dist::StartError::AlreadyStarted(_))
    ));
    rt.block_on(async move {
        assert_eq!(dist::node(), Atom::new("a@h"));
        let me = self_pid();
        let term = dist::pid_to_term(me);
        let Term::Pid(p) = &term else {
            panic!("{term}")
        };
        assert_eq!((p.node.as_str(), p.creation, p.id), ("a@h", 7, me.number()));
        assert_eq!(dist::pid_from_term(&term), Some(me));
        let r = make_ref();
        assert_eq!(dist::ref_from_term(&dist::ref_to_term(r)), Some(r));
        assert_eq!(dist::pid_from_term(&Term::atom("x")), None);

        // A pid of this node's previous incarnation names no process.
        let old = dist::pid_from_term(&Term::Pid(TermPid {
            creation: 6,
            ..p.clone()
        }))
        .unwrap();
        assert!(!old.is_local());
        send(old, Term::atom("lost"));
        assert_eq!(link(old), Err(LinkError::NoProc(old)));
        let watch = monitor(old);
        let down: Down = recv().await;
        assert_eq!((down.monitor, down.reason), (watch, ExitReason::NoProc));
    });
    drop(incoming);
    assert_nothing_more(rt, rx, "nothing goes out for a dead incarnation");
}

#[test]
fn signals_for_remote_pids_go_to_the_seam_as_terms() {
    let (rt, incoming, rx) = node();
    let b = Atom::new("b@h");
    let (tx, refs) = mpsc::channel();
    let linker = rt.block_on(async move {
        let r = dist::pid_from_term(&Term::Pid(remote(5))).unwrap();
        send(r, Term::atom("hi"));
        send(r, 42u32); // not a term: dropped, nothing goes out
        exit(r, ExitReason::Kill);
        spawn(async move {
            link(r).unwrap();
            let watch = monitor(r);
            tx.send(dist::ref_to_term(watch.reference())).unwrap();
            receive::<()>().await;
        })
    });
    let (node, signal) = next(&rx);
    assert_eq!(node, b);
    match signal {
        RemoteSignal::Send { to, message, .. } => {
            assert_eq!(to, remote(5));
            assert!(message.is_atom("hi"));
        }
        other => panic!("{other:?}"),
    }
    match next(&rx).1 {
        RemoteSignal::Exit2 { to, reason, .. } => {
            assert_eq!(to, remote(5));
            assert!(reason.is_atom("kill"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(next(&rx).1, RemoteSignal::Link { .. }));
    let watch = refs.recv_timeout(WAIT).unwrap();
    match next(&rx).1 {
        RemoteSignal::Monitor {
            to: Target::Pid(p),
            reference,
            ..
        } => {
            assert_eq!(p, remote(5));
            assert_eq!(Term::Reference(reference), watch);
        }
        other => panic!("{other:?}"),
    }
    // The linking, monitoring process dies: EXIT with its reason as a
    // term, and the monitor is taken back.
    rt.handle().exit(linker, ExitReason::error("gone"));
    match next(&rx).1 {
        RemoteSignal::Exit { to, reason, .. } => {
            assert_eq!(to, remote(5));
            assert_eq!(ExitReason::from_term(reason), ExitReason::error("gone"));
        }
        other => panic!("{other:?}"),
    }
    match next(&rx).1 {
        RemoteSignal::Demonitor { reference, .. } => {
            assert_eq!(Term::Reference(reference), watch)
        }
        other => panic!("{other:?}"),
    }
    drop(incoming);
    assert_nothing_more(rt, rx, "the EXIT and DEMONITOR are all a death sends");
}

#[test]
fn signals_from_peers_reach_local_processes_and_a_lost_node_fires_noconnection() {
    let (rt, incoming, rx) = node();
    let b = Atom::new("b@h");
    let h: Handle = rt.handle().clone();
    let (tx, reports) = mpsc::channel::<String>();
    let local = rt.block_on({
        let tx = tx.clone();
        async move {
            let me = self_pid();
            let p = spawn(async move {
                trap_exit(true);
                dist::monitor_node("b@h", true);
                let r = dist::pid_from_term(&Term::Pid(remote(9))).unwrap();
                link(r).unwrap();
                let watch = monitor(r);
                send(me, ());
                let m: Term = recv().await;
                tx.send(format!("message {m}")).unwrap();
                let e: Exit = recv().await;
                tx.send(format!("exit {} {}", e.from == r, e.reason))
                    .unwrap();
                let d: Down = recv().await;
                tx.send(format!("down {} {}", d.monitor == watch, d.reason))
                    .unwrap();
                let n: NodeDown = recv().await;
                tx.send(format!("nodedown {}", n.node)).unwrap();
                // Waits until the test kills it.
                receive::<()>().await;
            });
            recv::<()>().await;
            p
        }
    });
    // Not connected: monitor_node asks for a connection first.
    assert!(matches!(next(&rx).1, RemoteSignal::Connect));
    assert!(matches!(next(&rx).1, RemoteSignal::Link { .. }));
    assert!(matches!(next(&rx).1, RemoteSignal::Monitor { .. }));
    incoming.node_up(&b, 1);
    let local_term = incoming.term_pid(local);
    incoming.message(&local_term, Term::from(1));
    assert_eq!(report(&reports), "message 1");
    // A peer monitors the local process by name: noproc (no such name),
    // and by pid: recorded.
    let peer_ref = Reference {
        node: b.clone(),
        creation: 3,
        ids: vec![1, 2, 3],
    };
    incoming.monitor(
        &b,
        1,
        &remote(2),
        &Target::Name(Atom::new("nobody")),
        peer_ref.clone(),
    );
    match next(&rx).1 {
        RemoteSignal::MonitorExit {
            from: Target::Name(n),
            reason,
            ..
        } => {
            assert_eq!(n.as_str(), "nobody");
            assert!(reason.is_atom("noproc"));
        }
        other => panic!("{other:?}"),
    }
    incoming.monitor(
        &b,
        1,
        &remote(2),
        &Target::Pid(local_term.clone()),
        peer_ref.clone(),
    );
    // The connection to b is lost.
    incoming.connection_down(&b, 1);
    assert_eq!(report(&reports), "exit true noconnection");
    assert_eq!(report(&reports), "down true noconnection");
    assert_eq!(report(&reports), "nodedown b@h");
    // The peer's monitor went with the connection: the local process's
    // death sends nothing to b. A monitor from another node, c, still
    // holds: its DOWN shows that the death was handled, and it is the
    // only thing the death sends.
    let c = Atom::new("c@h");
    let from_c = TermPid {
        node: c.clone(),
        ..remote(4)
    };
    let c_ref = Reference {
        node: c.clone(),
        ..peer_ref
    };
    incoming.node_up(&c, 2);
    incoming.monitor(&c, 2, &from_c, &Target::Pid(local_term), c_ref.clone());
    h.exit(local, ExitReason::Kill);
    match next(&rx) {
        (node, RemoteSignal::MonitorExit { reference, .. }) => {
            assert_eq!((node, reference), (c, c_ref));
        }
        other => panic!("the death sent {other:?}"),
    }
    drop((h, incoming));
    assert_nothing_more(rt, rx, "a monitor of a lost connection fires no more");
}

/// A process that traps exits and, on command, links to or unlinks from
/// `remote(4)`, reporting "done" after each command and every `Exit` it
/// gets, in order.
fn linker(rt: &Runtime) -> (ember_runtime::Pid, mpsc::Receiver<String>) {
    let (tx, reports) = mpsc::channel::<String>();
    let pid = rt.block_on(async move {
        spawn(async move {
            trap_exit(true);
            let r = dist::pid_from_term(&Term::Pid(remote(4))).unwrap();
            loop {
                let e =
                    ember_runtime::receive_any(|e| e.is::<&'static str>() || e.is::<Exit>()).await;
                match e.downcast::<&'static str>() {
                    Ok("link") => {
                        link(r).unwrap();
                        tx.send("done".into()).unwrap();
                    }
                    Ok(_) => {
                        ember_runtime::unlink(r);
                        tx.send("done".into()).unwrap();
                    }
                    Err(e) => {
                        let e: Exit = e.downcast().ok().unwrap();
                        tx.send(format!("exit {}", e.reason)).unwrap();
                    }
                }
            }
        })
    });
    (pid, reports)
}

/// Runs a `linker` command and waits for it.
fn command(h: &Handle, pid: ember_runtime::Pid, reports: &mpsc::Receiver<String>, c: &'static str) {
    h.send(pid, c);
    assert_eq!(report(reports), "done", "{c}");
}

/// OTP's link protocol (`UNLINK_ID` / `UNLINK_ID_ACK`): while an unlink
/// is in flight, an `EXIT` from the peer (sent before it saw the unlink)
/// and a `LINK` that crossed it are ignored, and the peer's own unlink is
/// acknowledged; once the ack of our unlink arrives, a `LINK` from the peer
/// links again and its `EXIT` counts. An ack of another unlink changes
/// nothing.
#[test]
fn an_unlink_in_flight_ignores_the_peers_crossing_link_and_exit() {
    let (rt, incoming, rx) = node();
    let h = rt.handle().clone();
    let b = Atom::new("b@h");
    incoming.node_up(&b, 1);
    let (local, reports) = linker(&rt);
    let me = incoming.term_pid(local);
    command(&h, local, &reports, "link");
    assert!(matches!(next(&rx).1, RemoteSignal::Link { .. }));
    command(&h, local, &reports, "unlink");
    let id = match next(&rx).1 {
        RemoteSignal::Unlink { id, .. } => id,
        other => panic!("{other:?}"),
    };
    // The peer's process died before it saw the unlink: its EXIT is stale.
    incoming.exit(&b, 1, &remote(4), &me, Term::atom("old_link"), true);
    // The peer unlinked and linked again at the same time: its UNLINK_ID
    // is acknowledged, its LINK crossed ours and is ignored (no link, and
    // no EXIT noproc either: the process is alive).
    incoming.unlink(&b, 1, Term::from(77), &remote(4), &me);
    match next(&rx).1 {
        RemoteSignal::UnlinkAck { id, .. } => assert_eq!(id, Term::from(77)),
        other => panic!("{other:?}"),
    }
    incoming.link(&b, 1, &remote(4), &me);
    assert_eq!(incoming.holds_link(&me, &remote(4)), Some(false));
    // An ack of some other unlink changes nothing.
    incoming.unlink_ack(&Term::from((id + 1) as i64), &remote(4), &me);
    incoming.link(&b, 1, &remote(4), &me);
    incoming.exit(&b, 1, &remote(4), &me, Term::atom("still_old"), true);
    assert_eq!(incoming.holds_link(&me, &remote(4)), Some(false));
    // The real ack: the unlink is done, a LINK from the peer links.
    incoming.unlink_ack(&Term::from(id as i64), &remote(4), &me);
    incoming.link(&b, 1, &remote(4), &me);
    assert_eq!(incoming.holds_link(&me, &remote(4)), Some(true));
    incoming.exit(&b, 1, &remote(4), &me, Term::atom("now"), true);
    assert_eq!(report(&reports), "exit now");
    assert_eq!(incoming.holds_link(&me, &remote(4)), Some(false));
    h.exit(local, ExitReason::Kill);
    drop((h, incoming));
    assert_nothing_more(rt, rx, "the ignored LINKs and EXITs");
    assert!(reports.try_recv().is_err(), "a stale exit arrived");
}

/// Linking again while an unlink is in flight makes a new link, as OTP's
/// `link/1` does: the unlinking state ends at once, so the peer's `EXIT`
/// counts (whichever way its process died, the link is there again), and
/// the late ack of the unlink changes nothing.
#[test]
fn a_link_made_again_during_an_unlink_takes_the_peers_exit() {
    let (rt, incoming, rx) = node();
    let h = rt.handle().clone();
    let b = Atom::new("b@h");
    incoming.node_up(&b, 1);
    let (local, reports) = linker(&rt);
    let me = incoming.term_pid(local);
    command(&h, local, &reports, "link");
    command(&h, local, &reports, "unlink");
    command(&h, local, &reports, "link");
    assert!(matches!(next(&rx).1, RemoteSignal::Link { .. }));
    let id = match next(&rx).1 {
        RemoteSignal::Unlink { id, .. } => id,
        other => panic!("{other:?}"),
    };
    assert!(matches!(next(&rx).1, RemoteSignal::Link { .. }));
    assert_eq!(incoming.holds_link(&me, &remote(4)), Some(true));
    incoming.exit(&b, 1, &remote(4), &me, Term::atom("died"), true);
    assert_eq!(report(&reports), "exit died");
    // The ack, then the peer's answer to the second LINK (its process is
    // gone): the link already fired, so nothing more.
    incoming.unlink_ack(&Term::from(id as i64), &remote(4), &me);
    incoming.exit(&b, 1, &remote(4), &me, Term::atom("noproc"), true);
    assert_eq!(incoming.holds_link(&me, &remote(4)), Some(false));
    h.exit(local, ExitReason::Kill);
    drop((h, incoming));
    assert_nothing_more(rt, rx, "a fired link");
    assert!(reports.try_recv().is_err(), "a second exit arrived");
}

/// Relation signals carry the number of the connection they arrived on:
/// once the node's connection 1 is down and connection 2 is up, a `LINK`,
/// `MONITOR_P`, `UNLINK_ID` or `EXIT` still coming from connection 1 (a
/// reader finishing its last frame) is not applied to the new connection's
/// relations, and answers nothing.
#[test]
fn signals_from_a_replaced_connection_are_not_applied_to_the_new_one() {
    let (rt, incoming, rx) = node();
    let h = rt.handle().clone();
    let b = Atom::new("b@h");
    let (local, reports) = linker(&rt);
    let me = incoming.term_pid(local);
    incoming.node_up(&b, 1);
    incoming.connection_down(&b, 1);
    incoming.node_up(&b, 2);
    // A stale LINK and MONITOR_P: no link, no monitor, no answer.
    incoming.link(&b, 1, &remote(4), &me);
    assert_eq!(incoming.holds_link(&me, &remote(4)), Some(false));
    let stale_ref = Reference {
        node: b.clone(),
        creation: 3,
        ids: vec![5, 6, 7],
    };
    incoming.monitor(&b, 1, &remote(4), &Target::Pid(me.clone()), stale_ref);
    // A link on the live connection; a stale UNLINK_ID and EXIT leave it.
    command(&h, local, &reports, "link");
    assert!(matches!(next(&rx).1, RemoteSignal::Link { .. }));
    incoming.unlink(&b, 1, Term::from(9), &remote(4), &me);
    incoming.exit(&b, 1, &remote(4), &me, Term::atom("stale"), true);
    assert_eq!(incoming.holds_link(&me, &remote(4)), Some(true));
    // A down of the replaced connection changes nothing either.
    incoming.connection_down(&b, 1);
    assert_eq!(incoming.holds_link(&me, &remote(4)), Some(true));
    // The live connection's EXIT counts.
    incoming.exit(&b, 2, &remote(4), &me, Term::atom("live"), true);
    assert_eq!(report(&reports), "exit live");
    // The process's death sends nothing to b: it holds no relation there
    // (the stale monitor would have sent a MONITOR_P_EXIT).
    h.exit(local, ExitReason::Kill);
    drop((h, incoming));
    assert_nothing_more(rt, rx, "stale signals were applied");
}
