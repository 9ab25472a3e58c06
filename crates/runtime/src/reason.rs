//! Exit reasons, mirroring OTP's.

use std::fmt;
use std::sync::Arc;

/// Why a process exited, or the reason carried by an exit signal.
///
/// The variants mirror the reasons OTP code relies on. Only [`ExitReason::Normal`]
/// leaves linked processes alone; every other reason kills a linked process that
/// does not trap exits. See `docs/semantics.md`, "Exit reasons".
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExitReason {
    /// `normal`: the process finished; links do not propagate it.
    Normal,
    /// `shutdown`: ordered to stop by its supervisor.
    Shutdown,
    /// `{shutdown, Term}`: a shutdown with extra information.
    ShutdownWith(Arc<str>),
    /// `kill`: sent with [`exit`](crate::exit) it is untrappable and becomes `killed`;
    /// received through a link it behaves like any other abnormal reason.
    Kill,
    /// `killed`: the process was killed by an untrappable `kill` signal.
    Killed,
    /// `noproc`: the process did not exist.
    NoProc,
    /// `noconnection`: the node of the process became unreachable.
    NoConnection,
    /// The process panicked; carries the panic message.
    Panic(Arc<str>),
    /// The process failed with an error; carries its description.
    Error(Arc<str>),
}

impl ExitReason {
    /// Builds an [`ExitReason::Error`] from anything printable.
    pub fn error(description: impl fmt::Display) -> ExitReason {
        ExitReason::Error(description.to_string().into())
    }

    /// Whether this is exactly `normal`, the one reason links do not propagate.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal)
    }

    /// Whether this is `normal`, `shutdown` or `{shutdown, _}`: the reasons OTP
    /// treats as an orderly stop (a transient child is not restarted for them).
    pub fn is_orderly(&self) -> bool {
        matches!(
            self,
            ExitReason::Normal | ExitReason::Shutdown | ExitReason::ShutdownWith(_)
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::ShutdownWith(info) => write!(f, "{{shutdown,{info}}}"),
            ExitReason::Kill => f.write_str("kill"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::NoProc => f.write_str("noproc"),
            ExitReason::NoConnection => f.write_str("noconnection"),
            ExitReason::Panic(message) => write!(f, "{{panic,{message:?}}}"),
            ExitReason::Error(description) => write!(f, "{{error,{description:?}}}"),
        }
    }
}

impl fmt::Debug for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a process body may return; converted into its exit reason.
///
/// `()` is a normal exit, an [`ExitReason`] is used as is, and `Err(e)` of a
/// `Result` becomes [`ExitReason::Error`] with `e`'s message.
pub trait IntoExitReason {
    /// Converts the value into the exit reason of the process that returned it.
    fn into_exit_reason(self) -> ExitReason;
}

impl IntoExitReason for () {
    fn into_exit_reason(self) -> ExitReason {
        ExitReason::Normal
    }
}

impl IntoExitReason for ExitReason {
    fn into_exit_reason(self) -> ExitReason {
        self
    }
}

impl<E: fmt::Display> IntoExitReason for Result<(), E> {
    fn into_exit_reason(self) -> ExitReason {
        match self {
            Ok(()) => ExitReason::Normal,
            Err(e) => ExitReason::error(e),
        }
    }
}

impl<E: fmt::Display> IntoExitReason for Result<ExitReason, E> {
    fn into_exit_reason(self) -> ExitReason {
        match self {
            Ok(reason) => reason,
            Err(e) => ExitReason::error(e),
        }
    }
}

/// Names the never type `!` on stable Rust, so that a process body that never
/// returns (`loop { … }`) is a valid body.
#[allow(unreachable_pub)] // a sealed helper: `pub` is needed, the module is private
mod never {
    pub trait FnOutput {
        type Output;
    }

    impl<R> FnOutput for fn() -> R {
        type Output = R;
    }

    pub type Never = <fn() -> ! as FnOutput>::Output;
}

impl IntoExitReason for never::Never {
    fn into_exit_reason(self) -> ExitReason {
        self
    }
}
