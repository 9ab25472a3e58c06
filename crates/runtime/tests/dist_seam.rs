//! The runtime's side of distribution (`docs/semantics.md` §19) against a
//! recording `Distribution` seam, without sockets: what the runtime hands
//! the seam for remote pids, and what it does with signals the seam
//! delivers through `Incoming`.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use ember_runtime::dist::{self, Distribution, Incoming, NodeDown, RemoteSignal, Target};
use ember_runtime::{
    exit, link, make_ref, monitor, receive, self_pid, send, spawn, trap_exit, Down, Exit,
    ExitReason, Handle, LinkError, Pid, Runtime,
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

fn next(rx: &mpsc::Receiver<(Atom, RemoteSignal)>) -> (Atom, RemoteSignal) {
    rx.recv_timeout(Duration::from_secs(10)).expect("a signal")
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
    let (rt, _incoming, rx) = node();
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
        let down: Down = receive().await;
        assert_eq!((down.monitor, down.reason), (watch, ExitReason::NoProc));
    });
    assert!(
        rx.try_recv().is_err(),
        "nothing goes out for a dead incarnation"
    );
}

#[test]
fn signals_for_remote_pids_go_to_the_seam_as_terms() {
    let (rt, _incoming, rx) = node();
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
    let watch = refs.recv_timeout(Duration::from_secs(10)).unwrap();
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
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
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
                let m: Term = receive().await;
                tx.send(format!("message {m}")).unwrap();
                let e: Exit = receive().await;
                tx.send(format!("exit {} {}", e.from == r, e.reason))
                    .unwrap();
                let d: Down = receive().await;
                tx.send(format!("down {} {}", d.monitor == watch, d.reason))
                    .unwrap();
                let n: NodeDown = receive().await;
                tx.send(format!("nodedown {}", n.node)).unwrap();
                receive::<()>().await;
            });
            receive::<()>().await;
            p
        }
    });
    // Not connected: monitor_node asks for a connection first.
    assert!(matches!(next(&rx).1, RemoteSignal::Connect));
    assert!(matches!(next(&rx).1, RemoteSignal::Link { .. }));
    assert!(matches!(next(&rx).1, RemoteSignal::Monitor { .. }));
    let local_term = incoming.term_pid(local);
    incoming.message(&local_term, Term::from(1));
    assert_eq!(reports.recv().unwrap(), "message 1");
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
    assert_eq!(reports.recv().unwrap(), "exit true noconnection");
    assert_eq!(reports.recv().unwrap(), "down true noconnection");
    assert_eq!(reports.recv().unwrap(), "nodedown b@h");
    // The peer's monitor went with the connection: the local process's
    // death sends nothing.
    h.exit(local, ExitReason::Kill);
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    let _ = Pid::OUTSIDE;
}
