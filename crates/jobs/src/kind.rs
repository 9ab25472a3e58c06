//! Job kinds and what a running job sees of the system.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::store::{Backoff, JobId, Progress, StoreError};
use crate::Inner;

/// Defaults a kind gives its jobs (each can be overridden per job).
#[derive(Clone, Debug, Default)]
pub struct KindOptions {
    /// Its jobs' queue (default `"default"`).
    pub queue: Option<String>,
    /// Attempts before a job fails for good.
    pub max_attempts: Option<u32>,
    /// Retry delays.
    pub backoff: Backoff,
    /// Soft timeout of each attempt.
    pub timeout: Option<Duration>,
    /// Time between the soft timeout and the kill (default: the system's).
    pub hard_timeout_grace: Option<Duration>,
    /// Memory limit of each attempt's process, in bytes: an attempt that
    /// allocates more (net, during its polls) is killed and fails with
    /// `memory_limit: used N bytes over the limit of M`, retried like any
    /// failure. Needs the counting allocator (the `ember` binary has it;
    /// without it such a job fails at once). docs/semantics.md §9.5.
    pub memory_limit: Option<u64>,
}

/// Why an attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    /// What went wrong (kept as the job's `error`).
    pub message: String,
    /// Whether another attempt may help (false: fail at once).
    pub retry: bool,
}

impl JobError {
    /// A failure worth retrying.
    pub fn retry(message: impl fmt::Display) -> JobError {
        JobError {
            message: message.to_string(),
            retry: true,
        }
    }

    /// A failure no retry can fix: the job fails at once.
    pub fn fatal(message: impl fmt::Display) -> JobError {
        JobError {
            message: message.to_string(),
            retry: false,
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JobError {}

/// The message a job's process receives at its soft timeout (besides
/// [`JobContext::wrap_up`] turning true): finish or give up soon, before
/// the hard timeout kills it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftTimeout {
    /// The job.
    pub job: JobId,
}

/// A kind of job: a name, typed arguments and the work.
///
/// ```
/// use ember_jobs::{JobContext, JobError, JobKind};
///
/// struct Resize;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Args { width: u32 }
///
/// impl JobKind for Resize {
///     type Args = Args;
///     const NAME: &'static str = "resize";
///     fn validate(&self, args: &Args) -> Result<(), String> {
///         if args.width == 0 { Err("width must be positive".into()) } else { Ok(()) }
///     }
///     async fn run(&self, ctx: JobContext, args: Args) -> Result<serde_json::Value, JobError> {
///         ctx.progress(100.0, "resized");
///         Ok(serde_json::json!({ "width": args.width }))
///     }
/// }
/// ```
pub trait JobKind: Send + Sync + 'static {
    /// Its arguments, stored as JSON.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// Its name, as enqueued and stored.
    const NAME: &'static str;

    /// Defaults for its jobs.
    fn options(&self) -> KindOptions {
        KindOptions::default()
    }

    /// Checks arguments beyond their type (refused at enqueue with the message).
    fn validate(&self, _args: &Self::Args) -> Result<(), String> {
        Ok(())
    }

    /// Runs one attempt, in the job's own process.
    fn run(
        &self,
        ctx: JobContext,
        args: Self::Args,
    ) -> impl Future<Output = Result<Value, JobError>> + Send;
}

pub(crate) type RunFuture = Pin<Box<dyn Future<Output = Result<Value, JobError>> + Send>>;

/// A kind with its types erased.
pub(crate) trait ErasedKind: Send + Sync {
    fn options(&self) -> KindOptions;
    fn validate(&self, args: &Value) -> Result<(), String>;
    fn run(&self, ctx: JobContext, args: Value) -> RunFuture;
}

pub(crate) struct Typed<K>(pub(crate) Arc<K>);

impl<K: JobKind> ErasedKind for Typed<K> {
    fn options(&self) -> KindOptions {
        self.0.options()
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        let args: K::Args = serde_json::from_value(args.clone()).map_err(|e| e.to_string())?;
        self.0.validate(&args)
    }

    fn run(&self, ctx: JobContext, args: Value) -> RunFuture {
        let kind = self.0.clone();
        Box::pin(async move {
            let args: K::Args = serde_json::from_value(args)
                .map_err(|e| JobError::fatal(format!("bad args: {e}")))?;
            kind.run(ctx, args).await
        })
    }
}

type RunFn = dyn Fn(JobContext, Value) -> RunFuture + Send + Sync;
type CheckFn = dyn Fn(&Value) -> Result<(), String> + Send + Sync;

pub(crate) struct FnKind {
    options: KindOptions,
    check: Box<CheckFn>,
    run: Box<RunFn>,
}

impl FnKind {
    pub(crate) fn new<A, F, Fut>(options: KindOptions, run: F) -> FnKind
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(JobContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, JobError>> + Send + 'static,
    {
        let _typed: PhantomData<A> = PhantomData;
        FnKind {
            options,
            check: Box::new(|v| {
                serde_json::from_value::<A>(v.clone())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
            run: Box::new(move |ctx, v| match serde_json::from_value::<A>(v) {
                Ok(a) => Box::pin(run(ctx, a)),
                Err(e) => Box::pin(std::future::ready(Err(JobError::fatal(format!(
                    "bad args: {e}"
                ))))),
            }),
        }
    }
}

impl ErasedKind for FnKind {
    fn options(&self) -> KindOptions {
        self.options.clone()
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        (self.check)(args)
    }

    fn run(&self, ctx: JobContext, args: Value) -> RunFuture {
        (self.run)(ctx, args)
    }
}

/// What a running job knows: its id and attempt, how to report progress,
/// and whether it should wrap up (soft timeout reached). Cheap to clone.
#[derive(Clone)]
pub struct JobContext {
    pub(crate) id: JobId,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) token: i64,
    pub(crate) inner: Arc<Inner>,
    pub(crate) wrap_up: Arc<AtomicBool>,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// This attempt, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The job's limit of attempts.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether the soft timeout has passed: finish or give up soon.
    pub fn wrap_up(&self) -> bool {
        self.wrap_up.load(Ordering::Acquire)
    }

    /// Reports progress (percent, clamped to 0–100, and a status line):
    /// stored and streamed. `Err(Fenced)` if this attempt lost its claim (it
    /// should stop: nothing it writes will count).
    pub fn progress(&self, pct: f64, message: impl Into<String>) -> Result<(), StoreError> {
        self.report(pct, message.into(), None)
    }

    /// Reports progress with extra JSON data.
    pub fn progress_with(
        &self,
        pct: f64,
        message: impl Into<String>,
        data: Value,
    ) -> Result<(), StoreError> {
        self.report(pct, message.into(), Some(data))
    }

    fn report(&self, pct: f64, message: String, data: Option<Value>) -> Result<(), StoreError> {
        let pct = if pct.is_finite() {
            pct.clamp(0.0, 100.0)
        } else {
            0.0
        };
        let ev =
            self.inner
                .store
                .progress(self.id, self.token, &Progress { pct, message, data })?;
        self.inner.publish(ev);
        Ok(())
    }
}
