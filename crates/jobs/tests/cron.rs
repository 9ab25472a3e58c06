//! Recurring (cron) jobs: the store fires each slot of an entry once, however
//! many callers (threads, nodes on one PostgreSQL, a restarted node) fire it
//! at once; the scheduler enqueues one job per slot of an every-second entry,
//! also with two nodes on one PostgreSQL, and is restarted by its supervisor;
//! invalid entries are refused at start. Every wait has a deadline.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ember_jobs::{
    cron_key, now_ms, Backoff, EnqueueOptions, Inserted, JobContext, JobRecord, JobState, Jobs,
    JobsConfig, KindOptions, Millis, NewJob, PgStore, SqliteStore, Store, StoreError,
};
use ember_runtime::{ExitReason, Runtime};
use ember_testkit::postgres::{required, TempPostgres};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

fn job(entry: &str, slot: Millis) -> NewJob {
    NewJob {
        kind: "k".into(),
        queue: "default".into(),
        args: json!(null),
        priority: 0,
        max_attempts: 3,
        timeout_ms: None,
        memory_limit: None,
        unique_key: Some(cron_key(entry, slot)),
        run_at: slot,
        backoff: Backoff::default(),
    }
}

/// `n` threads fire `slot` of `entry` at once, each through the store
/// `store(i)` gives it; returns what each got.
fn fire_together(
    n: usize,
    store: impl Fn(usize) -> Arc<dyn Store>,
    entry: &str,
    slot: Millis,
) -> Vec<Option<Inserted>> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (s, barrier, entry) = (store(i), barrier.clone(), entry.to_owned());
            std::thread::spawn(move || {
                let j = job(&entry, slot);
                barrier.wait();
                s.fire_cron(&entry, "* * * * *", slot, &j).unwrap()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn jobs_of(s: &dyn Store, entry: &str) -> Vec<JobRecord> {
    let prefix = format!("cron:{entry}:");
    s.list(None, 10_000, None, false)
        .unwrap()
        .into_iter()
        .filter(|j| {
            j.unique_key
                .as_deref()
                .is_some_and(|k| k.starts_with(&prefix))
        })
        .collect()
}

/// The store's rules of a cron slot, on stores `store(i)` that share one
/// database: one job per slot, a newer slot makes another, an older one
/// nothing.
fn each_slot_fires_once(store: impl Fn(usize) -> Arc<dyn Store>) {
    let s0 = store(0);
    let t = (now_ms() / 60_000) * 60_000;
    let got = fire_together(4, &store, "e", t);
    let new: Vec<_> = got.iter().flatten().collect();
    assert_eq!(new.len(), 1, "one firing of the slot wins: {got:?}");
    assert!(matches!(new[0], Inserted::New(..)));
    let first = new[0].id();
    let rec = s0.get(first).unwrap().unwrap();
    assert_eq!(rec.unique_key, Some(cron_key("e", t)));
    assert_eq!(rec.run_at, t);
    // The next slot: one more job.
    let got = fire_together(4, &store, "e", t + 60_000);
    let new: Vec<_> = got.iter().flatten().collect();
    assert_eq!(new.len(), 1, "one firing of the next slot wins: {got:?}");
    let second = new[0].id();
    assert_ne!(first, second);
    // Neither slot again, nor one before them.
    for slot in [t - 60_000, t, t + 60_000] {
        assert_eq!(
            s0.fire_cron("e", "* * * * *", slot, &job("e", slot))
                .unwrap(),
            None
        );
    }
    let jobs = jobs_of(&*s0, "e");
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    // Another entry has slots of its own.
    assert!(s0
        .fire_cron("other", "@hourly", t, &job("other", t))
        .unwrap()
        .is_some());
    let recs = s0.cron_entries().unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].name, "e");
    assert_eq!(recs[0].last_slot, t + 60_000);
    assert_eq!(recs[0].last_job, Some(second));
    assert_eq!(recs[1].name, "other");
    assert_eq!(recs[1].expression, "@hourly");
}

#[test]
fn the_sqlite_store_fires_each_slot_once() {
    let s: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    each_slot_fires_once(|_| s.clone());
}

#[test]
fn a_reopened_sqlite_store_does_not_fire_a_slot_again() {
    let dir = std::env::temp_dir().join(format!(
        "ember-jobs-cron-{}-{}",
        std::process::id(),
        getrandom::u64().unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jobs.db");
    let t = 1_800_000_000_000;
    {
        let s = SqliteStore::open(&path).unwrap();
        assert!(s
            .fire_cron("e", "@daily", t, &job("e", t))
            .unwrap()
            .is_some());
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.fire_cron("e", "@daily", t, &job("e", t)).unwrap(), None);
    assert_eq!(s.cron_entries().unwrap()[0].last_slot, t);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_postgres_store_fires_each_slot_once_across_nodes() {
    if !required() {
        return;
    }
    let pg = TempPostgres::start();
    // Four nodes, each with a store (and connections) of its own.
    let stores: Vec<Arc<dyn Store>> = (0..4)
        .map(|_| Arc::new(PgStore::connect_with(&pg.url(), 1).unwrap()) as Arc<dyn Store>)
        .collect();
    each_slot_fires_once(|i| stores[i].clone());
    // A node connecting afresh (a restart) finds the slots taken.
    let s = PgStore::connect(&pg.url()).unwrap();
    let last = s.cron_entries().unwrap()[0].last_slot;
    assert_eq!(s.fire_cron("e", "x", last, &job("e", last)).unwrap(), None);
}

/// Waits (from a process) until `done` holds of the system, re-checking on
/// every event of any job; panics at the deadline.
async fn wait_for(jobs: &Jobs, what: &str, mut done: impl FnMut(&Jobs) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    let mut rx = jobs.subscribe();
    loop {
        if done(jobs) {
            return;
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("timed out waiting for {what}"));
        let _ = ember_jobs::timeout(left, rx.recv()).await;
    }
}

fn tick_jobs(jobs: &Jobs) -> Vec<JobRecord> {
    jobs_of(&**jobs.store(), "tick")
}

fn every_second(store: impl Store, node: &str) -> ember_jobs::JobsBuilder {
    let config = JobsConfig {
        node: node.into(),
        ..JobsConfig::default()
    };
    Jobs::builder(store, config)
        .kind_fn(
            "k",
            KindOptions::default(),
            |ctx: JobContext, n: u64| async move { Ok(json!({"n": n, "job": ctx.id()})) },
        )
        .cron(
            "tick",
            "* * * * * *",
            "k",
            json!(7),
            EnqueueOptions::default(),
        )
}

/// Slots of `jobs`' tick jobs, each checked to be a whole second and to
/// have one job only.
fn slots(jobs: &[JobRecord]) -> Vec<Millis> {
    let mut by_slot: HashMap<Millis, usize> = HashMap::new();
    for j in jobs {
        let key = j.unique_key.as_deref().unwrap();
        let slot: Millis = key.rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(slot % 1000, 0, "{key}");
        assert_eq!(j.run_at, slot);
        *by_slot.entry(slot).or_default() += 1;
    }
    for (slot, n) in &by_slot {
        assert_eq!(*n, 1, "slot {slot} made {n} jobs");
    }
    let mut s: Vec<_> = by_slot.into_keys().collect();
    s.sort();
    s
}

#[test]
fn an_every_second_entry_makes_one_job_per_slot_and_survives_its_scheduler() {
    Runtime::builder()
        .schedulers(2)
        .build()
        .unwrap()
        .block_on(async move {
            let started = now_ms();
            let jobs = every_second(SqliteStore::in_memory().unwrap(), "n@h")
                .start()
                .await
                .unwrap();
            let succeeded = |jobs: &Jobs| {
                tick_jobs(jobs)
                    .iter()
                    .filter(|j| j.state == JobState::Succeeded)
                    .count()
            };
            wait_for(&jobs, "two ticks", |j| succeeded(j) >= 2).await;
            let ticks = tick_jobs(&jobs);
            let s = slots(&ticks);
            // No slot from before the start (missed slots are skipped).
            assert!(s[0] > started, "{s:?} vs start {started}");
            let done = ticks
                .iter()
                .find(|j| j.state == JobState::Succeeded)
                .unwrap();
            assert_eq!(done.result.as_ref().unwrap()["n"], json!(7));
            let info = jobs.cron_entries().unwrap();
            assert_eq!(info.len(), 1);
            assert_eq!(info[0].name, "tick");
            assert_eq!(info[0].expression, "* * * * * *");
            assert_eq!(info[0].kind, "k");
            let last = info[0].last_slot.expect("fired");
            assert!(info[0].next_run.unwrap() > last);
            assert!(info[0].last_job.is_some());

            // Its supervisor restarts a killed scheduler, which goes on.
            let old = jobs.cron_scheduler().expect("the scheduler runs");
            ember_runtime::exit(old, ExitReason::Kill);
            wait_for(&jobs, "a new scheduler", |j| {
                j.cron_scheduler().is_some_and(|p| p != old)
            })
            .await;
            let before = s.len();
            wait_for(&jobs, "a tick of the new scheduler", |j| {
                slots(&tick_jobs(j)).len() >= before + 2
            })
            .await;
        });
}

#[test]
fn invalid_entries_are_refused_at_start() {
    Runtime::builder()
        .schedulers(1)
        .build()
        .unwrap()
        .block_on(async move {
            let cases = [
                ("bad", "*/5 * * *", "k", json!(1), "invalid cron expression"),
                (
                    "bad",
                    "61 * * * *",
                    "k",
                    json!(1),
                    "invalid cron expression",
                ),
                ("bad", "0 0 30 2 *", "k", json!(1), "never fires"),
                ("bad", "* * * * *", "nope", json!(1), "unknown job kind"),
                ("bad", "* * * * *", "k", json!("x"), "bad args"),
                ("", "* * * * *", "k", json!(1), "name"),
            ];
            for (name, expr, kind, args, why) in cases {
                let err = Jobs::builder(SqliteStore::in_memory().unwrap(), JobsConfig::default())
                    .kind_fn(
                        "k",
                        KindOptions::default(),
                        |_c: JobContext, n: u64| async move { Ok(json!(n)) },
                    )
                    .cron(name, expr, kind, args, EnqueueOptions::default())
                    .start()
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("{expr:?} {kind:?} was accepted"));
                assert!(
                    matches!(&err, StoreError::Invalid(m) if m.contains(why)),
                    "{err}"
                );
            }
            // A queue no enqueue would take.
            let err = every_second(SqliteStore::in_memory().unwrap(), "n@h")
                .cron(
                    "q",
                    "@hourly",
                    "k",
                    json!(1),
                    EnqueueOptions {
                        queue: Some(String::new()),
                        ..EnqueueOptions::default()
                    },
                )
                .start()
                .await
                .expect_err("an empty queue");
            assert!(err.to_string().contains("queue"), "{err}");
            // The same name twice.
            let err = every_second(SqliteStore::in_memory().unwrap(), "n@h")
                .cron("tick", "@hourly", "k", json!(1), EnqueueOptions::default())
                .start()
                .await
                .expect_err("a name registered twice");
            assert!(err.to_string().contains("twice"), "{err}");
        });
}

#[test]
fn two_nodes_on_one_postgres_make_one_job_per_slot() {
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
            let a = every_second(PgStore::connect(&url).unwrap(), "a@h")
                .start()
                .await
                .unwrap();
            let b = every_second(PgStore::connect(&url).unwrap(), "b@h")
                .start()
                .await
                .unwrap();
            // Both schedulers fire every slot; `slots` checks each made one job.
            wait_for(&a, "four slots", |j| slots(&tick_jobs(j)).len() >= 4).await;
            let s = slots(&tick_jobs(&b));
            assert!(s.len() >= 4, "{s:?}");
            let info_b = b.cron_entries().unwrap();
            assert!(info_b[0].last_slot.is_some());
        });
}
