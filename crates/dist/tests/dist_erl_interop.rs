//! Ember and a real `erl` node (OTP 25+) as peers: pings both ways,
//! `nodes()`, wrong cookies, and what Ember answers on its own.
//!
//! Every test starts its own port mapper on a free port (`ERL_EPMD_PORT`
//! for erl; Ember's embedded one, or a real `epmd -port N`), unique node
//! names and a random cookie, so tests never meet each other or a system
//! epmd. Every wait has a deadline.
//!
//! `erl` and `epmd` must be installed (`scripts/test` installs
//! `erlang-base` for its full run). Without them these tests fail, unless
//! `EMBER_TERM_SKIP_ERL` is set (`scripts/test --quick` sets it when `erl`
//! is missing, and says so).

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember_dist::{epmd, Delivery, DistError, Node};
use ember_term::{Atom, Term};
use ember_testkit::{erl_required, free_port, random_cookie, start_erl, unique, DEADLINE};
use support::wire::{config, epmd_and_cookie, EmberAndErl, Event};

/// A real `epmd -port N` in the foreground.
struct Epmd(Child);

impl Epmd {
    async fn start(port: u16) -> Epmd {
        let child = Command::new("epmd")
            .args(["-port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start epmd");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        // An OS process says nothing when it is ready: ask until it answers.
        let deadline = Instant::now() + DEADLINE;
        while epmd::names(addr).await.is_err() {
            assert!(Instant::now() < deadline, "epmd did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Epmd(child)
    }
}

impl Drop for Epmd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erl_pings_ember_and_lists_it_and_ember_answers_what_it_cannot_serve() {
    if !erl_required() {
        return;
    }
    let (
        EmberAndErl {
            epmd: _epmd,
            ember,
            mut erl,
            e,
            ..
        },
        mut deliveries,
    ) = EmberAndErl::watched(|_| {}, &[]).await;

    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
    assert_eq!(erl.eval(&format!("lists:member('{e}', nodes()).")), "true");
    assert_eq!(ember.nodes(), vec![Atom::new(&erl.name)]);
    // And back, over the connection erl made.
    assert!(ember.ping(&erl.name).await);

    // A name nobody serves: the call fails at once with noproc (MONITOR_P_EXIT).
    let r = erl.eval(&format!(
        "catch gen_server:call({{nosuch, '{e}'}}, hi, 20000)."
    ));
    assert!(r.starts_with("{'EXIT',{noproc,"), "{r}");
    // rpc fails at once (SPAWN_REPLY notsup) instead of hanging.
    let r = erl.eval(&format!("rpc:call('{e}', erlang, node, [], 20000)."));
    assert!(r.starts_with("{badrpc,"), "{r}");
    // A message to a registered name reaches the Deliver hook.
    assert_eq!(
        erl.eval(&format!("{{some_name, '{e}'}} ! {{hello, 42}}.")),
        "{hello,42}"
    );
    deliveries
        .first("{hello, 42} for some_name at the hook", |event| {
            matches!(event, Event::Delivered(Delivery::ToName { to, message, .. })
                if to.as_str() == "some_name"
                    && message == Term::tuple([Term::atom("hello"), Term::from(42)]))
            .then_some(())
        })
        .await;
    // The connection survived all of it.
    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ember_pings_erl_through_a_real_epmd() {
    if !erl_required() {
        return;
    }
    let port = free_port();
    let _epmd = Epmd::start(port).await;
    let cookie = random_cookie();
    let mut erl = start_erl(&unique("erl"), &cookie, port, &[]);
    let mut c = config(&unique("ember"), &cookie, port);
    c.embedded_epmd = false;
    let ember = Node::start_with(c).await.unwrap();
    let e = ember.name().as_str().to_string();

    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let names: Vec<String> = epmd::names(addr)
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        names.iter().any(|n| erl.name.starts_with(n.as_str())),
        "{names:?}"
    );
    let info = epmd::port_please(addr, e.split('@').next().unwrap())
        .await
        .unwrap();
    assert_eq!(info.port, ember.port());

    assert!(ember.ping(&erl.name).await);
    assert_eq!(ember.nodes(), vec![Atom::new(&erl.name)]);
    assert_eq!(erl.eval(&format!("lists:member('{e}', nodes()).")), "true");
    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_is_refused_both_ways_and_both_nodes_keep_working() {
    if !erl_required() {
        return;
    }
    let (epmd_server, cookie) = epmd_and_cookie().await;
    let ember = Node::start_with(config(&unique("ember"), &cookie, epmd_server.port()))
        .await
        .unwrap();
    let mut erl = start_erl(&unique("erl"), &random_cookie(), epmd_server.port(), &[]);
    let e = ember.name().as_str().to_string();

    // erl -> Ember: Ember refuses the challenge reply.
    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pang");
    // Ember -> erl: erl refuses, Ember says why.
    let err = ember.connect(&erl.name).await.unwrap_err();
    assert!(matches!(err, DistError::WrongCookie(_)), "{err}");
    assert!(!ember.ping(&erl.name).await);
    assert!(ember.nodes().is_empty());
    assert_eq!(erl.eval("nodes()."), "[]");

    // With the right cookie for Ember, both directions work.
    assert_eq!(
        erl.eval(&format!("erlang:set_cookie('{e}', '{cookie}').")),
        "true"
    );
    assert!(ember.ping(&erl.name).await);
    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
    assert_eq!(erl.eval(&format!("lists:member('{e}', nodes()).")), "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_keep_an_idle_connection_up_and_a_silent_peer_is_dropped() {
    if !erl_required() {
        return;
    }
    // Why a connection went down, in the output of a failed run.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    // Both sides tick every quarter of it when idle and drop a peer silent
    // for all of it. 5 s rather than 3: on a loaded machine (two cores,
    // a dozen busy threads beside erl and this test) a 3 s ticktime left
    // too little room for a stall of the peer's VM, and a genuinely silent
    // peer was seen where there was only a slow one.
    let ticktime = Duration::from_secs(5);
    let (
        EmberAndErl {
            epmd: _epmd,
            ember,
            mut erl,
            e,
            ..
        },
        mut events,
    ) = EmberAndErl::watched(
        |c| c.net_ticktime = ticktime,
        &["-kernel", "net_ticktime", "5"],
    )
    .await;
    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
    let erl_node = Atom::new(&erl.name);

    // Idle for over twice net_ticktime on both sides (the premise of the
    // test, not a wait for an event): only ticks cross, and the connection
    // must not go down meanwhile.
    let idle = 2 * ticktime + Duration::from_secs(1);
    let started = Instant::now();
    let dropped = tokio::time::timeout(
        idle,
        events.first("a loss of the idle connection", |event| {
            matches!(event, Event::Down(n) if n == erl_node).then_some(())
        }),
    )
    .await;
    assert!(
        dropped.is_err(),
        "the idle connection went down after {:?} (net_ticktime {ticktime:?})",
        started.elapsed()
    );
    assert_eq!(ember.nodes(), vec![erl_node.clone()]);
    assert_eq!(erl.eval(&format!("lists:member('{e}', nodes()).")), "true");

    // erl stops (SIGSTOP): no more ticks, so Ember declares it down, not
    // before three quarters of net_ticktime (its last tick may have come
    // a quarter before the stop).
    // The stop lands between these two instants; the floor is measured
    // from the first, since `pause` returns once /proc shows every thread
    // stopped, which a loaded machine may show late.
    let stopping = Instant::now();
    erl.pause();
    events
        .first("connection loss of the silent peer", |event| {
            matches!(event, Event::Down(n) if n == erl_node).then_some(())
        })
        .await;
    assert!(ember.nodes().is_empty());
    // 100 ms of slack, as in dist_procs_erl's tick test: erl's ticks are
    // not exactly a quarter apart.
    assert!(
        stopping.elapsed() + Duration::from_millis(100) >= ticktime * 3 / 4,
        "dropped {:?} after the stop, before net_ticktime",
        stopping.elapsed()
    );
    erl.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_ember_node_is_in_nodes_hidden_only() {
    if !erl_required() {
        return;
    }
    let EmberAndErl {
        epmd: _epmd,
        ember,
        mut erl,
        e,
        ..
    } = EmberAndErl::start(|c| c.hidden = true, &[]).await;

    assert!(ember.ping(&erl.name).await);
    assert_eq!(erl.eval("nodes()."), "[]");
    assert_eq!(
        erl.eval(&format!("lists:member('{e}', nodes(hidden)).")),
        "true"
    );
    // global has nothing to wait for.
    assert_eq!(erl.eval("global:sync()."), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erl_and_ember_pinging_each_other_at_once_both_succeed_over_one_connection() {
    if !erl_required() {
        return;
    }
    let (epmd_server, cookie) = epmd_and_cookie().await;
    // Names on both sides of erl's, so either may win the tie-break.
    for prefix in ["a_ember", "z_ember"] {
        let ember = Node::start_with(config(&unique(prefix), &cookie, epmd_server.port()))
            .await
            .unwrap();
        let mut erl = start_erl(&unique("m_erl"), &cookie, epmd_server.port(), &[]);
        let e = ember.name().as_str().to_string();
        let expr = format!("net_adm:ping('{e}').");
        erl.send(&expr);
        assert!(ember.ping(&erl.name).await);
        assert_eq!(erl.answer(&expr), "pong");
        assert_eq!(ember.nodes(), vec![Atom::new(&erl.name)]);
        assert_eq!(erl.eval(&format!("lists:member('{e}', nodes()).")), "true");
        assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ember_sends_to_erl_by_name_and_by_pid_connecting_on_first_send() {
    if !erl_required() {
        return;
    }
    let (
        EmberAndErl {
            epmd: _epmd,
            ember,
            mut erl,
            e,
            ..
        },
        mut deliveries,
    ) = EmberAndErl::watched(|_| {}, &[]).await;
    assert_eq!(erl.eval("register(sink, self())."), "true");

    // By name, not yet connected: the send connects.
    assert!(ember.nodes().is_empty());
    let big = Term::tuple([
        Term::atom("hi"),
        Term::from(-7),
        Term::from(2.5),
        Term::binary(b"bytes".to_vec()),
    ]);
    ember.send_named(&erl.name, "sink", big).await.unwrap();
    assert_eq!(
        erl.eval("receive X -> X after 5000 -> timeout end."),
        "{hi,-7,2.5,<<98,121,116,101,115>>}"
    );

    // By pid: erl's shell process, as erl sent it.
    let me = erl.eval("self().");
    assert_eq!(
        erl.eval(&format!("{{some_name, '{e}'}} ! {{self(), ping}}.")),
        format!("{{{me},ping}}")
    );
    let from = deliveries
        .first("erl's {Pid, ping} at the hook", |event| match event {
            Event::Delivered(Delivery::ToName { message, .. }) => match message.as_tuple() {
                Some([pid @ Term::Pid(_), m]) if m.is_atom("ping") => Some(pid.clone()),
                _ => None,
            },
            _ => None,
        })
        .await;
    ember.send(&from, Term::atom("pong")).await.unwrap();
    assert_eq!(
        erl.eval("receive X -> X after 5000 -> timeout end."),
        "pong"
    );
    // A pid of a node nobody runs: an error, and nothing else breaks.
    let Term::Pid(mut ghost) = from.clone() else {
        unreachable!()
    };
    ghost.node = Atom::new("ghost@localhost");
    assert!(ember
        .send(&Term::Pid(ghost), Term::atom("lost"))
        .await
        .is_err());
    assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
}

/// `global:sync()` on erl, with a deadline: `ok`, or `sync_hung`.
const GLOBAL_SYNC: &str = "Self = self(), spawn(fun() -> Self ! {synced, global:sync()} end), \
     receive {synced, R} -> R after 10000 -> sync_hung end.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visible_ember_node_lets_global_sync_complete_whoever_connects() {
    if !erl_required() {
        return;
    }
    let (epmd_server, cookie) = epmd_and_cookie().await;
    for ember_connects in [false, true] {
        let ember = Node::start_with(config(&unique("ember"), &cookie, epmd_server.port()))
            .await
            .unwrap();
        let mut erl = start_erl(&unique("erl"), &cookie, epmd_server.port(), &[]);
        let e = ember.name().as_str().to_string();
        if ember_connects {
            assert!(ember.ping(&erl.name).await);
        } else {
            assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
        }
        assert_eq!(erl.eval("nodes()."), format!("[{e}]"));
        assert_eq!(
            erl.eval(GLOBAL_SYNC),
            "ok",
            "ember connects: {ember_connects}"
        );
        // global's own operations over all nodes work beside Ember: a
        // registration, a transaction (whose lock asks every node in
        // nodes(), and takes Ember's `noproc` as "no global there").
        assert_eq!(erl.eval("global:register_name(erl_shell, self())."), "yes");
        assert_eq!(
            erl.eval("global:trans({ember_test_lock, self()}, fun() -> done end, nodes(), 0)."),
            "done"
        );
        assert_eq!(
            erl.eval("global:whereis_name(erl_shell) =:= self()."),
            "true"
        );
        // An "all nodes" rpc answers for Ember at once (no rex yet: an
        // error for Ember, never a hang).
        let r = erl.eval(
            "{Rs, Bad} = rpc:multicall(nodes(), erlang, node, [], 10000), {length(Rs), Bad}.",
        );
        assert_eq!(r, "{1,[]}");
        // Drop the connection and connect again: a fresh init_connect, answered again.
        assert_eq!(erl.eval(&format!("monitor_node('{e}', true).")), "true");
        assert!(ember.disconnect(&erl.name));
        assert_eq!(
            erl.eval(&format!(
                "receive {{nodedown, '{e}'}} -> ok after 10000 -> no_nodedown end."
            )),
            "ok",
            "erl never saw the disconnect"
        );
        assert_eq!(erl.eval("nodes()."), "[]");
        assert_eq!(erl.eval(&format!("net_adm:ping('{e}').")), "pong");
        assert_eq!(erl.eval(GLOBAL_SYNC), "ok");
        // erl's node and its global server are alive and well.
        assert!(erl.alive());
        assert_eq!(erl.eval("is_pid(whereis(global_name_server))."), "true");
        assert_eq!(
            erl.eval("lists:member(erl_shell, global:registered_names())."),
            "true"
        );
    }
}
