//! Supervised tasks across two Ember nodes in one test process: a task
//! supervisor on one node (`ember_dist::tasks::start_task_supervisor`),
//! started, awaited and killed from the other (`RemoteTaskSupervisor`),
//! with Elixir's `Task.Supervisor` protocol on the wire: results, crashes,
//! undefined functions, timeouts, `max_children`, `start_child`, a linked
//! caller taken down by its task, and the task's node going away. And a
//! typed `gen_server` call (`RemoteServer`) to a server on the other node.

mod support;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use ember_dist::tasks::{start_task_supervisor, RemoteTaskError, RemoteTaskSupervisor};
use ember_dist::{Functions, Raise};
use ember_otp::gen::{CallError, ReplyTo, StartOptions};
use ember_otp::gen_server::{self, CallReturn, GenServer, Init, RemoteServer};
use ember_otp::supervisor::{Restart, Shutdown};
use ember_otp::task::TaskError;
use ember_runtime::dist;
use ember_runtime::{
    exit, monitor, receive, self_pid, send, trap_exit, Down, Exit, ExitReason, Pid, Spawn,
};
use ember_term::Term;
use ember_testkit::{free_port, random_cookie, unique};
use support::ember::{EmberNode, Reports};

/// The functions node B runs as tasks.
fn functions() -> Functions {
    let mut f = Functions::new();
    f.register("t", "double", 1, |args| async move {
        match args[0].as_int() {
            Some(n) => Ok(Term::from(2 * n)),
            None => Err(Raise::Error(Term::atom("badarg"))),
        }
    });
    f.register("t", "slow", 1, |args| async move {
        let ms = args[0].as_int().and_then(|n| u64::try_from(n).ok());
        ember_runtime::sleep(Duration::from_millis(ms.unwrap_or(0))).await;
        Ok(Term::atom("done"))
    });
    f.register("t", "crash", 0, |_| async move {
        panic!("crash on purpose");
    });
    f.register("t", "fail", 0, |_| async move {
        Err(Raise::Error(Term::atom("boom")))
    });
    // Runs once more each time: the first run crashes, later ones end
    // normally; each tells `Pid` `{run, N}`.
    f.register("t", "flaky", 1, |args| async move {
        static RUNS: AtomicI64 = AtomicI64::new(0);
        let to = dist::pid_from_term(&args[0]).ok_or(Raise::Error(Term::atom("badarg")))?;
        let n = RUNS.fetch_add(1, Ordering::SeqCst) + 1;
        send(to, Term::tuple([Term::atom("run"), Term::from(n)]));
        if n == 1 {
            return Err(Raise::Error(Term::atom("first_run")));
        }
        Ok(Term::atom("ok"))
    });
    // Tells `Pid` `{running, Self}` and waits for ever.
    f.register("t", "forever", 1, |args| async move {
        let to = dist::pid_from_term(&args[0]).ok_or(Raise::Error(Term::atom("badarg")))?;
        send(
            to,
            Term::tuple([Term::atom("running"), dist::pid_to_term(self_pid())]),
        );
        receive::<()>().await;
        Ok(Term::atom("ok"))
    });
    // Traps exits and ignores them, telling `Pid` `{trapped, Reason}`.
    f.register("t", "trap", 1, |args| async move {
        let to = dist::pid_from_term(&args[0]).ok_or(Raise::Error(Term::atom("badarg")))?;
        trap_exit(true);
        send(
            to,
            Term::tuple([Term::atom("running"), dist::pid_to_term(self_pid())]),
        );
        loop {
            let exit = receive::<Exit>().await;
            send(
                to,
                Term::tuple([Term::atom("trapped"), exit.reason.to_term()]),
            );
        }
    });
    f.register("t", "notify", 1, |args| async move {
        let to = dist::pid_from_term(&args[0]).ok_or(Raise::Error(Term::atom("badarg")))?;
        send(
            to,
            Term::tuple([Term::atom("notified"), Term::Atom(dist::node())]),
        );
        Ok(Term::atom("ok"))
    });
    f
}

/// Node A (the caller) and node B, which runs the task supervisors
/// `tasks` (unbounded) and `tiny` (at most one task) under a keeper.
fn two_nodes() -> (EmberNode, EmberNode) {
    let port = free_port();
    let cookie = random_cookie();
    let a = EmberNode::start(&unique("a"), &cookie, port);
    let b = EmberNode::start(&unique("b"), &cookie, port);
    let (tx, reports) = Reports::new();
    b.handle()
        .spawn_with(Spawn::new().label("task supervisors' keeper"), async move {
            start_task_supervisor("tasks", functions(), None)
                .await
                .unwrap();
            start_task_supervisor("tiny", functions(), Some(1))
                .await
                .unwrap();
            tx.send(()).unwrap();
            receive::<()>().await;
        })
        .unwrap();
    reports.next("the task supervisors started");
    (a, b)
}

/// The exit reason of a task crashed with `reason` in `t:f()`.
fn crashed(reason: Term, f: &str) -> Term {
    Term::tuple([
        reason,
        Term::list([Term::tuple([
            Term::atom("t"),
            Term::atom(f),
            Term::nil(),
            Term::nil(),
        ])]),
    ])
}

/// A task's result as the test reports it.
fn show(result: Result<Term, TaskError>) -> String {
    match result {
        Ok(value) => format!("ok {value}"),
        Err(e) => format!("err {e}"),
    }
}

/// Waits up to 10 s for the `Down` of `watch`.
async fn down_of(watch: ember_runtime::MonitorRef) -> ExitReason {
    receive::<Down>()
        .matching(move |d| d.monitor == watch)
        .timeout(Duration::from_secs(10))
        .await
        .expect("a Down within 10 s")
        .reason
}

#[test]
fn remote_tasks_between_ember_nodes_return_crash_time_out_and_are_supervised() {
    let (a, b) = two_nodes();
    let b_name = b.name.clone();
    let (tx, reports) = Reports::new();
    a.handle().spawn(async move {
        let tasks = RemoteTaskSupervisor::named("tasks", &b_name);
        let report = |what: &str, value: String| tx.send(format!("{what}: {value}")).unwrap();

        // A result, with and without a link.
        let t = tasks
            .async_nolink("t", "double", vec![Term::from(21)])
            .await
            .unwrap();
        assert!(!t.pid().is_local());
        report("nolink", show(t.await));
        let t = tasks
            .async_link("t", "double", vec![Term::from(4)])
            .await
            .unwrap();
        report("link", show(t.join().await));

        // Crashes come back as the task's exit reason.
        let t = tasks.async_nolink("t", "crash", vec![]).await.unwrap();
        let panic = Term::tuple([Term::atom("panic"), Term::from("crash on purpose")]);
        assert_eq!(
            t.await,
            Err(TaskError::Exited(ExitReason::from_term(crashed(
                panic, "crash"
            ))))
        );
        let t = tasks.async_nolink("t", "fail", vec![]).await.unwrap();
        report("error", show(t.await));
        let t = tasks.async_nolink("t", "nope", vec![]).await.unwrap();
        report("undef", show(t.await));

        // yield, then join.
        let mut t = tasks
            .async_nolink("t", "slow", vec![Term::from(300)])
            .await
            .unwrap();
        assert_eq!(t.yield_for(Duration::from_millis(1)).await, None);
        report(
            "after yield",
            show(t.join_timeout(Duration::from_secs(10)).await),
        );

        // A join that times out kills the task; the supervisor listed it.
        let t = tasks
            .async_nolink("t", "slow", vec![Term::from(60_000)])
            .await
            .unwrap();
        let pid = t.pid();
        let watch = monitor(pid);
        assert!(tasks.children().await.unwrap().contains(&pid));
        report(
            "timeout",
            show(t.join_timeout(Duration::from_millis(100)).await),
        );
        report("timed out task", down_of(watch).await.to_string());
        assert!(!tasks.children().await.unwrap().contains(&pid));

        // max_children.
        let tiny = RemoteTaskSupervisor::named("tiny", &b_name);
        let first = tiny
            .async_nolink("t", "slow", vec![Term::from(60_000)])
            .await
            .unwrap();
        let second = tiny.async_nolink("t", "double", vec![Term::from(1)]).await;
        report("second of tiny", format!("{:?}", second.map(|t| t.pid())));
        assert_eq!(
            first.join_timeout(Duration::ZERO).await,
            Err(TaskError::Timeout)
        );

        // start_child: nobody awaits; the function runs.
        let me = dist::pid_to_term(self_pid());
        tasks.start_child("t", "notify", vec![me]).await.unwrap();
        let notified = receive::<Term>().timeout(Duration::from_secs(10)).await;
        report(
            "start_child",
            notified.map_or("none".into(), |t| t.to_string()),
        );

        // No such supervisor there.
        let nobody = RemoteTaskSupervisor::named("nobody", &b_name);
        let refused = nobody
            .async_nolink("t", "double", vec![Term::from(1)])
            .await;
        assert!(
            matches!(
                refused,
                Err(RemoteTaskError::Call {
                    error: CallError::NoProc,
                    ..
                })
            ),
            "{refused:?}"
        );
        report("nobody", refused.unwrap_err().to_string());

        // A linked task's crash takes down a caller that does not trap
        // exits, with the task's reason.
        let b_name2 = b_name.clone();
        let caller = Spawn::new()
            .monitor()
            .spawn(async move {
                let tasks = RemoteTaskSupervisor::named("tasks", &b_name2);
                let t = tasks.async_link("t", "fail", vec![]).await.unwrap();
                let _ = t.join_timeout(Duration::from_secs(10)).await;
                // Only the link's exit signal ends this process.
                receive::<()>().await;
            })
            .unwrap();
        report(
            "linked caller",
            down_of(caller.monitor.unwrap()).await.to_string(),
        );
        // Nothing stray is left in this mailbox.
        let stray = receive::<Term>().timeout(Duration::from_millis(50)).await;
        report("stray", stray.map_or("none".into(), |t| t.to_string()));
    });
    let b = &b.name;
    assert_eq!(reports.next("nolink"), "nolink: ok 42");
    assert_eq!(reports.next("link"), "link: ok 8");
    assert_eq!(
        reports.next("error"),
        "error: err the task exited: {boom,[{t,fail,[],[]}]}"
    );
    assert_eq!(
        reports.next("undef"),
        "undef: err the task exited: {undef,[{t,nope,[],[]}]}"
    );
    assert_eq!(reports.next("yield"), "after yield: ok done");
    assert_eq!(
        reports.next("timeout"),
        "timeout: err timeout: the task did not finish in time"
    );
    assert_eq!(reports.next("timed out task"), "timed out task: killed");
    assert_eq!(reports.next("tiny"), "second of tiny: Err(MaxChildren)");
    assert_eq!(
        reports.next("start_child"),
        format!("start_child: {{notified,{b}}}")
    );
    assert_eq!(
        reports.next("nobody"),
        format!(
            "nobody: cannot reach the task supervisor {{nobody, {b}}}: noproc: the server is not alive"
        )
    );
    assert_eq!(
        reports.next("linked caller"),
        "linked caller: {boom,[{t,fail,[],[]}]}"
    );
    assert_eq!(reports.next("stray"), "stray: none");
}

/// Waits up to 10 s for a `{Tag, Value}` term; its value.
async fn tagged(tag: &'static str) -> Term {
    let message = receive::<Term>()
        .matching(move |t| {
            t.as_tuple()
                .is_some_and(|t| t.len() == 2 && t[0].is_atom(tag))
        })
        .timeout(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no {{{tag}, _}} within 10 s"));
    message.as_tuple().expect("a pair")[1].clone()
}

/// The pid in a `{running, Pid}` message.
async fn running() -> Pid {
    dist::pid_from_term(&tagged("running").await).expect("a pid")
}

/// Polls the remote children until `done` holds (10 s at most).
async fn children_until(tasks: &RemoteTaskSupervisor, done: impl Fn(&[Pid]) -> bool) -> Vec<Pid> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children = tasks.children().await.unwrap();
        if done(&children) || Instant::now() > deadline {
            return children;
        }
        ember_runtime::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn start_child_restarts_as_asked_and_tasks_shut_down_as_their_caller_said() {
    let (a, b) = two_nodes();
    let b_name = b.name.clone();
    let (tx, reports) = Reports::new();
    a.handle().spawn(async move {
        let report = |what: &str, value: String| tx.send(format!("{what}: {value}")).unwrap();
        let tasks = RemoteTaskSupervisor::named("tasks", &b_name);
        let me = dist::pid_to_term(self_pid());
        let five = Shutdown::Timeout(Duration::from_secs(5));

        // Transient: restarted after its crash, not after its normal end.
        tasks
            .start_child_with("t", "flaky", vec![me.clone()], Restart::Transient, five)
            .await
            .unwrap();
        let runs = [tagged("run").await, tagged("run").await];
        report("transient", format!("[{}, {}]", runs[0], runs[1]));
        let left = children_until(&tasks, |c| c.is_empty()).await;
        report("transient children", format!("{left:?}"));
        let more = receive::<Term>().timeout(Duration::from_millis(100)).await;
        report("third run", format!("{more:?}"));

        // Permanent: killed, it runs again; terminate_child ends it.
        tasks
            .start_child_with("t", "forever", vec![me.clone()], Restart::Permanent, five)
            .await
            .unwrap();
        let first = running().await;
        exit(first, ExitReason::Kill);
        let second = running().await;
        report("restarted", (second != first).to_string());
        report(
            "terminate",
            format!("{:?}", tasks.terminate_child(second).await),
        );
        report(
            "permanent children",
            format!("{:?}", tasks.children().await),
        );
        report(
            "again",
            format!("{:?}", tasks.terminate_child(second).await.is_err()),
        );

        // A temporary task that traps exits: its shutdown is the caller's.
        let short = Shutdown::Timeout(Duration::from_millis(300));
        tasks
            .start_child_with("t", "trap", vec![me.clone()], Restart::Temporary, short)
            .await
            .unwrap();
        let trapper = running().await;
        let watch = monitor(trapper);
        let asked = Instant::now();
        tasks.terminate_child(trapper).await.unwrap();
        let took = asked.elapsed();
        report("trapped", tagged("trapped").await.to_string());
        report("short", down_of(watch).await.to_string());
        report(
            "took",
            (took >= Duration::from_millis(300) && took < Duration::from_millis(4500)).to_string(),
        );

        tasks
            .start_child_with(
                "t",
                "trap",
                vec![me.clone()],
                Restart::Temporary,
                Shutdown::BrutalKill,
            )
            .await
            .unwrap();
        let trapper = running().await;
        let watch = monitor(trapper);
        tasks.terminate_child(trapper).await.unwrap();
        report("brutal", down_of(watch).await.to_string());
        let stray = receive::<Term>().timeout(Duration::from_millis(100)).await;
        report("stray", format!("{stray:?}"));
    });
    assert_eq!(reports.next("transient"), "transient: [1, 2]");
    assert_eq!(reports.next("children"), "transient children: []");
    assert_eq!(reports.next("third"), "third run: None");
    assert_eq!(reports.next("restarted"), "restarted: true");
    assert_eq!(reports.next("terminate"), "terminate: Ok(())");
    assert_eq!(reports.next("children"), "permanent children: Ok([])");
    assert_eq!(reports.next("again"), "again: true");
    assert_eq!(reports.next("trapped"), "trapped: shutdown");
    assert_eq!(reports.next("short"), "short: killed");
    assert_eq!(reports.next("took"), "took: true");
    assert_eq!(reports.next("brutal"), "brutal: killed");
    assert_eq!(reports.next("stray"), "stray: None");
}

#[test]
fn a_remote_task_whose_node_goes_away_is_noconnection() {
    let (a, b) = two_nodes();
    let b_name = b.name.clone();
    let (tx, reports) = Reports::new();
    a.handle().spawn(async move {
        let tasks = RemoteTaskSupervisor::named("tasks", &b_name);
        let t = tasks
            .async_nolink("t", "slow", vec![Term::from(60_000)])
            .await
            .unwrap();
        tx.send("started".to_string()).unwrap();
        tx.send(show(t.join_timeout(Duration::from_secs(30)).await))
            .unwrap();
        // A supervisor on a node that is gone: noconnection.
        let again = tasks.async_nolink("t", "double", vec![Term::from(1)]).await;
        tx.send(match again {
            Ok(t) => format!("started {}", t.pid()),
            Err(e) => e.to_string(),
        })
        .unwrap();
    });
    assert_eq!(reports.next("the task started"), "started");
    b.node.stop();
    assert_eq!(
        reports.within(Duration::from_secs(10), "the join after the node stopped"),
        "err the task exited: noconnection"
    );
    assert_eq!(
        reports.next("a start on the stopped node"),
        format!(
            "cannot reach the task supervisor {{tasks, {}}}: the server exited: noconnection",
            b.name
        )
    );
}

/// A request to [`Shelf`], the same type on both nodes (serde both ways).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum ShelfCall {
    Put { key: String, count: u32 },
    Count(String),
}

/// A server counting things by key, called with term requests.
struct Shelf(std::collections::HashMap<String, u32>);

impl GenServer for Shelf {
    type Args = ();
    type Call = ShelfCall;
    type Reply = Option<u32>;
    type Cast = ();
    type Continue = ();

    async fn init(_: ()) -> Init<Self> {
        Init::Ok(Shelf(Default::default()))
    }

    async fn handle_call(
        &mut self,
        request: ShelfCall,
        _from: &ReplyTo<Option<u32>>,
    ) -> CallReturn<Self> {
        CallReturn::Reply(match request {
            ShelfCall::Put { key, count } => self.0.insert(key, count),
            ShelfCall::Count(key) => self.0.get(&key).copied(),
        })
    }

    fn call_from_term(request: Term) -> Result<ShelfCall, Term> {
        ember_term::from_term(request.clone())
            .map_err(|_| Term::tuple([Term::atom("bad_request"), request]))
    }

    fn reply_to_term(reply: Option<u32>) -> Term {
        ember_term::to_term(&reply).expect("an Option<u32> is a term")
    }
}

#[test]
fn a_typed_call_reaches_a_gen_server_on_another_ember_node() {
    let (a, b) = two_nodes();
    let (tx, reports) = Reports::new();
    b.handle().spawn(async move {
        gen_server::start_link_with::<Shelf>((), StartOptions::new().name("shelf"))
            .await
            .unwrap();
        tx.send(String::new()).unwrap();
        receive::<()>().await;
    });
    reports.next("the shelf started");
    let b_name = b.name.clone();
    let (tx, reports) = Reports::new();
    a.handle().spawn(async move {
        let shelf = RemoteServer::<ShelfCall>::named("shelf", &b_name);
        let put = ShelfCall::Put {
            key: "pears".into(),
            count: 3,
        };
        let before: Option<u32> = shelf.call(&put).await.unwrap();
        let now: Option<u32> = shelf.call(&ShelfCall::Count("pears".into())).await.unwrap();
        let none: Option<u32> = shelf.call(&ShelfCall::Count("figs".into())).await.unwrap();
        tx.send(format!("{before:?} {now:?} {none:?}")).unwrap();
        // What the server refuses comes back as its {error, Why} reply.
        let refused = RemoteServer::<(u8, u8)>::named("shelf", &b_name)
            .call_raw(&(1, 2))
            .await
            .unwrap();
        tx.send(refused.to_string()).unwrap();
        let nobody = RemoteServer::<ShelfCall>::named("nobody", &b_name)
            .call::<Option<u32>>(&ShelfCall::Count("x".into()))
            .await
            .unwrap_err();
        tx.send(nobody.to_string()).unwrap();
    });
    assert_eq!(reports.next("the calls"), "None Some(3) None");
    assert_eq!(
        reports.next("the refused call"),
        "{error,{bad_request,{1,2}}}"
    );
    assert_eq!(
        reports.next("the call to nobody"),
        format!(
            "gen_server call to {{nobody, {}}} failed: noproc: the server is not alive",
            b.name
        )
    );
}
