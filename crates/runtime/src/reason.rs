//! Exit reasons, mirroring OTP's.

use std::fmt;
use std::sync::Arc;

use ember_term::Term;

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
    /// Any other reason, as an Erlang term: what a process on another
    /// node exited with (`{shutdown, {failed_to_start_child, Id, R}}`,
    /// `{badarith, Stack}`, ...). [`ExitReason::from_term`] never builds
    /// this variant for a term one of the others stands for, so equal
    /// reasons are equal values.
    Term(Arc<Term>),
}

impl ExitReason {
    /// Builds an [`ExitReason::Error`] from anything printable.
    pub fn error(description: impl fmt::Display) -> ExitReason {
        ExitReason::Error(description.to_string().into())
    }

    /// `memory_limit`: the process went over its memory limit
    /// ([`Spawn::memory_limit`](crate::Spawn::memory_limit)) and was killed,
    /// untrappably (docs/semantics.md §9.5). An atom, as a
    /// [`ExitReason::Term`].
    pub fn memory_limit() -> ExitReason {
        ExitReason::Term(Arc::new(Term::atom(crate::memory::MEMORY_LIMIT)))
    }

    /// Whether this is `memory_limit` ([`ExitReason::memory_limit`]).
    pub fn is_memory_limit(&self) -> bool {
        matches!(self, ExitReason::Term(t) if t.is_atom(crate::memory::MEMORY_LIMIT))
    }

    /// Whether this is exactly `normal`, the one reason links do not propagate.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal)
    }

    /// Whether this is `normal`, `shutdown` or `{shutdown, _}`: the reasons OTP
    /// treats as an orderly stop (a transient child is not restarted for them).
    pub fn is_orderly(&self) -> bool {
        match self {
            ExitReason::Normal | ExitReason::Shutdown | ExitReason::ShutdownWith(_) => true,
            ExitReason::Term(t) => {
                matches!(t.as_tuple(), Some([tag, _]) if tag.is_atom("shutdown"))
            }
            _ => false,
        }
    }

    /// The reason as an Erlang term, as it crosses to another node:
    /// `normal`, `shutdown`, `kill`, `killed`, `noproc` and `noconnection`
    /// are atoms; `{shutdown, Info}`, `{panic, Message}` and `{error,
    /// Description}` carry their text as a UTF-8 binary; a
    /// [`ExitReason::Term`] is its term. [`ExitReason::from_term`] reverses
    /// it exactly.
    pub fn to_term(&self) -> Term {
        let tagged =
            |tag: &str, text: &str| Term::tuple([Term::atom(tag), Term::binary(text.as_bytes())]);
        match self {
            ExitReason::Normal => Term::atom("normal"),
            ExitReason::Shutdown => Term::atom("shutdown"),
            ExitReason::Kill => Term::atom("kill"),
            ExitReason::Killed => Term::atom("killed"),
            ExitReason::NoProc => Term::atom("noproc"),
            ExitReason::NoConnection => Term::atom("noconnection"),
            ExitReason::ShutdownWith(info) => tagged("shutdown", info),
            ExitReason::Panic(message) => tagged("panic", message),
            ExitReason::Error(description) => tagged("error", description),
            ExitReason::Term(term) => Term::clone(term),
        }
    }

    /// The reason an Erlang term stands for: the inverse of
    /// [`ExitReason::to_term`]; any other term is an [`ExitReason::Term`].
    pub fn from_term(term: Term) -> ExitReason {
        if let Some(atom) = term.as_atom() {
            match atom {
                "normal" => return ExitReason::Normal,
                "shutdown" => return ExitReason::Shutdown,
                "kill" => return ExitReason::Kill,
                "killed" => return ExitReason::Killed,
                "noproc" => return ExitReason::NoProc,
                "noconnection" => return ExitReason::NoConnection,
                _ => {}
            }
        }
        if let Some([tag, Term::Binary(bytes)]) = term.as_tuple() {
            if let Ok(text) = std::str::from_utf8(bytes) {
                match tag.as_atom() {
                    Some("shutdown") => return ExitReason::ShutdownWith(text.into()),
                    Some("panic") => return ExitReason::Panic(text.into()),
                    Some("error") => return ExitReason::Error(text.into()),
                    _ => {}
                }
            }
        }
        ExitReason::Term(Arc::new(term))
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
            ExitReason::Term(term) => write!(f, "{term}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_terms_and_foreign_terms_survive_unchanged() {
        for reason in [
            ExitReason::Normal,
            ExitReason::Shutdown,
            ExitReason::Kill,
            ExitReason::Killed,
            ExitReason::NoProc,
            ExitReason::NoConnection,
            ExitReason::ShutdownWith("bye".into()),
            ExitReason::Panic("boom".into()),
            ExitReason::error("bad input"),
        ] {
            assert_eq!(ExitReason::from_term(reason.to_term()), reason);
        }
        let foreign = Term::tuple([
            Term::atom("shutdown"),
            Term::tuple([
                Term::atom("failed_to_start_child"),
                Term::atom("worker"),
                Term::tuple([Term::atom("badarith"), Term::nil()]),
            ]),
        ]);
        let reason = ExitReason::from_term(foreign.clone());
        assert!(matches!(reason, ExitReason::Term(_)));
        assert!(reason.is_orderly());
        assert_eq!(reason.to_term(), foreign);
        assert_eq!(
            reason.to_string(),
            "{shutdown,{failed_to_start_child,worker,{badarith,[]}}}"
        );
        assert!(!ExitReason::from_term(Term::atom("boom")).is_orderly());
    }
}
