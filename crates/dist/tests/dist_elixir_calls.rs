//! Rust calling a real Elixir node: a typed `GenServer` call
//! (`ember_otp::gen_server::RemoteServer`) to an Elixir `GenServer` — a
//! reply, a cast, a timeout whose late reply never shows up, a reply of
//! the wrong type, a crash of the callee and a name nobody has — and tasks
//! under an Elixir `Task.Supervisor` (`ember_dist::tasks::RemoteTaskSupervisor`):
//! a result, a raised error, a timeout that kills the task, `start_child`.
//!
//! Each test starts an Ember node (embedded port mapper on a free port)
//! and `elixir --sname` registered with it. Every wait has a deadline.

mod support;

use std::time::Duration;

use ember_dist::tasks::RemoteTaskSupervisor;
use ember_otp::gen::CallError;
use ember_otp::gen_server::{RemoteCallError, RemoteServer};
use ember_otp::task::TaskError;
use ember_runtime::{dist, monitor, receive, self_pid, Down, ExitReason};
use ember_term::Term;
use ember_testkit::{elixir_required, free_port, random_cookie, start_elixir, unique, Elixir};
use serde::Serialize;
use support::ember::{EmberNode, Reports};

fn nodes() -> (EmberNode, Elixir) {
    let port = free_port();
    let cookie = random_cookie();
    let ember = EmberNode::start(&unique("ember"), &cookie, port);
    let ex = start_elixir(&unique("ex"), &cookie, port);
    (ember, ex)
}

/// The requests of the Elixir `Counter` below.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Counter {
    Add(i64),
    Sleep(u64),
    Set(i64),
    Crash,
}

const COUNTER: &str = "defmodule Counter do use GenServer; \
    def init(n), do: {:ok, n}; \
    def handle_call({:add, k}, _from, n), do: {:reply, n + k, n + k}; \
    def handle_call({:sleep, ms}, _from, n), do: (Process.sleep(ms); {:reply, n, n}); \
    def handle_call(:crash, _from, _n), do: raise(\"boom\"); \
    def handle_cast({:set, k}, _n), do: {:noreply, k} end";

#[test]
fn rust_calls_an_elixir_gen_server_typed_with_reply_timeout_crash_and_noproc() {
    if !elixir_required() {
        return;
    }
    let (ember, mut ex) = nodes();
    assert!(ex.eval(COUNTER).starts_with("{:module, Counter"));
    assert!(ex
        .eval("GenServer.start(Counter, 0, name: :counter)")
        .starts_with("{:ok, #PID<"));
    let ex_name = ex.name.clone();
    let (tx, reports) = Reports::new();
    ember.handle().spawn(async move {
        let report = |what: &str, value: String| tx.send(format!("{what}: {value}")).unwrap();
        let counter = RemoteServer::<Counter>::named("counter", &ex_name);
        report(
            "add",
            format!("{:?}", counter.call::<i64>(&Counter::Add(5)).await),
        );
        report(
            "add",
            format!("{:?}", counter.call::<i64>(&Counter::Add(2)).await),
        );

        // A timeout; the reply comes later and is dropped by its alias.
        let late = counter
            .call_timeout::<i64>(&Counter::Sleep(500), Duration::from_millis(50))
            .await;
        report("sleep", late.unwrap_err().to_string());
        // Behind the late reply from the same server: if it had been let
        // through, it would be in the mailbox by now.
        report(
            "after",
            format!("{:?}", counter.call::<i64>(&Counter::Add(0)).await),
        );
        let stray = receive::<Term>().timeout(Duration::from_millis(50)).await;
        report("stray", stray.map_or("none".into(), |t| t.to_string()));

        // A cast, then a reply read as the wrong type.
        counter.cast(&Counter::Set(100)).unwrap();
        report(
            "set",
            format!("{:?}", counter.call::<i64>(&Counter::Add(1)).await),
        );
        let wrong = counter.call::<String>(&Counter::Add(0)).await;
        assert!(
            matches!(wrong, Err(RemoteCallError::Decode { .. })),
            "{wrong:?}"
        );

        // The callee crashes: its exit reason, Elixir's exception.
        let crash = counter.call::<i64>(&Counter::Crash).await.unwrap_err();
        let Some(CallError::Exited(ExitReason::Term(reason))) = crash.call_error() else {
            panic!("not an exit: {crash:?}")
        };
        let exception = reason
            .as_tuple()
            .and_then(|t| t[0].as_map())
            .expect("{Exception, Stack}");
        report(
            "crash",
            format!(
                "{} {}",
                exception.get_atom("__struct__").unwrap(),
                exception.get_atom("message").unwrap().as_str().unwrap()
            ),
        );
        assert!(crash.to_string().starts_with(&format!(
            "gen_server call to {{counter, {ex_name}}} failed: the server exited: "
        )));

        // Nobody has the name now.
        let gone = counter.call::<i64>(&Counter::Add(1)).await.unwrap_err();
        report("gone", gone.to_string());
    });
    assert_eq!(reports.next("add 5"), "add: Ok(5)");
    assert_eq!(reports.next("add 2"), "add: Ok(7)");
    assert_eq!(
        reports.next("sleep"),
        format!(
            "sleep: gen_server call to {{counter, {}}} failed: timeout: no reply in time",
            ex.name
        )
    );
    assert_eq!(reports.next("after"), "after: Ok(7)");
    assert_eq!(reports.next("stray"), "stray: none");
    assert_eq!(reports.next("set"), "set: Ok(101)");
    assert_eq!(reports.next("crash"), "crash: 'Elixir.RuntimeError' boom");
    assert_eq!(
        reports.next("gone"),
        format!(
            "gone: gen_server call to {{counter, {}}} failed: noproc: the server is not alive",
            ex.name
        )
    );
    // The Elixir node is fine.
    assert_eq!(ex.eval("1 + 1"), "2");
}

#[test]
fn rust_runs_tasks_under_an_elixir_task_supervisor() {
    if !elixir_required() {
        return;
    }
    let (ember, mut ex) = nodes();
    assert!(ex
        .eval("Task.Supervisor.start_link(name: :ex_tasks)")
        .starts_with("{:ok, #PID<"));
    let ex_name = ex.name.clone();
    let (tx, reports) = Reports::new();
    ember.handle().spawn(async move {
        let report = |what: &str, value: String| tx.send(format!("{what}: {value}")).unwrap();
        let tasks = RemoteTaskSupervisor::named("ex_tasks", &ex_name);
        let t = tasks
            .async_nolink("Elixir.String", "upcase", vec![Term::from("abc")])
            .await
            .unwrap();
        report("upcase", format!("{:?}", t.await.map(|v| v.to_string())));
        let t = tasks.async_link("erlang", "node", vec![]).await.unwrap();
        report("node", format!("{:?}", t.await.map(|v| v.to_string())));

        // A raised error: the task's {Reason, Stack}.
        let t = tasks
            .async_nolink("erlang", "error", vec![Term::atom("boom")])
            .await
            .unwrap();
        let Err(TaskError::Exited(ExitReason::Term(reason))) = t.await else {
            panic!("the task did not crash")
        };
        report("error", reason.as_tuple().unwrap()[0].to_string());

        // A join that times out kills the task.
        let t = tasks
            .async_nolink("timer", "sleep", vec![Term::from(60_000)])
            .await
            .unwrap();
        let watch = monitor(t.pid());
        report(
            "sleep",
            format!("{:?}", t.join_timeout(Duration::from_millis(100)).await),
        );
        let down = receive::<Down>()
            .matching(move |d| d.monitor == watch)
            .timeout(Duration::from_secs(10))
            .await
            .expect("the killed task's Down");
        report("killed", down.reason.to_string());

        // start_child: erlang:send(Me, hi) runs there.
        let me = dist::pid_to_term(self_pid());
        tasks
            .start_child("erlang", "send", vec![me, Term::atom("hi")])
            .await
            .unwrap();
        let hi = receive::<Term>().timeout(Duration::from_secs(10)).await;
        report("start_child", hi.map_or("none".into(), |t| t.to_string()));
    });
    assert_eq!(reports.next("upcase"), "upcase: Ok(\"<<65,66,67>>\")");
    assert_eq!(reports.next("node"), format!("node: Ok(\"{}\")", ex.name));
    assert_eq!(reports.next("error"), "error: boom");
    assert_eq!(reports.next("sleep"), "sleep: Err(Timeout)");
    assert_eq!(reports.next("killed"), "killed: killed");
    assert_eq!(reports.next("start_child"), "start_child: hi");
    assert_eq!(ex.eval("Task.Supervisor.children(:ex_tasks)"), "[]");
}
