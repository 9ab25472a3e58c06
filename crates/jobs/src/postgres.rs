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
//! * Enqueues and successes are group-committed ([`Write`]): a writer
//!   connection takes every such write waiting, does them all in one
//!   transaction with one multi-row statement per step (`UNNEST`), commits
//!   once, then answers each caller with its own outcome (each success's
//!   token is checked alone in the `UPDATE`: a fenced one is refused and
//!   the others commit). Two writers, so one batch gathers while the other
//!   commits; no timed window: what waited during the last commit is the
//!   next batch, so a lone write waits for no one.
//! * The schema is created (or migrated) at [`PgStore::connect`], under an
//!   advisory lock so that nodes starting together do not race.
//!
//! The `postgres` crate is synchronous, like the [`Store`] trait, but runs a
//! tokio runtime of its own inside each call, which cannot start on an
//! Ember scheduler thread (those have entered the runtime's tokio context).
//! So the connections live on threads of their own: a call hands its work
//! to one of them and waits for the answer (or awaits it, for the `_async`
//! calls, leaving its scheduler thread free).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
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
    now_ms, Backoff, CancelOutcome, ClaimRequest, Claimed, Claimer, Completion, Event, Inserted,
    JobId, JobRecord, JobState, Millis, NewJob, Progress, Retry, Store, StoreError, StoreFuture,
    Turn, TurnFuture, Wake,
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

/// How many connections serve a store's calls (the group commit's writers
/// among them), besides the listener's: apalis's default pool size, so that
/// `bench/run jobs` compares like with like.
const DEFAULT_CONNECTIONS: usize = 8;

/// How many of the connections run group commits (see [`Write`]): two, so
/// that one batch gathers while the other commits.
const WRITERS: usize = 2;

/// The most writes one group commit takes.
const MAX_BATCH: usize = 512;

type Work = Box<dyn FnOnce(&mut Client) + Send>;

/// How a batched write answers its caller.
type Reply<T> = Box<dyn FnOnce(Result<T, StoreError>) + Send>;

/// A write for the group commit: the writers take every write waiting
/// (from any number of callers), do them all in one transaction with one
/// multi-row statement per step (`UNNEST`), commit, and only then answer
/// each caller with its own outcome.
enum Write {
    /// [`Store::insert`].
    Insert(NewJob, Reply<Inserted>),
    /// [`Store::succeed`]: the job, the claim's token, the result as JSON.
    Succeed(JobId, i64, String, Reply<Event>),
    /// [`Store::complete_and_claim`]: successes as [`Write::Succeed`]'s,
    /// then the claim, in the same transaction.
    Turn(Vec<(JobId, i64, String)>, ClaimRequest, TurnReply),
}

/// How a [`Write::Turn`] answers its caller.
type TurnReply = Box<dyn FnOnce(Turn) + Send>;

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
    /// The group commit's queue; `None` once the store is dropped.
    writes: Mutex<Option<mpsc::Sender<Write>>>,
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

/// How long one of the store's sessions may sit idle inside a transaction
/// before the server ends it. The store's transactions wait on nothing but
/// the server, so only a frozen node (SIGSTOP, a paused VM) gets there; its
/// open transaction would otherwise keep its rows locked for as long as it
/// stays frozen, and every other node's take-over skips locked rows (`FOR
/// UPDATE SKIP LOCKED`): a job that node was writing would never be taken
/// back. Ended, its session's next write fails and the store reconnects.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "10s";

fn connect(url: &str) -> Result<Client, StoreError> {
    let mut client =
        Client::connect(url, NoTls).map_err(|e| StoreError::Backend(format!("postgres: {e}")))?;
    client.batch_execute(&format!(
        "SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'"
    ))?;
    Ok(client)
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

/// Runs group commits on one connection until the store is dropped (after
/// answering what is queued); reconnects when the connection breaks (the
/// batch that saw it fails). The receiver's lock is held only while taking
/// a batch, so with two writers one batch gathers while the other commits.
fn write_loop(shared: Arc<Shared>, mut client: Client, writes: Arc<Mutex<mpsc::Receiver<Write>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let rx = writes.lock();
            let Ok(first) = rx.recv() else {
                return;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
        }
        if client.is_closed() {
            match connect(&shared.url) {
                Ok(c) => client = c,
                Err(e) => tracing::error!("ember-jobs: cannot reconnect to postgres: {e}"),
            }
        }
        commit_batch(&mut client, &mut batch);
    }
}

/// Does every write of `batch` in one transaction and answers each caller
/// with its own outcome once it is committed (a fenced completion is
/// refused alone): the enqueues, then every success (those of the turns
/// too), then the turns' claims, in (owner, queue) order, the order every
/// batch takes their dispatch locks in. If the server aborts the
/// transaction (a deadlock with another node, a write it rejects), nothing
/// of it was committed: each write is then done again in a transaction of
/// its own (a turn's successes each alone, then its claim), so that one bad
/// write fails alone.
fn commit_batch(client: &mut Client, batch: &mut Vec<Write>) {
    let mut inserts = Vec::new();
    let mut insert_replies = Vec::new();
    let mut succeeds = Vec::new();
    // For each success: its caller's reply, or `None` for a turn's.
    let mut succeed_replies: Vec<Option<Reply<Event>>> = Vec::new();
    // Each turn: where its successes are in `succeeds`, its claim, its reply.
    let mut turns: Vec<(std::ops::Range<usize>, ClaimRequest, TurnReply)> = Vec::new();
    for w in batch.drain(..) {
        match w {
            Write::Insert(job, reply) => {
                inserts.push(job);
                insert_replies.push(reply);
            }
            Write::Succeed(id, token, result, reply) => {
                succeeds.push((id, token, result));
                succeed_replies.push(Some(reply));
            }
            Write::Turn(done, claim, reply) => {
                let from = succeeds.len();
                for d in done {
                    succeeds.push(d);
                    succeed_replies.push(None);
                }
                turns.push((from..succeeds.len(), claim, reply));
            }
        }
    }
    let mut order: Vec<usize> = (0..turns.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&turns[a].1, &turns[b].1);
        (&a.owner, &a.queue).cmp(&(&b.owner, &b.queue))
    });
    let out = (|| {
        let mut tx = client.transaction()?;
        let ins = insert_batch(&mut tx, &inserts)?;
        let suc = succeed_batch(&mut tx, &succeeds)?;
        let mut claims: Vec<Option<Vec<Claimed>>> = turns.iter().map(|_| None).collect();
        for &t in &order {
            claims[t] = Some(claim_in(&mut tx, &turns[t].1)?);
        }
        tx.commit()?;
        Ok::<_, postgres::Error>((ins, suc, claims))
    })();
    match out {
        Ok((ins, suc, claims)) => {
            for (reply, r) in insert_replies.into_iter().zip(ins) {
                reply(r);
            }
            let mut suc: Vec<Option<Result<Event, StoreError>>> =
                suc.into_iter().map(Some).collect();
            for (reply, r) in succeed_replies.into_iter().zip(suc.iter_mut()) {
                // A turn's successes stay for its own answer.
                if let Some(reply) = reply {
                    if let Some(r) = r.take() {
                        reply(r);
                    }
                }
            }
            for ((range, _, reply), claimed) in turns.into_iter().zip(claims) {
                let completed = suc[range]
                    .iter_mut()
                    .map(|r| {
                        r.take()
                            .unwrap_or_else(|| Err(StoreError::Backend("not written".into())))
                    })
                    .collect();
                reply(Turn {
                    completed,
                    claimed: claimed.ok_or_else(|| StoreError::Backend("not claimed".into())),
                });
            }
        }
        Err(e) if e.as_db_error().is_some() && !client.is_closed() => {
            tracing::debug!("ember-jobs: a group commit failed ({e}): its writes go one by one");
            for (reply, job) in insert_replies.into_iter().zip(inserts) {
                reply(alone(client, |tx| insert_in(tx, &job)));
            }
            let mut results: Vec<Option<Result<Event, StoreError>>> = Vec::new();
            for (reply, (id, token, result)) in succeed_replies.into_iter().zip(&succeeds) {
                let r = alone(client, |tx| succeed_in(tx, *id, *token, result));
                match reply {
                    Some(reply) => {
                        reply(r);
                        results.push(None);
                    }
                    None => results.push(Some(r)),
                }
            }
            for (range, claim, reply) in turns {
                let completed = results[range]
                    .iter_mut()
                    .map(|r| {
                        r.take()
                            .unwrap_or_else(|| Err(StoreError::Backend("not written".into())))
                    })
                    .collect();
                let claimed = alone(client, |tx| Ok(claim_in(tx, &claim)?));
                reply(Turn { completed, claimed });
            }
        }
        Err(e) => {
            let e = match StoreError::from(e) {
                StoreError::Backend(m) => m,
                other => other.to_string(),
            };
            let err = || StoreError::Backend(e.clone());
            for reply in insert_replies {
                reply(Err(err()));
            }
            for reply in succeed_replies.into_iter().flatten() {
                reply(Err(err()));
            }
            for (range, _, reply) in turns {
                reply(Turn {
                    completed: range.map(|_| Err(err())).collect(),
                    claimed: Err(err()),
                });
            }
        }
    }
}

/// Runs `f` in a transaction of its own on `client`.
fn alone<T>(
    client: &mut Client,
    f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut tx = client.transaction()?;
    let out = f(&mut tx)?;
    tx.commit()?;
    Ok(out)
}

/// Inserts `jobs` in `tx` with one multi-row `INSERT` (or a few, if unique
/// keys conflict with jobs that finish meanwhile), as if inserted one after
/// the other: the first write of a unique key in the batch inserts (or
/// finds the pending job with that key), the later ones get its id.
fn insert_batch(
    tx: &mut Transaction<'_>,
    jobs: &[NewJob],
) -> Result<Vec<Result<Inserted, StoreError>>, postgres::Error> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let state_of = |job: &NewJob| {
        if job.run_at > now {
            JobState::Scheduled
        } else {
            JobState::Queued
        }
    };
    let mut out: Vec<Option<Result<Inserted, StoreError>>> = jobs.iter().map(|_| None).collect();
    let keys: Vec<Option<&str>> = jobs.iter().map(|j| j.unique_key.as_deref()).collect();
    let (mut pending, follows) = unique_leaders(&keys);
    let mut new = Vec::new();
    for _ in 0..3 {
        if pending.is_empty() {
            break;
        }
        let pick =
            |f: &dyn Fn(&NewJob) -> i64| pending.iter().map(|&i| f(&jobs[i])).collect::<Vec<_>>();
        let kinds: Vec<&str> = pending.iter().map(|&i| jobs[i].kind.as_str()).collect();
        let queues: Vec<&str> = pending.iter().map(|&i| jobs[i].queue.as_str()).collect();
        let args: Vec<String> = pending.iter().map(|&i| jobs[i].args.to_string()).collect();
        let states: Vec<&str> = pending
            .iter()
            .map(|&i| state_of(&jobs[i]).as_str())
            .collect();
        let priorities = pick(&|j| j.priority);
        let max_attempts: Vec<i32> = pending
            .iter()
            .map(|&i| jobs[i].max_attempts.clamp(1, i32::MAX as u32) as i32)
            .collect();
        let timeouts: Vec<Option<i64>> = pending
            .iter()
            .map(|&i| jobs[i].timeout_ms.map(clamp))
            .collect();
        let keys: Vec<Option<&str>> = pending
            .iter()
            .map(|&i| jobs[i].unique_key.as_deref())
            .collect();
        let run_ats = pick(&|j| j.run_at);
        let bases = pick(&|j| clamp(j.backoff.base_ms));
        let maxes = pick(&|j| clamp(j.backoff.max_ms));
        let limits: Vec<Option<i64>> = pending
            .iter()
            .map(|&i| jobs[i].memory_limit.map(clamp))
            .collect();
        // Ids are drawn in the batch's order, then the rows inserted; a row
        // whose key a pending job holds is skipped, and its id left unused.
        let rows = tx.query(
            &format!(
                "WITH input AS (SELECT nextval(pg_get_serial_sequence('ember_jobs', 'id')::regclass) \
                   AS id, t.* FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                   $5::int8[], $6::int4[], $7::int8[], $8::text[], $9::int8[], $10::int8[], \
                   $11::int8[], $12::int8[]) WITH ORDINALITY AS t(kind, queue, args, state, \
                   priority, max_attempts, timeout_ms, unique_key, run_at, bbase, bmax, \
                   memory_limit, ord)), \
                 ins AS (INSERT INTO ember_jobs (id, kind, queue, args, state, priority, \
                   max_attempts, timeout_ms, unique_key, run_at, inserted_at, backoff_base_ms, \
                   backoff_max_ms, memory_limit) \
                   SELECT id, kind, queue, args, state, priority, max_attempts, timeout_ms, \
                   unique_key, run_at, $13::int8, bbase, bmax, memory_limit FROM input ORDER BY ord \
                   ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN {PENDING} \
                   DO NOTHING RETURNING id) \
                 SELECT input.ord, input.id, ins.id IS NOT NULL FROM input \
                   LEFT JOIN ins ON ins.id = input.id ORDER BY input.ord"
            ),
            &[
                &kinds,
                &queues,
                &args,
                &states,
                &priorities,
                &max_attempts,
                &timeouts,
                &keys,
                &run_ats,
                &bases,
                &maxes,
                &limits,
                &now,
            ],
        )?;
        let mut conflicted = Vec::new();
        for r in rows {
            let ord: i64 = r.try_get(0)?;
            let id: JobId = r.try_get(1)?;
            let inserted: bool = r.try_get(2)?;
            let Some(&i) = usize::try_from(ord - 1).ok().and_then(|o| pending.get(o)) else {
                continue;
            };
            if inserted {
                new.push((i, id));
            } else {
                conflicted.push(i);
            }
        }
        pending.clear();
        if conflicted.is_empty() {
            break;
        }
        // A pending job has the key (committed: the conflict waited for
        // it), unless it finished meanwhile: then try again.
        let keys: Vec<&str> = conflicted
            .iter()
            .filter_map(|&i| jobs[i].unique_key.as_deref())
            .collect();
        let rows = tx.query(
            &format!(
                "SELECT unique_key, id FROM ember_jobs WHERE unique_key = ANY($1) \
                 AND state IN {PENDING}"
            ),
            &[&keys],
        )?;
        let mut found: HashMap<String, JobId> = HashMap::new();
        for r in rows {
            found.insert(r.try_get(0)?, r.try_get(1)?);
        }
        for i in conflicted {
            match jobs[i].unique_key.as_ref().and_then(|k| found.get(k)) {
                Some(&id) => out[i] = Some(Ok(Inserted::Existing(id))),
                None => pending.push(i),
            }
        }
    }
    for i in pending {
        out[i] = Some(Err(StoreError::Backend(
            "the pending job with the same unique key keeps changing: enqueue again".into(),
        )));
    }
    if !new.is_empty() {
        let ids: Vec<JobId> = new.iter().map(|&(_, id)| id).collect();
        let data: Vec<Value> = new
            .iter()
            .map(|&(i, _)| json!({ "state": state_of(&jobs[i]).as_str(), "attempt": 0 }))
            .collect();
        let seqs = append_events(tx, &ids, "state", &data, now)?;
        let mut queues: Vec<&str> = Vec::new();
        for ((i, id), (data, seq)) in new.into_iter().zip(data.into_iter().zip(seqs)) {
            if !queues.contains(&jobs[i].queue.as_str()) {
                queues.push(&jobs[i].queue);
            }
            out[i] = Some(Ok(Inserted::New(
                id,
                Event {
                    seq,
                    job: id,
                    kind: "state".to_owned(),
                    data,
                },
            )));
        }
        tx.execute(
            "SELECT pg_notify($1, q) FROM UNNEST($2::text[]) AS q",
            &[&CHANNEL, &queues],
        )?;
    }
    for (i, leader) in follows {
        out[i] = Some(match &out[leader] {
            Some(Ok(first)) => Ok(Inserted::Existing(first.id())),
            Some(Err(e)) => Err(StoreError::Backend(e.to_string())),
            None => Err(StoreError::Backend("not inserted".into())),
        });
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(StoreError::Backend("not inserted".into()))))
        .collect())
}

/// Appends one event per job of `ids` (each job once), in that order, in
/// `tx` with one statement; their sequence numbers, in the same order.
fn append_events(
    tx: &mut Transaction<'_>,
    ids: &[JobId],
    kind: &str,
    data: &[Value],
    at: Millis,
) -> Result<Vec<i64>, postgres::Error> {
    let texts: Vec<String> = data.iter().map(Value::to_string).collect();
    let rows = tx.query(
        "INSERT INTO ember_job_events (job_id, type, data, at) \
         SELECT j, $3::text, d, $4::int8 FROM UNNEST($1::int8[], $2::text[]) WITH ORDINALITY AS t(j, d, o) \
         ORDER BY o RETURNING job_id, seq",
        &[&ids, &texts, &kind, &at],
    )?;
    let mut by_job: HashMap<JobId, i64> = HashMap::with_capacity(rows.len());
    for r in rows {
        by_job.insert(r.try_get(0)?, r.try_get(1)?);
    }
    Ok(ids
        .iter()
        .map(|id| by_job.get(id).copied().unwrap_or(0))
        .collect())
}

/// Splits a batch of enqueues by unique key: the writes that insert (the
/// first of each key, and every write without one), and for each later
/// write of a key the earlier write whose id it gets, as if the batch's
/// writes ran one after the other.
pub(crate) fn unique_leaders(keys: &[Option<&str>]) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut leaders: HashMap<&str, usize> = HashMap::new();
    let mut follows = Vec::new();
    let mut pending = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match key {
            Some(k) => match leaders.entry(k) {
                Entry::Occupied(e) => follows.push((i, *e.get())),
                Entry::Vacant(e) => {
                    e.insert(i);
                    pending.push(i);
                }
            },
            None => pending.push(i),
        }
    }
    (pending, follows)
}

/// Splits the writes `left` (indices into a batch, in batch order) into a
/// round that writes each job once — the first write of each job, in job
/// id order, the order rows are locked in by every node's batches — and
/// the writes left for later rounds.
pub(crate) fn next_round(
    left: Vec<usize>,
    job_of: impl Fn(usize) -> JobId,
) -> (Vec<usize>, Vec<usize>) {
    let mut seen = HashSet::new();
    let (mut round, later): (Vec<usize>, Vec<usize>) =
        left.into_iter().partition(|&i| seen.insert(job_of(i)));
    round.sort_by_key(|&i| job_of(i));
    (round, later)
}

/// Records the successes `done` (job, token, result) in `tx` with one
/// multi-row `UPDATE` per round, each checking its own fencing token: a
/// stale one is refused alone ([`StoreError::Fenced`]), the others are
/// recorded. A job written twice in the batch takes two rounds, the second
/// after the first, as if written one after the other.
fn succeed_batch(
    tx: &mut Transaction<'_>,
    done: &[(JobId, i64, String)],
) -> Result<Vec<Result<Event, StoreError>>, postgres::Error> {
    let now = now_ms();
    let mut out: Vec<Option<Result<Event, StoreError>>> = done.iter().map(|_| None).collect();
    let mut left: Vec<usize> = (0..done.len()).collect();
    while !left.is_empty() {
        let (round, later) = next_round(left, |i| done[i].0);
        left = later;
        let ids: Vec<JobId> = round.iter().map(|&i| done[i].0).collect();
        let tokens: Vec<i64> = round.iter().map(|&i| done[i].1).collect();
        let results: Vec<&str> = round.iter().map(|&i| done[i].2.as_str()).collect();
        let rows = tx.query(
            "UPDATE ember_jobs j SET state = 'succeeded', result = t.result, error = NULL, \
             lease_owner = NULL, lease_until = NULL, completions = j.completions + 1, \
             finished_at = $4 \
             FROM UNNEST($1::int8[], $2::int8[], $3::text[]) AS t(id, token, result) \
             WHERE j.id = t.id AND j.token = t.token AND j.state = 'running' \
             RETURNING j.id, j.attempt",
            &[&ids, &tokens, &results, &now],
        )?;
        let mut attempts: HashMap<JobId, u32> = HashMap::with_capacity(rows.len());
        for r in rows {
            attempts.insert(r.try_get(0)?, r.try_get::<_, i32>(1)?.max(0) as u32);
        }
        let refused: Vec<JobId> = ids
            .iter()
            .copied()
            .filter(|id| !attempts.contains_key(id))
            .collect();
        let mut exist = HashSet::new();
        if !refused.is_empty() {
            for r in tx.query("SELECT id FROM ember_jobs WHERE id = ANY($1)", &[&refused])? {
                exist.insert(r.try_get::<_, JobId>(0)?);
            }
        }
        let written: Vec<(usize, JobId, Value)> = round
            .iter()
            .filter_map(|&i| {
                let id = done[i].0;
                attempts
                    .get(&id)
                    .map(|&a| (i, id, json!({ "state": "succeeded", "attempt": a })))
            })
            .collect();
        let ids: Vec<JobId> = written.iter().map(|w| w.1).collect();
        let data: Vec<Value> = written.iter().map(|w| w.2.clone()).collect();
        let seqs = if ids.is_empty() {
            Vec::new()
        } else {
            append_events(tx, &ids, "state", &data, now)?
        };
        for ((i, id, data), seq) in written.into_iter().zip(seqs) {
            out[i] = Some(Ok(Event {
                seq,
                job: id,
                kind: "state".to_owned(),
                data,
            }));
        }
        for &i in &round {
            if out[i].is_none() {
                out[i] = Some(Err(if exist.contains(&done[i].0) {
                    StoreError::Fenced
                } else {
                    StoreError::NotFound
                }));
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(StoreError::Backend("not written".into()))))
        .collect())
}

/// Records a success in `tx` alone (the way a write goes when its group
/// commit failed).
fn succeed_in(
    tx: &mut Transaction<'_>,
    id: JobId,
    token: i64,
    result: &str,
) -> Result<Event, StoreError> {
    let attempt = fenced(tx, id, token)?;
    tx.execute(
        "UPDATE ember_jobs SET state = 'succeeded', result = $2, error = NULL, \
         lease_owner = NULL, lease_until = NULL, completions = completions + 1, \
         finished_at = $3 WHERE id = $1",
        &[&id, &result, &now_ms()],
    )?;
    state_event(tx, id, JobState::Succeeded, attempt, None)
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
fn lock_dispatch(
    tx: &mut Transaction<'_>,
    owner: &str,
    queue: &str,
) -> Result<(), postgres::Error> {
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

    /// [`PgStore::connect`] with `connections` connections serving calls
    /// (at least 2), besides the listener's: up to two of them run the
    /// group commits of enqueues and completions, the others the rest.
    pub fn connect_with(url: &str, connections: usize) -> Result<PgStore, StoreError> {
        let mut first = connect(url)?;
        migrate(&mut first)?;
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            stop: AtomicBool::new(false),
            wake: Mutex::new(None),
        });
        let connections = connections.max(2);
        let writers = WRITERS.min(connections - 1);
        let (tx, rx) = mpsc::channel::<Work>();
        let rx = Arc::new(Mutex::new(rx));
        let (wtx, wrx) = mpsc::channel::<Write>();
        let wrx = Arc::new(Mutex::new(wrx));
        let mut clients = vec![first];
        for _ in 1..connections {
            clients.push(connect(url)?);
        }
        for (i, client) in clients.into_iter().enumerate() {
            let shared = shared.clone();
            let spawned = if i < writers {
                let wrx = wrx.clone();
                std::thread::Builder::new()
                    .name(format!("ember-jobs-pg-writer-{i}"))
                    .spawn(move || write_loop(shared, client, wrx))
            } else {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("ember-jobs-pg-{i}"))
                    .spawn(move || serve(shared, client, rx))
            };
            spawned.map_err(backend)?;
        }
        let listener = shared.clone();
        std::thread::Builder::new()
            .name("ember-jobs-pg-listen".into())
            .spawn(move || listen(listener))
            .map_err(backend)?;
        Ok(PgStore {
            shared,
            work: Mutex::new(Some(tx)),
            writes: Mutex::new(Some(wtx)),
        })
    }

    /// Queues `write` for the next group commit; a store already dropped
    /// drops it (its caller sees an error).
    fn submit(&self, write: Write) {
        if let Some(w) = &*self.writes.lock() {
            let _ = w.send(write);
        }
    }

    /// A write answered through a blocking channel, and the wait for it.
    fn write_blocking<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Write,
    ) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.submit(make(Box::new(move |r| {
            let _ = reply.send(r);
        })));
        answer
            .recv()
            .unwrap_or_else(|_| Err(StoreError::Backend("the write was not committed".into())))
    }

    /// A write answered through a future, so that the caller's thread is
    /// free while it waits for the commit.
    fn write_async<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Write,
    ) -> StoreFuture<T> {
        let (reply, answer) = ember_runtime::sync::oneshot::channel();
        self.submit(make(Box::new(move |r| {
            let _ = reply.send(r);
        })));
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(StoreError::Backend("the write was not committed".into())))
        })
    }

    /// Runs `f` on one of the store's connections, answered through a
    /// future.
    fn call_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        let (reply, answer) = ember_runtime::sync::oneshot::channel();
        let work: Work = Box::new(move |client| {
            let _ = reply.send(f(client));
        });
        if let Some(w) = &*self.work.lock() {
            let _ = w.send(work);
        }
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(StoreError::Backend("the store's connection died".into())))
        })
    }

    /// Runs `f` in one transaction on one of the store's connections,
    /// answered through a future.
    fn tx_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        self.call_async(move |client| {
            let mut tx = client.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
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
        // The serving threads end when the channels close (the writers
        // once they have committed and answered what is queued).
        self.work.lock().take();
        self.writes.lock().take();
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

/// Claims in `tx` (see [`Store::claim`]): takes the lock of `owner`'s
/// dispatching of `queue`, asks whether the claimer lives, then claims and
/// appends the claims' events in one statement.
fn claim_in(tx: &mut Transaction<'_>, req: &ClaimRequest) -> Result<Vec<Claimed>, postgres::Error> {
    if req.limit == 0 {
        return Ok(Vec::new());
    }
    // Ordered with `release` of the same owner and queue by their
    // lock: a release that ran first sees the claimer dead, one
    // that waits for this transaction sees its claims.
    lock_dispatch(tx, &req.owner, &req.queue)?;
    if !req.claimer.is_alive() {
        return Ok(Vec::new());
    }
    let limit = req.limit.min(i64::MAX as usize) as i64;
    // The rows are locked by `picked` (skipping those another transaction
    // holds), so each job's event is appended while its row is locked;
    // events are numbered in claim order (priority, run_at, id).
    let rows = tx.query(
        "WITH picked AS (SELECT id FROM ember_jobs WHERE queue = $1 \
               AND state IN ('queued', 'scheduled', 'retrying') AND run_at <= $2 \
               ORDER BY priority, run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED), \
             claimed AS (UPDATE ember_jobs j SET state = 'running', attempt = j.attempt + 1, \
               token = j.token + 1, lease_owner = $4, lease_until = $5, node = $6 \
             FROM picked WHERE j.id = picked.id \
             RETURNING j.id, j.kind, j.args, j.attempt, j.max_attempts, j.token, \
               j.timeout_ms, j.backoff_base_ms, j.backoff_max_ms, j.priority, j.run_at, \
               j.memory_limit), \
             ev AS (INSERT INTO ember_job_events (job_id, type, data, at) \
               SELECT id, 'state', '{\"attempt\":' || attempt || ',\"state\":\"running\"}', $2 \
               FROM claimed ORDER BY priority, run_at, id RETURNING job_id, seq) \
         SELECT c.id, c.kind, c.args, c.attempt, c.max_attempts, c.token, c.timeout_ms, \
           c.backoff_base_ms, c.backoff_max_ms, c.memory_limit, ev.seq \
         FROM claimed c JOIN ev ON ev.job_id = c.id ORDER BY ev.seq",
        &[
            &req.queue,
            &req.now,
            &limit,
            &req.owner,
            &req.lease_until,
            &req.node,
        ],
    )?;
    let mut claimed = Vec::with_capacity(rows.len());
    for r in rows {
        let id: JobId = r.try_get(0)?;
        let args: String = r.try_get(2)?;
        let attempt = r.try_get::<_, i32>(3)?.max(0) as u32;
        claimed.push(Claimed {
            id,
            kind: r.try_get(1)?,
            args: serde_json::from_str(&args).unwrap_or(Value::Null),
            attempt,
            max_attempts: r.try_get::<_, i32>(4)?.max(0) as u32,
            token: r.try_get(5)?,
            timeout_ms: r.try_get::<_, Option<i64>>(6)?.map(|t| t.max(0) as u64),
            backoff: Backoff {
                base_ms: r.try_get::<_, i64>(7)?.max(0) as u64,
                max_ms: r.try_get::<_, i64>(8)?.max(0) as u64,
            },
            memory_limit: r.try_get::<_, Option<i64>>(9)?.map(|m| m.max(0) as u64),
            event: Event {
                seq: r.try_get(10)?,
                job: id,
                kind: "state".to_owned(),
                data: json!({ "state": JobState::Running.as_str(), "attempt": attempt }),
            },
        });
    }
    Ok(claimed)
}

/// The earliest `run_at` of a waiting job of `queue` (see
/// [`Store::next_run_at`]).
fn next_run_at_in(
    c: &mut impl postgres::GenericClient,
    queue: &str,
) -> Result<Option<Millis>, StoreError> {
    let row = c.query_one(
        "SELECT MIN(run_at) FROM ember_jobs WHERE queue = $1 \
         AND state IN ('queued', 'scheduled', 'retrying')",
        &[&queue],
    )?;
    row.try_get(0).map_err(backend)
}

const PENDING: &str = "('scheduled', 'queued', 'running', 'retrying')";

impl Store for PgStore {
    fn insert(&self, job: &NewJob) -> Result<Inserted, StoreError> {
        let job = job.clone();
        self.write_blocking(move |reply| Write::Insert(job, reply))
    }

    fn insert_async(&self, job: NewJob) -> StoreFuture<Inserted> {
        self.write_async(move |reply| Write::Insert(job, reply))
    }

    fn succeed_async(&self, id: JobId, token: i64, result: Value) -> StoreFuture<Event> {
        let result = result.to_string();
        self.write_async(move |reply| Write::Succeed(id, token, result, reply))
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
        let req = ClaimRequest {
            queue,
            node,
            owner,
            claimer,
            now,
            lease_until,
            limit,
        };
        self.tx_async(move |tx| Ok(claim_in(tx, &req)?))
    }

    fn complete_and_claim(&self, done: Vec<Completion>, claim: ClaimRequest) -> TurnFuture {
        if done.is_empty() && claim.limit == 0 {
            return Box::pin(std::future::ready(Turn {
                completed: Vec::new(),
                claimed: Ok(Vec::new()),
            }));
        }
        let n = done.len();
        let done = done
            .into_iter()
            .map(|c| (c.id, c.token, c.result.to_string()))
            .collect();
        let (reply, answer) = ember_runtime::sync::oneshot::channel();
        self.submit(Write::Turn(
            done,
            claim,
            Box::new(move |t| {
                let _ = reply.send(t);
            }),
        ));
        Box::pin(async move {
            answer.await.unwrap_or_else(|_| {
                let e = || StoreError::Backend("the write was not committed".into());
                Turn {
                    completed: (0..n).map(|_| Err(e())).collect(),
                    claimed: Err(e()),
                }
            })
        })
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
        let req = ClaimRequest {
            queue: queue.to_owned(),
            node: node.to_owned(),
            owner: owner.to_owned(),
            claimer: claimer.clone(),
            now,
            lease_until,
            limit,
        };
        self.tx(move |tx| Ok(claim_in(tx, &req)?))
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
            if leases.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<JobId> = leases.iter().map(|l| l.0).collect();
            let tokens: Vec<i64> = leases.iter().map(|l| l.1).collect();
            // Two statements, not one per lease: the rows are locked first,
            // in id order (the order a group commit's successes lock
            // them in), so a heartbeat and a batch do not deadlock.
            tx.execute(
                "SELECT id FROM ember_jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &[&ids],
            )?;
            let rows = tx.query(
                "UPDATE ember_jobs j SET lease_until = $4 \
                 FROM UNNEST($1::int8[], $2::int8[]) AS t(id, token) \
                 WHERE j.id = t.id AND j.token = t.token AND j.lease_owner = $3 \
                 AND j.state = 'running' RETURNING j.id, j.cancel_requested",
                &[&ids, &tokens, &owner, &lease_until],
            )?;
            let mut held: HashMap<JobId, bool> = HashMap::with_capacity(rows.len());
            for r in rows {
                held.insert(
                    r.try_get(0).map_err(backend)?,
                    r.try_get(1).map_err(backend)?,
                );
            }
            Ok(leases
                .iter()
                .map(|&(id, _)| match held.get(&id) {
                    Some(&cancel) => (id, true, cancel),
                    None => (id, false, false),
                })
                .collect())
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
        self.write_blocking(move |reply| Write::Succeed(id, token, result, reply))
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
        self.call(move |c| next_run_at_in(c, &queue))
    }

    fn next_run_at_async(&self, queue: String) -> StoreFuture<Option<Millis>> {
        self.call_async(move |c| next_run_at_in(c, &queue))
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
