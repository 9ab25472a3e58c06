//! Ember's durable jobs: long work that never occupies a request handler.
//!
//! * **Kinds** are Rust types implementing [`JobKind`] (or closures given to
//!   [`JobsBuilder::kind_fn`]) with typed, serde-serialised arguments.
//! * [`Jobs::enqueue`] stores the job and returns its id at once.
//! * Each queue has a **dispatcher** process (under a dynamic supervisor)
//!   that claims due jobs from the [`Store`] up to the queue's concurrency
//!   limit, lowest `priority` first, and starts each as its own Ember
//!   process under the jobs' dynamic supervisor. Cancel and hard timeouts
//!   are exit signals to that process.
//! * Claims are **leases** with heartbeats and a **fencing token**: every
//!   write of an attempt (progress, result, error) carries the token, and
//!   the store refuses it once the job was taken back. A node that restarts
//!   takes back at once the jobs its earlier life was running; other
//!   nodes' jobs come back when their leases expire.
//! * A job reports **progress** through its [`JobContext`]; every update and
//!   state change is a stored [`Event`], broadcast live ([`Jobs::subscribe`])
//!   and replayable ([`Jobs::events`]).
//! * Failed attempts are retried after an exponential [`Backoff`] with
//!   jitter, up to `max_attempts`, then the job is `failed` with its last
//!   error. Timeouts are soft (the job is told: [`JobContext::wrap_up`],
//!   [`SoftTimeout`]) then hard (killed after the grace period).
//!
//! Delivery is at least once: see `docs/semantics.md`, "Durable jobs".
//!
//! ```
//! use ember_jobs::{EnqueueOptions, Jobs, JobsConfig, SqliteStore};
//!
//! # let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
//! # rt.block_on(async {
//! let store = SqliteStore::in_memory().unwrap();
//! let jobs = Jobs::builder(store, JobsConfig::default())
//!     .kind_fn("double", Default::default(), |ctx, n: u64| async move {
//!         ctx.progress(50.0, "halfway");
//!         Ok(serde_json::json!(n * 2))
//!     })
//!     .start()
//!     .await
//!     .unwrap();
//! let id = jobs
//!     .enqueue_json("double", serde_json::json!(21), EnqueueOptions::default())
//!     .await
//!     .unwrap();
//! let done = jobs.wait_final(id, std::time::Duration::from_secs(5)).await.unwrap();
//! assert_eq!(done.result, Some(serde_json::json!(42)));
//! # });
//! ```

#![forbid(unsafe_code)]

mod cron;
mod dispatcher;
mod kind;
#[cfg(all(test, feature = "loom-models"))]
mod loom_models;
#[cfg(all(test, feature = "loom-models"))]
mod loom_pg_batch;
#[cfg(all(test, feature = "loom-models"))]
mod loom_turn;
#[cfg(all(test, feature = "loom-models"))]
mod loom_wake;
mod postgres;
mod sqlite;
mod store;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_otp::dynamic_supervisor::{DynamicSupervisorRef, DynamicSupervisorSpec};
use ember_otp::supervisor::{Restart, Shutdown};
use ember_runtime::Pid;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::broadcast;

pub use cron::{cron_key, CronInfo, CronRecord, CronSchedule};
pub use kind::{JobContext, JobError, JobKind, KindOptions, SoftTimeout};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use store::{
    now_ms, Backoff, CancelOutcome, ClaimRequest, Claimed, Claimer, Completion, Event, Inserted,
    JobId, JobRecord, JobState, Millis, NewJob, Progress, Retry, Store, StoreError, StoreFuture,
    Turn, TurnFuture, Wake,
};

use dispatcher::DispatchMsg;
use kind::ErasedKind;

/// Settings of a [`Jobs`] system.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// The node name recorded on the jobs it runs.
    pub node: String,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// How often leases are renewed (and cancels asked elsewhere noticed).
    pub heartbeat: Duration,
    /// Concurrency of a queue not in `queues`.
    pub default_limit: usize,
    /// Concurrency per queue name.
    pub queues: HashMap<String, usize>,
    /// Time between a soft timeout and the kill (unless the kind says).
    pub hard_timeout_grace: Duration,
    /// Attempts of a job when neither it nor its kind says.
    pub default_max_attempts: u32,
    /// The longest a dispatcher sleeps before looking at the store again.
    pub poll: Duration,
}

impl Default for JobsConfig {
    fn default() -> JobsConfig {
        JobsConfig {
            node: "nonode@nohost".into(),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            default_limit: 10,
            queues: HashMap::new(),
            hard_timeout_grace: Duration::from_secs(2),
            default_max_attempts: 5,
            poll: Duration::from_secs(1),
        }
    }
}

/// Per-job options of an enqueue; unset fields come from the kind, then
/// from [`JobsConfig`].
#[derive(Clone, Debug, Default)]
pub struct EnqueueOptions {
    /// The queue (default: the kind's, else `"default"`).
    pub queue: Option<String>,
    /// Lower runs first (default 0).
    pub priority: i64,
    /// Attempts before the job fails for good.
    pub max_attempts: Option<u32>,
    /// The soft timeout of each attempt, in ms.
    pub timeout_ms: Option<u64>,
    /// The memory limit of each attempt's process, in bytes (overrides the
    /// kind's [`KindOptions::memory_limit`]).
    pub memory_limit: Option<u64>,
    /// While a job with this key is pending, enqueueing returns its id.
    pub unique_key: Option<String>,
    /// Not before this time (ms since the epoch).
    pub run_at: Option<Millis>,
    /// Retry delays.
    pub backoff: Option<Backoff>,
}

/// Why an enqueue was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum EnqueueError {
    /// No kind of that name is registered.
    UnknownKind(String),
    /// The arguments do not fit the kind.
    BadArgs(String),
    /// The store failed.
    Store(StoreError),
}

impl fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnqueueError::UnknownKind(k) => write!(f, "unknown job kind {k:?}"),
            EnqueueError::BadArgs(e) => write!(f, "bad args: {e}"),
            EnqueueError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for EnqueueError {}

/// Registers kinds, then starts a [`Jobs`] system.
pub struct JobsBuilder {
    store: Arc<dyn Store>,
    config: JobsConfig,
    kinds: HashMap<String, Arc<dyn ErasedKind>>,
    cron: Vec<cron::CronSpec>,
}

impl fmt::Debug for JobsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<_> = self.kinds.keys().collect();
        kinds.sort();
        f.debug_struct("JobsBuilder")
            .field("config", &self.config)
            .field("kinds", &kinds)
            .finish()
    }
}

impl JobsBuilder {
    /// Registers a kind (a second one with the same name replaces the first).
    pub fn kind<K: JobKind>(mut self, kind: K) -> JobsBuilder {
        self.kinds
            .insert(K::NAME.to_owned(), Arc::new(kind::Typed(Arc::new(kind))));
        self
    }

    /// Registers a kind given as a function of its context and typed args.
    pub fn kind_fn<A, F, Fut>(mut self, name: &str, options: KindOptions, run: F) -> JobsBuilder
    where
        A: serde::de::DeserializeOwned + Send + 'static,
        F: Fn(JobContext, A) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, JobError>> + Send + 'static,
    {
        self.kinds
            .insert(name.to_owned(), Arc::new(kind::FnKind::new(options, run)));
        self
    }

    /// Registers a recurring job: at every slot of `expression` (UTC; 5
    /// crontab fields, or 6 with seconds first, or a nickname such as
    /// `@hourly`, see [`CronSchedule`]) one job of `kind` with `args` and
    /// `options` is enqueued, once across every node sharing the store.
    /// Its unique key is [`cron_key`] unless `options` give one; its
    /// `run_at` is the slot. [`JobsBuilder::start`] refuses an invalid
    /// entry ([`StoreError::Invalid`]). See `docs/semantics.md`, "Recurring
    /// jobs", for missed slots and changed expressions.
    pub fn cron(
        mut self,
        name: &str,
        expression: &str,
        kind: &str,
        args: Value,
        options: EnqueueOptions,
    ) -> JobsBuilder {
        self.cron.push(cron::CronSpec {
            name: name.to_owned(),
            expression: expression.to_owned(),
            kind: kind.to_owned(),
            args,
            options,
        });
        self
    }

    /// Starts the system from a process: takes back the jobs an earlier
    /// life of this node was running, starts the job supervisor and the
    /// dispatchers supervisor (both linked to the caller), and a dispatcher
    /// for every queue with pending jobs; with cron entries, their
    /// scheduler (under a supervisor of its own, linked to the caller).
    pub async fn start(self) -> Result<Jobs, StoreError> {
        let cron_entries = cron::check(self.cron, &self.kinds)?;
        let incarnation = getrandom::u64().unwrap_or_else(|_| now_ms() as u64);
        let owner = format!("{}#{incarnation:016x}", self.config.node);
        let (events, _) = broadcast::channel(4096);
        let job_sup = DynamicSupervisorSpec::worker(|start: dispatcher::JobStart| async move {
            Ok(dispatcher::spawn_job(start))
        })
        .restart(Restart::Temporary)
        .shutdown(Shutdown::BrutalKill)
        .intensity(u32::MAX)
        .build()
        .map_err(|e| StoreError::Backend(e.to_string()))?
        .start_link()
        .await
        .map_err(|e| StoreError::Backend(format!("cannot start the job supervisor: {e}")))?;
        let inner = Arc::new(Inner {
            store: self.store,
            kinds: self.kinds,
            config: self.config,
            owner,
            events,
            dispatchers: Mutex::new(HashMap::new()),
            job_sup,
            queue_sup: Mutex::new(None),
            cron: cron::CronState {
                entries: cron_entries,
                ..Default::default()
            },
        });
        let weak = Arc::downgrade(&inner);
        let queue_sup = DynamicSupervisorSpec::worker(move |queue: String| {
            let weak = weak.clone();
            async move {
                let inner = weak.upgrade().ok_or(ember_otp::gen::StartError::Ignore)?;
                Ok(dispatcher::spawn_dispatcher(inner, queue))
            }
        })
        .shutdown(Shutdown::Timeout(Duration::from_secs(1)))
        .intensity(10)
        .period(Duration::from_secs(10))
        .build()
        .map_err(|e| StoreError::Backend(e.to_string()))?
        .start_link()
        .await
        .map_err(|e| StoreError::Backend(format!("cannot start the dispatchers: {e}")))?;
        *inner.queue_sup.lock() = Some(queue_sup);
        let jobs = Jobs { inner };
        jobs.listen_for_wakes();
        for ev in jobs
            .inner
            .store
            .recover(&jobs.inner.config.node, &jobs.inner.owner, now_ms())?
        {
            jobs.inner.publish(ev);
        }
        for queue in jobs.inner.store.pending_queues()? {
            jobs.ensure_queue(&queue).await;
        }
        cron::start(&jobs.inner).await?;
        Ok(jobs)
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) kinds: HashMap<String, Arc<dyn ErasedKind>>,
    pub(crate) config: JobsConfig,
    /// This life of this node, as the lease owner.
    pub(crate) owner: String,
    events: broadcast::Sender<Event>,
    /// Queue name → its dispatcher (`None` while it starts).
    pub(crate) dispatchers: Mutex<HashMap<String, Option<Pid>>>,
    pub(crate) job_sup: DynamicSupervisorRef<dispatcher::JobStart>,
    queue_sup: Mutex<Option<DynamicSupervisorRef<String>>>,
    pub(crate) cron: cron::CronState,
}

impl Inner {
    /// Broadcasts a stored event to live subscribers.
    pub(crate) fn publish(&self, ev: Event) {
        let _ = self.events.send(ev);
    }

    pub(crate) fn limit(&self, queue: &str) -> usize {
        self.config
            .queues
            .get(queue)
            .copied()
            .unwrap_or(self.config.default_limit)
            .max(1)
    }
}

/// A running job system: enqueue, inspect, cancel and follow jobs. Cheap to
/// clone.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

impl fmt::Debug for Jobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jobs")
            .field("owner", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

impl Jobs {
    /// A builder on `store` with `config`.
    pub fn builder(store: impl Store, config: JobsConfig) -> JobsBuilder {
        JobsBuilder {
            store: Arc::new(store),
            config,
            kinds: HashMap::new(),
            cron: Vec::new(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The node name jobs run here are recorded with.
    pub fn node(&self) -> &str {
        &self.inner.config.node
    }

    /// The dispatcher process of `queue`, if it runs.
    pub fn dispatcher(&self, queue: &str) -> Option<Pid> {
        self.inner.dispatchers.lock().get(queue).copied().flatten()
    }

    /// The registered kinds' names, sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = self.inner.kinds.keys().cloned().collect();
        k.sort();
        k
    }

    /// Enqueues a job of kind `K` with typed args.
    pub async fn enqueue<K: JobKind>(
        &self,
        args: K::Args,
        options: EnqueueOptions,
    ) -> Result<JobId, EnqueueError> {
        let args = serde_json::to_value(args).map_err(|e| EnqueueError::BadArgs(e.to_string()))?;
        self.enqueue_json(K::NAME, args, options).await
    }

    /// Enqueues a job by kind name with JSON args, checked against the kind
    /// (an unknown kind or args that do not fit are refused, nothing stored).
    /// Returns the id at once; with a unique key already pending, that job's id.
    pub async fn enqueue_json(
        &self,
        kind: &str,
        args: Value,
        options: EnqueueOptions,
    ) -> Result<JobId, EnqueueError> {
        let new = self.new_job(kind, args, options)?;
        let queue = new.queue.clone();
        let inserted = self
            .inner
            .store
            .insert_async(new)
            .await
            .map_err(EnqueueError::Store)?;
        if let Inserted::New(_, ev) = &inserted {
            self.inner.publish(ev.clone());
        }
        self.ensure_queue(&queue).await;
        Ok(inserted.id())
    }

    /// The job an enqueue stores: checked against its kind, with the
    /// defaults of the kind and of the config filled in.
    pub(crate) fn new_job(
        &self,
        kind: &str,
        args: Value,
        options: EnqueueOptions,
    ) -> Result<NewJob, EnqueueError> {
        let k = self
            .inner
            .kinds
            .get(kind)
            .ok_or_else(|| EnqueueError::UnknownKind(kind.to_owned()))?;
        k.validate(&args).map_err(EnqueueError::BadArgs)?;
        let ko = k.options();
        let queue = options
            .queue
            .or_else(|| ko.queue.clone())
            .unwrap_or_else(|| "default".to_owned());
        if queue.is_empty() || queue.len() > 128 {
            return Err(EnqueueError::BadArgs(
                "queue must be 1 to 128 bytes".to_owned(),
            ));
        }
        let new = NewJob {
            kind: kind.to_owned(),
            queue: queue.clone(),
            args,
            priority: options.priority,
            max_attempts: options
                .max_attempts
                .or(ko.max_attempts)
                .unwrap_or(self.inner.config.default_max_attempts)
                .max(1),
            timeout_ms: options
                .timeout_ms
                .or(ko.timeout.map(|t| t.as_millis() as u64)),
            memory_limit: options.memory_limit.or(ko.memory_limit),
            unique_key: options.unique_key,
            run_at: options.run_at.unwrap_or_else(now_ms),
            backoff: options.backoff.unwrap_or(ko.backoff),
        };
        Ok(new)
    }

    /// Hands the store's wake-ups (another node enqueued on a queue) to a
    /// process that starts or wakes the queue's dispatcher. The process ends
    /// when the store drops its [`Wake`] (with the last [`Jobs`]).
    fn listen_for_wakes(&self) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        self.inner.store.on_wake(Arc::new(move |queue: &str| {
            let _ = tx.send(queue.to_owned());
        }));
        let weak = Arc::downgrade(&self.inner);
        ember_runtime::spawn(async move {
            // The store's own thread sends: no tokio driver needed.
            while let Some(queue) = ember_runtime::sync::woken_by_ember(rx.recv()).await {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                Jobs { inner }.ensure_queue(&queue).await;
            }
        });
    }

    /// Starts `queue`'s dispatcher if needed, and wakes it.
    async fn ensure_queue(&self, queue: &str) {
        let start = {
            let mut d = self.inner.dispatchers.lock();
            match d.get(queue) {
                Some(Some(pid)) => {
                    ember_runtime::send(*pid, DispatchMsg::Wake);
                    false
                }
                Some(None) => false,
                None => {
                    d.insert(queue.to_owned(), None);
                    true
                }
            }
        };
        if start {
            let sup = self.inner.queue_sup.lock().clone();
            if let Some(sup) = sup {
                if let Err(e) = sup.start_child(queue.to_owned()).await {
                    tracing::error!("ember-jobs: cannot start the dispatcher of {queue:?}: {e}");
                    self.inner.dispatchers.lock().remove(queue);
                }
            }
        }
    }

    /// One job.
    pub fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.inner.store.get(id)
    }

    /// Jobs in id order after `after`, optionally in one state.
    pub fn list(
        &self,
        state: Option<JobState>,
        limit: usize,
        after: Option<JobId>,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.inner.store.list(state, limit, after, false)
    }

    /// The newest jobs first, below id `before` if given.
    pub fn recent(
        &self,
        state: Option<JobState>,
        limit: usize,
        before: Option<JobId>,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.inner.store.list(state, limit, before, true)
    }

    /// Runs a `failed` or `cancelled` job again (see [`Store::retry`]);
    /// `Ok(false)` if it is in another state.
    pub async fn retry(&self, id: JobId) -> Result<bool, StoreError> {
        let Some(ev) = self.inner.store.retry(id)? else {
            return Ok(false);
        };
        self.inner.publish(ev);
        if let Some(job) = self.get(id)? {
            self.ensure_queue(&job.queue).await;
        }
        Ok(true)
    }

    /// A job's stored events after sequence number `after`.
    pub fn events(&self, id: JobId, after: i64) -> Result<Vec<Event>, StoreError> {
        self.inner.store.events(id, after)
    }

    /// Live events of all jobs from now on. Subscribe first, then read
    /// [`Jobs::events`], to miss nothing (skip what was already read by `seq`).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Cancels a job: a waiting one at once; a running one's process is
    /// killed by its dispatcher (at once on this node; within a heartbeat
    /// elsewhere) and then recorded `cancelled`.
    pub fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreError> {
        let out = self.inner.store.cancel(id)?;
        match &out {
            CancelOutcome::Cancelled(ev) => self.inner.publish(ev.clone()),
            CancelOutcome::Requested { node, queue }
                if node.as_deref() == Some(self.inner.config.node.as_str()) =>
            {
                if let Some(Some(pid)) = self.inner.dispatchers.lock().get(queue) {
                    ember_runtime::send(*pid, DispatchMsg::Cancel(id));
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// Waits (from a process) until job `id` is final, up to `timeout`.
    /// `None` on timeout or if there is no such job.
    pub async fn wait_final(&self, id: JobId, timeout: Duration) -> Option<JobRecord> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.subscribe();
        loop {
            let rec = self.get(id).ok()??;
            if rec.state.is_final() {
                return Some(rec);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            // Wake on any event of this job, or re-read now and then.
            let wait = left.min(Duration::from_millis(200));
            let _ = crate::timeout(wait, async {
                loop {
                    // Published by the job system's processes: no tokio
                    // driver needs to run for this wait.
                    match ember_runtime::sync::woken_by_ember(rx.recv()).await {
                        Ok(ev) if ev.job == id => break,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            })
            .await;
        }
    }

    /// The cron entries registered on this system, by name, with their
    /// next slot and the last slot any node fired.
    pub fn cron_entries(&self) -> Result<Vec<CronInfo>, StoreError> {
        cron::infos(&self.inner)
    }

    /// The cron scheduler process, while it runs (only with entries).
    pub fn cron_scheduler(&self) -> Option<Pid> {
        *self.inner.cron.scheduler.lock()
    }

    /// Counts of jobs by state.
    pub fn counts(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        self.inner.store.counts()
    }
}

/// Runs `fut` for at most `d` (an Ember timer: call from a process);
/// `None` if the time ran out first.
pub async fn timeout<F: std::future::Future>(d: Duration, fut: F) -> Option<F::Output> {
    use std::future::Future;
    let sleep = ember_runtime::sleep(d);
    let mut fut = std::pin::pin!(fut);
    let mut sleep = std::pin::pin!(sleep);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(v));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(None);
        }
        std::task::Poll::Pending
    })
    .await
}
