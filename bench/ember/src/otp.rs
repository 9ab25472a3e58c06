//! The OTP scenarios, `genserver_call` and `supervisor_restart`; they mirror
//! `bench/erlang/ember_bench_otp.erl` (see `bench/README.md`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_otp::gen::ReplyTo;
use ember_otp::gen_server::{self, CallReturn, GenServer, GenServerRef, Init};
use ember_otp::supervisor::{ChildSpec, Flags, Strategy, SupervisorSpec};
use ember_runtime::{receive, self_pid, send, spawn_link, ExitReason, Pid};

use crate::{metric, Metric};

type Boxed = Pin<Box<dyn Future<Output = Vec<Metric>> + Send>>;

/// The `genserver_call` scenario, for `SCENARIOS`.
pub(crate) fn genserver_call() -> Boxed {
    Box::pin(genserver_call_scenario())
}

/// The `supervisor_restart` scenario, for `SCENARIOS`.
pub(crate) fn restarts() -> Boxed {
    Box::pin(supervisor_restart_scenario())
}

// ---------------------------------------------------------------- genserver_call

/// The trivial server: `ping` → `pong`.
struct Echo;

#[derive(Debug)]
struct Ping;

#[derive(Debug, PartialEq, Eq)]
struct Pong;

impl GenServer for Echo {
    type Args = ();
    type Call = Ping;
    type Reply = Pong;
    type Cast = ();
    type Continue = ();

    async fn init(_: ()) -> Init<Self> {
        Init::Ok(Echo)
    }

    async fn handle_call(&mut self, _: Ping, _: &ReplyTo<Pong>) -> CallReturn<Self> {
        CallReturn::Reply(Pong)
    }
}

async fn calls(server: &GenServerRef<Echo>, n: u32) {
    for _ in 0..n {
        let reply = server.call(Ping).await;
        assert_eq!(reply, Ok(Pong));
    }
}

/// 10,000 warm-up calls, then N = 1,000,000 sequential calls (default 5 s
/// timeout, as `gen_server:call/2`) from the coordinator.
async fn genserver_call_scenario() -> Vec<Metric> {
    const N: u32 = 1_000_000;
    let server = gen_server::start_link::<Echo>(())
        .await
        .expect("the server starts");
    calls(&server, 10_000).await;
    let t0 = Instant::now();
    calls(&server, N).await;
    let elapsed = t0.elapsed();
    server.stop().await.expect("the server stops");
    vec![metric(
        "genserver_call_ns_per_call",
        elapsed.as_secs_f64() * 1e9 / f64::from(N),
        "ns",
    )]
}

// ---------------------------------------------------------------- supervisor_restart

/// A crasher tells the driver it (re)started.
struct Started(Pid);

/// Tells a crasher to exit abnormally.
struct Crash;

/// One round: a fresh one_for_one supervisor (intensity `crashes`, period
/// 3600 s, so it never escalates) with one permanent crasher; `crashes`
/// times, tell the crasher to crash and wait until its replacement reports.
/// Returns the time of the crash loop only.
async fn restart_round(crashes: u32, crash: &ExitReason) -> Duration {
    let driver = self_pid();
    let reason = crash.clone();
    let crasher = ChildSpec::worker("crasher", move || {
        let reason = reason.clone();
        std::future::ready(Ok(spawn_link(async move {
            send(driver, Started(self_pid()));
            receive::<Crash>().await;
            reason
        })))
    })
    .build()
    .expect("a valid child spec");
    let flags = Flags::new()
        .strategy(Strategy::OneForOne)
        .intensity(crashes)
        .period(Duration::from_secs(3600));
    let sup = SupervisorSpec::new(flags, vec![crasher])
        .expect("a valid supervisor spec")
        .start_link()
        .await
        .expect("the supervisor starts");
    let Started(mut child) = receive::<Started>().await;
    let t0 = Instant::now();
    for _ in 0..crashes {
        send(child, Crash);
        let Started(next) = receive::<Started>().await;
        child = next;
    }
    let elapsed = t0.elapsed();
    sup.stop().await.expect("the supervisor stops");
    elapsed
}

/// A warm-up round, then R = 1,000 rounds of C = 100 crashes: restarts per
/// second over the crash loops. Rounds are short so that OTP's restart
/// history (a list it filters on every restart) stays short too: the
/// scenario measures restarting, not that list.
async fn supervisor_restart_scenario() -> Vec<Metric> {
    const ROUNDS: u32 = 1_000;
    const CRASHES: u32 = 100;
    let crash = ExitReason::Error(Arc::from("crash"));
    restart_round(CRASHES, &crash).await;
    let mut total = Duration::ZERO;
    for _ in 0..ROUNDS {
        total += restart_round(CRASHES, &crash).await;
    }
    vec![metric(
        "supervisor_restart_restarts_per_s",
        f64::from(ROUNDS * CRASHES) / total.as_secs_f64(),
        "restarts/s",
    )]
}
