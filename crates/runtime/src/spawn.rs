//! Spawning processes: `spawn`, `spawn_link`, `spawn_monitor` and [`Spawn`]
//! for the options (name, priority, trap_exit, label).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::context;
use crate::memory::MemoryLimitUnsupported;
use crate::pid::{MonitorRef, Pid};
use crate::process::{BoxFuture, Priority, Process};
use crate::reason::{ExitReason, IntoExitReason};
use crate::registry::RegisterError;
use crate::runtime::Shared;
use crate::scheduler;

/// Options for a new process; [`Spawn::spawn`] starts it.
///
/// ```
/// # let rt = ember_runtime::Runtime::new().unwrap();
/// # rt.block_on(async {
/// use ember_runtime::{Priority, Spawn};
/// let spawned = Spawn::new()
///     .name("logger")
///     .priority(Priority::Low)
///     .label("logger loop")
///     .spawn(async { ember_runtime::receive::<String>().await; })
///     .unwrap();
/// assert_eq!(ember_runtime::whereis("logger"), Some(spawned.pid));
/// # });
/// ```
#[derive(Clone, Debug, Default)]
#[must_use = "a Spawn does nothing until `.spawn(..)` is called"]
pub struct Spawn {
    name: Option<Arc<str>>,
    priority: Priority,
    trap_exit: bool,
    label: Option<Cow<'static, str>>,
    link: bool,
    monitor: bool,
    group_leader: Option<Pid>,
    queued: bool,
    memory_limit: Option<usize>,
}

/// What [`Spawn::spawn`] started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spawned {
    /// The new process.
    pub pid: Pid,
    /// The monitor, if [`Spawn::monitor`] was asked for.
    pub monitor: Option<MonitorRef>,
}

/// Why a spawn was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnError {
    /// The requested name is registered to another process.
    Register(RegisterError),
    /// `link` or `monitor` was asked for outside a process: there is no parent.
    NoParent,
    /// A [`Spawn::memory_limit`] was asked for, but no counting allocator
    /// is installed to enforce it.
    MemoryLimit(MemoryLimitUnsupported),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Register(e) => write!(f, "cannot register the new process: {e}"),
            SpawnError::NoParent => {
                f.write_str("link or monitor requested outside a process: there is no parent")
            }
            SpawnError::MemoryLimit(e) => write!(f, "cannot set the memory limit: {e}"),
        }
    }
}

impl std::error::Error for SpawnError {}

impl Spawn {
    /// Default options: normal priority, not trapping exits, no name.
    pub fn new() -> Spawn {
        Spawn::default()
    }

    /// Registers the process under `name` before it first runs; the spawn
    /// fails if the name is taken.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Spawn {
        self.name = Some(name.into());
        self
    }

    /// Scheduling priority.
    pub fn priority(mut self, priority: Priority) -> Spawn {
        self.priority = priority;
        self
    }

    /// Starts with `trap_exit` set.
    pub fn trap_exit(mut self, on: bool) -> Spawn {
        self.trap_exit = on;
        self
    }

    /// What introspection shows the process was spawned as (default: the
    /// type name of its body).
    pub fn label(mut self, label: impl Into<Cow<'static, str>>) -> Spawn {
        self.label = Some(label.into());
        self
    }

    /// Links the new process to the caller, atomically with its creation.
    pub fn link(mut self) -> Spawn {
        self.link = true;
        self
    }

    /// Monitors the new process from the caller, atomically with its creation.
    pub fn monitor(mut self) -> Spawn {
        self.monitor = true;
        self
    }

    /// The new process's group leader (default: the spawner's, or the
    /// node's default group leader from outside a process). Remote spawn
    /// and rpc pass the caller's group leader here (`crate::io`).
    pub fn group_leader(mut self, leader: Pid) -> Spawn {
        self.group_leader = Some(leader);
        self
    }

    /// Queues the new process behind the processes already waiting on the
    /// caller's scheduler, instead of running it right after the caller's
    /// current poll (where a process spawned by a process goes by default:
    /// docs/semantics.md §13.4). For a process that spawns one process per
    /// event, such as an acceptor per connection: its children then run in
    /// the order their events arrived, after the work those events woke
    /// before them, and a long request accepted later cannot go ahead of a
    /// short one already read.
    pub fn queued(mut self) -> Spawn {
        self.queued = true;
        self
    }

    /// Gives the process a memory limit, in bytes: allocations made while it
    /// is polled are attributed to it (net of its frees), and going over the
    /// limit kills it with the untrappable reason `memory_limit`
    /// ([`ExitReason::memory_limit`]; docs/semantics.md §9.5). Needs a
    /// counting global allocator ([`CountingAlloc`](crate::alloc::CountingAlloc)
    /// or [`Counting`](crate::alloc::Counting)); without one the spawn fails with
    /// [`SpawnError::MemoryLimit`].
    pub fn memory_limit(mut self, bytes: usize) -> Spawn {
        self.memory_limit = Some(bytes);
        self
    }

    /// Starts the process. Inside a process it runs on the caller's runtime.
    ///
    /// # Panics
    ///
    /// Outside any Ember runtime (use [`Handle::spawn`](crate::Handle::spawn)).
    pub fn spawn<F>(self, body: F) -> Result<Spawned, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: IntoExitReason,
    {
        context::with_runtime("spawn", |rt| {
            let parent = context::try_with_current(Arc::clone);
            rt.spawn_with(self, parent.as_ref(), body)
        })
    }
}

pin_project_lite::pin_project! {
    /// A process body whose output becomes its exit reason. Not an `async`
    /// block: one that awaits a captured future stores the future twice (the
    /// captured value and the one being awaited), doubling every body.
    struct ToExitReason<F> {
        #[pin]
        body: F,
    }
}

impl<F> Future for ToExitReason<F>
where
    F: Future,
    F::Output: IntoExitReason,
{
    type Output = ExitReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ExitReason> {
        self.project()
            .body
            .poll(cx)
            .map(IntoExitReason::into_exit_reason)
    }
}

impl Shared {
    /// Creates, registers, links/monitors and queues a new process.
    pub(crate) fn spawn_with<F>(
        self: &Arc<Self>,
        options: Spawn,
        parent: Option<&Arc<Process>>,
        body: F,
    ) -> Result<Spawned, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: IntoExitReason,
    {
        context::consume_reductions(1);
        if (options.link || options.monitor) && parent.is_none() {
            return Err(SpawnError::NoParent);
        }
        if options.memory_limit.is_some() && !crate::alloc::installed() {
            return Err(SpawnError::MemoryLimit(MemoryLimitUnsupported));
        }
        let pid = self.next_pid();
        let as_next = !options.queued;
        let spawned_as = options
            .label
            .unwrap_or(Cow::Borrowed(std::any::type_name::<F>()));
        let future: BoxFuture = Box::pin(ToExitReason { body });
        let size = std::mem::size_of_val(&*future);
        let process = Arc::new(Process::new(
            pid,
            self.clone(),
            future,
            size,
            spawned_as,
            options.priority,
            options.trap_exit,
        ));
        if options.memory_limit.is_some() {
            // Nobody else sees the process yet.
            process.memory_account().set_limit(options.memory_limit);
        }
        // The group leader: asked for, else the parent's if it has its own
        // (one flag load when it has not), else the node's default.
        if let Some(leader) = options
            .group_leader
            .or_else(|| parent.and_then(|p| p.group_leader()))
        {
            process.set_group_leader(Some(leader));
        }
        let monitor = options.monitor.then(|| MonitorRef(self.make_ref()));
        // Publishes the child: in the table before its name is, so a name
        // never names a process that a send cannot reach.
        let publish = |process: &Arc<Process>, name: Option<Arc<str>>| {
            self.table.insert(pid.key(), process.clone());
            if let Some(name) = name {
                if let Err(e) = self.claim_name(name, process) {
                    self.table.remove(pid.key());
                    return Err(SpawnError::Register(e));
                }
            }
            Ok(())
        };
        match parent {
            Some(parent) if options.link || options.monitor => {
                // The child's side first: nobody can see it yet.
                process.with_relations(|r| {
                    if options.link {
                        r.links.insert(parent.pid);
                    }
                    if let Some(reference) = monitor {
                        r.more_mut().monitored_by.insert(reference, parent.pid);
                    }
                });
                // Then, in one critical section of the parent's relations
                // lock, publish the child and add the parent's side: a
                // parent terminating meanwhile either comes first (then it
                // is exiting and spawns nothing: the pid it gets back names
                // a process that never ran) or finds the child linked and in
                // the table (`signal` module docs, "spawn_link").
                let attached = parent.with_live_relations(|r| {
                    publish(&process, options.name)?;
                    if options.link {
                        r.links.insert(pid);
                    }
                    if let Some(reference) = monitor {
                        r.more_mut().monitoring.insert(reference, pid);
                    }
                    Ok(())
                });
                match attached {
                    Some(published) => published?,
                    None => {
                        crate::scheduler::drop_contained(process);
                        return Ok(Spawned { pid, monitor });
                    }
                }
            }
            _ => {
                if parent.is_some_and(|p| p.is_exiting()) {
                    // A parent killed while running spawns nothing: it is dead.
                    crate::scheduler::drop_contained(process);
                    return Ok(Spawned { pid, monitor });
                }
                publish(&process, options.name)?;
            }
        }
        scheduler::enqueue_new(self, process, as_next);
        Ok(Spawned { pid, monitor })
    }

    /// Registers a name for a process that has not run yet. Under the
    /// process's relations lock, then the name table's (the lock order of
    /// `crate::signal`), so a process killed meanwhile (its pid is already
    /// in the table) gets no name that its termination would not release.
    fn claim_name(&self, name: Arc<str>, process: &Process) -> Result<(), RegisterError> {
        let mut record = process.relations.lock();
        if process.is_exiting() {
            // Dead before it ran: there is nothing left to name.
            return Ok(());
        }
        self.claim_free_name(&name, process.pid)?;
        record.get_or_insert_with(Box::default).more_mut().name = Some(name);
        Ok(())
    }
}

/// Spawns a process running `body`; returns its pid at once.
///
/// The body may return `()`, an [`ExitReason`] or a
/// `Result<(), E: Display>`; that becomes its exit reason. A panic in the body
/// terminates only this process, with reason [`ExitReason::Panic`].
///
/// # Panics
///
/// Outside an Ember runtime (use [`Handle::spawn`](crate::Handle::spawn)).
pub fn spawn<F>(body: F) -> Pid
where
    F: Future + Send + 'static,
    F::Output: IntoExitReason,
{
    match Spawn::new().spawn(body) {
        Ok(spawned) => spawned.pid,
        Err(_) => unreachable!("a spawn without name, link or monitor cannot fail"),
    }
}

/// Spawns a process linked to the caller (atomically).
///
/// # Panics
///
/// Outside an Ember process.
pub fn spawn_link<F>(body: F) -> Pid
where
    F: Future + Send + 'static,
    F::Output: IntoExitReason,
{
    context::with_current("spawn_link", |_| ());
    match Spawn::new().link().spawn(body) {
        Ok(spawned) => spawned.pid,
        Err(_) => unreachable!("checked above: the caller is a process"),
    }
}

/// Spawns a process monitored by the caller (atomically); returns its pid and
/// the monitor.
///
/// # Panics
///
/// Outside an Ember process.
pub fn spawn_monitor<F>(body: F) -> (Pid, MonitorRef)
where
    F: Future + Send + 'static,
    F::Output: IntoExitReason,
{
    context::with_current("spawn_monitor", |_| ());
    match Spawn::new().monitor().spawn(body) {
        Ok(Spawned {
            pid,
            monitor: Some(monitor),
        }) => (pid, monitor),
        _ => unreachable!("checked above: the caller is a process"),
    }
}
