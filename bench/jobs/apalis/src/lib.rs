//! What both apalis benchmark binaries share: the job, its handler, the
//! producers and the report, so that the SQLite and PostgreSQL sides run
//! exactly the same workload (Ember's: `crates/jobs/examples/noop_throughput.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use serde::{Deserialize, Serialize};

/// The no-op job.
#[derive(Debug, Serialize, Deserialize)]
pub struct Noop;

/// The handler: counts the job and does nothing else.
pub async fn noop(_job: Noop, seen: Data<Arc<AtomicUsize>>) {
    seen.fetch_add(1, Ordering::Relaxed);
}

/// `producers` tasks enqueue `n` jobs in all, one at a time each; returns
/// every enqueue's latency.
pub async fn produce<S>(storage: &S, n: usize, producers: usize) -> Vec<Duration>
where
    S: Storage<Job = Noop> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let mut tasks = Vec::new();
    for p in 0..producers {
        let mut storage = storage.clone();
        let count = n / producers + usize::from(p < n % producers);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                storage.push(Noop).await.expect("push");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await.expect("producer"));
    }
    lat
}

/// Prints the `METRIC` lines (`jobs_noop_per_s`, `jobs_enqueue_p50`,
/// `jobs_enqueue_p99`) for `n` jobs done in `total`.
pub fn report(n: usize, total: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "METRIC jobs_noop_per_s {:.1} jobs/s",
        n as f64 / total.as_secs_f64()
    );
    println!("METRIC jobs_enqueue_p50 {:.3} ms", p(0.5));
    println!("METRIC jobs_enqueue_p99 {:.3} ms", p(0.99));
}
