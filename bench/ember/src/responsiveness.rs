//! The `responsiveness` scenario: latency of small work while processes that
//! never await ("hogs") occupy the schedulers. Mirrors
//! `bench/erlang/ember_bench_responsiveness.erl`; see bench/README.md.
//!
//! For 1 and then 2 schedulers: a baseline with no load; then 10 bignum hogs
//! (a factorial-style product growing forever) and separately 10 spin hogs
//! (small-integer arithmetic), each time with 10 cooperative busy processes.
//! Meanwhile, every 10 ms for `BENCH_SECONDS` (default 5) seconds, a probe
//! computing 2000! and a probe that just replies are spawned; each measures
//! its own latency from spawn to reply. Hog progress is measured with and
//! without probes, and with the watchdog off (to price the machinery).
//!
//! Each case runs on exactly the cores it names: before its runtime is built
//! the whole OS process (every thread; threads started later inherit it) is
//! pinned with `taskset` to the first 1 or 2 cores it may use, as the BEAM
//! side pins its VM. A demoted hog's thread therefore competes for the same
//! core as the scheduler in the 1-core case instead of taking the other one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_runtime::{self as ember, receive, self_pid, send, spawn, Preemption, Runtime};
use num_bigint::BigUint;

use crate::{metric, Metric};

const HOGS: usize = 10;
const BUSY: usize = 10;
const PROBE_PERIOD: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    Bignum,
    Spin,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Bignum => "bignum",
            Load::Spin => "spin",
        }
    }
}

fn probe_seconds() -> Duration {
    let secs = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(5.0);
    Duration::from_secs_f64(secs.max(0.2))
}

/// A hog: never awaits until `stop`; counts its operations into `ops`.
fn start_hog(load: Load, stop: Arc<AtomicBool>, ops: Arc<AtomicU64>) {
    spawn(async move {
        match load {
            Load::Bignum => {
                let mut acc = BigUint::from(1u32);
                let mut i: u64 = 1;
                while !stop.load(Ordering::Relaxed) && !ember::should_stop() {
                    acc *= i;
                    i += 1;
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                std::hint::black_box(acc);
            }
            Load::Spin => {
                let mut x: u64 = 88172645463325252;
                while !stop.load(Ordering::Relaxed) && !ember::should_stop() {
                    for _ in 0..1024 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x = x.wrapping_mul(3);
                    }
                    ops.fetch_add(1024, Ordering::Relaxed);
                }
                std::hint::black_box(x);
            }
        }
    });
}

/// A cooperative busy process: small work between yield points, forever.
fn start_busy(stop: Arc<AtomicBool>) {
    spawn(async move {
        let mut x: u64 = 1;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..100 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
            }
            ember::yield_point().await;
        }
        std::hint::black_box(x);
    });
}

fn factorial(n: u32) -> BigUint {
    let mut acc = BigUint::from(1u32);
    for i in 2..=n {
        acc *= i;
    }
    acc
}

/// Latencies of the 2000! probes and of the ping probes, and probes lost.
type ProbeResults = (Vec<Duration>, Vec<Duration>, usize);

/// One probe's reply: (is the 2000! probe, latency).
struct ProbeReply(bool, Duration);

/// Spawns both probes every 10 ms for `window`, then collects the replies.
/// Returns (fact latencies, ping latencies, lost probes).
async fn probe(window: Duration) -> ProbeResults {
    let me = self_pid();
    let start = Instant::now();
    let mut sent = 0usize;
    let mut tick = 0u32;
    while start.elapsed() < window {
        let spawned = Instant::now();
        spawn(async move {
            std::hint::black_box(factorial(2000));
            send(me, ProbeReply(true, spawned.elapsed()));
        });
        let spawned = Instant::now();
        spawn(async move { send(me, ProbeReply(false, spawned.elapsed())) });
        sent += 2;
        tick += 1;
        let next = start + PROBE_PERIOD * tick;
        ember::sleep(next.saturating_duration_since(Instant::now())).await;
    }
    let (mut fact, mut ping) = (Vec::new(), Vec::new());
    while fact.len() + ping.len() < sent {
        match receive::<ProbeReply>()
            .timeout(Duration::from_secs(10))
            .await
        {
            Some(ProbeReply(true, d)) => fact.push(d),
            Some(ProbeReply(false, d)) => ping.push(d),
            None => break,
        }
    }
    let lost = sent - fact.len() - ping.len();
    (fact, ping, lost)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

fn latency_metrics(
    prefix: &str,
    cores: usize,
    mut fact: Vec<Duration>,
    mut ping: Vec<Duration>,
) -> Vec<Metric> {
    let mut out = Vec::new();
    for (probe, samples) in [("fact", &mut fact), ("ping", &mut ping)] {
        samples.sort();
        for (stat, value) in [
            ("p50", percentile(samples, 50.0)),
            ("p99", percentile(samples, 99.0)),
            (
                "max",
                samples.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
            ),
        ] {
            out.push(metric(
                format!("responsiveness_{prefix}_{probe}_{stat}_{cores}core"),
                value,
                "ms",
            ));
        }
    }
    out
}

/// The cores this process may run on when the scenario starts (from
/// `Cpus_allowed_list` in `/proc/self/status`), in ascending order.
fn allowed_cores() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(list) = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
    else {
        return Vec::new();
    };
    let mut cores = Vec::new();
    for part in list.trim().split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.trim().parse::<usize>(), hi.trim().parse::<usize>()) {
            cores.extend(lo..=hi);
        }
    }
    cores
}

/// Pins every thread of this process to `cores` (`taskset -a -p -c`).
/// Panics with the reason if that is impossible: figures for "1 core" taken
/// on two would be wrong, not merely noisy.
fn pin_process(cores: &[usize]) {
    let list = cores
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let pid = std::process::id().to_string();
    match std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &list, &pid])
        .stdout(std::process::Stdio::null())
        .status()
    {
        Ok(status) if status.success() => println!("# responsiveness: pinned to cores {list}"),
        Ok(status) => panic!("ember-bench: taskset -a -p -c {list} {pid} failed: {status}"),
        Err(e) => {
            panic!("ember-bench: cannot run taskset (util-linux) to pin to cores {list}: {e}")
        }
    }
}

fn runtime(cores: usize, watchdog: bool) -> Runtime {
    let mut preemption = Preemption::default();
    preemption.enabled = watchdog;
    match Runtime::builder()
        .schedulers(cores)
        .preemption(preemption)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("ember-bench: cannot start a runtime: {e}"),
    }
}

/// Runs hogs (and busy processes) for `window`, optionally probing; returns
/// hog operations per second and the probe results.
fn loaded_run(
    cores: usize,
    load: Load,
    watchdog: bool,
    probes: bool,
    window: Duration,
) -> (f64, Option<ProbeResults>) {
    let rt = runtime(cores, watchdog);
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let handle = rt.handle().clone();
    let (s, o) = (stop.clone(), ops.clone());
    let started = Instant::now();
    handle.spawn(async move {
        for _ in 0..HOGS {
            start_hog(load, s.clone(), o.clone());
        }
        for _ in 0..BUSY {
            start_busy(s.clone());
        }
    });
    let results = if probes {
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let _ = tx.send(probe(window).await);
        });
        // The probe process ends `window` after it starts, plus collection.
        rx.recv_timeout(window + Duration::from_secs(60)).ok()
    } else {
        std::thread::sleep(window);
        None
    };
    let elapsed = started.elapsed();
    let rate = ops.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(rt);
    (rate, results)
}

/// The whole scenario, run from the main thread (it builds its own runtimes).
pub(crate) fn responsiveness() -> Vec<Metric> {
    let window = probe_seconds();
    let allowed = allowed_cores();
    let mut out = Vec::new();
    for cores in [1, 2] {
        if allowed.len() < cores {
            panic!(
                "ember-bench: the {cores}-core case needs {cores} cores, this process may use {allowed:?}"
            );
        }
        pin_process(&allowed[..cores]);
        let rt = runtime(cores, true);
        let (tx, rx) = std::sync::mpsc::channel();
        rt.handle().spawn(async move {
            let _ = tx.send(probe(window).await);
        });
        if let Ok((fact, ping, lost)) = rx.recv_timeout(window + Duration::from_secs(60)) {
            out.extend(latency_metrics("unloaded", cores, fact, ping));
            out.push(metric(
                format!("responsiveness_unloaded_lost_{cores}core"),
                lost as f64,
                "probes",
            ));
        }
        drop(rt);
        for load in [Load::Bignum, Load::Spin] {
            let name = load.name();
            let (rate, results) = loaded_run(cores, load, true, true, window);
            if let Some((fact, ping, lost)) = results {
                out.extend(latency_metrics(
                    &format!("loaded_{name}"),
                    cores,
                    fact,
                    ping,
                ));
                out.push(metric(
                    format!("responsiveness_loaded_{name}_lost_{cores}core"),
                    lost as f64,
                    "probes",
                ));
            }
            let unit = if load == Load::Bignum {
                "mults/s"
            } else {
                "ops/s"
            };
            out.push(metric(
                format!("responsiveness_hog_{name}_probed_{cores}core"),
                rate,
                unit,
            ));
            let (solo, _) = loaded_run(cores, load, true, false, window);
            out.push(metric(
                format!("responsiveness_hog_{name}_solo_{cores}core"),
                solo,
                unit,
            ));
            let (bare, _) = loaded_run(cores, load, false, false, window);
            out.push(metric(
                format!("responsiveness_hog_{name}_nowatchdog_{cores}core"),
                bare,
                unit,
            ));
        }
    }
    pin_process(&allowed);
    out
}
