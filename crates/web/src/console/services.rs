//! The console's shared state and its supervision tree, started on first use.

use std::sync::Arc;
use std::time::Duration;

use ember_otp::gen::StartOptions;
use ember_otp::supervisor::{ChildSpec, Flags, SupervisorSpec};
use ember_otp::task::TaskSupervisor;
use ember_runtime::{receive, Handle, Priority, Spawn};
use tokio::sync::{oneshot, watch, OnceCell};

use super::load::{self, LoadShared};
use super::math::MathBoard;
use super::sampler::{self, Snapshot};

/// One mounted console: its state, and its processes once started.
pub(crate) struct Console {
    /// Prefix of the names its processes register (unique per console).
    prefix: String,
    pub(crate) math: Arc<MathBoard>,
    pub(crate) load: Arc<LoadShared>,
    /// The sampler's latest figures (`None` until its first second).
    pub(crate) snapshot: watch::Sender<Option<Arc<Snapshot>>>,
    started: OnceCell<Result<(), String>>,
}

impl Console {
    pub(crate) fn new(instance: u64) -> Console {
        Console {
            prefix: format!("ember_console_{instance}"),
            math: Arc::new(MathBoard::new()),
            load: Arc::new(LoadShared::new()),
            snapshot: watch::channel(None).0,
            started: OnceCell::new(),
        }
    }

    /// The registered name of the console process `what`.
    pub(crate) fn name(&self, what: &str) -> String {
        format!("{}_{what}", self.prefix)
    }

    /// The math task supervisor.
    pub(crate) fn tasks(&self) -> TaskSupervisor {
        TaskSupervisor::from_name(self.name("math_tasks"))
    }

    /// Starts the console's processes unless they run already; call from a
    /// process.
    pub(crate) async fn ensure_started(self: &Arc<Self>) -> Result<(), String> {
        let console = self.clone();
        self.started
            .get_or_init(|| async move { console.start().await })
            .await
            .clone()
    }

    /// Spawns the anchor process (not linked to the caller, so the request
    /// that happens to come first can end or crash freely), which starts the
    /// supervision tree and then holds it.
    async fn start(self: Arc<Self>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        let console = self.clone();
        let spawned = Spawn::new().label("console").spawn(async move {
            let started = console
                .tree()
                .start_link_with(StartOptions::new().name(console.name("sup")))
                .await;
            let ok = started.is_ok();
            let _ = tx.send(started.map(|_| ()).map_err(|e| e.to_string()));
            if ok {
                // Hold the tree: this process only dies with it.
                loop {
                    receive::<std::convert::Infallible>().await;
                }
            }
        });
        if let Err(e) = spawned {
            return Err(format!("cannot start the console: {e}"));
        }
        rx.await
            .unwrap_or_else(|_| Err("the console process died while starting".into()))
    }

    fn tree(self: &Arc<Self>) -> SupervisorSpec {
        let tasks_name = self.name("math_tasks");
        let math_tasks = ChildSpec::supervisor("math_tasks", move || {
            let name = tasks_name.clone();
            async move {
                let tasks =
                    TaskSupervisor::start_link_with(StartOptions::new().name(name), None).await?;
                Ok(tasks
                    .pid()
                    .expect("a task supervisor just started has a pid"))
            }
        })
        .build()
        .expect("the math_tasks spec is valid");
        let console = self.clone();
        let sampler = ChildSpec::worker("sampler", move || {
            let console = console.clone();
            async move {
                Ok(Spawn::new()
                    .link()
                    .priority(Priority::High)
                    .label("console sampler")
                    .spawn(sampler::run(console, Handle::current()))
                    .expect("spawn_link from the supervisor")
                    .pid)
            }
        })
        .build()
        .expect("the sampler spec is valid");
        let load_shards = load::shards_child_spec(self.clone());
        SupervisorSpec::new(
            Flags::new().intensity(5).period(Duration::from_secs(10)),
            vec![math_tasks, sampler, load_shards],
        )
        .expect("the console tree is valid")
    }
}
