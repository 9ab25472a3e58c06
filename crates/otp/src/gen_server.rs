//! The generic server behaviour: OTP's `gen_server`, typed.
//!
//! A server is a process that owns a state (the value implementing
//! [`GenServer`]) and serves requests one at a time:
//!
//! * **calls** ([`GenServerRef::call`]) are requests of type
//!   [`GenServer::Call`] that get a reply of type [`GenServer::Reply`], with a
//!   timeout (5 s by default); a dead server or a timeout is a [`CallError`],
//!   never a hang, and a late reply never reaches the caller;
//! * **casts** ([`GenServerRef::cast`]) are fire-and-forget messages of type
//!   [`GenServer::Cast`];
//! * every other message (monitor `Down`s, `Exit`s when trapping exits,
//!   timer messages, plain `send`s) is **info**,
//!   delivered to [`GenServer::handle_info`] as an [`Envelope`].
//!
//! Info is untyped on purpose: info messages are by definition the ones that
//! do not come through the server's API (monitors, links, timers, other
//! libraries), so no one type can name them, and a typed info receive would
//! leave every unexpected message in the mailbox forever. A server downcasts
//! the envelope to the types it expects; the default `handle_info` logs and
//! drops anything else, as OTP's does.

use std::any::type_name;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ember_runtime::{
    monitor, receive, receive_any, self_pid, send, whereis, Down, Envelope, Exit, ExitReason, Pid,
};

use crate::gen::{self, guarded, CallError, ReplyTo, StartError, StartOptions, Starter};

mod remote;

pub use remote::{cast_term, RemoteCallError, RemoteServer};

/// A generic server: the state of a server process and its callbacks.
///
/// # Lifecycle (gen_server.erl)
///
/// ```text
/// start / start_link ──▶ spawn (registered if named, linked for start_link)
///                          │
///                        init(args) ── Ignore / Stop / panic ──▶ start returns the error;
///                          │                                     the process exits
///                          ▼ Ok(state)          (start returns the GenServerRef)
///              ┌──▶ handle_continue, if the last callback asked for it
///              │          │
///              │   wait for the next message (or the timeout it asked for)
///              │     call ──▶ handle_call ── Reply ──▶ reply sent to the caller
///              │     cast ──▶ handle_cast
///              │     other ─▶ handle_info (Down, Exit, timers, Timeout, ...)
///              └──────────┘
///   Stop returned, a callback panicked, stop() called,
///   or the parent's exit signal arrived while trapping exits
///                          │
///                          ▼
///                  terminate(reason) ──▶ the process exits with reason
/// ```
///
/// `terminate` is called when a callback returns `Stop`, when a callback
/// panics, when [`GenServerRef::stop`] is called, and when the parent (the
/// process that called `start_link`, e.g. a supervisor) sends an exit
/// signal while the server traps exits. A server that does not trap exits is
/// killed by its parent's signal without `terminate`, exactly as in OTP.
///
/// Every callback but `init` has a default body: `handle_call`,
/// `handle_cast` and `handle_continue` stop the server with an error (like
/// Elixir's defaults), `handle_info` logs and drops the message, `terminate`
/// does nothing.
///
/// ```
/// use ember_otp::gen_server::{self, CallReturn, GenServer, Init, Return};
/// use ember_otp::gen::ReplyTo;
///
/// struct Counter(u64);
///
/// enum Request { Get, Add(u64) }
///
/// impl GenServer for Counter {
///     type Args = u64;
///     type Call = Request;
///     type Reply = u64;
///     type Cast = ();
///     type Continue = ();
///
///     async fn init(start: u64) -> Init<Self> {
///         Init::Ok(Counter(start))
///     }
///
///     async fn handle_call(&mut self, request: Request, _from: &ReplyTo<u64>) -> CallReturn<Self> {
///         match request {
///             Request::Get => CallReturn::Reply(self.0),
///             Request::Add(n) => { self.0 += n; CallReturn::Reply(self.0) }
///         }
///     }
///
///     async fn handle_cast(&mut self, _reset: ()) -> Return<Self> {
///         self.0 = 0;
///         Return::NoReply
///     }
/// }
///
/// # let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
/// # rt.block_on(async {
/// let counter = gen_server::start_link::<Counter>(40).await.unwrap();
/// assert_eq!(counter.call(Request::Add(2)).await, Ok(42));
/// counter.cast(());
/// assert_eq!(counter.call(Request::Get).await, Ok(0));
/// # });
/// ```
pub trait GenServer: Sized + Send + 'static {
    /// What `init` is started with.
    type Args: Send + 'static;
    /// The requests of calls.
    type Call: Send + 'static;
    /// The replies to calls.
    type Reply: Send + 'static;
    /// The messages of casts.
    type Cast: Send + 'static;
    /// What a callback hands to `handle_continue` (OTP's `{continue, Term}`);
    /// `()` if unused.
    type Continue: Send + 'static;

    /// Builds the state, inside the new process (OTP's `init/1`). The start
    /// returns once this has returned.
    fn init(args: Self::Args) -> impl Future<Output = Init<Self>> + Send;

    /// Serves a call (OTP's `handle_call/3`). Return the reply, or
    /// [`CallReturn::NoReply`] and answer later through a clone of `from`.
    fn handle_call(
        &mut self,
        request: Self::Call,
        from: &ReplyTo<Self::Reply>,
    ) -> impl Future<Output = CallReturn<Self>> + Send {
        let _ = (request, from);
        async {
            CallReturn::Stop(ExitReason::error(format_args!(
                "{} received a call but implements no handle_call",
                type_name::<Self>()
            )))
        }
    }

    /// Handles a cast (OTP's `handle_cast/2`).
    fn handle_cast(&mut self, message: Self::Cast) -> impl Future<Output = Return<Self>> + Send {
        let _ = message;
        async {
            Return::Stop(ExitReason::error(format_args!(
                "{} received a cast but implements no handle_cast",
                type_name::<Self>()
            )))
        }
    }

    /// Handles any other message (OTP's `handle_info/2`): downcast the
    /// envelope to the types you expect. The default logs and drops it.
    fn handle_info(&mut self, message: Envelope) -> impl Future<Output = Return<Self>> + Send {
        tracing::warn!(
            server = %self_pid(),
            module = type_name::<Self>(),
            "undefined handle_info: dropped {}",
            gen::describe(&message)
        );
        async { Return::NoReply }
    }

    /// Continues work a callback asked for with [`Then::Continue`], before
    /// any new message is taken (OTP's `handle_continue/2`).
    fn handle_continue(
        &mut self,
        continuation: Self::Continue,
    ) -> impl Future<Output = Return<Self>> + Send {
        let _ = continuation;
        async {
            Return::Stop(ExitReason::error(format_args!(
                "{} asked to continue but implements no handle_continue",
                type_name::<Self>()
            )))
        }
    }

    /// Decodes a request that came as an Erlang term: a `gen_server:call`
    /// from another node (`{'$gen_call', {Pid, Tag}, Request}` in the
    /// mailbox as an `ember_term::Term`), or [`call_term`] from Ember. On
    /// `Ok` the request goes to `handle_call` like any other and the reply
    /// crosses back through [`GenServer::reply_to_term`]; on `Err` the
    /// caller gets `{error, Term}` as its reply. The default refuses every
    /// term request with `{bad_request, Request}`. With serde types,
    /// `ember_term::from_term` and `ember_term::to_term` do both halves.
    fn call_from_term(request: ember_term::Term) -> Result<Self::Call, ember_term::Term> {
        Err(ember_term::Term::tuple([
            ember_term::Term::atom("bad_request"),
            request,
        ]))
    }

    /// The reply to a request [`GenServer::call_from_term`] accepted, as
    /// the term the caller gets. Only called for such requests, so a
    /// server that keeps the default `call_from_term` never reaches this
    /// default, which answers `ok`.
    fn reply_to_term(reply: Self::Reply) -> ember_term::Term {
        let _ = reply;
        ember_term::Term::atom("ok")
    }

    /// Cleans up before the process exits with `reason` (OTP's
    /// `terminate/2`); see the trait docs for when it is called. It sees the
    /// state as the last callback left it, even one that panicked.
    fn terminate(&mut self, reason: &ExitReason) -> impl Future<Output = ()> + Send {
        let _ = reason;
        async {}
    }
}

/// What `init` returns.
pub enum Init<S: GenServer> {
    /// `{ok, State}`.
    Ok(S),
    /// `{ok, State, Action}`: run `Action` before the first message.
    OkThen(S, Then<S::Continue>),
    /// `ignore`: the start returns [`StartError::Ignore`]; the process exits normally.
    Ignore,
    /// `{stop, Reason}`: the start returns [`StartError::Failed`]; the
    /// process exits with `Reason`.
    Stop(ExitReason),
}

/// What `handle_call` returns.
pub enum CallReturn<S: GenServer> {
    /// `{reply, Reply, State}`.
    Reply(S::Reply),
    /// `{reply, Reply, State, Action}`.
    ReplyThen(S::Reply, Then<S::Continue>),
    /// `{noreply, State}`: reply later through the [`ReplyTo`].
    NoReply,
    /// `{noreply, State, Action}`.
    NoReplyThen(Then<S::Continue>),
    /// `{stop, Reason, Reply, State}`: `terminate` runs, then the reply is sent.
    StopReply(ExitReason, S::Reply),
    /// `{stop, Reason, State}`: the caller sees [`CallError::Exited`] unless
    /// someone replied.
    Stop(ExitReason),
}

/// What `handle_cast`, `handle_info` and `handle_continue` return.
pub enum Return<S: GenServer> {
    /// `{noreply, State}`.
    NoReply,
    /// `{noreply, State, Action}`.
    NoReplyThen(Then<S::Continue>),
    /// `{stop, Reason, State}`.
    Stop(ExitReason),
}

/// What a server does after a callback, besides waiting for a message.
#[derive(Debug)]
pub enum Then<C> {
    /// `{continue, C}`: call `handle_continue(C)` before taking any message.
    Continue(C),
    /// A timeout: if no message arrives within it, `handle_info` receives
    /// [`Timeout`]. Any message cancels it.
    Timeout(Duration),
    /// `hibernate`: accepted for fidelity; Ember has no per-process heap to
    /// compact, so it is the same as waiting.
    Hibernate,
}

/// The info message a server receives when the timeout it asked for
/// ([`Then::Timeout`]) expires (OTP's `timeout` atom).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout;

/// The system message behind [`GenServerRef::stop`] (OTP's `sys:terminate`).
struct SystemStop {
    reason: ExitReason,
}

/// A cast as it travels to a server.
struct Cast<M>(M);

// ----------------------------------------------------------------- handle

/// A typed handle on a server of type `S`: a pid or a registered name.
///
/// Calls and casts through it are checked at compile time against `S`'s
/// message types. A handle made from a raw pid or name is trusted to point
/// at a server of type `S`; a message of the wrong type would reach that
/// process's `handle_info`.
pub struct GenServerRef<S> {
    target: Target,
    _server: PhantomData<fn() -> S>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Target {
    Pid(Pid),
    Name(Arc<str>),
}

impl<S> Clone for GenServerRef<S> {
    fn clone(&self) -> Self {
        GenServerRef {
            target: self.target.clone(),
            _server: PhantomData,
        }
    }
}

impl<S> PartialEq for GenServerRef<S> {
    fn eq(&self, other: &Self) -> bool {
        self.target == other.target
    }
}

impl<S> Eq for GenServerRef<S> {}

impl<S> fmt::Debug for GenServerRef<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Pid(pid) => write!(f, "GenServerRef<{}>({pid})", type_name::<S>()),
            Target::Name(name) => write!(f, "GenServerRef<{}>({name:?})", type_name::<S>()),
        }
    }
}

impl<S> From<GenServerRef<S>> for Pid {
    /// The pid of a pid handle; for a name handle, the pid registered now
    /// (or [`Pid::OUTSIDE`], which no process has, if none is).
    fn from(server: GenServerRef<S>) -> Pid {
        server.pid().unwrap_or(Pid::OUTSIDE)
    }
}

impl<S> GenServerRef<S> {
    /// A handle on the server with this pid.
    pub fn from_pid(pid: Pid) -> Self {
        GenServerRef {
            target: Target::Pid(pid),
            _server: PhantomData,
        }
    }

    /// A handle on the calling process, for a server to give out itself.
    pub fn myself() -> Self {
        GenServerRef::from_pid(self_pid())
    }

    /// A handle on whichever server is registered as `name` when used.
    pub fn from_name(name: impl Into<Arc<str>>) -> Self {
        GenServerRef {
            target: Target::Name(name.into()),
            _server: PhantomData,
        }
    }

    /// The server's pid: the handle's pid, or the one registered under its
    /// name now (`None` if the name is not registered).
    pub fn pid(&self) -> Option<Pid> {
        match &self.target {
            Target::Pid(pid) => Some(*pid),
            Target::Name(name) => whereis(name),
        }
    }
}

impl<S: GenServer> GenServerRef<S> {
    /// Calls the server with the default timeout of 5 s (OTP's
    /// `gen_server:call/2`).
    pub async fn call(&self, request: S::Call) -> Result<S::Reply, CallError> {
        self.call_timeout(request, gen::DEFAULT_TIMEOUT).await
    }

    /// Calls the server, waiting at most `timeout` ([`gen::INFINITY`] waits
    /// for ever) for the reply (OTP's `gen_server:call/3`).
    ///
    /// Errors: [`CallError::NoProc`] if the server is not alive or the name
    /// is not registered, [`CallError::Exited`] if it terminates before
    /// replying, [`CallError::Timeout`] if the time runs out (a later reply
    /// is dropped, never delivered), [`CallError::CallingSelf`] at once if
    /// the server calls itself (OTP exits with `calling_self`).
    pub async fn call_timeout(
        &self,
        request: S::Call,
        timeout: Duration,
    ) -> Result<S::Reply, CallError> {
        let Some(pid) = self.pid() else {
            return Err(CallError::NoProc);
        };
        gen::call::<S::Call, S::Reply>(pid, request, timeout).await
    }

    /// Sends a cast (OTP's `gen_server:cast/2`). Like OTP it never fails: a
    /// cast to a dead server or an unregistered name is dropped.
    pub fn cast(&self, message: S::Cast) {
        if let Some(pid) = self.pid() {
            send(pid, Cast(message));
        }
    }

    /// Stops the server with reason `normal` and waits as long as it takes
    /// (OTP's `gen_server:stop/1`).
    pub async fn stop(&self) -> Result<(), CallError> {
        self.stop_with(ExitReason::Normal, gen::INFINITY).await
    }

    /// Stops the server: it runs `terminate(reason)` and exits with `reason`
    /// (OTP's `gen_server:stop/3`). Waits up to `timeout` for it to be gone.
    ///
    /// Errors: [`CallError::NoProc`] if it was not alive,
    /// [`CallError::Exited`] if it exited with another reason (its
    /// `terminate` panicked), [`CallError::Timeout`],
    /// [`CallError::CallingSelf`] at once if the server stops itself this way
    /// (it would wait for its own exit; OTP exits with `calling_self`).
    pub async fn stop_with(&self, reason: ExitReason, timeout: Duration) -> Result<(), CallError> {
        let Some(pid) = self.pid() else {
            return Err(CallError::NoProc);
        };
        stop_process(pid, reason, timeout).await
    }
}

/// Stops the server `pid`, whatever its type (OTP's `proc_lib:stop/3`);
/// see [`GenServerRef::stop_with`].
pub(crate) async fn stop_process(
    pid: Pid,
    reason: ExitReason,
    timeout: Duration,
) -> Result<(), CallError> {
    if pid == self_pid() {
        return Err(CallError::CallingSelf);
    }
    let mref = monitor(pid);
    send(
        pid,
        SystemStop {
            reason: reason.clone(),
        },
    );
    let down = receive::<Down>()
        .matching(move |d| d.monitor == mref)
        .timeout(timeout)
        .await;
    match down {
        Some(down) if down.reason == reason => Ok(()),
        Some(down) => Err(CallError::from_down(down.reason)),
        None => {
            gen::forget_monitor(mref).await;
            Err(CallError::Timeout)
        }
    }
}

// ----------------------------------------------------------------- start

/// Starts a server, not linked to the caller (OTP's `gen_server:start/3`).
pub async fn start<S: GenServer>(args: S::Args) -> Result<GenServerRef<S>, StartError> {
    start_with::<S>(args, StartOptions::default()).await
}

/// Starts a server linked to the caller (OTP's `gen_server:start_link/3`):
/// the way to start one under a supervisor.
pub async fn start_link<S: GenServer>(args: S::Args) -> Result<GenServerRef<S>, StartError> {
    start_link_with::<S>(args, StartOptions::default()).await
}

/// [`start`] with a name and a start timeout.
pub async fn start_with<S: GenServer>(
    args: S::Args,
    options: StartOptions,
) -> Result<GenServerRef<S>, StartError> {
    spawn_server::<S>(args, options, false).await
}

/// [`start_link`] with a name and a start timeout.
pub async fn start_link_with<S: GenServer>(
    args: S::Args,
    options: StartOptions,
) -> Result<GenServerRef<S>, StartError> {
    spawn_server::<S>(args, options, true).await
}

async fn spawn_server<S: GenServer>(
    args: S::Args,
    options: StartOptions,
    link: bool,
) -> Result<GenServerRef<S>, StartError> {
    let name = options.name.clone();
    let pid = gen::start(options, link, type_name::<S>(), move |starter| {
        run::<S>(args, starter)
    })
    .await?;
    Ok(match name {
        Some(name) => GenServerRef::from_name(name),
        None => GenServerRef::from_pid(pid),
    })
}

/// The body of a server process: `init`, then the loop.
async fn run<S: GenServer>(args: S::Args, starter: Starter) -> ExitReason {
    let parent = starter.parent();
    match guarded(S::init(args)).await {
        Ok(Init::Ok(state)) => {
            starter.started();
            serve(state, parent, None).await
        }
        Ok(Init::OkThen(state, then)) => {
            starter.started();
            serve(state, parent, Some(then)).await
        }
        Ok(Init::Ignore) => {
            starter.failed(StartError::Ignore);
            ExitReason::Normal
        }
        Ok(Init::Stop(reason)) | Err(reason) => {
            starter.failed(StartError::Failed(reason.clone()));
            reason
        }
    }
}

/// What the loop does after one callback.
enum Step<C> {
    Next(Option<Then<C>>),
    Stop(ExitReason),
}

impl<S: GenServer> From<Return<S>> for Step<S::Continue> {
    fn from(r: Return<S>) -> Self {
        match r {
            Return::NoReply => Step::Next(None),
            Return::NoReplyThen(then) => Step::Next(Some(then)),
            Return::Stop(reason) => Step::Stop(reason),
        }
    }
}

/// The server loop (gen_server.erl's `loop/7` and `handle_msg/6`).
async fn serve<S: GenServer>(
    mut state: S,
    parent: Option<Pid>,
    mut then: Option<Then<S::Continue>>,
) -> ExitReason {
    loop {
        let mut timeout = None;
        match then.take() {
            Some(Then::Continue(continuation)) => {
                let step = match guarded(state.handle_continue(continuation)).await {
                    Ok(r) => Step::from(r),
                    Err(panic) => Step::Stop(panic),
                };
                match step {
                    Step::Next(next) => then = next,
                    Step::Stop(reason) => return terminate(&mut state, reason, "continue").await,
                }
                continue;
            }
            Some(Then::Timeout(after)) => timeout = Some(after),
            Some(Then::Hibernate) | None => {}
        }
        let message = match timeout {
            None => receive_any(|_| true).await,
            Some(after) => match receive_any(|_| true).timeout(after).await {
                Some(message) => message,
                None => Envelope::new(Timeout),
            },
        };

        let message = match term_call::<S>(message) {
            Ok(call) => Envelope::new(call),
            Err(Some(message)) => message,
            Err(None) => continue,
        };
        let message = match message.downcast::<gen::Call<S::Call, S::Reply>>() {
            Ok(call) => {
                let gen::Call { request, from } = call;
                match guarded(state.handle_call(request, &from)).await {
                    Ok(CallReturn::Reply(reply)) => {
                        from.reply(reply);
                    }
                    Ok(CallReturn::ReplyThen(reply, next)) => {
                        from.reply(reply);
                        then = Some(next);
                    }
                    Ok(CallReturn::NoReply) => {}
                    Ok(CallReturn::NoReplyThen(next)) => then = Some(next),
                    Ok(CallReturn::StopReply(reason, reply)) => {
                        let reason = terminate(&mut state, reason, "call").await;
                        from.reply(reply);
                        return reason;
                    }
                    Ok(CallReturn::Stop(reason)) | Err(reason) => {
                        return terminate(&mut state, reason, "call").await
                    }
                }
                continue;
            }
            Err(message) => message,
        };
        let (step, what) = match message.downcast::<Cast<S::Cast>>() {
            Ok(Cast(cast)) => (guarded(state.handle_cast(cast)).await, "cast"),
            Err(message) => {
                let message = match message.downcast::<SystemStop>() {
                    Ok(stop) => return terminate(&mut state, stop.reason, "stop").await,
                    Err(message) => message,
                };
                if let (Some(parent), Some(exit)) = (parent, message.downcast_ref::<Exit>()) {
                    if exit.from == parent {
                        let reason = exit.reason.clone();
                        return terminate(&mut state, reason, "the parent's exit").await;
                    }
                }
                (guarded(state.handle_info(message)).await, "info")
            }
        };
        match step.map(Step::from) {
            Ok(Step::Next(next)) => then = next,
            Ok(Step::Stop(reason)) | Err(reason) => {
                return terminate(&mut state, reason, what).await
            }
        }
    }
}

/// A call that came as a term, `{'$gen_call', {From, Tag}, Request}`:
/// `Ok` with the call, `Err(None)` if it was one but its request was
/// refused (the caller has its `{error, Why}` reply), `Err(Some(message))`
/// if the message is something else.
fn term_call<S: GenServer>(
    message: Envelope,
) -> Result<gen::Call<S::Call, S::Reply>, Option<Envelope>> {
    use ember_term::Term;
    let Some(Some([call, from, _])) = message.downcast_ref::<Term>().map(Term::as_tuple) else {
        return Err(Some(message));
    };
    let Some([caller, _tag]) = from.as_tuple() else {
        return Err(Some(message));
    };
    if !call.is_atom("$gen_call") || !matches!(caller, Term::Pid(_)) {
        return Err(Some(message));
    }
    let Ok(term) = message.downcast::<Term>() else {
        unreachable!("a term above")
    };
    let Term::Tuple(mut parts) = term else {
        unreachable!("a tuple above")
    };
    let request = parts.pop().expect("three elements");
    let Some(Term::Tuple(mut from)) = parts.pop() else {
        unreachable!("a tuple above")
    };
    let tag = from.pop().expect("two elements");
    let caller_term = from.pop().expect("two elements");
    let Some(caller) = ember_runtime::dist::pid_from_term(&caller_term) else {
        tracing::warn!(
            "gen_server: a call from {caller_term} cannot be answered: no room for its node"
        );
        return Err(None);
    };
    match S::call_from_term(request) {
        Ok(request) => Ok(gen::Call {
            request,
            from: ReplyTo::from_term(caller, tag, S::reply_to_term),
        }),
        Err(why) => {
            let answer = Term::tuple([tag.clone(), Term::tuple([Term::atom("error"), why])]);
            gen::send_term_reply(caller, &tag, answer);
            Err(None)
        }
    }
}

/// Where [`call_term`] sends: a pid (of any node), or a name on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TermServer {
    /// A server process.
    Pid(Pid),
    /// `{Name, Node}`: the process registered as `name` on `node` (this
    /// node included).
    Name {
        /// The registered name.
        name: String,
        /// The node.
        node: String,
    },
}

/// Calls a generic server with OTP's term protocol (`gen_server:call/3`):
/// an Erlang or Elixir `gen_server` on another node, or an Ember server
/// that accepts term requests ([`GenServer::call_from_term`]). Sends
/// `{'$gen_call', {self(), Tag}, Request}` and waits up to `timeout` for
/// `{Tag, Reply}`, watching the server with a monitor (by name for
/// [`TermServer::Name`]): a dead server is [`CallError::NoProc`] or
/// [`CallError::Exited`], a lost connection `Exited(noconnection)`. The
/// tag is `[alias | Ref]`, `Ref` being the monitor's reference made an
/// alias (OTP 24's `{alias, reply_demonitor}`), so a reply arriving after
/// the timeout is dropped.
pub async fn call_term(
    server: &TermServer,
    request: ember_term::Term,
    timeout: Duration,
) -> Result<ember_term::Term, CallError> {
    use ember_runtime::dist;
    use ember_term::Term;
    let watch = match server {
        TermServer::Pid(pid) if *pid == self_pid() => return Err(CallError::CallingSelf),
        TermServer::Pid(pid) => monitor(*pid),
        TermServer::Name { name, node } => dist::monitor_name(name, node),
    };
    // The monitor's reference is also an alias, gone with the first reply
    // (or below): a reply after a timeout is dropped, as in OTP 24+.
    ember_runtime::alias_monitor(watch);
    let tag = Term::improper_list([Term::atom("alias")], dist::ref_to_term(watch.reference()));
    let message = Term::tuple([
        Term::atom("$gen_call"),
        Term::tuple([dist::pid_to_term(self_pid()), tag.clone()]),
        request,
    ]);
    match server {
        TermServer::Pid(pid) => send(*pid, message),
        TermServer::Name { name, node } => dist::send_named(name, node, message),
    }
    let reply_tag = tag.clone();
    let answer = receive_any(move |m| {
        m.downcast_ref::<Down>().is_some_and(|d| d.monitor == watch)
            || m.downcast_ref::<Term>()
                .and_then(Term::as_tuple)
                .is_some_and(|t| t.len() == 2 && t[0] == reply_tag)
    })
    .timeout(timeout)
    .await;
    match answer {
        None => {
            ember_runtime::unalias(watch.reference());
            ember_runtime::demonitor(watch, true);
            Err(CallError::Timeout)
        }
        Some(m) => match m.downcast::<Down>() {
            Ok(down) => {
                ember_runtime::unalias(watch.reference());
                Err(CallError::from_down(down.reason))
            }
            Err(m) => {
                ember_runtime::demonitor(watch, true);
                let Ok(reply) = m.downcast::<Term>() else {
                    unreachable!("a term or a Down above")
                };
                let Term::Tuple(mut pair) = reply else {
                    unreachable!("a pair above")
                };
                Ok(pair.pop().expect("two elements"))
            }
        },
    }
}

/// Runs `terminate` and reports an abnormal exit (gen_server.erl's
/// `terminate/8` and its error report). Returns the reason to exit with: a
/// panic inside `terminate` replaces it.
async fn terminate<S: GenServer>(state: &mut S, reason: ExitReason, last: &str) -> ExitReason {
    let reason = match guarded(state.terminate(&reason)).await {
        Ok(()) => reason,
        Err(panic) => panic,
    };
    if !reason.is_orderly()
        && tracing::enabled!(tracing::Level::ERROR)
        && crate::logger::reports().admit()
    {
        tracing::error!(
            server = %self_pid(),
            module = type_name::<S>(),
            last_message = last,
            reason = %reason,
            "generic server terminating"
        );
    }
    reason
}
