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
    let worker = WorkerBuilder::new("bench-worker")
        .data(seen.clone())
        .concurrency(concurrency)
        .backend(storage.clone())
        .build_fn(noop);
    tokio::spawn(async move {
        let _ = Monitor::new().register(worker).run().await;
    });

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
    report(n, total, lat);
    std::process::exit(0);
}
