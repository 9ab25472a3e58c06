//! A checkout/checkin pool of long-lived workers, such as connections: the
//! design of poolboy.
//!
//! The pool starts `size` workers and lends them out: [`ResourcePool::checkout`]
//! hands a free worker to the caller, [`ResourcePool::checkin`] gives it back.
//! When all are out, up to `max_overflow` extra workers are started, and
//! dismissed again when checked in while nobody waits. When even those are
//! out, a blocking checkout waits in line until a worker is checked in or its
//! timeout expires; a non-blocking one gets [`CheckoutError::Full`] at once.
//!
//! The pool monitors borrowers: a borrower that dies gives its worker back.
//! It links to its workers and traps exits: a worker that dies is replaced
//! (or, if it was an overflow worker, not). A checkout that timed out never
//! leaves a worker lent to nobody: a worker handed to a caller that has
//! given up is taken back at once (poolboy needs a `cancel_waiting` cast and
//! a second look for that).
//!
//! ```
//! use std::time::Duration;
//! use ember_otp::resource_pool::{CheckoutError, ResourcePoolSpec};
//! use ember_runtime::{receive, spawn_link};
//!
//! # let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
//! # rt.block_on(async {
//! let connections = ResourcePoolSpec::builder(|| async {
//!     Ok(spawn_link(async { loop { receive::<()>().await; } }))
//! })
//! .size(1)
//! .max_overflow(0)
//! .build()
//! .unwrap()
//! .start_link()
//! .await
//! .unwrap();
//! let conn = connections.checkout().await.unwrap();
//! assert_eq!(
//!     connections.checkout_timeout(false, Duration::from_secs(1)).await,
//!     Err(CheckoutError::Full)
//! );
//! connections.checkin(conn);
//! assert_eq!(connections.checkout().await, Ok(conn));
//! # });
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ember_runtime::{
    demonitor, monitor, trap_exit, Down, Envelope, Exit, ExitReason, MonitorRef, Pid,
};

use crate::gen::{self, CallError, ReplyTo, StartError, StartOptions};
use crate::gen_server::{self, CallReturn, GenServer, GenServerRef, Init, Return};
use crate::supervisor::{self, ChildSpec, ChildSpecBuilder, Restart, Shutdown, SpecError};

type StartFuture = std::pin::Pin<Box<dyn Future<Output = Result<Pid, StartError>> + Send>>;
type StartFn = Arc<dyn Fn() -> StartFuture + Send + Sync>;

/// Which free worker a checkout takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// The most recently checked in (poolboy's default: keeps few workers warm).
    #[default]
    Lifo,
    /// The least recently checked in (spreads use evenly).
    Fifo,
}

/// A resource pool's spec, validated by [`ResourcePoolBuilder::build`].
#[derive(Clone)]
pub struct ResourcePoolSpec {
    start: StartFn,
    size: usize,
    max_overflow: usize,
    strategy: Strategy,
    shutdown: Shutdown,
}

impl fmt::Debug for ResourcePoolSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourcePoolSpec")
            .field("size", &self.size)
            .field("max_overflow", &self.max_overflow)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

/// A [`ResourcePoolSpec`] being built.
#[must_use = "a pool spec is only checked and usable once built"]
pub struct ResourcePoolBuilder(ResourcePoolSpec);

impl ResourcePoolSpec {
    /// Workers started by `start()`, which runs in the pool server and must
    /// start a process linked to it. Defaults as poolboy's: size 5,
    /// max_overflow 10, lifo; workers get 5000 ms to shut down.
    pub fn builder<F, Fut, P>(start: F) -> ResourcePoolBuilder
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<P, StartError>> + Send + 'static,
        P: Into<Pid>,
    {
        ResourcePoolBuilder(ResourcePoolSpec {
            start: Arc::new(move || {
                let started = start();
                Box::pin(async move { started.await.map(Into::into) })
            }),
            size: 5,
            max_overflow: 10,
            strategy: Strategy::Lifo,
            shutdown: Shutdown::Timeout(Duration::from_millis(5000)),
        })
    }

    /// Starts the pool, linked to the caller; its `size` workers start first.
    pub async fn start_link(self) -> Result<ResourcePool, StartError> {
        self.start_link_with(StartOptions::default()).await
    }

    /// Starts the pool with a registered name or a start timeout.
    pub async fn start_link_with(self, options: StartOptions) -> Result<ResourcePool, StartError> {
        gen_server::start_link_with::<Server>(self, options)
            .await
            .map(ResourcePool)
    }

    /// A child spec running this pool under a supervisor.
    pub fn child_spec(self, id: impl Into<Arc<str>>) -> ChildSpecBuilder {
        ChildSpec::worker(id, move || self.clone().start_link())
    }
}

impl ResourcePoolBuilder {
    /// Workers kept started (default 5).
    pub fn size(mut self, size: usize) -> Self {
        self.0.size = size;
        self
    }

    /// Extra workers started when all are out, dismissed on checkin (default 10).
    pub fn max_overflow(mut self, max: usize) -> Self {
        self.0.max_overflow = max;
        self
    }

    /// Which free worker a checkout takes (default lifo).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.0.strategy = strategy;
        self
    }

    /// How workers are terminated (default a 5000 ms timeout).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.0.shutdown = shutdown;
        self
    }

    /// Checks the spec: the shutdown timeout must be greater than zero.
    pub fn build(self) -> Result<ResourcePoolSpec, SpecError> {
        if self.0.shutdown == Shutdown::Timeout(Duration::ZERO) {
            return Err(SpecError::InvalidShutdown {
                id: "resource pool worker".into(),
            });
        }
        Ok(self.0)
    }
}

/// Why a checkout returned no worker.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckoutError {
    /// Non-blocking checkout and no worker free (poolboy's `full`).
    Full,
    /// No worker within the timeout.
    Timeout,
    /// The pool could not be called.
    Call(CallError),
}

impl fmt::Display for CheckoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckoutError::Full => f.write_str("full: no worker is free"),
            CheckoutError::Timeout => f.write_str("timeout: no worker was free in time"),
            CheckoutError::Call(e) => write!(f, "cannot reach the pool: {e}"),
        }
    }
}

impl std::error::Error for CheckoutError {}

/// Whether workers are free (poolboy's state names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolState {
    /// Workers are free.
    Ready,
    /// None free, but overflow workers can still be started.
    Overflow,
    /// None free and the overflow is used up: checkouts wait.
    Full,
}

/// What [`ResourcePool::status`] returns (poolboy's `status/1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStatus {
    /// Ready, overflow or full.
    pub state: PoolState,
    /// Free workers.
    pub available: usize,
    /// Overflow workers running.
    pub overflow: usize,
    /// Workers checked out.
    pub checked_out: usize,
    /// Borrowers waiting.
    pub waiting: usize,
}

/// A handle on a resource pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePool(GenServerRef<Server>);

impl From<ResourcePool> for Pid {
    fn from(pool: ResourcePool) -> Pid {
        pool.0.into()
    }
}

impl ResourcePool {
    /// The pool registered as `name`.
    pub fn from_name(name: impl Into<Arc<str>>) -> ResourcePool {
        ResourcePool(GenServerRef::from_name(name))
    }

    /// The pool server's pid.
    pub fn pid(&self) -> Option<Pid> {
        self.0.pid()
    }

    /// Borrows a worker, waiting up to 5 s (poolboy's `checkout/1`).
    pub async fn checkout(&self) -> Result<Pid, CheckoutError> {
        self.checkout_timeout(true, gen::DEFAULT_TIMEOUT).await
    }

    /// Borrows a worker (poolboy's `checkout/3`): if none is free and no
    /// overflow worker can start, waits up to `timeout` when `block`, or
    /// fails with [`CheckoutError::Full`] at once.
    pub async fn checkout_timeout(
        &self,
        block: bool,
        timeout: Duration,
    ) -> Result<Pid, CheckoutError> {
        match self
            .0
            .call_timeout(Request::Checkout { block }, timeout)
            .await
        {
            Ok(Response::Worker(pid)) => Ok(pid),
            Ok(Response::Full) => Err(CheckoutError::Full),
            Ok(Response::Status(_)) => unreachable!("checkout answers Worker or Full"),
            Err(CallError::Timeout) => Err(CheckoutError::Timeout),
            Err(e) => Err(CheckoutError::Call(e)),
        }
    }

    /// Gives a worker back (poolboy's `checkin/2`, a cast).
    pub fn checkin(&self, worker: Pid) {
        self.0.cast(worker);
    }

    /// Borrows a worker for the time `work` runs, and gives it back even if
    /// `work` fails (poolboy's `transaction/3`). If the caller is killed
    /// meanwhile, the pool's monitor takes the worker back.
    pub async fn transaction<F, Fut, T>(
        &self,
        timeout: Duration,
        work: F,
    ) -> Result<T, CheckoutError>
    where
        F: FnOnce(Pid) -> Fut,
        Fut: Future<Output = T>,
    {
        let worker = self.checkout_timeout(true, timeout).await?;
        let result = work(worker).await;
        self.checkin(worker);
        Ok(result)
    }

    /// Free workers, overflow, borrowed and waiting counts.
    pub async fn status(&self) -> Result<PoolStatus, CallError> {
        match self.0.call(Request::Status).await? {
            Response::Status(status) => Ok(status),
            _ => unreachable!("status answers Status"),
        }
    }

    /// Stops the pool and its workers.
    pub async fn stop(&self) -> Result<(), CallError> {
        self.0.stop_with(ExitReason::Normal, gen::INFINITY).await
    }
}

pub(crate) enum Request {
    Checkout { block: bool },
    Status,
}

pub(crate) enum Response {
    Worker(Pid),
    Full,
    Status(PoolStatus),
}

/// A borrower waiting in line.
struct Waiter {
    from: ReplyTo<Response>,
    monitor: MonitorRef,
}

/// The pool server.
pub(crate) struct Server {
    spec: ResourcePoolSpec,
    /// Free workers; the front is taken.
    available: VecDeque<Pid>,
    /// Borrowed workers → the monitor on their borrower.
    borrowed: HashMap<Pid, MonitorRef>,
    /// Borrower monitors → the worker they hold.
    borrowers: HashMap<MonitorRef, Pid>,
    waiting: VecDeque<Waiter>,
    overflow: usize,
}

impl Server {
    async fn new_worker(&self) -> Result<Pid, ExitReason> {
        supervisor_start(&self.spec.start).await
    }

    fn lend(&mut self, worker: Pid, borrower: Pid) {
        let mref = monitor(borrower);
        self.borrowed.insert(worker, mref);
        self.borrowers.insert(mref, worker);
    }

    /// A worker is free again: to the first borrower still waiting, else
    /// dismissed if it is an overflow one, else back to the free list
    /// (poolboy's `handle_checkin/2`).
    async fn give_back(&mut self, worker: Pid) {
        while let Some(waiter) = self.waiting.pop_front() {
            demonitor(waiter.monitor, true);
            if waiter.from.reply(Response::Worker(worker)) {
                self.lend(worker, waiter.from.caller());
                return;
            }
        }
        if self.overflow > 0 {
            self.overflow -= 1;
            self.dismiss(worker).await;
        } else {
            match self.spec.strategy {
                Strategy::Lifo => self.available.push_front(worker),
                Strategy::Fifo => self.available.push_back(worker),
            }
        }
    }

    async fn dismiss(&self, worker: Pid) {
        if let Err(reason) =
            supervisor::shutdown(worker, self.spec.shutdown, Restart::Temporary).await
        {
            tracing::warn!(
                target: "ember_otp::resource_pool",
                worker = %worker,
                reason = %reason,
                "an overflow worker did not shut down cleanly"
            );
        }
    }

    /// A worker died (poolboy's `handle_worker_exit/2`).
    async fn worker_exited(&mut self, worker: Pid) -> Result<(), ExitReason> {
        if let Some(mref) = self.borrowed.remove(&worker) {
            demonitor(mref, true);
            self.borrowers.remove(&mref);
            if self.serve_a_waiter_with_a_new_worker().await? {
                // The dead worker's place went to a waiter.
            } else if self.overflow > 0 {
                self.overflow -= 1;
            } else {
                let fresh = self.new_worker().await?;
                self.available.push_front(fresh);
            }
        } else if let Some(at) = self.available.iter().position(|w| *w == worker) {
            self.available.remove(at);
            let fresh = self.new_worker().await?;
            self.available.push_back(fresh);
        }
        Ok(())
    }

    /// Starts a worker for the first live waiter, if any; true if there was one.
    async fn serve_a_waiter_with_a_new_worker(&mut self) -> Result<bool, ExitReason> {
        while let Some(waiter) = self.waiting.pop_front() {
            demonitor(waiter.monitor, true);
            if !waiter.from.is_waiting() {
                continue;
            }
            let fresh = self.new_worker().await?;
            if waiter.from.reply(Response::Worker(fresh)) {
                self.lend(fresh, waiter.from.caller());
            } else {
                self.available.push_front(fresh);
            }
            return Ok(true);
        }
        Ok(false)
    }

    fn status(&self) -> PoolStatus {
        let state = if !self.available.is_empty() {
            PoolState::Ready
        } else if self.overflow < self.spec.max_overflow {
            PoolState::Overflow
        } else {
            PoolState::Full
        };
        PoolStatus {
            state,
            available: self.available.len(),
            overflow: self.overflow,
            checked_out: self.borrowed.len(),
            waiting: self.waiting.iter().filter(|w| w.from.is_waiting()).count(),
        }
    }
}

async fn supervisor_start(start: &StartFn) -> Result<Pid, ExitReason> {
    match gen::guarded(start()).await {
        Ok(Ok(pid)) => Ok(pid),
        Ok(Err(e)) => Err(e.reason()),
        Err(panic) => Err(panic),
    }
}

impl GenServer for Server {
    type Args = ResourcePoolSpec;
    type Call = Request;
    type Reply = Response;
    type Cast = Pid;
    type Continue = ();

    async fn init(spec: ResourcePoolSpec) -> Init<Self> {
        trap_exit(true);
        let mut server = Server {
            available: VecDeque::with_capacity(spec.size),
            spec,
            borrowed: HashMap::new(),
            borrowers: HashMap::new(),
            waiting: VecDeque::new(),
            overflow: 0,
        };
        for _ in 0..server.spec.size {
            match server.new_worker().await {
                Ok(pid) => server.available.push_back(pid),
                Err(reason) => {
                    let started: Vec<Pid> = server.available.drain(..).collect();
                    supervisor::shutdown_all(started, server.spec.shutdown, Restart::Temporary)
                        .await;
                    return Init::Stop(reason);
                }
            }
        }
        Init::Ok(server)
    }

    async fn handle_call(
        &mut self,
        request: Request,
        from: &ReplyTo<Response>,
    ) -> CallReturn<Self> {
        match request {
            Request::Status => CallReturn::Reply(Response::Status(self.status())),
            Request::Checkout { block } => {
                if let Some(worker) = self.available.pop_front() {
                    self.lend(worker, from.caller());
                    return CallReturn::Reply(Response::Worker(worker));
                }
                if self.overflow < self.spec.max_overflow {
                    return match self.new_worker().await {
                        Ok(worker) => {
                            self.overflow += 1;
                            self.lend(worker, from.caller());
                            CallReturn::Reply(Response::Worker(worker))
                        }
                        Err(reason) => CallReturn::Stop(reason),
                    };
                }
                if !block {
                    return CallReturn::Reply(Response::Full);
                }
                let mref = monitor(from.caller());
                self.waiting.push_back(Waiter {
                    from: from.clone(),
                    monitor: mref,
                });
                CallReturn::NoReply
            }
        }
    }

    async fn handle_cast(&mut self, worker: Pid) -> Return<Self> {
        if let Some(mref) = self.borrowed.remove(&worker) {
            demonitor(mref, true);
            self.borrowers.remove(&mref);
            self.give_back(worker).await;
        }
        Return::NoReply
    }

    async fn handle_info(&mut self, message: Envelope) -> Return<Self> {
        let message = match message.downcast::<Down>() {
            Ok(down) => {
                if let Some(worker) = self.borrowers.remove(&down.monitor) {
                    // The borrower died: its worker comes back.
                    self.borrowed.remove(&worker);
                    self.give_back(worker).await;
                } else {
                    self.waiting.retain(|w| w.monitor != down.monitor);
                }
                return Return::NoReply;
            }
            Err(message) => message,
        };
        if let Ok(Exit { from, .. }) = message.downcast::<Exit>() {
            if let Err(reason) = self.worker_exited(from).await {
                return Return::Stop(reason);
            }
        }
        Return::NoReply
    }

    async fn terminate(&mut self, _reason: &ExitReason) {
        let mut workers: Vec<Pid> = self.available.drain(..).collect();
        workers.extend(self.borrowed.drain().map(|(worker, _)| worker));
        supervisor::shutdown_all(workers, self.spec.shutdown, Restart::Temporary).await;
    }
}
