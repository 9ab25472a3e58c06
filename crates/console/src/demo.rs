//! The whole demo node as one application: the HTTP endpoint (benchmark
//! endpoints and console) and the console's processes under one top
//! supervisor, and a keeper that starts the application again whenever it
//! stops.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ember_otp::application;
use ember_otp::gen::StartError;
use ember_otp::supervisor::{ChildSpec, Restart, Shutdown};
use ember_runtime::sync::oneshot;
use ember_runtime::{self as ember, Down, ExitReason, Pid, Spawn};

use super::{mount_console, new_console, Console, Mode, Options};
use ember_web::{Config, Router, Server};

/// How long a restarted endpoint retries binding its address while the
/// previous listener is still being closed.
const REBIND_FOR: Duration = Duration::from_secs(3);

/// The longest pause between two attempts to restart the application.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The demo node the `ember` binary runs: `routes` (e.g. the benchmark
/// endpoints) and the console, served by an HTTP endpoint that lives in the
/// console's application, under its top supervisor:
///
/// * a killed acceptor is restarted by that supervisor, on the same
///   address;
/// * when the supervisor gives up (more than 5 restarts in 10 s) the
///   application stops, as in OTP, and the keeper process starts it again
///   (with a backoff up to 2 s), the way `heart` restarts a node;
/// * the processes the node cannot live without are protected from the
///   console's kill unless [`Options::allow_kill_system`] is set.
///
/// ```no_run
/// use ember_console::{endpoints, Demo, Options};
/// use ember_web::{Config, Router};
///
/// let rt = ember_runtime::Runtime::new().unwrap();
/// rt.block_on(async {
///     let routes = endpoints::routes(Router::new());
///     let demo = Demo::start("127.0.0.1:4000", routes, Config::default(), Options::default())
///         .await
///         .unwrap();
///     println!("listening on {}", demo.local_addr());
///     demo.shutdown().await;
/// });
/// ```
pub struct Demo {
    local_addr: SocketAddr,
    keeper: Pid,
    application: String,
    console: Arc<Console>,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo")
            .field("local_addr", &self.local_addr)
            .field("keeper", &self.keeper)
            .field("application", &self.application)
            .finish_non_exhaustive()
    }
}

/// The endpoint's state across restarts.
struct Endpoint {
    /// The address bound first (a port 0 becomes the port chosen), which
    /// every restart binds again.
    addr: Mutex<SocketAddr>,
    /// The running server, for a graceful shutdown.
    server: Mutex<Option<Server>>,
}

impl Endpoint {
    fn addr(&self) -> MutexGuard<'_, SocketAddr> {
        self.addr.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn server(&self) -> MutexGuard<'_, Option<Server>> {
        self.server.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the keeper is asked.
enum KeeperRequest {
    Stop(oneshot::Sender<()>),
}

impl Demo {
    /// Starts the application (console processes, then the endpoint on
    /// `listen`) and its keeper; returns once the endpoint listens. Call
    /// from a process.
    ///
    /// # Errors
    ///
    /// If `listen` does not resolve or cannot be bound, or the application
    /// does not start (the error says why).
    pub async fn start(
        listen: impl ToSocketAddrs,
        routes: Router,
        config: Config,
        options: Options,
    ) -> io::Result<Demo> {
        let requested = listen.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on")
        })?;
        let mode = options.mode;
        let console = new_console(options);
        let router = if mode == Mode::Off {
            routes
        } else {
            mount_console(routes, &console)
        };
        let endpoint = Arc::new(Endpoint {
            addr: Mutex::new(requested),
            server: Mutex::new(None),
        });
        let spec = endpoint_spec(&console, &endpoint, router, config);
        console.set_kept();
        console
            .start(Some(spec.clone()))
            .await
            .map_err(|e| io::Error::other(format!("cannot start the node: {e}")))?;
        let local_addr = *endpoint.addr();
        let keeper = Spawn::new()
            .label("console keeper")
            .trap_exit(true)
            .spawn(keep(console.clone(), endpoint, spec))
            .map_err(io::Error::other)?
            .pid;
        let _ = ember::register(&console.name("keeper"), keeper);
        Ok(Demo {
            local_addr,
            keeper,
            application: console.app_name().to_string(),
            console,
        })
    }

    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The application's name (its master is registered as
    /// `application:<name>`, its processes as `<name>_<what>`).
    pub fn application(&self) -> &str {
        &self.application
    }

    /// Shows `node`'s cluster on the console's Cluster page (`/cluster`,
    /// `/api/cluster`): its connections with their traffic, and Top and
    /// info of the processes of connected nodes.
    pub fn set_node(&self, node: ember_dist::NodeView) {
        self.console.set_node(node);
    }

    /// Registers in `functions` what other nodes' consoles ask this one:
    /// `ember_console:load/0`, this node's Load figures for their Load page
    /// (`GET /api/load?node=NAME`), and `ember_console:top/0` and
    /// `process/1` for their Top page (`GET /api/top?node=NAME`). Pass the same `functions` to
    /// `ember_dist::Node::start_in_runtime_with`. With [`Mode::Off`] it
    /// registers nothing (other consoles then show what standard Erlang
    /// calls tell, if the node answers them).
    pub fn register_functions(&self, functions: &mut ember_dist::Functions) {
        if self.console.options.mode != Mode::Off {
            super::remote_load::register(&self.console, functions);
            super::remote_top::register(&self.console, functions);
        }
    }

    /// The keeper process.
    pub fn keeper(&self) -> Pid {
        self.keeper
    }

    /// Stops gracefully: the endpoint drains in-flight requests (see
    /// [`Server::shutdown`]), then the application stops and the keeper
    /// ends. Returns when done.
    pub async fn shutdown(self) {
        let (done, finished) = oneshot::channel();
        ember::send(self.keeper, KeeperRequest::Stop(done));
        // An error means the keeper is gone (killed): stop the rest here.
        if finished.await.is_err() {
            let _ = application::stop(&self.application).await;
        }
    }
}

/// The endpoint's child spec: transient (a graceful shutdown is not
/// restarted, a killed acceptor is), binding the same address every time.
fn endpoint_spec(
    console: &Arc<Console>,
    endpoint: &Arc<Endpoint>,
    router: Router,
    config: Config,
) -> ChildSpec {
    let shutdown = Shutdown::Timeout(config.shutdown_timeout + Duration::from_secs(1));
    let console = console.clone();
    let endpoint = endpoint.clone();
    ChildSpec::worker("endpoint", move || {
        let console = console.clone();
        let endpoint = endpoint.clone();
        let router = router.clone();
        let config = config.clone();
        async move {
            let addr = *endpoint.addr();
            let deadline = std::time::Instant::now() + REBIND_FOR;
            let server = loop {
                match Server::bind(addr, router.clone(), config.clone()) {
                    Ok(server) => break server,
                    Err(e)
                        if e.kind() == io::ErrorKind::AddrInUse
                            && std::time::Instant::now() < deadline =>
                    {
                        // The previous acceptor's listener is still closing.
                        ember::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => {
                        return Err(StartError::Failed(ExitReason::error(format!(
                            "cannot listen on {addr}: {e}"
                        ))))
                    }
                }
            };
            let pid = server.pid();
            *endpoint.addr() = server.local_addr();
            console.listens_on(server.local_addr());
            let _ = ember::register(&console.name("endpoint"), pid);
            *endpoint.server() = Some(server);
            Ok(pid)
        }
    })
    .restart(Restart::Transient)
    .shutdown(shutdown)
    .build()
    .expect("the endpoint spec is valid")
}

/// The keeper: watches the application master and starts the application
/// again when it stops, until asked to stop everything.
async fn keep(console: Arc<Console>, endpoint: Arc<Endpoint>, spec: ChildSpec) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let watched = ember::whereis(&console.master_name()).map(ember::monitor);
        if watched.is_some() {
            let is_ours = |e: &ember::Envelope| e.is::<Down>() || e.is::<KeeperRequest>();
            let envelope = ember::receive_any(is_ours).await;
            match envelope.downcast::<KeeperRequest>() {
                Ok(KeeperRequest::Stop(done)) => {
                    let server = endpoint.server().take();
                    if let Some(server) = server {
                        server.shutdown().await;
                    }
                    let _ = application::stop(console.app_name()).await;
                    let _ = done.send(());
                    return;
                }
                Err(envelope) => {
                    if let Ok(down) = envelope.downcast::<Down>() {
                        tracing::error!(
                            "ember: the console application stopped ({}); starting it again",
                            down.reason
                        );
                    }
                }
            }
        }
        // Stopped: start it again, with a growing pause while it fails
        // (names of the old tree still registered, the address still held).
        loop {
            let stop = ember::receive::<KeeperRequest>().timeout(backoff).await;
            if let Some(KeeperRequest::Stop(done)) = stop {
                let _ = application::stop(console.app_name()).await;
                let _ = done.send(());
                return;
            }
            match console.start(Some(spec.clone())).await {
                Ok(()) => {
                    tracing::info!("ember: the console application runs again");
                    backoff = Duration::from_millis(100);
                    break;
                }
                Err(e) => {
                    tracing::warn!("ember: cannot start the console application yet: {e}");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
