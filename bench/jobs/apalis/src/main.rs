//! The apalis side of `bench/run jobs`: no-op jobs end to end on an apalis
//! SQLite store (apalis 0.7, apalis-sql `sqlite`), with the same workload as
//! Ember's side (`crates/jobs/examples/noop_throughput.rs`).
//!
//! ```text
//! apalis-jobs-bench DB_FILE JOBS PRODUCERS CONCURRENCY SYNCHRONOUS
//! ```
//!
//! `PRODUCERS` tasks enqueue `JOBS / PRODUCERS` jobs each, one at a time,
//! while one worker of `CONCURRENCY` runs them. The clock starts before the
//! first enqueue and stops when the store reports every job `Done`. Every
//! connection of the pool runs in WAL mode with the given `synchronous`
//! (`FULL` or `NORMAL`), as Ember's store does.
//! Prints `METRIC <name> <value> <unit>` lines.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_jobs_bench::{noop, produce, report, Noop};
use apalis_sql::sqlite::SqliteStorage;
use apalis_sql::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use apalis_sql::Config;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        eprintln!("usage: apalis-jobs-bench DB_FILE JOBS PRODUCERS CONCURRENCY SYNCHRONOUS");
        std::process::exit(2);
    }
    let n: usize = args[1].parse().expect("JOBS");
    let producers: usize = args[2].parse::<usize>().expect("PRODUCERS").max(1);
    let concurrency: usize = args[3].parse::<usize>().expect("CONCURRENCY").max(1);
    let sync = match args[4].as_str() {
        "FULL" => SqliteSynchronous::Full,
        "NORMAL" => SqliteSynchronous::Normal,
        other => panic!("SYNCHRONOUS must be FULL or NORMAL, not {other}"),
    };
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", args[0]))
        .expect("db path")
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sync)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(opts)
        .await
        .expect("open pool");
    SqliteStorage::setup(&pool).await.expect("migrate");
    // `setup` sets synchronous = NORMAL on one connection of the pool; put
    // every connection back to the mode asked for.
    let _ = pool;
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", args[0]))
        .expect("db path")
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sync)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(opts)
        .await
        .expect("reopen pool");
    // apalis polls; 1 ms and a buffer as large as the concurrency are the
    // most favourable settings for its throughput here.
    let config = Config::new("bench::noop")
        .set_poll_interval(Duration::from_millis(1))
        .set_buffer_size(concurrency);
    let storage: SqliteStorage<Noop> = SqliteStorage::new_with_config(pool.clone(), config);
    let seen = Arc::new(AtomicUsize::new(0));
    let restarts = supervise(storage.clone(), seen.clone(), concurrency, n);

    let t0 = Instant::now();
    let lat = produce(&storage, n, producers).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if seen.load(Ordering::Relaxed) >= n {
            let (done,): (i64,) =
                apalis_sql::sqlx::query_as("SELECT COUNT(*) FROM Jobs WHERE status = 'Done'")
                    .fetch_one(&pool)
                    .await
                    .expect("count");
            if done as usize >= n {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "stalled at {} of {n}",
            seen.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let total = t0.elapsed();
    let restarts = restarts.load(Ordering::Relaxed);
    if restarts > 0 {
        println!("# the worker stalled or stopped and was started again {restarts} times");
    }
    report(n, total, lat);
    std::process::exit(0);
}

/// How long the worker may make no progress while jobs remain.
const STALL: Duration = Duration::from_secs(5);

/// Runs the worker, and starts another if it stops, or makes no progress
/// for [`STALL`] while jobs remain. apalis' SQLite poller ends its stream
/// at the first database error (a `try_stream!`), and its worker then never
/// fetches again: beside the loom models in CI, about one run in 40 stalled
/// with every job still `Pending`. An apalis user would supervise it too;
/// the run counts the restarts (its clock keeps running through them), and
/// says so. Returns that count.
fn supervise(
    storage: SqliteStorage<Noop>,
    seen: Arc<AtomicUsize>,
    concurrency: usize,
    n: usize,
) -> Arc<AtomicUsize> {
    let restarts = Arc::new(AtomicUsize::new(0));
    let count = restarts.clone();
    tokio::spawn(async move {
        for generation in 0.. {
            let worker = WorkerBuilder::new(format!("bench-worker-{generation}"))
                .data(seen.clone())
                .concurrency(concurrency)
                .backend(storage.clone())
                .build_fn(noop);
            let mut monitor =
                tokio::spawn(async move { Monitor::new().register(worker).run().await });
            let mut last = seen.load(Ordering::Relaxed);
            loop {
                tokio::select! {
                    _ = &mut monitor => break,
                    _ = tokio::time::sleep(STALL) => {
                        let now = seen.load(Ordering::Relaxed);
                        if now >= n {
                            // Every job ran: the worker stays for the acks.
                            let _ = monitor.await;
                            return;
                        }
                        if now == last {
                            monitor.abort();
                            break;
                        }
                        last = now;
                    }
                }
            }
            count.fetch_add(1, Ordering::Relaxed);
            eprintln!("apalis-jobs-bench: the worker stalled or stopped; starting another");
        }
    });
    restarts
}
