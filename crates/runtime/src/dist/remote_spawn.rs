//! Spawning a process on another node: Erlang's `spawn_request` (what
//! `spawn/4`, `spawn_link/4` and `spawn_monitor/4` use across nodes).
//!
//! The caller records a pending request (its reference, itself, the node)
//! and hands a `SpawnRequest` to the distribution layer. The other node
//! starts the process, sets up its side of the link or monitor asked for,
//! and answers `SPAWN_REPLY`, before anything the new process sends. The
//! layer calls [`Incoming::spawn_reply`] with it in arrival order: it takes
//! the pending request, adds the caller's side of the link and monitor (the
//! monitor's reference is the request's), and then puts the reply in the
//! caller's mailbox, so a `DOWN` or `EXIT` from the new process always
//! comes after it. A reply no one waits for any more (the caller gave up at
//! its deadline, or died) is undone: the link is broken with an exit signal
//! `abandoned` (`noproc` if the caller died), the monitor is demonitored.
//! A connection lost (or never made) fails every pending request to that
//! node with `noconnection`.

use std::time::Duration;

use ember_term::{Atom, Reference, Term};

use super::{add_remote_relation, DistState, Incoming, RemoteSignal, Target};
use crate::context;
use crate::mailbox::Envelope;
use crate::message::receive;
use crate::pid::{MonitorRef, Pid, Ref};

/// How long [`spawn`], [`spawn_link`] and [`spawn_monitor`] wait for the
/// other node's reply.
pub const DEFAULT_SPAWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a remote spawn asks for besides the process
/// ([`spawn_opt`]): a link, a monitor, and how long to wait for the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteSpawnOptions {
    /// Link the caller with the new process (Erlang's `link` option).
    pub link: bool,
    /// Monitor the new process (the `monitor` option); its reference is
    /// returned in [`RemoteSpawned::monitor`].
    pub monitor: bool,
    /// The deadline for the reply; past it the request is abandoned
    /// ([`RemoteSpawnError::Timeout`]).
    pub timeout: Duration,
}

impl Default for RemoteSpawnOptions {
    fn default() -> RemoteSpawnOptions {
        RemoteSpawnOptions {
            link: false,
            monitor: false,
            timeout: DEFAULT_SPAWN_TIMEOUT,
        }
    }
}

/// A process started on another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteSpawned {
    /// Its pid.
    pub pid: Pid,
    /// The monitor on it, when one was asked for: its [`Down`](crate::Down)
    /// carries this reference.
    pub monitor: Option<MonitorRef>,
}

/// Why a remote spawn started nothing (or nothing the caller holds).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RemoteSpawnError {
    /// `badarg`: a node, module or function name that is not an atom, this
    /// node's own name (spawn locally instead), or the other node refused
    /// the request's arguments.
    BadArg,
    /// `notsup`: the other node does not spawn for others (no
    /// `DFLAG_SPAWN`, or a node without a runtime).
    NotSup,
    /// `noconnection`: no connection to the node could be made, or it was
    /// lost before the reply came.
    NoConnection,
    /// `system_limit`: the other node could not start a process (or this
    /// node cannot name one more node's pids).
    SystemLimit,
    /// This runtime is not a distribution node.
    NotAlive,
    /// No reply within the deadline. The request is abandoned: a process
    /// started after all is unlinked with an exit signal `abandoned` and
    /// demonitored.
    Timeout,
    /// Any other error the node answered.
    Other(Term),
}

impl std::fmt::Display for RemoteSpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteSpawnError::BadArg => f.write_str("badarg"),
            RemoteSpawnError::NotSup => f.write_str("notsup: the node does not spawn for others"),
            RemoteSpawnError::NoConnection => f.write_str("noconnection"),
            RemoteSpawnError::SystemLimit => f.write_str("system_limit"),
            RemoteSpawnError::NotAlive => f.write_str("this runtime is not a distribution node"),
            RemoteSpawnError::Timeout => f.write_str("no spawn reply within the deadline"),
            RemoteSpawnError::Other(t) => write!(f, "spawn failed: {t}"),
        }
    }
}

impl std::error::Error for RemoteSpawnError {}

impl RemoteSpawnError {
    fn from_atom(error: &Term) -> RemoteSpawnError {
        match error.as_atom() {
            Some("badarg") => RemoteSpawnError::BadArg,
            Some("notsup") => RemoteSpawnError::NotSup,
            Some("noconnection") => RemoteSpawnError::NoConnection,
            Some("system_limit") => RemoteSpawnError::SystemLimit,
            _ => RemoteSpawnError::Other(error.clone()),
        }
    }
}

/// A request waiting for its `SPAWN_REPLY`.
pub(super) struct PendingSpawn {
    requester: Pid,
    node: Atom,
}

/// The reply, in the requester's mailbox.
struct SpawnReplied {
    request: Ref,
    result: Result<RemoteSpawned, RemoteSpawnError>,
}

/// Starts `module:function(args...)` on `node` (Erlang's `spawn/4` to
/// another node) and returns its pid once the node has answered. Call it
/// from an Ember process of a runtime that is a node. On an Ember node the
/// function is one registered as `module:function/arity`
/// (`ember_dist::Functions`); on an `erl` node any exported function.
pub async fn spawn(
    node: &str,
    module: &str,
    function: &str,
    args: Vec<Term>,
) -> Result<Pid, RemoteSpawnError> {
    let options = RemoteSpawnOptions::default();
    Ok(spawn_opt(node, module, function, args, options).await?.pid)
}

/// [`spawn`], linked: the link is in place when this returns (Erlang's
/// `spawn_link/4`). An exit of the new process reaches the caller as any
/// linked exit; a lost connection as `noconnection`.
pub async fn spawn_link(
    node: &str,
    module: &str,
    function: &str,
    args: Vec<Term>,
) -> Result<Pid, RemoteSpawnError> {
    let options = RemoteSpawnOptions {
        link: true,
        ..RemoteSpawnOptions::default()
    };
    Ok(spawn_opt(node, module, function, args, options).await?.pid)
}

/// [`spawn`], monitored (Erlang's `spawn_monitor/4`): the new process's
/// exit comes as a [`Down`](crate::Down) with the returned reference.
pub async fn spawn_monitor(
    node: &str,
    module: &str,
    function: &str,
    args: Vec<Term>,
) -> Result<(Pid, MonitorRef), RemoteSpawnError> {
    let options = RemoteSpawnOptions {
        monitor: true,
        ..RemoteSpawnOptions::default()
    };
    let spawned = spawn_opt(node, module, function, args, options).await?;
    match spawned.monitor {
        Some(monitor) => Ok((spawned.pid, monitor)),
        // The node answered without setting up the monitor.
        None => Err(RemoteSpawnError::Other(Term::atom("no_monitor"))),
    }
}

/// A remote spawn with `options` (Erlang's `spawn_request/5` and waiting
/// for its reply). The new process runs with the caller's group leader.
pub async fn spawn_opt(
    node: &str,
    module: &str,
    function: &str,
    args: Vec<Term>,
    options: RemoteSpawnOptions,
) -> Result<RemoteSpawned, RemoteSpawnError> {
    let group_leader = crate::io::group_leader();
    let (dist, request) = context::with_current("dist::spawn", |me| {
        context::consume_reductions(1);
        let dist = me.rt.dist().ok_or(RemoteSpawnError::NotAlive)?;
        let names = (
            Atom::try_new(node),
            Atom::try_new(module),
            Atom::try_new(function),
        );
        let (Ok(node), Ok(module), Ok(function)) = names else {
            return Err(RemoteSpawnError::BadArg);
        };
        if node == dist.name {
            return Err(RemoteSpawnError::BadArg);
        }
        let request = me.rt.make_ref();
        dist.table.lock().spawns.insert(
            request.id(),
            PendingSpawn {
                requester: me.pid,
                node: node.clone(),
            },
        );
        let signal = RemoteSignal::SpawnRequest {
            id: dist.term_ref(request),
            from: dist.term_pid(me.pid),
            group_leader: dist.term_pid(group_leader),
            module,
            function,
            args,
            link: options.link,
            monitor: options.monitor,
        };
        dist.emit(&node, signal);
        Ok((dist, request))
    })?;
    let matches = move |r: &SpawnReplied| r.request == request;
    if let Some(reply) = receive::<SpawnReplied>()
        .matching(matches)
        .timeout(options.timeout)
        .await
    {
        return reply.result;
    }
    // The deadline: abandon the request, unless its reply is being
    // delivered right now (taken from the table already).
    if dist.table.lock().spawns.remove(&request.id()).is_some() {
        return Err(RemoteSpawnError::Timeout);
    }
    match receive::<SpawnReplied>()
        .matching(matches)
        .timeout(DEFAULT_SPAWN_TIMEOUT)
        .await
    {
        Some(reply) => reply.result,
        None => Err(RemoteSpawnError::Timeout),
    }
}

impl DistState {
    /// Fails every request pending to `node` with `noconnection`.
    pub(super) fn fail_spawns(&self, rt: &crate::runtime::Shared, node: &Atom) {
        let failed: Vec<(u64, PendingSpawn)> = {
            let mut table = self.table.lock();
            let ids: Vec<u64> = table
                .spawns
                .iter()
                .filter(|(_, p)| &p.node == node)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| Some((id, table.spawns.remove(&id)?)))
                .collect()
        };
        for (id, pending) in failed {
            let reply = SpawnReplied {
                request: Ref::local(id),
                result: Err(RemoteSpawnError::NoConnection),
            };
            rt.send_envelope(pending.requester, Envelope::new(reply));
        }
    }
}

impl Incoming {
    /// `SPAWN_REPLY` from `node` to the local `to` for the request `id`:
    /// `result` is the new pid or an error atom; `flags` 1 means the node
    /// linked the new process to `to`, 2 that it monitors it for `to`.
    /// Adds the caller's side of the link and monitor and hands it the
    /// reply; a reply no one waits for any more is undone (the link broken
    /// with `abandoned`, or `noproc` if the caller is gone; the monitor
    /// demonitored).
    pub fn spawn_reply(
        &self,
        node: &Atom,
        id: &Reference,
        to: &ember_term::Pid,
        flags: i64,
        result: &Term,
    ) {
        let (link, monitor) = (flags & 1 != 0, flags & 2 != 0);
        let request = self.dist.local_ref(id);
        let pending = request.and_then(|r| self.dist.table.lock().spawns.remove(&r.id()));
        let abandoned = pending.is_none();
        let requester = pending.as_ref().and_then(|p| self.rt.lookup(p.requester));
        let Term::Pid(child) = result else {
            if let (Some(request), Some(p)) = (request, pending) {
                let reply = SpawnReplied {
                    request,
                    result: Err(RemoteSpawnError::from_atom(result)),
                };
                self.rt.send_envelope(p.requester, Envelope::new(reply));
            }
            return;
        };
        let (Some(request), Some(requester), Some(child_pid)) =
            (request, requester.as_ref(), self.dist.pid(child))
        else {
            if let (Some(request), Some(p), Some(_)) = (request, &pending, &requester) {
                // A pid this node cannot name (its node table is full).
                let reply = SpawnReplied {
                    request,
                    result: Err(RemoteSpawnError::SystemLimit),
                };
                self.rt.send_envelope(p.requester, Envelope::new(reply));
            }
            return self.undo_spawn(node, to, child, id, link, monitor, abandoned);
        };
        let watch = MonitorRef(request);
        let added = add_remote_relation(&**requester, node, &self.dist.interest, |r| {
            if link {
                r.links.insert(child_pid);
            }
            if monitor {
                r.more_mut().monitoring.insert(watch, child_pid);
            }
        });
        if added.is_none() {
            // Exiting meanwhile: it holds neither.
            return self.undo_spawn(node, to, child, id, link, monitor, false);
        }
        let reply = SpawnReplied {
            request,
            result: Ok(RemoteSpawned {
                pid: child_pid,
                monitor: monitor.then_some(watch),
            }),
        };
        self.rt.send_envelope(requester.pid, Envelope::new(reply));
    }

    /// Breaks the link and monitor a peer set up for a request whose
    /// caller no longer waits (`abandoned`) or is gone.
    #[allow(clippy::too_many_arguments)]
    fn undo_spawn(
        &self,
        node: &Atom,
        to: &ember_term::Pid,
        child: &ember_term::Pid,
        id: &Reference,
        link: bool,
        monitor: bool,
        abandoned: bool,
    ) {
        if link {
            let reason = if abandoned { "abandoned" } else { "noproc" };
            let signal = RemoteSignal::Exit {
                from: to.clone(),
                to: child.clone(),
                reason: Term::atom(reason),
            };
            self.dist.emit(node, signal);
        }
        if monitor {
            let signal = RemoteSignal::Demonitor {
                from: to.clone(),
                to: Target::Pid(child.clone()),
                reference: id.clone(),
            };
            self.dist.emit(node, signal);
        }
    }
}
