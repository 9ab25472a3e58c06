//! The generic core under every behaviour: OTP's `gen` and `proc_lib`.
//!
//! Three protocols live here, and every behaviour of this crate uses them:
//!
//! * **Start with acknowledgement** (`proc_lib:start_link/3`). The starter
//!   spawns the new process (linked, monitored, registered if asked) and waits
//!   until its `init` acknowledges. An `init` that fails or ignores first
//!   unlinks from its starter, so the starter gets an error value instead of
//!   an exit signal; an `init` that takes longer than the start timeout is
//!   killed.
//! * **Call** (`gen:call/4`). The caller monitors the server, sends the
//!   request with a reply handle ([`ReplyTo`]) tagged by the monitor
//!   reference, and waits for the tagged reply or the `Down` of its monitor.
//!   A dead server gives [`CallError::NoProc`] or [`CallError::Exited`] at
//!   once, never a hang; so does a process calling itself
//!   ([`CallError::CallingSelf`]).
//! * **Reply** (`gen:reply/2`). A reply goes through the handle's shared slot:
//!   a caller that has given up (timed out) marks the slot abandoned, and a
//!   reply to an abandoned slot is dropped by the replier, so a late reply
//!   never reaches the caller's mailbox. This is what OTP 24's process aliases
//!   give `gen:call`; see `docs/semantics.md`, "OTP behaviours".
//!
//! User callbacks run under one guard (`guarded`), the one place where their panics are
//! caught and turned into exit reasons.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ember_runtime::introspect::process_info;
use ember_runtime::{
    demonitor, exit, make_ref, monitor, receive, receive_any, self_pid, send, unlink, Down,
    Envelope, Exit, ExitReason, IntoExitReason, MonitorRef, Pid, Ref, RegisterError, Spawn,
    SpawnError,
};
use parking_lot::Mutex;

/// The default timeout of a call: 5 seconds, as in OTP.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// OTP's `infinity`: a timeout that never expires.
pub const INFINITY: Duration = Duration::MAX;

/// Why a call got no reply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// No reply within the timeout. A reply that comes later is dropped.
    Timeout,
    /// The server was not alive (or the name was not registered) when called.
    NoProc,
    /// The server terminated with this reason before replying.
    Exited(ExitReason),
    /// The caller is the server itself: it could never reply, so the call
    /// fails at once (OTP exits with `calling_self`).
    CallingSelf,
}

impl CallError {
    /// The error for a server whose `Down` carried `reason`.
    pub(crate) fn from_down(reason: ExitReason) -> CallError {
        match reason {
            ExitReason::NoProc => CallError::NoProc,
            reason => CallError::Exited(reason),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => f.write_str("timeout: no reply in time"),
            CallError::NoProc => f.write_str("noproc: the server is not alive"),
            CallError::Exited(reason) => write!(f, "the server exited: {reason}"),
            CallError::CallingSelf => f.write_str("calling_self: a process called itself"),
        }
    }
}

impl std::error::Error for CallError {}

/// Why a start returned no running process.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartError {
    /// `init` returned `ignore`: the process exited normally, nothing runs.
    /// Supervisors treat this as "not running", not as a failure.
    Ignore,
    /// The name asked for belongs to this live process.
    AlreadyStarted(Pid),
    /// `init` failed (returned stop, or panicked) with this reason.
    Failed(ExitReason),
    /// `init` did not return within the start timeout; the process was killed.
    Timeout,
}

impl StartError {
    /// The exit reason a supervisor reports for this failure.
    pub fn reason(&self) -> ExitReason {
        match self {
            StartError::Ignore => ExitReason::Normal,
            StartError::AlreadyStarted(pid) => {
                ExitReason::error(format_args!("already_started {pid}"))
            }
            StartError::Failed(reason) => reason.clone(),
            StartError::Timeout => ExitReason::error("timeout"),
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Ignore => f.write_str("ignore: init returned ignore"),
            StartError::AlreadyStarted(pid) => {
                write!(f, "already_started: the name is registered to {pid}")
            }
            StartError::Failed(reason) => write!(f, "init failed: {reason}"),
            StartError::Timeout => f.write_str("timeout: init did not return in time"),
        }
    }
}

impl std::error::Error for StartError {}

/// How a process is started: registered name and start timeout.
///
/// The default is anonymous, with an infinite start timeout (OTP's defaults).
#[derive(Clone, Debug)]
#[must_use]
pub struct StartOptions {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) timeout: Duration,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            name: None,
            timeout: INFINITY,
        }
    }
}

impl StartOptions {
    /// Anonymous, infinite start timeout.
    pub fn new() -> StartOptions {
        StartOptions::default()
    }

    /// Registers the process under `name` before `init` runs (OTP's
    /// `{local, Name}`); the start fails with
    /// [`StartError::AlreadyStarted`] if the name is taken.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> StartOptions {
        self.name = Some(name.into());
        self
    }

    /// Kills the new process and fails with [`StartError::Timeout`] if its
    /// `init` has not returned within `timeout` (OTP's `{timeout, T}`).
    pub fn timeout(mut self, timeout: Duration) -> StartOptions {
        self.timeout = timeout;
        self
    }
}

// ----------------------------------------------------------------- replies

/// The reply slot shared by a caller and the holders of its [`ReplyTo`].
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum SlotState {
    /// The caller waits; the first reply is delivered.
    #[default]
    Waiting,
    /// A reply was delivered; later ones are dropped.
    Replied,
    /// The caller gave up; every reply is dropped.
    Abandoned,
}

impl Slot {
    /// The caller gives up; returns true if a reply was already delivered
    /// (it is then in the caller's mailbox).
    fn abandon(&self) -> bool {
        let mut state = self.state.lock();
        let replied = *state == SlotState::Replied;
        *state = SlotState::Abandoned;
        replied
    }
}

/// Where to send the reply to one call: OTP's `From`.
///
/// A server receives it in `handle_call` and either returns the reply from
/// the callback or keeps a clone and replies later, from any process, with
/// [`ReplyTo::reply`] (a deferred reply). Only the first reply is delivered,
/// and none after the caller has given up.
pub struct ReplyTo<R> {
    caller: Pid,
    tag: MonitorRef,
    slot: Arc<Slot>,
    /// For a call that came as a term (from another node): how to answer.
    remote: Option<Arc<TermCaller<R>>>,
    _reply: PhantomData<fn(R)>,
}

/// A caller that called with OTP's term protocol (`{'$gen_call', {Pid,
/// Tag}, Request}`): the reply is `{Tag, Reply}`, to the alias when `Tag`
/// is `[alias | Alias]`, else to `Pid`.
struct TermCaller<R> {
    tag: ember_term::Term,
    encode: fn(R) -> ember_term::Term,
}

impl<R> Clone for ReplyTo<R> {
    fn clone(&self) -> Self {
        ReplyTo {
            caller: self.caller,
            tag: self.tag,
            slot: self.slot.clone(),
            remote: self.remote.clone(),
            _reply: PhantomData,
        }
    }
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTo")
            .field("caller", &self.caller)
            .field("tag", &self.tag)
            .finish()
    }
}

impl<R: Send + 'static> ReplyTo<R> {
    /// The calling process.
    pub fn caller(&self) -> Pid {
        self.caller
    }

    /// Sends the reply (OTP's `gen_server:reply/2`). Returns true if it was
    /// delivered; false if the call was already answered or the caller has
    /// given up (timed out), in which case the value is dropped.
    pub fn reply(&self, value: R) -> bool {
        let mut state = self.slot.state.lock();
        if *state != SlotState::Waiting {
            return false;
        }
        if let Some(remote) = &self.remote {
            let answer = ember_term::Term::tuple([remote.tag.clone(), (remote.encode)(value)]);
            send_term_reply(self.caller, &remote.tag, answer);
            *state = SlotState::Replied;
            return true;
        }
        // Sent under the lock: a caller that abandons after this finds the
        // reply in its mailbox (see `call`).
        send(
            self.caller,
            Reply {
                tag: self.tag,
                value,
            },
        );
        *state = SlotState::Replied;
        true
    }

    /// Whether the caller still waits for a reply: no reply was delivered and
    /// it has not timed out.
    pub fn is_waiting(&self) -> bool {
        *self.slot.state.lock() == SlotState::Waiting
    }
}

impl<R: Send + 'static> ReplyTo<R> {
    /// The reply handle of a call that came as a term from `caller` with
    /// `tag`; replies are encoded with `encode`.
    pub(crate) fn from_term(
        caller: Pid,
        tag: ember_term::Term,
        encode: fn(R) -> ember_term::Term,
    ) -> ReplyTo<R> {
        ReplyTo {
            caller,
            tag: MonitorRef::from(make_ref()),
            slot: Arc::new(Slot::default()),
            remote: Some(Arc::new(TermCaller { tag, encode })),
            _reply: PhantomData,
        }
    }
}

/// Sends a term reply `{Tag, Reply}` (built by the caller): to the alias
/// if `tag` is `[alias | Alias]` (OTP 24+ callers), else to `caller`
/// (gen.erl's `reply/2`).
pub fn send_term_reply(caller: Pid, tag: &ember_term::Term, answer: ember_term::Term) {
    use ember_term::Term;
    match tag {
        Term::ImproperList(head, tail) if head.len() == 1 && head[0].is_atom("alias") => {
            match &**tail {
                Term::Reference(alias) => ember_runtime::dist::send_alias(alias, answer),
                _ => send(caller, answer),
            }
        }
        _ => send(caller, answer),
    }
}

/// Sends `value` as the reply to a call (OTP's `gen_server:reply/2`); see
/// [`ReplyTo::reply`].
pub fn reply<R: Send + 'static>(to: &ReplyTo<R>, value: R) -> bool {
    to.reply(value)
}

/// A request as it travels to a server.
pub(crate) struct Call<C, R> {
    pub(crate) request: C,
    pub(crate) from: ReplyTo<R>,
}

/// A reply as it travels back to the caller.
struct Reply<R> {
    tag: MonitorRef,
    value: R,
}

/// The caller's side of one expected reply: the tag it is matched by (the
/// monitor on the replier) and the shared slot.
pub(crate) struct Pending<R> {
    tag: MonitorRef,
    slot: Arc<Slot>,
    _reply: PhantomData<fn() -> R>,
}

/// What waiting for a reply produced.
pub(crate) enum Waited<R> {
    /// The reply; the monitor is gone.
    Reply(R),
    /// The replier terminated first; its `Down` is consumed.
    Down(ExitReason),
    /// Nothing in time; the monitor is still active.
    Timeout,
}

/// A reply handle for the calling process, and its pending side. `tag` is
/// the caller's monitor on whoever will reply.
pub(crate) fn expect_reply<R>(tag: MonitorRef) -> (ReplyTo<R>, Pending<R>) {
    let slot = Arc::new(Slot::default());
    (
        ReplyTo {
            caller: self_pid(),
            tag,
            slot: slot.clone(),
            remote: None,
            _reply: PhantomData,
        },
        Pending {
            tag,
            slot,
            _reply: PhantomData,
        },
    )
}

impl<R: Send + 'static> Pending<R> {
    /// The monitor the reply is tagged with.
    pub(crate) fn monitor(&self) -> MonitorRef {
        self.tag
    }

    /// Waits up to `timeout` for the reply or the `Down` of the monitor.
    ///
    /// (The futures of `wait` and `give_up` own what they use, rather than
    /// borrowing `self`: a borrow held across an await in a generic future
    /// trips rustc's higher-ranked `Send` inference, rust-lang/rust#64552.)
    pub(crate) fn wait(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Waited<R>> + Send + 'static {
        let tag = self.tag;
        async move {
            let answer = receive_any(move |m| {
                m.downcast_ref::<Reply<R>>().is_some_and(|r| r.tag == tag)
                    || m.downcast_ref::<Down>().is_some_and(|d| d.monitor == tag)
            })
            .timeout(timeout)
            .await;
            let Some(message) = answer else {
                return Waited::Timeout;
            };
            match message.downcast::<Reply<R>>() {
                Ok(reply) => {
                    forget_monitor(tag).await;
                    Waited::Reply(reply.value)
                }
                Err(message) => match message.downcast::<Down>() {
                    Ok(down) => Waited::Down(down.reason),
                    Err(_) => unreachable!("the receive only takes replies and downs"),
                },
            }
        }
    }

    /// Gives up: from now on replies are dropped by their senders. Returns a
    /// reply that was delivered before (taken from the mailbox). The monitor
    /// is left to the caller.
    pub(crate) fn give_up(&self) -> impl Future<Output = Option<R>> + Send + 'static {
        let replied = self.slot.abandon();
        let tag = self.tag;
        async move {
            if !replied {
                return None;
            }
            // Delivered under the slot's lock before we abandoned it.
            receive::<Reply<R>>()
                .matching(move |r| r.tag == tag)
                .timeout(Duration::ZERO)
                .await
                .map(|r| r.value)
        }
    }

    /// Gives up without touching the mailbox (for `Drop`): only the slot.
    pub(crate) fn abandon(&self) {
        self.slot.abandon();
    }
}

/// Calls `server`: sends `request` as a [`Call`] and waits up to `timeout`
/// for the reply; see the module docs for the protocol.
pub(crate) async fn call<C, R>(server: Pid, request: C, timeout: Duration) -> Result<R, CallError>
where
    C: Send + 'static,
    R: Send + 'static,
{
    if server == self_pid() {
        // Nobody else could serve it: fail now, not after the timeout, and
        // leave no request behind for a later receive to find.
        return Err(CallError::CallingSelf);
    }
    let (from, pending) = expect_reply::<R>(monitor(server));
    send(server, Call { request, from });
    match pending.wait(timeout).await {
        Waited::Reply(reply) => Ok(reply),
        Waited::Down(reason) => Err(CallError::from_down(reason)),
        Waited::Timeout => {
            let late = pending.give_up().await;
            forget_monitor(pending.monitor()).await;
            late.ok_or(CallError::Timeout)
        }
    }
}

/// Removes a monitor whose `Down` has not been received, making sure no
/// `Down` for it is left behind: if `demonitor` finds the monitor already
/// fired, its `Down` is in the mailbox (`docs/semantics.md` §8.4) and is
/// taken here. (Cheaper than `demonitor(m, true)`, which scans the whole
/// mailbox even when nothing fired.)
pub(crate) async fn forget_monitor(monitor: MonitorRef) {
    if !demonitor(monitor, false) {
        receive::<Down>()
            .matching(move |d| d.monitor == monitor)
            .await;
    }
}

/// Waits for the `Down` of `monitor` (which must fire: its target was told to exit).
pub(crate) async fn await_down(monitor: MonitorRef) -> ExitReason {
    receive::<Down>()
        .matching(move |d| d.monitor == monitor)
        .await
        .reason
}

// ----------------------------------------------------------------- start

/// The acknowledgement a starting process sends its starter.
struct Ack {
    tag: Ref,
    result: Result<(), StartError>,
}

/// What a starting process holds to acknowledge its start (`proc_lib:init_ack`).
#[derive(Debug)]
pub(crate) struct Starter {
    starter: Pid,
    tag: Ref,
    linked: bool,
}

impl Starter {
    /// The starting process's parent: its starter if linked to it.
    pub(crate) fn parent(&self) -> Option<Pid> {
        self.linked.then_some(self.starter)
    }

    /// `init` succeeded: the start returns the pid.
    pub(crate) fn started(self) {
        send(
            self.starter,
            Ack {
                tag: self.tag,
                result: Ok(()),
            },
        );
    }

    /// `init` failed or ignored: unlink from the starter (so it gets this
    /// error instead of an exit signal), then tell it.
    pub(crate) fn failed(self, error: StartError) {
        if self.linked {
            unlink(self.starter);
        }
        send(
            self.starter,
            Ack {
                tag: self.tag,
                result: Err(error),
            },
        );
    }
}

/// Spawns `body` (linked to the caller if `link`), then waits for its
/// [`Starter`] acknowledgement; see the module docs.
pub(crate) async fn start<F, Fut>(
    options: StartOptions,
    link: bool,
    label: &'static str,
    body: F,
) -> Result<Pid, StartError>
where
    F: FnOnce(Starter) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoExitReason,
{
    let starter = Starter {
        starter: self_pid(),
        tag: make_ref(),
        linked: link,
    };
    let tag = starter.tag;
    let mut spawn = Spawn::new().monitor().label(label);
    if link {
        spawn = spawn.link();
    }
    if let Some(name) = options.name {
        spawn = spawn.name(name);
    }
    let spawned = match spawn.spawn(async move { body(starter).await }) {
        Ok(spawned) => spawned,
        Err(SpawnError::Register(RegisterError::NameTaken { owner, .. })) => {
            return Err(StartError::AlreadyStarted(owner))
        }
        Err(e) => return Err(StartError::Failed(ExitReason::error(e))),
    };
    let pid = spawned.pid;
    let Some(mref) = spawned.monitor else {
        unreachable!("the spawn asked for a monitor")
    };
    let answer = receive_any(move |m| {
        m.downcast_ref::<Ack>().is_some_and(|a| a.tag == tag)
            || m.downcast_ref::<Down>().is_some_and(|d| d.monitor == mref)
    })
    .timeout(options.timeout)
    .await;
    match answer {
        Some(message) => match message.downcast::<Ack>() {
            Ok(Ack { result: Ok(()), .. }) => {
                forget_monitor(mref).await;
                Ok(pid)
            }
            Ok(Ack { result: Err(e), .. }) => {
                // It unlinked before acking and exits now: take its Down.
                await_down(mref).await;
                Err(e)
            }
            Err(message) => {
                let Ok(down) = message.downcast::<Down>() else {
                    unreachable!("the receive only takes acks and downs")
                };
                // Died before acknowledging (killed, or a panic outside init).
                if link && traps_exits() {
                    take_exit_from(pid).await;
                }
                Err(StartError::Failed(down.reason))
            }
        },
        None => {
            if link {
                unlink(pid);
            }
            exit(pid, ExitReason::Kill);
            await_down(mref).await;
            // An ack sent just before the kill must not linger.
            let _ = receive::<Ack>()
                .matching(move |a| a.tag == tag)
                .timeout(Duration::ZERO)
                .await;
            Err(StartError::Timeout)
        }
    }
}

/// Whether the calling process traps exits.
pub(crate) fn traps_exits() -> bool {
    process_info(self_pid()).is_some_and(|i| i.trap_exit)
}

/// Takes the `Exit` message of a linked process that has died (trapping exits).
async fn take_exit_from(pid: Pid) -> Exit {
    receive::<Exit>().matching(move |e| e.from == pid).await
}

// ----------------------------------------------------------------- panics

/// Runs a user callback, turning a panic into [`ExitReason::Panic`] (with
/// the panic's message) instead of the calling process's crash: the one
/// place where this crate catches panics, also used by callers that report
/// a panic in their own terms (`ember_dist`'s remote tasks).
pub async fn guarded<F: Future>(callback: F) -> Result<F::Output, ExitReason> {
    CatchUnwind(pin!(callback)).await
}

struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ExitReason>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(ExitReason::Panic(panic_message(&*payload).into()))),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// A message any behaviour may receive that it did not expect; used by
/// default `handle_info` bodies to say what arrived.
pub(crate) fn describe(message: &Envelope) -> &'static str {
    if message.is::<Exit>() {
        "an exit message"
    } else if message.is::<Down>() {
        "a monitor down message"
    } else {
        "a message"
    }
}
