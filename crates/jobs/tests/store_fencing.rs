//! Leases and fencing on the SQLite store: a claim taken back cannot write,
//! a restarted node takes back what its earlier life was running (both
//! scenarios shared with `store_postgres.rs`), group commits answer each
//! write alone, and a dispatcher that loses a lease stops the job's
//! process.

use std::time::Duration;

use ember_jobs::{
    now_ms, Claimer, EnqueueOptions, JobContext, JobState, Jobs, JobsConfig, KindOptions, NewJob,
    SqliteStore, Store, StoreError,
};
use ember_runtime::{receive, send, Pid, Runtime};
use serde_json::json;

mod scenarios;
use scenarios::{fencing_rules, group_commit_answers_each_write_alone, new_job, DEADLINE};

fn remove_db(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn temp_db() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "ember-jobs-fencing-{}-{}.db",
        std::process::id(),
        getrandom::u64().unwrap()
    ))
}

/// The lease and fencing rules (the scenario PostgreSQL runs too), on a
/// store in memory and on a file (whose reads have connections of their
/// own).
#[test]
fn a_claim_taken_back_after_its_lease_cannot_write() {
    fencing_rules(&SqliteStore::in_memory().unwrap());
    let path = temp_db();
    fencing_rules(&SqliteStore::open(&path).unwrap());
    remove_db(&path);
}

/// Writes sent at once share group commits, each answered with its own
/// outcome.
#[test]
fn a_group_commit_answers_each_write_with_its_own_outcome() {
    group_commit_answers_each_write_alone(&SqliteStore::in_memory().unwrap());
    let path = temp_db();
    group_commit_answers_each_write_alone(&SqliteStore::open(&path).unwrap());
    remove_db(&path);
}

/// A dispatcher's turn records each success against its own token and
/// claims in priority order (see the scenario).
#[test]
fn a_turn_records_successes_and_claims() {
    scenarios::complete_and_claim_rules(&SqliteStore::in_memory().unwrap());
    let path = temp_db();
    scenarios::complete_and_claim_rules(&SqliteStore::open(&path).unwrap());
    remove_db(&path);
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
fn a_restarted_node_takes_back_what_its_earlier_life_was_running() {
    let path = temp_db();
    let db = path.clone();
    scenarios::a_restarted_node_takes_back(move || SqliteStore::open(&db).unwrap());
    remove_db(&path);
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
