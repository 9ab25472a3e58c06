//! Supervised tasks across nodes, with Elixir's `Task.Supervisor` wire
//! protocol, both ways.
//!
//! # Serving: [`start_task_supervisor`]
//!
//! A task supervisor registered under a name that other nodes start
//! [`Functions`] under, as they would start tasks under an Elixir
//! `Task.Supervisor`: from iex,
//! `Task.Supervisor.async({:ember_tasks, :"ember@host"}, :ember_demo,
//! :fact_bits, [1000]) |> Task.await()` answers `8530`. What crosses for
//! that call (Elixir 1.14 to 1.19):
//!
//! 1. the caller's `gen_server` call `{start_task, [{CallerNode,
//!    CallerPidOrName, CallerPid}, monitor], temporary, Shutdown}`,
//!    answered `{ok, TaskPid}` (or `{error, max_children}`);
//! 2. the caller links to the task (`async` only) and monitors it with an
//!    alias, then sends it `{CallerPid, Ref, ReplyTo, Callers, {M, F,
//!    Args}}`;
//! 3. the task, which has monitored the caller meanwhile and waits at most
//!    5 s for that message, runs `M:F(Args)` and sends `{Ref, Result}` to
//!    `ReplyTo` (an alias, or a pid), then exits `normal`; or it exits with
//!    Elixir's reasons: `{Reason, Stack}` for an error (`{{panic,
//!    Message}, Stack}` for a Rust panic), `{{nocatch, Value}, Stack}` for a
//!    throw, `Reason` for an exit, `{undef, [{M, F, Args, []}]}` for a
//!    function that is not registered. The caller's `Task.await` exits
//!    with that reason, as with a task supervisor of its own kind.
//!
//! `Task.Supervisor.start_child` (Elixir 1.14's `{start_task, [Owner,
//! Callers, {M, F, A}], Restart, Shutdown}`, and 1.15+'s `[Owner,
//! monitor]` form), `Task.Supervisor.children/1` (`which_children`),
//! `count_children` and `terminate_child` are served too. An anonymous
//! function (`Task.Supervisor.async(sup, fn -> ... end)` sends `{erlang,
//! apply, [Fun, []]}`) is compiled code of the caller's node, which a Rust
//! node cannot run: the task exits with an `ArgumentError` that says so,
//! which iex prints as such; an external fun (`&:ember_demo.node_info/0`)
//! runs the registered function it names. The node and the supervisor
//! carry on either way.
//!
//! The registered process is a gen_server in front of an
//! `ember_otp::task::TaskSupervisor` it starts linked to itself: the tasks
//! are that supervisor's children, restarted as the caller's `restart:`
//! says (temporary unless a `start_child` asks for `permanent` or
//! `transient`) and shut down with the caller's `shutdown:` (5 s when it
//! names none), and each task runs its function in its own process, so
//! killing the task (`Task.shutdown`, a crashing linked caller) stops the
//! function. As with a BEAM `Task.Supervisor`, a task's output goes to
//! this node's group leader, not to the remote caller's.
//!
//! # Calling: [`RemoteTaskSupervisor`]
//!
//! The same protocol from Rust: [`RemoteTaskSupervisor::async_nolink`]
//! starts `M:F(Args)` under a task supervisor on any node (an Ember node's
//! [`start_task_supervisor`], or an Elixir node's `Task.Supervisor`) and
//! returns a [`RemoteTask`] to await, as `ember_otp::task::Task` for local
//! tasks.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ember_otp::gen::{self, guarded, CallError, ReplyTo, StartError, StartOptions};
use ember_otp::gen_server::{self, call_term, CallReturn, GenServer, Init, TermServer};
use ember_otp::supervisor::{ChildSpec, ChildSpecBuilder, Restart, Shutdown, SupervisorError};
use ember_otp::task::{TaskError, TaskSupervisor};
use ember_runtime::dist as rdist;
use ember_runtime::{
    demonitor, exit, exit_self, monitor, receive_any, self_pid, send, unalias, unlink, Down,
    ExitReason, MonitorRef, Pid,
};
use ember_term::{Fun, Term};

use crate::procs::{stack, Functions, Raise};

/// How long a task waits for its caller's `{M, F, A}` message after the
/// start (Elixir's `Task.Supervised` `@ref_timeout`).
const MFA_TIMEOUT: Duration = Duration::from_secs(5);

/// A task's shutdown when its caller names none (Elixir's
/// `Task.Supervisor` default).
const TASK_SHUTDOWN: Duration = Duration::from_secs(5);

/// The module Elixir's task children report in `which_children`.
const SUPERVISED: &str = "Elixir.Task.Supervised";

// ------------------------------------------------------------- serving

/// Starts a task supervisor registered as `name`, linked to the caller,
/// that runs `functions` for other nodes with Elixir's `Task.Supervisor`
/// protocol (see the [module](self)); at most `max_children` tasks at
/// once (`{error, max_children}` past that). Returns its pid.
pub async fn start_task_supervisor(
    name: &str,
    functions: Functions,
    max_children: Option<usize>,
) -> Result<Pid, StartError> {
    let args = ServiceArgs {
        name: name.into(),
        functions,
        max_children,
    };
    gen_server::start_link_with::<TaskService>(args, StartOptions::new().name(name))
        .await
        .map(Pid::from)
}

/// [`start_task_supervisor`] as a child of a supervisor (a permanent
/// worker with id `id`).
pub fn task_supervisor_spec(
    id: &str,
    name: &str,
    functions: Functions,
    max_children: Option<usize>,
) -> ChildSpecBuilder {
    let name: Arc<str> = name.into();
    ChildSpec::worker(id, move || {
        let (name, functions) = (name.clone(), functions.clone());
        async move { start_task_supervisor(&name, functions, max_children).await }
    })
}

/// What the front server starts with.
struct ServiceArgs {
    name: Arc<str>,
    functions: Functions,
    max_children: Option<usize>,
}

/// The registered front: answers the term calls, keeps the tasks in its
/// own `TaskSupervisor`.
struct TaskService {
    name: Arc<str>,
    functions: Functions,
    tasks: TaskSupervisor,
}

/// A term call to the task supervisor.
enum ServiceCall {
    /// `{start_task, Args, Restart, Shutdown}`: start a task for `owner`,
    /// restarted and shut down as the caller asked.
    Start {
        owner: Pid,
        job: Job,
        restart: Restart,
        shutdown: Shutdown,
    },
    /// `{start_task, ...}` refused with this reason.
    Unsupported(Term),
    /// `which_children`.
    WhichChildren,
    /// `count_children`.
    CountChildren,
    /// `{terminate_child, Pid}`.
    Terminate(Pid),
}

/// What a started task does.
#[derive(Clone)]
enum Job {
    /// Wait for the caller's `{Owner, Ref, ReplyTo, Callers, MFA}`, run
    /// the function, reply (`async`, `async_nolink`, 1.15+ `start_child`).
    Reply,
    /// Run this `{M, F, Args}` and reply to no one (1.14 `start_child`).
    Run(Term),
}

/// The answer to a [`ServiceCall`], as a term.
enum ServiceReply {
    Started(Pid),
    Error(Term),
    Children(Vec<Pid>),
    Count(usize),
    Ok,
}

impl ServiceCall {
    fn from_term(request: &Term) -> Option<ServiceCall> {
        if request.is_atom("which_children") {
            return Some(ServiceCall::WhichChildren);
        }
        if request.is_atom("count_children") {
            return Some(ServiceCall::CountChildren);
        }
        match request.as_tuple()? {
            [what, pid] if what.is_atom("terminate_child") => {
                rdist::pid_from_term(pid).map(ServiceCall::Terminate)
            }
            [what, args, restart_term, shutdown] if what.is_atom("start_task") => {
                let refuse = |what: &str, value: &Term| {
                    Some(ServiceCall::Unsupported(Term::tuple([
                        Term::atom(what),
                        value.clone(),
                    ])))
                };
                // Elixir's DynamicSupervisor: `nil` is the supervisor's
                // default (temporary, 5000 ms).
                let restart = match restart_term {
                    Term::Atom(a) if matches!(a.as_str(), "nil" | "temporary") => {
                        Restart::Temporary
                    }
                    Term::Atom(a) if a.as_str() == "transient" => Restart::Transient,
                    Term::Atom(a) if a.as_str() == "permanent" => Restart::Permanent,
                    other => return refuse("invalid_restart_type", other),
                };
                let shutdown = match shutdown {
                    Term::Atom(a) if a.as_str() == "nil" => Shutdown::Timeout(TASK_SHUTDOWN),
                    Term::Atom(a) if a.as_str() == "brutal_kill" => Shutdown::BrutalKill,
                    Term::Atom(a) if a.as_str() == "infinity" => Shutdown::Infinity,
                    other => match other.as_int().and_then(|ms| u64::try_from(ms).ok()) {
                        Some(ms) => Shutdown::Timeout(Duration::from_millis(ms)),
                        None => return refuse("invalid_shutdown", other),
                    },
                };
                let (owner, job) = match args.as_list()? {
                    // A task that replies once cannot be restarted: its
                    // caller's `{M, F, A}` message comes once (Elixir
                    // would restart it until the supervisor gives up).
                    [_, mode] if mode.is_atom("monitor") && restart != Restart::Temporary => {
                        return refuse("restart_not_supported", restart_term)
                    }
                    [owner, mode] if mode.is_atom("monitor") => (owner, Job::Reply),
                    [owner, _callers, mfa @ Term::Tuple(_)] => (owner, Job::Run(mfa.clone())),
                    _ => return None,
                };
                // Elixir's owner: {Node, PidOrName, Pid}.
                let owner = match owner.as_tuple()? {
                    [_, _, pid] => rdist::pid_from_term(pid)?,
                    _ => return None,
                };
                Some(ServiceCall::Start {
                    owner,
                    job,
                    restart,
                    shutdown,
                })
            }
            _ => None,
        }
    }
}

impl GenServer for TaskService {
    type Args = ServiceArgs;
    type Call = ServiceCall;
    type Reply = ServiceReply;
    type Cast = ();
    type Continue = ();

    async fn init(args: ServiceArgs) -> Init<Self> {
        let options = StartOptions::new();
        match TaskSupervisor::start_link_with(options, args.max_children).await {
            Ok(tasks) => Init::Ok(TaskService {
                name: args.name,
                functions: args.functions,
                tasks,
            }),
            Err(e) => Init::Stop(e.reason()),
        }
    }

    async fn handle_call(
        &mut self,
        request: ServiceCall,
        _from: &ReplyTo<ServiceReply>,
    ) -> CallReturn<Self> {
        let reply = match request {
            ServiceCall::Start {
                owner,
                job,
                restart,
                shutdown,
            } => {
                let (functions, name) = (self.functions.clone(), self.name.clone());
                let started = self
                    .tasks
                    .start_child_with(
                        move || {
                            // Each (re)start runs the job anew; a `Reply`
                            // job is temporary (see `from_term`).
                            let (functions, name) = (functions.clone(), name.clone());
                            let job = job.clone();
                            async move { task(functions, name, owner, job).await }
                        },
                        restart,
                        shutdown,
                    )
                    .await;
                match started {
                    Ok(pid) => ServiceReply::Started(pid),
                    Err(SupervisorError::MaxChildren) => {
                        ServiceReply::Error(Term::atom("max_children"))
                    }
                    Err(e) => ServiceReply::Error(Term::binary(e.to_string())),
                }
            }
            ServiceCall::Unsupported(why) => ServiceReply::Error(why),
            ServiceCall::WhichChildren => match self.tasks.children().await {
                Ok(pids) => ServiceReply::Children(pids),
                Err(e) => return CallReturn::Stop(ExitReason::error(e)),
            },
            ServiceCall::CountChildren => match self.tasks.children().await {
                Ok(pids) => ServiceReply::Count(pids.len()),
                Err(e) => return CallReturn::Stop(ExitReason::error(e)),
            },
            ServiceCall::Terminate(pid) => {
                // Elixir's DynamicSupervisor: a pid that is not a child
                // (any more) is `{error, not_found}`.
                let child = match self.tasks.children().await {
                    Ok(pids) => pids.contains(&pid),
                    Err(e) => return CallReturn::Stop(ExitReason::error(e)),
                };
                match self.tasks.terminate_child(pid).await {
                    Ok(()) if child => ServiceReply::Ok,
                    Ok(()) | Err(SupervisorError::NotFound) => {
                        ServiceReply::Error(Term::atom("not_found"))
                    }
                    Err(e) => ServiceReply::Error(Term::binary(e.to_string())),
                }
            }
        };
        CallReturn::Reply(reply)
    }

    fn call_from_term(request: Term) -> Result<ServiceCall, Term> {
        ServiceCall::from_term(&request)
            .ok_or_else(|| Term::tuple([Term::atom("bad_request"), request]))
    }

    fn reply_to_term(reply: ServiceReply) -> Term {
        let pid = rdist::pid_to_term;
        match reply {
            ServiceReply::Started(task) => Term::tuple([Term::atom("ok"), pid(task)]),
            ServiceReply::Error(why) => Term::tuple([Term::atom("error"), why]),
            ServiceReply::Children(pids) => Term::list(pids.into_iter().map(|p| {
                Term::tuple([
                    Term::atom("undefined"),
                    pid(p),
                    Term::atom("worker"),
                    Term::list([Term::atom(SUPERVISED)]),
                ])
            })),
            ServiceReply::Count(n) => {
                let n = Term::from(n);
                Term::list([
                    Term::tuple([Term::atom("specs"), n.clone()]),
                    Term::tuple([Term::atom("active"), n.clone()]),
                    Term::tuple([Term::atom("supervisors"), Term::from(0)]),
                    Term::tuple([Term::atom("workers"), n]),
                ])
            }
            ServiceReply::Ok => Term::atom("ok"),
        }
    }
}

/// The body of a task process (Elixir's `Task.Supervised.reply/noreply`).
async fn task(functions: Functions, supervisor: Arc<str>, owner: Pid, job: Job) {
    let mfa = match job {
        Job::Run(mfa) => {
            if let Err(reason) = run_mfa(&functions, &supervisor, &mfa).await {
                exit_self(ExitReason::from_term(reason)).await;
            }
            return;
        }
        Job::Reply => match await_mfa(owner).await {
            Ok(request) => request,
            Err(reason) => return exit_self(reason).await,
        },
    };
    let Some([_, tag, reply_to, _callers, mfa]) = mfa.as_tuple() else {
        unreachable!("await_mfa takes 5-tuples only")
    };
    match run_mfa(&functions, &supervisor, mfa).await {
        Ok(value) => {
            let answer = Term::tuple([tag.clone(), value]);
            match reply_to {
                Term::Reference(alias) => rdist::send_alias(alias, answer),
                other => match rdist::pid_from_term(other) {
                    Some(to) => send(to, answer),
                    None => tracing::debug!("ember_tasks: cannot reply to {other}"),
                },
            }
        }
        Err(reason) => exit_self(ExitReason::from_term(reason)).await,
    }
}

/// Waits (at most [`MFA_TIMEOUT`]) for the owner's `{Owner, Ref, ReplyTo,
/// Callers, MFA}`, watching the owner: `timeout` if it does not come,
/// `{shutdown, Reason}` if the owner dies first.
async fn await_mfa(owner: Pid) -> Result<Term, ExitReason> {
    let owner_term = rdist::pid_to_term(owner);
    let watch = monitor(owner);
    let first = receive_any(move |m| {
        m.downcast_ref::<Down>().is_some_and(|d| d.monitor == watch)
            || m.downcast_ref::<Term>()
                .and_then(Term::as_tuple)
                .is_some_and(|t| t.len() == 5 && t[0] == owner_term)
    })
    .timeout(MFA_TIMEOUT)
    .await;
    let Some(first) = first else {
        demonitor(watch, true);
        return Err(ExitReason::from_term(Term::atom("timeout")));
    };
    match first.downcast::<Down>() {
        Ok(down) => Err(ExitReason::from_term(Term::tuple([
            Term::atom("shutdown"),
            down.reason.to_term(),
        ]))),
        Err(message) => {
            demonitor(watch, true);
            Ok(message
                .downcast::<Term>()
                .unwrap_or_else(|_| unreachable!("a term above")))
        }
    }
}

/// Runs `{M, F, Args}` (or Elixir's `{erlang, apply, [Fun, []]}`): its
/// value, or the exit reason the task ends with.
async fn run_mfa(functions: &Functions, supervisor: &str, mfa: &Term) -> Result<Term, Term> {
    let badarg = || {
        Term::tuple([
            Term::atom("badarg"),
            Term::list([Term::tuple([
                Term::atom("ember_tasks"),
                Term::atom("run"),
                Term::list([mfa.clone()]),
                Term::nil(),
            ])]),
        ])
    };
    let Some([m, f, args]) = mfa.as_tuple() else {
        return Err(badarg());
    };
    if m.is_atom("erlang") && f.is_atom("apply") {
        if let Some([Term::Fun(fun), fun_args]) = args.as_list() {
            let Some(fun_args) = fun_args.as_list() else {
                return Err(badarg());
            };
            return match fun {
                Fun::Export {
                    module,
                    function,
                    arity,
                } if usize::from(*arity) == fun_args.len() => {
                    let (m, f) = (Term::Atom(module.clone()), Term::Atom(function.clone()));
                    run_registered(functions, &m, &f, fun_args.to_vec()).await
                }
                _ => Err(refuse_fun(supervisor, mfa)),
            };
        }
    }
    let Some(args) = args.as_list() else {
        return Err(badarg());
    };
    run_registered(functions, m, f, args.to_vec()).await
}

/// Runs a registered function in the task process itself (so that
/// killing the task stops it).
async fn run_registered(
    functions: &Functions,
    m: &Term,
    f: &Term,
    args: Vec<Term>,
) -> Result<Term, Term> {
    let Some(function) = functions.get(m, f, args.len()) else {
        return Err(Term::tuple([Term::atom("undef"), stack(m, f, &args)]));
    };
    match guarded(function(args.clone())).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(Raise::Error(reason))) => Err(Term::tuple([reason, stack(m, f, &args)])),
        Ok(Err(Raise::Exit(reason))) => Err(reason),
        Ok(Err(Raise::Throw(value))) => Err(Term::tuple([
            Term::tuple([Term::atom("nocatch"), value]),
            stack(m, f, &args),
        ])),
        Err(ExitReason::Panic(message)) => Err(Term::tuple([
            Term::tuple([Term::atom("panic"), Term::binary(message.as_bytes())]),
            stack(m, f, &args),
        ])),
        Err(other) => Err(other.to_term()),
    }
}

/// The exit reason for an anonymous function: an Elixir `ArgumentError`
/// (`{Exception, Stack}`), which `Task.await` in iex prints as
/// `** (ArgumentError) <message>`, and erl shows as a map with the text.
fn refuse_fun(supervisor: &str, mfa: &Term) -> Term {
    let node = rdist::node();
    let message = format!(
        "an anonymous function cannot run on the Ember node {node}: it runs only functions \
         registered in Rust; call Task.Supervisor.async({{:{supervisor}, :\"{node}\"}}, \
         module, :function, args) with a registered function"
    );
    tracing::warn!("{supervisor}: refused a task: {message}");
    let exception = Term::map([
        (Term::atom("__struct__"), Term::atom("Elixir.ArgumentError")),
        (Term::atom("__exception__"), Term::atom("true")),
        (Term::atom("message"), Term::binary(message.into_bytes())),
    ]);
    let Some([m, f, args]) = mfa.as_tuple() else {
        unreachable!("an {{M, F, A}} above")
    };
    let args = args.as_list().unwrap_or(&[]);
    Term::tuple([exception, stack(m, f, args)])
}

// ------------------------------------------------------------- calling

/// Why a remote task could not be started.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RemoteTaskError {
    /// The task supervisor could not be called: [`CallError::NoProc`] if
    /// nothing is registered under its name there,
    /// [`CallError::Exited`] with `noconnection` if its node cannot be
    /// reached.
    Call {
        /// The supervisor that was called.
        supervisor: TermServer,
        /// What happened.
        error: CallError,
    },
    /// The supervisor runs as many tasks as it may (`{error,
    /// max_children}`).
    MaxChildren,
    /// The supervisor answered `{error, Reason}`, or something else than a
    /// task supervisor answers.
    Refused(Term),
}

impl fmt::Display for RemoteTaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteTaskError::Call { supervisor, error } => {
                write!(f, "cannot reach the task supervisor {supervisor}: {error}")
            }
            RemoteTaskError::MaxChildren => {
                f.write_str("max_children: the task supervisor runs as many tasks as it may")
            }
            RemoteTaskError::Refused(reply) => {
                write!(f, "the task supervisor refused the task: {reply}")
            }
        }
    }
}

impl std::error::Error for RemoteTaskError {}

/// A task supervisor on any node, reached by `{Name, Node}` or pid:
/// an Ember node's [`start_task_supervisor`] or an Elixir node's
/// `Task.Supervisor` (Elixir's `Task.Supervisor.async({Name, Node}, M, F,
/// A)`). Use it from an Ember process.
///
/// ```no_run
/// use ember_dist::tasks::RemoteTaskSupervisor;
/// use ember_term::Term;
///
/// # async fn demo() {
/// let tasks = RemoteTaskSupervisor::named("ember_tasks", "ember@host");
/// let task = tasks
///     .async_nolink("ember_demo", "fact_bits", vec![Term::from(1000)])
///     .await
///     .unwrap();
/// assert_eq!(task.await, Ok(Term::from(8530)));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteTaskSupervisor {
    server: TermServer,
}

impl RemoteTaskSupervisor {
    /// The task supervisor registered as `name` on `node`.
    pub fn named(name: impl Into<String>, node: impl Into<String>) -> RemoteTaskSupervisor {
        RemoteTaskSupervisor {
            server: TermServer::name(name, node),
        }
    }

    /// The task supervisor with this pid.
    pub fn from_pid(pid: Pid) -> RemoteTaskSupervisor {
        RemoteTaskSupervisor {
            server: TermServer::Pid(pid),
        }
    }

    /// Runs `module:function(args)` there as a task linked to the caller,
    /// whose result the caller awaits (`Task.Supervisor.async/4`): its
    /// crash takes a caller that does not trap exits down.
    #[doc(alias = "async")]
    pub async fn async_link(
        &self,
        module: &str,
        function: &str,
        args: Vec<Term>,
    ) -> Result<RemoteTask, RemoteTaskError> {
        self.start_task(true, module, function, args).await
    }

    /// Runs `module:function(args)` there as a task not linked to the
    /// caller (`Task.Supervisor.async_nolink/4`): its crash shows only as
    /// [`TaskError::Exited`] when awaited.
    pub async fn async_nolink(
        &self,
        module: &str,
        function: &str,
        args: Vec<Term>,
    ) -> Result<RemoteTask, RemoteTaskError> {
        self.start_task(false, module, function, args).await
    }

    /// Runs `module:function(args)` there as a task nobody awaits
    /// (`Task.Supervisor.start_child/4`); returns its pid.
    pub async fn start_child(
        &self,
        module: &str,
        function: &str,
        args: Vec<Term>,
    ) -> Result<Pid, RemoteTaskError> {
        let me = rdist::pid_to_term(self_pid());
        let mfa = Term::tuple([Term::atom(module), Term::atom(function), Term::list(args)]);
        let spec = Term::list([owner(), Term::list([me]), mfa]);
        self.start(spec).await
    }

    /// Runs `module:function(args)` there as a task nobody awaits,
    /// restarted and shut down as `restart` and `shutdown` say
    /// (`Task.Supervisor.start_child/5` with `restart:` and `shutdown:`): a
    /// permanent task runs again whenever it ends, a transient one when it
    /// crashes, each time with the same arguments.
    pub async fn start_child_with(
        &self,
        module: &str,
        function: &str,
        args: Vec<Term>,
        restart: Restart,
        shutdown: Shutdown,
    ) -> Result<Pid, RemoteTaskError> {
        let me = rdist::pid_to_term(self_pid());
        let mfa = Term::tuple([Term::atom(module), Term::atom(function), Term::list(args)]);
        let spec = Term::list([owner(), Term::list([me]), mfa]);
        self.start_as(spec, restart_term(restart), shutdown_term(shutdown))
            .await
    }

    /// Terminates one of its tasks (`Task.Supervisor.terminate_child/2`):
    /// [`RemoteTaskError::Refused`] with `{error, not_found}` for a pid
    /// that is not one of them.
    pub async fn terminate_child(&self, task: Pid) -> Result<(), RemoteTaskError> {
        let request = Term::tuple([Term::atom("terminate_child"), rdist::pid_to_term(task)]);
        let reply = self.call(request).await?;
        if reply.is_atom("ok") {
            Ok(())
        } else {
            Err(RemoteTaskError::Refused(reply))
        }
    }

    /// The running tasks (`Task.Supervisor.children/1`).
    pub async fn children(&self) -> Result<Vec<Pid>, RemoteTaskError> {
        let reply = self.call(Term::atom("which_children")).await?;
        let entries = reply
            .as_list()
            .ok_or_else(|| RemoteTaskError::Refused(reply.clone()))?;
        Ok(entries
            .iter()
            .filter_map(|e| match e.as_tuple() {
                Some([_, pid, _, _]) => rdist::pid_from_term(pid),
                _ => None,
            })
            .collect())
    }

    async fn call(&self, request: Term) -> Result<Term, RemoteTaskError> {
        call_term(&self.server, request, gen::INFINITY)
            .await
            .map_err(|error| RemoteTaskError::Call {
                supervisor: self.server.clone(),
                error,
            })
    }

    /// `{start_task, Args, temporary, nil}`: the new task's pid.
    async fn start(&self, args: Term) -> Result<Pid, RemoteTaskError> {
        self.start_as(args, Term::atom("temporary"), Term::atom("nil"))
            .await
    }

    /// `{start_task, Args, Restart, Shutdown}`: the new task's pid.
    async fn start_as(
        &self,
        args: Term,
        restart: Term,
        shutdown: Term,
    ) -> Result<Pid, RemoteTaskError> {
        let request = Term::tuple([Term::atom("start_task"), args, restart, shutdown]);
        let reply = self.call(request).await?;
        match reply.as_tuple() {
            Some([ok, pid]) if ok.is_atom("ok") => {
                rdist::pid_from_term(pid).ok_or(RemoteTaskError::Refused(reply))
            }
            Some([error, why]) if error.is_atom("error") && why.is_atom("max_children") => {
                Err(RemoteTaskError::MaxChildren)
            }
            _ => Err(RemoteTaskError::Refused(reply)),
        }
    }

    async fn start_task(
        &self,
        linked: bool,
        module: &str,
        function: &str,
        args: Vec<Term>,
    ) -> Result<RemoteTask, RemoteTaskError> {
        let pid = self
            .start(Term::list([owner(), Term::atom("monitor")]))
            .await?;
        if linked {
            // A task already gone is reported by the monitor.
            let _ = ember_runtime::link(pid);
        }
        let watch = monitor(pid);
        // The monitor's reference is the reply's alias: a late reply is
        // dropped, and the reply removes the monitor (no stray `Down`).
        ember_runtime::alias_monitor(watch);
        let tag = rdist::ref_to_term(watch.reference());
        let me = rdist::pid_to_term(self_pid());
        let mfa = Term::tuple([Term::atom(module), Term::atom(function), Term::list(args)]);
        send(
            pid,
            Term::tuple([me.clone(), tag.clone(), tag.clone(), Term::list([me]), mfa]),
        );
        Ok(RemoteTask {
            pid,
            owner: self_pid(),
            watch,
            tag,
            linked,
            finished: false,
        })
    }
}

/// A restart type as Elixir names it.
fn restart_term(restart: Restart) -> Term {
    Term::atom(match restart {
        Restart::Permanent => "permanent",
        Restart::Transient => "transient",
        _ => "temporary",
    })
}

/// A shutdown as Elixir names it: milliseconds, `brutal_kill` or
/// `infinity`.
fn shutdown_term(shutdown: Shutdown) -> Term {
    match shutdown {
        Shutdown::BrutalKill => Term::atom("brutal_kill"),
        Shutdown::Timeout(limit) => {
            Term::from(i64::try_from(limit.as_millis()).unwrap_or(i64::MAX))
        }
        _ => Term::atom("infinity"),
    }
}

/// The calling process as Elixir's task owner: `{Node, Pid, Pid}`.
fn owner() -> Term {
    let me = rdist::pid_to_term(self_pid());
    Term::tuple([Term::Atom(rdist::node()), me.clone(), me])
}

/// A task running under a task supervisor on another node, and the right
/// to its result; only the process that started it may await it.
///
/// As with `ember_otp::task::Task`: a join that times out kills the task
/// and returns [`TaskError::Timeout`]; a task that crashed is
/// [`TaskError::Exited`] with its exit reason as a term (`{{panic,
/// Message}, Stack}` for an Ember function that panicked, `{undef, ...}`
/// for a function the node does not have); a lost connection to its node
/// is `Exited(noconnection)`. Dropping it leaves the task running; its
/// result is dropped when it comes, and no `Down` comes for it.
pub struct RemoteTask {
    pid: Pid,
    owner: Pid,
    watch: MonitorRef,
    tag: Term,
    linked: bool,
    finished: bool,
}

impl fmt::Debug for RemoteTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteTask")
            .field("pid", &self.pid)
            .field("owner", &self.owner)
            .field("linked", &self.linked)
            .finish_non_exhaustive()
    }
}

/// What a wait for a remote task's result saw.
enum Outcome {
    Reply(Term),
    Down(ExitReason),
}

impl RemoteTask {
    /// The task process (of the other node).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    fn check_owner(&self, what: &str) {
        let me = self_pid();
        assert!(
            me == self.owner,
            "{what}: remote task {} is owned by {}, not by {me}",
            self.pid,
            self.owner
        );
        assert!(
            !self.finished,
            "{what}: remote task {} already gave its result",
            self.pid
        );
    }

    async fn wait(&self, timeout: Duration) -> Option<Outcome> {
        let (watch, tag) = (self.watch, self.tag.clone());
        let message = receive_any(move |m| {
            m.downcast_ref::<Down>().is_some_and(|d| d.monitor == watch)
                || m.downcast_ref::<Term>()
                    .and_then(Term::as_tuple)
                    .is_some_and(|t| t.len() == 2 && t[0] == tag)
        })
        .timeout(timeout)
        .await?;
        Some(match message.downcast::<Down>() {
            Ok(down) => {
                unalias(watch.reference());
                Outcome::Down(down.reason)
            }
            Err(message) => {
                let Ok(reply) = message.downcast::<Term>() else {
                    unreachable!("a term or a Down above")
                };
                let Term::Tuple(mut pair) = reply else {
                    unreachable!("a pair above")
                };
                Outcome::Reply(pair.pop().expect("two elements"))
            }
        })
    }

    /// Waits up to 5 seconds for the result (`Task.await/1`).
    pub async fn join(self) -> Result<Term, TaskError> {
        self.join_timeout(gen::DEFAULT_TIMEOUT).await
    }

    /// Waits up to `timeout` for the result (`Task.await/2`). On timeout
    /// the task is killed and the result is [`TaskError::Timeout`] (unless
    /// the reply raced the timeout: then it is returned).
    ///
    /// # Panics
    ///
    /// If the caller is not the task's owner.
    pub async fn join_timeout(mut self, timeout: Duration) -> Result<Term, TaskError> {
        self.check_owner("join");
        self.finished = true;
        match self.wait(timeout).await {
            Some(Outcome::Reply(value)) => Ok(value),
            Some(Outcome::Down(reason)) => Err(TaskError::Exited(reason)),
            None => {
                self.abandon();
                if self.linked {
                    unlink(self.pid);
                }
                exit(self.pid, ExitReason::Kill);
                // A reply already in the mailbox raced the timeout.
                match self.wait(Duration::ZERO).await {
                    Some(Outcome::Reply(value)) => Ok(value),
                    _ => Err(TaskError::Timeout),
                }
            }
        }
    }

    /// Waits up to `timeout` (`Task.yield/2`): `Some` with the result or
    /// the task's exit, or `None` if it still runs; it can then be yielded
    /// again or joined.
    ///
    /// # Panics
    ///
    /// If the caller is not the owner, or the result was already taken.
    pub async fn yield_for(&mut self, timeout: Duration) -> Option<Result<Term, TaskError>> {
        self.check_owner("yield");
        let outcome = self.wait(timeout).await?;
        self.finished = true;
        Some(match outcome {
            Outcome::Reply(value) => Ok(value),
            Outcome::Down(reason) => Err(TaskError::Exited(reason)),
        })
    }

    /// Stops listening: a reply that comes later is dropped by its alias,
    /// and no `Down` comes.
    fn abandon(&self) {
        unalias(self.watch.reference());
        demonitor(self.watch, true);
    }
}

impl Drop for RemoteTask {
    fn drop(&mut self) {
        // Only the owner can drop its alias; elsewhere the alias dies with
        // the owner.
        if !self.finished && ember_runtime::try_self_pid() == Some(self.owner) {
            self.abandon();
        }
    }
}

impl IntoFuture for RemoteTask {
    type Output = Result<Term, TaskError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Term, TaskError>> + Send>>;

    /// `task.await` is [`RemoteTask::join`]: `Task.await` with its 5 s
    /// default.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.join())
    }
}
