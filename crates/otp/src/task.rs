//! Tasks: Elixir's `Task` (async/await with a timeout, yield, shutdown)
//! and `Task.Supervisor`.
//!
//! A task is a process that runs one future and sends its output to its
//! owner, the process that started it. [`Task::spawn`] links the task to
//! its owner (Elixir's `Task.async`): a task that crashes takes a
//! non-trapping owner down with it, as in Elixir. A
//! [`TaskSupervisor`]'s `async_nolink` tasks are not linked: their crash is
//! only reported, as `Err(TaskError::Exited(reason))`.
//!
//! ```
//! use std::time::Duration;
//! use ember_otp::task::Task;
//!
//! # let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
//! # rt.block_on(async {
//! let task = Task::spawn(async { 6 * 7 });
//! assert_eq!(task.await, Ok(42)); // Task.await, 5 s
//!
//! let mut slow = Task::spawn(async {
//!     ember_runtime::sleep(Duration::from_secs(60)).await;
//! });
//! assert_eq!(slow.yield_for(Duration::from_millis(1)).await, None); // Task.yield
//! assert_eq!(slow.shutdown(ember_otp::supervisor::Shutdown::BrutalKill).await, None);
//! # });
//! ```
//!
//! Mapping from Elixir: `Task.async` → [`Task::spawn`], `Task.await` →
//! [`Task::join`] / [`Task::join_timeout`] / `.await`, `Task.yield` →
//! [`Task::yield_for`], `Task.shutdown` → [`Task::shutdown`]. Where Elixir
//! exits the caller (an await that times out, or a task that crashed while
//! the owner traps exits), these return an error: a join that times out
//! kills the task (as the exiting caller's link would) and returns
//! [`TaskError::Timeout`].

mod supervisor;

pub use supervisor::TaskSupervisor;

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use ember_runtime::{
    exit, monitor, receive, receive_any, self_pid, send, unlink, Down, Exit, ExitReason, Pid, Spawn,
};

use crate::gen::{self, await_down, expect_reply, forget_monitor, Pending, ReplyTo, Waited};
use crate::supervisor::Shutdown;

/// Why a task produced no value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// No result in time (the task was shut down by `join`).
    Timeout,
    /// The task terminated with this reason before producing its result.
    Exited(ExitReason),
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Timeout => f.write_str("timeout: the task did not finish in time"),
            TaskError::Exited(reason) => write!(f, "the task exited: {reason}"),
        }
    }
}

impl std::error::Error for TaskError {}

/// The owner's go-ahead, carrying where the result goes.
struct Go<T>(ReplyTo<T>);

/// What a task process runs: wait until the owner has monitored it (its
/// `Go`), run `work`, reply. An owner that dies first ends the task.
pub(crate) async fn task_body<F>(owner: Pid, work: F) -> ExitReason
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let owner_monitor = monitor(owner);
    let first = receive_any(move |m| {
        m.is::<Go<F::Output>>()
            || m.downcast_ref::<Down>()
                .is_some_and(|d| d.monitor == owner_monitor)
    })
    .await;
    let Ok(Go(reply_to)) = first.downcast::<Go<F::Output>>() else {
        return ExitReason::Normal; // the owner is gone: nobody wants the result
    };
    forget_monitor(owner_monitor).await;
    reply_to.reply(work.await);
    ExitReason::Normal
}

/// A running task and the right to its result; only its owner may await it.
///
/// Dropping a task without awaiting it leaves it running; its result is
/// then dropped when it comes, but the owner still receives the `Down` of
/// the task's monitor.
pub struct Task<T: Send + 'static> {
    pid: Pid,
    owner: Pid,
    pending: Pending<T>,
    linked: bool,
    finished: bool,
}

impl<T: Send + 'static> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("pid", &self.pid)
            .field("owner", &self.owner)
            .field("linked", &self.linked)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Task<T> {
    /// Runs `work` in a new process linked to and monitored by the caller
    /// (Elixir's `Task.async`).
    ///
    /// # Panics
    ///
    /// Outside an Ember process.
    pub fn spawn<F>(work: F) -> Task<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let owner = self_pid();
        let spawned = Spawn::new()
            .link()
            .monitor()
            .label("task")
            .spawn(task_body(owner, work))
            .expect("Task::spawn is called from a process");
        let Some(monitor) = spawned.monitor else {
            unreachable!("the spawn asked for a monitor")
        };
        Task::go(spawned.pid, monitor, true)
    }

    /// The owner's half of the start protocol: send the go-ahead.
    pub(crate) fn go(pid: Pid, monitor: ember_runtime::MonitorRef, linked: bool) -> Task<T> {
        let (reply_to, pending) = expect_reply::<T>(monitor);
        send(pid, Go(reply_to));
        Task {
            pid,
            owner: self_pid(),
            pending,
            linked,
            finished: false,
        }
    }

    /// The task process.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    fn check_owner(&self, what: &str) {
        let me = self_pid();
        assert!(
            me == self.owner,
            "{what}: task {} is owned by {}, not by {me}",
            self.pid,
            self.owner
        );
        assert!(
            !self.finished,
            "{what}: task {} already gave its result",
            self.pid
        );
    }

    /// Waits up to 5 seconds for the result (Elixir's `Task.await/1`).
    pub async fn join(self) -> Result<T, TaskError> {
        self.join_timeout(gen::DEFAULT_TIMEOUT).await
    }

    /// Waits up to `timeout` for the result (Elixir's `Task.await/2`). On
    /// timeout the task is killed and the result is
    /// [`TaskError::Timeout`]; if it crashed, [`TaskError::Exited`].
    ///
    /// # Panics
    ///
    /// If the caller is not the task's owner.
    pub async fn join_timeout(mut self, timeout: Duration) -> Result<T, TaskError> {
        self.check_owner("join");
        let outcome = self.pending.wait(timeout).await;
        self.finished = true;
        match outcome {
            Waited::Reply(value) => Ok(value),
            Waited::Down(reason) => Err(TaskError::Exited(reason)),
            Waited::Timeout => {
                if self.linked {
                    unlink(self.pid);
                }
                exit(self.pid, ExitReason::Kill);
                let late = self.pending.give_up().await;
                await_down(self.pending.monitor()).await;
                self.flush_exit().await;
                late.ok_or(TaskError::Timeout)
            }
        }
    }

    /// Waits up to `timeout` (Elixir's `Task.yield/2`): `Some` with the
    /// result or the task's exit, or `None` if it is still running, in
    /// which case it can be yielded again, joined or shut down.
    ///
    /// # Panics
    ///
    /// If the caller is not the owner, or the result was already taken.
    pub async fn yield_for(&mut self, timeout: Duration) -> Option<Result<T, TaskError>> {
        self.check_owner("yield");
        match self.pending.wait(timeout).await {
            Waited::Reply(value) => {
                self.finished = true;
                Some(Ok(value))
            }
            Waited::Down(reason) => {
                self.finished = true;
                Some(Err(TaskError::Exited(reason)))
            }
            Waited::Timeout => None,
        }
    }

    /// Stops the task (Elixir's `Task.shutdown/2`): `shutdown` as a
    /// supervisor would, then `kill` after the timeout. Returns its result
    /// if it finished first, `Some(Err(Exited))` if it had crashed, and
    /// `None` if it was shut down.
    ///
    /// # Panics
    ///
    /// If the caller is not the owner, or the result was already taken.
    pub async fn shutdown(mut self, how: Shutdown) -> Option<Result<T, TaskError>> {
        self.check_owner("shutdown");
        self.finished = true;
        if self.linked {
            unlink(self.pid);
            self.flush_exit().await;
        }
        let wait = match how {
            Shutdown::BrutalKill => {
                exit(self.pid, ExitReason::Kill);
                gen::INFINITY
            }
            Shutdown::Timeout(limit) => {
                exit(self.pid, ExitReason::Shutdown);
                limit
            }
            Shutdown::Infinity => {
                exit(self.pid, ExitReason::Shutdown);
                gen::INFINITY
            }
        };
        let outcome = match self.pending.wait(wait).await {
            Waited::Timeout => {
                exit(self.pid, ExitReason::Kill);
                self.pending.wait(gen::INFINITY).await
            }
            outcome => outcome,
        };
        match outcome {
            Waited::Reply(value) => Some(Ok(value)),
            Waited::Down(ExitReason::Shutdown | ExitReason::Killed | ExitReason::Normal) => None,
            Waited::Down(reason) => Some(Err(TaskError::Exited(reason))),
            Waited::Timeout => unreachable!("an infinite wait does not time out"),
        }
    }

    /// Takes the `Exit` a linked task sent a trapping owner before being
    /// unlinked, if any.
    async fn flush_exit(&self) {
        if self.linked {
            let pid = self.pid;
            let _ = receive::<Exit>()
                .matching(move |e| e.from == pid)
                .timeout(Duration::ZERO)
                .await;
        }
    }
}

impl<T: Send + 'static> Drop for Task<T> {
    fn drop(&mut self) {
        if !self.finished {
            self.pending.abandon();
        }
    }
}

impl<T: Send + 'static> IntoFuture for Task<T> {
    type Output = Result<T, TaskError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T, TaskError>> + Send>>;

    /// `task.await` is [`Task::join`]: Elixir's `Task.await` with its 5 s default.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.join())
    }
}
