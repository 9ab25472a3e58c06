//! The cluster store: PostgreSQL, shared by every node that runs the same
//! queues.
//!
//! * Claims select due jobs `FOR UPDATE SKIP LOCKED` and move them to
//!   `running` in the same statement, so two nodes claiming at once never
//!   take the same job and never wait on each other.
//! * Every write of an attempt locks the job's row and checks its fencing
//!   token, as the SQLite store does: a node cut off from the store that
//!   comes back late is refused ([`StoreError::Fenced`]).
//! * An enqueue (and anything else that makes a job due at once) sends
//!   `NOTIFY ember_jobs, '<queue>'` in its transaction; every store listens
//!   on a connection of its own and hands the queue name to the wake-up set
//!   with [`Store::on_wake`], so a node sleeping on an empty queue starts
//!   work as soon as another node enqueues.
//! * The schema is created (or migrated) at [`PgStore::connect`], under an
//!   advisory lock so that nodes starting together do not race.
//!
//! The `postgres` crate is synchronous, like the [`Store`] trait, but runs a
//! tokio runtime of its own inside each call, which cannot start on an
//! Ember scheduler thread (those have entered the runtime's tokio context).
//! So the connections live on threads of their own: a call hands its work
//! to one of them and waits for the answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Transaction};
use serde_json::{json, Value};

use crate::cron::CronRecord;
use crate::store::{
    now_ms, Backoff, CancelOutcome, Claimed, Claimer, Event, Inserted, JobId, JobRecord, JobState,
    Millis, NewJob, Progress, Retry, Store, StoreError, Wake,
};

/// The channel of the wake-up notifications; the payload is a queue name.
const CHANNEL: &str = "ember_jobs";

/// The schema's version, recorded in `ember_jobs_schema`.
const SCHEMA_VERSION: i32 = 2;

/// An arbitrary constant: the advisory lock held while the schema is set up.
const MIGRATION_LOCK: i64 = 0x656d_6265_726a_6f62;

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS ember_jobs (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    queue TEXT NOT NULL,
    args TEXT NOT NULL,
    state TEXT NOT NULL,
    priority BIGINT NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout_ms BIGINT,
    unique_key TEXT,
    run_at BIGINT NOT NULL,
    inserted_at BIGINT NOT NULL,
    backoff_base_ms BIGINT NOT NULL,
    backoff_max_ms BIGINT NOT NULL,
    token BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT,
    node TEXT,
    progress_pct DOUBLE PRECISION,
    progress_message TEXT,
    progress_data TEXT,
    result TEXT,
    error TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    completions INTEGER NOT NULL DEFAULT 0,
    finished_at BIGINT
);
CREATE INDEX IF NOT EXISTS ember_jobs_ready ON ember_jobs (queue, state, priority, run_at, id);
CREATE INDEX IF NOT EXISTS ember_jobs_state ON ember_jobs (state, id);
CREATE INDEX IF NOT EXISTS ember_jobs_lease ON ember_jobs (lease_until) WHERE state = 'running';
CREATE UNIQUE INDEX IF NOT EXISTS ember_jobs_unique ON ember_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'queued', 'running', 'retrying');
CREATE TABLE IF NOT EXISTS ember_job_events (
    seq BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ember_job_events_job ON ember_job_events (job_id, seq);
";

/// Version 2: each job may carry its processes' memory limit.
const SCHEMA_V2: &str = "ALTER TABLE ember_jobs ADD COLUMN IF NOT EXISTS memory_limit BIGINT;";

/// The cron entries' last slots (see [`Store::fire_cron`]).
const SCHEMA_CRON: &str = "
CREATE TABLE IF NOT EXISTS ember_jobs_cron (
    name TEXT PRIMARY KEY,
    expression TEXT NOT NULL,
    last_slot BIGINT NOT NULL,
    last_job BIGINT
);
";

const COLUMNS: &str = "id, kind, queue, args, state, priority, attempt, max_attempts, timeout_ms, \
    unique_key, run_at, progress_pct, progress_message, progress_data, result, error, node, \
    completions, cancel_requested, memory_limit";

/// How many connections serve a store's calls.
const DEFAULT_CONNECTIONS: usize = 4;

type Work = Box<dyn FnOnce(&mut Client) + Send>;

/// What the store's threads share with it.
struct Shared {
    url: String,
    stop: AtomicBool,
    wake: Mutex<Option<Wake>>,
}

/// The PostgreSQL store (see [`PgStore::connect`]).
pub struct PgStore {
    shared: Arc<Shared>,
    work: Mutex<Option<mpsc::Sender<Work>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) => StoreError::Backend(format!("postgres: {}", db.message())),
            None => backend(e),
        }
    }
}

fn connect(url: &str) -> Result<Client, StoreError> {
    Client::connect(url, NoTls).map_err(|e| StoreError::Backend(format!("postgres: {e}")))
}

/// Creates or upgrades the schema, under an advisory lock.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS ember_jobs_schema (version INTEGER NOT NULL)")?;
    let version: Option<i32> = tx
        .query_opt("SELECT MAX(version) FROM ember_jobs_schema", &[])?
        .and_then(|r| r.get(0));
    match version {
        None | Some(1) => {
            if version.is_none() {
                tx.batch_execute(SCHEMA_V1)?;
            }
            tx.batch_execute(SCHEMA_V2)?;
            tx.execute(
                "INSERT INTO ember_jobs_schema (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )?;
        }
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::Backend(format!(
                "the database's jobs schema is version {v}, newer than this node's \
                 {SCHEMA_VERSION}: upgrade this node"
            )))
        }
        Some(v) => {
            return Err(StoreError::Backend(format!(
                "unknown jobs schema version {v}"
            )))
        }
    }
    // Recurring jobs' table: new tables need no version (nodes that do
    // not know one leave it alone), so it is created by every node.
    tx.batch_execute(SCHEMA_CRON)?;
    tx.commit()?;
    Ok(())
}

/// Serves calls on one connection until the store is dropped; reconnects
/// when the connection breaks (the call that saw it fails).
fn serve(shared: Arc<Shared>, mut client: Client, work: Arc<Mutex<mpsc::Receiver<Work>>>) {
    loop {
        let next = work.lock().recv();
        let Ok(job) = next else {
            return;
        };
        if client.is_closed() {
            match connect(&shared.url) {
                Ok(c) => client = c,
                Err(e) => tracing::error!("ember-jobs: cannot reconnect to postgres: {e}"),
            }
        }
        job(&mut client);
    }
}

/// Listens for wake-ups until the store is dropped, reconnecting when the
/// connection breaks. After each (re)connection it wakes every queue with
/// pending jobs, for what it may have missed.
fn listen(shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Acquire) {
        let mut client = match connect(&shared.url) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("ember-jobs: wake-up listener: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let pending = client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .and_then(|()| {
                client.query(
                    "SELECT DISTINCT queue FROM ember_jobs WHERE state IN \
                     ('queued', 'scheduled', 'retrying')",
                    &[],
                )
            });
        match pending {
            Ok(rows) => {
                for r in rows {
                    if let Ok(q) = r.try_get::<_, String>(0) {
                        wake(&shared, &q);
                    }
                }
            }
            Err(e) => {
                tracing::warn!("ember-jobs: wake-up listener: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        }
        while !shared.stop.load(Ordering::Acquire) {
            let broken = {
                let mut notes = client.notifications();
                let mut it = notes.timeout_iter(Duration::from_millis(250));
                loop {
                    match it.next() {
                        Ok(Some(n)) => wake(&shared, n.payload()),
                        Ok(None) => break false,
                        Err(e) => {
                            tracing::warn!("ember-jobs: wake-up listener: {e}");
                            break true;
                        }
                    }
                }
            };
            if broken || client.is_closed() {
                break;
            }
        }
    }
}

fn wake(shared: &Shared, queue: &str) {
    let w = shared.wake.lock().clone();
    if let Some(w) = w {
        w(queue);
    }
}

fn text(row: &Row, i: usize) -> Result<String, StoreError> {
    row.try_get(i).map_err(backend)
}

fn parse_json(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn record(row: &Row, now: Millis) -> Result<JobRecord, StoreError> {
    let g = |e: postgres::Error| backend(e);
    let state: String = text(row, 4)?;
    let mut state: JobState = state.parse().unwrap_or(JobState::Failed);
    let run_at: i64 = row.try_get(10).map_err(g)?;
    if state == JobState::Scheduled && run_at <= now {
        state = JobState::Queued;
    }
    Ok(JobRecord {
        id: row.try_get(0).map_err(g)?,
        kind: text(row, 1)?,
        queue: text(row, 2)?,
        args: parse_json(row.try_get(3).map_err(g)?).unwrap_or(Value::Null),
        state,
        priority: row.try_get(5).map_err(g)?,
        attempt: row.try_get::<_, i32>(6).map_err(g)?.max(0) as u32,
        max_attempts: row.try_get::<_, i32>(7).map_err(g)?.max(0) as u32,
        timeout_ms: row
            .try_get::<_, Option<i64>>(8)
            .map_err(g)?
            .map(|t| t.max(0) as u64),
        unique_key: row.try_get(9).map_err(g)?,
        run_at,
        progress_pct: row.try_get(11).map_err(g)?,
        progress_message: row.try_get(12).map_err(g)?,
        progress_data: parse_json(row.try_get(13).map_err(g)?),
        result: parse_json(row.try_get(14).map_err(g)?),
        error: row.try_get(15).map_err(g)?,
        node: row.try_get(16).map_err(g)?,
        completions: row.try_get::<_, i32>(17).map_err(g)?.max(0) as u32,
        cancel_requested: row.try_get(18).map_err(g)?,
        memory_limit: row
            .try_get::<_, Option<i64>>(19)
            .map_err(g)?
            .map(|m| m.max(0) as u64),
    })
}

/// Appends an event in `tx` (whose job row it has locked or created, so a
/// job's events commit in `seq` order).
fn event(
    tx: &mut Transaction<'_>,
    job: JobId,
    kind: &str,
    data: Value,
) -> Result<Event, StoreError> {
    let row = tx.query_one(
        "INSERT INTO ember_job_events (job_id, type, data, at) VALUES ($1, $2, $3, $4) \
         RETURNING seq",
        &[&job, &kind, &data.to_string(), &now_ms()],
    )?;
    Ok(Event {
        seq: row.try_get(0).map_err(backend)?,
        job,
        kind: kind.to_owned(),
        data,
    })
}

fn state_event(
    tx: &mut Transaction<'_>,
    job: JobId,
    state: JobState,
    attempt: u32,
    error: Option<&str>,
) -> Result<Event, StoreError> {
    let mut data = json!({ "state": state.as_str(), "attempt": attempt });
    if let Some(e) = error {
        data["error"] = Value::from(e);
    }
    event(tx, job, "state", data)
}

fn notify(tx: &mut Transaction<'_>, queue: &str) -> Result<(), StoreError> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &queue])?;
    Ok(())
}

/// Locks job `id` and checks that it is running under `token`; its attempt
/// if so.
fn fenced(tx: &mut Transaction<'_>, id: JobId, token: i64) -> Result<u32, StoreError> {
    let row = tx.query_opt(
        "SELECT state, token, attempt FROM ember_jobs WHERE id = $1 FOR UPDATE",
        &[&id],
    )?;
    let Some(row) = row else {
        return Err(StoreError::NotFound);
    };
    let state = text(&row, 0)?;
    let t: i64 = row.try_get(1).map_err(backend)?;
    let attempt: i32 = row.try_get(2).map_err(backend)?;
    if state == "running" && t == token {
        Ok(attempt.max(0) as u32)
    } else {
        Err(StoreError::Fenced)
    }
}

/// Takes back the running jobs matching `filter` (parameters from `$3`):
/// retried at once if attempts are left, cancelled if a cancel was asked,
/// failed otherwise; their tokens move on. Jobs whose rows another
/// transaction holds (their owner is writing them) are left for later.
/// Takes the transaction-scoped lock of `owner`'s dispatching of `queue`,
/// which orders its claims with its releases (see [`Claimer`]).
fn lock_dispatch(tx: &mut Transaction<'_>, owner: &str, queue: &str) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))",
        &[&owner, &queue],
    )?;
    Ok(())
}

fn take_back(
    tx: &mut Transaction<'_>,
    filter: &str,
    args: &[&(dyn ToSql + Sync)],
    now: Millis,
    error: &str,
) -> Result<Vec<Event>, StoreError> {
    let sql = format!(
        "UPDATE ember_jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' \
           WHEN attempt < max_attempts THEN 'retrying' ELSE 'failed' END, \
         error = $1, run_at = $2, token = token + 1, lease_owner = NULL, lease_until = NULL, \
         finished_at = CASE WHEN cancel_requested OR attempt >= max_attempts THEN $2 END \
         WHERE id IN (SELECT id FROM ember_jobs WHERE state = 'running' AND ({filter}) \
           FOR UPDATE SKIP LOCKED) \
         RETURNING id, state, attempt, queue"
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&error, &now];
    params.extend_from_slice(args);
    let rows = tx.query(&sql, &params)?;
    let mut events = Vec::with_capacity(rows.len());
    let mut queues = Vec::new();
    for r in rows {
        let id: JobId = r.try_get(0).map_err(backend)?;
        let state: JobState = text(&r, 1)?.parse().map_err(backend)?;
        let attempt: i32 = r.try_get(2).map_err(backend)?;
        let queue = text(&r, 3)?;
        events.push(state_event(
            tx,
            id,
            state,
            attempt.max(0) as u32,
            Some(error),
        )?);
        if state == JobState::Retrying && !queues.contains(&queue) {
            queues.push(queue);
        }
    }
    for q in queues {
        notify(tx, &q)?;
    }
    Ok(events)
}

fn clamp(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string; TLS is not supported), creates or
    /// upgrades the schema, and starts the connections and the wake-up
    /// listener.
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        PgStore::connect_with(url, DEFAULT_CONNECTIONS)
    }

    /// [`PgStore::connect`] with `connections` connections (at least 1)
    /// serving calls, besides the listener's.
    pub fn connect_with(url: &str, connections: usize) -> Result<PgStore, StoreError> {
        let mut first = connect(url)?;
        migrate(&mut first)?;
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            stop: AtomicBool::new(false),
            wake: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel::<Work>();
        let rx = Arc::new(Mutex::new(rx));
        let mut clients = vec![first];
        for _ in 1..connections.max(1) {
            clients.push(connect(url)?);
        }
        for (i, client) in clients.into_iter().enumerate() {
            let (shared, rx) = (shared.clone(), rx.clone());
            std::thread::Builder::new()
                .name(format!("ember-jobs-pg-{i}"))
                .spawn(move || serve(shared, client, rx))
                .map_err(backend)?;
        }
        let listener = shared.clone();
        std::thread::Builder::new()
            .name("ember-jobs-pg-listen".into())
            .spawn(move || listen(listener))
            .map_err(backend)?;
        Ok(PgStore {
            shared,
            work: Mutex::new(Some(tx)),
        })
    }

    /// Runs `f` on one of the store's connections and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let work: Work = Box::new(move |client| {
            let _ = reply.send(f(client));
        });
        let sent = match &*self.work.lock() {
            Some(tx) => tx.send(work).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StoreError::Backend("the store is closed".into()));
        }
        answer
            .recv()
            .unwrap_or_else(|_| Err(StoreError::Backend("the store's connection died".into())))
    }

    /// Runs `f` in one transaction.
    fn tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.call(move |client| {
            let mut tx = client.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // The serving threads end when the channel closes.
        self.work.lock().take();
        self.shared.wake.lock().take();
    }
}

/// Inserts `job` in `tx` (see [`Store::insert`]).
fn insert_in(tx: &mut Transaction<'_>, job: &NewJob) -> Result<Inserted, StoreError> {
    let now = now_ms();
    let state = if job.run_at > now {
        JobState::Scheduled
    } else {
        JobState::Queued
    };
    let args = job.args.to_string();
    let max_attempts = job.max_attempts.clamp(1, i32::MAX as u32) as i32;
    let timeout_ms = job.timeout_ms.map(clamp);
    let memory_limit = job.memory_limit.map(clamp);
    let (base, max) = (clamp(job.backoff.base_ms), clamp(job.backoff.max_ms));
    for _ in 0..3 {
        let row = tx.query_opt(
            &format!(
                "INSERT INTO ember_jobs (kind, queue, args, state, priority, max_attempts, \
                 timeout_ms, unique_key, run_at, inserted_at, backoff_base_ms, \
                 backoff_max_ms, memory_limit) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN {PENDING} \
                 DO NOTHING RETURNING id"
            ),
            &[
                &job.kind,
                &job.queue,
                &args,
                &state.as_str(),
                &job.priority,
                &max_attempts,
                &timeout_ms,
                &job.unique_key,
                &job.run_at,
                &now,
                &base,
                &max,
                &memory_limit,
            ],
        )?;
        let Some(row) = row else {
            // A pending job has the key (committed: the conflict waited
            // for it), unless it finished meanwhile: then try again.
            let existing = tx.query_opt(
                &format!("SELECT id FROM ember_jobs WHERE unique_key = $1 AND state IN {PENDING}"),
                &[&job.unique_key],
            )?;
            match existing {
                Some(r) => return Ok(Inserted::Existing(r.try_get(0).map_err(backend)?)),
                None => continue,
            }
        };
        let id: JobId = row.try_get(0).map_err(backend)?;
        let ev = state_event(tx, id, state, 0, None)?;
        notify(tx, &job.queue)?;
        return Ok(Inserted::New(id, ev));
    }
    Err(StoreError::Backend(
        "the pending job with the same unique key keeps changing: enqueue again".into(),
    ))
}

/// Fires a cron slot in `tx` (see [`Store::fire_cron`]). The upsert takes
/// the entry's row lock; a second firing of the same slot waits for the
/// first to commit, then finds the slot no longer newer and writes nothing.
fn fire_cron_in(
    tx: &mut Transaction<'_>,
    entry: &str,
    expression: &str,
    slot: Millis,
    job: &NewJob,
) -> Result<Option<Inserted>, StoreError> {
    let advanced = tx.execute(
        "INSERT INTO ember_jobs_cron (name, expression, last_slot) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET expression = excluded.expression, \
         last_slot = excluded.last_slot, last_job = NULL \
         WHERE excluded.last_slot > ember_jobs_cron.last_slot",
        &[&entry, &expression, &slot],
    )?;
    if advanced == 0 {
        return Ok(None);
    }
    let inserted = insert_in(tx, job)?;
    tx.execute(
        "UPDATE ember_jobs_cron SET last_job = $2 WHERE name = $1",
        &[&entry, &inserted.id()],
    )?;
    Ok(Some(inserted))
}

const PENDING: &str = "('scheduled', 'queued', 'running', 'retrying')";

impl Store for PgStore {
    fn insert(&self, job: &NewJob) -> Result<Inserted, StoreError> {
        let job = job.clone();
        self.tx(move |tx| insert_in(tx, &job))
    }

    fn claim(
        &self,
        queue: &str,
        node: &str,
        owner: &str,
        claimer: &Claimer,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (queue, node, owner) = (queue.to_owned(), node.to_owned(), owner.to_owned());
        let claimer = claimer.clone();
        let limit = limit.min(i64::MAX as usize) as i64;
        self.tx(move |tx| {
            // Ordered with `release` of the same owner and queue by their
            // lock: a release that ran first sees the claimer dead, one
            // that waits for this transaction sees its claims.
            lock_dispatch(tx, &owner, &queue)?;
            if !claimer.is_alive() {
                return Ok(Vec::new());
            }
            let rows = tx.query(
                "WITH picked AS (SELECT id FROM ember_jobs WHERE queue = $1 \
                   AND state IN ('queued', 'scheduled', 'retrying') AND run_at <= $2 \
                   ORDER BY priority, run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 UPDATE ember_jobs j SET state = 'running', attempt = j.attempt + 1, \
                   token = j.token + 1, lease_owner = $4, lease_until = $5, node = $6 \
                 FROM picked WHERE j.id = picked.id \
                 RETURNING j.id, j.kind, j.args, j.attempt, j.max_attempts, j.token, \
                   j.timeout_ms, j.backoff_base_ms, j.backoff_max_ms, j.priority, j.run_at, \
                   j.memory_limit",
                &[&queue, &now, &limit, &owner, &lease_until, &node],
            )?;
            let mut picked = Vec::with_capacity(rows.len());
            for r in rows {
                let g = |e: postgres::Error| backend(e);
                let args: String = r.try_get(2).map_err(g)?;
                picked.push((
                    (
                        r.try_get::<_, i64>(9).map_err(g)?,
                        r.try_get::<_, i64>(10).map_err(g)?,
                    ),
                    r.try_get::<_, JobId>(0).map_err(g)?,
                    r.try_get::<_, String>(1).map_err(g)?,
                    serde_json::from_str(&args).unwrap_or(Value::Null),
                    r.try_get::<_, i32>(3).map_err(g)?.max(0) as u32,
                    r.try_get::<_, i32>(4).map_err(g)?.max(0) as u32,
                    r.try_get::<_, i64>(5).map_err(g)?,
                    r.try_get::<_, Option<i64>>(6).map_err(g)?,
                    Backoff {
                        base_ms: r.try_get::<_, i64>(7).map_err(g)?.max(0) as u64,
                        max_ms: r.try_get::<_, i64>(8).map_err(g)?.max(0) as u64,
                    },
                    r.try_get::<_, Option<i64>>(11).map_err(g)?,
                ));
            }
            picked.sort_by_key(|p| (p.0, p.1));
            let mut claimed = Vec::with_capacity(picked.len());
            for (
                _,
                id,
                kind,
                args,
                attempt,
                max_attempts,
                token,
                timeout_ms,
                backoff,
                memory_limit,
            ) in picked
            {
                let ev = state_event(tx, id, JobState::Running, attempt, None)?;
                claimed.push(Claimed {
                    id,
                    kind,
                    args,
                    attempt,
                    max_attempts,
                    token,
                    timeout_ms: timeout_ms.map(|t| t.max(0) as u64),
                    memory_limit: memory_limit.map(|m| m.max(0) as u64),
                    backoff,
                    event: ev,
                });
            }
            Ok(claimed)
        })
    }

    fn heartbeat(
        &self,
        owner: &str,
        leases: &[(JobId, i64)],
        lease_until: Millis,
    ) -> Result<Vec<(JobId, bool, bool)>, StoreError> {
        let owner = owner.to_owned();
        let leases = leases.to_vec();
        self.tx(move |tx| {
            let stmt = tx.prepare(
                "UPDATE ember_jobs SET lease_until = $4 WHERE id = $1 AND token = $2 \
                 AND lease_owner = $3 AND state = 'running' RETURNING cancel_requested",
            )?;
            let mut out = Vec::with_capacity(leases.len());
            for (id, token) in leases {
                let row = tx.query_opt(&stmt, &[&id, &token, &owner, &lease_until])?;
                let cancel = match row {
                    Some(r) => Some(r.try_get::<_, bool>(0).map_err(backend)?),
                    None => None,
                };
                out.push((id, cancel.is_some(), cancel.unwrap_or(false)));
            }
            Ok(out)
        })
    }

    fn progress(&self, id: JobId, token: i64, progress: &Progress) -> Result<Event, StoreError> {
        let progress = progress.clone();
        self.tx(move |tx| {
            fenced(tx, id, token)?;
            let data = progress.data.as_ref().map(Value::to_string);
            tx.execute(
                "UPDATE ember_jobs SET progress_pct = $2, progress_message = $3, \
                 progress_data = $4 WHERE id = $1",
                &[&id, &progress.pct, &progress.message, &data],
            )?;
            let value = serde_json::to_value(&progress).map_err(backend)?;
            event(tx, id, "progress", value)
        })
    }

    fn succeed(&self, id: JobId, token: i64, result: &Value) -> Result<Event, StoreError> {
        let result = result.to_string();
        self.tx(move |tx| {
            let attempt = fenced(tx, id, token)?;
            tx.execute(
                "UPDATE ember_jobs SET state = 'succeeded', result = $2, error = NULL, \
                 lease_owner = NULL, lease_until = NULL, completions = completions + 1, \
                 finished_at = $3 WHERE id = $1",
                &[&id, &result, &now_ms()],
            )?;
            state_event(tx, id, JobState::Succeeded, attempt, None)
        })
    }

    fn fail(&self, id: JobId, token: i64, error: &str, retry: Retry) -> Result<Event, StoreError> {
        let error = error.to_owned();
        self.tx(move |tx| {
            let attempt = fenced(tx, id, token)?;
            let state = match retry {
                Retry::At(at) => {
                    tx.execute(
                        "UPDATE ember_jobs SET state = 'retrying', error = $2, run_at = $3, \
                         lease_owner = NULL, lease_until = NULL WHERE id = $1",
                        &[&id, &error, &at],
                    )?;
                    JobState::Retrying
                }
                Retry::Never => {
                    tx.execute(
                        "UPDATE ember_jobs SET state = 'failed', error = $2, lease_owner = NULL, \
                         lease_until = NULL, finished_at = $3 WHERE id = $1",
                        &[&id, &error, &now_ms()],
                    )?;
                    JobState::Failed
                }
            };
            state_event(tx, id, state, attempt, Some(&error))
        })
    }

    fn finish_cancelled(&self, id: JobId, token: i64) -> Result<Event, StoreError> {
        self.tx(move |tx| {
            let attempt = fenced(tx, id, token)?;
            tx.execute(
                "UPDATE ember_jobs SET state = 'cancelled', error = 'cancelled', \
                 lease_owner = NULL, lease_until = NULL, finished_at = $2 WHERE id = $1",
                &[&id, &now_ms()],
            )?;
            state_event(tx, id, JobState::Cancelled, attempt, Some("cancelled"))
        })
    }

    fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreError> {
        self.tx(move |tx| {
            let row = tx.query_opt(
                "SELECT state, attempt, node, queue FROM ember_jobs WHERE id = $1 FOR UPDATE",
                &[&id],
            )?;
            let Some(row) = row else {
                return Ok(CancelOutcome::NotFound);
            };
            let state: JobState = text(&row, 0)?.parse().map_err(backend)?;
            let attempt = row.try_get::<_, i32>(1).map_err(backend)?.max(0) as u32;
            let node: Option<String> = row.try_get(2).map_err(backend)?;
            let queue = text(&row, 3)?;
            match state {
                s if s.is_final() => Ok(CancelOutcome::Final(s)),
                JobState::Running => {
                    tx.execute(
                        "UPDATE ember_jobs SET cancel_requested = TRUE WHERE id = $1",
                        &[&id],
                    )?;
                    Ok(CancelOutcome::Requested { node, queue })
                }
                _ => {
                    tx.execute(
                        "UPDATE ember_jobs SET state = 'cancelled', error = 'cancelled', \
                         finished_at = $2 WHERE id = $1",
                        &[&id, &now_ms()],
                    )?;
                    Ok(CancelOutcome::Cancelled(state_event(
                        tx,
                        id,
                        JobState::Cancelled,
                        attempt,
                        Some("cancelled"),
                    )?))
                }
            }
        })
    }

    fn recover(&self, node: &str, owner: &str, now: Millis) -> Result<Vec<Event>, StoreError> {
        let (node, owner) = (node.to_owned(), owner.to_owned());
        self.tx(move |tx| {
            take_back(
                tx,
                "lease_until < $2 OR (node = $3 AND lease_owner IS DISTINCT FROM $4)",
                &[&node, &owner],
                now,
                "lease lost: the node running it stopped",
            )
        })
    }

    fn release(&self, owner: &str, queue: &str) -> Result<Vec<Event>, StoreError> {
        let (owner, queue) = (owner.to_owned(), queue.to_owned());
        self.tx(move |tx| {
            lock_dispatch(tx, &owner, &queue)?;
            take_back(
                tx,
                "lease_owner = $3 AND queue = $4",
                &[&owner, &queue],
                now_ms(),
                "interrupted: the queue's dispatcher restarted",
            )
        })
    }

    fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.call(move |c| {
            let row = c.query_opt(
                &format!("SELECT {COLUMNS} FROM ember_jobs WHERE id = $1"),
                &[&id],
            )?;
            row.map(|r| record(&r, now_ms())).transpose()
        })
    }

    fn list(
        &self,
        state: Option<JobState>,
        limit: usize,
        after: Option<JobId>,
        newest_first: bool,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.call(move |c| {
            let now = now_ms();
            let (bound, order) = if newest_first {
                ("id < $1", "DESC")
            } else {
                ("id > $1", "ASC")
            };
            let after = match (after, newest_first) {
                (Some(a), _) => a,
                (None, false) => 0,
                (None, true) => i64::MAX,
            };
            let limit = limit.min(i64::MAX as usize) as i64;
            let state_name = state.map(JobState::as_str).unwrap_or("");
            let filter = match state {
                None => "($3::text = $3::text AND $4::bigint = $4::bigint)",
                Some(JobState::Queued) => {
                    "($3::text = $3::text AND (state = 'queued' \
                     OR (state = 'scheduled' AND run_at <= $4::bigint)))"
                }
                Some(JobState::Scheduled) => {
                    "($3::text = $3::text AND state = 'scheduled' AND run_at > $4::bigint)"
                }
                Some(_) => "(state = $3::text AND $4::bigint = $4::bigint)",
            };
            let rows = c.query(
                &format!(
                    "SELECT {COLUMNS} FROM ember_jobs WHERE {bound} AND {filter} \
                     ORDER BY id {order} LIMIT $2"
                ),
                &[&after, &limit, &state_name, &now],
            )?;
            rows.iter().map(|r| record(r, now)).collect()
        })
    }

    fn retry(&self, id: JobId) -> Result<Option<Event>, StoreError> {
        self.tx(move |tx| {
            let row = tx.query_opt(
                "SELECT state, attempt, queue FROM ember_jobs WHERE id = $1 FOR UPDATE",
                &[&id],
            )?;
            let Some(row) = row else {
                return Err(StoreError::NotFound);
            };
            let state = text(&row, 0)?;
            let attempt = row.try_get::<_, i32>(1).map_err(backend)?.max(0) as u32;
            let queue = text(&row, 2)?;
            if state != "failed" && state != "cancelled" {
                return Ok(None);
            }
            tx.execute(
                "UPDATE ember_jobs SET state = 'queued', run_at = $2, cancel_requested = FALSE, \
                 max_attempts = GREATEST(max_attempts, attempt + 1), finished_at = NULL \
                 WHERE id = $1",
                &[&id, &now_ms()],
            )?;
            let ev = state_event(tx, id, JobState::Queued, attempt, None)?;
            notify(tx, &queue)?;
            Ok(Some(ev))
        })
    }

    fn events(&self, id: JobId, after: i64) -> Result<Vec<Event>, StoreError> {
        self.call(move |c| {
            let rows = c.query(
                "SELECT seq, type, data FROM ember_job_events WHERE job_id = $1 AND seq > $2 \
                 ORDER BY seq",
                &[&id, &after],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(Event {
                        seq: r.try_get(0).map_err(backend)?,
                        job: id,
                        kind: text(r, 1)?,
                        data: parse_json(r.try_get(2).map_err(backend)?).unwrap_or(Value::Null),
                    })
                })
                .collect()
        })
    }

    fn next_run_at(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        let queue = queue.to_owned();
        self.call(move |c| {
            let row = c.query_one(
                "SELECT MIN(run_at) FROM ember_jobs WHERE queue = $1 \
                 AND state IN ('queued', 'scheduled', 'retrying')",
                &[&queue],
            )?;
            row.try_get(0).map_err(backend)
        })
    }

    fn pending_queues(&self) -> Result<Vec<String>, StoreError> {
        self.call(move |c| {
            let rows = c.query(
                &format!("SELECT DISTINCT queue FROM ember_jobs WHERE state IN {PENDING}"),
                &[],
            )?;
            rows.iter().map(|r| text(r, 0)).collect()
        })
    }

    fn counts(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        self.call(move |c| {
            let rows = c.query("SELECT state, COUNT(*) FROM ember_jobs GROUP BY state", &[])?;
            let mut out = Vec::new();
            for r in rows {
                let n: i64 = r.try_get(1).map_err(backend)?;
                if let Ok(state) = text(&r, 0)?.parse() {
                    out.push((state, n.max(0) as u64));
                }
            }
            Ok(out)
        })
    }

    fn fire_cron(
        &self,
        entry: &str,
        expression: &str,
        slot: Millis,
        job: &NewJob,
    ) -> Result<Option<Inserted>, StoreError> {
        let (entry, expression, job) = (entry.to_owned(), expression.to_owned(), job.clone());
        self.tx(move |tx| fire_cron_in(tx, &entry, &expression, slot, &job))
    }

    fn cron_entries(&self) -> Result<Vec<CronRecord>, StoreError> {
        self.call(move |c| {
            let rows = c.query(
                "SELECT name, expression, last_slot, last_job FROM ember_jobs_cron ORDER BY name",
                &[],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(CronRecord {
                        name: text(r, 0)?,
                        expression: text(r, 1)?,
                        last_slot: r.try_get(2).map_err(backend)?,
                        last_job: r.try_get(3).map_err(backend)?,
                    })
                })
                .collect()
        })
    }

    fn on_wake(&self, wake: Wake) {
        *self.shared.wake.lock() = Some(wake);
    }
}
