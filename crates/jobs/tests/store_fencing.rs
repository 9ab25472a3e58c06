//! Leases and fencing on the SQLite store: a claim taken back cannot write,
//! a restarted node takes back what its earlier life was running, and a
//! dispatcher that loses a lease stops the job's process.

use std::time::Duration;

use ember_jobs::{
    now_ms, Backoff, Claimer, EnqueueOptions, JobContext, JobState, Jobs, JobsConfig, KindOptions,
    NewJob, Progress, Retry, SqliteStore, Store, StoreError,
};
use ember_runtime::{receive, send, Pid, Runtime};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(20);

fn new_job(kind: &str) -> NewJob {
    NewJob {
        kind: kind.into(),
        queue: "default".into(),
        args: json!(null),
        priority: 0,
        max_attempts: 3,
        timeout_ms: None,
        memory_limit: None,
        unique_key: None,
        run_at: now_ms(),
        backoff: Backoff::default(),
    }
}

fn temp_db() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "ember-jobs-fencing-{}-{}.db",
        std::process::id(),
        getrandom::u64().unwrap()
    ))
}

#[test]
fn a_claim_taken_back_after_its_lease_cannot_write() {
    let s = SqliteStore::in_memory().unwrap();
    let id = s.insert(&new_job("k")).unwrap().id();
    let t0 = now_ms();
    let a = s
        .claim(
            "default",
            "a@h",
            "a#1",
            &Claimer::always(),
            t0,
            t0 + 1_000,
            10,
        )
        .unwrap();
    assert_eq!(a.len(), 1);
    let a = &a[0];
    assert_eq!((a.id, a.attempt), (id, 1));
    // Nothing else is due while it runs.
    assert!(s
        .claim(
            "default",
            "b@h",
            "b#1",
            &Claimer::always(),
            t0,
            t0 + 1_000,
            10
        )
        .unwrap()
        .is_empty());
    // Node b sees the lease expired and takes the job back.
    let ev = s.recover("b@h", "b#1", t0 + 2_000).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].state(), Some(JobState::Retrying));
    let b = s
        .claim(
            "default",
            "b@h",
            "b#1",
            &Claimer::always(),
            t0 + 2_000,
            t0 + 3_000,
            10,
        )
        .unwrap();
    assert_eq!(b.len(), 1);
    assert!(b[0].token > a.token);
    assert_eq!(b[0].attempt, 2);
    // a, cut off, tries to write: refused every way.
    let p = Progress {
        pct: 50.0,
        message: "late".into(),
        data: None,
    };
    assert!(matches!(
        s.progress(id, a.token, &p),
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        s.succeed(id, a.token, &json!(1)),
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        s.fail(id, a.token, "x", Retry::Never),
        Err(StoreError::Fenced)
    ));
    let hb = s.heartbeat("a#1", &[(id, a.token)], t0 + 9_000).unwrap();
    assert_eq!(hb, vec![(id, false, false)]);
    // b's heartbeat and completion go through, once.
    let hb = s.heartbeat("b#1", &[(id, b[0].token)], t0 + 9_000).unwrap();
    assert_eq!(hb, vec![(id, true, false)]);
    s.succeed(id, b[0].token, &json!(2)).unwrap();
    assert!(matches!(
        s.succeed(id, b[0].token, &json!(3)),
        Err(StoreError::Fenced)
    ));
    let rec = s.get(id).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Succeeded);
    assert_eq!(rec.result, Some(json!(2)));
    assert_eq!(rec.completions, 1);
    assert_eq!(rec.node.as_deref(), Some("b@h"));
}

#[test]
fn a_store_file_opens_once_at_a_time() {
    let path = temp_db();
    let first = SqliteStore::open(&path).unwrap();
    let second = SqliteStore::open(&path);
    assert!(
        matches!(&second, Err(StoreError::Backend(m)) if m.contains("in use")),
        "{second:?}"
    );
    drop(first);
    drop(SqliteStore::open(&path).expect("free again once closed"));
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[test]
fn a_running_job_cancelled_while_its_node_is_gone_ends_cancelled() {
    let s = SqliteStore::in_memory().unwrap();
    let id = s.insert(&new_job("k")).unwrap().id();
    let t0 = now_ms();
    s.claim(
        "default",
        "a@h",
        "a#1",
        &Claimer::always(),
        t0,
        t0 + 1_000,
        1,
    )
    .unwrap();
    assert!(matches!(
        s.cancel(id).unwrap(),
        ember_jobs::CancelOutcome::Requested { .. }
    ));
    s.recover("b@h", "b#1", t0 + 2_000).unwrap();
    assert_eq!(s.get(id).unwrap().unwrap().state, JobState::Cancelled);
}

#[test]
fn a_restarted_node_takes_back_what_its_earlier_life_was_running() {
    let path = temp_db();
    let id;
    {
        // The earlier life: claimed with a long lease, then "crashed".
        let s = SqliteStore::open(&path).unwrap();
        id = s.insert(&new_job("k")).unwrap().id();
        let t0 = now_ms();
        s.claim(
            "default",
            "n@h",
            "n#old",
            &Claimer::always(),
            t0,
            t0 + 3_600_000,
            1,
        )
        .unwrap();
    }
    let db = path.clone();
    Runtime::builder()
        .schedulers(2)
        .build()
        .unwrap()
        .block_on(async move {
            let s = SqliteStore::open(&db).unwrap();
            let config = JobsConfig {
                node: "n@h".into(),
                ..JobsConfig::default()
            };
            let jobs = Jobs::builder(s, config)
                .kind_fn(
                    "k",
                    KindOptions::default(),
                    |ctx: JobContext, (): ()| async move { Ok(json!(ctx.attempt())) },
                )
                .start()
                .await
                .unwrap();
            let rec = jobs
                .wait_final(id, DEADLINE)
                .await
                .expect("taken back and run");
            assert_eq!(rec.state, JobState::Succeeded);
            assert_eq!(rec.result, Some(json!(2)));
            assert_eq!(rec.completions, 1);
        });
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[test]
fn a_dispatcher_that_loses_a_lease_stops_the_job() {
    Runtime::builder()
        .schedulers(2)
        .build()
        .unwrap()
        .block_on(async {
            let me = ember_runtime::self_pid();
            let config = JobsConfig {
                node: "a@h".into(),
                heartbeat: Duration::from_millis(50),
                ..JobsConfig::default()
            };
            let jobs = Jobs::builder(SqliteStore::in_memory().unwrap(), config)
                .kind_fn(
                    "forever",
                    KindOptions::default(),
                    move |ctx: JobContext, (): ()| async move {
                        send(me, (ctx.attempt(), ember_runtime::self_pid()));
                        loop {
                            ember_runtime::sleep(Duration::from_millis(20)).await;
                        }
                    },
                )
                .start()
                .await
                .unwrap();
            let id = jobs
                .enqueue_json(
                    "forever",
                    json!(null),
                    EnqueueOptions {
                        max_attempts: Some(1),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let (attempt, pid) = receive::<(u32, Pid)>().timeout(DEADLINE).await.unwrap();
            assert_eq!(attempt, 1);
            let mon = ember_runtime::monitor(pid);
            // Another node decides the lease expired (a clock far ahead).
            let taken = jobs
                .store()
                .recover("b@h", "b#1", now_ms() + 3_600_000)
                .unwrap();
            assert_eq!(taken.len(), 1);
            let down = receive::<ember_runtime::Down>()
                .matching(move |d| d.monitor == mon)
                .timeout(DEADLINE)
                .await;
            assert!(down.is_some(), "the fenced-out job's process was stopped");
            // Out of attempts, the job failed with the lease error, once.
            let rec = jobs.get(id).unwrap().unwrap();
            assert_eq!(rec.state, JobState::Failed);
            assert!(rec.error.unwrap().contains("lease"));
        });
}

#[test]
fn a_killed_dispatcher_takes_its_jobs_down_and_its_successor_runs_them_again() {
    Runtime::builder()
        .schedulers(2)
        .build()
        .unwrap()
        .block_on(async {
            let me = ember_runtime::self_pid();
            let jobs = Jobs::builder(SqliteStore::in_memory().unwrap(), JobsConfig::default())
                .kind_fn(
                    "wait_first",
                    KindOptions::default(),
                    move |ctx: JobContext, (): ()| async move {
                        send(me, (ctx.attempt(), ember_runtime::self_pid()));
                        if ctx.attempt() == 1 {
                            loop {
                                ember_runtime::sleep(Duration::from_millis(20)).await;
                            }
                        }
                        Ok(json!(ctx.attempt()))
                    },
                )
                .start()
                .await
                .unwrap();
            let id = jobs
                .enqueue_json("wait_first", json!(null), EnqueueOptions::default())
                .await
                .unwrap();
            let (attempt, job) = receive::<(u32, Pid)>().timeout(DEADLINE).await.unwrap();
            assert_eq!(attempt, 1);
            let job_mon = ember_runtime::monitor(job);
            let dispatcher = jobs.dispatcher("default").expect("a dispatcher");
            ember_runtime::exit(dispatcher, ember_runtime::ExitReason::Kill);
            let down = receive::<ember_runtime::Down>()
                .matching(move |d| d.monitor == job_mon)
                .timeout(DEADLINE)
                .await;
            assert!(down.is_some(), "the job died with its dispatcher");
            let (attempt, _) = receive::<(u32, Pid)>().timeout(DEADLINE).await.unwrap();
            assert_eq!(attempt, 2, "the new dispatcher ran it again at once");
            let rec = jobs.wait_final(id, DEADLINE).await.unwrap();
            assert_eq!((rec.state, rec.completions), (JobState::Succeeded, 1));
            assert_ne!(jobs.dispatcher("default"), Some(dispatcher));
        });
}

/// A store file written before jobs had a memory limit opens: the column is
/// added, old jobs read `None`, and a new job keeps its limit through a
/// claim.
#[test]
fn a_store_from_before_memory_limits_is_migrated_at_open() {
    let dir = ember_testkit::TempDir::new("ember-jobs-migrate");
    let path = dir.path().join("jobs.db");
    {
        let old = rusqlite::Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, \
             queue TEXT NOT NULL, args TEXT NOT NULL, state TEXT NOT NULL, \
             priority INTEGER NOT NULL DEFAULT 0, attempt INTEGER NOT NULL DEFAULT 0, \
             max_attempts INTEGER NOT NULL, timeout_ms INTEGER, unique_key TEXT, \
             run_at INTEGER NOT NULL, inserted_at INTEGER NOT NULL, \
             backoff_base_ms INTEGER NOT NULL, backoff_max_ms INTEGER NOT NULL, \
             token INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_until INTEGER, \
             node TEXT, progress_pct REAL, progress_message TEXT, progress_data TEXT, \
             result TEXT, error TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, \
             completions INTEGER NOT NULL DEFAULT 0, finished_at INTEGER); \
             INSERT INTO jobs (kind, queue, args, state, max_attempts, run_at, inserted_at, \
             backoff_base_ms, backoff_max_ms) VALUES ('old', 'default', 'null', 'queued', 1, \
             0, 0, 1000, 1000);",
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let old = s.get(1).unwrap().expect("the old job");
    assert_eq!((old.kind.as_str(), old.memory_limit), ("old", None));
    let id = s
        .insert(&NewJob {
            memory_limit: Some(1 << 20),
            ..new_job("new")
        })
        .unwrap()
        .id();
    assert_eq!(s.get(id).unwrap().unwrap().memory_limit, Some(1 << 20));
    let t = now_ms();
    let claimed = s
        .claim(
            "default",
            "a@h",
            "a#1",
            &Claimer::always(),
            t,
            t + 1_000,
            10,
        )
        .unwrap();
    let limits: Vec<_> = claimed.iter().map(|c| (c.id, c.memory_limit)).collect();
    assert_eq!(limits, [(1, None), (id, Some(1 << 20))]);
}
