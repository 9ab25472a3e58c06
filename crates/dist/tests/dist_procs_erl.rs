//! Ember processes and a real `erl` node's processes as peers: messages
//! between pids both ways, links and exit signals, monitors by pid and by
//! name, exit reasons as terms, and a node going away.
//!
//! Each test starts an Ember runtime that is a node (with an embedded port
//! mapper on a free port) and an `erl` registered with it. Every wait has
//! a deadline. Where the order of two signals from different senders would
//! matter, the test first has the later one's sender hear an
//! acknowledgement that travelled behind the earlier one (signals from one
//! process to another keep their order).

mod support;

use std::time::{Duration, Instant};

use ember_runtime::dist;
use ember_runtime::io::IoRequest;
use ember_runtime::{
    exit, link, monitor, receive, self_pid, send, trap_exit, Down, Exit, ExitReason, Pid, Spawn,
};
use ember_term::Term;
use ember_testkit::{erl_required, free_port, random_cookie, start_erl, unique, Erl, DEADLINE};
use support::ember::{connection_loss_signals, next_term, EmberNode, Reports};

fn nodes() -> (EmberNode, Erl) {
    let port = free_port();
    let cookie = random_cookie();
    let ember = EmberNode::start(&unique("ember"), &cookie, port);
    let erl = start_erl(&unique("erl"), &cookie, port, &[]);
    (ember, erl)
}

/// An erl process that, told `{ack, T}`, answers `T ! acked`, then waits
/// for ever: a message sent to it behind a signal (`LINK`, `MONITOR_P`)
/// tells the test, through the acknowledgement, that the signal is in
/// place.
const ACKER: &str =
    "spawn(fun() -> receive {ack, T} -> T ! acked end, receive never -> ok end end)";

/// erl's side of [`introduce_to_sender`]: sends `{self(), hello}` to the
/// registered Ember process `name` and binds its answer's pid to `EP`
/// before `then`; `no_pid` if none comes.
fn introduced(name: &str, ember: &str, then: &str) -> String {
    format!(
        "{{{name}, '{ember}'}} ! {{self(), hello}}, receive {{me, EP}} -> {then} after 10000 -> no_pid end."
    )
}

/// Ember's side: waits for `{From, _}`, answers `From` with
/// `{me, self()}`, and returns `From`.
async fn introduce_to_sender() -> Pid {
    let m = next_term().await;
    let from = dist::pid_from_term(&m.as_tuple().expect("{From, _}")[0]).expect("a pid");
    send(
        from,
        Term::tuple([Term::atom("me"), dist::pid_to_term(self_pid())]),
    );
    from
}

#[test]
fn messages_cross_between_pids_both_ways() {
    if !erl_required() {
        return;
    }
    let (ember, mut erl) = nodes();
    let (tx, reports) = Reports::new();
    ember
        .handle()
        .spawn_with(Spawn::new().name("probe"), async move {
            // {Pid, hi} by name: answer the pid with our own pid.
            let first = next_term().await;
            let Some([from, hi]) = first.as_tuple() else {
                panic!("not {{Pid, hi}}: {first}")
            };
            assert!(hi.is_atom("hi"));
            let erl_pid = dist::pid_from_term(from).expect("a pid");
            assert!(!erl_pid.is_local());
            // A value that is not a term cannot cross: dropped, no panic.
            send(erl_pid, 42u32);
            send(
                erl_pid,
                Term::tuple([Term::atom("pong"), dist::pid_to_term(self_pid())]),
            );
            // erl answers our pid directly.
            let direct = next_term().await;
            tx.send(direct.to_string()).unwrap();
        })
        .unwrap();
    let e = &ember.name;
    let answer = erl.eval(&format!(
        "{{probe, '{e}'}} ! {{self(), hi}}, receive {{pong, P}} when is_pid(P) -> P ! {{direct, node(P), 3.5, <<1,2>>, [a|b]}}, node(P) after 10000 -> timeout end."
    ));
    assert_eq!(answer, *e);
    assert_eq!(
        reports.next("the message erl sent to the probe's pid"),
        format!("{{direct,{e},3.5,<<1,2>>,[a|b]}}")
    );
    // The 42u32 never arrived: nothing else is in erl's mailbox.
    assert_eq!(erl.eval("receive M -> M after 200 -> empty end."), "empty");
}

#[test]
fn links_and_exit_signals_cross_both_ways() {
    if !erl_required() {
        return;
    }
    let (ember, mut erl) = nodes();
    let e = ember.name.clone();
    let (tx, reports) = Reports::new();

    // Ember links to an erl process, erl kills it: Ember (trapping) gets
    // {'EXIT', V, killed}.
    let tx1 = tx.clone();
    ember
        .handle()
        .spawn_with(Spawn::new().name("linker"), async move {
            trap_exit(true);
            let m = next_term().await; // {V, Tester}
            let [v, tester] = m.as_tuple().unwrap() else {
                panic!("{m}")
            };
            let v = dist::pid_from_term(v).unwrap();
            link(v).unwrap();
            // Behind the LINK, on the same way: V acknowledges to the tester.
            send(v, Term::tuple([Term::atom("ack"), tester.clone()]));
            let exit: Exit = receive().timeout(Duration::from_secs(10)).await.unwrap();
            assert_eq!(exit.from, v);
            tx1.send(exit.reason.to_string()).unwrap();
        })
        .unwrap();
    erl.eval(&format!("put(v, {ACKER})."));
    assert_eq!(
        erl.eval(&format!(
            "{{linker, '{e}'}} ! {{get(v), self()}}, receive acked -> ok after 10000 -> timeout end."
        )),
        "ok"
    );
    assert_eq!(
        erl.eval("{links, L} = process_info(get(v), links), length(L)."),
        "1"
    );
    erl.eval("exit(get(v), kill).");
    assert_eq!(reports.next("the EXIT of the linked erl process"), "killed");

    // erl links to an Ember process that exits with a structured reason:
    // erl gets the reason as the term it is.
    ember
        .handle()
        .spawn_with(Spawn::new().name("dier"), async move {
            introduce_to_sender().await;
            let die = next_term().await;
            assert!(die.is_atom("die"));
            ExitReason::from_term(Term::tuple([
                Term::atom("shutdown"),
                Term::tuple([
                    Term::atom("failed_to_start_child"),
                    Term::atom("worker"),
                    Term::atom("badarg"),
                ]),
            ]))
        })
        .unwrap();
    assert_eq!(
        erl.eval(&format!(
            "process_flag(trap_exit, true), {}",
            introduced(
                "dier",
                &e,
                "link(EP), EP ! die, receive {'EXIT', EP, R} -> R after 10000 -> no_exit end"
            )
        )),
        "{shutdown,{failed_to_start_child,worker,badarg}}"
    );

    // exit/2 from Ember to an erl process.
    let tx2 = tx.clone();
    ember
        .handle()
        .spawn_with(Spawn::new().name("target"), async move {
            let m = next_term().await; // {W, go}
            let w = dist::pid_from_term(&m.as_tuple().unwrap()[0]).unwrap();
            let watch = monitor(w);
            exit(w, ExitReason::error("from ember"));
            let down: Down = receive()
                .matching(move |d: &Down| d.monitor == watch)
                .timeout(Duration::from_secs(10))
                .await
                .unwrap();
            tx2.send(down.reason.to_string()).unwrap();
        })
        .unwrap();
    erl.eval(&format!(
        "W = spawn(fun() -> receive never -> ok end end), {{target, '{e}'}} ! {{W, go}}."
    ));
    assert_eq!(
        reports.next("the DOWN of the erl process Ember sent exit/2"),
        ExitReason::error("from ember").to_string()
    );

    // exit/2 from erl to an Ember process.
    let sitter = ember
        .handle()
        .spawn_with(Spawn::new().name("sitter"), async move {
            introduce_to_sender().await;
            // Waits until erl kills it.
            receive::<u8>().await;
        })
        .unwrap()
        .pid;
    ember.handle().spawn(async move {
        let watch = monitor(sitter);
        tx.send("watching".to_string()).unwrap();
        let down: Down = receive()
            .matching(move |d: &Down| d.monitor == watch)
            .timeout(DEADLINE)
            .await
            .expect("the sitter's Down within the deadline");
        tx.send(down.reason.to_string()).unwrap();
    });
    assert_eq!(reports.next("the sitter's watcher"), "watching");
    erl.eval(&introduced("sitter", &e, "exit(EP, kill)"));
    assert_eq!(reports.next("the sitter killed by erl's exit/2"), "killed");
    assert!(!ember.handle().is_alive(sitter));
}

#[test]
fn monitors_by_pid_and_by_name_cross_both_ways() {
    if !erl_required() {
        return;
    }
    let (ember, mut erl) = nodes();
    let e = ember.name.clone();
    let erl_name = erl.name.clone();

    // erl monitors an Ember process by name: the DOWN names {Name, Node}.
    ember
        .handle()
        .spawn_with(Spawn::new().name("watched"), async move {
            let stop = next_term().await;
            assert!(stop.is_atom("stop"));
        })
        .unwrap();
    assert_eq!(
        erl.eval(&format!(
            "R = monitor(process, {{watched, '{e}'}}), {{watched, '{e}'}} ! stop, receive {{'DOWN', R, process, Obj, Why}} -> {{Obj, Why}} after 10000 -> timeout end."
        )),
        format!("{{{{watched,{e}}},normal}}")
    );
    assert_eq!(
        erl.eval(&format!(
            "R2 = monitor(process, {{nosuch, '{e}'}}), receive {{'DOWN', R2, process, Obj2, Why2}} -> {{Obj2, Why2}} after 10000 -> timeout end."
        )),
        format!("{{{{nosuch,{e}}},noproc}}")
    );

    // Ember monitors an erl process by name and one by pid.
    erl.eval(&format!("register(victim, {ACKER})."));
    erl.eval("put(q, spawn(fun() -> receive go -> exit({shutdown, {failed_to_start_child, w, badarg}}) end end)).");
    let (tx, reports) = Reports::new();
    let erl_node = erl_name.clone();
    ember
        .handle()
        .spawn_with(Spawn::new().name("monitorer"), async move {
            let m = next_term().await; // {Tester, Q}
            let [tester, q] = m.as_tuple().unwrap() else {
                panic!("{m}")
            };
            let by_name = dist::monitor_name("victim", &erl_node);
            // Behind the MONITOR_P: victim acknowledges to the tester.
            dist::send_named(
                "victim",
                &erl_node,
                Term::tuple([Term::atom("ack"), tester.clone()]),
            );
            let q = dist::pid_from_term(q).unwrap();
            let by_pid = monitor(q);
            send(q, Term::atom("go"));
            let down: Down = receive()
                .matching(move |d: &Down| d.monitor == by_pid)
                .timeout(Duration::from_secs(10))
                .await
                .unwrap();
            assert_eq!(down.pid, q);
            tx.send(format!("{}", down.reason.to_term())).unwrap();
            let down: Down = receive()
                .matching(move |d: &Down| d.monitor == by_name)
                .timeout(Duration::from_secs(10))
                .await
                .unwrap();
            let name = down.name.expect("a monitor by name names it");
            tx.send(format!("{} {} {}", name.name, name.node, down.reason))
                .unwrap();
            // A name nobody has: noproc.
            let none = dist::monitor_name("nobody_here", &erl_node);
            let down: Down = receive()
                .matching(move |d: &Down| d.monitor == none)
                .timeout(Duration::from_secs(10))
                .await
                .unwrap();
            tx.send(down.reason.to_string()).unwrap();
        })
        .unwrap();
    assert_eq!(
        erl.eval(&format!(
            "{{monitorer, '{e}'}} ! {{self(), get(q)}}, receive acked -> ok after 10000 -> timeout end."
        )),
        "ok"
    );
    assert_eq!(
        reports.next("the DOWN of the erl process monitored by pid"),
        "{shutdown,{failed_to_start_child,w,badarg}}"
    );
    erl.eval("exit(whereis(victim), kill).");
    assert_eq!(
        reports.next("the DOWN of the erl process monitored by name"),
        format!("victim {erl_name} killed")
    );
    assert_eq!(reports.next("the DOWN of a name nobody has"), "noproc");
}

#[test]
fn a_killed_erl_node_fires_noconnection_and_nodedown_within_a_second() {
    if !erl_required() {
        return;
    }
    let (ember, mut erl) = nodes();
    let e = ember.name.clone();
    let erl_name = erl.name.clone();
    let (tx, reports) = Reports::new();
    ember
        .handle()
        .spawn_with(Spawn::new().name("bystander"), async move {
            trap_exit(true);
            let m = next_term().await; // {Tester, V, W}
            let [tester, v, w] = m.as_tuple().unwrap() else {
                panic!("{m}")
            };
            let (v, w) = (
                dist::pid_from_term(v).unwrap(),
                dist::pid_from_term(w).unwrap(),
            );
            dist::monitor_node(&erl_name, true);
            link(v).unwrap();
            let watch = monitor(w);
            send(v, Term::tuple([Term::atom("ack"), tester.clone()]));
            tx.send("ready".to_string()).unwrap();
            let seen = connection_loss_signals(3, v, |d| {
                assert_eq!(d.monitor, watch);
                "down"
            })
            .await;
            tx.send(seen).unwrap();
            assert!(dist::nodes().is_empty());
        })
        .unwrap();
    erl.eval(&format!(
        "put(v, {ACKER}), put(w, spawn(fun() -> receive never -> ok end end))."
    ));
    assert_eq!(
        erl.eval(&format!(
            "{{bystander, '{e}'}} ! {{self(), get(v), get(w)}}, receive acked -> ok after 10000 -> timeout end."
        )),
        "ok"
    );
    assert_eq!(reports.next("the bystander is set up"), "ready");
    erl.kill();
    let killed = Instant::now();
    let seen = reports.within(Duration::from_secs(20), "noconnection and nodedown");
    let took = killed.elapsed();
    assert_eq!(
        seen,
        format!(
            "down noconnection, exit noconnection, nodedown {}",
            erl.name
        )
    );
    // At once, not after net_ticktime (60 s): the bound leaves a busy
    // machine seconds of slack.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// The runtime node's side of a connection (reader process, ticks and
/// watchdog on the runtime's own timers): an idle connection stays up on
/// ticks alone, and a peer that goes silent (SIGSTOP) is declared down
/// within the tick deadline, firing links, monitors and `monitor_node`.
#[test]
fn a_runtime_node_keeps_an_idle_connection_up_and_drops_a_silent_erl_in_time() {
    if !erl_required() {
        return;
    }
    // As in dist_erl_interop's tick test: 5 s leaves room for a stalled VM
    // on a loaded machine.
    let ticktime = Duration::from_secs(5);
    let port = free_port();
    let cookie = random_cookie();
    let ember = EmberNode::start_configured(
        &unique("ember"),
        &cookie,
        port,
        ember_dist::Functions::new(),
        |c| c.net_ticktime = ticktime,
    );
    let mut erl = start_erl(
        &unique("erl"),
        &cookie,
        port,
        &["-kernel", "net_ticktime", "5"],
    );
    let e = ember.name.clone();
    let erl_name = erl.name.clone();
    let (tx, reports) = Reports::new();
    ember
        .handle()
        .spawn_with(Spawn::new().name("watcher"), async move {
            trap_exit(true);
            let m = next_term().await; // {Tester, V}
            let [tester, v] = m.as_tuple().unwrap() else {
                panic!("{m}")
            };
            let v = dist::pid_from_term(v).unwrap();
            dist::monitor_node(&erl_name, true);
            link(v).unwrap();
            let watch = monitor(v);
            send(v, Term::tuple([Term::atom("ack"), tester.clone()]));
            tx.send("ready".to_string()).unwrap();
            let seen = connection_loss_signals(3, v, |d| {
                assert_eq!(d.monitor, watch);
                "down"
            })
            .await;
            tx.send(seen).unwrap();
        })
        .unwrap();
    erl.eval(&format!("put(v, {ACKER})."));
    assert_eq!(
        erl.eval(&format!(
            "{{watcher, '{e}'}} ! {{self(), get(v)}}, receive acked -> ok after 10000 -> timeout end."
        )),
        "ok"
    );
    assert_eq!(reports.next("the watcher is set up"), "ready");

    // Idle for over twice net_ticktime (the premise, not a wait for an
    // event): only ticks cross, and neither side may drop the connection.
    let idle = 2 * ticktime + Duration::from_secs(1);
    if let Some(early) = reports.quiet_for(idle) {
        panic!("the idle connection went down: {early}");
    }
    assert_eq!(erl.eval(&format!("lists:member('{e}', nodes()).")), "true");

    // erl stops: no more ticks. Ember declares it down between three
    // quarters of net_ticktime (erl's last tick may have come a quarter
    // before the stop) and 1.25 of it (the watchdog looks every quarter),
    // plus a second for a loaded machine.
    // The stop lands between `stopping` and `stopped` (`pause` returns once
    // /proc shows every thread stopped, which a loaded machine may show
    // late): the floor is measured from the first, the ceiling from the
    // second.
    let stopping = Instant::now();
    erl.pause();
    let stopped = Instant::now();
    let seen = reports.within(2 * ticktime, "noconnection and nodedown of the silent peer");
    let (longest, took) = (stopping.elapsed(), stopped.elapsed());
    erl.resume();
    assert_eq!(
        seen,
        format!(
            "down noconnection, exit noconnection, nodedown {}",
            erl.name
        )
    );
    // 100 ms of slack below: erl's ticks are not exactly a quarter apart,
    // and timers fire on millisecond ticks.
    assert!(
        longest + Duration::from_millis(100) >= ticktime * 3 / 4,
        "dropped {longest:?} after the stop"
    );
    assert!(
        took <= ticktime * 5 / 4 + Duration::from_secs(1),
        "dropped only {took:?} after the stop (net_ticktime {ticktime:?})"
    );
}

/// What the flooder and the linker of
/// [`a_disconnect_fires_links_queued_for_the_connection_and_resumes_its_senders_at_once`]
/// report.
#[derive(Debug)]
enum Flood {
    Sent(usize),
    Done,
    Queued,
    Signals(String),
}

/// Go-ahead for the linker.
struct Go;

/// Erlang drops what is queued for a connection when it goes down
/// (`erts_do_net_exits`), resumes the processes suspended on it, and fires
/// its links and monitors at once. Here erl stops reading (SIGSTOP), a
/// flooder fills everything in front of it and is suspended, and a
/// linker's `LINK`, `MONITOR_P` and a big message wait in the lane behind
/// the flood (suspending it too): `disconnect` fires the link, the monitor
/// and `monitor_node` and resumes both at once, without waiting for a new
/// connection to the stopped node to fail (`net_setuptime`, 7 s).
#[test]
fn a_disconnect_fires_links_queued_for_the_connection_and_resumes_its_senders_at_once() {
    if !erl_required() {
        return;
    }
    const LIMIT: usize = 256 * 1024;
    let port = free_port();
    let cookie = random_cookie();
    let ember = EmberNode::start_configured(
        &unique("ember"),
        &cookie,
        port,
        ember_dist::Functions::new(),
        |c| c.send_queue_limit = LIMIT,
    );
    let mut erl = start_erl(&unique("erl"), &cookie, port, &[]);
    let e = ember.name.clone();
    let erl_name = erl.name.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, reports) = Reports::new();
    let linker = {
        let stop = stop.clone();
        ember
            .handle()
            .spawn_with(Spawn::new().name("linker"), async move {
                let m = next_term().await; // {Tester, V}
                let [tester, v] = m.as_tuple().unwrap() else {
                    panic!("{m}")
                };
                let v = dist::pid_from_term(v).unwrap();
                send(v, Term::tuple([Term::atom("ack"), tester.clone()]));
                receive::<Go>()
                    .timeout(DEADLINE)
                    .await
                    .expect("go within the deadline");
                // The flooder: 64 KiB messages until told to stop.
                let flood_tx = tx.clone();
                ember_runtime::spawn(async move {
                    let chunk = Term::binary(vec![7u8; 64 * 1024]);
                    let mut sent = 0;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        send(v, chunk.clone());
                        sent += 1;
                        let _ = flood_tx.send(Flood::Sent(sent));
                        ember_runtime::yield_point().await;
                    }
                    let _ = flood_tx.send(Flood::Done);
                });
                receive::<Go>()
                    .timeout(DEADLINE)
                    .await
                    .expect("go within the deadline");
                trap_exit(true);
                dist::monitor_node(&erl_name, true);
                link(v).unwrap();
                let watch = monitor(v);
                send(v, Term::binary(vec![8u8; 2 * LIMIT]));
                tx.send(Flood::Queued).unwrap();
                let seen = connection_loss_signals(3, v, |d| {
                    assert_eq!(d.monitor, watch);
                    "down"
                })
                .await;
                tx.send(Flood::Signals(seen)).unwrap();
            })
            .unwrap()
            .pid
    };
    erl.eval(&format!("put(v, {ACKER})."));
    assert_eq!(
        erl.eval(&format!(
            "{{linker, '{e}'}} ! {{self(), get(v)}}, receive acked -> ok after 10000 -> timeout end."
        )),
        "ok"
    );
    erl.pause();
    ember.handle().send(linker, Go);
    // The flood backs up: the socket's buffers, the connection's queue,
    // then the lane, which suspends the flooder. Wait until it has sent
    // more than its connection's queue holds and then nothing for a
    // second (suspended: were it only slow, the linker below would not
    // be suspended and the test would prove less, never fail).
    // A quiet second before that is a starved flooder, on a busy machine:
    // it is given up to 30 s in all.
    let mut sent = 0;
    let flooding = Instant::now();
    loop {
        match reports.quiet_for(Duration::from_secs(1)) {
            Some(Flood::Sent(n)) => sent = n,
            Some(other) => panic!("{other:?} before the flood backed up"),
            None if sent * 64 * 1024 > LIMIT => break,
            None if flooding.elapsed() < Duration::from_secs(30) => {}
            None => panic!("the flooder sent only {sent} messages in 30 s"),
        }
    }
    ember.handle().send(linker, Go);
    assert!(matches!(
        reports.next("the linker's signals queued"),
        Flood::Queued
    ));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let disconnected = Instant::now();
    assert!(ember.node.disconnect(&erl.name));
    let mut got = Vec::new();
    while got.len() < 2 {
        match reports.within(
            Duration::from_secs(20),
            "the linker's signals and the flooder's end",
        ) {
            Flood::Sent(_) => {}
            r => got.push(r),
        }
    }
    let took = disconnected.elapsed();
    erl.resume();
    let signals = got
        .iter()
        .find_map(|r| match r {
            Flood::Signals(s) => Some(s.clone()),
            _ => None,
        })
        .expect("the linker's signals");
    assert!(got.iter().any(|r| matches!(r, Flood::Done)), "{got:?}");
    assert_eq!(
        signals,
        format!(
            "down noconnection, exit noconnection, nodedown {}",
            erl.name
        )
    );
    // At once, not after a tick timeout: seconds of slack for a busy
    // machine.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn an_ember_node_stopping_gives_erl_noconnection() {
    if !erl_required() {
        return;
    }
    let (ember, mut erl) = nodes();
    let e = ember.name.clone();
    ember
        .handle()
        .spawn_with(Spawn::new().name("lonely"), async move {
            introduce_to_sender().await;
            // Waits until its node stops.
            receive::<u8>().await;
        })
        .unwrap();
    assert_eq!(
        erl.eval(&format!(
            "process_flag(trap_exit, true), monitor_node('{e}', true), {}",
            introduced(
                "lonely",
                &e,
                "link(EP), R = monitor(process, EP), put(r, R), put(ep, EP), ok"
            )
        )),
        "ok"
    );
    // A round trip behind the LINK and MONITOR_P: both are in place.
    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
    ember.node.stop();
    let got = erl.eval(
        "EP = get(ep), R = get(r), [receive {'EXIT', EP, X} -> {exit, X} after 5000 -> no_exit end, receive {'DOWN', R, process, EP, Y} -> {down, Y} after 5000 -> no_down end, receive {nodedown, N} -> nodedown after 5000 -> no_nodedown end].",
    );
    assert_eq!(got, "[{exit,noconnection},{down,noconnection},nodedown]");
}

#[test]
fn ember_calls_erl_gen_servers_and_rpc_goes_both_ways() {
    if !erl_required() {
        return;
    }
    let port = free_port();
    let cookie = random_cookie();
    let mut functions = ember_dist::Functions::new();
    functions.register("ember_test", "add", 2, |args| async move {
        match (args[0].as_int(), args[1].as_int()) {
            (Some(a), Some(b)) => Ok(Term::from(a + b)),
            _ => Err(ember_dist::Raise::Error(Term::atom("badarith"))),
        }
    });
    let ember = EmberNode::start_with(&unique("ember"), &cookie, port, functions);
    let mut erl = start_erl(&unique("erl"), &cookie, port, &[]);
    let e = ember.name.clone();
    let erl_name = erl.name.clone();
    let (tx, reports) = Reports::new();
    ember.handle().spawn(async move {
        use ember_otp::gen_server::{call_term, TermServer};
        let wait = Duration::from_secs(10);
        let net_kernel = TermServer::Name {
            name: "net_kernel".into(),
            node: erl_name.clone(),
        };
        let is_auth = Term::tuple([Term::atom("is_auth"), Term::Atom(dist::node())]);
        let answer = call_term(&net_kernel, is_auth, wait).await;
        tx.send(format!("{answer:?}")).unwrap();
        let nobody = TermServer::Name {
            name: "nobody_here".into(),
            node: erl_name.clone(),
        };
        let answer = call_term(&nobody, Term::atom("x"), wait).await;
        tx.send(format!("{answer:?}")).unwrap();
        let reverse = ember_dist::rpc_call(
            &erl_name,
            "lists",
            "reverse",
            vec![Term::list([Term::from(1), Term::from(2), Term::from(3)])],
            wait,
        )
        .await;
        tx.send(reverse.to_string()).unwrap();
        let crash =
            ember_dist::rpc_call(&erl_name, "erlang", "error", vec![Term::atom("boom")], wait)
                .await;
        let shape = crash
            .as_tuple()
            .map(|t| (t[0].to_string(), t[1].as_tuple().map(|x| x[0].to_string())));
        tx.send(format!("{shape:?}")).unwrap();
        // Ember's own rex, from Ember: the classic protocol both ways.
        let own = ember_dist::rpc_call(
            &dist::node().to_string(),
            "ember_test",
            "add",
            vec![Term::from(2), Term::from(3)],
            wait,
        )
        .await;
        tx.send(own.to_string()).unwrap();
    });
    assert_eq!(
        reports.next("net_kernel's is_auth"),
        format!("{:?}", Ok::<_, ()>(Term::atom("yes")))
    );
    assert_eq!(reports.next("a call to nobody"), "Err(NoProc)");
    assert_eq!(reports.next("rpc lists:reverse"), "[3,2,1]");
    assert_eq!(
        reports.next("rpc erlang:error"),
        "Some((\"badrpc\", Some(\"'EXIT'\")))"
    );
    assert_eq!(reports.next("rpc into Ember's own rex"), "5");
    // And erl into Ember, by rpc and erpc.
    assert_eq!(
        erl.eval(&format!("rpc:call('{e}', ember_test, add, [40, 2]).")),
        "42"
    );
    assert_eq!(
        erl.eval(&format!("erpc:call('{e}', ember_test, add, [1, 2]).")),
        "3"
    );
    assert_eq!(
        erl.eval(&format!("rpc:call('{e}', ember_test, add, [a, 2]).")),
        "{badrpc,{'EXIT',{badarith,[{ember_test,add,[a,2],[]}]}}}"
    );
}

/// Two erl processes send big messages at once: their fragments share the
/// connection, interleaved as erl's dist port takes them, and each
/// message is reassembled from its own sequence's fragments.
#[test]
fn big_messages_from_two_senders_at_once_are_reassembled_each_whole() {
    if !erl_required() {
        return;
    }
    let (ember, mut erl) = nodes();
    let e = ember.name.clone();
    const EACH: usize = 6;
    const SIZE: usize = 3 << 20;
    let (tx, reports) = Reports::new();
    ember
        .handle()
        .spawn_with(Spawn::new().name("sink"), async move {
            let mut seen = Vec::new();
            for _ in 0..2 * EACH {
                let m = receive::<Term>()
                    .timeout(Duration::from_secs(60))
                    .await
                    .expect("a big message within 60 s");
                let Some([tag, i, Term::Binary(b)]) = m.as_tuple() else {
                    panic!("not {{Tag, I, Binary}}")
                };
                let (tag, i) = (tag.as_atom().unwrap().to_string(), i.as_int().unwrap());
                // Sender a fills with a, sender b with b, each byte
                // offset by the message number.
                let fill = tag.as_bytes()[0].wrapping_add(i as u8);
                let whole = b.len() == SIZE && b.iter().all(|&x| x == fill);
                seen.push(format!("{tag}{i}:{}", if whole { "ok" } else { "bad" }));
            }
            tx.send(seen).unwrap();
        })
        .unwrap();
    let send = |tag: char| {
        format!(
            "spawn(fun() -> [{{sink, '{e}'}} ! {{{tag}, I, binary:copy(<<(${tag} + I)>>, {SIZE})}} \
             || I <- lists:seq(0, {})], shell ! {{done, {tag}}} end)",
            EACH - 1
        )
    };
    assert_eq!(erl.eval("register(shell, self())."), "true");
    erl.eval(&format!("{}, {}, ok.", send('a'), send('b')));
    let seen = reports.within(Duration::from_secs(120), "12 big messages");
    assert_eq!(
        erl.eval("lists:sort([receive {done, T} -> T after 10000 -> timeout end || _ <- [1, 2]])."),
        "[a,b]"
    );
    // Per sender in order, every message whole.
    let of =
        |p: &str| -> Vec<String> { seen.iter().filter(|s| s.starts_with(p)).cloned().collect() };
    let want = |p: &str| -> Vec<String> { (0..EACH).map(|i| format!("{p}{i}:ok")).collect() };
    assert_eq!(of("a"), want("a"));
    assert_eq!(of("b"), want("b"));
    assert_eq!(seen.len(), 2 * EACH);
}

/// `GROUP_LEADER` both ways, and Erlang's `io:format` served by Ember
/// group leaders: erl's `group_leader(GL, EmberPid)` sends the Ember
/// process's output to an erl group leader; Ember's `set_group_leader_of`
/// on an erl process sends its `io:format` requests (`{put_chars, unicode,
/// io_lib, format, [Format, Args]}`) to an Ember process, and Ember's
/// `user` answers them `ok` (a format it does not serve gets an error that
/// `io:format` raises).
#[test]
fn group_leaders_cross_both_ways_and_io_format_is_served() {
    if !erl_required() {
        return;
    }
    let (ember, mut erl) = nodes();
    let e = ember.name.clone();
    let (tx, reports) = Reports::new();
    // Collects the text of every output request and answers it.
    let collector = {
        let tx = tx.clone();
        ember
            .handle()
            .spawn_with(Spawn::new().name("collector"), async move {
                loop {
                    let m = receive::<Term>().await;
                    let Some(request) = IoRequest::from_term(&m) else {
                        continue;
                    };
                    let reply = match request.chars() {
                        Ok(text) => {
                            tx.send(format!("collected {text}")).unwrap();
                            Term::atom("ok")
                        }
                        Err(error) => error,
                    };
                    request.reply(reply);
                }
            })
            .unwrap()
            .pid
    };
    // Prints on request, hands out pids, sets erl processes' group leaders.
    ember
        .handle()
        .spawn_with(Spawn::new().name("printer"), async move {
            loop {
                let m = next_term().await;
                match m.as_tuple() {
                    Some([what, from]) if what.is_atom("who") => {
                        let from = dist::pid_from_term(from).unwrap();
                        let me = dist::pid_to_term(self_pid());
                        let user = dist::pid_to_term(ember_runtime::whereis("user").unwrap());
                        send(from, Term::tuple([Term::atom("pids"), me, user]));
                    }
                    Some([what, Term::Binary(text)]) if what.is_atom("print") => {
                        let text = String::from_utf8(text.clone()).unwrap();
                        let r = ember_runtime::io::put_chars(text).await;
                        tx.send(format!("printed {}", r.is_ok())).unwrap();
                    }
                    Some([what, pid]) if what.is_atom("adopt") => {
                        let pid = dist::pid_from_term(pid).unwrap();
                        ember_runtime::io::set_group_leader_of(pid, collector).unwrap();
                        let c = dist::pid_to_term(collector);
                        send(pid, Term::tuple([Term::atom("adopted"), c]));
                    }
                    _ => panic!("printer: {m}"),
                }
            }
        })
        .unwrap();
    assert_eq!(erl.eval("register(shell, self())."), "true");
    assert_eq!(
        erl.eval(&format!(
            "{{printer, '{e}'}} ! {{who, self()}}, \
             receive {{pids, P, U}} -> put(printer, P), put(user, U), ok after 10000 -> timeout end."
        )),
        "ok"
    );

    // erl sets the Ember printer's group leader to an erl process.
    assert_eq!(
        erl.eval(
            "GL = spawn(fun() -> receive {io_request, From, RA, Req} -> \
             From ! {io_reply, RA, ok}, shell ! {captured, Req} end end), \
             true = group_leader(GL, get(printer)), \
             get(printer) ! {print, <<\"via erl's group leader\\n\">>}, \
             receive {captured, R} -> R =:= {put_chars, unicode, <<\"via erl's group leader\\n\">>} \
             after 10000 -> timeout end."
        ),
        "true"
    );
    assert_eq!(
        reports.next("the printer's output was answered"),
        "printed true"
    );

    // Ember sets an erl process's group leader to the collector; its
    // io:format arrives there as an io_lib format request.
    let adopted = "fun() -> receive {adopted, C} -> \
         W = fun W(0) -> timeout; W(N) -> case group_leader() of C -> ok; \
         _ -> receive after 10 -> W(N - 1) end end end, ok = W(1000), \
         shell ! {formatted, catch io:format(\"~p ~s ~B~n\", [{x, 1}, \"str\", 42])} end end";
    assert_eq!(
        erl.eval(&format!(
            "V = spawn({adopted}), get(printer) ! {{adopt, V}}, \
             receive {{formatted, R}} -> R after 10000 -> timeout end."
        )),
        "ok"
    );
    assert_eq!(
        reports.next("erl's io:format at the collector"),
        "collected {x,1} str 42\n"
    );

    // Ember's `user` serves io:format from erl, and refuses ~f clearly.
    assert_eq!(
        erl.eval(
            "U = get(user), spawn(fun() -> group_leader(U, self()), \
             shell ! {user_says, catch io:format(\"user: ~p~n\", [{from, erl}]), \
             case catch io:format(\"~f~n\", [1.5]) of ok -> ok; _ -> refused end} end), \
             receive {user_says, A, B} -> {A, B} after 10000 -> timeout end."
        ),
        "{ok,refused}"
    );
}
