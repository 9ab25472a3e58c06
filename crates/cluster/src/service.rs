//! Services: the behaviour a cluster service implements, the kinds a node
//! knows how to start, and the process one instance runs as.

use std::collections::HashMap;
use std::sync::Arc;

use ember_otp::gen::send_term_reply;
use ember_runtime::{dist, receive_any, send, ExitReason, Pid};
use ember_term::Term;

/// One running instance of a service: answers calls and, when it moves to
/// another node gracefully, gives its state away.
pub trait Service: Send + 'static {
    /// Answers one call (`gen_server:call` with a term request).
    fn handle_call(&mut self, request: Term) -> Term;

    /// The state to hand to the next instance when this one moves to
    /// another node (graceful stop or rebalancing). The default hands
    /// nothing over.
    fn handoff(&mut self) -> Term {
        Term::atom("undefined")
    }
}

/// A kind of service: how to start an instance, its version, and how to
/// migrate state handed over by another version. Every node that may run
/// a service must know its kind under the same name.
pub trait ServiceKind: Send + Sync + 'static {
    /// The version of the state this kind's instances hand over.
    fn version(&self) -> u32 {
        1
    }

    /// Starts an instance of service `name` on `node` with the `args` it
    /// was started with; `handed_over` is the state the previous instance
    /// gave away (already migrated by [`ServiceKind::code_change`]), or
    /// `None` for a fresh start (first start, or after its node died).
    fn init(
        &self,
        name: &str,
        node: &str,
        args: &Term,
        handed_over: Option<Term>,
    ) -> Box<dyn Service>;

    /// Migrates `state` handed over by an instance of `old_version` (an
    /// older or newer build of this kind) to this version. The default
    /// keeps it unchanged.
    fn code_change(&self, old_version: u32, state: Term) -> Term {
        let _ = old_version;
        state
    }
}

/// The service kinds a node can start, by name.
#[derive(Clone, Default)]
pub struct Kinds(HashMap<String, Arc<dyn ServiceKind>>);

impl Kinds {
    /// No kinds.
    pub fn new() -> Kinds {
        Kinds::default()
    }

    /// Adds (or replaces) the kind called `name`.
    pub fn register(&mut self, name: &str, kind: impl ServiceKind) -> &mut Kinds {
        self.0.insert(name.to_owned(), Arc::new(kind));
        self
    }

    /// The kind called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn ServiceKind>> {
        self.0.get(name).cloned()
    }
}

/// A control message from the cluster server to an instance.
pub(crate) enum Control {
    /// Give the state to this process, the server that asks (as
    /// [`HandedOff`]), and stop. The server that started the instance may
    /// have been restarted since: the instance answers whoever asks.
    Handoff(Pid),
    /// Stop without handing anything over.
    Stop,
}

/// An instance's state, sent to the server that asked for it.
pub(crate) struct HandedOff {
    pub(crate) name: String,
    pub(crate) state: Term,
}

/// The body of an instance's process.
pub(crate) async fn run(
    name: String,
    kind: Arc<dyn ServiceKind>,
    args: Term,
    handed_over: Option<(u32, Term)>,
) -> ExitReason {
    let node = dist::node();
    let state = handed_over.map(|(version, state)| {
        if version == kind.version() {
            state
        } else {
            kind.code_change(version, state)
        }
    });
    let mut service = kind.init(&name, node.as_str(), &args, state);
    loop {
        let m = receive_any(|m| m.is::<Term>() || m.is::<Control>()).await;
        let m = match m.downcast::<Control>() {
            Ok(Control::Handoff(server)) => {
                let state = service.handoff();
                send(server, HandedOff { name, state });
                return ExitReason::Normal;
            }
            Ok(Control::Stop) => return ExitReason::Normal,
            Err(m) => m,
        };
        let Ok(term) = m.downcast::<Term>() else {
            continue;
        };
        match gen_call(&term) {
            Some((caller, tag, request)) => {
                let reply = service.handle_call(request.clone());
                send_term_reply(caller, tag, Term::tuple([tag.clone(), reply]));
            }
            None => tracing::debug!("cluster: service {name} ignores {term}"),
        }
    }
}

/// The caller, tag and request of `{'$gen_call', {Caller, Tag}, Request}`.
fn gen_call(term: &Term) -> Option<(Pid, &Term, &Term)> {
    let [call, from, request] = term.as_tuple()? else {
        return None;
    };
    if !call.is_atom("$gen_call") {
        return None;
    }
    let [caller, tag] = from.as_tuple()? else {
        return None;
    };
    Some((dist::pid_from_term(caller)?, tag, request))
}

/// The service kind of the demo: answers every call with
/// `"response from NAME on NODE"` and counts the calls it answered; the
/// count is its state, handed over when it moves.
pub struct Counter;

/// An instance of [`Counter`].
struct CounterInstance {
    name: String,
    node: String,
    calls: i64,
}

impl ServiceKind for Counter {
    fn init(
        &self,
        name: &str,
        node: &str,
        _args: &Term,
        handed_over: Option<Term>,
    ) -> Box<dyn Service> {
        let calls = handed_over.as_ref().and_then(Term::as_int).unwrap_or(0);
        Box::new(CounterInstance {
            name: name.to_owned(),
            node: node.to_owned(),
            calls,
        })
    }
}

impl Service for CounterInstance {
    fn handle_call(&mut self, _request: Term) -> Term {
        self.calls += 1;
        Term::map([
            (
                Term::atom("reply"),
                Term::from(format!("response from {} on {}", self.name, self.node)),
            ),
            (Term::atom("node"), Term::from(self.node.as_str())),
            (Term::atom("calls"), Term::from(self.calls)),
        ])
    }

    fn handoff(&mut self) -> Term {
        Term::from(self.calls)
    }
}
