//! Ember's side of the side-by-side benchmarks. `bench/run` drives it; each
//! scenario mirrors `bench/erlang/ember_bench.erl` step by step (see
//! `bench/README.md`, "Writing the Ember side").

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ember_runtime::alloc::CountingAlloc;
use ember_runtime::{
    self as ember, receive, self_pid, send, spawn, ExitReason, Handle, Pid, Runtime, TimerRef,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

mod otp;
mod responsiveness;

/// A scenario's body, run as the coordinator process.
type ProcessBody = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Metric>> + Send>>;

/// A scenario.
#[derive(Clone, Copy)]
enum Scenario {
    /// Runs on a coordinator process of a default runtime.
    Process(ProcessBody),
    /// Runs on the main thread and builds the runtimes it needs.
    Main(fn() -> Vec<Metric>),
}

/// One measured figure.
pub(crate) struct Metric {
    name: String,
    value: f64,
    unit: &'static str,
}

const SCENARIOS: &[(&str, Scenario)] = &[
    ("spawn", Scenario::Process(|| Box::pin(spawn_scenario()))),
    (
        "pingpong",
        Scenario::Process(|| Box::pin(pingpong_scenario())),
    ),
    ("ring", Scenario::Process(|| Box::pin(ring_scenario()))),
    ("fanin", Scenario::Process(|| Box::pin(fanin_scenario()))),
    ("timers", Scenario::Process(|| Box::pin(timers_scenario()))),
    ("wake", Scenario::Process(|| Box::pin(wake_scenario()))),
    (
        "responsiveness",
        Scenario::Main(responsiveness::responsiveness),
    ),
    ("genserver_call", Scenario::Process(otp::genserver_call)),
    ("supervisor_restart", Scenario::Process(otp::restarts)),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--list") => {
            for (name, _) in SCENARIOS {
                println!("SCENARIO {name}");
            }
            ExitCode::SUCCESS
        }
        Some(name) => match SCENARIOS.iter().find(|(n, _)| *n == name) {
            Some((_, scenario)) => {
                let mut builder = Runtime::builder();
                if let Some(n) = std::env::var("EMBER_SCHEDULERS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                {
                    builder = builder.schedulers(n);
                }
                if std::env::var("EMBER_TOKIO").is_ok_and(|v| v == "0") {
                    builder = builder.enable_tokio(false);
                }
                let rt = match builder.build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("ember-bench: cannot start the runtime: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                // Only `spawn` reads the allocation count; spare the others its cost.
                CountingAlloc::pause(name != "spawn");
                let metrics = match *scenario {
                    Scenario::Process(body) => rt.block_on(async move { body().await }),
                    Scenario::Main(body) => body(),
                };
                for m in metrics {
                    println!("METRIC {} {:.3} {}", m.name, m.value, m.unit);
                }
                println!("# threads: {:?}", rt.handle().runtime_info().threads);
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("ember-bench: unknown scenario {name:?}");
                ExitCode::from(2)
            }
        },
        None => {
            eprintln!("usage: ember-bench --list | ember-bench <scenario>");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn metric(name: impl Into<String>, value: f64, unit: &'static str) -> Metric {
    Metric {
        name: name.into(),
        value,
        unit,
    }
}

/// Polls every 1 ms until no process other than the caller is runnable.
async fn wait_quiescent() {
    let handle = Handle::current();
    loop {
        let info = handle.runtime_info();
        let queued: usize =
            info.schedulers.iter().map(|s| s.run_queue).sum::<usize>() + info.global_queue;
        if queued == 0 {
            return;
        }
        ember::sleep(Duration::from_millis(1)).await;
    }
}

/// Polls every 1 ms until at most `count` processes are alive.
async fn wait_process_count_at_most(count: usize) {
    let handle = Handle::current();
    while handle.runtime_info().process_count > count {
        ember::sleep(Duration::from_millis(1)).await;
    }
}

fn rss_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb * 1024.0)
}

fn allocated() -> f64 {
    ember::alloc::allocated_bytes().unwrap_or(0) as f64
}

// ---------------------------------------------------------------- spawn

/// Bodies of the current spawn round that have not been dropped yet.
static LIVE_BODIES: AtomicUsize = AtomicUsize::new(0);

/// Held by each spawned body and dropped with it, whether the body returns
/// or a kill drops it: the signal that a process is gone *and* its memory
/// released. Ember takes a killed process out of the process table inside
/// `exit` itself and lets a scheduler drop its body afterwards, so the
/// process count alone would stop the clock before that work is done (BEAM's
/// count falls only once the process has run its exit). Zero-sized: spawning
/// costs nothing extra; each drop is one atomic decrement.
struct BodyGuard;

impl Drop for BodyGuard {
    fn drop(&mut self) {
        LIVE_BODIES.fetch_sub(1, Ordering::Release);
    }
}

/// Polls every 1 ms until at most `count` processes are alive and every
/// body of the round has been dropped.
async fn wait_killed(count: usize) {
    let handle = Handle::current();
    while handle.runtime_info().process_count > count || LIVE_BODIES.load(Ordering::Acquire) > 0 {
        ember::sleep(Duration::from_millis(1)).await;
    }
}

async fn spawn_round(n: usize) -> Vec<Metric> {
    let handle = Handle::current();
    let base = handle.runtime_info().process_count;
    let mut pids: Vec<Pid> = Vec::with_capacity(n);
    LIVE_BODIES.store(n, Ordering::Relaxed);
    let mem0 = allocated();
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    for _ in 0..n {
        let guard = BodyGuard;
        pids.push(spawn(async move {
            let _guard = guard;
            ember::receive_any(|_| true).await;
        }));
        // BEAM preempts this loop by reductions; one that never awaits would
        // be retaken by the watchdog and run demoted, as a hog.
        ember::yield_point().await;
    }
    let t1 = Instant::now();
    wait_quiescent().await;
    if let Some(last) = pids.last() {
        while handle
            .process_info(*last)
            .is_some_and(|i| i.status != ember::Status::Waiting)
        {
            ember::sleep(Duration::from_millis(1)).await;
        }
    }
    let mem1 = allocated();
    let rss1 = rss_bytes();
    let t2 = Instant::now();
    for pid in pids.iter().rev() {
        ember::exit(*pid, ExitReason::Kill);
        ember::yield_point().await;
    }
    let t_loop = Instant::now();
    wait_killed(base).await;
    let t3 = Instant::now();
    let nf = n as f64;
    println!(
        "# spawn_kill n={n}: kill loop {:.3} us/process, then {:.1} ms until every body was dropped",
        (t_loop - t2).as_secs_f64() * 1e6 / nf,
        (t3 - t_loop).as_secs_f64() * 1e3
    );
    vec![
        metric(
            "spawn_us_per_process",
            (t1 - t0).as_secs_f64() * 1e6 / nf,
            "us",
        ),
        metric("spawn_bytes_per_process", (mem1 - mem0) / nf, "bytes"),
        metric("spawn_rss_bytes_per_process", (rss1 - rss0) / nf, "bytes"),
        metric(
            "spawn_kill_us_per_process",
            (t3 - t2).as_secs_f64() * 1e6 / nf,
            "us",
        ),
    ]
}

async fn spawn_scenario() -> Vec<Metric> {
    spawn_round(10_000).await;
    spawn_round(1_000_000).await
}

// ---------------------------------------------------------------- pingpong

enum Pong {
    Ping(Pid),
    Stop,
}

struct PongReply;

async fn pingpong_scenario() -> Vec<Metric> {
    const N: u32 = 1_000_000;
    let coordinator = self_pid();
    let pong = spawn(async {
        loop {
            match receive::<Pong>().await {
                Pong::Ping(from) => send(from, PongReply),
                Pong::Stop => return,
            }
        }
    });
    spawn(async move {
        let me = self_pid();
        for _ in 0..10_000 {
            send(pong, Pong::Ping(me));
            receive::<PongReply>().await;
        }
        let t0 = Instant::now();
        for _ in 0..N {
            send(pong, Pong::Ping(me));
            receive::<PongReply>().await;
        }
        send(coordinator, t0.elapsed());
    });
    let elapsed: Duration = receive().await;
    send(pong, Pong::Stop);
    vec![metric(
        "pingpong_ns_per_roundtrip",
        elapsed.as_secs_f64() * 1e9 / f64::from(N),
        "ns",
    )]
}

// ---------------------------------------------------------------- ring

enum Ring {
    Token(u32),
    Next(Pid),
    Stop,
}

struct RingDone;

async fn relay(next: Pid, coordinator: Pid) {
    loop {
        match receive::<Ring>().await {
            Ring::Token(0) => send(coordinator, RingDone),
            Ring::Token(k) => send(next, Ring::Token(k - 1)),
            Ring::Stop => {
                send(next, Ring::Stop);
                return;
            }
            Ring::Next(_) => {}
        }
    }
}

/// Builds a ring of `size` relays; returns the first. Like `spawn_round`,
/// the loop awaits between spawns: BEAM preempts its loop by reductions,
/// and a loop that never awaits would overrun its slice while the relays
/// it spawned wait for its core, so the watchdog would hand its slot over
/// and run the rest of the loop demoted, as a hog (5-17 us per process
/// instead of about 1).
async fn build_ring(size: u32) -> Pid {
    let coordinator = self_pid();
    let last = spawn(async move {
        let next = loop {
            if let Ring::Next(p) = receive::<Ring>().await {
                break p;
            }
        };
        relay(next, coordinator).await;
    });
    let mut next = last;
    for _ in 1..size {
        next = spawn(relay(next, coordinator));
        ember::yield_point().await;
    }
    send(last, Ring::Next(next));
    next
}

async fn ring_scenario() -> Vec<Metric> {
    const R: u32 = 10_000;
    const H: u32 = 1_000_000;
    let base = Handle::current().runtime_info().process_count;
    let warm = build_ring(R).await;
    send(warm, Ring::Token(R));
    receive::<RingDone>().await;
    send(warm, Ring::Stop);
    wait_process_count_at_most(base).await;

    let t0 = Instant::now();
    let first = build_ring(R).await;
    let t1 = Instant::now();
    send(first, Ring::Token(R));
    receive::<RingDone>().await;
    let t2 = Instant::now();
    send(first, Ring::Token(H));
    receive::<RingDone>().await;
    let t3 = Instant::now();
    send(first, Ring::Stop);
    vec![
        metric(
            "ring_ns_per_hop",
            (t3 - t2).as_secs_f64() * 1e9 / f64::from(H),
            "ns",
        ),
        metric(
            "ring_build_us_per_process",
            (t1 - t0).as_secs_f64() * 1e6 / f64::from(R),
            "us",
        ),
    ]
}

// ---------------------------------------------------------------- fanin

struct Go;
struct Msg;
struct FaninDone;

async fn fanin_round(senders: u32, each: u32) -> f64 {
    let coordinator = self_pid();
    let total = u64::from(senders) * u64::from(each);
    let receiver = spawn(async move {
        for _ in 0..total {
            receive::<Msg>().await;
        }
        send(coordinator, FaninDone);
    });
    let pids: Vec<Pid> = (0..senders)
        .map(|_| {
            spawn(async move {
                receive::<Go>().await;
                // BEAM preempts a sender by reductions; an Ember loop that
                // never awaits would be a hog, so it offers a yield point
                // (it yields once its 4000-reduction slice is used up).
                for _ in 0..each {
                    send(receiver, Msg);
                    ember::yield_point().await;
                }
            })
        })
        .collect();
    wait_quiescent().await;
    let t0 = Instant::now();
    for pid in pids {
        send(pid, Go);
    }
    receive::<FaninDone>().await;
    total as f64 / t0.elapsed().as_secs_f64()
}

async fn fanin_scenario() -> Vec<Metric> {
    fanin_round(100, 1_000).await;
    let rate = fanin_round(100, 100_000).await;
    vec![metric("fanin_msgs_per_s", rate, "msgs/s")]
}

// ---------------------------------------------------------------- timers

struct Timeout;
struct Armed;
struct Cancel;
struct Cancelled;
struct Fired;

async fn timers_round(procs: u32, each: u32) -> (f64, f64, f64) {
    let coordinator = self_pid();
    let count = f64::from(procs) * f64::from(each);

    // Fire round.
    let pids: Vec<Pid> = (0..procs)
        .map(|_| {
            spawn(async move {
                receive::<Go>().await;
                let me = self_pid();
                for i in 0..each {
                    ember::send_after(me, Timeout, Duration::from_millis(u64::from(1 + i % 100)));
                }
                for _ in 0..each {
                    receive::<Timeout>().await;
                }
                send(coordinator, Fired);
            })
        })
        .collect();
    wait_quiescent().await;
    let t0 = Instant::now();
    for pid in &pids {
        send(*pid, Go);
    }
    for _ in 0..procs {
        receive::<Fired>().await;
    }
    let fire = (Instant::now() - t0).as_secs_f64() * 1e9 / count;

    // Cancel round.
    let pids: Vec<Pid> = (0..procs)
        .map(|_| {
            spawn(async move {
                receive::<Go>().await;
                let me = self_pid();
                let timers: Vec<TimerRef> = (0..each)
                    .map(|i| {
                        ember::send_after(
                            me,
                            Timeout,
                            Duration::from_millis(u64::from(3000 + i % 1000)),
                        )
                    })
                    .collect();
                send(coordinator, Armed);
                receive::<Cancel>().await;
                let mut late = 0;
                for timer in timers.into_iter().rev() {
                    if ember::cancel_timer(timer).is_none() {
                        late += 1;
                    }
                }
                if late > 0 {
                    println!("# {late} timers fired before their cancel");
                }
                send(coordinator, Cancelled);
            })
        })
        .collect();
    wait_quiescent().await;
    let t0 = Instant::now();
    for pid in &pids {
        send(*pid, Go);
    }
    for _ in 0..procs {
        receive::<Armed>().await;
    }
    let t1 = Instant::now();
    for pid in &pids {
        send(*pid, Cancel);
    }
    for _ in 0..procs {
        receive::<Cancelled>().await;
    }
    let t2 = Instant::now();
    (
        fire,
        (t1 - t0).as_secs_f64() * 1e9 / count,
        (t2 - t0).as_secs_f64() * 1e9 / count,
    )
}

// ---------------------------------------------------------------- wake

/// Rounds of the wake scenario (after `WAKE_WARMUP` unmeasured ones).
const WAKE_ROUNDS: usize = 2_000;
const WAKE_WARMUP: usize = 100;
/// How long the sender keeps its core busy after each send.
const WAKE_BUSY: Duration = Duration::from_micros(200);
/// How long everything then sleeps, so that idle schedulers park.
const WAKE_GAP: Duration = Duration::from_millis(2);

enum Wake {
    At(Instant),
    Report,
}

/// The wake-up of an idle process from another scheduler: the receiver
/// waits in `receive` while every scheduler sleeps; the sender sends it
/// the current time and keeps its own core busy for 200 us, so the
/// receiver runs elsewhere or waits for that core. The latency is from
/// the send to the receiver running. Then everything sleeps 2 ms.
async fn wake_scenario() -> Vec<Metric> {
    let coordinator = self_pid();
    let receiver = spawn(async move {
        let mut samples = Vec::with_capacity(WAKE_WARMUP + WAKE_ROUNDS);
        loop {
            match receive::<Wake>().await {
                Wake::At(t0) => samples.push(t0.elapsed()),
                Wake::Report => {
                    send(coordinator, samples);
                    return;
                }
            }
        }
    });
    for _ in 0..WAKE_WARMUP + WAKE_ROUNDS {
        let t0 = Instant::now();
        send(receiver, Wake::At(t0));
        while t0.elapsed() < WAKE_BUSY {
            std::hint::spin_loop();
        }
        ember::sleep(WAKE_GAP).await;
    }
    send(receiver, Wake::Report);
    let samples: Vec<Duration> = receive().await;
    let mut us: Vec<f64> = samples[WAKE_WARMUP..]
        .iter()
        .map(|d| d.as_secs_f64() * 1e6)
        .collect();
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)];
    vec![
        metric("wake_p50_us", at(0.50), "us"),
        metric("wake_p99_us", at(0.99), "us"),
    ]
}

async fn timers_scenario() -> Vec<Metric> {
    timers_round(10, 1_000).await;
    let (fire, arm, cancel) = timers_round(1_000, 1_000).await;
    vec![
        metric("timers_ns_per_timer", fire, "ns"),
        metric("timers_arm_ns_per_timer", arm, "ns"),
        metric("timers_cancel_ns_per_timer", cancel, "ns"),
    ]
}
