//! The sampler process: once a second it diffs the runtime's counters into
//! what every page shows (utilisation per scheduler, top, jobs/s, memory),
//! keeps the last minute of history and publishes a [`Snapshot`].

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_runtime::introspect::RuntimeInfo;
use ember_runtime::{sleep, Handle};
use serde_json::{json, Value};

use super::{top, Console};

/// Sampling period.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// Figures older than this are stale even if their sampler lives (it is
/// stuck): a backstop, since a sampler that dies withdraws its figures.
pub(crate) const STALE: Duration = Duration::from_secs(10);

/// Points of history kept (one minute).
const HISTORY: usize = 60;

/// The figures of one second.
pub(crate) struct Snapshot {
    /// When they were taken (older than [`STALE`]: not served).
    pub(crate) taken: Instant,
    /// The sampler that took them: once it is dead they are not served.
    pub(crate) sampler: ember_runtime::Pid,
    /// `GET /api/system`.
    pub(crate) system: Value,
    /// `GET /api/top`.
    pub(crate) top: Value,
    /// The load figures and the last minute of history (`GET /api/load`
    /// adds the settings).
    pub(crate) load: Value,
}

/// One point of the graphs.
struct Point {
    t_ms: u64,
    jobs: f64,
    failures: f64,
    utilization: Vec<f64>,
    rss: usize,
    allocated: Option<usize>,
    processes: usize,
}

/// Withdraws the sampler's figures when it stops, however it stops: no
/// page may show them as live.
struct Withdraw(Arc<Console>);

impl Drop for Withdraw {
    fn drop(&mut self) {
        self.0.snapshot.send_replace(None);
    }
}

/// The sampler's body: runs until killed.
pub(crate) async fn run(console: Arc<Console>, handle: Handle) {
    let _withdraw = Withdraw(console.clone());
    let started = Instant::now();
    let mut history: VecDeque<Point> = VecDeque::with_capacity(HISTORY + 1);
    let mut info = handle.runtime_info();
    let mut samples = handle.sample_processes();
    let mut jobs = console.load.jobs.load(Ordering::Relaxed);
    let mut failures = console.load.failures.load(Ordering::Relaxed);
    let mut at = Instant::now();
    let mut previous_top: Vec<ember_runtime::Pid> = Vec::new();
    // The first figures come quickly, the rest every second.
    let mut period = Duration::from_millis(250);
    loop {
        sleep(period).await;
        period = PERIOD;
        let now = Instant::now();
        let window = now - at;
        let secs = window.as_secs_f64().max(1e-3);
        let new_info = handle.runtime_info();
        let utilization = new_info.utilization_since(&info);
        let mut new_samples = handle.sample_processes();
        let new_jobs = console.load.jobs.load(Ordering::Relaxed);
        let new_failures = console.load.failures.load(Ordering::Relaxed);

        let mut hints = console.math.running_pids();
        hints.extend(previous_top.iter().copied());
        let online = new_info.schedulers.iter().filter(|s| s.online).count();
        let top_rows = top::top(
            &handle,
            &mut samples,
            &mut new_samples,
            window,
            online,
            &hints,
        );
        previous_top = top_rows.iter().map(|(pid, _)| *pid).collect();
        let top_rows: Vec<Value> = top_rows.into_iter().map(|(_, row)| row).collect();

        let point = Point {
            t_ms: started.elapsed().as_millis() as u64,
            jobs: new_jobs.saturating_sub(jobs) as f64 / secs,
            failures: new_failures.saturating_sub(failures) as f64 / secs,
            utilization: utilization.clone(),
            rss: new_info.memory_rss_bytes,
            allocated: new_info.memory_allocated_bytes,
            processes: new_info.process_count,
        };
        let snapshot = Snapshot {
            taken: now,
            sampler: ember_runtime::self_pid(),
            system: system_json(&new_info, &utilization),
            top: json!({
                "interval_ms": window.as_millis() as u64,
                "schedulers_online": online,
                "process_count": new_info.process_count,
                "processes": top_rows,
            }),
            load: load_json(&point, &history),
        };
        history.push_back(point);
        if history.len() > HISTORY {
            history.pop_front();
        }
        console.snapshot.send_replace(Some(Arc::new(snapshot)));

        info = new_info;
        samples = new_samples;
        jobs = new_jobs;
        failures = new_failures;
        at = now;
    }
}

fn system_json(info: &RuntimeInfo, utilization: &[f64]) -> Value {
    let online: Vec<&ember_runtime::introspect::SchedulerInfo> =
        info.schedulers.iter().filter(|s| s.online).collect();
    let average = if online.is_empty() {
        0.0
    } else {
        online
            .iter()
            .map(|s| utilization.get(s.index).copied().unwrap_or(0.0))
            .sum::<f64>()
            / online.len() as f64
    };
    let t = &info.threads;
    json!({
        "uptime_s": info.uptime.as_secs_f64(),
        "process_count": info.process_count,
        "schedulers_online": online.len(),
        "schedulers_total": info.schedulers.len(),
        "utilization": average,
        "schedulers": info.schedulers.iter().map(|s| json!({
            "index": s.index,
            "online": s.online,
            "utilization": utilization.get(s.index).copied().unwrap_or(0.0),
            "busy_s": s.busy.as_secs_f64(),
            "run_queue": s.run_queue,
            "polls": s.polls,
            "reductions": s.reductions,
        })).collect::<Vec<_>>(),
        "global_queue": info.global_queue,
        "timers": info.timers,
        "memory": {
            "rss_bytes": info.memory_rss_bytes,
            "allocated_bytes": info.memory_allocated_bytes,
        },
        "threads": {
            "workers": t.workers,
            "spares": t.spares,
            "background": t.background,
            "background_queue": t.background_queue,
            "handoffs": t.handoffs,
            "blocked_handoffs": t.blocked_handoffs,
            "contended_handoffs": t.contended_handoffs,
            "demotions": t.demotions,
            "reliefs": t.reliefs,
            "threads_started": t.threads_started,
        },
    })
}

fn point_json(p: &Point) -> Value {
    json!({
        "t_ms": p.t_ms,
        "jobs_per_s": p.jobs,
        "failures_per_s": p.failures,
        "utilization": p.utilization,
        "rss_bytes": p.rss,
        "allocated_bytes": p.allocated,
        "process_count": p.processes,
    })
}

fn load_json(latest: &Point, history: &VecDeque<Point>) -> Value {
    let mut points: Vec<Value> = history.iter().map(point_json).collect();
    points.push(point_json(latest));
    json!({
        "jobs_per_s": latest.jobs,
        "failures_per_s": latest.failures,
        "history": points,
    })
}
