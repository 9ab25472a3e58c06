//! The store behind the job system: what a backend must provide, and the
//! records it keeps. [`crate::SqliteStore`] is the embedded implementation;
//! [`crate::PgStore`] the shared one for a cluster, which claims with
//! `FOR UPDATE SKIP LOCKED` and wakes other nodes' dispatchers with
//! `LISTEN/NOTIFY` behind the same trait.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A job's id: positive, increasing in enqueue order.
pub type JobId = i64;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The states of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its `run_at`.
    Scheduled,
    /// Ready to run, waiting for a slot of its queue.
    Queued,
    /// Claimed by a node and running in a process there.
    Running,
    /// Failed an attempt; waiting for its backoff before the next.
    Retrying,
    /// Done, with a result.
    Succeeded,
    /// Out of attempts (or failed without retry), with the last error.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The state's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job will never run again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown state {s:?}"))
    }
}

/// Retry delays: `base` doubling per attempt, capped at `max`, with ±20 %
/// jitter (never above `max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// The delay after the first failed attempt, in ms.
    pub base_ms: u64,
    /// The longest delay, in ms.
    pub max_ms: u64,
}

impl Default for Backoff {
    /// From 1 s, doubling, capped at 5 minutes.
    fn default() -> Backoff {
        Backoff {
            base_ms: 1_000,
            max_ms: 300_000,
        }
    }
}

impl Backoff {
    /// The delay before the attempt after failed attempt `attempt` (1-based),
    /// before jitter.
    pub fn nominal_ms(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(40);
        self.base_ms.saturating_mul(1u64 << shift).min(self.max_ms)
    }

    /// The delay with jitter: uniform in ±20 % of the nominal, capped at `max_ms`.
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        let nominal = self.nominal_ms(attempt) as f64;
        let r = getrandom::u32().unwrap_or(1 << 31) as f64 / u32::MAX as f64;
        ((nominal * (0.8 + 0.4 * r)) as u64).min(self.max_ms)
    }
}

/// A job to insert.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// Its kind (a registered name).
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Its arguments, already validated for the kind.
    pub args: Value,
    /// Lower runs first.
    pub priority: i64,
    /// Attempts before it fails for good (at least 1).
    pub max_attempts: u32,
    /// The soft timeout of each attempt, if any.
    pub timeout_ms: Option<u64>,
    /// The memory limit of each attempt's process, in bytes, if any.
    pub memory_limit: Option<u64>,
    /// While a job with this key is pending (not final), enqueueing another
    /// returns the first's id.
    pub unique_key: Option<String>,
    /// When it may run first.
    pub run_at: Millis,
    /// Its retry delays.
    pub backoff: Backoff,
}

/// What [`Store::insert`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Inserted {
    /// A new job, and the event that records its first state.
    New(JobId, Event),
    /// A pending job with the same unique key exists: its id.
    Existing(JobId),
}

impl Inserted {
    /// The id either way.
    pub fn id(&self) -> JobId {
        match self {
            Inserted::New(id, _) | Inserted::Existing(id) => *id,
        }
    }
}

/// A job taken by a node: what its process needs to run it.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// Its id.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its arguments.
    pub args: Value,
    /// This attempt, from 1.
    pub attempt: u32,
    /// Its limit of attempts.
    pub max_attempts: u32,
    /// The fencing token of this claim: every later write must carry it.
    pub token: i64,
    /// The soft timeout of the attempt.
    pub timeout_ms: Option<u64>,
    /// The memory limit of the attempt's process, in bytes.
    pub memory_limit: Option<u64>,
    /// Its retry delays.
    pub backoff: Backoff,
    /// The event recording the claim.
    pub event: Event,
}

/// One stored event of a job: a state change or a progress report. `seq`
/// increases over the whole store, so it is the SSE event id.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// The event's sequence number.
    pub seq: i64,
    /// The job.
    pub job: JobId,
    /// `"state"` or `"progress"`.
    pub kind: String,
    /// `{"state", "attempt", "error"?}` or `{"pct", "message", "data"?}`.
    pub data: Value,
}

impl Event {
    /// The state this event moves its job to, for a state event.
    pub fn state(&self) -> Option<JobState> {
        if self.kind != "state" {
            return None;
        }
        self.data.get("state")?.as_str()?.parse().ok()
    }
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobRecord {
    /// Its id.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Its arguments.
    pub args: Value,
    /// Its state (a `scheduled` job whose time has come shows `queued`).
    pub state: JobState,
    /// Lower runs first.
    pub priority: i64,
    /// Attempts started so far.
    pub attempt: u32,
    /// Its limit of attempts.
    pub max_attempts: u32,
    /// The soft timeout of each attempt.
    pub timeout_ms: Option<u64>,
    /// The memory limit of each attempt's process, in bytes.
    pub memory_limit: Option<u64>,
    /// Its uniqueness key.
    pub unique_key: Option<String>,
    /// When it runs next (or ran last).
    pub run_at: Millis,
    /// The last progress percentage reported.
    pub progress_pct: Option<f64>,
    /// The last progress message reported.
    pub progress_message: Option<String>,
    /// The last progress data reported.
    pub progress_data: Option<Value>,
    /// Its result, once succeeded.
    pub result: Option<Value>,
    /// The last error.
    pub error: Option<String>,
    /// The node that ran (or runs) its last attempt.
    pub node: Option<String>,
    /// How many times it was recorded as succeeded (1 at most, by fencing).
    pub completions: u32,
    /// Whether a cancel was asked while it ran.
    pub cancel_requested: bool,
}

/// Progress reported by a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Percent done, 0–100.
    pub pct: f64,
    /// A status line.
    pub message: String,
    /// Anything else, as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// What [`Store::cancel`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum CancelOutcome {
    /// No such job.
    NotFound,
    /// It had finished already, in this state.
    Final(JobState),
    /// It was waiting and is now cancelled.
    Cancelled(Event),
    /// It is running: the cancel is recorded for its node to act on.
    Requested {
        /// The node running it.
        node: Option<String>,
        /// Its queue.
        queue: String,
    },
}

/// How a failed attempt continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Another attempt at this time.
    At(Millis),
    /// No more attempts: the job fails.
    Never,
}

/// Why a store operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The claim's token is no longer the job's (another node took it over,
    /// or the job was cancelled or recovered): the write is refused.
    Fenced,
    /// No such job.
    NotFound,
    /// The backend failed.
    Backend(String),
    /// The system refused its configuration (e.g. a cron entry whose
    /// expression does not parse).
    Invalid(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Fenced => f.write_str("fenced: the job's lease belongs to another claim"),
            StoreError::NotFound => f.write_str("no such job"),
            StoreError::Backend(e) => write!(f, "store: {e}"),
            StoreError::Invalid(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for StoreError {}

/// What a store calls with a queue's name when jobs of that queue became
/// due elsewhere (another node enqueued them): see [`Store::on_wake`].
pub type Wake = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Whom a claim is for. The store asks [`Claimer::is_alive`] inside the
/// claim's transaction, ordered with [`Store::release`] of the same owner
/// and queue, and claims nothing for a claimer that died: an Ember process
/// killed inside a poll is dead for everyone at once, but the rest of that
/// poll still runs, and a claim it sends then must not commit after its
/// successor took the queue's jobs back (nobody would run them until the
/// lease ran out).
#[derive(Clone)]
pub struct Claimer(std::sync::Arc<dyn Fn() -> bool + Send + Sync>);

impl Claimer {
    /// A claimer whose life `alive` tells.
    pub fn new(alive: impl Fn() -> bool + Send + Sync + 'static) -> Claimer {
        Claimer(std::sync::Arc::new(alive))
    }

    /// The Ember process `pid` of the calling runtime.
    ///
    /// # Panics
    ///
    /// Outside an Ember runtime.
    pub fn process(pid: ember_runtime::Pid) -> Claimer {
        let runtime = ember_runtime::Handle::current();
        Claimer::new(move || runtime.is_alive(pid))
    }

    /// A claimer that never dies (tools, tests).
    pub fn always() -> Claimer {
        Claimer::new(|| true)
    }

    /// Whether the claimer still lives.
    pub fn is_alive(&self) -> bool {
        (self.0)()
    }
}

impl fmt::Debug for Claimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claimer").finish_non_exhaustive()
    }
}

/// A store operation's result, to be awaited: a backend that batches
/// writes (group commit) lets many callers wait for one commit without
/// blocking their threads.
pub type StoreFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send>>;

/// A finished attempt's success, handed to [`Store::complete_and_claim`]
/// by its dispatcher.
#[derive(Clone, Debug)]
pub struct Completion {
    /// The job.
    pub id: JobId,
    /// The fencing token of the attempt's claim.
    pub token: i64,
    /// The attempt's result.
    pub result: Value,
}

/// What a claim asks for (see [`Store::claim`]).
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    /// The queue.
    pub queue: String,
    /// The node recorded as running the jobs.
    pub node: String,
    /// The lease owner (this life of the node).
    pub owner: String,
    /// Whom the claim is for: nothing is claimed once it died.
    pub claimer: Claimer,
    /// The time that decides which jobs are due.
    pub now: Millis,
    /// The end of the leases taken.
    pub lease_until: Millis,
    /// The most jobs to claim (0: claim nothing).
    pub limit: usize,
}

/// What [`Store::complete_and_claim`] did: each completion's own outcome
/// (in order) and the claim's.
#[derive(Debug)]
pub struct Turn {
    /// For each completion, its `succeeded` event or why it was refused
    /// ([`StoreError::Fenced`], [`StoreError::NotFound`]) or not written.
    pub completed: Vec<Result<Event, StoreError>>,
    /// The jobs claimed, or why the claim failed.
    pub claimed: Result<Vec<Claimed>, StoreError>,
}

/// A [`Turn`] to be awaited.
pub type TurnFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Turn> + Send>>;

/// A durable job store. Every method is one transaction (a store may split
/// [`Store::complete_and_claim`] in several); every write made on behalf
/// of a running attempt carries the attempt's fencing token and is refused
/// ([`StoreError::Fenced`]) once the token is stale.
pub trait Store: Send + Sync + 'static {
    /// Inserts a job (or finds the pending one with its unique key).
    fn insert(&self, job: &NewJob) -> Result<Inserted, StoreError>;

    /// Claims up to `limit` due jobs of `queue` for `owner` (a lease until
    /// `lease_until`, recorded as run by `node`), lowest priority first, then
    /// earliest `run_at`, then lowest id. Each claim bumps the job's token.
    /// Nothing is claimed if `claimer` is dead when the transaction runs,
    /// which must be ordered with `release(owner, queue)`: a release that
    /// ran first sees the claimer dead, one that runs after sees the claim.
    #[allow(clippy::too_many_arguments)]
    fn claim(
        &self,
        queue: &str,
        node: &str,
        owner: &str,
        claimer: &Claimer,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Extends the leases of `owner`'s running jobs `(id, token)` to
    /// `lease_until`. Returns, for each, whether the lease is still held
    /// and whether a cancel was asked.
    fn heartbeat(
        &self,
        owner: &str,
        leases: &[(JobId, i64)],
        lease_until: Millis,
    ) -> Result<Vec<(JobId, bool, bool)>, StoreError>;

    /// Records progress of the attempt holding `token`.
    fn progress(&self, id: JobId, token: i64, progress: &Progress) -> Result<Event, StoreError>;

    /// Records the attempt's success and result.
    fn succeed(&self, id: JobId, token: i64, result: &Value) -> Result<Event, StoreError>;

    /// [`Store::insert`], awaited rather than blocking: resolves once the
    /// job is durable. By default the blocking call, done at once.
    fn insert_async(&self, job: NewJob) -> StoreFuture<Inserted> {
        let out = self.insert(&job);
        Box::pin(std::future::ready(out))
    }

    /// [`Store::claim`], awaited rather than blocking: resolves once the
    /// claims are durable. By default the blocking call, done at once.
    #[allow(clippy::too_many_arguments)]
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
        let out = self.claim(&queue, &node, &owner, &claimer, now, lease_until, limit);
        Box::pin(std::future::ready(out))
    }

    /// [`Store::succeed`], awaited rather than blocking: resolves once the
    /// outcome is durable. By default the blocking call, done at once.
    fn succeed_async(&self, id: JobId, token: i64, result: Value) -> StoreFuture<Event> {
        let out = self.succeed(id, token, &result);
        Box::pin(std::future::ready(out))
    }

    /// A dispatcher's turn: records the successes `done` (each checked
    /// against its own token, as [`Store::succeed`] does: a stale one is
    /// refused alone), then claims as [`Store::claim`] does for `claim`,
    /// resolving once both are durable. A store that can does both in one
    /// transaction, so that a queue's runner that finished jobs and wants
    /// the next ones pays one round trip and one commit for both (the
    /// PostgreSQL store does). By default: every success and the claim are
    /// sent at once, in that order ([`Store::succeed_async`] for each, then
    /// [`Store::claim_async`]), then awaited (the SQLite store's writer
    /// runs them in that order, most often in one group commit).
    fn complete_and_claim(&self, done: Vec<Completion>, claim: ClaimRequest) -> TurnFuture {
        let completions: Vec<StoreFuture<Event>> = done
            .into_iter()
            .map(|c| self.succeed_async(c.id, c.token, c.result))
            .collect();
        let claimed = self.claim_async(
            claim.queue,
            claim.node,
            claim.owner,
            claim.claimer,
            claim.now,
            claim.lease_until,
            claim.limit,
        );
        Box::pin(async move {
            let mut completed = Vec::with_capacity(completions.len());
            for c in completions {
                completed.push(c.await);
            }
            Turn {
                completed,
                claimed: claimed.await,
            }
        })
    }

    /// Records the attempt's failure: `retrying` until `retry`, or `failed`.
    fn fail(&self, id: JobId, token: i64, error: &str, retry: Retry) -> Result<Event, StoreError>;

    /// Records that the running attempt was stopped by a cancel.
    fn finish_cancelled(&self, id: JobId, token: i64) -> Result<Event, StoreError>;

    /// Cancels a waiting job, or asks the node running it to stop it.
    fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreError>;

    /// Takes back running jobs whose lease expired before `now`, and those
    /// of `node` held by another owner than `owner` (an earlier life of this
    /// node): each is retried at once if it has attempts left (cancelled if
    /// a cancel was asked, failed otherwise). Returns their events.
    fn recover(&self, node: &str, owner: &str, now: Millis) -> Result<Vec<Event>, StoreError>;

    /// Takes back (as `recover` does) the running jobs of `queue` claimed by
    /// `owner`: a restarted dispatcher's jobs, whose processes died with
    /// the dispatcher they were linked to.
    fn release(&self, owner: &str, queue: &str) -> Result<Vec<Event>, StoreError>;

    /// One job.
    fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError>;

    /// Jobs in id order after `after`, optionally in one state, at most
    /// `limit`; with `newest_first`, in decreasing id order below `after`
    /// (if given).
    fn list(
        &self,
        state: Option<JobState>,
        limit: usize,
        after: Option<JobId>,
        newest_first: bool,
    ) -> Result<Vec<JobRecord>, StoreError>;

    /// Runs a `failed` or `cancelled` job again: `queued` now, with one more
    /// attempt allowed if it had used them all. `Ok(None)` if it is in
    /// another state.
    fn retry(&self, id: JobId) -> Result<Option<Event>, StoreError>;

    /// A job's events after sequence number `after`, in order.
    fn events(&self, id: JobId, after: i64) -> Result<Vec<Event>, StoreError>;

    /// The earliest `run_at` of a waiting job of `queue`.
    fn next_run_at(&self, queue: &str) -> Result<Option<Millis>, StoreError>;

    /// [`Store::next_run_at`], awaited rather than blocking. By default
    /// the blocking call, done at once.
    fn next_run_at_async(&self, queue: String) -> StoreFuture<Option<Millis>> {
        let out = self.next_run_at(&queue);
        Box::pin(std::future::ready(out))
    }

    /// The queues that have jobs not yet final.
    fn pending_queues(&self) -> Result<Vec<String>, StoreError>;

    /// Counts of jobs by state.
    fn counts(&self) -> Result<Vec<(JobState, u64)>, StoreError>;

    /// Fires slot `slot` (ms since the epoch) of cron entry `entry`, whose
    /// expression is `expression`: in one transaction, records `slot` as the
    /// entry's last slot and inserts `job` (as [`Store::insert`] does), only
    /// if `slot` is newer than the last slot recorded. `Ok(None)`, nothing
    /// written, if it is not: another node (or an earlier life of this one)
    /// fired it or a later one. So each slot makes one job, however many
    /// nodes fire it at once.
    fn fire_cron(
        &self,
        entry: &str,
        expression: &str,
        slot: Millis,
        job: &NewJob,
    ) -> Result<Option<Inserted>, StoreError>;

    /// What the store keeps of every cron entry ever fired, by name.
    fn cron_entries(&self) -> Result<Vec<crate::cron::CronRecord>, StoreError>;

    /// Sets what to call when another node (sharing this store) makes jobs
    /// of a queue due, e.g. from PostgreSQL's `LISTEN/NOTIFY`; it may be
    /// called from any thread. A store only this node uses never calls it
    /// (the default).
    fn on_wake(&self, wake: Wake) {
        let _ = wake;
    }
}
