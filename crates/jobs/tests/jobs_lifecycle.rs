//! The job API end to end on a real SQLite store: results and progress,
//! refused enqueues, retries with backoff, cancel, timeouts, uniqueness,
//! scheduled jobs, priorities and concurrency limits. Every wait has a
//! deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ember_jobs::{
    now_ms, Backoff, EnqueueError, EnqueueOptions, JobContext, JobError, JobKind, JobState, Jobs,
    JobsConfig, KindOptions, SoftTimeout, SqliteStore,
};
use ember_runtime::{receive, send, Pid, Runtime};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(20);

fn rt() -> Runtime {
    Runtime::builder().schedulers(2).build().unwrap()
}

fn store() -> (tempdir::Dir, SqliteStore) {
    let dir = tempdir::Dir::new();
    let s = SqliteStore::open(dir.path().join("jobs.db")).unwrap();
    (dir, s)
}

mod tempdir {
    use std::path::{Path, PathBuf};
    /// A directory removed on drop.
    pub(crate) struct Dir(PathBuf);
    impl Dir {
        pub(crate) fn new() -> Dir {
            let p = std::env::temp_dir().join(format!(
                "ember-jobs-test-{}-{}",
                std::process::id(),
                getrandom::u64().unwrap()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn fast_backoff() -> Backoff {
    Backoff {
        base_ms: 20,
        max_ms: 200,
    }
}

/// A typed kind: doubles a number, reporting progress twice.
struct Double;

#[derive(serde::Serialize, serde::Deserialize)]
struct DoubleArgs {
    n: u64,
}

impl JobKind for Double {
    type Args = DoubleArgs;
    const NAME: &'static str = "double";
    fn validate(&self, args: &DoubleArgs) -> Result<(), String> {
        if args.n > 1000 {
            Err("n must be at most 1000".into())
        } else {
            Ok(())
        }
    }
    async fn run(&self, ctx: JobContext, args: DoubleArgs) -> Result<Value, JobError> {
        ctx.progress(10.0, "start").unwrap();
        ctx.progress_with(90.0, "almost", json!({"step": 2}))
            .unwrap();
        Ok(json!(args.n * 2))
    }
}

#[test]
fn a_job_runs_in_its_own_process_and_stores_result_and_progress() {
    rt().block_on(async {
        let (_d, s) = store();
        let jobs = Jobs::builder(s, JobsConfig::default())
            .kind(Double)
            .start()
            .await
            .unwrap();
        let id = jobs
            .enqueue::<Double>(DoubleArgs { n: 21 }, EnqueueOptions::default())
            .await
            .unwrap();
        let done = jobs.wait_final(id, DEADLINE).await.expect("job finished");
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(done.result, Some(json!(42)));
        assert_eq!(done.attempt, 1);
        assert_eq!(done.completions, 1);
        assert_eq!(done.progress_pct, Some(90.0));
        assert_eq!(done.progress_message.as_deref(), Some("almost"));
        assert_eq!(done.progress_data, Some(json!({"step": 2})));
        let kinds: Vec<(String, Value)> = jobs
            .events(id, 0)
            .unwrap()
            .into_iter()
            .map(|e| {
                let v = e.data.get("state").or(e.data.get("pct")).cloned().unwrap();
                (e.kind, v)
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("state".into(), json!("queued")),
                ("state".into(), json!("running")),
                ("progress".into(), json!(10.0)),
                ("progress".into(), json!(90.0)),
                ("state".into(), json!("succeeded")),
            ]
        );
        // Replay from the middle.
        let all = jobs.events(id, 0).unwrap();
        let tail = jobs.events(id, all[2].seq).unwrap();
        assert_eq!(tail, all[3..].to_vec());
    });
}

#[test]
fn unknown_kinds_and_bad_args_are_refused_and_nothing_is_stored() {
    rt().block_on(async {
        let (_d, s) = store();
        let jobs = Jobs::builder(s, JobsConfig::default())
            .kind(Double)
            .start()
            .await
            .unwrap();
        let e = jobs
            .enqueue_json("nope", json!({}), EnqueueOptions::default())
            .await;
        assert!(matches!(e, Err(EnqueueError::UnknownKind(_))), "{e:?}");
        let e = jobs
            .enqueue_json("double", json!({"n": "x"}), EnqueueOptions::default())
            .await;
        assert!(matches!(e, Err(EnqueueError::BadArgs(_))), "{e:?}");
        let e = jobs
            .enqueue_json("double", json!({"n": 5000}), EnqueueOptions::default())
            .await;
        assert!(
            matches!(&e, Err(EnqueueError::BadArgs(m)) if m.contains("at most 1000")),
            "{e:?}"
        );
        assert!(jobs.list(None, 10, None).unwrap().is_empty());
    });
}

fn flaky_jobs(s: SqliteStore, config: JobsConfig) -> impl std::future::Future<Output = Jobs> {
    Jobs::builder(s, config)
        .kind_fn(
            "flaky",
            KindOptions {
                backoff: fast_backoff(),
                ..KindOptions::default()
            },
            |ctx: JobContext, fail_times: u32| async move {
                if ctx.attempt() <= fail_times {
                    Err(JobError::retry(format!("attempt {} fails", ctx.attempt())))
                } else {
                    Ok(json!("ok"))
                }
            },
        )
        .kind_fn(
            "panics",
            KindOptions {
                backoff: fast_backoff(),
                ..KindOptions::default()
            },
            |ctx: JobContext, (): ()| async move {
                if ctx.attempt() == 1 {
                    panic!("boom");
                }
                Ok(json!(ctx.attempt()))
            },
        )
        .start()
        .map(|r| r.unwrap())
}

trait MapFut: std::future::Future + Sized {
    fn map<T>(self, f: impl FnOnce(Self::Output) -> T) -> impl std::future::Future<Output = T> {
        async move { f(self.await) }
    }
}
impl<F: std::future::Future> MapFut for F {}

#[test]
fn failed_attempts_retry_with_backoff_then_fail_with_the_last_error() {
    rt().block_on(async {
        let (_d, s) = store();
        let jobs = flaky_jobs(s, JobsConfig::default()).await;
        let ok = jobs
            .enqueue_json(
                "flaky",
                json!(2),
                EnqueueOptions {
                    max_attempts: Some(3),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let dead = jobs
            .enqueue_json(
                "flaky",
                json!(5),
                EnqueueOptions {
                    max_attempts: Some(2),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let ok = jobs.wait_final(ok, DEADLINE).await.unwrap();
        assert_eq!((ok.state, ok.attempt), (JobState::Succeeded, 3));
        let dead = jobs.wait_final(dead, DEADLINE).await.unwrap();
        assert_eq!((dead.state, dead.attempt), (JobState::Failed, 2));
        assert_eq!(dead.error.as_deref(), Some("attempt 2 fails"));
        let states: Vec<String> = jobs
            .events(ok.id, 0)
            .unwrap()
            .into_iter()
            .filter_map(|e| e.state().map(|s| s.to_string()))
            .collect();
        assert_eq!(
            states,
            [
                "queued",
                "running",
                "retrying",
                "running",
                "retrying",
                "running",
                "succeeded"
            ]
        );
        // A panicking attempt is a failure like any other.
        let p = jobs
            .enqueue_json("panics", json!(null), EnqueueOptions::default())
            .await
            .unwrap();
        let p = jobs.wait_final(p, DEADLINE).await.unwrap();
        assert_eq!((p.state, p.result), (JobState::Succeeded, Some(json!(2))));
    });
}

#[test]
fn backoff_doubles_from_its_base_with_jitter_and_stops_at_its_cap() {
    let b = Backoff::default();
    assert_eq!(b.nominal_ms(1), 1_000);
    assert_eq!(b.nominal_ms(2), 2_000);
    assert_eq!(b.nominal_ms(4), 8_000);
    assert_eq!(b.nominal_ms(20), 300_000);
    assert_eq!(b.nominal_ms(500), 300_000);
    for attempt in 1..12 {
        let d = b.delay_ms(attempt);
        let n = b.nominal_ms(attempt) as f64;
        assert!(d as f64 >= n * 0.8 - 1.0 && d <= 300_000, "{attempt}: {d}");
    }
}

/// Kinds that block until told, report being started, and loop forever.
fn blocking_jobs(
    s: SqliteStore,
    config: JobsConfig,
    observer: Pid,
) -> impl std::future::Future<Output = Jobs> {
    Jobs::builder(s, config)
        .kind_fn(
            "forever",
            KindOptions::default(),
            move |ctx: JobContext, (): ()| async move {
                send(observer, (ctx.id(), ember_runtime::self_pid()));
                loop {
                    ember_runtime::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .kind_fn(
            "polite",
            KindOptions {
                hard_timeout_grace: Some(Duration::from_secs(30)),
                ..KindOptions::default()
            },
            move |ctx: JobContext, (): ()| async move {
                let told = receive::<SoftTimeout>().await;
                assert!(ctx.wrap_up());
                Err(JobError::fatal(format!("wrapped up job {}", told.job)))
            },
        )
        .start()
        .map(|r| r.unwrap())
}

#[test]
fn cancel_kills_a_running_job_and_a_waiting_one_at_once() {
    rt().block_on(async {
        let (_d, s) = store();
        let me = ember_runtime::self_pid();
        let jobs = blocking_jobs(s, JobsConfig::default(), me).await;
        let id = jobs
            .enqueue_json("forever", json!(null), EnqueueOptions::default())
            .await
            .unwrap();
        let (started, pid) = receive::<(i64, Pid)>()
            .timeout(DEADLINE)
            .await
            .expect("job started");
        assert_eq!(started, id);
        let mon = ember_runtime::monitor(pid);
        // The job runs forever: a `Killed` down proves the cancel; how long
        // it takes is a figure for a benchmark, not a bound for a test that
        // shares its machine (each step commits to SQLite).
        jobs.cancel(id).unwrap();
        let down = receive::<ember_runtime::Down>()
            .matching(move |d| d.monitor == mon)
            .timeout(DEADLINE)
            .await
            .expect("the job's process was killed");
        assert_eq!(down.reason, ember_runtime::ExitReason::Killed);
        let rec = jobs.wait_final(id, DEADLINE).await.unwrap();
        assert_eq!(rec.state, JobState::Cancelled);
        // A scheduled job is cancelled in the store directly.
        let later = jobs
            .enqueue_json(
                "forever",
                json!(null),
                EnqueueOptions {
                    run_at: Some(now_ms() + 60_000),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(jobs.get(later).unwrap().unwrap().state, JobState::Scheduled);
        jobs.cancel(later).unwrap();
        assert_eq!(jobs.get(later).unwrap().unwrap().state, JobState::Cancelled);
    });
}

#[test]
fn a_soft_timeout_tells_the_job_and_a_hard_timeout_kills_it() {
    rt().block_on(async {
        let (_d, s) = store();
        let me = ember_runtime::self_pid();
        let config = JobsConfig {
            hard_timeout_grace: Duration::from_millis(200),
            ..JobsConfig::default()
        };
        let jobs = blocking_jobs(s, config, me).await;
        let polite = jobs
            .enqueue_json(
                "polite",
                json!(null),
                EnqueueOptions {
                    timeout_ms: Some(100),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let rec = jobs.wait_final(polite, DEADLINE).await.unwrap();
        assert_eq!(rec.state, JobState::Failed);
        assert_eq!(rec.error, Some(format!("wrapped up job {polite}")));

        let stuck = jobs
            .enqueue_json(
                "forever",
                json!(null),
                EnqueueOptions {
                    timeout_ms: Some(100),
                    max_attempts: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let rec = jobs.wait_final(stuck, DEADLINE).await.unwrap();
        assert_eq!(rec.state, JobState::Failed);
        assert!(
            rec.error.as_deref().unwrap_or("").starts_with("timeout"),
            "{:?}",
            rec.error
        );
    });
}

#[test]
fn a_unique_key_returns_the_pending_job_and_frees_once_it_is_final() {
    rt().block_on(async {
        let (_d, s) = store();
        let jobs = Jobs::builder(s, JobsConfig::default())
            .kind(Double)
            .start()
            .await
            .unwrap();
        let opts = EnqueueOptions {
            unique_key: Some("k".into()),
            run_at: Some(now_ms() + 60_000),
            ..Default::default()
        };
        let a = jobs
            .enqueue::<Double>(DoubleArgs { n: 1 }, opts.clone())
            .await
            .unwrap();
        let b = jobs
            .enqueue::<Double>(DoubleArgs { n: 2 }, opts.clone())
            .await
            .unwrap();
        assert_eq!(a, b);
        jobs.cancel(a).unwrap();
        let c = jobs
            .enqueue::<Double>(DoubleArgs { n: 3 }, opts)
            .await
            .unwrap();
        assert_ne!(a, c);
    });
}

#[test]
fn a_scheduled_job_waits_for_its_time() {
    rt().block_on(async {
        let (_d, s) = store();
        let jobs = Jobs::builder(s, JobsConfig::default())
            .kind(Double)
            .start()
            .await
            .unwrap();
        let at = now_ms() + 400;
        let id = jobs
            .enqueue::<Double>(
                DoubleArgs { n: 1 },
                EnqueueOptions {
                    run_at: Some(at),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(jobs.get(id).unwrap().unwrap().state, JobState::Scheduled);
        let rec = jobs.wait_final(id, DEADLINE).await.unwrap();
        assert_eq!(rec.state, JobState::Succeeded);
        assert!(now_ms() >= at);
        let claimed_at = jobs
            .events(id, 0)
            .unwrap()
            .into_iter()
            .find(|e| e.state() == Some(JobState::Running));
        assert!(claimed_at.is_some());
    });
}

#[test]
fn a_queue_runs_at_most_its_limit_and_lowest_priority_first() {
    rt().block_on(async {
        let (_d, s) = store();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let me = ember_runtime::self_pid();
        let mut config = JobsConfig::default();
        config.queues.insert("one".into(), 1);
        config.queues.insert("two".into(), 2);
        let (r, p) = (running.clone(), peak.clone());
        let jobs = Jobs::builder(s, config)
            .kind_fn(
                "count",
                KindOptions::default(),
                move |ctx: JobContext, ms: u64| {
                    let (r, p) = (r.clone(), p.clone());
                    async move {
                        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                        p.fetch_max(now, Ordering::SeqCst);
                        send(me, ctx.id());
                        ember_runtime::sleep(Duration::from_millis(ms)).await;
                        r.fetch_sub(1, Ordering::SeqCst);
                        Ok(Value::Null)
                    }
                },
            )
            .start()
            .await
            .unwrap();
        let opts = |queue: &str, priority: i64| EnqueueOptions {
            queue: Some(queue.into()),
            priority,
            ..Default::default()
        };
        // Fill queue "one" with a slow job, then queue a low and a high priority.
        let first = jobs
            .enqueue_json("count", json!(300), opts("one", 0))
            .await
            .unwrap();
        assert_eq!(receive::<i64>().timeout(DEADLINE).await, Some(first));
        let low = jobs
            .enqueue_json("count", json!(1), opts("one", 5))
            .await
            .unwrap();
        let high = jobs
            .enqueue_json("count", json!(1), opts("one", -5))
            .await
            .unwrap();
        assert_eq!(receive::<i64>().timeout(DEADLINE).await, Some(high));
        assert_eq!(receive::<i64>().timeout(DEADLINE).await, Some(low));
        jobs.wait_final(low, DEADLINE).await.unwrap();
        assert_eq!(peak.load(Ordering::SeqCst), 1);
        // Queue "two" runs two at a time.
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(
                jobs.enqueue_json("count", json!(100), opts("two", 0))
                    .await
                    .unwrap(),
            );
        }
        for id in ids {
            assert_eq!(
                jobs.wait_final(id, DEADLINE).await.unwrap().state,
                JobState::Succeeded
            );
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    });
}

/// §9.5: without the counting allocator (this test binary has none) a
/// memory limit cannot be enforced: the job fails at once, saying why,
/// instead of running unlimited.
#[test]
fn a_memory_limit_without_the_counting_allocator_fails_the_job_at_once() {
    rt().block_on(async {
        let (_d, s) = store();
        let jobs = Jobs::builder(s, JobsConfig::default())
            .kind(Double)
            .start()
            .await
            .unwrap();
        let id = jobs
            .enqueue::<Double>(
                DoubleArgs { n: 1 },
                EnqueueOptions {
                    memory_limit: Some(1 << 20),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let done = jobs.wait_final(id, DEADLINE).await.expect("job finished");
        assert_eq!((done.state, done.attempt), (JobState::Failed, 1));
        let error = done.error.unwrap_or_default();
        assert!(
            error.starts_with("memory_limit: ") && error.contains("CountingAlloc"),
            "{error}"
        );
    });
}
