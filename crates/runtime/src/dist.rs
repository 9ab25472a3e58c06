//! Processes across nodes: the runtime's side of Erlang distribution.
//!
//! The runtime knows nothing of sockets or the wire. When distribution
//! starts ([`Handle::start_distribution`]) the distribution layer installs
//! a [`Distribution`] trait object: the runtime hands it every signal for a
//! process on another node (a message, a link, an unlink, an exit signal, a
//! monitor, a demonitor, a monitor's `DOWN`), already converted to terms.
//! The other way, the distribution layer calls [`Incoming`] for every signal
//! from a peer to a local process, in the order the connection delivered
//! them, and for each connection that comes up or goes down.
//!
//! # Pids, references and nodes
//!
//! A runtime keeps a *node table*: index 0 is this node, every other index
//! names one incarnation of another node (its name atom and creation). A
//! pid of another node is an ordinary [`Pid`] whose `node()` is its index.
//! A local pid crosses as `NEW_PID_EXT` with this node's name and creation
//! ([`pid_to_term`]) and comes back as the same pid ([`pid_from_term`]); a
//! pid of this node with another creation is a pid of an earlier
//! incarnation: it names no live process (messages to it are dropped,
//! links and monitors to it fail with `noproc`). Monitor references made
//! here cross as three-word references of this node and come back as the
//! same [`MonitorRef`]. The table only grows, up to [`MAX_NODES`] entries;
//! past that a pid of yet another node is refused (the message carrying it
//! is dropped with a log line).
//!
//! # Messages are terms
//!
//! What crosses nodes is an [`ember_term::Term`]: [`send`](crate::send) of
//! a `Term` to a remote pid sends it; an incoming message lands in the
//! mailbox as a `Term`, received with `receive::<Term>()` like any other
//! message. A value of any other type sent to a remote pid cannot cross: it
//! is dropped with a `warn` log line (as a message to a dead pid is
//! dropped), never a panic. Exit reasons cross as terms too
//! ([`ExitReason::to_term`]).
//!
//! # Connections going down
//!
//! Every local process with a link or monitor that crosses to node N is
//! recorded in N's *interest set*, in the same critical section of its
//! relations lock that adds the relation. When the connection to N goes
//! down, [`Incoming::node_down`] takes N's set and, for each process, fires
//! every link to a process of N (an exit signal `noconnection`) and every
//! monitor on one (`Down` with `noconnection`), and forgets the monitors
//! processes of N held on it. A relation added after the set was taken goes
//! into a fresh set, and its signal goes out on a new connection (or, if
//! that cannot be made, fails with `noconnection` at once): no relation is
//! left unrecorded. The loom model at the end of this file checks this.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ember_term::{Atom, Pid as TermPid, Reference, Term};

use crate::context;
use crate::loom::sync::Mutex;
use crate::mailbox::Envelope;
use crate::pid::{MonitorRef, Pid, Ref};
use crate::process::Process;
use crate::reason::ExitReason;
use crate::runtime::{Handle, Shared};
use crate::scheduler;
use crate::signal::{self, Down};

mod remote_spawn;

pub use remote_spawn::{
    spawn, spawn_link, spawn_monitor, spawn_opt, RemoteSpawnError, RemoteSpawnOptions,
    RemoteSpawned, DEFAULT_SPAWN_TIMEOUT,
};

/// The most node incarnations a runtime's node table holds.
pub const MAX_NODES: usize = 65_536;

/// The name of this node before distribution starts, as in Erlang.
const NONODE: &str = "nonode@nohost";

/// Where the runtime hands signals for processes on other nodes: the
/// distribution layer implements it (`ember-dist`).
pub trait Distribution: Send + Sync + 'static {
    /// Takes `signal` for a process on `node`. Called from any thread,
    /// often a scheduler's: it must not block. Signals handed over for one
    /// node must go out in the order they were handed over (that keeps
    /// Erlang's per-pair ordering). If no connection to `node` can be made,
    /// a `Link` must come back as an exit signal `noconnection` and a
    /// `Monitor` as a `DOWN` with `noconnection` (through [`Incoming`]).
    fn signal(&self, node: &Atom, signal: RemoteSignal);

    /// Takes a signal that the running process `sender` sends on its own
    /// behalf: a message (`Send`, `SendNamed`, `SendAlias`), or a `Link`,
    /// `Unlink`, `Monitor`, `Demonitor` or `Exit2` it makes. As
    /// [`signal`](Distribution::signal), and while the connection to
    /// `node` is busy the layer may suspend the sender
    /// ([`Sender::suspend`], Erlang's `busy_dist_port`). The signal itself
    /// is always taken. The default never suspends. Signals sent for no
    /// running process (the `Exit`s and `MonitorExit`s of a death, answers
    /// to a peer) and messages from outside any process come through
    /// [`signal`](Distribution::signal).
    fn message(&self, node: &Atom, signal: RemoteSignal, sender: &Sender<'_>) {
        let _ = sender;
        self.signal(node, signal);
    }
}

/// The process sending a message to another node, as
/// [`Distribution::message`] sees it: the layer may suspend it.
pub struct Sender<'a> {
    process: &'a Arc<Process>,
}

impl Sender<'_> {
    /// The sender's pid.
    pub fn pid(&self) -> Pid {
        self.process.pid
    }

    /// Suspends the sender from its next yield point (a `receive`,
    /// `yield_point`, `sleep` or any other await that returns to the
    /// scheduler) until the returned [`Suspension`] is resumed or dropped.
    /// The scheduler thread is never blocked: the process is simply not
    /// polled meanwhile. Suspensions add up: the process runs again once
    /// all are resumed.
    pub fn suspend(&self) -> Suspension {
        self.process.busy_dist.fetch_add(1, Ordering::AcqRel);
        Suspension {
            process: Some(Arc::downgrade(self.process)),
        }
    }
}

/// A process suspended by [`Sender::suspend`]: [`resume`](Suspension::resume)
/// (or dropping it) lets it run again.
pub struct Suspension {
    process: Option<std::sync::Weak<Process>>,
}

impl std::fmt::Debug for Suspension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pid = self
            .process
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
            .map(|p| p.pid);
        f.debug_struct("Suspension").field("pid", &pid).finish()
    }
}

impl Suspension {
    /// The suspended process's pid, if it still exists.
    pub fn pid(&self) -> Option<Pid> {
        self.process
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
            .map(|p| p.pid)
    }

    /// Ends this suspension; the process runs again once it has no other.
    pub fn resume(mut self) {
        self.release();
    }

    fn release(&mut self) {
        let Some(process) = self.process.take().and_then(|w| w.upgrade()) else {
            return;
        };
        // The last suspension wakes the process: a poll that saw it still
        // suspended went back to waiting, and this wake-up (after the
        // decrement) reschedules it; one under way is requeued by it.
        if process.busy_dist.fetch_sub(1, Ordering::AcqRel) == 1 {
            scheduler::wake(&process);
        }
    }
}

impl Drop for Suspension {
    fn drop(&mut self) {
        self.release();
    }
}

/// A process on another node, by pid or by registered name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A pid.
    Pid(TermPid),
    /// A registered name on the node.
    Name(Atom),
}

impl Target {
    /// The target as a term (a pid or an atom), as the wire carries it.
    pub fn to_term(&self) -> Term {
        match self {
            Target::Pid(p) => Term::Pid(p.clone()),
            Target::Name(n) => Term::Atom(n.clone()),
        }
    }
}

/// A signal from a local process to one on another node, in terms.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum RemoteSignal {
    /// A message to a pid (`SEND` / `SEND_SENDER`).
    Send {
        /// The sender.
        from: TermPid,
        /// The receiver.
        to: TermPid,
        /// The message.
        message: Term,
    },
    /// A message to a registered name (`REG_SEND`).
    SendNamed {
        /// The sender.
        from: TermPid,
        /// The name.
        name: Atom,
        /// The message.
        message: Term,
    },
    /// A message to a process alias (`ALIAS_SEND`).
    SendAlias {
        /// The sender.
        from: TermPid,
        /// The alias.
        alias: Reference,
        /// The message.
        message: Term,
    },
    /// `LINK`.
    Link {
        /// The local process.
        from: TermPid,
        /// The remote one.
        to: TermPid,
    },
    /// `UNLINK_ID`.
    Unlink {
        /// The unlink's id.
        id: u64,
        /// The local process.
        from: TermPid,
        /// The remote one.
        to: TermPid,
    },
    /// `UNLINK_ID_ACK`: the answer to a peer's `UNLINK_ID`.
    UnlinkAck {
        /// The peer's unlink id.
        id: Term,
        /// The local process.
        from: TermPid,
        /// The remote one (the unlinker).
        to: TermPid,
    },
    /// `EXIT`: a linked process died (or the link's target did not exist).
    Exit {
        /// The local process.
        from: TermPid,
        /// The remote, linked one.
        to: TermPid,
        /// The reason.
        reason: Term,
    },
    /// `EXIT2`: `exit(Pid, Reason)`.
    Exit2 {
        /// The sender.
        from: TermPid,
        /// The remote process.
        to: TermPid,
        /// The reason.
        reason: Term,
    },
    /// `MONITOR_P`.
    Monitor {
        /// The local watcher.
        from: TermPid,
        /// The remote process, by pid or name.
        to: Target,
        /// The monitor's reference.
        reference: Reference,
    },
    /// `DEMONITOR_P`.
    Demonitor {
        /// The local watcher.
        from: TermPid,
        /// The remote process, by pid or name.
        to: Target,
        /// The monitor's reference.
        reference: Reference,
    },
    /// `MONITOR_P_EXIT`: a local process a remote one monitors exited (or
    /// did not exist).
    MonitorExit {
        /// The local process, by pid or by the name it was monitored by.
        from: Target,
        /// The remote watcher.
        to: TermPid,
        /// The monitor's reference (the watcher's).
        reference: Reference,
        /// The reason.
        reason: Term,
    },
    /// `SPAWN_REPLY`: the answer to a peer's `SPAWN_REQUEST`.
    SpawnReply {
        /// The request's id, as the peer sent it.
        id: Term,
        /// The requester.
        to: TermPid,
        /// 1: a link was set up; 2: a monitor was.
        flags: u8,
        /// The new pid, or an error atom.
        result: Term,
    },
    /// `GROUP_LEADER`: `group_leader(Leader, Pid)` for a remote `Pid`.
    GroupLeader {
        /// The new group leader (any node's).
        leader: TermPid,
        /// The remote process.
        to: TermPid,
    },
    /// `SPAWN_REQUEST`: start `module:function(args...)` on the node
    /// ([`spawn_opt`]); the node answers with `SPAWN_REPLY`
    /// ([`Incoming::spawn_reply`]). A layer that cannot send it answers
    /// `notsup` through `spawn_reply` itself.
    SpawnRequest {
        /// The request's reference (also the monitor's, with `monitor`).
        id: Reference,
        /// The requester.
        from: TermPid,
        /// The requester's group leader: the new process's.
        group_leader: TermPid,
        /// The module.
        module: Atom,
        /// The function.
        function: Atom,
        /// The arguments (their number is the arity).
        args: Vec<Term>,
        /// The `link` option.
        link: bool,
        /// The `monitor` option.
        monitor: bool,
    },
    /// No signal: make sure a connection is up (for `monitor_node`); if
    /// none can be made, report the node down.
    Connect,
}

/// The message [`monitor_node`] and [`monitor_nodes`] deliver when a
/// connection goes down (Erlang's `{nodedown, Node}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDown {
    /// The node.
    pub node: Atom,
}

/// The message [`monitor_nodes`] delivers when a connection comes up
/// (Erlang's `{nodeup, Node}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeUp {
    /// The node.
    pub node: Atom,
}

/// A process monitored by name on another node: what a [`Down`] of such a
/// monitor names instead of a pid (Erlang's `{Name, Node}`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RemoteName {
    /// The registered name.
    pub name: Atom,
    /// The node.
    pub node: Atom,
}

/// Why distribution could not start in a runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartError {
    /// This runtime already is a node.
    AlreadyStarted(Atom),
    /// The node name is not an atom.
    BadName(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::AlreadyStarted(n) => write!(f, "this runtime already is node {n}"),
            StartError::BadName(n) => write!(f, "{n:?} is not a node name"),
        }
    }
}

impl std::error::Error for StartError {}

/// The local processes with a link or monitor crossing to each node, and
/// the number of each node's live connection (what the distribution layer
/// reported with [`Incoming::node_up`]): a relation signal that arrived on
/// another connection is from one that is gone, and is not applied.
#[derive(Default)]
pub(crate) struct Interest {
    by_node: HashMap<Atom, HashSet<Pid>>,
    live: HashMap<Atom, u64>,
}

impl Interest {
    /// Whether `connection` is `node`'s live connection.
    fn is_live(&self, node: &Atom, connection: u64) -> bool {
        self.live.get(node) == Some(&connection)
    }

    fn add(&mut self, node: &Atom, pid: Pid) {
        match self.by_node.get_mut(node) {
            Some(set) => {
                set.insert(pid);
            }
            None => {
                self.by_node.insert(node.clone(), HashSet::from([pid]));
            }
        }
    }

    fn remove(&mut self, node: &Atom, pid: Pid) {
        if let Some(set) = self.by_node.get_mut(node) {
            set.remove(&pid);
            if set.is_empty() {
                self.by_node.remove(node);
            }
        }
    }

    fn take(&mut self, node: &Atom) -> HashSet<Pid> {
        self.by_node.remove(node).unwrap_or_default()
    }
}

/// A monitor a process of another node holds on a local one.
struct HeldMonitor {
    /// The watcher's node.
    node: Atom,
    /// The watcher's reference.
    reference: Reference,
    /// The name it was made by, if by name.
    name: Option<Atom>,
    /// The local process monitored.
    target: Pid,
    /// The local reference standing for `reference`.
    local: MonitorRef,
}

/// The node table and the bookkeeping of relations with other nodes.
#[derive(Default)]
struct Table {
    /// Node `i` is `nodes[i - 1]`: its name and creation.
    nodes: Vec<(Atom, u32)>,
    index: HashMap<(Atom, u32), u32>,
    /// Monitors processes of other nodes hold on local ones, by the id of
    /// the local reference that stands for theirs.
    held: HashMap<u64, HeldMonitor>,
    /// The same, by (node, reference words).
    held_ids: HashMap<(Atom, Vec<u32>), u64>,
    /// Names of local monitors made by name, by reference id.
    by_name: HashMap<u64, RemoteName>,
    /// `monitor_node` subscriptions: node → one entry per call.
    node_monitors: HashMap<Atom, Vec<Pid>>,
    /// `monitor_nodes` subscribers.
    node_watchers: HashSet<Pid>,
    /// Connected nodes.
    up: HashSet<Atom>,
    /// Unlinks not yet acknowledged: (local, remote) → the newest
    /// `UNLINK_ID`'s id. While one is pending, an `EXIT` from the remote
    /// process was sent before it saw the unlink: it is stale.
    unlinking: HashMap<(Pid, Pid), u64>,
    /// Remote spawns waiting for their reply, by request reference id.
    spawns: HashMap<u64, remote_spawn::PendingSpawn>,
}

/// A runtime's distribution state, once it is a node.
pub(crate) struct DistState {
    name: Atom,
    creation: u32,
    seam: Arc<dyn Distribution>,
    table: parking_lot::Mutex<Table>,
    interest: Mutex<Interest>,
}

/// Where a signal to a non-local pid goes.
enum Route {
    /// To this node on the wire.
    Remote(Atom),
    /// Nowhere: an earlier incarnation of this node, or an unknown index.
    Dead,
}

impl DistState {
    fn new(name: Atom, creation: u32, seam: Arc<dyn Distribution>) -> DistState {
        DistState {
            name,
            creation,
            seam,
            table: parking_lot::Mutex::new(Table::default()),
            interest: Mutex::new(Interest::default()),
        }
    }

    fn entry(&self, index: u32) -> Option<(Atom, u32)> {
        let table = self.table.lock();
        table.nodes.get(index.checked_sub(1)? as usize).cloned()
    }

    fn route(&self, pid: Pid) -> Route {
        match self.entry(pid.node()) {
            Some((node, _)) if node != self.name => Route::Remote(node),
            _ => Route::Dead,
        }
    }

    fn node_index(&self, node: &Atom, creation: u32) -> Option<u32> {
        let mut table = self.table.lock();
        if let Some(&i) = table.index.get(&(node.clone(), creation)) {
            return Some(i);
        }
        if table.nodes.len() >= MAX_NODES {
            return None;
        }
        table.nodes.push((node.clone(), creation));
        let i = table.nodes.len() as u32;
        table.index.insert((node.clone(), creation), i);
        Some(i)
    }

    fn term_pid(&self, pid: Pid) -> TermPid {
        let (node, creation) = if pid.is_local() {
            (self.name.clone(), self.creation)
        } else {
            self.entry(pid.node())
                .unwrap_or_else(|| (Atom::new(NONODE), 0))
        };
        TermPid {
            node,
            id: pid.number(),
            serial: pid.serial(),
            creation,
        }
    }

    /// The pid a term pid stands for; `None` if the node table is full.
    fn pid(&self, p: &TermPid) -> Option<Pid> {
        if p.node == self.name && p.creation == self.creation {
            return Some(Pid::from_parts(p.id, p.serial));
        }
        let index = self.node_index(&p.node, p.creation)?;
        Some(Pid::remote(index, p.id, p.serial))
    }

    /// The live-incarnation local pid a term pid names, if it is one.
    fn local_pid(&self, p: &TermPid) -> Option<Pid> {
        (p.node == self.name && p.creation == self.creation)
            .then(|| Pid::from_parts(p.id, p.serial))
    }

    fn term_ref(&self, r: Ref) -> Reference {
        let id = r.id();
        Reference {
            node: self.name.clone(),
            creation: self.creation,
            ids: vec![(id & 0x3ffff) as u32, (id >> 18) as u32, (id >> 50) as u32],
        }
    }

    fn local_ref(&self, r: &Reference) -> Option<Ref> {
        if r.node != self.name || r.creation != self.creation {
            return None;
        }
        let [w0, w1, w2] = r.ids[..] else {
            return None;
        };
        if w0 > 0x3ffff || w2 >= 1 << 14 {
            return None;
        }
        Some(Ref::local(
            u64::from(w0) | (u64::from(w1) << 18) | (u64::from(w2) << 50),
        ))
    }

    fn emit(&self, node: &Atom, signal: RemoteSignal) {
        self.seam.signal(node, signal);
    }

    /// Hands over a signal `from` sends on its own behalf (a link, an
    /// unlink, a monitor, a demonitor, `exit/2`): when `from` is the running
    /// process, the layer may suspend it as for a message (Erlang's
    /// `busy_dist_port` suspends these too). Otherwise (a signal sent for a
    /// process by another, or from outside any process) it is always taken
    /// and suspends no one.
    fn emit_from(&self, node: &Atom, from: Pid, signal: RemoteSignal) {
        let mut signal = Some(signal);
        context::try_with_current(|process| {
            if process.pid == from {
                if let Some(signal) = signal.take() {
                    self.seam.message(node, signal, &Sender { process });
                }
            }
        });
        if let Some(signal) = signal {
            self.seam.signal(node, signal);
        }
    }

    /// Hands over a message: from a process, one the layer may suspend.
    fn emit_message(&self, node: &Atom, signal: RemoteSignal) {
        let mut signal = Some(signal);
        context::try_with_current(|process| {
            if let Some(signal) = signal.take() {
                self.seam.message(node, signal, &Sender { process });
            }
        });
        if let Some(signal) = signal {
            self.seam.signal(node, signal);
        }
    }
}

impl Shared {
    /// The distribution state, if this runtime is a node.
    pub(crate) fn dist(&self) -> Option<Arc<DistState>> {
        self.dist.read().clone()
    }

    /// Sends a message to a pid of another node: a [`Term`] crosses, any
    /// other value is dropped with a log line.
    pub(crate) fn send_remote(&self, to: Pid, message: Envelope) {
        let Some(dist) = self.dist() else {
            return scheduler::drop_contained(message);
        };
        let Route::Remote(node) = dist.route(to) else {
            return scheduler::drop_contained(message);
        };
        match message.downcast::<Term>() {
            Ok(term) => {
                let from = context::try_with_current(|p| p.pid).unwrap_or(Pid::OUTSIDE);
                let signal = RemoteSignal::Send {
                    from: dist.term_pid(from),
                    to: dist.term_pid(to),
                    message: term,
                };
                dist.emit_message(&node, signal);
            }
            Err(other) => {
                tracing::warn!(
                    "ember: a message to {to} on {node} was dropped: only an ember_term::Term can cross to another node"
                );
                scheduler::drop_contained(other);
            }
        }
    }

    /// `exit/2` to a pid of another node.
    pub(crate) fn exit_remote(&self, from: Pid, to: Pid, reason: ExitReason) {
        let Some(dist) = self.dist() else { return };
        if let Route::Remote(node) = dist.route(to) {
            let signal = RemoteSignal::Exit2 {
                from: dist.term_pid(from),
                to: dist.term_pid(to),
                reason: reason.to_term(),
            };
            dist.emit_from(&node, from, signal);
        }
    }
}

/// What a terminating process owes other nodes, gathered by `finish_exit`
/// (`signal.rs`) while it walks the process's relations.
#[derive(Default)]
pub(crate) struct RemoteExit {
    pub(crate) links: Vec<Pid>,
    pub(crate) monitoring: Vec<(MonitorRef, Pid)>,
    pub(crate) monitored_by: Vec<(MonitorRef, Pid)>,
}

impl RemoteExit {
    /// Sends the exit signals, demonitors and `DOWN`s of `pid`'s death, and
    /// forgets it in the interest sets.
    pub(crate) fn send(self, rt: &Shared, pid: Pid, reason: &ExitReason) {
        let Some(dist) = rt.dist() else { return };
        let me = dist.term_pid(pid);
        let reason_term = reason.to_term();
        let mut nodes = HashSet::new();
        for linked in self.links {
            if let Route::Remote(node) = dist.route(linked) {
                let to = dist.term_pid(linked);
                let reason = reason_term.clone();
                dist.emit(
                    &node,
                    RemoteSignal::Exit {
                        from: me.clone(),
                        to,
                        reason,
                    },
                );
                nodes.insert(node);
            }
        }
        for (monitor, target) in self.monitoring {
            let by_name = dist.table.lock().by_name.remove(&monitor.0.id());
            if let Route::Remote(node) = dist.route(target) {
                let to = match by_name {
                    Some(n) => Target::Name(n.name),
                    None => Target::Pid(dist.term_pid(target)),
                };
                let reference = dist.term_ref(monitor.0);
                dist.emit(
                    &node,
                    RemoteSignal::Demonitor {
                        from: me.clone(),
                        to,
                        reference,
                    },
                );
                nodes.insert(node);
            }
        }
        for (monitor, watcher) in self.monitored_by {
            let held = dist.table.lock().take_held(monitor.0.id());
            if let Some(held) = held {
                let from = match held.name {
                    Some(n) => Target::Name(n),
                    None => Target::Pid(me.clone()),
                };
                let signal = RemoteSignal::MonitorExit {
                    from,
                    to: dist.term_pid(watcher),
                    reference: held.reference,
                    reason: reason_term.clone(),
                };
                dist.emit(&held.node, signal);
                nodes.insert(held.node);
            }
        }

        let mut interest = dist.interest.lock();
        for node in &nodes {
            interest.remove(node, pid);
        }
    }
}

impl Table {
    fn take_held(&mut self, id: u64) -> Option<HeldMonitor> {
        let held = self.held.remove(&id)?;
        self.held_ids
            .remove(&(held.node.clone(), held.reference.ids.clone()));
        Some(held)
    }
}

/// `group_leader(leader, pid)` for `pid` of another node: sends
/// `GROUP_LEADER`; `None` if `pid` names no reachable node.
pub(crate) fn group_leader_remote(rt: &Shared, pid: Pid, leader: Pid) -> Option<()> {
    let dist = rt.dist()?;
    let Route::Remote(node) = dist.route(pid) else {
        return None;
    };
    let signal = RemoteSignal::GroupLeader {
        leader: dist.term_pid(leader),
        to: dist.term_pid(pid),
    };
    dist.emit(&node, signal);
    Some(())
}

/// Links the calling process `me` with `pid` of another node.
pub(crate) fn link_remote(me: &Arc<Process>, pid: Pid) -> Result<(), signal::LinkError> {
    let dist = me.rt.dist();
    let node = match dist.as_ref().map(|d| d.route(pid)) {
        Some(Route::Remote(node)) => node,
        _ => return Err(link_failed(me, pid)),
    };
    let dist = dist.expect("routed");
    // A link made again while an unlink is in flight is a new link (as
    // OTP's `link/1`): the `UNLINK_ID_ACK` to come no longer concerns it,
    // and the peer's `EXIT`s count again.
    dist.table.lock().unlinking.remove(&(me.pid, pid));
    let added = add_remote_relation(&**me, &node, &dist.interest, |r| {
        r.links.insert(pid);
    });
    if added.is_none() {
        return Err(signal::LinkError::NoProc(me.pid));
    }
    let signal = RemoteSignal::Link {
        from: dist.term_pid(me.pid),
        to: dist.term_pid(pid),
    };
    dist.emit_from(&node, me.pid, signal);
    Ok(())
}

fn link_failed(me: &Arc<Process>, pid: Pid) -> signal::LinkError {
    if me.trap_exit() {
        signal::deliver(
            me,
            Envelope::new(signal::Exit {
                from: pid,
                reason: ExitReason::NoProc,
            }),
        );
    }
    signal::LinkError::NoProc(pid)
}

/// Adds a relation with a process of `node` to `process` and records
/// `process` in `node`'s interest set, in one critical section of its
/// relations lock; `None` if it is exiting.
pub(crate) fn add_remote_relation<R>(
    process: &impl signal::Node,
    node: &Atom,
    interest: &Mutex<Interest>,
    f: impl FnOnce(&mut crate::process::Relations) -> R,
) -> Option<R> {
    signal::with_live_relations(process, |r| {
        let out = f(r);
        interest.lock().add(node, process.pid());
        out
    })
}

/// [`add_remote_relation`] for a relation a peer asked for on its
/// connection number `connection`: made only while that connection is
/// `node`'s live one, checked in the same critical section of the interest
/// lock that records `process` (so a connection going down either finds
/// the relation and fires it, or the relation is never made). `None` if
/// `process` is exiting, `Some(None)` if the connection is gone.
fn add_remote_relation_on<R>(
    process: &impl signal::Node,
    node: &Atom,
    connection: u64,
    interest: &Mutex<Interest>,
    f: impl FnOnce(&mut crate::process::Relations) -> R,
) -> Option<Option<R>> {
    signal::with_live_relations(process, |r| {
        let mut interest = interest.lock();
        if !interest.is_live(node, connection) {
            return None;
        }
        let out = f(r);
        interest.add(node, process.pid());
        Some(out)
    })
}

/// Removes `me`'s side of a link to `pid` of another node and tells it
/// with `UNLINK_ID`; until the peer acknowledges that id (the *unlinking*
/// state of OTP's link protocol), an `EXIT` from `pid` to `me` was sent
/// before the peer saw the unlink and a `LINK` from it crossed the unlink:
/// both are ignored. Linking again ends the unlinking state at once (the
/// ack then changes nothing), as OTP's `link/1` does.
pub(crate) fn unlink_remote(me: &Arc<Process>, pid: Pid) {
    signal::unlink_side(&**me, pid);
    let Some(dist) = me.rt.dist() else { return };
    if let Route::Remote(node) = dist.route(pid) {
        let id = me.rt.make_ref().id();
        // Recorded before the signal can go out, so the ack finds it.
        dist.table.lock().unlinking.insert((me.pid, pid), id);
        let signal = RemoteSignal::Unlink {
            id,
            from: dist.term_pid(me.pid),
            to: dist.term_pid(pid),
        };
        dist.emit_from(&node, me.pid, signal);
    }
}

/// Monitors `pid` of another node (by pid, or by `name` with `pid` the
/// node's placeholder); `None` if it cannot be reached (the caller delivers
/// `noproc`).
pub(crate) fn monitor_remote(
    me: &Arc<Process>,
    pid: Pid,
    monitor: MonitorRef,
    name: Option<RemoteName>,
) -> Result<(), ()> {
    let Some(dist) = me.rt.dist() else {
        return Err(());
    };
    let Route::Remote(node) = dist.route(pid) else {
        return Err(());
    };
    let to = match &name {
        Some(n) => Target::Name(n.name.clone()),
        None => Target::Pid(dist.term_pid(pid)),
    };
    if let Some(name) = name {
        dist.table.lock().by_name.insert(monitor.0.id(), name);
    }
    let added = add_remote_relation(&**me, &node, &dist.interest, |r| {
        r.more_mut().monitoring.insert(monitor, pid);
    });
    if added.is_none() {
        dist.table.lock().by_name.remove(&monitor.0.id());
        return Ok(()); // the caller is exiting: it monitors nothing more
    }
    let signal = RemoteSignal::Monitor {
        from: dist.term_pid(me.pid),
        to,
        reference: dist.term_ref(monitor.0),
    };
    dist.emit_from(&node, me.pid, signal);
    Ok(())
}

/// Tells the node of `target` that monitor `monitor` is gone.
pub(crate) fn demonitor_remote(rt: &Shared, me: Pid, monitor: MonitorRef, target: Pid) {
    let Some(dist) = rt.dist() else { return };
    let by_name = dist.table.lock().by_name.remove(&monitor.0.id());
    if let Route::Remote(node) = dist.route(target) {
        let to = match by_name {
            Some(n) => Target::Name(n.name),
            None => Target::Pid(dist.term_pid(target)),
        };
        let signal = RemoteSignal::Demonitor {
            from: dist.term_pid(me),
            to,
            reference: dist.term_ref(monitor.0),
        };
        dist.emit_from(&node, me, signal);
    }
}

/// The name a `Down` of `monitor` names, for a monitor made by name.
pub(crate) fn down_name(rt: &Shared, monitor: MonitorRef) -> Option<RemoteName> {
    if monitor.0.node() != 0 {
        return None;
    }
    rt.dist()?.table.lock().by_name.remove(&monitor.0.id())
}

impl Handle {
    /// Makes this runtime the node `name` (`alive@host`) with `creation`,
    /// handing signals for other nodes to `seam`. Returns what the
    /// distribution layer calls for signals from other nodes. A runtime
    /// becomes a node once.
    pub fn start_distribution(
        &self,
        name: &str,
        creation: u32,
        seam: Arc<dyn Distribution>,
    ) -> Result<Incoming, StartError> {
        let name = Atom::try_new(name).map_err(|_| StartError::BadName(name.to_string()))?;
        let mut slot = self.shared.dist.write();
        if let Some(d) = slot.as_ref() {
            return Err(StartError::AlreadyStarted(d.name.clone()));
        }
        let state = Arc::new(DistState::new(name, creation, seam));
        *slot = Some(state.clone());
        Ok(Incoming {
            rt: self.shared.clone(),
            dist: state,
        })
    }
}

/// The distribution layer's way into the runtime: it calls these for
/// signals from other nodes, per connection in arrival order. None blocks.
#[derive(Clone)]
pub struct Incoming {
    rt: Arc<Shared>,
    dist: Arc<DistState>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("node", &self.dist.name)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// This node's name.
    pub fn node(&self) -> &Atom {
        &self.dist.name
    }

    /// This node's creation.
    pub fn creation(&self) -> u32 {
        self.dist.creation
    }

    /// The runtime pid a term pid stands for (`None`: node table full).
    pub fn pid(&self, p: &TermPid) -> Option<Pid> {
        self.dist.pid(p)
    }

    /// The term a runtime pid crosses as.
    pub fn term_pid(&self, pid: Pid) -> TermPid {
        self.dist.term_pid(pid)
    }

    /// The live local process a term pid names, if any.
    pub fn local_pid(&self, p: &TermPid) -> Option<Pid> {
        self.dist
            .local_pid(p)
            .filter(|&pid| self.rt.lookup(pid).is_some())
    }

    /// `SEND`: a message to a local pid (dropped if it names no process).
    pub fn message(&self, to: &TermPid, message: Term) {
        match self.dist.local_pid(to) {
            Some(pid) => self.rt.send_envelope(pid, Envelope::new(message)),
            None => tracing::debug!("ember: no local process {to:?} for a message"),
        }
    }

    /// `REG_SEND`: a message to a registered name; false if none has it.
    pub fn message_named(&self, name: &str, message: Term) -> bool {
        match self.rt.whereis(name) {
            Some(pid) => {
                self.rt.send_envelope(pid, Envelope::new(message));
                true
            }
            None => false,
        }
    }

    /// `GROUP_LEADER`: makes `leader` the group leader of the local process
    /// `to` (Erlang's `group_leader(Leader, Pid)` from another node);
    /// ignored if `to` is no live local process or `leader` cannot be named.
    pub fn group_leader(&self, leader: &TermPid, to: &TermPid) {
        let (Some(to), Some(leader)) = (self.dist.local_pid(to), self.dist.pid(leader)) else {
            tracing::debug!("ember: group_leader({leader:?}, {to:?}) names no local process");
            return;
        };
        if crate::io::set_group_leader_in(&self.rt, to, leader).is_err() {
            tracing::debug!("ember: group_leader for {to}, which is not alive");
        }
    }

    /// `ALIAS_SEND`: a message to an alias of this node (dropped if it is
    /// not active).
    pub fn message_alias(&self, alias: &Reference, message: Term) {
        match self.dist.local_ref(alias) {
            Some(r) => self.rt.send_to_alias(r, Envelope::new(message)),
            None => tracing::debug!("ember: {alias:?} is no alias of this node: dropped"),
        }
    }

    /// `LINK` from `from` (remote) to `to` (local), received on `node`'s
    /// connection number `connection`: links them, or answers `EXIT` with
    /// `noproc` if `to` is not alive. Ignored while `to` is unlinking from
    /// `from` (the `LINK` crossed its `UNLINK_ID`: the peer drops its link
    /// when that arrives, so neither side keeps one), and when
    /// `connection` is no longer the node's live one (the peer fired its
    /// side with `noconnection` when it went down).
    pub fn link(&self, node: &Atom, connection: u64, from: &TermPid, to: &TermPid) {
        let target = self.dist.local_pid(to).and_then(|p| self.rt.lookup(p));
        let remote = self.dist.pid(from);
        let linked = match (target, remote) {
            (Some(target), Some(remote)) => {
                if self
                    .dist
                    .table
                    .lock()
                    .unlinking
                    .contains_key(&(target.pid, remote))
                {
                    tracing::debug!(
                        "ember: a LINK from {remote} crossed {}'s unlink: ignored",
                        target.pid
                    );
                    return;
                }
                match add_remote_relation_on(&*target, node, connection, &self.dist.interest, |r| {
                    r.links.insert(remote);
                }) {
                    Some(Some(())) => true,
                    Some(None) => {
                        tracing::debug!(
                            "ember: a LINK from {remote} on a lost connection to {node}: ignored"
                        );
                        return;
                    }
                    None => false,
                }
            }
            _ => false,
        };
        if !linked {
            let signal = RemoteSignal::Exit {
                from: to.clone(),
                to: from.clone(),
                reason: Term::atom("noproc"),
            };
            self.dist.emit(node, signal);
        }
    }

    /// `UNLINK_ID` from `from` (remote) to `to` (local), received on
    /// `node`'s connection number `connection`: removes the link (if `to`
    /// is unlinking itself there is none left to remove; its own ack will
    /// end that) and acknowledges on the same connection. From a
    /// connection that is no longer live, nothing: it must not remove a
    /// link made again since, and its ack has no connection to go on.
    pub fn unlink(&self, node: &Atom, connection: u64, id: Term, from: &TermPid, to: &TermPid) {
        if !self.dist.interest.lock().is_live(node, connection) {
            tracing::debug!("ember: an UNLINK_ID from {from:?} on a lost connection: ignored");
            return;
        }
        if let (Some(target), Some(remote)) = (
            self.dist.local_pid(to).and_then(|p| self.rt.lookup(p)),
            self.dist.pid(from),
        ) {
            signal::unlink_side(&*target, remote);
        }
        let ack = RemoteSignal::UnlinkAck {
            id,
            from: to.clone(),
            to: from.clone(),
        };
        self.dist.emit(node, ack);
    }

    /// `UNLINK_ID_ACK` from `from` (remote) to `to` (local): the peer has
    /// seen the unlink `id`; `EXIT`s from `from` count again (if the
    /// link was made again meanwhile). An ack for an older unlink than
    /// the newest one changes nothing.
    pub fn unlink_ack(&self, id: &Term, from: &TermPid, to: &TermPid) {
        let (Some(local), Some(remote), Some(id)) = (
            self.dist.local_pid(to),
            self.dist.pid(from),
            id.as_int().and_then(|i| u64::try_from(i).ok()),
        ) else {
            return;
        };
        let mut table = self.dist.table.lock();
        if table.unlinking.get(&(local, remote)) == Some(&id) {
            table.unlinking.remove(&(local, remote));
        }
    }

    /// Whether the local process `from` still holds its link to `to`:
    /// the distribution layer sends a queued `LINK` only then (a link
    /// fired by a lost connection before its `LINK` went out must not be
    /// made on the next connection). `None` when `from` has exited (or is
    /// exiting): its link may have been fired by a lost connection, or it
    /// may have died with it, and then the `EXIT` its death sent along the
    /// link follows the `LINK`, as in Erlang when a process links and dies
    /// at once; the layer decides by whether a connection was lost since
    /// the `LINK` was queued.
    pub fn holds_link(&self, from: &TermPid, to: &TermPid) -> Option<bool> {
        let local = self.dist.local_pid(from)?;
        let process = self.rt.lookup(local)?;
        let remote = self.dist.pid(to)?;
        signal::with_live_relations(&*process, |r| r.links.contains(&remote))
    }

    /// Whether the local process `from` still holds the monitor
    /// `reference` (as [`holds_link`](Incoming::holds_link), for a queued
    /// `MONITOR_P`).
    pub fn holds_monitor(&self, from: &TermPid, reference: &Reference) -> bool {
        let (Some(process), Some(r)) = (
            self.dist.local_pid(from).and_then(|p| self.rt.lookup(p)),
            self.dist.local_ref(reference),
        ) else {
            return false;
        };
        let monitor = MonitorRef(r);
        signal::with_live_relations(&*process, |rel| {
            rel.more()
                .is_some_and(|m| m.monitoring.contains_key(&monitor))
        })
        .unwrap_or(false)
    }

    /// The obsolete `UNLINK` (no acknowledgement): removes the link.
    pub fn unlink_quietly(&self, from: &TermPid, to: &TermPid) {
        if let (Some(target), Some(remote)) = (
            self.dist.local_pid(to).and_then(|p| self.rt.lookup(p)),
            self.dist.pid(from),
        ) {
            signal::unlink_side(&*target, remote);
        }
    }

    /// `EXIT` (along a link, `linked`) or `EXIT2` (`exit/2`) from `from`
    /// to the local `to`, received on `node`'s connection number
    /// `connection`. An `EXIT` is ignored while `to` is unlinking from
    /// `from`, and when `connection` is no longer live (the link it was
    /// sent along was fired with `noconnection`; one made since is
    /// another link).
    pub fn exit(
        &self,
        node: &Atom,
        connection: u64,
        from: &TermPid,
        to: &TermPid,
        reason: Term,
        linked: bool,
    ) {
        let (Some(target), Some(from)) = (
            self.dist.local_pid(to).and_then(|p| self.rt.lookup(p)),
            self.dist.pid(from),
        ) else {
            return;
        };
        if linked && !self.dist.interest.lock().is_live(node, connection) {
            tracing::debug!("ember: an EXIT from {from} on a lost connection: ignored");
            return;
        }
        if linked
            && self
                .dist
                .table
                .lock()
                .unlinking
                .contains_key(&(target.pid, from))
        {
            tracing::debug!(
                "ember: a stale EXIT from {from} to {} (unlink pending)",
                target.pid
            );
            return;
        }
        let reason = ExitReason::from_term(reason);
        if linked {
            signal::receive_link_signal(&target, from, reason);
        } else {
            signal::receive_exit_signal(&target, from, reason);
        }
    }

    /// `MONITOR_P` from `from` (remote) on a local process, by pid or name,
    /// received on `node`'s connection number `connection`: records it, or
    /// answers `MONITOR_P_EXIT` with `noproc`. Ignored when `connection` is
    /// no longer live (the watcher's `DOWN` fired with `noconnection`).
    pub fn monitor(
        &self,
        node: &Atom,
        connection: u64,
        from: &TermPid,
        to: &Target,
        reference: Reference,
    ) {
        let (pid, name) = match to {
            Target::Pid(p) => (self.dist.local_pid(p), None),
            Target::Name(n) => (self.rt.whereis(n.as_str()), Some(n.clone())),
        };
        let target = pid.and_then(|p| self.rt.lookup(p));
        let watcher = self.dist.pid(from);
        if let (Some(target), Some(watcher)) = (target, watcher) {
            let local = MonitorRef(Ref::of_node(watcher.node(), self.rt.make_ref().id()));
            let held = HeldMonitor {
                node: node.clone(),
                reference: reference.clone(),
                name: name.clone(),
                target: target.pid,
                local,
            };
            {
                let mut table = self.dist.table.lock();
                table
                    .held_ids
                    .insert((node.clone(), reference.ids.clone()), local.0.id());
                table.held.insert(local.0.id(), held);
            }
            let added =
                add_remote_relation_on(&*target, node, connection, &self.dist.interest, |r| {
                    r.more_mut().monitored_by.insert(local, watcher);
                });
            match added {
                Some(Some(())) => return,
                Some(None) => {
                    self.dist.table.lock().take_held(local.0.id());
                    tracing::debug!(
                        "ember: a MONITOR_P from {watcher} on a lost connection: ignored"
                    );
                    return;
                }
                // Exiting meanwhile: it never held the monitor.
                None => {
                    self.dist.table.lock().take_held(local.0.id());
                }
            }
        }
        let signal = RemoteSignal::MonitorExit {
            from: to.clone(),
            to: from.clone(),
            reference,
            reason: Term::atom("noproc"),
        };
        self.dist.emit(node, signal);
    }

    /// `DEMONITOR_P`: the remote watcher gave the monitor up.
    pub fn demonitor(&self, node: &Atom, reference: &Reference) {
        let held = {
            let mut table = self.dist.table.lock();
            let id = table
                .held_ids
                .get(&(node.clone(), reference.ids.clone()))
                .copied();
            id.and_then(|id| Some((id, table.take_held(id)?)))
        };
        if let Some((_, held)) = held {
            if let Some(target) = self.rt.lookup(held.target) {
                target.with_relations(|r| {
                    if let Some(more) = r.more_if_any_mut() {
                        more.monitored_by.remove(&held.local);
                    }
                });
            }
        }
    }

    /// `MONITOR_P_EXIT`: a remote process a local one monitors exited (or
    /// did not exist, or could not be reached).
    pub fn monitor_exit(&self, to: &TermPid, reference: &Reference, reason: Term) {
        let (Some(watcher), Some(r)) = (
            self.dist.local_pid(to).and_then(|p| self.rt.lookup(p)),
            self.dist.local_ref(reference),
        ) else {
            return;
        };
        let monitor = MonitorRef(r);
        let reason = ExitReason::from_term(reason);
        fire_down(&self.rt, &watcher, monitor, reason);
    }

    /// A connection to `node` is up: `connection` numbers it (any number
    /// the layer never reuses for the node); relation signals are applied
    /// only when they arrive on the live connection.
    pub fn node_up(&self, node: &Atom, connection: u64) {
        self.dist
            .interest
            .lock()
            .live
            .insert(node.clone(), connection);
        let watchers: Vec<Pid> = {
            let mut table = self.dist.table.lock();
            table.up.insert(node.clone());
            table.node_watchers.iter().copied().collect()
        };
        for pid in watchers {
            self.rt
                .send_envelope(pid, Envelope::new(NodeUp { node: node.clone() }));
        }
    }

    /// `node`'s connection number `connection` is down: as
    /// [`node_down`](Incoming::node_down) if it is the live one, else
    /// nothing (a connection already replaced).
    pub fn connection_down(&self, node: &Atom, connection: u64) {
        {
            let mut interest = self.dist.interest.lock();
            if !interest.is_live(node, connection) {
                return;
            }
            interest.live.remove(node);
        }
        self.node_down(node);
    }

    /// The connection to `node` is down (or could not be made): every link
    /// and monitor crossing it fires with `noconnection`, `monitor_node`
    /// subscribers get a [`NodeDown`].
    pub fn node_down(&self, node: &Atom) {
        let (indices, subscribers): (HashSet<u32>, Vec<Pid>) = {
            let mut table = self.dist.table.lock();
            let was_up = table.up.remove(node);
            let indices: HashSet<u32> = table
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| n == node)
                .map(|(i, _)| i as u32 + 1)
                .collect();
            let mut subscribers = table.node_monitors.remove(node).unwrap_or_default();
            if was_up {
                subscribers.extend(table.node_watchers.iter().copied());
            }
            let held = table
                .held
                .iter()
                .filter(|(_, h)| &h.node == node)
                .map(|(id, _)| *id)
                .collect::<Vec<_>>();
            for id in held {
                table.take_held(id);
            }
            // Their acks will not come: the links are fired below anyway.
            table
                .unlinking
                .retain(|(_, remote), _| !indices.contains(&remote.node()));
            (indices, subscribers)
        };
        self.dist.fail_spawns(&self.rt, node);
        let locals = self.dist.interest.lock().take(node);
        for pid in locals {
            if let Some(process) = self.rt.lookup(pid) {
                sever(&self.rt, &process, &indices);
            }
        }
        for pid in subscribers {
            self.rt
                .send_envelope(pid, Envelope::new(NodeDown { node: node.clone() }));
        }
    }
}

/// Fires every link and monitor of `process` that crosses to a node whose
/// table indices are `indices`, with `noconnection`.
fn sever(rt: &Shared, process: &Arc<Process>, indices: &HashSet<u32>) {
    let on_node = |p: &Pid| indices.contains(&p.node());
    let (links, downs) = process.with_relations(|r| {
        let links: Vec<Pid> = r.links.iter().copied().filter(on_node).collect();
        let downs: Vec<MonitorRef> = r
            .more()
            .map(|m| {
                m.monitoring
                    .iter()
                    .filter(|(_, p)| on_node(p))
                    .map(|(m, _)| *m)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(more) = r.more_if_any_mut() {
            let gone: Vec<MonitorRef> = more
                .monitored_by
                .iter()
                .filter(|(_, watcher)| on_node(watcher))
                .map(|(m, _)| *m)
                .collect();
            for m in gone {
                more.monitored_by.remove(&m);
            }
        }
        (links, downs)
    });
    for monitor in downs {
        fire_down(rt, process, monitor, ExitReason::NoConnection);
    }
    for linked in links {
        signal::receive_link_signal(process, linked, ExitReason::NoConnection);
    }
}

/// Queues the `Down` of `monitor` to `watcher` if it still holds it.
fn fire_down(rt: &Shared, watcher: &Arc<Process>, monitor: MonitorRef, reason: ExitReason) {
    let fired = watcher.with_relations(|r| {
        let target = r.more_if_any_mut()?.monitoring.remove(&monitor)?;
        let name = down_name(rt, monitor);
        watcher.mailbox.push(Envelope::new(Down {
            monitor,
            pid: target,
            name,
            reason,
        }));
        Some(())
    });
    if fired.is_some() {
        scheduler::wake_after_push(watcher);
    }
}

fn with_dist<R>(what: &str, f: impl FnOnce(&Arc<Shared>, Option<Arc<DistState>>) -> R) -> R {
    context::with_runtime(what, |rt| f(rt, rt.dist()))
}

/// This node's name (`nonode@nohost` before distribution starts).
pub fn node() -> Atom {
    with_dist("node", |_, d| {
        d.map_or_else(|| Atom::new(NONODE), |d| d.name.clone())
    })
}

/// The nodes this node is connected to, sorted (Erlang's `nodes(connected)`).
pub fn nodes() -> Vec<Atom> {
    with_dist("nodes", |_, d| {
        let mut v: Vec<Atom> = d
            .map(|d| d.table.lock().up.iter().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    })
}

/// The term a pid crosses to other nodes as (a `NEW_PID_EXT`).
pub fn pid_to_term(pid: Pid) -> Term {
    with_dist("pid_to_term", |_, d| match d {
        Some(d) => Term::Pid(d.term_pid(pid)),
        None => Term::Pid(TermPid {
            node: Atom::new(NONODE),
            id: pid.number(),
            serial: pid.serial(),
            creation: 0,
        }),
    })
}

/// The pid a term names (`None`: not a pid, or the node table is full). A
/// pid of this node with another creation is a dead pid.
pub fn pid_from_term(term: &Term) -> Option<Pid> {
    let p = term.as_pid()?;
    with_dist("pid_from_term", |_, d| match d {
        Some(d) => d.pid(p),
        None => (p.node.as_str() == NONODE).then(|| Pid::from_parts(p.id, p.serial)),
    })
}

/// The term a reference made on this node crosses as.
pub fn ref_to_term(r: Ref) -> Term {
    with_dist("ref_to_term", |_, d| match d {
        Some(d) => Term::Reference(d.term_ref(r)),
        None => Term::Reference(Reference {
            node: Atom::new(NONODE),
            creation: 0,
            ids: vec![
                (r.id() & 0x3ffff) as u32,
                (r.id() >> 18) as u32,
                (r.id() >> 50) as u32,
            ],
        }),
    })
}

/// The reference of this node a term names, if it is one.
pub fn ref_from_term(term: &Term) -> Option<Ref> {
    let Term::Reference(r) = term else {
        return None;
    };
    with_dist("ref_from_term", |_, d| d?.local_ref(r))
}

/// Sends `message` to the process registered as `name` on `node`
/// (`{Name, Node} ! Message`). On this node it goes to the local name (and
/// is dropped if none has it, as for a remote one).
pub fn send_named(name: &str, node: &str, message: Term) {
    with_dist("dist::send_named", |rt, d| {
        context::consume_reductions(1);
        if crate::message::sender_is_dead() {
            return;
        }
        let local = d
            .as_ref()
            .map_or(node == NONODE, |d| d.name.as_str() == node);
        if local {
            if let Some(pid) = rt.whereis(name) {
                rt.send_envelope(pid, Envelope::new(message));
            }
            return;
        }
        let (Some(d), Ok(node), Ok(name)) = (d, Atom::try_new(node), Atom::try_new(name)) else {
            tracing::debug!("ember: {{{name}, {node}}} is unreachable: dropped a message");
            return;
        };
        let from = context::try_with_current(|p| p.pid).unwrap_or(Pid::OUTSIDE);
        let signal = RemoteSignal::SendNamed {
            from: d.term_pid(from),
            name,
            message,
        };
        d.emit_message(&node, signal);
    })
}

/// Sends `message` to a process alias of another node (how replies to
/// `gen_server:call` made with an alias travel). An alias of this node is
/// a local reference ([`crate::alias()`]); a message to an inactive one is
/// dropped.
pub fn send_alias(alias: &Reference, message: Term) {
    with_dist("send_alias", |rt, d| {
        context::consume_reductions(1);
        let Some(d) = d else { return };
        if alias.node == d.name {
            match d.local_ref(alias) {
                Some(r) => rt.send_to_alias(r, Envelope::new(message)),
                None => tracing::debug!("ember: {alias:?} is no alias of this node: dropped"),
            }
            return;
        }
        let from = context::try_with_current(|p| p.pid).unwrap_or(Pid::OUTSIDE);
        let signal = RemoteSignal::SendAlias {
            from: d.term_pid(from),
            alias: alias.clone(),
            message,
        };
        d.emit_message(&alias.node.clone(), signal);
    })
}

/// Monitors the process registered as `name` on `node`; its [`Down`]
/// carries `name` ([`Down::name`]), as Erlang's `{Name, Node}`. On this
/// node it monitors the pid the name has now (`noproc` if none).
pub fn monitor_name(name: &str, node: &str) -> MonitorRef {
    let target = context::with_current("monitor_name", |me| {
        let d = me.rt.dist();
        let local = d
            .as_ref()
            .map_or(node == NONODE, |d| d.name.as_str() == node);
        if local {
            return me.rt.whereis(name).map(|pid| (pid, None));
        }
        let (d, node, name) = (d?, Atom::try_new(node).ok()?, Atom::try_new(name).ok()?);
        let placeholder = Pid::remote(d.node_index(&node, 0)?, 0, 0);
        Some((placeholder, Some(RemoteName { name, node })))
    });
    match target {
        Some((pid, name)) => signal::monitor_with_name(pid, name),
        // No such process: a monitor that fires `noproc` at once.
        None => signal::monitor(Pid::from_parts(u32::MAX, u32::MAX)),
    }
}

/// Erlang's `monitor_node(Node, true)`: a [`NodeDown`] when the connection
/// to `node` goes down (at once if none can be made). Each call adds one;
/// `monitor_node(node, false)` removes the caller's.
pub fn monitor_node(node: &str, on: bool) {
    context::with_current("monitor_node", |me| {
        let Some(d) = me.rt.dist() else {
            if on {
                signal::deliver(
                    me,
                    Envelope::new(NodeDown {
                        node: Atom::new(node),
                    }),
                );
            }
            return;
        };
        let Ok(node) = Atom::try_new(node) else {
            return;
        };
        let mut table = d.table.lock();
        if !on {
            if let Some(v) = table.node_monitors.get_mut(&node) {
                v.retain(|p| *p != me.pid);
            }
            return;
        }
        table
            .node_monitors
            .entry(node.clone())
            .or_default()
            .push(me.pid);
        let connected = table.up.contains(&node);
        drop(table);
        if !connected {
            d.emit(&node, RemoteSignal::Connect);
        }
    })
}

/// Erlang's `net_kernel:monitor_nodes(true)`: a [`NodeUp`] and a
/// [`NodeDown`] for every connection that comes up or goes down.
pub fn monitor_nodes(on: bool) {
    context::with_current("monitor_nodes", |me| {
        if let Some(d) = me.rt.dist() {
            let mut table = d.table.lock();
            if on {
                table.node_watchers.insert(me.pid);
            } else {
                table.node_watchers.remove(&me.pid);
            }
        }
    })
}

/// Model checks under loom (see `crate::loom` for the command): a link to
/// a remote process added while the connection to its node goes down is
/// never left unrecorded; a process suspended on a busy connection is
/// polled again once resumed.
#[cfg(all(test, feature = "loom-models"))]
mod loom_models {
    use ::loom::sync::Arc;
    use ::loom::thread;

    use super::{add_remote_relation, Interest};
    use crate::loom::sync::Mutex;
    use crate::pid::Pid;
    use crate::signal::{self, loom_models::Proc};
    use ember_term::Atom;

    /// A process links to R on node N while N's connection goes down (the
    /// fan-out takes N's interest set, then fires the process's links to N
    /// with `noconnection`): afterwards the link is either gone with an
    /// `Exit` delivered, or still there with the process in N's fresh set.
    #[test]
    fn a_link_racing_a_connection_loss_is_fired_or_recorded() {
        crate::loom::model("remote link vs node down", None, || {
            let node = Atom::new("n@h");
            let remote = Pid::remote(1, 7, 0);
            let interest = Arc::new(Mutex::new(Interest::default()));
            let me = Proc::new(1, true);
            let down = {
                let (interest, me, node) = (interest.clone(), me.clone(), node.clone());
                thread::spawn(move || {
                    let taken = interest.lock().take(&node);
                    if taken.contains(&me.pid) {
                        let _ = signal::signal_locked(
                            &*me,
                            remote,
                            crate::reason::ExitReason::NoConnection,
                            true,
                        );
                    }
                })
            };
            let added = add_remote_relation(&*me, &node, &interest, |r| {
                r.links.insert(remote);
            });
            down.join().unwrap();
            assert!(added.is_some());
            let linked = me
                .relations
                .lock()
                .as_ref()
                .is_some_and(|r| r.links.contains(&remote));
            let recorded = interest
                .lock()
                .by_node
                .get(&node)
                .is_some_and(|s| s.contains(&me.pid));
            let fired = me.inbox.lock().len();
            if linked {
                assert!(recorded, "a live link to N that no node-down will fire");
                assert_eq!(fired, 0);
            } else {
                assert_eq!(fired, 1, "the link vanished without an Exit");
            }
        });
    }

    /// A process suspended by `Sender::suspend` (its `busy_dist` count at
    /// one) is resumed by the lane (`Suspension::resume`: decrement, and
    /// the last one wakes it) while a worker polls it as `worker::run`
    /// does (not polling the body while the count is above zero) and a
    /// message wakes it too: whatever the interleaving, the body is polled
    /// after the resume — no lost wake-up leaves it parked with a count of
    /// zero.
    #[test]
    fn a_suspended_process_is_polled_again_once_resumed() {
        use crate::loom::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
        use crate::process::{State, TransitionToIdle, TransitionToRunning, TransitionToScheduled};

        struct Sim {
            state: State,
            busy: AtomicU32,
            /// Queued tickets (the run queue, reduced to a count).
            queued: Mutex<usize>,
            /// Polls of the body while not suspended.
            polled: AtomicUsize,
        }

        impl Sim {
            /// `scheduler::wake`.
            fn wake(&self) {
                if let TransitionToScheduled::Queue = self.state.transition_to_scheduled() {
                    *self.queued.lock() += 1;
                }
            }

            /// `worker::run` for one queued ticket; false if none.
            fn run_one(&self) -> bool {
                {
                    let mut q = self.queued.lock();
                    if *q == 0 {
                        return false;
                    }
                    *q -= 1;
                }
                let TransitionToRunning::Poll(claim) = self.state.transition_to_running() else {
                    unreachable!("nobody kills it")
                };
                let suspended = self.busy.load(Ordering::Acquire) > 0
                    && self.busy.fetch_add(0, Ordering::AcqRel) > 0;
                if !suspended {
                    self.polled.fetch_add(1, Ordering::Relaxed);
                }
                match self.state.transition_to_idle(claim) {
                    TransitionToIdle::Idle => {}
                    TransitionToIdle::Requeue => *self.queued.lock() += 1,
                    TransitionToIdle::Exiting(_) => unreachable!("nobody kills it"),
                }
                true
            }
        }

        crate::loom::model("busy_dist suspension vs poll", None, || {
            let sim = Arc::new(Sim {
                state: State::new_scheduled(),
                busy: AtomicU32::new(1),
                queued: Mutex::new(1),
                polled: AtomicUsize::new(0),
            });
            let resumer = {
                let sim = sim.clone();
                thread::spawn(move || {
                    if sim.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
                        sim.wake();
                    }
                })
            };
            let message = {
                let sim = sim.clone();
                thread::spawn(move || sim.wake())
            };
            sim.run_one();
            resumer.join().unwrap();
            message.join().unwrap();
            while sim.run_one() {}
            assert!(
                sim.polled.load(Ordering::Relaxed) >= 1,
                "resumed but never polled again"
            );
        });
    }
}
