//! A queue's dispatcher process and the job processes it starts.
//!
//! The dispatcher claims due jobs up to its queue's limit, starts each as a
//! process under the job supervisor and monitors it, renews the leases of
//! its running jobs every heartbeat, and acts on their deadlines (soft
//! timeout: tell the job; hard timeout: kill it) and on cancels (kill). A
//! job process that fails writes its error itself, with its fencing token;
//! one that succeeds leaves its result in a slot the dispatcher reads when
//! the monitor fires, and the dispatcher records the results of every job
//! that ended together with its next claim, in one store call
//! ([`crate::Store::complete_and_claim`]: one transaction on PostgreSQL),
//! each with its own token. A job that dies otherwise (killed, panicked)
//! has its outcome written by the dispatcher when the monitor fires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use ember_runtime::{
    exit, link, memory_kill, monitor, receive_any, self_pid, send, spawn_link, trap_exit, Down,
    Exit, ExitReason, Pid, Spawn,
};

use crate::kind::{JobContext, SoftTimeout};
use crate::store::{
    now_ms, Backoff, ClaimRequest, Claimed, Claimer, Completion, Event, JobId, Retry, StoreError,
};
use crate::Inner;

/// Messages a dispatcher understands.
#[derive(Debug)]
pub(crate) enum DispatchMsg {
    /// Look at the store now (a job was enqueued).
    Wake,
    /// Stop this running job: it was cancelled.
    Cancel(JobId),
}

/// What the job supervisor starts a job process with.
#[derive(Clone)]
pub(crate) struct JobStart {
    pub(crate) inner: Arc<Inner>,
    pub(crate) claimed: Arc<Claimed>,
    pub(crate) wrap_up: Arc<AtomicBool>,
    /// The dispatcher that claimed the job: the job links to it before it
    /// runs anything, so it never outlives a dispatcher killed at once.
    pub(crate) dispatcher: Pid,
    /// Where the job leaves its result when it succeeds, for the dispatcher
    /// to record when the job's process is down.
    pub(crate) result: ResultSlot,
}

/// A succeeded attempt's result, left by its process for its dispatcher.
pub(crate) type ResultSlot = Arc<parking_lot::Mutex<Option<Value>>>;

/// Why the dispatcher stopped a job (what to record when it is down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Cancel,
    HardTimeout,
    /// The lease was lost: another claim owns the job; write nothing.
    Fenced,
}

struct Running {
    id: JobId,
    token: i64,
    attempt: u32,
    max_attempts: u32,
    backoff: Backoff,
    wrap_up: Arc<AtomicBool>,
    soft_at: Option<Instant>,
    hard_at: Option<Instant>,
    timeout_ms: Option<u64>,
    memory_limit: Option<u64>,
    stopping: Option<Stop>,
    result: ResultSlot,
}

/// The retry decision after failed attempt `attempt`.
pub(crate) fn retry_after(
    attempt: u32,
    max_attempts: u32,
    backoff: &Backoff,
    retry: bool,
) -> Retry {
    if retry && attempt < max_attempts {
        Retry::At(now_ms() + backoff.delay_ms(attempt) as i64)
    } else {
        Retry::Never
    }
}

/// Starts a job process, linked to the caller (the job supervisor), with
/// the job's memory limit if it has one. A limit the runtime cannot enforce
/// (no counting allocator) fails the job for good instead.
pub(crate) fn spawn_job(start: JobStart) -> Pid {
    let Some(limit) = start.claimed.memory_limit else {
        return spawn_link(run_job(start));
    };
    let bytes = usize::try_from(limit).unwrap_or(usize::MAX);
    let fallback = start.clone();
    match Spawn::new()
        .link()
        .memory_limit(bytes)
        .spawn(run_job(start))
    {
        Ok(spawned) => spawned.pid,
        Err(e) => spawn_link(async move {
            let JobStart { inner, claimed, .. } = fallback;
            let e = format!("memory_limit: {e}");
            if let Ok(ev) = inner
                .store
                .fail(claimed.id, claimed.token, &e, Retry::Never)
            {
                inner.publish(ev);
            }
        }),
    }
}

/// The body of a job process: runs the attempt and records its outcome.
async fn run_job(start: JobStart) {
    {
        let JobStart {
            inner,
            claimed,
            wrap_up,
            dispatcher,
            result,
        } = start;
        // Dies with its dispatcher, from its first step: the dispatcher's
        // own link comes only after `start_child` returns, and a dispatcher
        // killed in between would leave the job running unseen. A
        // dispatcher already gone: run nothing; its successor takes the
        // claim back.
        if link(dispatcher).is_err() {
            return;
        }
        let Some(kind) = inner.kinds.get(&claimed.kind).cloned() else {
            let e = format!("unknown job kind {:?} on this node", claimed.kind);
            if let Ok(ev) = inner
                .store
                .fail(claimed.id, claimed.token, &e, Retry::Never)
            {
                inner.publish(ev);
            }
            return;
        };
        let ctx = JobContext {
            id: claimed.id,
            attempt: claimed.attempt,
            max_attempts: claimed.max_attempts,
            token: claimed.token,
            inner: inner.clone(),
            wrap_up,
        };
        let outcome = kind.run(ctx, claimed.args.clone()).await;
        let written = match outcome {
            Ok(value) => {
                // The dispatcher records it with its next claim, once this
                // process is down (it is linked to us: if it dies first,
                // so do we, and the job is taken back and runs again).
                *result.lock() = Some(value);
                return;
            }
            Err(e) => {
                let retry = retry_after(
                    claimed.attempt,
                    claimed.max_attempts,
                    &claimed.backoff,
                    e.retry,
                );
                inner
                    .store
                    .fail(claimed.id, claimed.token, &e.message, retry)
            }
        };
        match written {
            Ok(ev) => inner.publish(ev),
            Err(StoreError::Fenced) => {
                tracing::warn!(
                    "ember-jobs: job {} finished after losing its claim: outcome refused",
                    claimed.id
                )
            }
            Err(e) => tracing::error!("ember-jobs: cannot record job {}: {e}", claimed.id),
        }
    }
}

/// Starts a dispatcher for `queue`, linked to the caller (its supervisor).
///
/// It traps exits and links to every job process it starts: if it dies,
/// its jobs die with it (no attempt runs unwatched), and its successor
/// takes their jobs back at once ([`crate::Store::release`]). When its
/// supervisor stops it, it kills its jobs and stops; the jobs stay
/// `running` in the store until this node's next start takes them back.
pub(crate) fn spawn_dispatcher(inner: Arc<Inner>, queue: String) -> Pid {
    let parent = self_pid();
    spawn_link(async move {
        trap_exit(true);
        inner
            .dispatchers
            .lock()
            .insert(queue.clone(), Some(self_pid()));
        match inner.store.release(&inner.owner, &queue) {
            Ok(events) => {
                for ev in events {
                    inner.publish(ev);
                }
            }
            Err(e) => tracing::error!("ember-jobs: cannot take back the jobs of {queue:?}: {e}"),
        }
        Dispatcher {
            parent,
            limit: inner.limit(&queue),
            inner,
            queue,
            running: HashMap::new(),
            by_id: HashMap::new(),
            next_heartbeat: Instant::now(),
            claimer: Claimer::process(self_pid()),
            done: Vec::new(),
        }
        .run()
        .await
    })
}

struct Dispatcher {
    /// Its supervisor: an exit signal from it stops the dispatcher.
    parent: Pid,
    inner: Arc<Inner>,
    queue: String,
    limit: usize,
    running: HashMap<Pid, Running>,
    by_id: HashMap<JobId, Pid>,
    next_heartbeat: Instant,
    /// This dispatcher, as the store asks about it inside each claim: if
    /// it is killed while a claim is on its way, its successor's release
    /// and that claim cannot both miss the jobs.
    claimer: Claimer,
    /// Successes of jobs whose processes are down, to record with the next
    /// claim.
    done: Vec<Completion>,
}

impl Dispatcher {
    async fn run(mut self) {
        loop {
            let full = self.claim().await;
            let now = Instant::now();
            if now >= self.next_heartbeat {
                self.heartbeat();
                self.next_heartbeat = now + self.inner.config.heartbeat;
            }
            self.deadlines(now);
            if full {
                // Every slot taken: wait for a job to end (or a deadline).
            }
            let wait = self.wait(full).await;
            let Some(env) = receive_any(|_| true).timeout(wait).await else {
                continue;
            };
            if self.handle(env).await {
                return;
            }
            // Take every message already here (wake-ups from a burst of
            // enqueues, ends of many jobs) before claiming again, so that
            // one claim serves them all.
            while let Some(env) = receive_any(|_| true).timeout(Duration::ZERO).await {
                if self.handle(env).await {
                    return;
                }
            }
        }
    }

    /// Handles one message; whether the dispatcher stops.
    async fn handle(&mut self, env: ember_runtime::Envelope) -> bool {
        let env = match env.downcast::<Down>() {
            Ok(down) => {
                self.down(down);
                return false;
            }
            Err(env) => env,
        };
        let env = match env.downcast::<Exit>() {
            Ok(Exit { from, reason }) if from == self.parent => {
                for &pid in self.running.keys() {
                    exit(pid, ExitReason::Kill);
                }
                // What already succeeded is recorded before we stop.
                if !self.done.is_empty() {
                    let done = std::mem::take(&mut self.done);
                    let turn = self
                        .inner
                        .store
                        .complete_and_claim(done.clone(), self.request(0))
                        .await;
                    self.completed(done, turn.completed);
                }
                ember_runtime::exit_self(reason).await;
                return true;
            }
            // A job process's exit: its monitor reports it.
            Ok(_) => return false,
            Err(env) => env,
        };
        if let Ok(msg) = env.downcast::<DispatchMsg>() {
            match msg {
                DispatchMsg::Wake => {}
                DispatchMsg::Cancel(id) => self.stop(id, Stop::Cancel),
            }
        }
        false
    }

    /// How long to sleep before looking again.
    async fn wait(&self, full: bool) -> Duration {
        let next_run_at = if full {
            None
        } else {
            self.inner
                .store
                .next_run_at_async(self.queue.clone())
                .await
                .ok()
                .flatten()
        };
        let now = Instant::now();
        let mut until = self.next_heartbeat.min(now + self.inner.config.poll);
        for r in self.running.values() {
            for t in [r.soft_at, r.hard_at].into_iter().flatten() {
                until = until.min(t);
            }
        }
        if !full {
            if let Some(at) = next_run_at {
                let ms = at.saturating_sub(now_ms()).max(0) as u64;
                if let Some(t) = now.checked_add(Duration::from_millis(ms)) {
                    until = until.min(t);
                }
            }
        }
        until.saturating_duration_since(now)
    }

    /// A claim of up to `limit` jobs of this queue, now.
    fn request(&self, limit: usize) -> ClaimRequest {
        let now = now_ms();
        ClaimRequest {
            queue: self.queue.clone(),
            node: self.inner.config.node.clone(),
            owner: self.inner.owner.clone(),
            claimer: self.claimer.clone(),
            now,
            lease_until: now + self.inner.config.lease.as_millis() as i64,
            limit,
        }
    }

    /// Publishes the recorded successes and reports the refused ones; a
    /// success the store failed to write goes with the next turn again (if
    /// it was committed after all, or its lease ran out meanwhile, fencing
    /// refuses the second write).
    fn completed(&mut self, sent: Vec<Completion>, outcomes: Vec<Result<Event, StoreError>>) {
        for (c, outcome) in sent.into_iter().zip(outcomes) {
            match outcome {
                Ok(ev) => self.inner.publish(ev),
                Err(StoreError::Fenced) => tracing::warn!(
                    "ember-jobs: job {} finished after losing its claim: outcome refused",
                    c.id
                ),
                Err(StoreError::NotFound) => {
                    tracing::warn!("ember-jobs: job {} is gone: outcome dropped", c.id)
                }
                Err(e) => {
                    tracing::error!("ember-jobs: cannot record job {}: {e}", c.id);
                    self.done.push(c);
                }
            }
        }
    }

    /// Records the successes waiting and claims what fits, in one store
    /// call per round; whether every slot is taken afterwards.
    async fn claim(&mut self) -> bool {
        loop {
            let free = self.limit.saturating_sub(self.running.len());
            if free == 0 && self.done.is_empty() {
                return true;
            }
            let done = std::mem::take(&mut self.done);
            let turn = self
                .inner
                .store
                .complete_and_claim(done.clone(), self.request(free))
                .await;
            self.completed(done, turn.completed);
            let claimed = match turn.claimed {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("ember-jobs: claim on {:?} failed: {e}", self.queue);
                    return false;
                }
            };
            let n = claimed.len();
            for c in claimed {
                self.start(c).await;
            }
            // Successes the store failed to write wait for the next look
            // (a wake-up or the poll), not for a tight loop.
            if n < free || !self.done.is_empty() {
                return false;
            }
        }
    }

    async fn start(&mut self, claimed: Claimed) {
        self.inner.publish(claimed.event.clone());
        let wrap_up = Arc::new(AtomicBool::new(false));
        let result = ResultSlot::default();
        let claimed = Arc::new(claimed);
        let start = JobStart {
            inner: self.inner.clone(),
            claimed: claimed.clone(),
            wrap_up: wrap_up.clone(),
            dispatcher: self_pid(),
            result: result.clone(),
        };
        let pid = match self.inner.job_sup.start_child(start).await {
            Ok(Some(pid)) => pid,
            other => {
                let e = format!("the job process did not start: {other:?}");
                let retry = retry_after(
                    claimed.attempt,
                    claimed.max_attempts,
                    &claimed.backoff,
                    true,
                );
                if let Ok(ev) = self.inner.store.fail(claimed.id, claimed.token, &e, retry) {
                    self.inner.publish(ev);
                }
                return;
            }
        };
        monitor(pid);
        // Dies with its dispatcher (a job that already ended is fine).
        let _ = link(pid);
        let now = Instant::now();
        // A timeout too far away to represent is no timeout.
        let soft_at = claimed
            .timeout_ms
            .and_then(|t| now.checked_add(Duration::from_millis(t)));
        let grace = self
            .inner
            .kinds
            .get(&claimed.kind)
            .and_then(|k| k.options().hard_timeout_grace)
            .unwrap_or(self.inner.config.hard_timeout_grace);
        self.by_id.insert(claimed.id, pid);
        self.running.insert(
            pid,
            Running {
                id: claimed.id,
                token: claimed.token,
                attempt: claimed.attempt,
                max_attempts: claimed.max_attempts,
                backoff: claimed.backoff,
                wrap_up,
                soft_at,
                hard_at: soft_at.and_then(|s| s.checked_add(grace)),
                timeout_ms: claimed.timeout_ms,
                memory_limit: claimed.memory_limit,
                stopping: None,
                result,
            },
        );
    }

    /// Kills a running job's process, remembering why.
    fn stop(&mut self, id: JobId, why: Stop) {
        let Some(&pid) = self.by_id.get(&id) else {
            return;
        };
        if let Some(r) = self.running.get_mut(&pid) {
            if r.stopping.is_none() {
                r.stopping = Some(why);
                exit(pid, ExitReason::Kill);
            }
        }
    }

    fn heartbeat(&mut self) {
        if !self.running.is_empty() {
            let leases: Vec<(JobId, i64)> =
                self.running.values().map(|r| (r.id, r.token)).collect();
            let until = now_ms() + self.inner.config.lease.as_millis() as i64;
            match self
                .inner
                .store
                .heartbeat(&self.inner.owner, &leases, until)
            {
                Ok(states) => {
                    for (id, held, cancel) in states {
                        if !held {
                            tracing::warn!("ember-jobs: job {id} lost its lease: stopping it");
                            self.stop(id, Stop::Fenced);
                        } else if cancel {
                            self.stop(id, Stop::Cancel);
                        }
                    }
                }
                Err(e) => tracing::error!("ember-jobs: heartbeat failed: {e}"),
            }
        }
        // Take back jobs whose node stopped renewing (another node's).
        match self
            .inner
            .store
            .recover(&self.inner.config.node, &self.inner.owner, now_ms())
        {
            Ok(events) => {
                for ev in events {
                    self.inner.publish(ev);
                }
            }
            Err(e) => tracing::error!("ember-jobs: recovery failed: {e}"),
        }
    }

    fn deadlines(&mut self, now: Instant) {
        let mut hard = Vec::new();
        for (&pid, r) in &mut self.running {
            if let Some(soft) = r.soft_at {
                if now >= soft && !r.wrap_up.swap(true, Ordering::AcqRel) {
                    send(pid, SoftTimeout { job: r.id });
                }
            }
            if r.hard_at.is_some_and(|h| now >= h) && r.stopping.is_none() {
                hard.push(r.id);
            }
        }
        for id in hard {
            self.stop(id, Stop::HardTimeout);
        }
    }

    fn down(&mut self, down: Down) {
        let Some(r) = self.running.remove(&down.pid) else {
            return;
        };
        self.by_id.remove(&r.id);
        if r.stopping == Some(Stop::Fenced) {
            return;
        }
        // It succeeded (maybe just before a kill landed: it keeps its
        // outcome): recorded with the next claim.
        if let Some(result) = r.result.lock().take() {
            self.done.push(Completion {
                id: r.id,
                token: r.token,
                result,
            });
            return;
        }
        let store = &self.inner.store;
        let written = match (r.stopping, &down.reason) {
            (Some(Stop::Fenced), _) => return,
            // Finished on its own: it wrote its failure.
            (None, ExitReason::Normal) => return,
            (Some(Stop::Cancel), _) => store.finish_cancelled(r.id, r.token),
            (Some(Stop::HardTimeout), _) => {
                let e = format!(
                    "timeout: still running {} ms after its soft timeout of {} ms",
                    r.hard_at
                        .zip(r.soft_at)
                        .map_or(0, |(h, s)| (h - s).as_millis()),
                    r.timeout_ms.unwrap_or(0)
                );
                let retry = retry_after(r.attempt, r.max_attempts, &r.backoff, true);
                store.fail(r.id, r.token, &e, retry)
            }
            (None, reason) => {
                // Killed over its memory limit: what the runtime saw. (A job
                // killed before the monitor was set shows `noproc`.)
                let e = match (memory_kill(down.pid), reason) {
                    (Some(kill), _) => format!(
                        "memory_limit: used {} bytes over the limit of {}",
                        kill.used_bytes, kill.limit_bytes
                    ),
                    (None, reason) if reason.is_memory_limit() => format!(
                        "memory_limit: over the limit of {} bytes",
                        r.memory_limit.unwrap_or(0)
                    ),
                    (None, ExitReason::Panic(m)) => format!("panic: {m}"),
                    (None, other) => format!("exited: {other}"),
                };
                let retry = retry_after(r.attempt, r.max_attempts, &r.backoff, true);
                store.fail(r.id, r.token, &e, retry)
            }
        };
        match written {
            Ok(ev) => self.inner.publish(ev),
            // It finished (and wrote) before the signal arrived.
            Err(StoreError::Fenced) => {}
            Err(e) => tracing::error!("ember-jobs: cannot record job {}: {e}", r.id),
        }
    }
}
