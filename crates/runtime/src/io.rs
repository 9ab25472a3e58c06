//! Group leaders and output, as in Erlang.
//!
//! Every process has a *group leader*: the process its output goes to. A
//! spawned process inherits its spawner's ([`Spawn::group_leader`] sets
//! another); a process spawned from outside any process gets the node's
//! default group leader, the registered process `user`, which writes to
//! the OS process's stdout (started with the runtime, again at the next use
//! if it died; its stdout thread starts with the first output).
//! [`set_group_leader`] changes it, [`group_leader`] reads it, and
//! [`ProcessInfo::group_leader`](crate::introspect::ProcessInfo::group_leader) reports it.
//!
//! Output travels as the Erlang I/O protocol: [`print!`] and [`println!`]
//! (and [`put_chars`]) send `{io_request, Self, Ref, {put_chars, unicode,
//! Chars}}` to the group leader as an [`ember_term::Term`] and wait for its
//! `{io_reply, Ref, ok}`, monitoring the group leader meanwhile as Erlang's
//! `io` does: a dead group leader is an error at once, not a hang. Because
//! the request is a term, a group leader may be any process that speaks the
//! protocol ([`IoRequest`] helps write one), on this node or, once pids of
//! other nodes exist, on another.
//!
//! ```
//! use ember_runtime::{io, Runtime};
//!
//! let rt = Runtime::new().unwrap();
//! rt.block_on(async {
//!     io::println!("hello from {}", ember_runtime::self_pid()).await;
//!     assert_eq!(Some(io::group_leader()), ember_runtime::whereis("user"));
//! });
//! ```
//!
//! # Cost
//!
//! The group leader costs a process nothing until it differs from the
//! node's default: a flag bit says whether the process has its own, kept in
//! the boxed, rarely allocated part of its relations. A spawn reads that bit
//! of the parent and copies the parent's group leader only if it is set.

mod format;
mod protocol;
mod user;

use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_term::Term;
use parking_lot::Mutex;

pub use protocol::IoRequest;

use crate::context;
use crate::pid::Pid;
use crate::reason::ExitReason;
use crate::runtime::Shared;
use crate::signal::Down;
#[cfg(doc)]
use crate::spawn::Spawn;

/// How long [`put_chars`] (and the print macros) wait for the group
/// leader's reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The node's default group leader and its stdout thread.
#[derive(Default)]
pub(crate) struct NodeIo {
    /// The `user` process, once started.
    user: Mutex<Option<Pid>>,
    /// The stdout thread, once output was written.
    writer: Mutex<Option<user::Writer>>,
}

impl NodeIo {
    /// The node's default group leader: the `user` process, started with
    /// the runtime and again, if it died, at the next use.
    pub(crate) fn default_group_leader(&self, rt: &Arc<Shared>) -> Pid {
        let mut user = self.user.lock();
        if let Some(pid) = *user {
            if rt.lookup(pid).is_some_and(|p| !p.is_exiting()) {
                return pid;
            }
        }
        let pid = user::start(rt);
        *user = Some(pid);
        pid
    }

    /// The default group leader as it stands, without starting one:
    /// introspection must not spawn. (`user` starts with the runtime, so
    /// this is a pid that named it; `Pid::OUTSIDE` cannot be seen after
    /// `Builder::build` returns.)
    fn current(&self) -> Pid {
        self.user.lock().unwrap_or(Pid::OUTSIDE)
    }

    /// Keeps the stdout thread's handle (the newest `user`'s).
    fn adopt_writer(&self, thread: user::Writer) {
        *self.writer.lock() = Some(thread);
    }

    /// At the runtime's drop, once `user` is gone: lets the stdout thread
    /// write what is queued, for at most a second.
    pub(crate) fn shut_down(&self) {
        let Some(thread) = self.writer.lock().take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

/// The calling process's group leader (Erlang's `group_leader/0`); outside
/// a process, the node's default group leader.
///
/// # Panics
///
/// Outside an Ember runtime.
pub fn group_leader() -> Pid {
    context::with_runtime("group_leader", |rt| {
        context::try_with_current(|me| me.group_leader())
            .flatten()
            .unwrap_or_else(|| rt.io.default_group_leader(rt))
    })
}

/// Makes `leader` the calling process's group leader (Erlang's
/// `group_leader(Leader, self())`). Its output goes there from now on, and
/// processes it spawns from now on inherit it. `leader` need not be alive:
/// output to a dead group leader fails with [`IoError::GroupLeaderDead`].
///
/// # Panics
///
/// Outside an Ember process.
pub fn set_group_leader(leader: Pid) {
    context::with_current("set_group_leader", |me| me.set_group_leader(Some(leader)));
}

/// Makes `leader` the group leader of process `pid` (Erlang's
/// `group_leader(Leader, Pid)`); fails if `pid` is not a live local process.
/// A `pid` of another node gets a `GROUP_LEADER` signal and `Ok` (as in
/// Erlang, whether it is alive is known only there); without distribution
/// it is `Err`.
///
/// # Panics
///
/// Outside an Ember runtime.
pub fn set_group_leader_of(pid: Pid, leader: Pid) -> Result<(), NoProcess> {
    context::with_runtime("set_group_leader_of", |rt| {
        if !pid.is_local() {
            return crate::dist::group_leader_remote(rt, pid, leader).ok_or(NoProcess(pid));
        }
        set_group_leader_in(rt, pid, leader)
    })
}

/// [`set_group_leader_of`] on a given runtime (also the distribution's
/// `GROUP_LEADER` signal, which arrives outside any process).
pub(crate) fn set_group_leader_in(rt: &Shared, pid: Pid, leader: Pid) -> Result<(), NoProcess> {
    match rt.lookup(pid) {
        Some(process) if process.set_group_leader(Some(leader)) => Ok(()),
        _ => Err(NoProcess(pid)),
    }
}

/// The group leader of `process`, for introspection: reading it starts
/// nothing (a `user` that was killed is started again at the next output).
pub(crate) fn group_leader_of(rt: &Shared, process: &crate::process::Process) -> Pid {
    process.group_leader().unwrap_or_else(|| rt.io.current())
}

/// The error of [`set_group_leader_of`]: no live local process has that pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoProcess(pub Pid);

impl fmt::Display for NoProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no live local process {}", self.0)
    }
}

impl std::error::Error for NoProcess {}

/// Why output failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum IoError {
    /// The group leader was dead when asked, or died before it replied.
    GroupLeaderDead {
        /// The group leader.
        leader: Pid,
        /// Its exit reason (`noproc` if it was already gone).
        reason: ExitReason,
    },
    /// The group leader did not reply in time.
    Timeout {
        /// The group leader.
        leader: Pid,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The group leader answered `{error, Reason}` (or anything but `ok`).
    Refused(Term),
    /// Writing to stdout directly (outside a process) failed.
    Stdout(std::io::Error),
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::GroupLeaderDead { leader, reason } => {
                write!(f, "the group leader {leader} is dead ({reason})")
            }
            IoError::Timeout { leader, waited } => {
                write!(
                    f,
                    "the group leader {leader} did not reply within {waited:?}"
                )
            }
            IoError::Refused(reply) => write!(f, "the group leader refused the output: {reply}"),
            IoError::Stdout(e) => write!(f, "cannot write to stdout: {e}"),
        }
    }
}

impl std::error::Error for IoError {}

/// Writes `text` through the calling process's group leader and waits for
/// its reply (at most [`REPLY_TIMEOUT`]); outside a process, writes it to
/// stdout directly.
pub async fn put_chars(text: impl Into<String>) -> Result<(), IoError> {
    put_chars_timeout(text, REPLY_TIMEOUT).await
}

/// [`put_chars`] with its own deadline for the reply.
pub async fn put_chars_timeout(text: impl Into<String>, timeout: Duration) -> Result<(), IoError> {
    let text = text.into();
    if crate::try_self_pid().is_none() {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(IoError::Stdout);
    }
    let leader = group_leader();
    let reply = match request(leader, put_chars_request(&text), timeout).await {
        // A group leader on a node this one lost its connection to: the
        // output goes to this node's default group leader, which becomes
        // the process's (Erlang raises `terminated` in the writer instead).
        Err(IoError::GroupLeaderDead {
            reason: ExitReason::NoConnection,
            ..
        }) if !leader.is_local() => {
            context::with_current("put_chars", |me| {
                if me.group_leader() == Some(leader) {
                    me.set_group_leader(None);
                }
            });
            tracing::warn!(
                "ember: the group leader {leader} is on a node no longer connected; \
                 output goes to this node's group leader from now on"
            );
            request(group_leader(), put_chars_request(&text), timeout).await?
        }
        other => other?,
    };
    if reply.is_atom("ok") {
        Ok(())
    } else {
        Err(IoError::Refused(reply))
    }
}

/// `{put_chars, unicode, <<Text/utf8>>}`.
fn put_chars_request(text: &str) -> Term {
    IoRequest::put_chars(Term::nil(), Term::nil(), text).request
}

/// Sends one I/O request to `leader` and waits for its reply (the `Reply`
/// of `{io_reply, ReplyAs, Reply}`), monitoring `leader` meanwhile.
///
/// # Panics
///
/// Outside an Ember process.
pub async fn request(leader: Pid, request: Term, timeout: Duration) -> Result<Term, IoError> {
    let me = context::with_current("io::request", |me| me.pid);
    let monitor = crate::monitor(leader);
    let reply_as = crate::dist::ref_to_term(monitor.0);
    let message = IoRequest {
        from: crate::dist::pid_to_term(me),
        reply_as: reply_as.clone(),
        request,
    };
    crate::send(leader, message.to_term());
    let answer = crate::receive_any(|m| {
        m.downcast_ref::<Term>()
            .is_some_and(|t| protocol::reply_of(t, &reply_as).is_some())
            || m.downcast_ref::<Down>()
                .is_some_and(|d| d.monitor == monitor)
    })
    .timeout(timeout)
    .await;
    crate::demonitor(monitor, true);
    let Some(answer) = answer else {
        return Err(IoError::Timeout {
            leader,
            waited: timeout,
        });
    };
    match answer.downcast::<Term>() {
        Ok(term) => match protocol::reply_of(&term, &reply_as) {
            Some(reply) => Ok(reply.clone()),
            None => unreachable!("the receive matched this reply"),
        },
        Err(other) => match other.downcast::<Down>() {
            Ok(down) => Err(IoError::GroupLeaderDead {
                leader,
                reason: down.reason,
            }),
            Err(_) => unreachable!("the receive matched a Down or a reply"),
        },
    }
}

/// What [`print!`] and [`println!`] run: [`put_chars`], panicking on
/// failure as `std`'s macros do (a panic ends only the calling process).
#[doc(hidden)]
pub async fn print_or_panic(text: String) {
    if let Err(e) = put_chars(text).await {
        panic!("ember_runtime::io: cannot print: {e}");
    }
}

/// Formats like [`std::print!`] and writes through the calling process's
/// group leader; `.await` it. Panics (ending only this process) if the
/// group leader is dead or does not answer; [`put_chars`] returns the error
/// instead. Outside a process it writes to stdout.
#[macro_export]
#[doc(hidden)]
macro_rules! __ember_io_print {
    ($($arg:tt)*) => {
        $crate::io::print_or_panic(::std::format!($($arg)*))
    };
}

/// Like [`print!`](crate::io::print), with a newline.
#[macro_export]
#[doc(hidden)]
macro_rules! __ember_io_println {
    () => {
        $crate::io::print_or_panic(::std::string::String::from("\n"))
    };
    ($($arg:tt)*) => {
        $crate::io::print_or_panic({
            let mut text = ::std::format!($($arg)*);
            text.push('\n');
            text
        })
    };
}

/// Formats like [`std::print!`] and writes through the calling process's
/// group leader, waiting for its reply: `io::print!("x = {x}").await`.
/// Panics (ending only the calling process) if the group leader is dead or
/// does not answer within [`REPLY_TIMEOUT`]; [`put_chars`] returns the
/// error instead. Outside a process it writes to stdout.
pub use crate::__ember_io_print as print;

/// [`print!`] with a newline: `io::println!("x = {x}").await`.
pub use crate::__ember_io_println as println;
