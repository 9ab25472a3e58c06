//! Ember processes as peers of other nodes' processes: the bridge between
//! a [`Node`] and an Ember runtime (`ember_runtime::dist`).
//!
//! Outgoing, the runtime hands every signal for a process of another node
//! to [`Bridge`] (its [`Distribution`] seam). The bridge keeps one FIFO per
//! peer node, drained by one task that connects on first use and writes
//! each signal to the connection in order, so signals from one process to
//! another keep their order end to end. If no connection can be made, the
//! task reports the node down to the runtime (every link and monitor to it
//! fires with `noconnection`, `monitor_node` subscribers get their
//! `NodeDown`) and drops what was queued meanwhile; a connection that goes
//! down drops what was queued for it too (as Erlang drops a lost
//! connection's queue), so nothing queued for it makes a new one. The FIFO ([`Lane`]) is
//! bounded for senders as Erlang's `busy_dist_port`: a process whose
//! message finds it full is suspended until it drains.
//! A message finding the lane empty and its task idle, with the
//! connection up and not busy, skips the lane and is queued (and, when no
//! write is under way, written) by the sender itself
//! ([`Lane::try_direct`]).
//!
//! Incoming, the connection's reader calls the bridge (its [`Deliver`]
//! hook) in arrival order, and the bridge calls the runtime's
//! [`Incoming`]: messages to pids and registered names, `LINK`,
//! `UNLINK_ID`, `EXIT`, `EXIT2`, `MONITOR_P`, `DEMONITOR_P`,
//! `MONITOR_P_EXIT`, and the connection coming up and going down.
//!
//! # Functions, spawn and rpc
//!
//! Rust functions registered by `module:function/arity` ([`Functions`])
//! can be spawned from any node: a `SPAWN_REQUEST` (Erlang's
//! `spawn/4`, `spawn_link/4`, `spawn_monitor/4`) runs one in a new Ember
//! process, with the link or monitor the requester asked for set up
//! before the `SPAWN_REPLY`, which goes out before anything the new
//! process sends. `rpc:call`/`erpc:call` arrive as a `SPAWN_REQUEST` of
//! `erpc:execute_call/4`: the process runs the function and exits with
//! `{Ref, return, Value}` (or `{Ref, error, Reason, Stack}`, `{Ref, exit,
//! Reason}`, `{Ref, throw, Value}`), which the requester's monitor carries
//! back, as `erpc` does; an unknown function raises `undef`. The node's
//! `rex` process answers `features_request` and the classic
//! `{call, M, F, A, GroupLeader}` gen_server call. [`rpc_call`] calls
//! `rex` on any node (Erlang's or Ember's) the classic way.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use ember_otp::gen::CallError;
use ember_otp::gen_server::{call_term, TermServer};
use ember_runtime::dist::{
    self as rdist, Distribution, Incoming, RemoteSignal, Sender, Suspension, Target,
};
use ember_runtime::{receive, ExitReason, Handle, Spawn};
use ember_term::{Atom, Pid, Term};

use crate::connection::{Outgoing, SendQueue};
use crate::error::DistError;
use crate::flags;
use crate::node::{Deliver, Delivery, Inner, Node, NodeConfig};

// Control message operations (erts guide, "Protocol between connected nodes").
const LINK: i64 = 1;
const SEND: i64 = 2;
const EXIT: i64 = 3;
const UNLINK: i64 = 4;
const REG_SEND: i64 = 6;
const GROUP_LEADER: i64 = 7;
const EXIT2: i64 = 8;
const EXIT_TT: i64 = 13;
const EXIT2_TT: i64 = 18;
const MONITOR_P: i64 = 19;
const DEMONITOR_P: i64 = 20;
const MONITOR_P_EXIT: i64 = 21;
const SEND_SENDER: i64 = 22;
const SPAWN_REQUEST: i64 = 29;
const SPAWN_REQUEST_TT: i64 = 30;
const SPAWN_REPLY: i64 = 31;
const ALIAS_SEND: i64 = 33;
const UNLINK_ID: i64 = 35;
const UNLINK_ID_ACK: i64 = 36;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The negotiated flags of each connected peer.
type PeerFlags = Arc<Mutex<HashMap<Atom, u64>>>;

/// What a registered function raised instead of returning: Erlang's
/// three exception classes.
#[derive(Clone, Debug, PartialEq)]
pub enum Raise {
    /// `error(Reason)`.
    Error(Term),
    /// `exit(Reason)`.
    Exit(Term),
    /// `throw(Value)`.
    Throw(Term),
}

/// What a registered function produces.
pub type FunctionResult = Result<Term, Raise>;

/// A registered function's future.
pub type FunctionFuture = Pin<Box<dyn Future<Output = FunctionResult> + Send>>;

pub(crate) type Function = Arc<dyn Fn(Vec<Term>) -> FunctionFuture + Send + Sync>;

/// Rust functions by `module:function/arity`, for other nodes to spawn
/// and call ([`Node::start_in_runtime_with`]). Each runs in its own Ember
/// process, with its arguments as terms.
#[derive(Clone, Default)]
pub struct Functions {
    map: HashMap<(Atom, Atom, usize), Function>,
}

impl std::fmt::Debug for Functions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> = self
            .map
            .keys()
            .map(|(m, f, a)| format!("{m}:{f}/{a}"))
            .collect();
        names.sort();
        f.debug_set().entries(names).finish()
    }
}

impl Functions {
    /// No functions.
    pub fn new() -> Functions {
        Functions::default()
    }

    /// Registers `module:function/arity`; `f` gets exactly `arity`
    /// arguments. A name registered twice keeps the later function.
    pub fn register<F, Fut>(&mut self, module: &str, function: &str, arity: usize, f: F)
    where
        F: Fn(Vec<Term>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = FunctionResult> + Send + 'static,
    {
        let f: Function = Arc::new(move |args| Box::pin(f(args)));
        self.map
            .insert((Atom::new(module), Atom::new(function), arity), f);
    }

    /// The function registered as `module:function/arity`, if any.
    pub(crate) fn get(&self, module: &Term, function: &Term, arity: usize) -> Option<Function> {
        let (Term::Atom(m), Term::Atom(f)) = (module, function) else {
            return None;
        };
        self.map.get(&(m.clone(), f.clone(), arity)).cloned()
    }
}

/// The seam in both directions between a node and a runtime.
struct Bridge {
    handle: Handle,
    functions: Functions,
    incoming: Arc<OnceLock<Incoming>>,
    node: OnceLock<Weak<Inner>>,
    tokio: tokio::runtime::Handle,
    /// Per peer node, the FIFO its forwarding task drains.
    outbound: Mutex<HashMap<Atom, Arc<Lane>>>,
    flags: PeerFlags,
    /// The bound of each lane, in bytes: the connections' send queue limit.
    send_queue_limit: usize,
}

impl Node {
    /// Starts a node whose local processes are the Ember processes of
    /// `runtime`: their pids cross as this node's pids, messages and
    /// signals from peers reach them, and theirs reach peers (see
    /// `ember_runtime::dist`). Must run inside a tokio runtime (the Ember
    /// runtime's own, from a process, is the usual one). The config's
    /// [`NodeConfig::deliver`] is replaced by the bridge. A runtime can be
    /// a node once.
    pub async fn start_in_runtime(config: NodeConfig, runtime: &Handle) -> Result<Node, DistError> {
        Node::start_in_runtime_with(config, runtime, Functions::new()).await
    }

    /// [`Node::start_in_runtime`], with `functions` for other nodes to
    /// spawn and call (`spawn/4`, `rpc:call/4`, `erpc:call/4`), and the
    /// node's `rex` process.
    pub async fn start_in_runtime_with(
        mut config: NodeConfig,
        runtime: &Handle,
        functions: Functions,
    ) -> Result<Node, DistError> {
        let bridge = Arc::new(Bridge {
            handle: runtime.clone(),
            functions: functions.clone(),
            incoming: Arc::new(OnceLock::new()),
            node: OnceLock::new(),
            tokio: tokio::runtime::Handle::current(),
            outbound: Mutex::new(HashMap::new()),
            flags: Arc::new(Mutex::new(HashMap::new())),
            send_queue_limit: config.send_queue_limit,
        });
        config.deliver = bridge.clone();
        let node = Node::start_with(config).await?;
        let _ = node.inner.runtime.set(runtime.clone());
        let _ = bridge.node.set(Arc::downgrade(&node.inner));
        let incoming = runtime
            .start_distribution(node.name().as_str(), node.creation(), bridge.clone())
            .map_err(|e| DistError::Refused(e.to_string()))?;
        let _ = bridge.incoming.set(incoming);
        let rex = runtime.spawn_with(Spawn::new().name("rex").label("rex"), rex(functions));
        if let Err(e) = rex {
            tracing::warn!("dist: no rex on {}: {e}", node.name());
        }
        Ok(node)
    }
}

/// The node's `rex`: answers `features_request` (`{features_reply,
/// Node, [erpc]}`) and `{call | block_call, M, F, A, GroupLeader}`
/// gen_server calls, each run in a process of its own.
async fn rex(functions: Functions) {
    loop {
        let message = receive::<Term>().await;
        match message.as_tuple() {
            Some([from, request]) if request.is_atom("features_request") => {
                if let Some(pid) = rdist::pid_from_term(from) {
                    let reply = Term::tuple([
                        Term::atom("features_reply"),
                        Term::Atom(rdist::node()),
                        Term::list([Term::atom("erpc")]),
                    ]);
                    ember_runtime::send(pid, reply);
                }
            }
            Some([call, from, request]) if call.is_atom("$gen_call") => {
                let (Some([caller, tag]), Some([kind, m, f, Term::List(args), group_leader])) =
                    (from.as_tuple(), request.as_tuple())
                else {
                    tracing::debug!("dist: rex ignores the call {request}");
                    continue;
                };
                if !(kind.is_atom("call") || kind.is_atom("block_call")) {
                    tracing::debug!("dist: rex ignores the call {request}");
                    continue;
                }
                let Some(caller) = rdist::pid_from_term(caller) else {
                    continue;
                };
                let (tag, m, f, args) = (tag.clone(), m.clone(), f.clone(), args.clone());
                let function = functions.get(&m, &f, args.len());
                // The function runs with the caller's group leader, so its
                // output goes to the caller's node, as with Erlang's rex.
                let mut options = Spawn::new().label("rex call");
                if let Some(leader) = rdist::pid_from_term(group_leader) {
                    options = options.group_leader(leader);
                }
                let spawned = options.spawn(async move {
                    let result = match function {
                        None => {
                            badrpc_exit(Term::tuple([Term::atom("undef"), stack(&m, &f, &args)]))
                        }
                        Some(function) => match run_caught(function, args.clone()).await {
                            Ok(value) => value,
                            Err(Raise::Throw(value)) => value,
                            Err(Raise::Exit(reason)) => badrpc_exit(reason),
                            Err(Raise::Error(reason)) => {
                                badrpc_exit(Term::tuple([reason, stack(&m, &f, &args)]))
                            }
                        },
                    };
                    let answer = Term::tuple([tag.clone(), result]);
                    ember_otp::gen::send_term_reply(caller, &tag, answer);
                });
                if let Err(e) = spawned {
                    tracing::warn!("dist: rex cannot run a call: {e}");
                }
            }
            _ => tracing::debug!("dist: rex ignores {message}"),
        }
    }
}

/// `{badrpc, {'EXIT', Reason}}`.
fn badrpc_exit(reason: Term) -> Term {
    Term::tuple([
        Term::atom("badrpc"),
        Term::tuple([Term::atom("EXIT"), reason]),
    ])
}

/// The stack an exception in `M:F(Args)` reports: `[{M, F, Args, []}]`.
pub(crate) fn stack(m: &Term, f: &Term, args: &[Term]) -> Term {
    Term::list([Term::tuple([
        m.clone(),
        f.clone(),
        Term::list(args.to_vec()),
        Term::nil(),
    ])])
}

/// Runs a registered function in a process of its own, so that a panic
/// is an `error` (`{panic, Message}`) instead of the caller's crash.
async fn run_caught(function: Function, args: Vec<Term>) -> FunctionResult {
    let (pid, watch) = ember_runtime::spawn_monitor(async move {
        let result = function(args).await;
        ExitReason::Term(Arc::new(encode_result(&result)))
    });
    let _ = pid;
    let down = receive::<ember_runtime::Down>()
        .matching(move |d| d.monitor == watch)
        .await;
    match down.reason {
        ExitReason::Term(t) => decode_result(&t),
        ExitReason::Panic(message) => Err(Raise::Error(Term::tuple([
            Term::atom("panic"),
            Term::binary(message.as_bytes()),
        ]))),
        other => Err(Raise::Exit(other.to_term())),
    }
}

fn encode_result(result: &FunctionResult) -> Term {
    let (class, value) = match result {
        Ok(v) => ("return", v),
        Err(Raise::Error(v)) => ("error", v),
        Err(Raise::Exit(v)) => ("exit", v),
        Err(Raise::Throw(v)) => ("throw", v),
    };
    Term::tuple([
        Term::atom("$ember_result"),
        Term::atom(class),
        value.clone(),
    ])
}

fn decode_result(t: &Term) -> FunctionResult {
    match t.as_tuple() {
        Some([tag, class, value]) if tag.is_atom("$ember_result") => match class.as_atom() {
            Some("return") => Ok(value.clone()),
            Some("error") => Err(Raise::Error(value.clone())),
            Some("throw") => Err(Raise::Throw(value.clone())),
            _ => Err(Raise::Exit(value.clone())),
        },
        _ => Err(Raise::Exit(t.clone())),
    }
}

/// Calls `module:function(args)` on `node` through its `rex`, as Erlang's
/// classic `rpc:call/5` (`{call, M, F, A, GroupLeader}`): an Erlang,
/// Elixir or Ember node. Returns what `rpc:call` returns: the value, or
/// `{badrpc, Reason}` (`nodedown`, `timeout`, `{'EXIT', ...}`). Call it
/// from an Ember process. The function runs with the caller's group
/// leader, so what it prints comes out where the caller's output does.
pub async fn rpc_call(
    node: &str,
    module: &str,
    function: &str,
    args: Vec<Term>,
    timeout: Duration,
) -> Term {
    let request = Term::tuple([
        Term::atom("call"),
        Term::atom(module),
        Term::atom(function),
        Term::list(args),
        rdist::pid_to_term(ember_runtime::io::group_leader()),
    ]);
    let rex = TermServer::Name {
        name: "rex".into(),
        node: node.into(),
    };
    let badrpc = |why: Term| Term::tuple([Term::atom("badrpc"), why]);
    match call_term(&rex, request, timeout).await {
        Ok(value) => value,
        Err(CallError::Timeout) => badrpc(Term::atom("timeout")),
        Err(CallError::Exited(ExitReason::NoConnection) | CallError::NoProc) => {
            badrpc(Term::atom("nodedown"))
        }
        Err(CallError::Exited(reason)) => {
            badrpc(Term::tuple([Term::atom("EXIT"), reason.to_term()]))
        }
        Err(e) => badrpc(Term::binary(e.to_string().into_bytes())),
    }
}

impl Bridge {
    /// `SPAWN_REQUEST`: spawns the function in a new process with the
    /// link and monitor asked for, answers `SPAWN_REPLY`, then lets it run.
    fn spawn_request(
        &self,
        incoming: &Incoming,
        node: &Atom,
        connection: u64,
        request: SpawnRequest<'_>,
    ) {
        let SpawnRequest {
            id: req_id,
            from,
            group_leader,
            mfa,
            opts,
            args,
        } = request;
        let args: Vec<Term> = args
            .and_then(Term::as_list)
            .map(<[Term]>::to_vec)
            .unwrap_or_default();
        let opts = opts.as_list().unwrap_or(&[]);
        let link = opts.iter().any(|o| o.is_atom("link"));
        let monitor = opts.iter().any(|o| o.is_atom("monitor"));
        let Some([m, f, _]) = mfa.as_tuple() else {
            return self.spawn_reply(node, req_id, from, 0, Term::atom("badarg"));
        };
        let body = self.spawn_body(m, f, args);
        let mut options = Spawn::new().label("remote spawn");
        if let Some(leader) = group_leader.as_pid().and_then(|p| incoming.pid(p)) {
            options = options.group_leader(leader);
        }
        let spawned = self.handle.spawn_with(options, async move {
            receive::<Go>().await;
            body.await
        });
        let pid = match spawned {
            Ok(s) => s.pid,
            Err(e) => {
                tracing::warn!("dist: cannot spawn for {node}: {e}");
                return self.spawn_reply(node, req_id, from, 0, Term::atom("system_limit"));
            }
        };
        let new = incoming.term_pid(pid);
        let mut flags = 0;
        if link {
            incoming.link(node, connection, from, &new);
            flags |= 1;
        }
        if monitor {
            if let Term::Reference(r) = req_id {
                incoming.monitor(node, connection, from, &Target::Pid(new.clone()), r.clone());
                flags |= 2;
            }
        }
        self.spawn_reply(node, req_id, from, flags, Term::Pid(new));
        self.handle.send(pid, Go);
    }

    fn spawn_reply(&self, node: &Atom, id: &Term, to: &Pid, flags: u8, result: Term) {
        let reply = RemoteSignal::SpawnReply {
            id: id.clone(),
            to: to.clone(),
            flags,
            result,
        };
        Distribution::signal(self, node, reply);
    }

    /// What a spawned process runs: `erpc:execute_call/4`'s protocol, or
    /// a registered function as the process's whole body.
    fn spawn_body(
        &self,
        m: &Term,
        f: &Term,
        args: Vec<Term>,
    ) -> Pin<Box<dyn Future<Output = ExitReason> + Send>> {
        if m.is_atom("erpc") && f.is_atom("execute_call") {
            if let [reference, m2, f2, Term::List(a2)] = &args[..] {
                let (reference, m2, f2, a2) =
                    (reference.clone(), m2.clone(), f2.clone(), a2.clone());
                let function = self.functions.get(&m2, &f2, a2.len());
                return Box::pin(async move {
                    let reason = match function {
                        None => Term::tuple([
                            reference,
                            Term::atom("error"),
                            Term::atom("undef"),
                            stack(&m2, &f2, &a2),
                        ]),
                        Some(function) => match run_caught(function, a2.clone()).await {
                            Ok(v) => Term::tuple([reference, Term::atom("return"), v]),
                            Err(Raise::Throw(v)) => {
                                Term::tuple([reference, Term::atom("throw"), v])
                            }
                            Err(Raise::Exit(v)) => Term::tuple([reference, Term::atom("exit"), v]),
                            Err(Raise::Error(v)) => Term::tuple([
                                reference,
                                Term::atom("error"),
                                v,
                                stack(&m2, &f2, &a2),
                            ]),
                        },
                    };
                    ExitReason::from_term(reason)
                });
            }
        }
        let function = self.functions.get(m, f, args.len());
        let (m, f) = (m.clone(), f.clone());
        Box::pin(async move {
            let Some(function) = function else {
                return ExitReason::from_term(Term::tuple([
                    Term::atom("undef"),
                    stack(&m, &f, &args),
                ]));
            };
            match function(args.clone()).await {
                Ok(_) => ExitReason::Normal,
                Err(Raise::Exit(reason)) => ExitReason::from_term(reason),
                Err(Raise::Error(reason)) => {
                    ExitReason::from_term(Term::tuple([reason, stack(&m, &f, &args)]))
                }
                Err(Raise::Throw(value)) => ExitReason::from_term(Term::tuple([
                    Term::tuple([Term::atom("nocatch"), value]),
                    stack(&m, &f, &args),
                ])),
            }
        })
    }
}

/// A peer's `SPAWN_REQUEST`, taken apart.
struct SpawnRequest<'a> {
    id: &'a Term,
    from: &'a Pid,
    /// The requester's group leader: the new process's.
    group_leader: &'a Term,
    mfa: &'a Term,
    opts: &'a Term,
    args: Option<&'a Term>,
}

/// Lets a spawned process start once its `SPAWN_REPLY` is on its way.
struct Go;

impl Bridge {
    /// The FIFO to `node`, with its forwarder started on first use.
    fn lane(&self, node: &Atom) -> Arc<Lane> {
        let mut outbound = lock(&self.outbound);
        outbound
            .entry(node.clone())
            .or_insert_with(|| {
                let lane = Arc::new(Lane::new(self.send_queue_limit));
                let forwarder = Forwarder {
                    node: node.clone(),
                    inner: self.node.get().cloned().unwrap_or_default(),
                    incoming: self.incoming.clone(),
                    lane: lane.clone(),
                };
                self.tokio.spawn(forwarder.run());
                lane
            })
            .clone()
    }
}

impl Distribution for Bridge {
    fn signal(&self, node: &Atom, signal: RemoteSignal) {
        let lane = self.lane(node);
        if let Some(signal) = lane.try_direct(signal) {
            lane.push(signal, None);
        }
    }

    fn message(&self, node: &Atom, signal: RemoteSignal, sender: &Sender<'_>) {
        let lane = self.lane(node);
        if let Some(signal) = lane.try_direct(signal) {
            lane.push(signal, Some(sender));
        }
    }
}

/// One peer node's FIFO of signals, in front of its connection's send
/// queue, bounded for senders as Erlang's `busy_dist_port`: while the
/// signals queued here reach the limit in (estimated) bytes, a process
/// that sends a message, or a link, unlink, monitor, demonitor or
/// `exit/2` of its own, is suspended (its signal is queued first, so
/// order holds) until the forwarder has taken the FIFO below half the
/// limit (the low-water mark). Signals sent for no running process (the
/// `EXIT`s and `DOWN`s of a death, answers to the peer, spawn replies)
/// are always queued and never suspend anyone, so none is lost; there is
/// at most one per relation or request, so they are bounded by what
/// exists. A *message* from outside any process (a thread or task using
/// a runtime handle) cannot be suspended: it is queued while the lane
/// holds less than twice the limit and dropped beyond that, with a
/// `warn` log line (as Erlang drops a message it cannot deliver, the
/// sender learns nothing); the lane's memory stays bounded either way.
///
/// The wake-up protocol: a sender queues its signal, adds its bytes and,
/// if that made the lane busy, records its suspension, all under the
/// lane's lock; the forwarder takes a signal, subtracts its bytes and, if
/// that made the lane not busy, takes every recorded suspension, under
/// the same lock, and resumes them after. A suspension is only recorded
/// while the FIFO holds at least the limit, so the forwarder has
/// something to take and will see it: none is left behind (loom model in
/// `loom_models.rs`).
///
/// The direct path: a message (or a `MONITOR_P` or `DEMONITOR_P`, which
/// a call sends around its request) finding the lane empty, the forwarder idle
/// (not between taking a signal and queueing it on the connection), and
/// the node's connection up with room, skips the lane and the forwarder:
/// the sender queues it on the connection itself, under the lane's lock
/// (so nothing queued on the lane after it can overtake it), and, when
/// the connection's write token is free, writes it to the socket from its
/// own thread after releasing that lock ([`SendQueue::enqueue`]). A busy
/// or closed connection, another signal, or anything
/// queued here sends it the ordinary way, through the lane (loom model in
/// `loom_direct.rs`).
pub(crate) struct Lane {
    state: Mutex<LaneState>,
    /// Senders → forwarder: something was queued.
    work: tokio::sync::Notify,
    limit: usize,
}

struct LaneState {
    /// Each signal with its size and the epoch it was queued in.
    queue: std::collections::VecDeque<(RemoteSignal, usize, u64)>,
    bytes: usize,
    /// Connections to the node lost so far.
    epoch: u64,
    /// Suspended senders, at most one suspension each.
    waiting: HashMap<ember_runtime::Pid, Suspension>,
    /// Messages from outside any process dropped on a full lane.
    dropped: u64,
    /// The forwarder has taken a signal and not yet queued it on the
    /// connection (or dropped it): no direct sends meanwhile.
    forwarding: bool,
    /// The node's connection as the forwarder last found it up: for the
    /// direct path and the forwarder itself.
    conn: Option<Arc<SendQueue>>,
}

impl Lane {
    fn new(limit: usize) -> Lane {
        Lane {
            state: Mutex::new(LaneState {
                queue: std::collections::VecDeque::new(),
                bytes: 0,
                epoch: 0,
                waiting: HashMap::new(),
                dropped: 0,
                forwarding: false,
                conn: None,
            }),
            work: tokio::sync::Notify::new(),
            limit: limit.max(1),
        }
    }

    /// Queues `signal`; suspends `sender` if the lane is busy now. A
    /// message from no process finding the lane at twice its limit is
    /// dropped instead.
    fn push(&self, signal: RemoteSignal, sender: Option<&Sender<'_>>) {
        let size = signal_bytes(&signal);
        let mut state = lock(&self.state);
        if sender.is_none() && is_message(&signal) && state.bytes >= self.limit.saturating_mul(2) {
            state.dropped += 1;
            let dropped = state.dropped;
            drop(state);
            // Logged for the 1st, 2nd, 4th, 8th, ... drop: a flood of them
            // does not flood the log.
            if dropped.is_power_of_two() {
                tracing::warn!(
                    "dist: a message from outside any process was dropped: the lane to its \
                     node is full ({dropped} dropped so far)"
                );
            }
            return;
        }
        let epoch = state.epoch;
        state.queue.push_back((signal, size, epoch));
        state.bytes += size;
        if let Some(sender) = sender {
            if state.bytes >= self.limit && !state.waiting.contains_key(&sender.pid()) {
                state.waiting.insert(sender.pid(), sender.suspend());
            }
        }
        drop(state);
        self.work.notify_one();
    }

    /// Sends a message the direct way (see the type's docs), or hands it
    /// back (`Some`) to go through the lane.
    fn try_direct(&self, signal: RemoteSignal) -> Option<RemoteSignal> {
        // A call's `MONITOR_P` (and its `DEMONITOR_P`) too: the request
        // then leaves at once behind it, from the caller's thread.
        let lead = match &signal {
            RemoteSignal::Monitor { .. } | RemoteSignal::Demonitor { .. } => true,
            s if is_message(s) => false,
            _ => return Some(signal),
        };
        let state = lock(&self.state);
        if state.forwarding || !state.queue.is_empty() {
            return Some(signal);
        }
        let Some(tx) = state.conn.clone() else {
            return Some(signal);
        };
        if !tx.has_room() {
            return Some(signal);
        }
        // A monitor the connection refuses (it closed meanwhile) goes
        // through the lane, whose forwarder connects again or reports the
        // node down (which fires the monitor); a message is dropped, as
        // the forwarder drops it.
        let retry = lead.then(|| signal.clone());
        // Not sent (an alias message to a node without aliases): dropped,
        // as the forwarder drops it (`None`: nothing left to send).
        let outgoing = encode(signal, tx.peer_flags())?;
        let queued = tx.enqueue(&outgoing, lead);
        drop(state);
        match queued {
            Ok(Some(batch)) => tx.write_direct(batch),
            Ok(None) => {}
            Err(DistError::Refused(_)) if retry.is_some() => return retry,
            // Logged where it was refused; the message is dropped.
            Err(DistError::BadPid(_)) => {}
            Err(e) => tracing::debug!("dist: no send to {}: {e}", tx.peer()),
        }
        None
    }

    /// The connection the forwarder found up.
    fn set_conn(&self, tx: &Arc<SendQueue>) {
        lock(&self.state).conn = Some(tx.clone());
    }

    /// The connection last found up, unless it has closed since.
    fn conn(&self) -> Option<Arc<SendQueue>> {
        let mut state = lock(&self.state);
        match &state.conn {
            Some(tx) if tx.is_closed() => {
                state.conn = None;
                None
            }
            c => c.clone(),
        }
    }

    /// Takes the next signal, resuming the suspended senders when that
    /// took the lane below half its limit. The forwarder is busy with it
    /// until it asks for the next (no direct sends meanwhile).
    fn pop(&self) -> Option<(RemoteSignal, u64)> {
        let mut state = lock(&self.state);
        let Some((signal, size, epoch)) = state.queue.pop_front() else {
            state.forwarding = false;
            return None;
        };
        state.forwarding = true;
        state.bytes -= size;
        let resumed = if state.bytes < (self.limit / 2).max(1) && !state.waiting.is_empty() {
            std::mem::take(&mut state.waiting)
        } else {
            HashMap::new()
        };
        drop(state);
        resumed.into_values().for_each(Suspension::resume);
        Some((signal, epoch))
    }

    /// The current epoch: connections to the node lost so far.
    fn epoch(&self) -> u64 {
        lock(&self.state).epoch
    }

    /// A connection to the node was lost: everything queued here was
    /// queued for it and is dropped, as Erlang drops a lost connection's
    /// queue (`erts_do_net_exits`), and every suspended sender is resumed
    /// at once. Nothing queued for the lost connection makes a new one
    /// (only signals sent after the loss do); the number dropped.
    fn connection_lost(&self) -> usize {
        let mut state = lock(&self.state);
        state.epoch += 1;
        state.conn = None;
        Lane::drop_queued(state)
    }

    /// Drops everything queued and resumes every suspended sender; the
    /// number of signals dropped.
    fn clear(&self) -> usize {
        Lane::drop_queued(lock(&self.state))
    }

    /// [`Lane::clear`] under a lock the caller already holds (and
    /// releases here, before resuming the senders).
    fn drop_queued(mut state: MutexGuard<'_, LaneState>) -> usize {
        let dropped = state.queue.len();
        state.queue.clear();
        state.bytes = 0;
        let resumed = std::mem::take(&mut state.waiting);
        drop(state);
        resumed.into_values().for_each(Suspension::resume);
        dropped
    }
}

/// Whether `signal` is a message (which a sender outside any process may
/// see dropped on a full lane).
fn is_message(signal: &RemoteSignal) -> bool {
    matches!(
        signal,
        RemoteSignal::Send { .. } | RemoteSignal::SendNamed { .. } | RemoteSignal::SendAlias { .. }
    )
}

/// Roughly the bytes `signal` takes encoded: what the lane counts.
fn signal_bytes(signal: &RemoteSignal) -> usize {
    const CONTROL: usize = 64;
    CONTROL
        + match signal {
            RemoteSignal::Send { message, .. }
            | RemoteSignal::SendNamed { message, .. }
            | RemoteSignal::SendAlias { message, .. } => term_bytes(message),
            RemoteSignal::Exit { reason, .. }
            | RemoteSignal::Exit2 { reason, .. }
            | RemoteSignal::MonitorExit { reason, .. } => term_bytes(reason),
            RemoteSignal::SpawnReply { result, .. } => term_bytes(result),
            RemoteSignal::SpawnRequest { args, .. } => args.iter().map(term_bytes).sum(),
            _ => 0,
        }
}

/// Roughly the bytes of `term` in the external format (iterative: a
/// deep term cannot overflow the stack).
fn term_bytes(term: &Term) -> usize {
    let mut total = 0usize;
    let mut pending = vec![term];
    while let Some(t) = pending.pop() {
        total += match t {
            Term::Binary(b) => 5 + b.len(),
            Term::BitBinary(b) => 6 + b.bytes().len(),
            Term::Atom(a) => 3 + a.as_str().len(),
            Term::Tuple(items) | Term::List(items) => {
                pending.extend(items.iter());
                5
            }
            Term::ImproperList(items, tail) => {
                pending.extend(items.iter());
                pending.push(tail);
                5
            }
            Term::Map(m) => {
                for (k, v) in m.iter() {
                    pending.push(k);
                    pending.push(v);
                }
                5
            }
            Term::BigInt(_) => 16,
            Term::Pid(_) | Term::Port(_) | Term::Reference(_) | Term::Fun(_) => 32,
            _ => 9,
        };
    }
    total
}

/// Drains one peer node's lane onto its connection.
struct Forwarder {
    node: Atom,
    inner: Weak<Inner>,
    incoming: Arc<OnceLock<Incoming>>,
    lane: Arc<Lane>,
}

impl Forwarder {
    async fn run(self) {
        loop {
            let Some((signal, queued_in)) = self.lane.pop() else {
                self.lane.work.notified().await;
                continue;
            };
            // Taken just before its connection was lost (the loss dropped
            // the rest), or a link or monitor whose relation is gone: it
            // makes no new connection.
            if self.stale(&signal, queued_in) {
                continue;
            }
            let tx = match self.lane.conn() {
                Some(tx) => tx,
                None => {
                    let Some(inner) = self.inner.upgrade() else {
                        self.unreachable("the node has stopped");
                        continue;
                    };
                    let tx = match inner.connect(&self.node).await {
                        Ok(tx) => tx,
                        Err(e) => {
                            drop(inner);
                            self.unreachable(&e.to_string());
                            continue;
                        }
                    };
                    self.lane.set_conn(&tx);
                    tx
                }
            };
            if self.stale(&signal, queued_in) {
                continue;
            }
            let peer_flags = tx.peer_flags();
            if peer_flags & flags::SPAWN == 0 {
                if let RemoteSignal::SpawnRequest { id, from, .. } = &signal {
                    // The peer does not spawn for others: answer for it.
                    if let Some(incoming) = self.incoming.get() {
                        incoming.spawn_reply(&self.node, id, from, 0, &Term::atom("notsup"));
                    }
                    continue;
                }
            }
            let Some(outgoing) = encode(signal, peer_flags) else {
                continue;
            };
            match tx.send(outgoing).await {
                Ok(()) => {}
                // Logged where it was refused; the signal is dropped.
                Err(DistError::BadPid(_)) => {}
                Err(e) => tracing::debug!("dist: no send to {}: {e}", self.node),
            }
        }
    }

    /// Whether `signal`, queued in epoch `queued_in`, is not to be sent:
    /// it was queued for a connection that has been lost since, or it is
    /// a `LINK` or `MONITOR_P` whose relation no longer stands.
    fn stale(&self, signal: &RemoteSignal, queued_in: u64) -> bool {
        queued_in != self.lane.epoch() || !self.still_held(signal, queued_in)
    }

    /// Whether a `LINK` or `MONITOR_P` still stands for a relation the
    /// local process holds. Asked once the connection it would go on is
    /// up: a relation fired by the loss of an earlier connection (while
    /// its signal waited here) is not made on this one, so the peer never
    /// holds a link or monitor this side does not. A relation fired after
    /// the check fires on the peer's side too (the connection it went on
    /// is the one lost).
    fn still_held(&self, signal: &RemoteSignal, queued_in: u64) -> bool {
        let Some(incoming) = self.incoming.get() else {
            return true;
        };
        match signal {
            RemoteSignal::Link { from, to } => incoming
                .holds_link(from, to)
                .unwrap_or(queued_in == self.lane.epoch()),
            RemoteSignal::Monitor {
                from, reference, ..
            } => incoming.holds_monitor(from, reference),
            _ => true,
        }
    }

    /// No connection to the node: it is down for the runtime (links and
    /// monitors fire with `noconnection`), and what is queued now is
    /// dropped rather than trying again for each.
    fn unreachable(&self, why: &str) {
        let dropped = self.lane.clear();
        tracing::info!(
            "dist: cannot reach {}: {why} ({dropped} more queued signals dropped)",
            self.node
        );
        if let Some(incoming) = self.incoming.get() {
            incoming.node_down(&self.node);
        }
    }
}

fn pid(p: Pid) -> Term {
    Term::Pid(p)
}

/// The control message (and payload) of a signal, as the peer's flags
/// allow; `None` for what is not sent.
fn encode(signal: RemoteSignal, peer_flags: u64) -> Option<Outgoing> {
    let op = Term::from;
    let (control, payload) = match signal {
        RemoteSignal::Send { from, to, message } => {
            let control = if peer_flags & flags::SEND_SENDER != 0 {
                Term::tuple([op(SEND_SENDER), pid(from), pid(to)])
            } else {
                Term::tuple([op(SEND), Term::atom(""), pid(to)])
            };
            (control, Some(message))
        }
        RemoteSignal::SendNamed {
            from,
            name,
            message,
        } => (
            Term::tuple([op(REG_SEND), pid(from), Term::atom(""), Term::Atom(name)]),
            Some(message),
        ),
        RemoteSignal::SendAlias {
            from,
            alias,
            message,
        } => {
            if peer_flags & flags::ALIAS == 0 {
                // Erlang drops alias messages to nodes without aliases.
                return None;
            }
            (
                Term::tuple([op(ALIAS_SEND), pid(from), Term::Reference(alias)]),
                Some(message),
            )
        }
        RemoteSignal::Link { from, to } => (Term::tuple([op(LINK), pid(from), pid(to)]), None),
        RemoteSignal::GroupLeader { leader, to } => {
            (Term::tuple([op(GROUP_LEADER), pid(leader), pid(to)]), None)
        }
        RemoteSignal::Unlink { id, from, to } => (
            Term::tuple([op(UNLINK_ID), Term::from(id), pid(from), pid(to)]),
            None,
        ),
        RemoteSignal::UnlinkAck { id, from, to } => (
            Term::tuple([op(UNLINK_ID_ACK), id, pid(from), pid(to)]),
            None,
        ),
        RemoteSignal::Exit { from, to, reason } => {
            (Term::tuple([op(EXIT), pid(from), pid(to), reason]), None)
        }
        RemoteSignal::Exit2 { from, to, reason } => {
            (Term::tuple([op(EXIT2), pid(from), pid(to), reason]), None)
        }
        RemoteSignal::Monitor {
            from,
            to,
            reference,
        } => (
            Term::tuple([
                op(MONITOR_P),
                pid(from),
                to.to_term(),
                Term::Reference(reference),
            ]),
            None,
        ),
        RemoteSignal::Demonitor {
            from,
            to,
            reference,
        } => (
            Term::tuple([
                op(DEMONITOR_P),
                pid(from),
                to.to_term(),
                Term::Reference(reference),
            ]),
            None,
        ),
        RemoteSignal::SpawnReply {
            id,
            to,
            flags,
            result,
        } => (
            Term::tuple([
                op(SPAWN_REPLY),
                id,
                pid(to),
                Term::from(i64::from(flags)),
                result,
            ]),
            None,
        ),
        RemoteSignal::SpawnRequest {
            id,
            from,
            group_leader,
            module,
            function,
            args,
            link,
            monitor,
        } => {
            let arity = Term::from(args.len() as i64);
            let mut options = Vec::new();
            if link {
                options.push(Term::atom("link"));
            }
            if monitor {
                options.push(Term::atom("monitor"));
            }
            let mfa = Term::tuple([Term::Atom(module), Term::Atom(function), arity]);
            (
                Term::tuple([
                    op(SPAWN_REQUEST),
                    Term::Reference(id),
                    pid(from),
                    pid(group_leader),
                    mfa,
                    Term::list(options),
                ]),
                Some(Term::list(args)),
            )
        }
        RemoteSignal::MonitorExit {
            from,
            to,
            reference,
            reason,
        } => (
            Term::tuple([
                op(MONITOR_P_EXIT),
                from.to_term(),
                pid(to),
                Term::Reference(reference),
                reason,
            ]),
            None,
        ),
        _ => return None,
    };
    Some(Outgoing { control, payload })
}

fn target(t: &Term) -> Option<Target> {
    match t {
        Term::Pid(p) => Some(Target::Pid(p.clone())),
        Term::Atom(a) => Some(Target::Name(a.clone())),
        _ => None,
    }
}

impl Deliver for Bridge {
    fn deliver(&self, node: &Atom, delivery: Delivery) {
        let Some(incoming) = self.incoming.get() else {
            return;
        };
        match delivery {
            Delivery::ToPid { to, message, .. } => incoming.message(&to, message),
            Delivery::ToName { to, message, .. } => {
                if !incoming.message_named(to.as_str(), message) {
                    tracing::debug!("dist: no process registered as {to} (from {node})");
                }
            }
            Delivery::ToAlias { alias, message, .. } => incoming.message_alias(&alias, message),
        }
    }

    fn signal(
        &self,
        node: &Atom,
        connection: u64,
        control: &[Term],
        payload: Option<&Term>,
    ) -> bool {
        let Some(incoming) = self.incoming.get() else {
            return false;
        };
        let Some(op) = control.first().and_then(Term::as_int) else {
            return false;
        };
        match (op, control) {
            (LINK, [_, Term::Pid(from), Term::Pid(to)]) => {
                incoming.link(node, connection, from, to)
            }
            (UNLINK_ID, [_, id, Term::Pid(from), Term::Pid(to)]) => {
                incoming.unlink(node, connection, id.clone(), from, to)
            }
            // Obsolete (before OTP 23's UNLINK_ID): no ack.
            (UNLINK, [_, Term::Pid(from), Term::Pid(to)]) => {
                incoming.unlink_quietly(from, to);
            }
            (UNLINK_ID_ACK, [_, id, Term::Pid(from), Term::Pid(to)]) => {
                incoming.unlink_ack(id, from, to)
            }
            (GROUP_LEADER, [_, Term::Pid(leader), Term::Pid(to)]) => {
                incoming.group_leader(leader, to)
            }
            (EXIT, [_, Term::Pid(from), Term::Pid(to), reason])
            | (EXIT_TT, [_, Term::Pid(from), Term::Pid(to), _, reason]) => {
                incoming.exit(node, connection, from, to, reason.clone(), true)
            }
            (EXIT2, [_, Term::Pid(from), Term::Pid(to), reason])
            | (EXIT2_TT, [_, Term::Pid(from), Term::Pid(to), _, reason]) => {
                incoming.exit(node, connection, from, to, reason.clone(), false)
            }
            (MONITOR_P, [_, Term::Pid(from), to, Term::Reference(r)]) => match target(to) {
                Some(to) => incoming.monitor(node, connection, from, &to, r.clone()),
                None => return false,
            },
            (DEMONITOR_P, [_, _, _, Term::Reference(r)]) => incoming.demonitor(node, r),
            (MONITOR_P_EXIT, [_, _, Term::Pid(to), Term::Reference(r), reason]) => {
                incoming.monitor_exit(to, r, reason.clone())
            }
            (SPAWN_REQUEST, [_, id, Term::Pid(from), group_leader, mfa, opts])
            | (SPAWN_REQUEST_TT, [_, id, Term::Pid(from), group_leader, mfa, opts, _]) => {
                let request = SpawnRequest {
                    id,
                    from,
                    group_leader,
                    mfa,
                    opts,
                    args: payload,
                };
                self.spawn_request(incoming, node, connection, request)
            }
            (SPAWN_REPLY, [_, Term::Reference(id), Term::Pid(to), flags, result]) => {
                let flags = flags.as_int().unwrap_or(0);
                incoming.spawn_reply(node, id, to, flags, result)
            }
            _ => return false,
        }
        true
    }

    fn connection_up(&self, node: &Atom, connection: u64, flags: u64) {
        lock(&self.flags).insert(node.clone(), flags);
        if let Some(incoming) = self.incoming.get() {
            incoming.node_up(node, connection);
        }
    }

    fn connection_down(&self, node: &Atom, connection: u64) {
        lock(&self.flags).remove(node);
        // Before the runtime fires the relations: a LINK queued before
        // this is from an earlier epoch. What the lane holds was queued
        // for the lost connection: dropped, its suspended senders resumed.
        let lane = lock(&self.outbound).get(node).cloned();
        if let Some(lane) = lane {
            let dropped = lane.connection_lost();
            if dropped > 0 {
                tracing::info!(
                    "dist: {dropped} signals queued for the lost connection to {node} dropped"
                );
            }
        }
        if let Some(incoming) = self.incoming.get() {
            incoming.connection_down(node, connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_from_outside_any_process_are_dropped_past_twice_the_limit() {
        let lane = Lane::new(1000);
        let pid = |id| Pid {
            node: Atom::new("p@h"),
            id,
            serial: 0,
            creation: 1,
        };
        let message = |i: i64| RemoteSignal::Send {
            from: pid(0),
            to: pid(1),
            message: Term::tuple([Term::from(i), Term::binary(vec![0u8; 100])]),
        };
        for i in 0..100 {
            lane.push(message(i), None);
        }
        let (queued, bytes, dropped) = {
            let s = lock(&lane.state);
            (s.queue.len(), s.bytes, s.dropped)
        };
        assert!(bytes < 2000 + 200, "{bytes} bytes queued");
        assert!(queued > 0 && dropped > 0 && queued + dropped as usize == 100);
        // A signal that is not a message is never dropped.
        lane.push(
            RemoteSignal::Link {
                from: pid(0),
                to: pid(1),
            },
            None,
        );
        assert_eq!(lock(&lane.state).queue.len(), queued + 1);
        // What was queued comes out in order.
        let mut next = 0;
        while let Some((signal, _)) = lane.pop() {
            if let RemoteSignal::Send { message, .. } = signal {
                assert_eq!(message.as_tuple().unwrap()[0], Term::from(next));
                next += 1;
            }
        }
        assert_eq!(next as usize, queued);
    }
}
