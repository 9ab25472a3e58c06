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
        &remote(2),
        &Target::Pid(local_term.clone()),
        peer_ref.clone(),
    );
    // The connection to b is lost.
    incoming.node_down(&b);
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
    incoming.monitor(&c, &from_c, &Target::Pid(local_term), c_ref.clone());
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

/// `UNLINK_ID` / `UNLINK_ID_ACK`: after an unlink, an `EXIT` from the
/// peer that was sent before it saw the unlink is stale and ignored, even
/// when the process linked again at once; once the ack arrives, the new
/// link's `EXIT` counts. A link fired by a lost connection is no longer
/// held, so its queued `LINK` is not sent on the next connection.
#[test]
fn an_unlink_and_relink_never_sees_the_old_links_exit() {
    let (rt, incoming, rx) = node();
    let (tx, reports) = mpsc::channel::<String>();
    let local = rt.block_on(async move {
        spawn(async move {
            trap_exit(true);
            let r = dist::pid_from_term(&Term::Pid(remote(4))).unwrap();
            link(r).unwrap();
            ember_runtime::unlink(r);
            link(r).unwrap();
            tx.send("relinked".into()).unwrap();
            // Every Exit that arrives, reported in order.
            loop {
                let e: Exit = receive().await;
                tx.send(format!("exit {}", e.reason)).unwrap();
            }
        })
    });
    assert_eq!(
        reports.recv_timeout(Duration::from_secs(10)).unwrap(),
        "relinked"
    );
    assert!(matches!(next(&rx).1, RemoteSignal::Link { .. }));
    let id = match next(&rx).1 {
        RemoteSignal::Unlink { id, .. } => id,
        other => panic!("{other:?}"),
    };
    assert!(matches!(next(&rx).1, RemoteSignal::Link { .. }));
    let me = incoming.term_pid(local);
    assert_eq!(incoming.holds_link(&me, &remote(4)), Some(true));
    // The peer's process died before it saw the unlink: its EXIT is stale.
    incoming.exit(&remote(4), &me, Term::atom("old_link"), true);
    // An ack of some other unlink changes nothing; then the real ack.
    incoming.unlink_ack(&Term::from((id + 1) as i64), &remote(4), &me);
    incoming.exit(&remote(4), &me, Term::atom("still_old"), true);
    incoming.unlink_ack(&Term::from(id as i64), &remote(4), &me);
    // The new link's answer: the peer's process is gone.
    incoming.exit(&remote(4), &me, Term::atom("noproc"), true);
    assert_eq!(
        reports.recv_timeout(Duration::from_secs(10)).unwrap(),
        "exit noproc"
    );
    assert!(
        reports.recv_timeout(Duration::from_millis(200)).is_err(),
        "a second exit arrived"
    );
    assert_eq!(incoming.holds_link(&me, &remote(4)), Some(false));
}
