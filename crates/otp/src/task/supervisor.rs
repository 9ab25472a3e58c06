//! Elixir's `Task.Supervisor`: a dynamic supervisor of temporary task
//! processes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ember_runtime::{link, monitor, self_pid, ExitReason, Pid, Spawn};
use parking_lot::Mutex;

use super::{task_body, Task};
use crate::dynamic_supervisor::{DynamicSupervisorRef, DynamicSupervisorSpec};
use crate::gen::{CallError, StartError, StartOptions};
use crate::supervisor::{ChildSpecBuilder, Restart, Shutdown, SupervisorError};

type Body = Pin<Box<dyn Future<Output = ExitReason> + Send>>;
type MakeBody = Arc<dyn Fn() -> Body + Send + Sync>;

/// A task body on its way to the supervisor, taken once by the start.
///
/// A struct rather than an alias: a type argument whose *type* names a
/// `'static` trait object trips rustc's higher-ranked `Send` inference in
/// the supervisor's futures (rust-lang/rust#64552); a struct hides it.
#[derive(Clone)]
enum TaskArgs {
    /// A body that runs once (a temporary task).
    Once(Arc<Mutex<Option<Body>>>),
    /// A body made anew for each (re)start (a permanent or transient task).
    Again(MakeBody),
}

/// A supervisor of tasks (Elixir's `Task.Supervisor`): a task is a
/// temporary child (never restarted) unless started with
/// [`start_child_with`](TaskSupervisor::start_child_with), terminated with
/// the supervisor.
///
/// ```
/// use ember_otp::task::{TaskError, TaskSupervisor};
///
/// # let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
/// # rt.block_on(async {
/// let tasks = TaskSupervisor::start_link().await.unwrap();
/// let ok = tasks.async_nolink(async { "fine" }).await.unwrap();
/// let boom = tasks.async_nolink(async { panic!("boom") as u32 }).await.unwrap();
/// assert_eq!(ok.await, Ok("fine"));
/// assert!(matches!(boom.await, Err(TaskError::Exited(_)))); // and we live on
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct TaskSupervisor(DynamicSupervisorRef<TaskArgs>);

fn spec(max_children: Option<usize>) -> DynamicSupervisorSpec<TaskArgs> {
    let mut builder = DynamicSupervisorSpec::worker(|args: TaskArgs| {
        let body = match args {
            TaskArgs::Once(body) => body.lock().take(),
            TaskArgs::Again(make) => Some(make()),
        };
        async move {
            let body = body.ok_or_else(|| {
                StartError::Failed(ExitReason::error("a task body can start only once"))
            })?;
            let spawned = Spawn::new()
                .link()
                .label("task")
                .spawn(body)
                .map_err(|e| StartError::Failed(ExitReason::error(e)))?;
            Ok(spawned.pid)
        }
    })
    .restart(Restart::Temporary)
    // Elixir's `Task.Supervisor` (a `DynamicSupervisor`): at most 3
    // restarts of permanent or transient tasks in 5 s.
    .intensity(3);
    if let Some(max) = max_children {
        builder = builder.max_children(max);
    }
    builder.build().expect("the task supervisor spec is valid")
}

fn wrap(body: impl Future<Output = ExitReason> + Send + 'static) -> TaskArgs {
    TaskArgs::Once(Arc::new(Mutex::new(Some(Box::pin(body)))))
}

impl TaskSupervisor {
    /// Starts a task supervisor linked to the caller.
    pub async fn start_link() -> Result<TaskSupervisor, StartError> {
        TaskSupervisor::start_link_with(StartOptions::default(), None).await
    }

    /// Starts a task supervisor with a name or start timeout, and at most
    /// `max_children` tasks at once.
    pub async fn start_link_with(
        options: StartOptions,
        max_children: Option<usize>,
    ) -> Result<TaskSupervisor, StartError> {
        spec(max_children)
            .start_link_with(options)
            .await
            .map(TaskSupervisor)
    }

    /// A child spec running a task supervisor under a supervisor.
    pub fn child_spec(id: impl Into<Arc<str>>, max_children: Option<usize>) -> ChildSpecBuilder {
        spec(max_children).child_spec(id)
    }

    /// The task supervisor registered as `name`.
    pub fn from_name(name: impl Into<Arc<str>>) -> TaskSupervisor {
        TaskSupervisor(DynamicSupervisorRef::from_name(name))
    }

    /// Its pid.
    pub fn pid(&self) -> Option<Pid> {
        self.0.pid()
    }

    /// Runs `work` as a supervised task nobody awaits (Elixir's
    /// `Task.Supervisor.start_child/2`).
    pub fn start_child<F>(
        &self,
        work: F,
    ) -> impl Future<Output = Result<Pid, SupervisorError>> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let body = async move {
            work.await;
            ExitReason::Normal
        };
        start(self.0.clone(), wrap(body))
    }

    /// Runs the future `make` returns as a supervised task nobody awaits,
    /// restarted and shut down as `restart` and `shutdown` say (Elixir's
    /// `Task.Supervisor.start_child/3` with `:restart` and `:shutdown`): a
    /// permanent task is started again with a new future from `make`
    /// whenever it ends, a transient one when it crashes. Its shutdown
    /// timeout counts only for a task that traps exits.
    pub fn start_child_with<M, F>(
        &self,
        make: M,
        restart: Restart,
        shutdown: Shutdown,
    ) -> impl Future<Output = Result<Pid, SupervisorError>> + Send + 'static
    where
        M: Fn() -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let make: MakeBody = Arc::new(move || {
            let work = make();
            Box::pin(async move {
                work.await;
                ExitReason::Normal
            })
        });
        let args = match restart {
            Restart::Temporary => TaskArgs::Once(Arc::new(Mutex::new(Some(make())))),
            _ => TaskArgs::Again(make),
        };
        let sup = self.0.clone();
        async move {
            match sup.start_child_as(args, restart, shutdown).await? {
                Some(pid) => Ok(pid),
                None => unreachable!("a task start never ignores"),
            }
        }
    }

    /// Runs `work` as a supervised task linked to the caller, whose result
    /// the caller awaits (Elixir's `Task.Supervisor.async/2`): a crash takes
    /// a non-trapping caller down.
    #[doc(alias = "async")]
    pub fn async_link<F>(
        &self,
        work: F,
    ) -> impl Future<Output = Result<Task<F::Output>, SupervisorError>> + Send + 'static
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        run(self.0.clone(), work, true)
    }

    /// Runs `work` as a supervised task not linked to the caller (Elixir's
    /// `Task.Supervisor.async_nolink/2`): a crash only shows as
    /// [`TaskError::Exited`](super::TaskError::Exited) when awaited.
    pub fn async_nolink<F>(
        &self,
        work: F,
    ) -> impl Future<Output = Result<Task<F::Output>, SupervisorError>> + Send + 'static
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        run(self.0.clone(), work, false)
    }

    /// The running tasks.
    pub async fn children(&self) -> Result<Vec<Pid>, CallError> {
        Ok(self
            .0
            .which_children()
            .await?
            .into_iter()
            .filter_map(|c| c.status.pid())
            .collect())
    }

    /// Terminates a task.
    pub async fn terminate_child(&self, pid: Pid) -> Result<(), SupervisorError> {
        self.0.terminate_child(pid).await
    }

    /// Stops the supervisor and its tasks.
    pub async fn stop(&self) -> Result<(), CallError> {
        self.0.stop().await
    }
}

async fn start(
    sup: DynamicSupervisorRef<TaskArgs>,
    args: TaskArgs,
) -> Result<Pid, SupervisorError> {
    match sup.start_child(args).await? {
        Some(pid) => Ok(pid),
        None => unreachable!("a task start never ignores"),
    }
}

async fn run<F>(
    sup: DynamicSupervisorRef<TaskArgs>,
    work: F,
    linked: bool,
) -> Result<Task<F::Output>, SupervisorError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let pid = start(sup, wrap(task_body(self_pid(), work))).await?;
    let mref = monitor(pid);
    if linked {
        // A task already killed is reported by the monitor.
        let _ = link(pid);
    }
    Ok(Task::go(pid, mref, linked))
}
