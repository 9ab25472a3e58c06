//! Child specs and supervisor flags, with OTP's defaults in one place and
//! validation when they are built (supervisor.erl's `check_childspec` and
//! `check_flags`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ember_runtime::Pid;

use crate::gen::StartError;

/// OTP's `?default_flags`: strategy one_for_one…
pub const DEFAULT_STRATEGY: Strategy = Strategy::OneForOne;
/// …at most 1 restart…
pub const DEFAULT_INTENSITY: u32 = 1;
/// …within 5 seconds.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(5);
/// A worker's default shutdown: 5000 ms to exit after `shutdown`, then `kill`.
pub const DEFAULT_WORKER_SHUTDOWN: Shutdown = Shutdown::Timeout(Duration::from_millis(5000));
/// A supervisor child's default shutdown: as long as its own children take.
pub const DEFAULT_SUPERVISOR_SHUTDOWN: Shutdown = Shutdown::Infinity;

/// A boxed future that starts a child.
pub(crate) type StartFuture = Pin<Box<dyn Future<Output = Result<Pid, StartError>> + Send>>;

/// The start function of a child (OTP's `{M, F, A}`), called in the
/// supervisor process each time the child is (re)started.
pub(crate) type StartFn = Arc<dyn Fn() -> StartFuture + Send + Sync>;

/// Which children a supervisor restarts when one terminates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// Only the child that terminated.
    OneForOne,
    /// All children: the others are terminated (in reverse start order)
    /// and all are started again (in start order).
    OneForAll,
    /// The child that terminated and every child started after it.
    RestForOne,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        })
    }
}

/// When a terminated child is restarted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Restart {
    /// Always (the default).
    #[default]
    Permanent,
    /// Only after an abnormal exit: not after `normal`, `shutdown` or
    /// `{shutdown, _}`.
    Transient,
    /// Never; its spec is forgotten once it terminates.
    Temporary,
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Restart::Permanent => "permanent",
            Restart::Transient => "transient",
            Restart::Temporary => "temporary",
        })
    }
}

/// How a supervisor terminates a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Shutdown {
    /// `brutal_kill`: an untrappable `kill` at once.
    BrutalKill,
    /// An exit signal `shutdown`, then `kill` if the child has not exited
    /// within this time. Must be greater than zero.
    Timeout(Duration),
    /// An exit signal `shutdown`, and wait as long as it takes (the default
    /// for supervisors).
    Infinity,
}

impl fmt::Display for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shutdown::BrutalKill => f.write_str("brutal_kill"),
            Shutdown::Timeout(t) => write!(f, "{}", t.as_millis()),
            Shutdown::Infinity => f.write_str("infinity"),
        }
    }
}

/// Whether a child is a worker or a supervisor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChildType {
    /// A worker (the default).
    #[default]
    Worker,
    /// A supervisor: its default shutdown is `infinity`.
    Supervisor,
}

impl fmt::Display for ChildType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChildType::Worker => "worker",
            ChildType::Supervisor => "supervisor",
        })
    }
}

/// An invalid spec or flag, rejected when built. The message names the field.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecError {
    /// `id` is empty (OTP's `missing_id`).
    MissingId,
    /// `shutdown` is a zero timeout (OTP's `invalid_shutdown`).
    InvalidShutdown {
        /// The child.
        id: Arc<str>,
    },
    /// Two children share an id (OTP's `duplicate_child_name`).
    DuplicateChildName(Arc<str>),
    /// `period` is zero (OTP's `invalid_period`).
    InvalidPeriod,
    /// `max_children` is zero.
    InvalidMaxChildren,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::MissingId => f.write_str("invalid child spec: id: must not be empty"),
            SpecError::InvalidShutdown { id } => write!(
                f,
                "invalid child spec {id:?}: shutdown: a timeout must be greater than zero"
            ),
            SpecError::DuplicateChildName(id) => {
                write!(f, "invalid child specs: id: {id:?} is used twice")
            }
            SpecError::InvalidPeriod => {
                f.write_str("invalid supervisor flags: period: must be greater than zero")
            }
            SpecError::InvalidMaxChildren => {
                f.write_str("invalid supervisor flags: max_children: must be greater than zero")
            }
        }
    }
}

impl std::error::Error for SpecError {}

/// A supervisor's flags: strategy and restart intensity. The default is
/// OTP's: one_for_one, at most 1 restart in 5 seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Flags {
    pub(crate) strategy: Strategy,
    pub(crate) intensity: u32,
    pub(crate) period: Duration,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            strategy: DEFAULT_STRATEGY,
            intensity: DEFAULT_INTENSITY,
            period: DEFAULT_PERIOD,
        }
    }
}

impl Flags {
    /// OTP's defaults.
    pub fn new() -> Flags {
        Flags::default()
    }

    /// The restart strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Flags {
        self.strategy = strategy;
        self
    }

    /// At most `intensity` restarts…
    pub fn intensity(mut self, intensity: u32) -> Flags {
        self.intensity = intensity;
        self
    }

    /// …within `period`; one more and the supervisor terminates all its
    /// children and exits with `shutdown`, escalating to its own supervisor.
    pub fn period(mut self, period: Duration) -> Flags {
        self.period = period;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), SpecError> {
        if self.period.is_zero() {
            return Err(SpecError::InvalidPeriod);
        }
        Ok(())
    }
}

/// How to start and supervise one child (OTP's `child_spec()`).
///
/// Built with [`ChildSpec::worker`] or [`ChildSpec::supervisor`], adjusted,
/// then validated by [`ChildSpecBuilder::build`]:
///
/// ```
/// use std::time::Duration;
/// use ember_otp::supervisor::{ChildSpec, Restart, Shutdown};
///
/// let spec = ChildSpec::worker("ticker", || async {
///     Ok(ember_runtime::spawn_link(async { ember_runtime::receive::<()>().await }))
/// })
/// .restart(Restart::Transient)
/// .shutdown(Shutdown::Timeout(Duration::from_millis(100)))
/// .build()
/// .unwrap();
/// assert_eq!(&*spec.id(), "ticker");
///
/// let error = ChildSpec::worker("", || async { Ok(ember_runtime::Pid::OUTSIDE) })
///     .build()
///     .unwrap_err();
/// assert_eq!(error.to_string(), "invalid child spec: id: must not be empty");
/// ```
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) id: Arc<str>,
    pub(crate) start: StartFn,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Shutdown,
    pub(crate) child_type: ChildType,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("type", &self.child_type)
            .finish_non_exhaustive()
    }
}

/// Wraps a start closure into a [`StartFn`].
pub(crate) fn start_fn<F, Fut, P>(start: F) -> StartFn
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<P, StartError>> + Send + 'static,
    P: Into<Pid>,
{
    Arc::new(move || {
        let started = start();
        Box::pin(async move { started.await.map(Into::into) })
    })
}

impl ChildSpec {
    /// A worker child: permanent, shutdown 5000 ms. `start` is called in
    /// the supervisor each time the child is (re)started and must start a
    /// process linked to the caller (e.g. [`gen_server::start_link`],
    /// [`spawn_link`](ember_runtime::spawn_link)) and return its pid or
    /// handle.
    ///
    /// [`gen_server::start_link`]: crate::gen_server::start_link
    pub fn worker<F, Fut, P>(id: impl Into<Arc<str>>, start: F) -> ChildSpecBuilder
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<P, StartError>> + Send + 'static,
        P: Into<Pid>,
    {
        ChildSpecBuilder(ChildSpec {
            id: id.into(),
            start: start_fn(start),
            restart: Restart::default(),
            shutdown: DEFAULT_WORKER_SHUTDOWN,
            child_type: ChildType::Worker,
        })
    }

    /// A supervisor child: permanent, shutdown infinity.
    pub fn supervisor<F, Fut, P>(id: impl Into<Arc<str>>, start: F) -> ChildSpecBuilder
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<P, StartError>> + Send + 'static,
        P: Into<Pid>,
    {
        ChildSpecBuilder(ChildSpec {
            id: id.into(),
            start: start_fn(start),
            restart: Restart::default(),
            shutdown: DEFAULT_SUPERVISOR_SHUTDOWN,
            child_type: ChildType::Supervisor,
        })
    }

    /// The child's id, unique within its supervisor.
    pub fn id(&self) -> Arc<str> {
        self.id.clone()
    }

    /// Its restart type.
    pub fn restart_type(&self) -> Restart {
        self.restart
    }

    /// Its shutdown.
    pub fn shutdown_type(&self) -> Shutdown {
        self.shutdown
    }

    /// Worker or supervisor.
    pub fn child_type(&self) -> ChildType {
        self.child_type
    }

    pub(crate) fn validate(&self) -> Result<(), SpecError> {
        if self.id.is_empty() {
            return Err(SpecError::MissingId);
        }
        if self.shutdown == Shutdown::Timeout(Duration::ZERO) {
            return Err(SpecError::InvalidShutdown {
                id: self.id.clone(),
            });
        }
        Ok(())
    }
}

/// A [`ChildSpec`] being built; [`build`](ChildSpecBuilder::build) validates it.
#[must_use = "a child spec is only checked and usable once built"]
pub struct ChildSpecBuilder(ChildSpec);

impl ChildSpecBuilder {
    /// The restart type (default permanent).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.0.restart = restart;
        self
    }

    /// The shutdown (default 5000 ms for workers, infinity for supervisors).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.0.shutdown = shutdown;
        self
    }

    /// Checks the spec: the id must not be empty and a shutdown timeout must
    /// be greater than zero.
    pub fn build(self) -> Result<ChildSpec, SpecError> {
        self.0.validate()?;
        Ok(self.0)
    }
}

/// Checks a list of child specs: each valid, ids unique (OTP's
/// `supervisor:check_childspecs/1`).
pub fn check_child_specs(children: &[ChildSpec]) -> Result<(), SpecError> {
    let mut seen = std::collections::HashSet::new();
    for child in children {
        child.validate()?;
        if !seen.insert(child.id.clone()) {
            return Err(SpecError::DuplicateChildName(child.id.clone()));
        }
    }
    Ok(())
}
