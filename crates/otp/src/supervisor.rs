//! The supervisor behaviour: OTP's `supervisor`, itself a
//! [`GenServer`](crate::gen_server::GenServer).
//!
//! A supervisor starts its children in order, traps exits, and when a child
//! terminates restarts it (and others) according to its [`Strategy`] and the
//! child's [`Restart`] type. More than `intensity` restarts within `period`
//! and it gives up: it terminates every child in reverse start order and
//! exits with `shutdown`, so its own supervisor decides what comes next
//! (escalation). Stopping it terminates the children in reverse start order,
//! each as its [`Shutdown`] says.
//!
//! ```
//! use ember_otp::gen_server;
//! use ember_otp::supervisor::{self, ChildSpec, Flags, Strategy, SupervisorSpec};
//! # use ember_otp::gen_server::{GenServer, Init};
//! # struct Cache;
//! # impl GenServer for Cache {
//! #     type Args = (); type Call = (); type Reply = (); type Cast = (); type Continue = ();
//! #     async fn init(_: ()) -> Init<Self> { Init::Ok(Cache) }
//! # }
//!
//! # let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
//! # rt.block_on(async {
//! let spec = SupervisorSpec::new(
//!     Flags::new().strategy(Strategy::OneForAll).intensity(3),
//!     vec![ChildSpec::worker("cache", || gen_server::start_link::<Cache>(())).build().unwrap()],
//! )
//! .unwrap();
//! let sup = spec.start_link().await.unwrap();
//! let counts = sup.count_children().await.unwrap();
//! assert_eq!((counts.specs, counts.active, counts.workers), (1, 1, 1));
//! # });
//! ```

mod child;
mod server;
mod spec;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ember_runtime::{ExitReason, Pid};

pub(crate) use child::{report, shutdown, shutdown_all, shutdown_each, RestartLog};
pub use spec::{
    check_child_specs, ChildSpec, ChildSpecBuilder, ChildType, Flags, Restart, Shutdown, SpecError,
    Strategy, DEFAULT_INTENSITY, DEFAULT_PERIOD, DEFAULT_STRATEGY, DEFAULT_SUPERVISOR_SHUTDOWN,
    DEFAULT_WORKER_SHUTDOWN,
};

use crate::gen::{self, CallError, StartError, StartOptions};
use crate::gen_server::{self, GenServerRef};
use server::{Request, Response, Server};

/// A supervisor callback module (OTP's `supervisor` behaviour): its only
/// callback, `init`, returns the flags and child specs.
///
/// A fixed [`SupervisorSpec`] needs no module: start it with
/// [`SupervisorSpec::start_link`].
pub trait Supervisor: Send + 'static {
    /// What `init` is started with.
    type Args: Send + 'static;

    /// Returns the supervisor's flags and children, or `Ignore` (OTP's
    /// `init/1`). Runs inside the new supervisor process.
    fn init(args: Self::Args) -> impl Future<Output = Init> + Send;
}

/// What a supervisor's `init` returns.
#[derive(Debug)]
pub enum Init {
    /// `{ok, {Flags, ChildSpecs}}`.
    Ok(SupervisorSpec),
    /// `ignore`: the start returns [`StartError::Ignore`].
    Ignore,
}

/// Validated flags and child specs of a supervisor.
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    pub(crate) flags: Flags,
    pub(crate) children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// Checks the flags (period greater than zero) and the children (each
    /// valid, ids unique).
    pub fn new(flags: Flags, children: Vec<ChildSpec>) -> Result<SupervisorSpec, SpecError> {
        flags.validate()?;
        check_child_specs(&children)?;
        Ok(SupervisorSpec { flags, children })
    }

    /// The flags.
    pub fn flags(&self) -> Flags {
        self.flags
    }

    /// The child specs, in start order.
    pub fn children(&self) -> &[ChildSpec] {
        &self.children
    }

    /// Starts a supervisor with this spec, linked to the caller.
    pub async fn start_link(self) -> Result<SupervisorRef, StartError> {
        start_link::<SupervisorSpec>(self).await
    }

    /// Starts a supervisor with this spec and a name or start timeout.
    pub async fn start_link_with(self, options: StartOptions) -> Result<SupervisorRef, StartError> {
        start_link_with::<SupervisorSpec>(self, options).await
    }

    /// A child spec that runs this supervisor under another (type
    /// supervisor, shutdown infinity, permanent).
    pub fn child_spec(self, id: impl Into<Arc<str>>) -> ChildSpecBuilder {
        ChildSpec::supervisor(id, move || self.clone().start_link())
    }
}

impl Supervisor for SupervisorSpec {
    type Args = SupervisorSpec;

    async fn init(spec: SupervisorSpec) -> Init {
        Init::Ok(spec)
    }
}

/// The boxed `init` future of a supervisor module.
type InitFuture = Pin<Box<dyn Future<Output = Init> + Send>>;

/// Starts a supervisor running module `M`, linked to the caller (OTP's
/// `supervisor:start_link/2`). Returns once every child has started; if one
/// fails, the ones started are terminated and the error is
/// [`StartError::Failed`] with `{shutdown, {failed_to_start_child, Id, Reason}}`.
pub async fn start_link<M: Supervisor>(args: M::Args) -> Result<SupervisorRef, StartError> {
    start_link_with::<M>(args, StartOptions::default()).await
}

/// [`start_link`] with a registered name (OTP's `supervisor:start_link/3`)
/// or a start timeout.
pub async fn start_link_with<M: Supervisor>(
    args: M::Args,
    options: StartOptions,
) -> Result<SupervisorRef, StartError> {
    let init: InitFuture = Box::pin(M::init(args));
    let name = options.name.clone();
    gen_server::start_link_with::<Server>((init, name), options)
        .await
        .map(SupervisorRef)
}

/// A handle on a supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorRef(GenServerRef<Server>);

/// One child as [`SupervisorRef::which_children`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildInfo {
    /// Its id; `None` for the children of a dynamic supervisor (OTP's `undefined`).
    pub id: Option<Arc<str>>,
    /// Whether it runs.
    pub status: ChildStatus,
    /// Worker or supervisor.
    pub child_type: ChildType,
}

/// Whether a child runs (the second element of OTP's `which_children` tuples).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildStatus {
    /// It runs as this process.
    Running(Pid),
    /// Its restart failed; the supervisor is trying again.
    Restarting,
    /// Not running (terminated, or its start returned ignore); its spec is kept.
    Undefined,
}

impl ChildStatus {
    /// The pid, if it runs.
    pub fn pid(self) -> Option<Pid> {
        match self {
            ChildStatus::Running(pid) => Some(pid),
            _ => None,
        }
    }
}

/// What [`SupervisorRef::count_children`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildCounts {
    /// Child specs, running or not.
    pub specs: usize,
    /// Children running.
    pub active: usize,
    /// Specs of type supervisor.
    pub supervisors: usize,
    /// Specs of type worker.
    pub workers: usize,
}

/// Why a supervisor operation was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The supervisor could not be called (not alive, exited).
    Call(CallError),
    /// No child has that id (OTP's `not_found`).
    NotFound,
    /// The child is running (OTP's `running`): terminate it first.
    Running,
    /// The child is being restarted (OTP's `restarting`).
    Restarting,
    /// A child with that id exists but is not running (OTP's `already_present`).
    AlreadyPresent,
    /// A child with that id runs as this pid (OTP's `already_started`).
    AlreadyStarted(Pid),
    /// The child's start failed.
    Start(StartError),
    /// The spec is invalid.
    Spec(SpecError),
    /// A dynamic supervisor already has `max_children` children.
    MaxChildren,
}

impl fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorError::Call(e) => write!(f, "cannot reach the supervisor: {e}"),
            SupervisorError::NotFound => f.write_str("not_found: no child has that id"),
            SupervisorError::Running => f.write_str("running: the child is running"),
            SupervisorError::Restarting => f.write_str("restarting: the child is being restarted"),
            SupervisorError::AlreadyPresent => {
                f.write_str("already_present: a child with that id exists")
            }
            SupervisorError::AlreadyStarted(pid) => {
                write!(f, "already_started: the child runs as {pid}")
            }
            SupervisorError::Start(e) => write!(f, "the child did not start: {e}"),
            SupervisorError::Spec(e) => e.fmt(f),
            SupervisorError::MaxChildren => f.write_str("max_children: no room for another child"),
        }
    }
}

impl std::error::Error for SupervisorError {}

impl From<CallError> for SupervisorError {
    fn from(e: CallError) -> Self {
        SupervisorError::Call(e)
    }
}

impl From<SupervisorRef> for Pid {
    fn from(sup: SupervisorRef) -> Pid {
        sup.0.into()
    }
}

impl SupervisorRef {
    /// A handle on the supervisor with this pid.
    pub fn from_pid(pid: Pid) -> SupervisorRef {
        SupervisorRef(GenServerRef::from_pid(pid))
    }

    /// A handle on the supervisor registered as `name`.
    pub fn from_name(name: impl Into<Arc<str>>) -> SupervisorRef {
        SupervisorRef(GenServerRef::from_name(name))
    }

    /// Its pid (`None` for a name that is not registered).
    pub fn pid(&self) -> Option<Pid> {
        self.0.pid()
    }

    async fn request(&self, request: Request) -> Result<Response, CallError> {
        // Like OTP, supervisor calls wait as long as the operation takes.
        self.0.call_timeout(request, gen::INFINITY).await
    }

    /// Every child, in start order.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, CallError> {
        match self.request(Request::WhichChildren).await? {
            Response::Children(children) => Ok(children),
            _ => unreachable!("which_children answers Children"),
        }
    }

    /// How many specs, running children, supervisors and workers.
    pub async fn count_children(&self) -> Result<ChildCounts, CallError> {
        match self.request(Request::CountChildren).await? {
            Response::Counts(counts) => Ok(counts),
            _ => unreachable!("count_children answers Counts"),
        }
    }

    /// Adds a child and starts it (OTP's `start_child/2`). `Ok(None)` if its
    /// start returned ignore (its spec is kept unless temporary).
    pub async fn start_child(&self, spec: ChildSpec) -> Result<Option<Pid>, SupervisorError> {
        match self.request(Request::StartChild(spec)).await? {
            Response::Started(result) => result,
            _ => unreachable!("start_child answers Started"),
        }
    }

    /// Terminates a child; its spec stays (unless temporary) so it can be
    /// restarted with [`restart_child`](Self::restart_child).
    pub async fn terminate_child(&self, id: &str) -> Result<(), SupervisorError> {
        match self.request(Request::TerminateChild(id.into())).await? {
            Response::Done(result) => result,
            _ => unreachable!("terminate_child answers Done"),
        }
    }

    /// Starts a terminated child again from its spec.
    pub async fn restart_child(&self, id: &str) -> Result<Option<Pid>, SupervisorError> {
        match self.request(Request::RestartChild(id.into())).await? {
            Response::Started(result) => result,
            _ => unreachable!("restart_child answers Started"),
        }
    }

    /// Removes the spec of a terminated child.
    pub async fn delete_child(&self, id: &str) -> Result<(), SupervisorError> {
        match self.request(Request::DeleteChild(id.into())).await? {
            Response::Done(result) => result,
            _ => unreachable!("delete_child answers Done"),
        }
    }

    /// The spec of a child.
    pub async fn get_childspec(&self, id: &str) -> Result<ChildSpec, SupervisorError> {
        match self.request(Request::GetChildSpec(id.into())).await? {
            Response::Spec(spec) => spec.ok_or(SupervisorError::NotFound),
            _ => unreachable!("get_childspec answers Spec"),
        }
    }

    /// Stops the supervisor (reason `normal`, as OTP's `gen_server:stop/1`
    /// and Elixir's `Supervisor.stop/1`): its children are terminated in
    /// reverse start order first.
    pub async fn stop(&self) -> Result<(), CallError> {
        self.0.stop_with(ExitReason::Normal, gen::INFINITY).await
    }
}
