//! The apalis side of `bench/run jobs` on PostgreSQL: no-op jobs end to end
//! on apalis-sql's PostgreSQL storage (apalis 0.7, apalis-sql `postgres`),
//! with the same workload as Ember's side (`noop_throughput` given a
//! `postgres://` URL).
//!
//! ```text
//! apalis-pg-jobs-bench URL JOBS PRODUCERS CONCURRENCY
//! ```
//!
//! `PRODUCERS` tasks enqueue `JOBS / PRODUCERS` jobs each, one at a time,
//! while one worker of `CONCURRENCY` runs them. The clock starts before the
//! first enqueue and stops when the store counts every job `Done`. The
//! worker polls every millisecond and also listens for apalis' `NOTIFY`
//! (`PgListen`), its most favourable settings; the pool has 8 connections.
//! Prints `METRIC <name> <value> <unit>` lines.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_jobs_bench::{noop, produce, report, Noop};
use apalis_sql::postgres::{PgListen, PostgresStorage};
use apalis_sql::sqlx::postgres::PgPoolOptions;
use apalis_sql::Config;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 4 {
        eprintln!("usage: apalis-pg-jobs-bench URL JOBS PRODUCERS CONCURRENCY");
        std::process::exit(2);
    }
    let n: usize = args[1].parse().expect("JOBS");
    let producers: usize = args[2].parse::<usize>().expect("PRODUCERS").max(1);
    let concurrency: usize = args[3].parse::<usize>().expect("CONCURRENCY").max(1);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&args[0])
        .await
        .expect("open pool");
    PostgresStorage::setup(&pool).await.expect("migrate");
    let config = Config::new("bench::noop")
        .set_poll_interval(Duration::from_millis(1))
        .set_buffer_size(concurrency);
    let mut storage: PostgresStorage<Noop> = PostgresStorage::new_with_config(pool.clone(), config);
    let mut listen = PgListen::new(pool.clone()).await.expect("listen");
    listen.subscribe_with(&mut storage);
    tokio::spawn(async move {
        let _ = listen.listen().await;
    });
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
            let (done,): (i64,) = apalis_sql::sqlx::query_as(
                "SELECT COUNT(*) FROM apalis.jobs WHERE status = 'Done'",
            )
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
