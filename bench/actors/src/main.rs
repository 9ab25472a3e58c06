//! The actor frameworks' side of `bench/run actors` (`bench/actors/run`):
//! actix, kameo and ractor running Ember's own `spawn`, `pingpong` and
//! `ring` scenarios (bench/README.md, "Writing the Ember side"; the Ember
//! side is `ember-bench` itself) and the `fairness` probe (the Ember side is
//! `ember-fairness-bench`).
//!
//! usage: actors-bench <actix|kameo|ractor> <spawn|pingpong|ring|fairness>
//!
//! Prints `METRIC <name> <value> <unit>` lines, as `ember-bench` does.
//! Each framework runs in its default configuration: actix on its `System`
//! (one arbiter thread), kameo and ractor on a default multi-threaded tokio
//! runtime (one worker per core this process may use, as `#[tokio::main]`
//! starts), with the coordinator a task on that runtime, as Ember's is a
//! process on its schedulers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod actix_side;
mod kameo_side;
mod ractor_side;

/// Counts live heap bytes (alloc − dealloc), the peers' counterpart of
/// Ember's `CountingAlloc`; only while `COUNTING` is on (`spawn` alone).
struct CountingAlloc;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// One measured figure.
pub struct Metric {
    name: String,
    value: f64,
    unit: &'static str,
}

pub fn metric(name: impl Into<String>, value: f64, unit: &'static str) -> Metric {
    Metric {
        name: name.into(),
        value,
        unit,
    }
}

pub fn rss_bytes() -> f64 {
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

pub fn allocated() -> f64 {
    LIVE_BYTES.load(Ordering::Relaxed) as f64
}

// ---------------------------------------------------------------- scenario constants

/// `spawn`: processes in the warm-up round and the real one.
pub const SPAWN_WARM: usize = 10_000;
pub const SPAWN_N: usize = 1_000_000;
/// `pingpong`: warm-up and timed round trips.
pub const PING_WARM: u32 = 10_000;
pub const PING_N: u32 = 1_000_000;
/// `ring`: size and timed hops.
pub const RING_R: u32 = 10_000;
pub const RING_H: u32 = 1_000_000;

/// Bodies (actor states) alive that the coordinator waits for: set before
/// a round, decremented by each [`BodyGuard`] dropped with its actor's state.
pub static LIVE_BODIES: AtomicUsize = AtomicUsize::new(0);
/// Actors whose start hook has run (they wait in their mailbox).
pub static STARTED: AtomicUsize = AtomicUsize::new(0);

/// Held by each actor's state and dropped with it, as Ember's bench's
/// `BodyGuard`: zero-sized, one atomic decrement per drop.
pub struct BodyGuard;

impl Drop for BodyGuard {
    fn drop(&mut self) {
        LIVE_BODIES.fetch_sub(1, Ordering::Release);
    }
}

/// The spawn metrics from the round's instants and memory figures.
#[allow(clippy::too_many_arguments)]
pub fn spawn_metrics(
    n: usize,
    t0: Instant,
    t1: Instant,
    t2: Instant,
    t_loop: Instant,
    t3: Instant,
    mem: (f64, f64),
    rss: (f64, f64),
) -> Vec<Metric> {
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
        metric("spawn_bytes_per_process", (mem.1 - mem.0) / nf, "bytes"),
        metric("spawn_rss_bytes_per_process", (rss.1 - rss.0) / nf, "bytes"),
        metric(
            "spawn_kill_us_per_process",
            (t3 - t2).as_secs_f64() * 1e6 / nf,
            "us",
        ),
    ]
}

pub fn pingpong_metrics(elapsed: Duration) -> Vec<Metric> {
    vec![metric(
        "pingpong_ns_per_roundtrip",
        elapsed.as_secs_f64() * 1e9 / f64::from(PING_N),
        "ns",
    )]
}

pub fn ring_metrics(t0: Instant, t1: Instant, t2: Instant, t3: Instant) -> Vec<Metric> {
    vec![
        metric(
            "ring_ns_per_hop",
            (t3 - t2).as_secs_f64() * 1e9 / f64::from(RING_H),
            "ns",
        ),
        metric(
            "ring_build_us_per_process",
            (t1 - t0).as_secs_f64() * 1e6 / f64::from(RING_R),
            "us",
        ),
    ]
}

// ---------------------------------------------------------------- fairness

/// `fairness`: hogs (actors that spin without yielding), probe requests,
/// period between probes and the deadline an answer must meet.
pub const HOGS: usize = 10;
pub const PROBES: usize = 100;
pub const PROBE_PERIOD: Duration = Duration::from_millis(10);

fn deadline() -> Duration {
    let ms = std::env::var("BENCH_ACTORS_DEADLINE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_millis(ms.max(1))
}

/// A probe request: the echo actor sends `sent` back on `reply`.
pub struct Probe {
    pub sent: Instant,
    pub reply: mpsc::Sender<Instant>,
}

/// Hogs whose spinning has begun.
pub static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// A hog's body: spins forever and never yields (the process exits under it).
pub fn spin_forever() -> ! {
    SPINNING.fetch_add(1, Ordering::Relaxed);
    let mut x: u64 = 88172645463325252;
    loop {
        for _ in 0..1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x = x.wrapping_mul(3);
        }
        x = std::hint::black_box(x);
    }
}

/// The fairness probe's coordinator, a plain OS thread outside the runtime
/// (its threads may all be held by hogs). `send` hands a probe to the echo
/// actor (false: it could not be sent); `start_hogs` starts the hogs.
/// One warm probe must be answered first; then, once a hog spins (+100 ms),
/// PROBES probes every PROBE_PERIOD; an answer counts if it arrives within
/// the deadline of its probe's send. Prints the metric and exits the process
/// (the hogs never stop).
pub fn fairness_coordinator(send: impl Fn(Probe) -> bool, start_hogs: impl FnOnce()) -> ! {
    let deadline = deadline();
    let (tx, rx) = mpsc::channel::<Instant>();
    let warm_sent = Instant::now();
    let warm_ok = send(Probe {
        sent: warm_sent,
        reply: tx.clone(),
    }) && rx.recv_timeout(Duration::from_secs(10)).is_ok();
    if !warm_ok {
        eprintln!("actors-bench: the echo actor did not answer the warm-up probe");
        std::process::exit(1);
    }
    start_hogs();
    let waited = Instant::now();
    while SPINNING.load(Ordering::Relaxed) == 0 && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(100));
    let spinning = SPINNING.load(Ordering::Relaxed);
    let start = Instant::now();
    let end = start + PROBE_PERIOD * (PROBES as u32 - 1) + deadline + Duration::from_millis(50);
    let collector = std::thread::spawn(move || {
        let mut lat = Vec::new();
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            match rx.recv_timeout(end - now) {
                Ok(sent) => lat.push(sent.elapsed()),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        lat
    });
    let mut sent = 0usize;
    for k in 0..PROBES {
        let due = start + PROBE_PERIOD * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if send(Probe {
            sent: Instant::now(),
            reply: tx.clone(),
        }) {
            sent += 1;
        }
    }
    drop(tx);
    let mut lat = collector.join().unwrap_or_default();
    lat.sort();
    let answered = lat.iter().filter(|d| **d <= deadline).count();
    let ms = |d: Option<&Duration>| {
        d.map_or("n/a".to_string(), |d| {
            format!("{:.3}", d.as_secs_f64() * 1e3)
        })
    };
    println!(
        "# fairness: {HOGS} hogs ({spinning} spinning when probing began), {PROBES} probes every {} ms, \
         {sent} sent, {} answered at all, {answered} within {} ms; latency p50 {} ms, max {} ms",
        PROBE_PERIOD.as_millis(),
        lat.len(),
        deadline.as_millis(),
        ms(lat.get(lat.len() / 2)),
        ms(lat.last()),
    );
    println!("METRIC fairness_answered {answered} probes");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

/// Runs `coordinator` on a thread of its own, handing it what `setup`
/// sends once the runtime is up.
pub fn coordinator_thread<T: Send + 'static>(
    coordinator: impl FnOnce(T) + Send + 'static,
) -> mpsc::Sender<T> {
    let (tx, rx) = mpsc::channel::<T>();
    std::thread::spawn(move || {
        if let Ok(v) = rx.recv() {
            coordinator(v);
        }
    });
    tx
}

pub fn tokio_runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("actors-bench: cannot start tokio: {e}");
            std::process::exit(1);
        }
    }
}

/// Polls every 1 ms until `cond` holds.
pub async fn poll_until(cond: impl Fn() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

const SCENARIOS: &[&str] = &["spawn", "pingpong", "ring", "fairness"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(framework), Some(scenario)) = (args.first(), args.get(1)) else {
        eprintln!("usage: actors-bench <actix|kameo|ractor> <spawn|pingpong|ring|fairness>");
        return ExitCode::from(2);
    };
    if !SCENARIOS.contains(&scenario.as_str()) {
        eprintln!("actors-bench: unknown scenario {scenario:?}");
        return ExitCode::from(2);
    }
    COUNTING.store(scenario == "spawn", Ordering::Relaxed);
    let metrics = match framework.as_str() {
        "actix" => actix_side::run(scenario),
        "kameo" => kameo_side::run(scenario),
        "ractor" => ractor_side::run(scenario),
        other => {
            eprintln!("actors-bench: unknown framework {other:?}");
            return ExitCode::from(2);
        }
    };
    for m in metrics {
        println!("METRIC {} {:.3} {}", m.name, m.value, m.unit);
    }
    ExitCode::SUCCESS
}
