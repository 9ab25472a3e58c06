//! Ember's side of the `fairness` probe of `bench/run actors` (driver
//! `bench/actors/run`; the peers are in `bench/actors`, and this file
//! mirrors their `fairness_coordinator` step by step; see bench/README.md,
//! "Actor frameworks").
//!
//! A runtime in its default configuration (one scheduler per core this
//! process may use), an echo process, and ten hogs: processes that spin
//! without ever awaiting. A coordinator on a plain OS thread outside the
//! runtime (the main thread) sends one warm-up probe, starts the hogs,
//! waits until one spins (+100 ms), then sends 100 probes to the echo
//! process 10 ms apart; an answer counts if it arrives within the deadline
//! (`BENCH_ACTORS_DEADLINE_MS`, default 100) of its probe's send. Prints
//! `METRIC fairness_answered <n> probes` and exits the process (the hogs
//! never stop).

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ember_runtime::{receive, Runtime};

const HOGS: usize = 10;
const PROBES: usize = 100;
const PROBE_PERIOD: Duration = Duration::from_millis(10);

/// A probe request: the echo process sends `sent` back on `reply`.
struct Probe {
    sent: Instant,
    reply: mpsc::Sender<Instant>,
}

/// Hogs whose spinning has begun.
static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// A hog's body: spins forever and never awaits (the process exits under it).
fn spin_forever() {
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

fn deadline() -> Duration {
    let ms = std::env::var("BENCH_ACTORS_DEADLINE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_millis(ms.max(1))
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() != Some("fairness") {
        eprintln!("usage: ember-fairness-bench fairness");
        return ExitCode::from(2);
    }
    let rt = match Runtime::builder().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ember-fairness-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = rt.handle().clone();
    let echo = handle.spawn(async {
        loop {
            let p: Probe = receive().await;
            let _ = p.reply.send(p.sent);
        }
    });
    let deadline = deadline();
    let (tx, rx) = mpsc::channel::<Instant>();
    handle.send(
        echo,
        Probe {
            sent: Instant::now(),
            reply: tx.clone(),
        },
    );
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        eprintln!("ember-fairness-bench: the echo process did not answer the warm-up probe");
        return ExitCode::FAILURE;
    }
    for _ in 0..HOGS {
        handle.spawn(async { spin_forever() });
    }
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
                Err(_) => break,
            }
        }
        lat
    });
    for k in 0..PROBES {
        let due = start + PROBE_PERIOD * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        handle.send(
            echo,
            Probe {
                sent: Instant::now(),
                reply: tx.clone(),
            },
        );
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
         {PROBES} sent, {} answered at all, {answered} within {} ms; latency p50 {} ms, max {} ms",
        PROBE_PERIOD.as_millis(),
        lat.len(),
        deadline.as_millis(),
        ms(lat.get(lat.len() / 2)),
        ms(lat.last()),
    );
    println!("# threads: {:?}", handle.runtime_info().threads);
    println!("METRIC fairness_answered {answered} probes");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // The hogs never stop: leave without dropping the runtime.
    std::process::exit(0);
}
