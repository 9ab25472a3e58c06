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
//! `NodeDown`) and drops what was queued meanwhile.
//!
//! Incoming, the connection's reader calls the bridge (its [`Deliver`]
//! hook) in arrival order, and the bridge calls the runtime's
//! [`Incoming`]: messages to pids and registered names, `LINK`,
//! `UNLINK_ID`, `EXIT`, `EXIT2`, `MONITOR_P`, `DEMONITOR_P`,
//! `MONITOR_P_EXIT`, and the connection coming up and going down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use ember_runtime::dist::{Distribution, Incoming, RemoteSignal, Target};
use ember_runtime::Handle;
use ember_term::{Atom, Pid, Term};
use tokio::sync::mpsc;

use crate::connection::Outgoing;
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
const ALIAS_SEND: i64 = 33;
const UNLINK_ID: i64 = 35;
const UNLINK_ID_ACK: i64 = 36;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The negotiated flags of each connected peer.
type PeerFlags = Arc<Mutex<HashMap<Atom, u64>>>;

/// The seam in both directions between a node and a runtime.
struct Bridge {
    incoming: OnceLock<Incoming>,
    node: OnceLock<Weak<Inner>>,
    tokio: tokio::runtime::Handle,
    /// Per peer node, the FIFO its forwarding task drains.
    outbound: Mutex<HashMap<Atom, mpsc::UnboundedSender<RemoteSignal>>>,
    flags: PeerFlags,
}

impl Node {
    /// Starts a node whose local processes are the Ember processes of
    /// `runtime`: their pids cross as this node's pids, messages and
    /// signals from peers reach them, and theirs reach peers (see
    /// `ember_runtime::dist`). Must run inside a tokio runtime (the Ember
    /// runtime's own, from a process, is the usual one). The config's
    /// [`NodeConfig::deliver`] is replaced by the bridge. A runtime can be
    /// a node once.
    pub async fn start_in_runtime(
        mut config: NodeConfig,
        runtime: &Handle,
    ) -> Result<Node, DistError> {
        let bridge = Arc::new(Bridge {
            incoming: OnceLock::new(),
            node: OnceLock::new(),
            tokio: tokio::runtime::Handle::current(),
            outbound: Mutex::new(HashMap::new()),
            flags: Arc::new(Mutex::new(HashMap::new())),
        });
        config.deliver = bridge.clone();
        let node = Node::start_with(config).await?;
        let _ = bridge.node.set(Arc::downgrade(&node.inner));
        let incoming = runtime
            .start_distribution(node.name().as_str(), node.creation(), bridge.clone())
            .map_err(|e| DistError::Refused(e.to_string()))?;
        let _ = bridge.incoming.set(incoming);
        Ok(node)
    }
}

impl Distribution for Bridge {
    fn signal(&self, node: &Atom, signal: RemoteSignal) {
        let mut outbound = lock(&self.outbound);
        let queue = outbound.entry(node.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let forwarder = Forwarder {
                node: node.clone(),
                inner: self.node.get().cloned().unwrap_or_default(),
                incoming: self.incoming.get().cloned(),
                flags: self.flags.clone(),
            };
            self.tokio.spawn(forwarder.run(rx));
            tx
        });
        if queue.send(signal).is_err() {
            tracing::debug!("dist: the queue to {node} is closed: a signal was dropped");
        }
    }
}

/// Drains one peer node's FIFO onto its connection.
struct Forwarder {
    node: Atom,
    inner: Weak<Inner>,
    incoming: Option<Incoming>,
    flags: PeerFlags,
}

impl Forwarder {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<RemoteSignal>) {
        while let Some(signal) = rx.recv().await {
            let Some(inner) = self.inner.upgrade() else {
                self.unreachable(&mut rx, "the node has stopped");
                continue;
            };
            let tx = match inner.connect(&self.node).await {
                Ok(tx) => tx,
                Err(e) => {
                    drop(inner);
                    self.unreachable(&mut rx, &e.to_string());
                    continue;
                }
            };
            let peer_flags = lock(&self.flags).get(&self.node).copied().unwrap_or(0);
            let Some(outgoing) = encode(signal, peer_flags) else {
                continue;
            };
            if tx.send(outgoing).await.is_err() {
                tracing::debug!("dist: the connection to {} closed under a send", self.node);
            }
        }
    }

    /// No connection to the node: it is down for the runtime (links and
    /// monitors fire with `noconnection`), and what is queued now is
    /// dropped rather than trying again for each.
    fn unreachable(&self, rx: &mut mpsc::UnboundedReceiver<RemoteSignal>, why: &str) {
        let mut dropped = 0usize;
        while rx.try_recv().is_ok() {
            dropped += 1;
        }
        tracing::info!(
            "dist: cannot reach {}: {why} ({dropped} more queued signals dropped)",
            self.node
        );
        if let Some(incoming) = &self.incoming {
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
            Delivery::ToAlias { alias, .. } => {
                tracing::debug!("dist: no local alias {alias:?} (from {node}): dropped")
            }
        }
    }

    fn signal(&self, node: &Atom, control: &[Term], _payload: Option<&Term>) -> bool {
        let Some(incoming) = self.incoming.get() else {
            return false;
        };
        let Some(op) = control.first().and_then(Term::as_int) else {
            return false;
        };
        match (op, control) {
            (LINK, [_, Term::Pid(from), Term::Pid(to)]) => incoming.link(node, from, to),
            (UNLINK_ID, [_, id, Term::Pid(from), Term::Pid(to)]) => {
                incoming.unlink(node, id.clone(), from, to)
            }
            // Obsolete (before OTP 23's UNLINK_ID): no ack.
            (UNLINK, [_, Term::Pid(from), Term::Pid(to)]) => {
                incoming.unlink_quietly(from, to);
            }
            (UNLINK_ID_ACK | GROUP_LEADER, _) => {}
            (EXIT, [_, Term::Pid(from), Term::Pid(to), reason])
            | (EXIT_TT, [_, Term::Pid(from), Term::Pid(to), _, reason]) => {
                incoming.exit(from, to, reason.clone(), true)
            }
            (EXIT2, [_, Term::Pid(from), Term::Pid(to), reason])
            | (EXIT2_TT, [_, Term::Pid(from), Term::Pid(to), _, reason]) => {
                incoming.exit(from, to, reason.clone(), false)
            }
            (MONITOR_P, [_, Term::Pid(from), to, Term::Reference(r)]) => match target(to) {
                Some(to) => incoming.monitor(node, from, &to, r.clone()),
                None => return false,
            },
            (DEMONITOR_P, [_, _, _, Term::Reference(r)]) => incoming.demonitor(node, r),
            (MONITOR_P_EXIT, [_, _, Term::Pid(to), Term::Reference(r), reason]) => {
                incoming.monitor_exit(to, r, reason.clone())
            }
            _ => return false,
        }
        true
    }

    fn connection_up(&self, node: &Atom, flags: u64) {
        lock(&self.flags).insert(node.clone(), flags);
        if let Some(incoming) = self.incoming.get() {
            incoming.node_up(node);
        }
    }

    fn connection_down(&self, node: &Atom) {
        lock(&self.flags).remove(node);
        if let Some(incoming) = self.incoming.get() {
            incoming.node_down(node);
        }
    }
}
