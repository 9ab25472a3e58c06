//! Applications: OTP's `application` behaviour. An application is a named
//! top-level supervision tree with its configuration (its environment),
//! started and stopped as a unit.
//!
//! Starting an application spawns its *master* (OTP's application master),
//! registered as `application:<name>`, which holds the environment, calls
//! [`Application::start`] to start the top supervisor (linked to the
//! master), and watches it. Stopping the application calls `prep_stop`,
//! terminates the top supervisor — which terminates its children in
//! reverse start order, recursively — and then calls `stop`. If the top
//! supervisor dies on its own (its restart intensity was exceeded), the
//! application stops and the exit is reported; Ember applications are all
//! `temporary` in OTP's terms (nothing else is stopped with them).
//!
//! ```
//! use ember_otp::application::{self, Env};
//! use ember_otp::supervisor::{ChildSpec, Flags, SupervisorSpec};
//! use ember_runtime::{receive, spawn_link};
//!
//! # let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
//! # rt.block_on(async {
//! let env = Env::new().set("port", 8080u16);
//! let shop = application::start_tree("shop", env, |env| {
//!     let port: u16 = env.get("port").unwrap();
//!     let listener = ChildSpec::worker("listener", move || async move {
//!         Ok(spawn_link(async move { let _ = port; receive::<()>().await }))
//!     })
//!     .build()
//!     .unwrap();
//!     SupervisorSpec::new(Flags::new(), vec![listener]).unwrap()
//! })
//! .await
//! .unwrap();
//! assert_eq!(application::get_env::<u16>("shop", "port").await, Some(8080));
//! assert_eq!(application::which_applications(), vec!["shop".into()]);
//! shop.stop().await.unwrap();
//! assert!(application::which_applications().is_empty());
//! # });
//! ```

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use ember_runtime::{registered, trap_exit, whereis, Envelope, Exit, ExitReason, Pid};

use crate::gen::{self, CallError, ReplyTo, StartError, StartOptions};
use crate::gen_server::{self, CallReturn, GenServer, Init, Return};
use crate::supervisor::{self, Restart, Shutdown, SupervisorSpec};

/// The prefix of an application master's registered name.
const MASTER_PREFIX: &str = "application:";

fn master_name(app: &str) -> Arc<str> {
    format!("{MASTER_PREFIX}{app}").into()
}

/// An application's environment: its configuration, key → value of any
/// type (OTP's `application:get_env/2`).
#[derive(Clone, Default)]
pub struct Env(HashMap<Arc<str>, Arc<dyn Any + Send + Sync>>);

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Env {
    /// An empty environment.
    pub fn new() -> Env {
        Env::default()
    }

    /// Sets `key` to `value`.
    pub fn set<T: Any + Send + Sync>(mut self, key: impl Into<Arc<str>>, value: T) -> Env {
        self.0.insert(key.into(), Arc::new(value));
        self
    }

    /// The value of `key`, if it is set and is a `T`.
    pub fn get<T: Any + Clone>(&self, key: &str) -> Option<T> {
        self.0.get(key)?.downcast_ref::<T>().cloned()
    }
}

/// An application callback module (OTP's `application` behaviour).
pub trait Application: Send + Sync + 'static {
    /// Starts the application's top supervisor, linked to the caller (the
    /// application master), and returns its pid (OTP's `start/2`).
    fn start(&self, env: &Env) -> impl Future<Output = Result<Pid, StartError>> + Send;

    /// Called before the top supervisor is terminated (OTP's `prep_stop/1`).
    fn prep_stop(&self, env: &Env) -> impl Future<Output = ()> + Send {
        let _ = env;
        async {}
    }

    /// Called after the tree has stopped (OTP's `stop/1`).
    fn stop(&self, env: &Env) -> impl Future<Output = ()> + Send {
        let _ = env;
        async {}
    }
}

/// Why an application operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApplicationError {
    /// An application of that name runs (OTP's `already_started`).
    AlreadyStarted(Arc<str>),
    /// No application of that name runs (OTP's `not_started`).
    NotStarted(Arc<str>),
    /// The application's start failed.
    Start(StartError),
    /// Its master could not be called.
    Call(CallError),
}

impl fmt::Display for ApplicationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplicationError::AlreadyStarted(app) => write!(f, "already_started: {app}"),
            ApplicationError::NotStarted(app) => write!(f, "not_started: {app}"),
            ApplicationError::Start(e) => write!(f, "the application did not start: {e}"),
            ApplicationError::Call(e) => write!(f, "cannot reach the application: {e}"),
        }
    }
}

impl std::error::Error for ApplicationError {}

/// A handle on a running application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplicationRef {
    name: Arc<str>,
}

impl ApplicationRef {
    /// The application's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its top supervisor, if it runs.
    pub async fn top_supervisor(&self) -> Option<Pid> {
        let master = whereis(&master_name(&self.name))?;
        match gen::call::<Request, Response>(master, Request::Top, gen::INFINITY).await {
            Ok(Response::Top(pid)) => Some(pid),
            _ => None,
        }
    }

    /// Stops the application; see [`stop`].
    pub async fn stop(&self) -> Result<(), ApplicationError> {
        stop(&self.name).await
    }
}

/// Starts application `name` running module `app` with environment `env`
/// (OTP's `application:start/1`). Returns once its whole tree has started.
pub async fn start<M: Application>(
    name: &str,
    app: M,
    env: Env,
) -> Result<ApplicationRef, ApplicationError> {
    let name: Arc<str> = name.into();
    let options = StartOptions::new().name(master_name(&name));
    match gen_server::start_with::<Master<M>>((name.clone(), app, env), options).await {
        Ok(_) => Ok(ApplicationRef { name }),
        Err(StartError::AlreadyStarted(_)) => Err(ApplicationError::AlreadyStarted(name)),
        Err(e) => Err(ApplicationError::Start(e)),
    }
}

/// An application whose tree is a [`SupervisorSpec`] built from its
/// environment.
struct Tree<F>(F);

impl<F> Application for Tree<F>
where
    F: Fn(&Env) -> SupervisorSpec + Send + Sync + 'static,
{
    async fn start(&self, env: &Env) -> Result<Pid, StartError> {
        (self.0)(env).start_link().await.map(Pid::from)
    }
}

/// Starts application `name` whose top supervisor is `tree(env)`.
pub async fn start_tree<F>(
    name: &str,
    env: Env,
    tree: F,
) -> Result<ApplicationRef, ApplicationError>
where
    F: Fn(&Env) -> SupervisorSpec + Send + Sync + 'static,
{
    start(name, Tree(tree), env).await
}

/// Stops application `name` (OTP's `application:stop/1`): `prep_stop`, the
/// tree stopped in reverse start order, then `stop`. Waits until done.
pub async fn stop(name: &str) -> Result<(), ApplicationError> {
    let Some(master) = whereis(&master_name(name)) else {
        return Err(ApplicationError::NotStarted(name.into()));
    };
    match gen_server::stop_process(master, ExitReason::Normal, gen::INFINITY).await {
        Ok(()) => Ok(()),
        Err(CallError::NoProc) => Err(ApplicationError::NotStarted(name.into())),
        Err(e) => Err(ApplicationError::Call(e)),
    }
}

/// The value of `key` in application `app`'s environment, if it runs, the
/// key is set and the value is a `T` (OTP's `application:get_env/2`).
pub async fn get_env<T: Any + Clone>(app: &str, key: &str) -> Option<T> {
    let master = whereis(&master_name(app))?;
    match gen::call::<Request, Response>(master, Request::GetEnv(key.into()), gen::INFINITY).await {
        Ok(Response::Value(Some(value))) => value.downcast_ref::<T>().cloned(),
        _ => None,
    }
}

/// Sets `key` in a running application's environment (OTP's
/// `application:set_env/3`).
pub async fn set_env<T: Any + Send + Sync>(
    app: &str,
    key: &str,
    value: T,
) -> Result<(), ApplicationError> {
    let master =
        whereis(&master_name(app)).ok_or_else(|| ApplicationError::NotStarted(app.into()))?;
    let request = Request::SetEnv(key.into(), Arc::new(value));
    gen::call::<Request, Response>(master, request, gen::INFINITY)
        .await
        .map(|_| ())
        .map_err(ApplicationError::Call)
}

/// The running applications (OTP's `application:which_applications/0`).
pub fn which_applications() -> Vec<Arc<str>> {
    let mut apps: Vec<Arc<str>> = registered()
        .into_iter()
        .filter_map(|(name, _)| name.strip_prefix(MASTER_PREFIX).map(Arc::from))
        .collect();
    apps.sort();
    apps
}

pub(crate) enum Request {
    GetEnv(Arc<str>),
    SetEnv(Arc<str>, Arc<dyn Any + Send + Sync>),
    Top,
}

pub(crate) enum Response {
    Value(Option<Arc<dyn Any + Send + Sync>>),
    Done,
    Top(Pid),
}

/// The application master: owns the environment and the top supervisor.
pub(crate) struct Master<M> {
    name: Arc<str>,
    app: M,
    env: Env,
    top: Option<Pid>,
}

impl<M: Application> GenServer for Master<M> {
    type Args = (Arc<str>, M, Env);
    type Call = Request;
    type Reply = Response;
    type Cast = ();
    type Continue = ();

    async fn init((name, app, env): Self::Args) -> Init<Self> {
        trap_exit(true);
        match app.start(&env).await {
            Ok(top) => {
                tracing::info!(
                    target: "ember_otp::application",
                    application = &*name,
                    "application started"
                );
                Init::Ok(Master {
                    name,
                    app,
                    env,
                    top: Some(top),
                })
            }
            Err(e) => Init::Stop(e.reason()),
        }
    }

    async fn handle_call(&mut self, request: Request, _: &ReplyTo<Response>) -> CallReturn<Self> {
        CallReturn::Reply(match request {
            Request::GetEnv(key) => Response::Value(self.env.0.get(&key).cloned()),
            Request::SetEnv(key, value) => {
                self.env.0.insert(key, value);
                Response::Done
            }
            Request::Top => match self.top {
                Some(top) => Response::Top(top),
                None => Response::Done,
            },
        })
    }

    async fn handle_info(&mut self, message: Envelope) -> Return<Self> {
        if let Ok(Exit { from, reason }) = message.downcast::<Exit>() {
            if Some(from) == self.top {
                self.top = None;
                tracing::error!(
                    target: "ember_otp::application",
                    application = &*self.name,
                    reason = %reason,
                    "application exited (type: temporary)"
                );
                return Return::Stop(reason);
            }
        }
        Return::NoReply
    }

    async fn terminate(&mut self, _reason: &ExitReason) {
        self.app.prep_stop(&self.env).await;
        if let Some(top) = self.top.take() {
            let _ = supervisor::shutdown(top, Shutdown::Infinity, Restart::Temporary).await;
        }
        self.app.stop(&self.env).await;
    }
}
