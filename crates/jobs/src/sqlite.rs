//! The embedded store: one SQLite file in WAL mode, one writing connection
//! behind a mutex (SQLite has a single writer anyway) and connections of
//! their own for reads, which WAL lets run while the writer writes (an
//! in-memory store reads on its one connection).
//!
//! Writes go through a group commit: a writer thread takes every write
//! waiting for it (from any number of callers), runs each in a savepoint of
//! one transaction (a failing write rolls back alone), commits, and only
//! then answers each caller. A caller is therefore acknowledged only once
//! its write is committed (with `synchronous = FULL`: on disk), exactly as
//! with a transaction per call, but one fsync serves a whole batch.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use serde_json::{json, Value};

use crate::cron::CronRecord;
use crate::store::{
    Backoff, CancelOutcome, Claimed, Claimer, Event, Inserted, JobId, JobRecord, JobState, Millis,
    NewJob, Progress, Retry, Store, StoreError, StoreFuture,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    queue TEXT NOT NULL,
    args TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout_ms INTEGER,
    unique_key TEXT,
    memory_limit INTEGER,
    run_at INTEGER NOT NULL,
    inserted_at INTEGER NOT NULL,
    backoff_base_ms INTEGER NOT NULL,
    backoff_max_ms INTEGER NOT NULL,
    token INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until INTEGER,
    node TEXT,
    progress_pct REAL,
    progress_message TEXT,
    progress_data TEXT,
    result TEXT,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    completions INTEGER NOT NULL DEFAULT 0,
    finished_at INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, state, priority, run_at, id);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'queued', 'running', 'retrying');
CREATE TABLE IF NOT EXISTS job_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS job_events_job ON job_events (job_id, seq);
CREATE TABLE IF NOT EXISTS cron_entries (
    name TEXT PRIMARY KEY,
    expression TEXT NOT NULL,
    last_slot INTEGER NOT NULL,
    last_job INTEGER
);
";

const COLUMNS: &str = "id, kind, queue, args, state, priority, attempt, max_attempts, timeout_ms, \
    unique_key, run_at, progress_pct, progress_message, progress_data, result, error, node, \
    completions, cancel_requested, memory_limit";

/// The most writes one group commit takes.
const MAX_BATCH: usize = 512;

/// How many connections a file store reads on.
const READERS: usize = 2;

/// What a write leaves to do once its batch's commit is known: answer its
/// caller with its own result, or with the commit's error.
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A write for the writer thread: runs in the batch's transaction (inside
/// a savepoint of its own) and returns how to answer its caller.
type Op = Box<dyn FnOnce(&Transaction<'_>) -> (bool, Reply) + Send>;

/// The embedded SQLite store (see [`SqliteStore::open`]).
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Connections for reads, [`READERS`] of them; empty for an in-memory
    /// store, whose reads share `conn`.
    readers: Vec<Mutex<Connection>>,
    /// The writer thread's queue; `None` once the store is dropped.
    writes: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Holds an exclusive lock on `<file>.lock` for as long as the store is
    /// open, so that a second process (or a second open in this one)
    /// cannot run the same store's jobs; the OS drops it if we die.
    _lock: Mutex<Option<Connection>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // The writer finishes (and answers) what is queued, then stops.
        self.writes.lock().take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The writer thread: one transaction per batch of waiting writes, each
/// write in a savepoint; answers after the commit.
fn writer_loop(conn: Arc<Mutex<Connection>>, rx: mpsc::Receiver<Op>) {
    let mut batch: Vec<Op> = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut conn = conn.lock();
        let outcome = (|| -> Result<(), String> {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| e.to_string())?;
            for op in batch.drain(..) {
                if let Err(e) = tx.execute_batch("SAVEPOINT op") {
                    replies.push(Box::new(move |_| {}));
                    return Err(e.to_string());
                }
                let (ok, reply) = op(&tx);
                replies.push(reply);
                let end = if ok {
                    "RELEASE op"
                } else {
                    "ROLLBACK TO op; RELEASE op"
                };
                tx.execute_batch(end).map_err(|e| e.to_string())?;
            }
            tx.commit().map_err(|e| e.to_string())
        })();
        drop(conn);
        // Writes never run (the transaction failed before them) were
        // dropped with `batch`'s drain: their callers see an error.
        for reply in replies.drain(..) {
            reply(outcome.clone());
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        backend(e)
    }
}

/// Brings a store created by an older version up to [`SCHEMA`]: adds the
/// columns it lacks (`memory_limit`).
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let has_memory_limit: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name = 'memory_limit'",
        [],
        |r| r.get(0),
    )?;
    if has_memory_limit == 0 {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN memory_limit INTEGER")?;
    }
    Ok(())
}

fn parse_json(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn record(row: &Row<'_>, now: Millis) -> rusqlite::Result<JobRecord> {
    let state: String = row.get(4)?;
    let mut state: JobState = state.parse().unwrap_or(JobState::Failed);
    let run_at: Millis = row.get(10)?;
    if state == JobState::Scheduled && run_at <= now {
        state = JobState::Queued;
    }
    Ok(JobRecord {
        id: row.get(0)?,
        kind: row.get(1)?,
        queue: row.get(2)?,
        args: parse_json(row.get(3)?).unwrap_or(Value::Null),
        state,
        priority: row.get(5)?,
        attempt: row.get(6)?,
        max_attempts: row.get(7)?,
        timeout_ms: row.get::<_, Option<i64>>(8)?.map(|t| t.max(0) as u64),
        unique_key: row.get(9)?,
        run_at,
        progress_pct: row.get(11)?,
        progress_message: row.get(12)?,
        progress_data: parse_json(row.get(13)?),
        result: parse_json(row.get(14)?),
        error: row.get(15)?,
        node: row.get(16)?,
        completions: row.get(17)?,
        cancel_requested: row.get::<_, i64>(18)? != 0,
        memory_limit: row.get::<_, Option<i64>>(19)?.map(|m| m.max(0) as u64),
    })
}

/// Appends an event in `tx`.
fn event(tx: &Transaction<'_>, job: JobId, kind: &str, data: Value) -> rusqlite::Result<Event> {
    tx.execute(
        "INSERT INTO job_events (job_id, type, data, at) VALUES (?1, ?2, ?3, ?4)",
        params![job, kind, data.to_string(), crate::store::now_ms()],
    )?;
    Ok(Event {
        seq: tx.last_insert_rowid(),
        job,
        kind: kind.to_owned(),
        data,
    })
}

fn state_event(
    tx: &Transaction<'_>,
    job: JobId,
    state: JobState,
    attempt: u32,
    error: Option<&str>,
) -> rusqlite::Result<Event> {
    let mut data = json!({ "state": state.as_str(), "attempt": attempt });
    if let Some(e) = error {
        data["error"] = Value::from(e);
    }
    event(tx, job, "state", data)
}

/// Takes back the running jobs matching `filter` (with `args`): each is
/// retried at once if it has attempts left, cancelled if a cancel was
/// asked, failed otherwise; its token moves on, so the lost attempt can
/// write nothing more.
fn take_back(
    tx: &Transaction<'_>,
    filter: &str,
    args: impl rusqlite::Params,
    now: Millis,
    error: &str,
) -> Result<Vec<Event>, StoreError> {
    let mut lost = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT id, attempt, max_attempts, cancel_requested FROM jobs \
             WHERE state = 'running' AND ({filter})"
        ))?;
        let mut q = stmt.query(args)?;
        while let Some(r) = q.next()? {
            lost.push((
                r.get::<_, JobId>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, i64>(3)? != 0,
            ));
        }
    }
    let mut events = Vec::with_capacity(lost.len());
    for (id, attempt, max_attempts, cancel) in lost {
        let state = if cancel {
            JobState::Cancelled
        } else if attempt < max_attempts {
            JobState::Retrying
        } else {
            JobState::Failed
        };
        tx.execute(
            "UPDATE jobs SET state = ?2, error = ?3, run_at = ?4, token = token + 1, \
             lease_owner = NULL, lease_until = NULL WHERE id = ?1",
            params![id, state.as_str(), error, now],
        )?;
        events.push(state_event(tx, id, state, attempt, Some(error))?);
    }
    Ok(events)
}

/// Checks that `id` is running under `token`; its attempt if so.
fn fenced(tx: &Transaction<'_>, id: JobId, token: i64) -> Result<u32, StoreError> {
    let row: Option<(String, i64, u32)> = tx
        .query_row(
            "SELECT state, token, attempt FROM jobs WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    match row {
        None => Err(StoreError::NotFound),
        Some((state, t, attempt)) if state == "running" && t == token => Ok(attempt),
        Some(_) => Err(StoreError::Fenced),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `path`, in WAL mode with
    /// `synchronous = FULL`, so a committed transition survives a crash of
    /// the process and of the machine.
    /// Fails if another open store (in any process) has the same file.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = Connection::open(&lock_path)?;
        let held = lock
            .busy_timeout(std::time::Duration::ZERO)
            .and_then(|()| lock.pragma_update(None, "locking_mode", "EXCLUSIVE"))
            .and_then(|()| {
                lock.execute_batch("BEGIN EXCLUSIVE; CREATE TABLE IF NOT EXISTS held (x);")
            });
        if let Err(e) = held {
            return Err(StoreError::Backend(format!(
                "{} is in use by another node ({e})",
                path.display()
            )));
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open(path)?;
            r.busy_timeout(std::time::Duration::from_secs(5))?;
            r.pragma_update(None, "query_only", true)?;
            readers.push(Mutex::new(r));
        }
        SqliteStore::with_conn(conn, readers, Some(lock))
    }

    /// A store in memory, for tests.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        SqliteStore::with_conn(conn, Vec::new(), None)
    }

    fn with_conn(
        conn: Connection,
        readers: Vec<Mutex<Connection>>,
        lock: Option<Connection>,
    ) -> Result<SqliteStore, StoreError> {
        let conn = Arc::new(Mutex::new(conn));
        let (tx, rx) = mpsc::channel();
        let writer = {
            let conn = conn.clone();
            std::thread::Builder::new()
                .name("ember-jobs-sqlite-writer".to_owned())
                .spawn(move || writer_loop(conn, rx))
                .map_err(backend)?
        };
        Ok(SqliteStore {
            conn,
            readers,
            writes: Mutex::new(Some(tx)),
            writer: Some(writer),
            _lock: Mutex::new(lock),
        })
    }

    /// A connection to read on: a free reader, else the first (waiting
    /// for it); the writer's own for an in-memory store. Each read is its
    /// own read transaction, so it sees every write already answered.
    fn reader(&self) -> parking_lot::MutexGuard<'_, Connection> {
        for r in &self.readers {
            if let Some(guard) = r.try_lock() {
                return guard;
            }
        }
        match self.readers.first() {
            Some(r) => r.lock(),
            None => self.conn.lock(),
        }
    }

    /// Queues write `f` for the next group commit; `answer` gets its
    /// result once the batch is committed (or the commit's error).
    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
        answer: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) {
        let op: Op = Box::new(move |tx| {
            let out = f(tx);
            let ok = out.is_ok();
            let reply: Reply = Box::new(move |commit| {
                answer(match commit {
                    Ok(()) => out,
                    Err(e) => Err(StoreError::Backend(e)),
                })
            });
            (ok, reply)
        });
        let sent = match &*self.writes.lock() {
            Some(w) => w.send(op).map_err(|e| e.0),
            None => Err(op),
        };
        if let Err(op) = sent {
            // The writer is gone: nothing was written.
            drop(op);
        }
    }

    /// Runs write `f` in the next group commit and waits until it is
    /// committed.
    fn tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(f, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Backend(
                "the write was not committed".to_owned(),
            ))
        })
    }

    /// Like [`SqliteStore::tx`], but the caller awaits the commit instead
    /// of blocking its thread, so many callers share one commit.
    fn tx_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        let (tx, rx) = ember_runtime::sync::oneshot::channel();
        self.submit(f, move |r| {
            let _ = tx.send(r);
        });
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(StoreError::Backend(
                    "the write was not committed".to_owned(),
                ))
            })
        })
    }
}

/// Inserts `job` in `tx` (see [`Store::insert`]).
fn insert_in(tx: &Transaction<'_>, job: &NewJob) -> Result<Inserted, StoreError> {
    if let Some(key) = &job.unique_key {
        let existing: Option<JobId> = tx
            .query_row(
                "SELECT id FROM jobs WHERE unique_key = ?1 AND state IN \
                 ('scheduled', 'queued', 'running', 'retrying')",
                [key],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Ok(Inserted::Existing(id));
        }
    }
    let now = crate::store::now_ms();
    let state = if job.run_at > now {
        JobState::Scheduled
    } else {
        JobState::Queued
    };
    tx.execute(
        "INSERT INTO jobs (kind, queue, args, state, priority, max_attempts, timeout_ms, \
         unique_key, run_at, inserted_at, backoff_base_ms, backoff_max_ms, memory_limit) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            job.kind,
            job.queue,
            job.args.to_string(),
            state.as_str(),
            job.priority,
            job.max_attempts.max(1),
            job.timeout_ms.map(|t| t.min(i64::MAX as u64) as i64),
            job.unique_key,
            job.run_at,
            now,
            job.backoff.base_ms.min(i64::MAX as u64) as i64,
            job.backoff.max_ms.min(i64::MAX as u64) as i64,
            job.memory_limit.map(|m| m.min(i64::MAX as u64) as i64),
        ],
    )?;
    let id = tx.last_insert_rowid();
    let ev = state_event(tx, id, state, 0, None)?;
    Ok(Inserted::New(id, ev))
}

/// Fires a cron slot in `tx` (see [`Store::fire_cron`]): the entry's row
/// moves to `slot` only if `slot` is newer, and only then is the job
/// inserted; a failed insert rolls the row back with it.
fn fire_cron_in(
    tx: &Transaction<'_>,
    entry: &str,
    expression: &str,
    slot: Millis,
    job: &NewJob,
) -> Result<Option<Inserted>, StoreError> {
    let advanced = tx.execute(
        "INSERT INTO cron_entries (name, expression, last_slot) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET expression = excluded.expression, \
         last_slot = excluded.last_slot, last_job = NULL \
         WHERE excluded.last_slot > cron_entries.last_slot",
        params![entry, expression, slot],
    )?;
    if advanced == 0 {
        return Ok(None);
    }
    let inserted = insert_in(tx, job)?;
    tx.execute(
        "UPDATE cron_entries SET last_job = ?2 WHERE name = ?1",
        params![entry, inserted.id()],
    )?;
    Ok(Some(inserted))
}

/// Records `id`'s success in `tx` (see [`Store::succeed`]).
fn succeed_in(
    tx: &Transaction<'_>,
    id: JobId,
    token: i64,
    result: &Value,
) -> Result<Event, StoreError> {
    let attempt = fenced(tx, id, token)?;
    tx.execute(
        "UPDATE jobs SET state = 'succeeded', result = ?2, error = NULL, \
         lease_owner = NULL, lease_until = NULL, completions = completions + 1, \
         finished_at = ?3 WHERE id = ?1",
        params![id, result.to_string(), crate::store::now_ms()],
    )?;
    Ok(state_event(tx, id, JobState::Succeeded, attempt, None)?)
}

/// Claims up to `limit` due jobs of `queue` in `tx` (see [`Store::claim`]).
#[allow(clippy::too_many_arguments)]
fn claim_in(
    tx: &Transaction<'_>,
    queue: &str,
    node: &str,
    owner: &str,
    claimer: &Claimer,
    now: Millis,
    lease_until: Millis,
    limit: usize,
) -> Result<Vec<Claimed>, StoreError> {
    // The one writer runs this and `release` in submission order: a
    // release submitted after the claimer died runs after this check or
    // takes back what it claimed.
    if !claimer.is_alive() {
        return Ok(Vec::new());
    }
    let mut rows = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT id, kind, args, attempt, max_attempts, token, timeout_ms, \
             backoff_base_ms, backoff_max_ms, memory_limit FROM jobs \
             WHERE queue = ?1 AND state IN ('queued', 'scheduled', 'retrying') \
             AND run_at <= ?2 ORDER BY priority, run_at, id LIMIT ?3",
        )?;
        let mut q = stmt.query(params![queue, now, limit as i64])?;
        while let Some(r) = q.next()? {
            let args: String = r.get(2)?;
            rows.push((
                r.get::<_, JobId>(0)?,
                r.get::<_, String>(1)?,
                serde_json::from_str(&args).unwrap_or(Value::Null),
                r.get::<_, u32>(3)? + 1,
                r.get::<_, u32>(4)?,
                r.get::<_, i64>(5)? + 1,
                r.get::<_, Option<i64>>(6)?,
                Backoff {
                    base_ms: r.get::<_, i64>(7)?.max(0) as u64,
                    max_ms: r.get::<_, i64>(8)?.max(0) as u64,
                },
                r.get::<_, Option<i64>>(9)?,
            ));
        }
    }
    let mut claimed = Vec::with_capacity(rows.len());
    for (id, kind, args, attempt, max_attempts, token, timeout_ms, backoff, memory_limit) in rows {
        tx.execute(
            "UPDATE jobs SET state = 'running', attempt = ?2, token = ?3, \
             lease_owner = ?4, lease_until = ?5, node = ?6 WHERE id = ?1",
            params![id, attempt, token, owner, lease_until, node],
        )?;
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
}

impl Store for SqliteStore {
    fn insert(&self, job: &NewJob) -> Result<Inserted, StoreError> {
        let job = job.clone();
        self.tx(move |tx| insert_in(tx, &job))
    }

    fn insert_async(&self, job: NewJob) -> StoreFuture<Inserted> {
        self.tx_async(move |tx| insert_in(tx, &job))
    }

    fn succeed_async(&self, id: JobId, token: i64, result: Value) -> StoreFuture<Event> {
        self.tx_async(move |tx| succeed_in(tx, id, token, &result))
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
        self.tx(move |tx| claim_in(tx, &queue, &node, &owner, &claimer, now, lease_until, limit))
    }

    fn claim_async(
        &self,
        queue: String,
        node: String,
        owner: String,
        claimer: Claimer,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> StoreFuture<Vec<Claimed>> {
        if limit == 0 {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        self.tx_async(move |tx| {
            claim_in(tx, &queue, &node, &owner, &claimer, now, lease_until, limit)
        })
    }

    fn heartbeat(
        &self,
        owner: &str,
        leases: &[(JobId, i64)],
        lease_until: Millis,
    ) -> Result<Vec<(JobId, bool, bool)>, StoreError> {
        let (owner, leases) = (owner.to_owned(), leases.to_vec());
        self.tx(move |tx| {
            let mut out = Vec::with_capacity(leases.len());
            let mut update = tx.prepare_cached(
                "UPDATE jobs SET lease_until = ?4 WHERE id = ?1 AND token = ?2 \
                 AND lease_owner = ?3 AND state = 'running' RETURNING cancel_requested",
            )?;
            for &(id, token) in &leases {
                let cancel: Option<i64> = update
                    .query_row(params![id, token, owner, lease_until], |r| r.get(0))
                    .optional()?;
                out.push((id, cancel.is_some(), cancel.unwrap_or(0) != 0));
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
                "UPDATE jobs SET progress_pct = ?2, progress_message = ?3, progress_data = ?4 \
                 WHERE id = ?1",
                params![id, progress.pct, progress.message, data],
            )?;
            let ev = event(
                tx,
                id,
                "progress",
                serde_json::to_value(progress).map_err(backend)?,
            )?;
            Ok(ev)
        })
    }

    fn succeed(&self, id: JobId, token: i64, result: &Value) -> Result<Event, StoreError> {
        let result = result.clone();
        self.tx(move |tx| succeed_in(tx, id, token, &result))
    }

    fn fail(&self, id: JobId, token: i64, error: &str, retry: Retry) -> Result<Event, StoreError> {
        let error = error.to_owned();
        self.tx(move |tx| {
            let attempt = fenced(tx, id, token)?;
            let state = match retry {
                Retry::At(at) => {
                    tx.execute(
                        "UPDATE jobs SET state = 'retrying', error = ?2, run_at = ?3, \
                         lease_owner = NULL, lease_until = NULL WHERE id = ?1",
                        params![id, error, at],
                    )?;
                    JobState::Retrying
                }
                Retry::Never => {
                    tx.execute(
                        "UPDATE jobs SET state = 'failed', error = ?2, lease_owner = NULL, \
                         lease_until = NULL, finished_at = ?3 WHERE id = ?1",
                        params![id, error, crate::store::now_ms()],
                    )?;
                    JobState::Failed
                }
            };
            Ok(state_event(tx, id, state, attempt, Some(&error))?)
        })
    }

    fn finish_cancelled(&self, id: JobId, token: i64) -> Result<Event, StoreError> {
        self.tx(move |tx| {
            let attempt = fenced(tx, id, token)?;
            tx.execute(
                "UPDATE jobs SET state = 'cancelled', error = 'cancelled', lease_owner = NULL, \
                 lease_until = NULL, finished_at = ?2 WHERE id = ?1",
                params![id, crate::store::now_ms()],
            )?;
            Ok(state_event(
                tx,
                id,
                JobState::Cancelled,
                attempt,
                Some("cancelled"),
            )?)
        })
    }

    fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreError> {
        self.tx(move |tx| {
            let row: Option<(String, u32, Option<String>, String)> = tx
                .query_row(
                    "SELECT state, attempt, node, queue FROM jobs WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((state, attempt, node, queue)) = row else {
                return Ok(CancelOutcome::NotFound);
            };
            let state: JobState = state.parse().map_err(backend)?;
            match state {
                s if s.is_final() => Ok(CancelOutcome::Final(s)),
                JobState::Running => {
                    tx.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", [id])?;
                    Ok(CancelOutcome::Requested { node, queue })
                }
                _ => {
                    tx.execute(
                        "UPDATE jobs SET state = 'cancelled', error = 'cancelled', \
                         finished_at = ?2 WHERE id = ?1",
                        params![id, crate::store::now_ms()],
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
                "lease_until < ?1 OR (node = ?2 AND lease_owner IS NOT ?3)",
                params![now, node, owner],
                now,
                "lease lost: the node running it stopped",
            )
        })
    }

    fn release(&self, owner: &str, queue: &str) -> Result<Vec<Event>, StoreError> {
        let now = crate::store::now_ms();
        let (owner, queue) = (owner.to_owned(), queue.to_owned());
        self.tx(move |tx| {
            take_back(
                tx,
                "lease_owner = ?1 AND queue = ?2",
                params![owner, queue],
                now,
                "interrupted: the queue's dispatcher restarted",
            )
        })
    }

    fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let conn = self.reader();
        let now = crate::store::now_ms();
        let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?;
        Ok(stmt.query_row([id], |r| record(r, now)).optional()?)
    }

    fn list(
        &self,
        state: Option<JobState>,
        limit: usize,
        after: Option<JobId>,
        newest_first: bool,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let conn = self.reader();
        let now = crate::store::now_ms();
        let (bound, order) = if newest_first {
            ("id < ?1", "DESC")
        } else {
            ("id > ?1", "ASC")
        };
        let after = match (after, newest_first) {
            (Some(a), _) => a,
            (None, false) => 0,
            (None, true) => i64::MAX,
        };
        let limit = limit as i64;
        let (filter, state_param) = match state {
            None => ("1 = 1", String::new()),
            Some(JobState::Queued) => (
                "(state = 'queued' OR (state = 'scheduled' AND run_at <= ?4))",
                String::new(),
            ),
            Some(JobState::Scheduled) => ("state = 'scheduled' AND run_at > ?4", String::new()),
            Some(s) => ("state = ?3", s.as_str().to_owned()),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE {bound} AND {filter} AND (?3 = ?3) AND (?4 = ?4) \
             ORDER BY id {order} LIMIT ?2"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![after, limit, state_param, now], |r| record(r, now))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn retry(&self, id: JobId) -> Result<Option<Event>, StoreError> {
        self.tx(move |tx| {
            let row: Option<(String, u32)> = tx
                .query_row("SELECT state, attempt FROM jobs WHERE id = ?1", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((state, attempt)) = row else {
                return Err(StoreError::NotFound);
            };
            if state != "failed" && state != "cancelled" {
                return Ok(None);
            }
            tx.execute(
                "UPDATE jobs SET state = 'queued', run_at = ?2, cancel_requested = 0, \
                 max_attempts = MAX(max_attempts, attempt + 1), finished_at = NULL \
                 WHERE id = ?1",
                params![id, crate::store::now_ms()],
            )?;
            Ok(Some(state_event(tx, id, JobState::Queued, attempt, None)?))
        })
    }

    fn events(&self, id: JobId, after: i64) -> Result<Vec<Event>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, type, data FROM job_events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![id, after], |r| {
            Ok(Event {
                seq: r.get(0)?,
                job: id,
                kind: r.get(1)?,
                data: parse_json(r.get(2)?).unwrap_or(Value::Null),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn next_run_at(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT MIN(run_at) FROM jobs WHERE queue = ?1 \
             AND state IN ('queued', 'scheduled', 'retrying')",
        )?;
        Ok(stmt.query_row([queue], |r| r.get(0))?)
    }

    fn pending_queues(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT queue FROM jobs WHERE state IN \
             ('queued', 'scheduled', 'retrying', 'running')",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
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
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT name, expression, last_slot, last_job FROM cron_entries ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(CronRecord {
                name: r.get(0)?,
                expression: r.get(1)?,
                last_slot: r.get(2)?,
                last_job: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn counts(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (state, n) = row?;
            if let Ok(state) = state.parse() {
                out.push((state, n.max(0) as u64));
            }
        }
        Ok(out)
    }
}
