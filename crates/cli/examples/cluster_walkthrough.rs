//! Two Ember nodes, `foo` and `bar`, doing what the Elixir guide's
//! distribution walk-through does with two `iex --sname` sessions: spawn a
//! function on the other node that prints its node, spawn a linked process
//! there and ping it, call a function and a server on the other node, and run a task
//! there and await its result.
//!
//! ```text
//! cargo run --example cluster_walkthrough
//! ```
//!
//! Both nodes live in this one OS process (two runtimes, each its own
//! node, talking over TCP as separate machines would). They register with
//! the port mapper at `ERL_EPMD_PORT` (default 4369), or start an embedded
//! one when none runs there. Every wait has a deadline: a step that fails
//! says which, and the example exits with status 1.

use std::time::Duration;

use ember_dist::tasks::{start_task_supervisor, RemoteTaskSupervisor};
use ember_dist::{rpc_call, Functions, Node, NodeConfig, Raise};
use ember_otp::gen::ReplyTo;
use ember_otp::gen_server::{self, call_term, CallReturn, GenServer, Init, TermServer};
use ember_runtime::dist::{self, pid_from_term, pid_to_term};
use ember_runtime::{io, receive, self_pid, send, Down, ExitReason, Runtime, Spawn};
use ember_term::{BigInt, Term};

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(10);

/// What a step failed with.
type Step<T> = Result<T, String>;

fn main() {
    if let Err(e) = walkthrough() {
        eprintln!("cluster_walkthrough: {e}");
        std::process::exit(1);
    }
}

fn walkthrough() -> Step<()> {
    let cookie = format!("walkthrough-{}", std::process::id());
    // `iex --sname bar`: the node whose functions `foo` runs.
    let bar_rt = Runtime::builder().build().map_err(|e| e.to_string())?;
    let bar_node = start_node(&bar_rt, "bar@localhost", &cookie, bar_functions())?;
    bar_rt.block_on(async {
        gen_server::start_with::<Counter>((), ember_otp::gen::StartOptions::new().name("counter"))
            .await
            .map_err(|e| format!("cannot start bar's counter: {e}"))?;
        // `Task.Supervisor.start_link(name: Tasks)`: runs bar's functions
        // for other nodes. It is linked to this setup process, so it gets
        // a process of its own to live on.
        Spawn::new()
            .label("walkthrough_tasks owner")
            .spawn(async {
                if let Ok(_tasks) =
                    start_task_supervisor("walkthrough_tasks", bar_functions(), None).await
                {
                    receive::<()>().await;
                }
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start bar's task supervisor: {e}"))
    })?;
    // `iex --sname foo`: where we type.
    let foo_rt = Runtime::builder().build().map_err(|e| e.to_string())?;
    let foo_node = start_node(&foo_rt, "foo@localhost", &cookie, Functions::new())?;
    let bar_name = bar_node.name().to_string();
    let done = foo_rt.block_on(async move { on_foo(&bar_name).await });
    foo_node.stop();
    bar_node.stop();
    done
}

fn start_node(rt: &Runtime, name: &str, cookie: &str, functions: Functions) -> Step<Node> {
    let config = NodeConfig::new(name, cookie);
    let handle = rt.handle().clone();
    rt.block_on(async move { Node::start_in_runtime_with(config, &handle, functions).await })
        .map_err(|e| format!("cannot start {name}: {e}"))
}

/// What we type on `foo`.
async fn on_foo(bar: &str) -> Step<()> {
    io::println!("I am {}", dist::node()).await;

    // 1. Spawn a function on bar: it prints its node, and the line comes
    //    out here, through our group leader (Elixir: `Node.spawn(:bar@host,
    //    fn -> IO.puts("hello from #{node()}") end)`). The monitor says
    //    when it is done.
    let (hello, _) = dist::spawn_monitor(bar, "walkthrough", "hello", vec![])
        .await
        .map_err(|e| format!("cannot spawn walkthrough:hello() on {bar}: {e}"))?;
    let done = receive::<Down>()
        .matching(move |d| d.pid == hello)
        .timeout(STEP)
        .await
        .ok_or("walkthrough:hello() on bar did not finish")?;
    if done.reason != ExitReason::Normal {
        return Err(format!(
            "walkthrough:hello() on {bar} exited {}",
            done.reason
        ));
    }

    // 2. Send and receive: a process spawned on bar, linked to us
    //    (`Node.spawn_link`), answers `{ping, From}` with `{pong, node()}`.
    let ponger = dist::spawn_link(bar, "walkthrough", "ponger", vec![])
        .await
        .map_err(|e| format!("cannot spawn_link walkthrough:ponger() on {bar}: {e}"))?;
    send(
        ponger,
        Term::tuple([Term::atom("ping"), pid_to_term(self_pid())]),
    );
    let reply = receive::<Term>()
        .timeout(STEP)
        .await
        .ok_or("no pong from bar")?;
    io::println!("{} on {bar} answered {reply}", pid_to_term(ponger)).await;

    // 3. Remote calls: a registered function through bar's `rex` (Erlang's
    //    `rpc:call/4`), and a GenServer registered on bar.
    let bits = rpc_call(
        bar,
        "walkthrough",
        "fact_bits",
        vec![Term::from(1000)],
        STEP,
    )
    .await;
    io::println!("rpc: walkthrough:fact_bits(1000) on {bar} = {bits}").await;
    let counter = TermServer::Name {
        name: "counter".into(),
        node: bar.into(),
    };
    for _ in 0..2 {
        call_term(&counter, Term::atom("bump"), STEP)
            .await
            .map_err(|e| format!("call to counter on {bar}: {e}"))?;
    }
    let total = call_term(&counter, Term::atom("bump"), STEP)
        .await
        .map_err(|e| format!("call to counter on {bar}: {e}"))?;
    io::println!("gen_server call: counter on {bar} says {total}").await;

    // 4. A supervised task on bar, awaited here (Elixir:
    //    `Task.Supervisor.async({Tasks, :bar@host}, M, F, A) |> Task.await()`).
    let tasks = RemoteTaskSupervisor::named("walkthrough_tasks", bar);
    let task = tasks
        .async_nolink("walkthrough", "fact_bits", vec![Term::from(1000)])
        .await
        .map_err(|e| format!("cannot start a task on {bar}: {e}"))?;
    let task_pid = task.pid();
    let result = task
        .join_timeout(STEP)
        .await
        .map_err(|e| format!("the task on {bar}: {e:?}"))?;
    io::println!("task {} on {bar}: {result}", pid_to_term(task_pid)).await;

    // Done: unlink and stop the ponger, as a session would on its way out.
    ember_runtime::unlink(ponger);
    ember_runtime::exit(ponger, ExitReason::Kill);
    io::println!("walkthrough done").await;
    Ok(())
}

/// The functions bar offers other nodes.
fn bar_functions() -> Functions {
    let mut f = Functions::new();
    f.register("walkthrough", "hello", 0, |_| async {
        io::println!("hello from {}", dist::node()).await;
        Ok(Term::atom("ok"))
    });
    // The ponger: the whole body of a process other nodes spawn.
    f.register("walkthrough", "ponger", 0, |_| async {
        let ping = receive::<Term>().await;
        if let Some([tag, from]) = ping.as_tuple() {
            if let (true, Some(from)) = (tag.is_atom("ping"), pid_from_term(from)) {
                send(
                    from,
                    Term::tuple([Term::atom("pong"), Term::Atom(dist::node())]),
                );
            }
        }
        // Stay until the session ends.
        receive::<()>().await;
        Ok(Term::atom("ok"))
    });
    f.register("walkthrough", "fact_bits", 1, |args| async move {
        let n = args[0].as_int().filter(|n| (0..=20_000).contains(n));
        let n = n.ok_or(Raise::Error(Term::atom("badarg")))?;
        Ok(Term::from(fact_bits(n as u64)))
    });
    f
}

/// The bit length of `n!` (8530 for 1000).
fn fact_bits(n: u64) -> u64 {
    let mut product = BigInt::from(1u32);
    for i in 2..=n {
        product *= i;
    }
    product.bits()
}

/// A GenServer on bar: `bump` adds one and answers the count.
struct Counter(i64);

impl GenServer for Counter {
    type Args = ();
    type Call = ();
    type Reply = i64;
    type Cast = ();
    type Continue = ();

    async fn init(_: ()) -> Init<Self> {
        Init::Ok(Counter(0))
    }

    async fn handle_call(&mut self, _: (), _from: &ReplyTo<i64>) -> CallReturn<Self> {
        self.0 += 1;
        CallReturn::Reply(self.0)
    }

    fn call_from_term(request: Term) -> Result<(), Term> {
        if request.is_atom("bump") {
            Ok(())
        } else {
            Err(Term::tuple([Term::atom("bad_request"), request]))
        }
    }

    fn reply_to_term(count: i64) -> Term {
        Term::from(count)
    }
}
