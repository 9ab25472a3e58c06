//! The console's shared state and its application: one supervision tree
//! (math pool, sampler, load supervisors and, for [`Demo`](super::Demo),
//! the HTTP endpoint) under an application master.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ember_otp::application::{self, Application, ApplicationError, Env};
use ember_otp::gen::{StartError, StartOptions};
use ember_otp::pool::Pool;
use ember_otp::supervisor::{ChildSpec, Flags, SupervisorSpec};
use ember_runtime::sync::watch;
use ember_runtime::{whereis, Handle, Pid, Priority, Spawn};

use super::load::{self, LoadShared};
use super::math::{self, MathBoard, MathJob};
use super::sampler::{self, Snapshot};
use super::{Mode, Options};

/// Restarts the root supervisor allows within [`PERIOD`] before it gives up
/// and the application stops (OTP's escalation).
pub(crate) const INTENSITY: u32 = 5;

/// The window of [`INTENSITY`].
pub(crate) const PERIOD: Duration = Duration::from_secs(10);

/// One mounted console: its state, and its application once started.
pub(crate) struct Console {
    /// The application's name, and the prefix of the names its processes
    /// register (unique per console).
    prefix: String,
    pub(crate) options: Options,
    /// Where the server listens (for the `Host` check).
    listening: Mutex<Vec<SocketAddr>>,
    pub(crate) math: Arc<MathBoard>,
    pub(crate) load: Arc<LoadShared>,
    /// The sampler's latest figures (`None` until its first second, and
    /// again as soon as it stops).
    pub(crate) snapshot: watch::Sender<Option<Arc<Snapshot>>>,
    /// Serialises starts of the application on demand ([`mount`] mode).
    ///
    /// [`mount`]: super::mount
    starting: tokio::sync::Mutex<()>,
    /// Whether a keeper restarts the application ([`Demo`](super::Demo)):
    /// then requests never start it themselves.
    kept: AtomicBool,
    /// The distribution node the Cluster page shows, once there is one.
    node: Mutex<Option<ember_dist::NodeView>>,
}

impl Console {
    pub(crate) fn new(instance: u64, options: Options) -> Console {
        Console {
            prefix: format!("ember_console_{instance}"),
            listening: Mutex::new(options.listening.clone()),
            node: Mutex::new(options.node.clone()),
            options,
            math: Arc::new(MathBoard::new()),
            load: Arc::new(LoadShared::new()),
            snapshot: watch::channel(None).0,
            starting: tokio::sync::Mutex::new(()),
            kept: AtomicBool::new(false),
        }
    }

    /// The application's name.
    pub(crate) fn app_name(&self) -> &str {
        &self.prefix
    }

    /// The registered name of the console process `what`.
    pub(crate) fn name(&self, what: &str) -> String {
        format!("{}_{what}", self.prefix)
    }

    fn listening_guard(&self) -> MutexGuard<'_, Vec<SocketAddr>> {
        self.listening.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The addresses the server listens on (empty: unknown).
    pub(crate) fn listening(&self) -> Vec<SocketAddr> {
        self.listening_guard().clone()
    }

    /// Adds an address the server listens on.
    pub(crate) fn listens_on(&self, addr: SocketAddr) {
        let mut listening = self.listening_guard();
        if !listening.contains(&addr) {
            listening.push(addr);
        }
    }

    /// The distribution node the Cluster page shows.
    pub(crate) fn node(&self) -> Option<ember_dist::NodeView> {
        self.node.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Shows `node`'s cluster from now on.
    pub(crate) fn set_node(&self, node: ember_dist::NodeView) {
        *self.node.lock().unwrap_or_else(|e| e.into_inner()) = Some(node);
    }

    /// From now on a keeper restarts the application.
    pub(crate) fn set_kept(&self) {
        self.kept.store(true, Ordering::SeqCst);
    }

    /// The math pool.
    pub(crate) fn pool(&self) -> Pool<MathJob> {
        Pool::from_name(self.name("math"))
    }

    /// The application master's registered name.
    pub(crate) fn master_name(&self) -> String {
        format!("application:{}", self.prefix)
    }

    /// Whether the application runs (its master and top supervisor live).
    pub(crate) fn running(&self) -> bool {
        whereis(&self.master_name()).is_some() && whereis(&self.name("root")).is_some()
    }

    /// Makes sure the application runs; call from a process. With a keeper
    /// ([`Demo`](super::Demo)) a stopped application is the keeper's to
    /// restart and this answers why not; otherwise the request that finds
    /// it stopped starts it.
    pub(crate) async fn ensure_started(self: &Arc<Self>) -> Result<(), String> {
        if self.running() {
            return Ok(());
        }
        if self.kept.load(Ordering::SeqCst) {
            return Err("the console is restarting; try again in a second".into());
        }
        // Released by another request's process: no tokio driver needed.
        let _one_at_a_time = ember_runtime::sync::woken_by_ember(self.starting.lock()).await;
        if self.running() {
            return Ok(());
        }
        self.start(None)
            .await
            .map_err(|e| format!("the console is restarting ({e}); try again in a second"))
    }

    /// Starts the application, with `endpoint` as the tree's last child.
    /// The master is not linked to the caller.
    pub(crate) async fn start(
        self: &Arc<Self>,
        endpoint: Option<ChildSpec>,
    ) -> Result<(), ApplicationError> {
        let app = ConsoleApp {
            console: self.clone(),
            endpoint,
        };
        application::start(&self.prefix, app, Env::new())
            .await
            .map(|_| ())
    }

    /// The tree: math pool, sampler, load supervisors, then the endpoint.
    fn tree(self: &Arc<Self>, endpoint: Option<ChildSpec>) -> SupervisorSpec {
        let flags = Flags::new().intensity(INTENSITY).period(PERIOD);
        if self.options.mode == Mode::Off {
            // The console is off: the node is its endpoint alone.
            let children = endpoint.into_iter().collect();
            return SupervisorSpec::new(flags, children).expect("the node's tree is valid");
        }
        let slots = Handle::current().runtime_info().schedulers.len().max(2);
        let math = math::pool_child_spec(self, slots);
        let console = self.clone();
        let sampler_name = self.name("sampler");
        let sampler = ChildSpec::worker("sampler", move || {
            let console = console.clone();
            let name = sampler_name.clone();
            async move {
                let pid = Spawn::new()
                    .link()
                    .priority(Priority::High)
                    .label("console sampler")
                    .spawn(sampler::run(console, Handle::current()))
                    .map_err(|e| StartError::Failed(ember_runtime::ExitReason::error(e)))?
                    .pid;
                let _ = ember_runtime::register(&name, pid);
                Ok(pid)
            }
        })
        .build()
        .expect("the sampler spec is valid");
        let load_shards = load::shards_child_spec(self.clone());
        let mut children = vec![math, sampler, load_shards];
        children.extend(endpoint);
        SupervisorSpec::new(flags, children).expect("the console tree is valid")
    }

    /// Why the console refuses to kill `pid`, if it is a process the node
    /// cannot live without.
    pub(crate) fn protected(&self, pid: Pid) -> Option<&'static str> {
        let named = |what: &str| whereis(&self.name(what)) == Some(pid);
        if named("keeper") {
            Some("it is the console's keeper, which restarts the console's application")
        } else if whereis(&self.master_name()) == Some(pid) {
            Some("it is the console application's master")
        } else if named("root") {
            Some("it is the top supervisor of the console's application")
        } else if named("endpoint") {
            Some("it is the HTTP endpoint (acceptor) serving this console")
        } else if Handle::current()
            .process_info(pid)
            .is_some_and(|info| info.spawned_as == "block_on")
        {
            Some("it is the binary's root process (block_on)")
        } else {
            None
        }
    }
}

/// The console's application callback module.
struct ConsoleApp {
    console: Arc<Console>,
    endpoint: Option<ChildSpec>,
}

impl Application for ConsoleApp {
    async fn start(&self, _env: &Env) -> Result<Pid, StartError> {
        // Figures of a previous run are not this run's.
        self.console.snapshot.send_replace(None);
        self.console
            .tree(self.endpoint.clone())
            .start_link_with(StartOptions::new().name(self.console.name("root")))
            .await
            .map(Pid::from)
    }
}
