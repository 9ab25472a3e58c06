//! A pid (or reference) that names the receiving `erl` node but that it
//! would never make — a number or serial out of its range — is refused on
//! Ember's side with an error instead of being sent: `erl` takes a message
//! holding one for a corrupted external term and closes the connection.

mod support;

use std::time::Duration;

use ember_dist::DistError;
use ember_runtime::dist::{self, NodeDown};
use ember_runtime::{receive, self_pid, send, Spawn};
use ember_term::{Pid as TermPid, Reference, Term};
use ember_testkit::{erl_required, free_port, random_cookie, start_erl, unique};
use support::ember::{next_term, EmberNode, Reports};

#[test]
fn made_up_pids_of_erl_are_refused_and_the_connection_survives() {
    if !erl_required() {
        return;
    }
    let port = free_port();
    let cookie = random_cookie();
    let ember = EmberNode::start(&unique("ember"), &cookie, port);
    let mut erl = start_erl(&unique("erl"), &cookie, port, &[]);
    let erl_name = erl.name.clone();
    let (tx, reports) = Reports::new();
    let (pid_tx, pid_reports) = Reports::new();
    let probe_tx = tx.clone();
    ember
        .handle()
        .spawn_with(Spawn::new().name("probe"), async move {
            let tx = probe_tx;
            // erl's echo process introduces itself: {echo, Pid}.
            let m = next_term().await;
            let Some([_, Term::Pid(echo_term)]) = m.as_tuple() else {
                panic!("not {{echo, Pid}}: {m}")
            };
            let echo = dist::pid_from_term(&Term::Pid(echo_term.clone())).unwrap();
            pid_tx.send(echo_term.clone()).unwrap();
            dist::monitor_node(&erl_name, true);
            // Pids of erl's own node (its name and creation) it never makes.
            let made_up = [
                TermPid {
                    id: 999_999,
                    ..echo_term.clone()
                },
                TermPid {
                    serial: 1 << 20,
                    ..echo_term.clone()
                },
            ];
            for pid in made_up {
                send(echo, Term::tuple([Term::atom("bad"), Term::Pid(pid)]));
            }
            let bad_ref = Reference {
                node: echo_term.node.clone(),
                creation: echo_term.creation,
                ids: vec![u32::MAX, 1, 2],
            };
            send(
                echo,
                Term::tuple([Term::atom("bad"), Term::Reference(bad_ref)]),
            );
            // A pid of an earlier incarnation of erl, and one of another
            // node, are fine (erl takes them as external pids).
            let fine = [
                TermPid {
                    id: 999_999,
                    creation: echo_term.creation.wrapping_add(1),
                    ..echo_term.clone()
                },
                TermPid {
                    node: ember_term::Atom::new("other@host"),
                    id: u32::MAX,
                    serial: u32::MAX,
                    creation: 7,
                },
            ];
            for pid in fine {
                send(
                    echo,
                    Term::tuple([
                        Term::atom("echo"),
                        dist::pid_to_term(self_pid()),
                        Term::Pid(pid),
                    ]),
                );
                tx.send(format!("echoed {}", next_term().await)).unwrap();
            }
            // Behind them on the same connection: still answered.
            send(
                echo,
                Term::tuple([
                    Term::atom("echo"),
                    dist::pid_to_term(self_pid()),
                    Term::atom("still_here"),
                ]),
            );
            tx.send(format!("echoed {}", next_term().await)).unwrap();
            let down = receive::<NodeDown>()
                .timeout(Duration::from_millis(300))
                .await;
            tx.send(format!("nodedown={}", down.is_some())).unwrap();
        })
        .unwrap();
    let e = &ember.name;
    erl.send(&format!(
        "Echo = spawn(fun Loop() -> receive {{echo, T, M}} -> T ! M; _ -> ok end, Loop() end), {{probe, '{e}'}} ! {{echo, Echo}}, ok."
    ));
    assert_eq!(erl.answer("the echo"), "ok");
    let earlier = reports.next("a pid of an earlier erl");
    assert!(earlier.starts_with("echoed <"), "{earlier}");
    let other = reports.next("a pid of another node");
    assert!(other.starts_with("echoed <"), "{other}");
    assert_eq!(reports.next("the echo behind"), "echoed still_here");
    assert_eq!(reports.next("the connection"), "nodedown=false");
    // The node API refuses with an error, and queues nothing.
    let echo_pid = pid_reports.next("erl's echo pid");
    let made_up = Term::Pid(TermPid {
        id: 1 << 27,
        ..echo_pid.clone()
    });
    let node = &ember.node;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (sent, tried) = tokio.block_on(async {
        let message = Term::tuple([Term::atom("bad"), made_up.clone()]);
        let sent = node
            .send(&Term::Pid(echo_pid.clone()), message.clone())
            .await;
        let tried = node.try_send(&made_up, message);
        (sent, tried)
    });
    assert!(matches!(sent, Err(DistError::BadPid(_))), "{sent:?}");
    assert!(matches!(tried, Err(DistError::BadPid(_))), "{tried:?}");
    assert_eq!(erl.eval(&format!("lists:member('{e}', nodes())."),), "true");
}
