//! The process pool of the classic Erlang design, "ppool" (from *Learn You
//! Some Erlang*, chapter "Building an Application With OTP"), with its exact
//! semantics.
//!
//! A pool runs at most `limit` workers at once:
//!
//! * [`Pool::run`] starts a worker if a slot is free and answers
//!   [`PoolError::NoAlloc`] at once if not;
//! * [`Pool::sync_queue`] waits for a slot, then starts the worker;
//! * [`Pool::async_queue`] enqueues the job and returns at once.
//!
//! The pool server monitors every worker it starts: when one exits, for any
//! reason, its slot goes to the oldest queued job, or is freed. Queued jobs
//! start in the order they were queued, and none is lost.
//!
//! The tree is that of ppool:
//!
//! ```text
//! pools supervisor "ppool" (one_for_one, 6 restarts / 3600 s)
//!  ├── per-pool supervisor <name> (one_for_all, 1 restart / 3600 s)
//!  │    ├── worker supervisor (dynamic, temporary workers)
//!  │    └── pool server, registered as <name>
//!  └── per-pool supervisor <other> …
//! ```
//!
//! so a pool whose server or worker supervisor keeps crashing is restarted,
//! then given up, by its own supervisor, and never takes another pool down.
//! (ppool's server adds the worker supervisor to its supervisor after its
//! own start, through a message to itself; here the worker supervisor is
//! the first child and hands its pid to the server, which avoids the window
//! in which the server runs without one.)
//!
//! ```
//! use ember_otp::pool::{self, PoolError};
//! use ember_runtime::{receive, spawn_link};
//!
//! # let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
//! # rt.block_on(async {
//! pool::start_pools().await.unwrap();
//! let downloads = pool::start_pool("downloads", 1, |url: String| async move {
//!     Ok(spawn_link(async move { let _ = url; receive::<()>().await }))
//! })
//! .await
//! .unwrap();
//! let worker = downloads.run("a".to_string()).await.unwrap();
//! assert_eq!(downloads.run("b".to_string()).await, Err(PoolError::NoAlloc));
//! ember_runtime::send(worker, ()); // the worker finishes; its slot frees
//! assert!(downloads.sync_queue("c".to_string()).await.is_ok());
//! # });
//! ```

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ember_runtime::{monitor, send, Down, Envelope, MonitorRef, Pid};
use parking_lot::Mutex;

use crate::dynamic_supervisor::{DynamicSupervisorRef, DynamicSupervisorSpec};
use crate::gen::{self, CallError, ReplyTo, StartError, StartOptions};
use crate::gen_server::{self, CallReturn, GenServer, Init, Return};
use crate::supervisor::{
    ChildSpec, Flags, Restart, Shutdown, SpecError, Strategy, SupervisorError, SupervisorRef,
    SupervisorSpec,
};

/// The registered name of the pools supervisor (ppool's `ppool`).
pub const POOLS: &str = "ppool";

/// Why a pool operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// `run` found no free slot (ppool's `noalloc`).
    NoAlloc,
    /// The pool (or the pools supervisor) could not be called.
    Call(CallError),
    /// The worker did not start.
    Start(StartError),
    /// Starting or stopping the pool was refused by the pools supervisor
    /// (a pool of that name exists, or does not).
    Supervisor(SupervisorError),
    /// The pool's spec is invalid.
    Spec(SpecError),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::NoAlloc => f.write_str("noalloc: every slot of the pool is taken"),
            PoolError::Call(e) => write!(f, "cannot reach the pool: {e}"),
            PoolError::Start(e) => write!(f, "the worker did not start: {e}"),
            PoolError::Supervisor(e) => write!(f, "the pools supervisor refused: {e}"),
            PoolError::Spec(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PoolError {}

impl From<CallError> for PoolError {
    fn from(e: CallError) -> Self {
        PoolError::Call(e)
    }
}

/// A pool's counters, from [`Pool::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// The most workers it runs at once.
    pub limit: usize,
    /// Free slots.
    pub free: usize,
    /// Workers running (monitored).
    pub running: usize,
    /// Jobs waiting for a slot.
    pub queued: usize,
}

/// The pools supervisor's spec (ppool_supersup: one_for_one, 6 in 3600 s).
fn pools_spec() -> SupervisorSpec {
    let flags = Flags::new()
        .strategy(Strategy::OneForOne)
        .intensity(6)
        .period(Duration::from_secs(3600));
    SupervisorSpec::new(flags, vec![]).expect("the pools supervisor spec is valid")
}

/// Starts the pools supervisor, registered as [`POOLS`], linked to the
/// caller (ppool's `ppool:start_link/0`).
pub async fn start_pools() -> Result<SupervisorRef, StartError> {
    pools_spec()
        .start_link_with(StartOptions::new().name(POOLS))
        .await
}

/// A child spec that runs the pools supervisor (registered as [`POOLS`])
/// under a supervisor or an application.
pub fn pools_child_spec() -> ChildSpec {
    ChildSpec::supervisor(POOLS, || {
        pools_spec().start_link_with(StartOptions::new().name(POOLS))
    })
    .build()
    .expect("the pools child spec is valid")
}

/// Stops the pools supervisor and every pool.
pub async fn stop_pools() -> Result<(), CallError> {
    SupervisorRef::from_name(POOLS).stop().await
}

/// Starts a pool of at most `limit` workers under the pools supervisor
/// (ppool's `start_pool(Name, Limit, {M, F, A})`). `worker(args)` is called
/// in the pool's worker supervisor for each job and must start a process
/// linked to it; the pool server is registered as `name`.
pub async fn start_pool<A, F, Fut, P>(
    name: &str,
    limit: usize,
    worker: F,
) -> Result<Pool<A>, PoolError>
where
    A: Clone + Send + Sync + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<P, StartError>> + Send + 'static,
    P: Into<Pid>,
{
    let child = pool_child_spec(name, limit, worker)?;
    SupervisorRef::from_name(POOLS)
        .start_child(child)
        .await
        .map_err(|e| match e {
            SupervisorError::Call(e) => PoolError::Call(e),
            e => PoolError::Supervisor(e),
        })?;
    Ok(Pool::from_name(name))
}

/// The child spec of one pool (its per-pool supervisor, id `name`), to run
/// it under a supervisor of one's own instead of the pools supervisor;
/// [`Pool::from_name`]`(name)` then reaches it.
pub fn pool_child_spec<A, F, Fut, P>(
    name: &str,
    limit: usize,
    worker: F,
) -> Result<ChildSpec, PoolError>
where
    A: Clone + Send + Sync + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<P, StartError>> + Send + 'static,
    P: Into<Pid>,
{
    let name: Arc<str> = name.into();
    let workers = DynamicSupervisorSpec::worker(worker)
        .restart(Restart::Temporary)
        .shutdown(Shutdown::Timeout(Duration::from_millis(5000)))
        .intensity(5)
        .period(Duration::from_secs(3600))
        .build()
        .map_err(PoolError::Spec)?;
    let spec = pool_supervisor_spec(name.clone(), limit, workers)?;
    spec.child_spec(name)
        .shutdown(Shutdown::Timeout(Duration::from_millis(10500)))
        .build()
        .map_err(PoolError::Spec)
}

/// The per-pool supervisor (ppool_sup: one_for_all, 1 in 3600 s): the
/// worker supervisor, then the server, which learns the worker
/// supervisor's pid through a cell the first child's start fills.
fn pool_supervisor_spec<A>(
    name: Arc<str>,
    limit: usize,
    workers: DynamicSupervisorSpec<A>,
) -> Result<SupervisorSpec, PoolError>
where
    A: Clone + Send + Sync + 'static,
{
    let cell: Arc<Mutex<Option<DynamicSupervisorRef<A>>>> = Arc::new(Mutex::new(None));
    let filled = cell.clone();
    let worker_sup = ChildSpec::supervisor("worker_sup", move || {
        let workers = workers.clone();
        let filled = filled.clone();
        async move {
            let sup = workers.start_link().await?;
            *filled.lock() = Some(sup.clone());
            Ok(sup)
        }
    })
    .shutdown(Shutdown::Timeout(Duration::from_millis(10000)))
    .build()
    .map_err(PoolError::Spec)?;
    let server = ChildSpec::worker("serv", move || {
        let sup = cell.lock().clone();
        let name = name.clone();
        async move {
            let Some(sup) = sup else {
                return Err(StartError::Failed(ember_runtime::ExitReason::error(
                    "the worker supervisor did not start",
                )));
            };
            gen_server::start_link_with::<Server<A>>((limit, sup), StartOptions::new().name(name))
                .await
        }
    })
    .build()
    .map_err(PoolError::Spec)?;
    let flags = Flags::new()
        .strategy(Strategy::OneForAll)
        .intensity(1)
        .period(Duration::from_secs(3600));
    SupervisorSpec::new(flags, vec![worker_sup, server]).map_err(PoolError::Spec)
}

/// Stops a pool and its workers (ppool's `stop_pool/1`).
pub async fn stop_pool(name: &str) -> Result<(), PoolError> {
    let pools = SupervisorRef::from_name(POOLS);
    let refused = |e| match e {
        SupervisorError::Call(e) => PoolError::Call(e),
        e => PoolError::Supervisor(e),
    };
    pools.terminate_child(name).await.map_err(refused)?;
    pools.delete_child(name).await.map_err(refused)
}

/// A handle on the pool named `name`, whose jobs take arguments `A`.
pub struct Pool<A> {
    name: Arc<str>,
    _args: PhantomData<fn(A)>,
}

impl<A> Clone for Pool<A> {
    fn clone(&self) -> Self {
        Pool {
            name: self.name.clone(),
            _args: PhantomData,
        }
    }
}

impl<A> fmt::Debug for Pool<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pool({:?})", self.name)
    }
}

impl<A: Send + 'static> Pool<A> {
    /// A handle on the pool registered as `name`.
    pub fn from_name(name: impl Into<Arc<str>>) -> Pool<A> {
        Pool {
            name: name.into(),
            _args: PhantomData,
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool server's pid, if the pool runs.
    pub fn pid(&self) -> Option<Pid> {
        ember_runtime::whereis(&self.name)
    }

    async fn request(&self, request: Request<A>, timeout: Duration) -> Result<Response, CallError> {
        let pid = self.pid().ok_or(CallError::NoProc)?;
        gen::call::<Request<A>, Response>(pid, request, timeout).await
    }

    /// Starts a worker with `args` if a slot is free; [`PoolError::NoAlloc`]
    /// at once if not (ppool's `run/2`).
    pub async fn run(&self, args: A) -> Result<Pid, PoolError> {
        match self
            .request(Request::Run(args), gen::DEFAULT_TIMEOUT)
            .await?
        {
            Response::Started(result) => result,
            Response::Stats(_) => unreachable!("run answers Started"),
        }
    }

    /// Starts a worker with `args` as soon as a slot is free, waiting as
    /// long as it takes (ppool's `sync_queue/2`).
    pub async fn sync_queue(&self, args: A) -> Result<Pid, PoolError> {
        match self
            .request(Request::SyncQueue(args), gen::INFINITY)
            .await?
        {
            Response::Started(result) => result,
            Response::Stats(_) => unreachable!("sync_queue answers Started"),
        }
    }

    /// Starts a worker with `args` when a slot is free, without waiting
    /// (ppool's `async_queue/2`, a cast: dropped if the pool is not running).
    pub fn async_queue(&self, args: A) {
        if let Some(pid) = self.pid() {
            send(pid, Request::AsyncQueue(args));
        }
    }

    /// The pool's counters.
    pub async fn stats(&self) -> Result<PoolStats, CallError> {
        match self.request(Request::Stats, gen::DEFAULT_TIMEOUT).await? {
            Response::Stats(stats) => Ok(stats),
            Response::Started(_) => unreachable!("stats answers Stats"),
        }
    }
}

/// What the pool server is asked. `AsyncQueue` arrives as a plain message
/// (an info), like a cast.
pub(crate) enum Request<A> {
    Run(A),
    SyncQueue(A),
    AsyncQueue(A),
    Stats,
}

pub(crate) enum Response {
    Started(Result<Pid, PoolError>),
    Stats(PoolStats),
}

/// A job waiting for a slot.
enum Queued<A> {
    Sync(ReplyTo<Response>, A),
    Async(A),
}

/// The pool server (ppool_serv).
pub(crate) struct Server<A> {
    limit: usize,
    free: usize,
    workers: DynamicSupervisorRef<A>,
    refs: HashSet<MonitorRef>,
    queue: VecDeque<Queued<A>>,
}

impl<A: Clone + Send + 'static> Server<A> {
    /// Starts a worker in a free slot and monitors it.
    async fn start_worker(&mut self, args: A) -> Result<Pid, PoolError> {
        match self.workers.start_child(args).await {
            Ok(Some(pid)) => {
                self.refs.insert(monitor(pid));
                Ok(pid)
            }
            Ok(None) => Err(PoolError::Start(StartError::Ignore)),
            Err(SupervisorError::Start(e)) => Err(PoolError::Start(e)),
            Err(SupervisorError::Call(e)) => Err(PoolError::Call(e)),
            Err(e) => Err(PoolError::Supervisor(e)),
        }
    }

    /// Takes a slot for `args` if one is free.
    async fn try_start(&mut self, args: A) -> Option<Result<Pid, PoolError>> {
        if self.free == 0 {
            return None;
        }
        let started = self.start_worker(args).await;
        if started.is_ok() {
            self.free -= 1;
        }
        Some(started)
    }

    /// A worker exited: its slot goes to the oldest queued job that starts,
    /// or is freed (ppool_serv's `handle_down_worker/2`).
    async fn slot_released(&mut self) {
        while let Some(job) = self.queue.pop_front() {
            match job {
                Queued::Sync(from, args) => match self.start_worker(args).await {
                    Ok(pid) => {
                        from.reply(Response::Started(Ok(pid)));
                        return;
                    }
                    Err(e) => {
                        from.reply(Response::Started(Err(e)));
                    }
                },
                Queued::Async(args) => match self.start_worker(args).await {
                    Ok(_) => return,
                    Err(e) => tracing::error!(
                        target: "ember_otp::pool",
                        pool = %ember_runtime::self_pid(),
                        error = %e,
                        "a queued job's worker did not start"
                    ),
                },
            }
        }
        self.free += 1;
    }
}

impl<A: Clone + Send + 'static> GenServer for Server<A> {
    type Args = (usize, DynamicSupervisorRef<A>);
    type Call = Request<A>;
    type Reply = Response;
    type Cast = ();
    type Continue = ();

    async fn init((limit, workers): Self::Args) -> Init<Self> {
        Init::Ok(Server {
            limit,
            free: limit,
            workers,
            refs: HashSet::new(),
            queue: VecDeque::new(),
        })
    }

    async fn handle_call(
        &mut self,
        request: Request<A>,
        from: &ReplyTo<Response>,
    ) -> CallReturn<Self> {
        match request {
            Request::Run(args) => CallReturn::Reply(Response::Started(
                self.try_start(args)
                    .await
                    .unwrap_or(Err(PoolError::NoAlloc)),
            )),
            Request::SyncQueue(args) => {
                if self.free > 0 {
                    let started = self.try_start(args).await;
                    CallReturn::Reply(Response::Started(
                        started.unwrap_or(Err(PoolError::NoAlloc)),
                    ))
                } else {
                    self.queue.push_back(Queued::Sync(from.clone(), args));
                    CallReturn::NoReply
                }
            }
            Request::AsyncQueue(args) => {
                self.async_queue(args).await;
                CallReturn::NoReply
            }
            Request::Stats => CallReturn::Reply(Response::Stats(PoolStats {
                limit: self.limit,
                free: self.free,
                running: self.refs.len(),
                queued: self.queue.len(),
            })),
        }
    }

    async fn handle_info(&mut self, message: Envelope) -> Return<Self> {
        let message = match message.downcast::<Request<A>>() {
            Ok(Request::AsyncQueue(args)) => {
                self.async_queue(args).await;
                return Return::NoReply;
            }
            Ok(_) => return Return::NoReply,
            Err(message) => message,
        };
        if let Ok(down) = message.downcast::<Down>() {
            if self.refs.remove(&down.monitor) {
                self.slot_released().await;
            }
        }
        Return::NoReply
    }
}

impl<A: Clone + Send + 'static> Server<A> {
    /// ppool_serv's `handle_cast({async, Args}, …)`.
    async fn async_queue(&mut self, args: A) {
        if self.free == 0 {
            self.queue.push_back(Queued::Async(args));
            return;
        }
        if let Some(Err(e)) = self.try_start(args).await {
            tracing::error!(
                target: "ember_otp::pool",
                pool = %ember_runtime::self_pid(),
                error = %e,
                "an async job's worker did not start"
            );
        }
    }
}
