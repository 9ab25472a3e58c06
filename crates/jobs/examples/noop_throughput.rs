//! No-op jobs end to end on a SQLite file (or a PostgreSQL database):
//! enqueue latency and jobs/s from the first enqueue to the last completion
//! (Ember's side of `bench/run jobs`).
//!
//! ```text
//! cargo run --release -p ember-jobs --example noop_throughput -- \
//!     [JOBS] [LIMIT] [PRODUCERS] [DB_FILE | postgres://URL]
//! ```
//!
//! A `postgres://` (or `postgresql://`) last argument runs on [`PgStore`]
//! in that database instead of SQLite.
//!
//! `PRODUCERS` processes enqueue `JOBS / PRODUCERS` jobs each, one at a
//! time (each `enqueue` returns once its job is durable), while the queue
//! runs `LIMIT` jobs at a time. The clock starts before the first enqueue
//! and stops when the last job's `succeeded` is committed. Prints a
//! summary line and `METRIC <name> <value> <unit>` lines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_jobs::{
    EnqueueOptions, JobContext, JobState, Jobs, JobsConfig, KindOptions, PgStore, SqliteStore,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let limit: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let producers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let target = args.next();
    let pg_url = target
        .clone()
        .filter(|t| t.starts_with("postgres://") || t.starts_with("postgresql://"));
    let (dir, db) = match target {
        Some(f) => (None, std::path::PathBuf::from(f)),
        None => {
            let dir = std::env::temp_dir().join(format!("ember-jobs-noop-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            (Some(dir.clone()), dir.join("jobs.db"))
        }
    };
    let rt = ember_runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let config = JobsConfig {
            default_limit: limit,
            ..JobsConfig::default()
        };
        let builder = match &pg_url {
            Some(url) => Jobs::builder(PgStore::connect(url).unwrap(), config),
            None => Jobs::builder(SqliteStore::open(&db).unwrap(), config),
        };
        let jobs = builder
            .kind_fn(
                "noop",
                KindOptions::default(),
                |_ctx: JobContext, (): ()| async { Ok(serde_json::Value::Null) },
            )
            .start()
            .await
            .unwrap();
        let mut done = jobs.subscribe();
        let lat = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(n)));
        let (fin_tx, mut fin_rx) = tokio::sync::mpsc::unbounded_channel();
        let t0 = Instant::now();
        for p in 0..producers {
            let count = n / producers + usize::from(p < n % producers);
            let (jobs, lat, fin_tx) = (jobs.clone(), lat.clone(), fin_tx.clone());
            ember_runtime::spawn(async move {
                let mut mine = Vec::with_capacity(count);
                for _ in 0..count {
                    let t = Instant::now();
                    jobs.enqueue_json("noop", serde_json::Value::Null, EnqueueOptions::default())
                        .await
                        .unwrap();
                    mine.push(t.elapsed());
                }
                lat.lock().extend(mine);
                let _ = fin_tx.send(());
            });
        }
        drop(fin_tx);
        // Count `succeeded` events; when they lag (or go quiet for 50 ms),
        // ask the store instead. Gives up after 60 s without progress.
        let succeeded = |jobs: &Jobs| {
            jobs.counts()
                .unwrap()
                .into_iter()
                .find(|(s, _)| *s == JobState::Succeeded)
                .map_or(0, |(_, c)| c as usize)
        };
        let mut finished = 0;
        let mut last_progress = Instant::now();
        while finished < n {
            let before = finished;
            match ember_jobs::timeout(Duration::from_millis(50), done.recv()).await {
                Some(Ok(ev)) if ev.state() == Some(JobState::Succeeded) => finished += 1,
                Some(Ok(_)) => {}
                _ => finished = succeeded(&jobs),
            }
            if finished > before {
                last_progress = Instant::now();
            }
            assert!(
                last_progress.elapsed() < Duration::from_secs(60),
                "stalled at {finished} of {n}"
            );
        }
        let total = t0.elapsed();
        for _ in 0..producers {
            fin_rx.recv().await.expect("a producer died");
        }
        let mut lat = lat.lock().clone();
        lat.sort();
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
        println!(
            "# {n} no-op jobs, {producers} producers, queue limit {limit}: {:.0} jobs/s end to end \
             ({:.2} s); enqueue latency p50 {:?} p99 {:?}",
            n as f64 / total.as_secs_f64(),
            total.as_secs_f64(),
            p(0.5),
            p(0.99)
        );
        println!(
            "METRIC jobs_noop_per_s {:.1} jobs/s",
            n as f64 / total.as_secs_f64()
        );
        println!(
            "METRIC jobs_enqueue_p50 {:.3} ms",
            p(0.5).as_secs_f64() * 1e3
        );
        println!(
            "METRIC jobs_enqueue_p99 {:.3} ms",
            p(0.99).as_secs_f64() * 1e3
        );
        if let Some(dir) = dir {
            let _ = std::fs::remove_dir_all(&dir);
        }
    });
}
