//! Spawning processes on other nodes from Ember
//! (`ember_runtime::dist::spawn`, `spawn_link`, `spawn_monitor`,
//! `spawn_opt`): on another Ember node (registered functions) and on a
//! real `erl` node (any function, `erlang:apply` of a fun), with links,
//! monitors, error replies and the deadline.

mod support;

use std::time::Duration;

use ember_dist::{Functions, Node, NodeConfig, Raise};
use ember_runtime::dist::{self, RemoteSpawnOptions};
use ember_runtime::io::IoRequest;
use ember_runtime::{exit, receive, self_pid, trap_exit, Down, Exit, ExitReason, Spawn};
use ember_term::Term;
use ember_testkit::{erl_required, free_port, random_cookie, start_erl, unique, DEADLINE};
use support::ember::{next_term, EmberNode, Reports};

/// The next `Down` of `pid`, as `pid reason`, within the deadline.
async fn down_of(pid: ember_runtime::Pid) -> Down {
    receive::<Down>()
        .matching(move |d| d.pid == pid)
        .timeout(DEADLINE)
        .await
        .expect("a Down within the deadline")
}

/// The next `Exit` from `pid`, within the deadline.
async fn exit_from(pid: ember_runtime::Pid) -> Exit {
    receive::<Exit>()
        .matching(move |e| e.from == pid)
        .timeout(DEADLINE)
        .await
        .expect("an Exit within the deadline")
}

#[test]
fn an_ember_process_spawns_on_another_ember_node() {
    let port = free_port();
    let cookie = random_cookie();
    let mut functions = Functions::new();
    // demo:tell(Pid, Term): sends Term to Pid.
    functions.register("demo", "tell", 2, |args| async move {
        let to = dist::pid_from_term(&args[0]).ok_or(Raise::Error(Term::atom("badarg")))?;
        ember_runtime::send(to, args[1].clone());
        Ok(Term::atom("ok"))
    });
    functions.register("demo", "exit", 1, |args| async move {
        Err(Raise::Exit(args[0].clone()))
    });
    functions.register("demo", "wait", 0, |_| async move {
        let _ = receive::<Term>().matching(|t| t.is_atom("never")).await;
        Ok(Term::atom("ok"))
    });
    let a = EmberNode::start_with(&unique("a"), &cookie, port, functions);
    let b = EmberNode::start(&unique("b"), &cookie, port);
    // A node without a runtime answers every SPAWN_REQUEST with notsup.
    let plain_name = format!("{}@localhost", unique("plain"));
    let plain = {
        let mut config = NodeConfig::new(&plain_name, &cookie);
        config.epmd_port = port;
        config.listen = "127.0.0.1:0".parse().unwrap();
        b.rt.block_on(Node::start_with(config))
            .expect("a plain node")
    };
    let (a_name, b_name) = (a.name.clone(), b.name.clone());
    let (tx, reports) = Reports::new();
    b.handle().spawn(async move {
        trap_exit(true);
        let me = dist::pid_to_term(self_pid());
        // spawn: the function runs there and tells us.
        let pid = dist::spawn(&a_name, "demo", "tell", vec![me, Term::atom("hello")])
            .await
            .expect("spawn");
        tx.send(format!(
            "spawned local={} {}",
            pid.is_local(),
            next_term().await
        ))
        .unwrap();
        // spawn_monitor: the Down carries the reference and the reason.
        let (pid, monitor) = dist::spawn_monitor(&a_name, "demo", "exit", vec![Term::atom("boom")])
            .await
            .expect("spawn_monitor");
        let down = down_of(pid).await;
        assert_eq!(down.monitor, monitor);
        tx.send(format!("monitor {}", down.reason)).unwrap();
        // An unknown function: the process exits with undef.
        let (pid, _) = dist::spawn_monitor(&a_name, "demo", "nope", vec![])
            .await
            .expect("spawn_monitor of an unknown function");
        let reason = down_of(pid).await.reason.to_term();
        let undef = reason.as_tuple().map(|t| t[0].is_atom("undef"));
        tx.send(format!("unknown undef={undef:?}")).unwrap();
        // spawn_link, then kill it: the link brings `killed` back.
        let pid = dist::spawn_link(&a_name, "demo", "wait", vec![])
            .await
            .expect("spawn_link");
        exit(pid, ExitReason::Kill);
        tx.send(format!("link {}", exit_from(pid).await.reason))
            .unwrap();
        // Errors.
        let own = dist::spawn(&b_name, "demo", "wait", vec![]).await;
        let nowhere = dist::spawn("nobody@localhost", "demo", "wait", vec![]).await;
        let notsup = dist::spawn(&plain_name, "demo", "wait", vec![]).await;
        tx.send(format!("{own:?} {nowhere:?} {notsup:?}")).unwrap();
    });
    assert_eq!(reports.next("spawn"), "spawned local=false hello");
    assert_eq!(reports.next("spawn_monitor"), "monitor boom");
    assert_eq!(reports.next("unknown"), "unknown undef=Some(true)");
    assert_eq!(reports.next("spawn_link"), "link killed");
    assert_eq!(
        reports.next("errors"),
        "Err(BadArg) Err(NoConnection) Err(NotSup)"
    );
    plain.stop();
}

#[test]
fn an_ember_process_spawns_on_erl_with_link_monitor_and_output() {
    if !erl_required() {
        return;
    }
    let port = free_port();
    let cookie = random_cookie();
    let ember = EmberNode::start(&unique("ember"), &cookie, port);
    let erl = start_erl(&unique("erl"), &cookie, port, &[]);
    let erl_name = erl.name.clone();
    let (tx, reports) = Reports::new();
    // A group leader collecting what erl processes print.
    let collector = {
        let tx = tx.clone();
        ember.handle().spawn(async move {
            loop {
                let m = receive::<Term>().await;
                let Some(request) = IoRequest::from_term(&m) else {
                    continue;
                };
                if let Ok(text) = request.chars() {
                    tx.send(format!("printed {}", text.trim_end())).unwrap();
                }
                request.reply(Term::atom("ok"));
            }
        })
    };
    ember
        .handle()
        .spawn_with(Spawn::new().group_leader(collector), async move {
            trap_exit(true);
            // io:format on erl writes to our group leader.
            let format = Term::list("spawned on ~s~n".chars().map(|c| Term::from(c as i64)));
            let args = Term::list([Term::list("erl".chars().map(|c| Term::from(c as i64)))]);
            let (pid, _) = dist::spawn_monitor(&erl_name, "io", "format", vec![format, args])
                .await
                .expect("spawn io:format");
            tx.send(format!("io:format {}", down_of(pid).await.reason))
                .unwrap();
            // A BIF as the function: exit(boom).
            let (pid, monitor) =
                dist::spawn_monitor(&erl_name, "erlang", "exit", vec![Term::atom("boom")])
                    .await
                    .expect("spawn_monitor erlang:exit/1");
            let down = down_of(pid).await;
            assert_eq!(down.monitor, monitor);
            tx.send(format!("exit {}", down.reason)).unwrap();
            // An unknown function: undef, as on erl.
            let (pid, _) = dist::spawn_monitor(&erl_name, "no_such_module", "f", vec![])
                .await
                .expect("spawn_monitor of an unknown function");
            let reason = down_of(pid).await.reason.to_term();
            let undef = reason.as_tuple().map(|t| t[0].is_atom("undef"));
            tx.send(format!("unknown undef={undef:?}")).unwrap();
            // spawn_link, kill it: EXIT killed along the link.
            let pid = dist::spawn_link(&erl_name, "timer", "sleep", vec![Term::atom("infinity")])
                .await
                .expect("spawn_link timer:sleep");
            exit(pid, ExitReason::Kill);
            tx.send(format!("link {}", exit_from(pid).await.reason))
                .unwrap();
        })
        .unwrap();
    assert_eq!(reports.next("io:format output"), "printed spawned on erl");
    assert_eq!(reports.next("io:format exit"), "io:format normal");
    assert_eq!(reports.next("erlang:exit/1"), "exit boom");
    assert_eq!(reports.next("unknown"), "unknown undef=Some(true)");
    assert_eq!(reports.next("spawn_link + kill"), "link killed");
}

#[test]
fn a_spawn_past_its_deadline_is_abandoned_and_its_late_child_unlinked() {
    if !erl_required() {
        return;
    }
    let port = free_port();
    let cookie = random_cookie();
    let ember = EmberNode::start(&unique("ember"), &cookie, port);
    let mut erl = start_erl(&unique("erl"), &cookie, port, &[]);
    let erl_name = erl.name.clone();
    let (tx, reports) = Reports::new();
    ember
        .handle()
        .spawn_with(Spawn::new().name("probe"), async move {
            trap_exit(true);
            // A fun made on erl, applied there (`erlang:apply/2`).
            let fun = next_term().await;
            tx.send("got the fun".to_string()).unwrap();
            let go = next_term().await;
            assert!(go.is_atom("go"));
            let options = RemoteSpawnOptions {
                link: true,
                monitor: true,
                timeout: Duration::from_millis(500),
            };
            let late = dist::spawn_opt(
                &erl_name,
                "erlang",
                "apply",
                vec![fun, Term::nil()],
                options,
            )
            .await;
            tx.send(format!("{late:?}")).unwrap();
            // Nothing of the abandoned child reaches us.
            let stray = ember_runtime::receive_any(|m| m.is::<Down>() || m.is::<Exit>())
                .timeout(Duration::from_millis(1500))
                .await;
            tx.send(format!("stray={}", stray.is_some())).unwrap();
        })
        .unwrap();
    let e = &ember.name;
    // The child traps exits and tells the erl shell how it was unlinked.
    // The exit signal can also reach it before it traps exits (the erl node
    // is busy after its pause): then it dies of it, which the shell sees
    // by tracing every new process.
    assert_eq!(
        erl.eval(&format!(
            "T = self(), erlang:trace(new_processes, true, [procs]), {{probe, '{e}'}} ! fun() -> process_flag(trap_exit, true), receive {{'EXIT', _, R}} -> T ! {{child_exit, R}} end end, ok."
        )),
        "ok"
    );
    assert_eq!(reports.next("the fun"), "got the fun");
    erl.pause();
    ember.handle().send(
        ember.handle().whereis("probe").expect("probe"),
        Term::atom("go"),
    );
    let late = reports.within(DEADLINE, "the deadline");
    erl.resume();
    assert_eq!(late, "Err(Timeout)");
    let unlinked = erl.eval(
                "receive {trace, C, spawned, _, {erts_internal, dist_spawn_init, _}} -> receive {child_exit, R} -> R; {trace, C, exit, R} -> {died, R} after 10000 -> not_unlinked end after 10000 -> not_spawned end.",
    );
    assert!(
        unlinked == "abandoned" || unlinked == "{died,abandoned}",
        "the late child was not unlinked with `abandoned`: {unlinked}"
    );
    assert_eq!(reports.next("no stray signal"), "stray=false");
}
