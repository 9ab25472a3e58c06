//! The PostgreSQL store against a real server (started by the test in a
//! temporary directory): the same lease and fencing rules as SQLite's,
//! claims that never overlap between concurrent claimers, uniqueness, a
//! restarted node taking its jobs back, and `LISTEN/NOTIFY` waking a node
//! that sleeps on an empty queue.

use std::sync::Arc;
use std::time::Duration;

use ember_jobs::{
    now_ms, ClaimRequest, Claimer, Completion, JobContext, JobState, Jobs, JobsConfig, KindOptions,
    NewJob, PgStore, SqliteStore, Store,
};
use ember_runtime::Runtime;
use ember_testkit::postgres::{required, TempPostgres};
use serde_json::json;

mod scenarios;
use scenarios::{fencing_rules, new_job, DEADLINE};

#[test]
fn the_postgres_store_keeps_the_fencing_rules_of_the_sqlite_store() {
    fencing_rules(&SqliteStore::in_memory().unwrap());
    if !required() {
        return;
    }
    let pg = TempPostgres::start();
    fencing_rules(&PgStore::connect(&pg.url()).unwrap());
}

#[test]
fn concurrent_claimers_never_take_the_same_job() {
    if !required() {
        return;
    }
    let pg = TempPostgres::start();
    let store = Arc::new(PgStore::connect_with(&pg.url(), 2).unwrap());
    const N: usize = 300;
    for _ in 0..N {
        store.insert(&new_job("k")).unwrap();
    }
    // Four nodes (each with its own store and connections) claim at once.
    let claimers: Vec<_> = (0..4)
        .map(|i| {
            let url = pg.url();
            std::thread::spawn(move || {
                let s = PgStore::connect_with(&url, 2).unwrap();
                let mut mine = Vec::new();
                loop {
                    let t = now_ms();
                    let got = s
                        .claim(
                            "default",
                            &format!("n{i}"),
                            &format!("n{i}#1"),
                            &Claimer::always(),
                            t,
                            t + 60_000,
                            7,
                        )
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    for c in got {
                        s.succeed(c.id, c.token, &json!(i)).unwrap();
                        mine.push(c.id);
                    }
                }
            })
        })
        .collect();
    let mut all: Vec<i64> = claimers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(all.len(), N, "every job claimed once");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), N, "no job claimed twice");
    let counts = store.counts().unwrap();
    assert_eq!(counts, vec![(JobState::Succeeded, N as u64)]);
}

#[test]
fn a_restarted_node_takes_back_what_its_earlier_life_was_running() {
    if !required() {
        return;
    }
    let pg = TempPostgres::start();
    let url = pg.url();
    scenarios::a_restarted_node_takes_back(move || PgStore::connect(&url).unwrap());
}

#[test]
fn a_node_sleeping_on_an_empty_queue_wakes_when_another_enqueues() {
    if !required() {
        return;
    }
    let pg = TempPostgres::start();
    let url = pg.url();
    Runtime::builder()
        .schedulers(2)
        .build()
        .unwrap()
        .block_on(async move {
            // A node that would not look at the store for an hour by itself.
            let config = JobsConfig {
                node: "sleeper@h".into(),
                poll: Duration::from_secs(3600),
                heartbeat: Duration::from_secs(3600),
                lease: Duration::from_secs(7200),
                ..JobsConfig::default()
            };
            let jobs = Jobs::builder(PgStore::connect(&url).unwrap(), config)
                .kind_fn(
                    "k",
                    KindOptions::default(),
                    |_ctx: JobContext, n: u64| async move { Ok(json!(n + 1)) },
                )
                .start()
                .await
                .unwrap();
            assert!(jobs.dispatcher("elsewhere").is_none());
            // Another node (here: a bare store) enqueues on a new queue.
            let other = PgStore::connect(&url).unwrap();
            let mut job = new_job("k");
            job.queue = "elsewhere".into();
            job.args = json!(41);
            let id = other.insert(&job).unwrap().id();
            let rec = jobs
                .wait_final(id, DEADLINE)
                .await
                .expect("the sleeping node was woken and ran the job");
            assert_eq!(rec.state, JobState::Succeeded);
            assert_eq!(rec.result, Some(json!(42)));
            assert_eq!(rec.node.as_deref(), Some("sleeper@h"));
            // The dispatcher it started sleeps again; a second enqueue wakes it.
            job.args = json!(1);
            let id = other.insert(&job).unwrap().id();
            let rec = jobs.wait_final(id, DEADLINE).await.expect("woken again");
            assert_eq!(rec.result, Some(json!(2)));
        });
}

/// A database at schema version 1 (before memory limits) is migrated at
/// connect: old jobs read `None`, and a new job keeps its limit through a
/// claim.
#[test]
fn a_version_1_database_gains_memory_limits_at_connect() {
    if !required() {
        return;
    }
    let pg = TempPostgres::start();
    {
        let mut old = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
        old.batch_execute(
            "CREATE TABLE ember_jobs (id BIGSERIAL PRIMARY KEY, kind TEXT NOT NULL, \
             queue TEXT NOT NULL, args TEXT NOT NULL, state TEXT NOT NULL, \
             priority BIGINT NOT NULL DEFAULT 0, attempt INTEGER NOT NULL DEFAULT 0, \
             max_attempts INTEGER NOT NULL, timeout_ms BIGINT, unique_key TEXT, \
             run_at BIGINT NOT NULL, inserted_at BIGINT NOT NULL, \
             backoff_base_ms BIGINT NOT NULL, backoff_max_ms BIGINT NOT NULL, \
             token BIGINT NOT NULL DEFAULT 0, lease_owner TEXT, lease_until BIGINT, \
             node TEXT, progress_pct DOUBLE PRECISION, progress_message TEXT, \
             progress_data TEXT, result TEXT, error TEXT, \
             cancel_requested BOOLEAN NOT NULL DEFAULT FALSE, \
             completions INTEGER NOT NULL DEFAULT 0, finished_at BIGINT); \
             CREATE UNIQUE INDEX ember_jobs_unique ON ember_jobs (unique_key) \
             WHERE unique_key IS NOT NULL \
             AND state IN ('scheduled', 'queued', 'running', 'retrying'); \
             CREATE TABLE ember_job_events (seq BIGSERIAL PRIMARY KEY, job_id BIGINT NOT NULL, \
             type TEXT NOT NULL, data TEXT NOT NULL, at BIGINT NOT NULL); \
             CREATE TABLE ember_jobs_schema (version INTEGER NOT NULL); \
             INSERT INTO ember_jobs_schema (version) VALUES (1); \
             INSERT INTO ember_jobs (kind, queue, args, state, max_attempts, run_at, \
             inserted_at, backoff_base_ms, backoff_max_ms) \
             VALUES ('old', 'default', 'null', 'queued', 1, 0, 0, 1000, 1000);",
        )
        .unwrap();
    }
    let s = PgStore::connect(&pg.url()).unwrap();
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
    // A second node connecting finds version 2 and changes nothing.
    drop(PgStore::connect(&pg.url()).unwrap());
}

/// A dispatcher's turn records each success against its own token and
/// claims in priority order, in one transaction of a group commit (see the
/// scenario).
#[test]
fn a_turn_records_successes_and_claims() {
    if !required() {
        return;
    }
    let pg = TempPostgres::start();
    scenarios::complete_and_claim_rules(&PgStore::connect(&pg.url()).unwrap());
}

/// Writes sent at once share group commits, each answered with its own
/// outcome (see the scenario); and a write the server rejects (a NUL in a
/// text column) fails alone, the writes batched with it commit.
#[test]
fn a_group_commit_answers_each_write_with_its_own_outcome() {
    if !required() {
        return;
    }
    let pg = TempPostgres::start();
    let s = PgStore::connect(&pg.url()).unwrap();
    scenarios::group_commit_answers_each_write_alone(&s);
    // A turn (a success and a claim) queued with them is redone alone too.
    s.insert(&NewJob {
        queue: "turn".into(),
        ..new_job("k")
    })
    .unwrap();
    let t = now_ms();
    let running = s
        .claim("turn", "a@h", "a#1", &Claimer::always(), t, t + 60_000, 1)
        .unwrap();
    let next = s
        .insert(&NewJob {
            queue: "turn".into(),
            ..new_job("k")
        })
        .unwrap()
        .id();
    let before = s.insert_async(new_job("k"));
    let bad = s.insert_async(NewJob {
        queue: "bad\0queue".into(),
        ..new_job("k")
    });
    let turn = s.complete_and_claim(
        vec![Completion {
            id: running[0].id,
            token: running[0].token,
            result: json!("done"),
        }],
        ClaimRequest {
            queue: "turn".into(),
            node: "a@h".into(),
            owner: "a#1".into(),
            claimer: Claimer::always(),
            now: now_ms(),
            lease_until: now_ms() + 60_000,
            limit: 5,
        },
    );
    let after = s.insert_async(new_job("k"));
    let (before, bad, turn, after) = Runtime::new()
        .unwrap()
        .block_on(async move { (before.await, bad.await, turn.await, after.await) });
    assert!(bad.is_err(), "the server took a NUL in a queue name");
    for ok in [before, after] {
        let id = ok.expect("a good write failed with a bad one").id();
        assert!(s.get(id).unwrap().is_some());
    }
    assert!(matches!(&turn.completed[..], [Ok(_)]), "{turn:?}");
    let claimed: Vec<_> = turn.claimed.unwrap().iter().map(|c| c.id).collect();
    assert_eq!(claimed, [next]);
    assert_eq!(
        s.get(running[0].id).unwrap().unwrap().state,
        JobState::Succeeded
    );
}
