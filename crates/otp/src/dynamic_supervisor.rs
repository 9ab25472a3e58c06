//! The dynamic supervisor: OTP's `simple_one_for_one` supervisor (Elixir's
//! `DynamicSupervisor`), typed by the arguments its children start with.
//!
//! It starts with no children. Each [`DynamicSupervisorRef::start_child`]
//! call starts one more from the same template, with its own arguments;
//! restarts follow the template's restart type and count against the same
//! intensity as a [`Supervisor`](crate::supervisor)'s (one_for_one), and
//! `max_children` caps how many may run. On shutdown all children get the
//! exit signal at once and are waited for within one shutdown timeout, as
//! OTP does for `simple_one_for_one`.
//!
//! ```
//! use ember_otp::dynamic_supervisor::DynamicSupervisorSpec;
//! use ember_runtime::{receive, self_pid, send, spawn_link};
//!
//! # let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
//! # rt.block_on(async {
//! let me = self_pid();
//! // Workers are permanent by default: this one stays up once it answered
//! // (one that returned would be restarted, again and again).
//! let sup = DynamicSupervisorSpec::worker(move |n: u32| async move {
//!     Ok(spawn_link(async move {
//!         send(me, n * 2);
//!         receive::<()>().await;
//!     }))
//! })
//! .max_children(10)
//! .build()
//! .unwrap()
//! .start_link()
//! .await
//! .unwrap();
//! sup.start_child(21).await.unwrap();
//! assert_eq!(receive::<u32>().await, 42);
//! # });
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ember_runtime::{self_pid, send, trap_exit, Envelope, Exit, ExitReason, Pid};

use crate::gen::{self, CallError, ReplyTo, StartError, StartOptions};
use crate::gen_server::{self, CallReturn, GenServer, GenServerRef, Init, Return};
use crate::supervisor::{
    self, ChildCounts, ChildInfo, ChildSpec, ChildSpecBuilder, ChildStatus, ChildType, Restart,
    RestartLog, Shutdown, SpecError, SupervisorError, DEFAULT_INTENSITY, DEFAULT_PERIOD,
    DEFAULT_SUPERVISOR_SHUTDOWN, DEFAULT_WORKER_SHUTDOWN,
};

type StartFuture = Pin<Box<dyn Future<Output = Result<Pid, StartError>> + Send>>;
type TemplateFn<A> = Arc<dyn Fn(A) -> StartFuture + Send + Sync>;

/// The template and flags of a dynamic supervisor, validated by
/// [`DynamicSupervisorBuilder::build`].
pub struct DynamicSupervisorSpec<A> {
    start: TemplateFn<A>,
    restart: Restart,
    shutdown: Shutdown,
    child_type: ChildType,
    intensity: u32,
    period: Duration,
    max_children: Option<usize>,
}

impl<A> Clone for DynamicSupervisorSpec<A> {
    fn clone(&self) -> Self {
        DynamicSupervisorSpec {
            start: self.start.clone(),
            restart: self.restart,
            shutdown: self.shutdown,
            child_type: self.child_type,
            intensity: self.intensity,
            period: self.period,
            max_children: self.max_children,
        }
    }
}

impl<A> fmt::Debug for DynamicSupervisorSpec<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamicSupervisorSpec")
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("type", &self.child_type)
            .field("intensity", &self.intensity)
            .field("period", &self.period)
            .field("max_children", &self.max_children)
            .finish_non_exhaustive()
    }
}

/// A [`DynamicSupervisorSpec`] being built.
#[must_use = "a dynamic supervisor spec is only checked and usable once built"]
pub struct DynamicSupervisorBuilder<A>(DynamicSupervisorSpec<A>);

fn template<A, F, Fut, P>(start: F) -> TemplateFn<A>
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<P, StartError>> + Send + 'static,
    P: Into<Pid>,
{
    Arc::new(move |args| {
        let started = start(args);
        Box::pin(async move { started.await.map(Into::into) })
    })
}

impl<A: Clone + Send + 'static> DynamicSupervisorSpec<A> {
    /// Worker children started by `start(args)`, which runs in the
    /// supervisor and must start a process linked to it. Defaults:
    /// permanent, shutdown 5000 ms, intensity 1 in 5 s, no child limit.
    pub fn worker<F, Fut, P>(start: F) -> DynamicSupervisorBuilder<A>
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<P, StartError>> + Send + 'static,
        P: Into<Pid>,
    {
        DynamicSupervisorBuilder(DynamicSupervisorSpec {
            start: template(start),
            restart: Restart::Permanent,
            shutdown: DEFAULT_WORKER_SHUTDOWN,
            child_type: ChildType::Worker,
            intensity: DEFAULT_INTENSITY,
            period: DEFAULT_PERIOD,
            max_children: None,
        })
    }

    /// Supervisor children (shutdown infinity by default).
    pub fn supervisor<F, Fut, P>(start: F) -> DynamicSupervisorBuilder<A>
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<P, StartError>> + Send + 'static,
        P: Into<Pid>,
    {
        let mut builder = Self::worker(start);
        builder.0.child_type = ChildType::Supervisor;
        builder.0.shutdown = DEFAULT_SUPERVISOR_SHUTDOWN;
        builder
    }

    /// Starts the supervisor, linked to the caller.
    pub async fn start_link(self) -> Result<DynamicSupervisorRef<A>, StartError> {
        self.start_link_with(StartOptions::default()).await
    }

    /// Starts the supervisor with a registered name or a start timeout.
    pub async fn start_link_with(
        self,
        options: StartOptions,
    ) -> Result<DynamicSupervisorRef<A>, StartError> {
        let name = options.name.clone();
        gen_server::start_link_with::<Server<A>>((self, name), options)
            .await
            .map(DynamicSupervisorRef)
    }

    /// A child spec running this dynamic supervisor under a supervisor.
    pub fn child_spec(self, id: impl Into<Arc<str>>) -> ChildSpecBuilder
    where
        A: Sync,
    {
        let spec = self;
        ChildSpec::supervisor(id, move || spec.clone().start_link())
    }
}

impl<A> DynamicSupervisorBuilder<A> {
    /// The children's restart type (default permanent).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.0.restart = restart;
        self
    }

    /// The children's shutdown.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.0.shutdown = shutdown;
        self
    }

    /// At most `intensity` restarts…
    pub fn intensity(mut self, intensity: u32) -> Self {
        self.0.intensity = intensity;
        self
    }

    /// …within `period`.
    pub fn period(mut self, period: Duration) -> Self {
        self.0.period = period;
        self
    }

    /// At most this many children at once; more are refused with
    /// [`SupervisorError::MaxChildren`]. Must be greater than zero.
    pub fn max_children(mut self, max: usize) -> Self {
        self.0.max_children = Some(max);
        self
    }

    /// Checks the spec: period and shutdown timeout greater than zero,
    /// `max_children` greater than zero.
    pub fn build(self) -> Result<DynamicSupervisorSpec<A>, SpecError> {
        let spec = self.0;
        if spec.period.is_zero() {
            return Err(SpecError::InvalidPeriod);
        }
        if spec.shutdown == Shutdown::Timeout(Duration::ZERO) {
            return Err(SpecError::InvalidShutdown {
                id: "dynamic child".into(),
            });
        }
        if spec.max_children == Some(0) {
            return Err(SpecError::InvalidMaxChildren);
        }
        Ok(spec)
    }
}

/// A handle on a dynamic supervisor whose children start with `A`.
pub struct DynamicSupervisorRef<A>(GenServerRef<Server<A>>);

impl<A> Clone for DynamicSupervisorRef<A> {
    fn clone(&self) -> Self {
        DynamicSupervisorRef(self.0.clone())
    }
}

impl<A> fmt::Debug for DynamicSupervisorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DynamicSupervisorRef({:?})", self.0.pid())
    }
}

impl<A> From<DynamicSupervisorRef<A>> for Pid {
    fn from(sup: DynamicSupervisorRef<A>) -> Pid {
        sup.0.into()
    }
}

impl<A: Clone + Send + 'static> DynamicSupervisorRef<A> {
    /// A handle on the dynamic supervisor with this pid.
    pub fn from_pid(pid: Pid) -> Self {
        DynamicSupervisorRef(GenServerRef::from_pid(pid))
    }

    /// A handle on the dynamic supervisor registered as `name`.
    pub fn from_name(name: impl Into<Arc<str>>) -> Self {
        DynamicSupervisorRef(GenServerRef::from_name(name))
    }

    /// Its pid.
    pub fn pid(&self) -> Option<Pid> {
        self.0.pid()
    }

    async fn request(&self, request: Request<A>) -> Result<Response, CallError> {
        // Straight to the gen core rather than through `GenServerRef::call`:
        // a future naming `<Server<A> as GenServer>::Call` fails rustc's
        // `Send` check when `A` holds a `'static` trait object or reference
        // (rust-lang/rust#64552); `Request<A>` does not.
        let pid = self.pid().ok_or(CallError::NoProc)?;
        gen::call::<Request<A>, Response>(pid, request, gen::INFINITY).await
    }

    /// Starts a child with `args` (OTP's `supervisor:start_child(Sup,
    /// ExtraArgs)`). `Ok(None)` if its start returned ignore.
    pub async fn start_child(&self, args: A) -> Result<Option<Pid>, SupervisorError> {
        match self.request(Request::StartChild(args)).await? {
            Response::Started(result) => result,
            _ => unreachable!("start_child answers Started"),
        }
    }

    /// Starts a child with `args`, restarted and shut down as `restart`
    /// and `shutdown` say rather than as the template does (Elixir's
    /// `DynamicSupervisor`, whose children each carry their own: a
    /// `Task.Supervisor.start_child(sup, m, f, a, restart: :transient,
    /// shutdown: 100)`). A shutdown timeout of zero kills at once after
    /// the `shutdown` signal.
    pub async fn start_child_as(
        &self,
        args: A,
        restart: Restart,
        shutdown: Shutdown,
    ) -> Result<Option<Pid>, SupervisorError> {
        let how = ChildHow { restart, shutdown };
        match self.request(Request::StartChildAs(args, how)).await? {
            Response::Started(result) => result,
            _ => unreachable!("start_child answers Started"),
        }
    }

    /// Terminates the child `pid`. Like OTP, a pid that is no longer alive
    /// is fine; a live process that is not its child is
    /// [`SupervisorError::NotFound`].
    pub async fn terminate_child(&self, pid: Pid) -> Result<(), SupervisorError> {
        match self.request(Request::TerminateChild(pid)).await? {
            Response::Done(result) => result,
            _ => unreachable!("terminate_child answers Done"),
        }
    }

    /// Every child (ids are `None`), in start order.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, CallError> {
        match self.request(Request::WhichChildren).await? {
            Response::Children(children) => Ok(children),
            _ => unreachable!("which_children answers Children"),
        }
    }

    /// Counts: `specs` is 1 (the template), the rest as for a supervisor.
    pub async fn count_children(&self) -> Result<ChildCounts, CallError> {
        match self.request(Request::CountChildren).await? {
            Response::Counts(counts) => Ok(counts),
            _ => unreachable!("count_children answers Counts"),
        }
    }

    /// Stops the supervisor (reason `normal`) and its children.
    pub async fn stop(&self) -> Result<(), CallError> {
        self.0.stop_with(ExitReason::Normal, gen::INFINITY).await
    }
}

pub(crate) enum Request<A> {
    StartChild(A),
    StartChildAs(A, ChildHow),
    TerminateChild(Pid),
    WhichChildren,
    CountChildren,
}

pub(crate) enum Response {
    Started(Result<Option<Pid>, SupervisorError>),
    Done(Result<(), SupervisorError>),
    Children(Vec<ChildInfo>),
    Counts(ChildCounts),
}

/// How one child is restarted and shut down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChildHow {
    restart: Restart,
    shutdown: Shutdown,
}

/// A running child: its arguments (kept unless temporary) and how it is
/// restarted and shut down.
struct Child<A> {
    args: Option<A>,
    how: ChildHow,
}

/// Retry a failed restart (OTP's `{try_again_restart, Pid}`).
struct TryAgain(u64);

/// The dynamic supervisor's state.
pub(crate) struct Server<A> {
    name: Arc<str>,
    spec: DynamicSupervisorSpec<A>,
    log: RestartLog,
    /// Running children and their arguments (kept unless temporary).
    children: HashMap<Pid, Child<A>>,
    /// Children whose restart failed, retried with [`TryAgain`].
    restarting: HashMap<u64, (A, ChildHow)>,
    next_retry: u64,
    /// Restarts so far, for reports.
    restarts: u64,
}

impl<A: Clone + Send + 'static> Server<A> {
    fn len(&self) -> usize {
        self.children.len() + self.restarting.len()
    }

    /// Gives the children table's memory back once it is mostly empty (a
    /// supervisor that had a million children and now has few should not
    /// keep the table sized for a million). Amortized O(1): the table
    /// shrinks to twice its size only after losing three quarters.
    fn shrink(&mut self) {
        let len = self.children.len();
        if self.children.capacity() > 1024 && self.children.capacity() / 4 > len {
            self.children.shrink_to(len * 2);
        }
    }

    /// The template's restart and shutdown.
    fn template_how(&self) -> ChildHow {
        ChildHow {
            restart: self.spec.restart,
            shutdown: self.spec.shutdown,
        }
    }

    async fn start(&mut self, args: A, how: ChildHow) -> Result<Option<Pid>, StartError> {
        let keep = (how.restart != Restart::Temporary).then(|| args.clone());
        let started = match gen::guarded((self.spec.start)(args)).await {
            Ok(result) => result,
            Err(panic) => Err(StartError::Failed(panic)),
        };
        match started {
            Ok(pid) => {
                self.children.insert(pid, Child { args: keep, how });
                Ok(Some(pid))
            }
            Err(StartError::Ignore) => Ok(None),
            Err(e) => {
                supervisor::report(&self.name, "start_error", None, None, &e.reason(), 0);
                Err(e)
            }
        }
    }

    /// Restarts a child with `args`, counting against the intensity.
    async fn restart(&mut self, args: A, how: ChildHow) -> Return<Self> {
        if !self.log.add() {
            supervisor::report(
                &self.name,
                "reached_max_restart_intensity",
                None,
                None,
                &ExitReason::Shutdown,
                self.restarts,
            );
            return Return::Stop(ExitReason::Shutdown);
        }
        self.restarts += 1;
        if self.start(args.clone(), how).await.is_err() {
            let id = self.next_retry;
            self.next_retry += 1;
            self.restarting.insert(id, (args, how));
            send(self_pid(), TryAgain(id));
        }
        Return::NoReply
    }

    async fn child_exited(&mut self, pid: Pid, reason: ExitReason) -> Return<Self> {
        let Some(Child { args, how }) = self.children.remove(&pid) else {
            return Return::NoReply;
        };
        self.shrink();
        let restart = match how.restart {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_orderly(),
            Restart::Temporary => false,
        };
        if restart || !reason.is_orderly() {
            supervisor::report(
                &self.name,
                "child_terminated",
                None,
                Some(pid),
                &reason,
                self.restarts,
            );
        }
        match (restart, args) {
            (true, Some(args)) => self.restart(args, how).await,
            _ => Return::NoReply,
        }
    }

    async fn start_child(&mut self, args: A, how: ChildHow) -> Response {
        if self.spec.max_children.is_some_and(|max| self.len() >= max) {
            Response::Started(Err(SupervisorError::MaxChildren))
        } else {
            Response::Started(self.start(args, how).await.map_err(SupervisorError::Start))
        }
    }

    fn info(&self) -> Vec<ChildInfo> {
        let mut pids: Vec<Pid> = self.children.keys().copied().collect();
        pids.sort();
        let running = pids.into_iter().map(|pid| ChildInfo {
            id: None,
            status: ChildStatus::Running(pid),
            child_type: self.spec.child_type,
        });
        let restarting = self.restarting.keys().map(|_| ChildInfo {
            id: None,
            status: ChildStatus::Restarting,
            child_type: self.spec.child_type,
        });
        running.chain(restarting).collect()
    }

    fn counts(&self) -> ChildCounts {
        let n = self.len();
        ChildCounts {
            specs: 1,
            active: self.children.len(),
            supervisors: if self.spec.child_type == ChildType::Supervisor {
                n
            } else {
                0
            },
            workers: if self.spec.child_type == ChildType::Worker {
                n
            } else {
                0
            },
        }
    }
}

impl<A: Clone + Send + 'static> GenServer for Server<A> {
    type Args = (DynamicSupervisorSpec<A>, Option<Arc<str>>);
    type Call = Request<A>;
    type Reply = Response;
    type Cast = ();
    type Continue = ();

    async fn init((spec, name): Self::Args) -> Init<Self> {
        trap_exit(true);
        Init::Ok(Server {
            name: name.unwrap_or_else(|| self_pid().to_string().into()),
            log: RestartLog::new(spec.intensity, spec.period),
            spec,
            children: HashMap::new(),
            restarting: HashMap::new(),
            next_retry: 0,
            restarts: 0,
        })
    }

    async fn handle_call(
        &mut self,
        request: Request<A>,
        _: &ReplyTo<Response>,
    ) -> CallReturn<Self> {
        CallReturn::Reply(match request {
            Request::StartChild(args) => {
                let how = self.template_how();
                self.start_child(args, how).await
            }
            Request::StartChildAs(args, how) => self.start_child(args, how).await,
            Request::TerminateChild(pid) => {
                let removed = self.children.remove(&pid);
                self.shrink();
                let Some(Child { how, .. }) = removed else {
                    // OTP: a pid that is gone is fine, a live stranger is not.
                    return CallReturn::Reply(Response::Done(if ember_runtime::is_alive(pid) {
                        Err(SupervisorError::NotFound)
                    } else {
                        Ok(())
                    }));
                };
                if let Err(reason) = supervisor::shutdown(pid, how.shutdown, how.restart).await {
                    supervisor::report(
                        &self.name,
                        "shutdown_error",
                        None,
                        Some(pid),
                        &reason,
                        self.restarts,
                    );
                }
                Response::Done(Ok(()))
            }
            Request::WhichChildren => Response::Children(self.info()),
            Request::CountChildren => Response::Counts(self.counts()),
        })
    }

    async fn handle_info(&mut self, message: Envelope) -> Return<Self> {
        let message = match message.downcast::<Exit>() {
            Ok(Exit { from, reason }) => return self.child_exited(from, reason).await,
            Err(message) => message,
        };
        match message.downcast::<TryAgain>() {
            Ok(TryAgain(id)) => match self.restarting.remove(&id) {
                Some((args, how)) => self.restart(args, how).await,
                None => Return::NoReply,
            },
            Err(message) => {
                tracing::warn!(
                    target: "ember_otp::supervisor",
                    supervisor = &*self.name,
                    "dynamic supervisor received unexpected {}",
                    gen::describe(&message)
                );
                Return::NoReply
            }
        }
    }

    async fn terminate(&mut self, _reason: &ExitReason) {
        let mut children: Vec<(Pid, Shutdown, Restart)> = self
            .children
            .drain()
            .map(|(pid, c)| (pid, c.how.shutdown, c.how.restart))
            .collect();
        children.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
        for (pid, reason) in supervisor::shutdown_each(children).await {
            supervisor::report(
                &self.name,
                "shutdown_error",
                None,
                Some(pid),
                &reason,
                self.restarts,
            );
        }
    }
}
