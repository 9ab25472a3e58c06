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
use ember_runtime::{link, monitor, receive, self_pid, send, trap_exit, Down, ExitReason, Spawn};
use ember_term::Term;
use ember_testkit::{free_port, random_cookie, unique};
use support::ember::{connection_loss_signals, next_term, EmberNode, Reports};

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
    ember_dist::register_introspection(&mut functions);
    let a = EmberNode::start_with(&unique("a"), &cookie, port, functions);
    let b = EmberNode::start(&unique("b"), &cookie, port);
    (a, b)
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

/// `{Item, Value}` of a Top row's proplist.
fn item(row: &Term, name: &str) -> Term {
    let items = row
        .as_tuple()
        .and_then(|t| t[1].as_list())
        .expect("{Pid, Items}");
    items
        .iter()
        .filter_map(Term::as_tuple)
        .find(|kv| kv[0].is_atom(name))
        .map(|kv| kv[1].clone())
        .unwrap_or_else(|| panic!("no {name} in {row}"))
}

/// The yields of the process that ran long ago in
/// [`remote_top_ranks_by_the_reductions_of_the_last_window`].
const OLD_YIELDS: usize = 400_000;

#[test]
fn remote_top_ranks_by_the_reductions_of_the_last_window() {
    let (a, b) = two_nodes();
    let a_name = a.name.clone();
    let (tx, reports) = Reports::new();
    let (pids_tx, pids) = std::sync::mpsc::channel();
    a.handle().spawn(async move {
        // Ran a lot, long ago: most reductions in all. Counted, not timed:
        // on a loaded machine a timed run could do fewer than the busy one
        // below does by the end of the window, and the premise would fail.
        let old = Spawn::new()
            .spawn(async {
                for _ in 0..OLD_YIELDS {
                    ember_runtime::yield_point().await;
                }
                receive::<()>().await;
            })
            .unwrap()
            .pid;
        // Wait until it is done, then one that runs now.
        loop {
            ember_runtime::sleep(Duration::from_millis(50)).await;
            let info = ember_runtime::introspect::process_info(old).expect("old lives");
            if info.status == ember_runtime::Status::Waiting && info.reductions > 0 {
                break;
            }
        }
        // Runs now: flat out for a quarter of the old one's yields, then
        // on, a yield each millisecond (still the busiest in the window),
        // so however long the call takes its total stays below the old
        // one's.
        let busy = Spawn::new()
            .spawn(async {
                for _ in 0..OLD_YIELDS / 4 {
                    ember_runtime::yield_point().await;
                }
                loop {
                    ember_runtime::yield_point().await;
                    ember_runtime::sleep(Duration::from_millis(1)).await;
                }
            })
            .unwrap()
            .pid;
        pids_tx
            .send((dist::pid_to_term(old), dist::pid_to_term(busy)))
            .unwrap();
        receive::<()>().await;
    });
    let (old, busy) = pids
        .recv_timeout(Duration::from_secs(30))
        .expect("the two processes of A");
    b.handle().spawn(async move {
        let wait = Duration::from_secs(10);
        let top = ember_dist::rpc_call(
            &a_name,
            "ember_introspect",
            "top",
            vec![Term::from(50)],
            wait,
        )
        .await;
        let rows = top
            .as_list()
            .unwrap_or_else(|| panic!("top: {top}"))
            .to_vec();
        let row_of = |pid: &Term| {
            rows.iter()
                .find(|r| r.as_tuple().is_some_and(|t| &t[0] == pid))
                .unwrap_or_else(|| panic!("{pid} not in {top}"))
        };
        let (old_row, busy_row) = (row_of(&old), row_of(&busy));
        let total = |r: &Term| item(r, "reductions").as_int().unwrap();
        let recent = |r: &Term| item(r, "ember_reductions_delta").as_int().unwrap();
        // The premise: the idle one has more reductions in all.
        tx.send(format!(
            "old ran more in all: {} ({} vs {})",
            total(old_row) > total(busy_row),
            total(old_row),
            total(busy_row)
        ))
        .unwrap();
        tx.send(format!("first: {}", rows[0].as_tuple().unwrap()[0] == busy))
            .unwrap();
        tx.send(format!("old idle: {}", recent(old_row) == 0))
            .unwrap();
    });
    assert!(reports
        .next("premise")
        .starts_with("old ran more in all: true"));
    assert_eq!(reports.next("rank"), "first: true");
    assert_eq!(reports.next("old's window"), "old idle: true");
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
        let seen = connection_loss_signals(4, target, |d| {
            assert!(d.monitor == by_name || d.monitor == by_pid);
            if d.monitor == by_name {
                "down by name"
            } else {
                "down by pid"
            }
        })
        .await;
        tx.send(seen).unwrap();
    });
    assert_eq!(
        reports.next("b is linked to and monitors a's target"),
        "ready"
    );
    let stopped = Instant::now();
    a.node.stop();
    let seen = reports.within(Duration::from_secs(20), "noconnection and nodedown");
    let took = stopped.elapsed();
    assert_eq!(
        seen,
        format!(
            "down by name noconnection, down by pid noconnection, exit noconnection, nodedown {}",
            a.name
        )
    );
    // At once, not after net_ticktime (60 s): the bound leaves a busy
    // machine seconds of slack.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// A process whose group leader is on another node keeps printing when
/// that node goes away: the output goes to its own node's group leader,
/// which becomes its group leader, instead of failing (or, with
/// `println!`, crashing the writer).
#[test]
fn output_to_a_group_leader_whose_node_went_away_goes_to_the_local_one() {
    let (a, b) = two_nodes();
    let a_name = a.name.clone();
    let (tx, reports) = Reports::new();
    let printed = tx.clone();
    a.handle()
        .spawn_with(Spawn::new().name("gl"), async move {
            loop {
                let m = receive::<Term>().await;
                if let Some(request) = IoRequest::from_term(&m) {
                    let text = request.chars().unwrap_or_else(|e| format!("bad {e}"));
                    printed.send(format!("collected {text}")).unwrap();
                    request.reply(Term::atom("ok"));
                } else if let Some([from]) = m.as_tuple() {
                    let me = dist::pid_to_term(self_pid());
                    send(dist::pid_from_term(from).unwrap(), me);
                }
            }
        })
        .unwrap();
    b.handle().spawn(async move {
        let me = dist::pid_to_term(self_pid());
        dist::send_named("gl", &a_name, Term::tuple([me]));
        let gl = dist::pid_from_term(&next_term().await).unwrap();
        ember_runtime::set_group_leader(gl);
        ember_runtime::io::println!("first").await;
        dist::monitor_node(&a_name, true);
        tx.send("ready".to_string()).unwrap();
        receive::<NodeDown>()
            .timeout(Duration::from_secs(10))
            .await
            .expect("a nodedown");
        let r = ember_runtime::io::put_chars("second\n").await;
        let local = ember_runtime::group_leader().is_local();
        tx.send(format!(
            "second {:?} local {local}",
            r.map_err(|e| e.to_string())
        ))
        .unwrap();
        // println! no longer has anything to fail on.
        ember_runtime::io::println!("third").await;
        tx.send("alive".to_string()).unwrap();
    });
    assert_eq!(
        reports.next("the first line at A's group leader"),
        "collected first\n"
    );
    assert_eq!(reports.next("B's printer is ready"), "ready");
    a.node.stop();
    assert_eq!(
        reports.next("the second line after A went away"),
        "second Ok(()) local true"
    );
    assert_eq!(reports.next("the writer lives on"), "alive");
}
