//! Two Ember runtimes as two nodes in one test process: messages, links,
//! monitors, gen_server calls and rpc between their processes, and a node
//! stopping under live links and monitors.

mod support;

use std::time::{Duration, Instant};

use ember_dist::{Functions, Raise};
use ember_otp::gen::{CallError, ReplyTo, StartOptions};
use ember_otp::gen_server::{self, call_term, CallReturn, GenServer, Init, TermServer};
use ember_runtime::dist::{self, NodeDown};
use ember_runtime::io::IoRequest;
use ember_runtime::{
    link, monitor, receive, receive_any, self_pid, send, trap_exit, Down, Exit, ExitReason, Spawn,
};
use ember_term::Term;
use ember_testkit::{free_port, random_cookie, unique};
use support::ember::{EmberNode, Reports};

/// A server that adds numbers sent as terms.
struct Adder(i64);

impl GenServer for Adder {
    type Args = ();
    type Call = i64;
    type Reply = i64;
    type Cast = ();
    type Continue = ();

    async fn init(_: ()) -> Init<Self> {
        Init::Ok(Adder(0))
    }

    async fn handle_call(&mut self, n: i64, _from: &ReplyTo<i64>) -> CallReturn<Self> {
        self.0 += n;
        CallReturn::Reply(self.0)
    }

    fn call_from_term(request: Term) -> Result<i64, Term> {
        request
            .as_int()
            .ok_or_else(|| Term::tuple([Term::atom("not_an_integer"), request]))
    }

    fn reply_to_term(total: i64) -> Term {
        Term::from(total)
    }
}

fn two_nodes() -> (EmberNode, EmberNode) {
    let port = free_port();
    let cookie = random_cookie();
    let mut functions = Functions::new();
    functions.register("demo", "twice", 1, |args| async move {
        match args[0].as_int() {
            Some(n) => Ok(Term::from(2 * n)),
            None => Err(Raise::Error(Term::atom("badarg"))),
        }
    });
    functions.register("demo", "shout", 1, |args| async move {
        ember_runtime::io::println!("{}", args[0]).await;
        Ok(Term::atom("ok"))
    });
    let a = EmberNode::start_with(&unique("a"), &cookie, port, functions);
    let b = EmberNode::start(&unique("b"), &cookie, port);
    (a, b)
}

async fn next_term() -> Term {
    receive::<Term>()
        .timeout(Duration::from_secs(10))
        .await
        .expect("a term within 10 s")
}

#[test]
fn processes_of_two_ember_nodes_talk_link_monitor_call_and_rpc() {
    let (a, b) = two_nodes();
    let a_name = a.name.clone();
    let (tx, reports) = Reports::new();
    // On A: an echo by name, a server, a process that dies on request.
    a.handle()
        .spawn_with(Spawn::new().name("echo"), async {
            loop {
                let m = next_term().await;
                if let Some([from, body]) = m.as_tuple() {
                    send(dist::pid_from_term(from).unwrap(), body.clone());
                }
            }
        })
        .unwrap();
    let a_handle = a.handle().clone();
    a.rt.block_on(async move {
        let _ = a_handle;
        gen_server::start_with::<Adder>((), StartOptions::new().name("adder"))
            .await
            .unwrap();
    });
    a.handle()
        .spawn_with(Spawn::new().name("mortal"), async {
            let m = next_term().await;
            ExitReason::from_term(m)
        })
        .unwrap();

    b.handle().spawn(async move {
        trap_exit(true);
        let wait = Duration::from_secs(10);
        // By name, then the answer to our pid.
        dist::send_named(
            "echo",
            &a_name,
            Term::tuple([dist::pid_to_term(self_pid()), Term::atom("hello")]),
        );
        tx.send(next_term().await.to_string()).unwrap();
        // Term calls to a GenServer on the other node.
        let adder = TermServer::Name {
            name: "adder".into(),
            node: a_name.clone(),
        };
        let first = call_term(&adder, Term::from(40), wait).await;
        let second = call_term(&adder, Term::from(2), wait).await;
        let bad = call_term(&adder, Term::atom("x"), wait).await;
        tx.send(format!("{first:?} {second:?} {bad:?}")).unwrap();
        let none = TermServer::Name {
            name: "none".into(),
            node: a_name.clone(),
        };
        let missing = call_term(&none, Term::from(1), wait).await;
        tx.send(format!("{:?}", missing == Err(CallError::NoProc)))
            .unwrap();
        // rpc into A's registered functions.
        let twice =
            ember_dist::rpc_call(&a_name, "demo", "twice", vec![Term::from(21)], wait).await;
        let undef = ember_dist::rpc_call(&a_name, "demo", "nope", vec![], wait).await;
        tx.send(format!("{twice} {undef}")).unwrap();
        // Link and monitor (by name) the mortal; it dies with a term reason.
        let by_name = dist::monitor_name("mortal", &a_name);
        dist::send_named(
            "echo",
            &a_name,
            Term::tuple([dist::pid_to_term(self_pid()), Term::atom("sync")]),
        );
        assert!(next_term().await.is_atom("sync"));
        let reason = Term::tuple([Term::atom("shutdown"), Term::atom("bye")]);
        dist::send_named("mortal", &a_name, reason.clone());
        let down: Down = receive()
            .matching(move |d: &Down| d.monitor == by_name)
            .timeout(wait)
            .await
            .unwrap();
        tx.send(format!(
            "{} {} {}",
            down.name.map(|n| n.name.to_string()).unwrap_or_default(),
            down.reason.to_term() == reason,
            down.reason.is_orderly()
        ))
        .unwrap();
    });
    assert_eq!(reports.next("the echo by name"), "hello");
    assert_eq!(
        reports.next("the term calls"),
        format!(
            "Ok({:?}) Ok({:?}) Ok({:?})",
            Term::from(40),
            Term::from(42),
            Term::tuple([
                Term::atom("error"),
                Term::tuple([Term::atom("not_an_integer"), Term::atom("x")])
            ])
        )
    );
    assert_eq!(reports.next("a call to a name nobody has"), "true");
    assert_eq!(
        reports.next("rpc"),
        "42 {badrpc,{'EXIT',{undef,[{demo,nope,[],[]}]}}}"
    );
    assert_eq!(reports.next("the DOWN by name"), "mortal true true");
}

#[test]
fn a_function_run_by_rpc_on_another_node_prints_through_the_callers_group_leader() {
    let (a, b) = two_nodes();
    let a_name = a.name.clone();
    let (tx, reports) = Reports::new();
    // On B: a group leader that reports what it is asked to print.
    let printed = tx.clone();
    let collector = b.handle().spawn(async move {
        loop {
            let m = receive::<Term>().await;
            if let Some(request) = IoRequest::from_term(&m) {
                let text = request.chars().unwrap_or_else(|e| format!("bad {e}"));
                printed.send(format!("printed {text}")).unwrap();
                request.reply(Term::atom("ok"));
            }
        }
    });
    b.handle()
        .spawn_with(Spawn::new().group_leader(collector), async move {
            let wait = Duration::from_secs(10);
            let args = vec![Term::tuple([Term::atom("hi"), Term::from(1)])];
            let value = ember_dist::rpc_call(&a_name, "demo", "shout", args, wait).await;
            tx.send(format!("rpc {value}")).unwrap();
        })
        .unwrap();
    assert_eq!(
        reports.next("the text at the caller's group leader"),
        "printed {hi,1}\n"
    );
    assert_eq!(reports.next("the rpc's value"), "rpc ok");
}

#[test]
fn a_node_stopping_fires_noconnection_and_nodedown_on_the_other() {
    let (a, b) = two_nodes();
    let a_name = a.name.clone();
    // On A: answers {From, Any} with its own pid.
    a.handle()
        .spawn_with(Spawn::new().name("target"), async {
            loop {
                let m = next_term().await;
                if let Some([from, _]) = m.as_tuple() {
                    let me = dist::pid_to_term(self_pid());
                    send(dist::pid_from_term(from).unwrap(), me);
                }
            }
        })
        .unwrap();
    let (tx, reports) = Reports::new();
    b.handle().spawn(async move {
        trap_exit(true);
        let me = dist::pid_to_term(self_pid());
        let ask = Term::tuple([me, Term::atom("who")]);
        dist::monitor_node(&a_name, true);
        let by_name = dist::monitor_name("target", &a_name);
        dist::send_named("target", &a_name, ask.clone());
        let target = dist::pid_from_term(&next_term().await).unwrap();
        link(target).unwrap();
        let by_pid = monitor(target);
        // A round trip behind the LINK and MONITOR_P: both are in place.
        send(target, ask);
        next_term().await;
        tx.send("ready".to_string()).unwrap();
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let m = receive_any(|_| true).await;
            let m = match m.downcast::<Down>() {
                Ok(d) => {
                    let how = if d.monitor == by_name { "name" } else { "pid" };
                    assert!(d.monitor == by_name || d.monitor == by_pid);
                    seen.push(format!("down by {how} {}", d.reason));
                    continue;
                }
                Err(m) => m,
            };
            let m = match m.downcast::<Exit>() {
                Ok(e) => {
                    assert_eq!(e.from, target);
                    seen.push(format!("exit {}", e.reason));
                    continue;
                }
                Err(m) => m,
            };
            if let Ok(n) = m.downcast::<NodeDown>() {
                seen.push(format!("nodedown {}", n.node));
            }
        }
        seen.sort();
        tx.send(seen.join(", ")).unwrap();
    });
    assert_eq!(
        reports.next("b is linked to and monitors a's target"),
        "ready"
    );
    let stopped = Instant::now();
    a.node.stop();
    let seen = reports.within(Duration::from_secs(5), "noconnection and nodedown");
    let took = stopped.elapsed();
    assert_eq!(
        seen,
        format!(
            "down by name noconnection, down by pid noconnection, exit noconnection, nodedown {}",
            a.name
        )
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
}
