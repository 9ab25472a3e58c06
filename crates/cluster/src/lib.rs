//! Cluster services for Ember: names every node agrees on, process groups
//! (Ember's own, and [`PgScope`], compatible with OTP's `pg`), and a
//! distributed supervisor that keeps each service running on exactly
//! one node, moves it (with its state) when nodes come and go, and
//! restarts it on a survivor when its node dies.
//!
//! ```no_run
//! # async fn demo(handle: &ember_runtime::Handle) {
//! use ember_cluster::{Cluster, ClusterConfig, Counter, Kinds};
//!
//! let mut kinds = Kinds::new();
//! kinds.register("counter", Counter);
//! // The node's distribution must run in `handle`'s runtime
//! // (`ember_dist::Node::start_in_runtime`).
//! let cluster = Cluster::start(handle, ClusterConfig::new(kinds).join(["a@host"])).await.unwrap();
//! cluster.start_service("orders", "counter", ember_term::Term::nil()).await.unwrap();
//! let where_it_runs = cluster.whereis("orders"); // a local table lookup
//! # }
//! ```
//!
//! # Model
//!
//! Each node runs one cluster server (`ember_cluster`, see the protocol
//! in `server.rs`). A node is a *member* once its server answered ours;
//! plain `erl` nodes connected to an Ember node are never members. Every
//! member holds a replica of the name table and the group table, and reads
//! them without messages ([`Cluster::whereis`], [`Cluster::members_of`]).
//! Each node is the authority for the entries of its own processes: it
//! monitors them, and announces registrations and removals to the others.
//! Entries of a node vanish on every replica when its connection goes
//! down.
//!
//! # Conflicts
//!
//! A name registered on both sides of a net split (or by two nodes at the
//! same moment) is settled on every replica by the same rule, without
//! messages: the **earliest registration wins** (the lower stamp, its
//! first registration time in milliseconds, made later than every stamp
//! its node had seen, so a copy started after its node learned of the
//! first ranks after it even within the same millisecond); between equal
//! stamps, the
//! registration handed over more often, then the lower node name, then
//! the lower process number. A losing plain name is removed and its
//! process receives `{ember_cluster, name_conflict, Name, WinnerPid}`; a
//! losing service instance is stopped without handing over its state. So
//! after a split heals, the instance that existed before the split stays
//! and a copy started during the split is dropped.
//!
//! # Services
//!
//! [`Cluster::start_service`] records a spec (name, [`ServiceKind`] name,
//! arguments) on every member. Its owner is chosen by rendezvous hashing
//! over the members ([`placement`]). When the owner changes, the node that
//! runs the instance asks it for its state ([`Service::handoff`]), stops
//! it and sends the state to the new owner, which starts a new instance
//! with it (migrated by [`ServiceKind::code_change`] when the versions
//! differ). When the node of an instance dies, its registration vanishes
//! and the owner among the survivors starts a fresh instance.
//! [`Cluster::stop`] leaves the cluster gracefully, handing every instance
//! over first.
#![forbid(unsafe_code)]

#[cfg(all(test, feature = "loom-models"))]
mod loom_models;
pub mod pg;
pub mod placement;
mod server;
mod service;
mod table;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ember_otp::gen::{CallError, StartError};
use ember_otp::gen_server::{call_term, TermServer};
use ember_otp::supervisor::ChildSpec;
use ember_runtime::sync::oneshot;
use ember_runtime::{dist, ExitReason, Handle, Pid, Spawn, SpawnError};
use ember_term::{Atom, Pid as TermPid, Term};

pub use pg::PgScope;
pub use service::{Counter, Kinds, Service, ServiceKind};
pub use table::Entry;

use server::{Request, Server, Shared};

/// How a node takes part in the cluster.
pub struct ClusterConfig {
    kinds: Kinds,
    seeds: Vec<String>,
    restarts: server::RestartLimit,
}

impl ClusterConfig {
    /// A node that can run the service kinds `kinds`.
    pub fn new(kinds: Kinds) -> ClusterConfig {
        ClusterConfig {
            kinds,
            seeds: Vec::new(),
            restarts: server::RestartLimit::default(),
        }
    }

    /// A crash loop's limit (a supervisor's intensity and period): an
    /// instance that exits abnormally `max_restarts` times (at least 1)
    /// within `period` on this node is not restarted there until the first
    /// of those exits is `period` old. Default: 5 in 10 s.
    pub fn restart_intensity(mut self, max_restarts: usize, period: Duration) -> ClusterConfig {
        self.restarts = server::RestartLimit {
            max_restarts: max_restarts.max(1),
            period,
        };
        self
    }

    /// Nodes to connect to at start, retried every half second while not
    /// connected (`--join NODE[,NODE...]`).
    pub fn join<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> ClusterConfig {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }
}

/// Why [`Cluster::register`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// The name is held by this process.
    Taken(TermPid),
    /// The process is not alive.
    NotAlive,
    /// The cluster server is gone.
    NoServer,
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::Taken(pid) => write!(f, "the name is taken by {pid:?}"),
            RegisterError::NotAlive => f.write_str("the process is not alive"),
            RegisterError::NoServer => f.write_str("the cluster server is not running"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// Why a service operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceError {
    /// A service of this name exists.
    Exists,
    /// No service of this name exists.
    NotFound,
    /// This node knows no service kind of this name.
    UnknownKind(String),
    /// The service is being started or moved; retry shortly.
    Moving,
    /// The node is stopping.
    Stopping,
    /// The call failed.
    Call(CallError),
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::Exists => f.write_str("the service exists"),
            ServiceError::NotFound => f.write_str("no such service"),
            ServiceError::UnknownKind(k) => write!(f, "unknown service kind {k}"),
            ServiceError::Moving => f.write_str("the service is moving; retry"),
            ServiceError::Stopping => f.write_str("the node is stopping"),
            ServiceError::Call(e) => write!(f, "the call failed: {e:?}"),
        }
    }
}

impl std::error::Error for ServiceError {}

/// Where a service runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The service's name.
    pub name: String,
    /// The node that runs it (or is to run it).
    pub node: Atom,
    /// Its instance, if one is registered right now.
    pub pid: Option<TermPid>,
}

/// This node's part of the cluster: cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
    handle: Handle,
}

impl Cluster {
    /// Starts the cluster server in `handle`'s runtime, whose distribution
    /// must be running, unsupervised: if it dies, the node's requests fail
    /// ([`RegisterError::NoServer`], [`ServiceError::Stopping`]) and its
    /// replica goes stale. Fails if the name `ember_cluster` is taken.
    /// [`Cluster::child_spec`] runs it under a supervisor instead.
    pub async fn start(handle: &Handle, config: ClusterConfig) -> Result<Cluster, SpawnError> {
        let (tx, rx) = oneshot::channel();
        let seeds = config.seeds;
        let kinds = config.kinds;
        let restarts = config.restarts;
        handle.spawn_with(Spawn::new().name(server::NAME), async move {
            let shared = Arc::new(Shared::new(dist::node()));
            *shared.server.write() = Some(ember_runtime::self_pid());
            let _ = tx.send(shared.clone());
            let seeds = seeds.iter().filter_map(|s| Atom::try_new(s).ok()).collect();
            Server::new(shared, kinds, seeds, restarts).run().await;
        })?;
        let shared = rx.await.expect("the cluster server sends its tables first");
        Ok(Cluster {
            shared,
            handle: handle.clone(),
        })
    }

    /// The cluster server as a supervisor's child (a permanent worker with
    /// id `ember_cluster`, linked to its supervisor and registered as
    /// `ember_cluster`), and the handle to it. Call from a process of
    /// `handle`'s runtime, whose distribution must be running; start the
    /// spec under a supervisor (the `ember` binary: `ember_cluster_sup`,
    /// one_for_one). Until the first start the handle's requests fail as
    /// with a dead server.
    ///
    /// Each restart starts a new server from what the node knew (kept in
    /// the handle's state, not in the process): the service specs, the
    /// members still connected and this node's registrations. It monitors
    /// this node's live registered processes, group members and service
    /// instances again (instances keep running with their state), removes
    /// those that died meanwhile (telling the peers), and asks every
    /// connected member for its sync again, which replaces what the node
    /// knew of that member; it starts no service until they answered (at
    /// most 3 s). A node that left ([`Cluster::stop`]) stays out. See
    /// `docs/semantics.md`, "The cluster server under a supervisor".
    pub fn child_spec(handle: &Handle, config: ClusterConfig) -> (Cluster, ChildSpec) {
        let shared = Arc::new(Shared::new(dist::node()));
        let seeds: Vec<Atom> = config
            .seeds
            .iter()
            .filter_map(|s| Atom::try_new(s).ok())
            .collect();
        let kinds = config.kinds;
        let restarts = config.restarts;
        let state = shared.clone();
        let spec = ChildSpec::worker(server::NAME, move || {
            let (shared, kinds, seeds) = (state.clone(), kinds.clone(), seeds.clone());
            async move {
                let pid = Spawn::new()
                    .link()
                    .name(server::NAME)
                    .spawn(Server::new(shared.clone(), kinds, seeds, restarts).run())
                    .map_err(|e| StartError::Failed(ExitReason::error(e)))?
                    .pid;
                // Requests go to it from now on (they wait in its mailbox
                // until it runs).
                *shared.server.write() = Some(pid);
                Ok(pid)
            }
        })
        .build()
        .expect("the cluster server's child spec is valid");
        (
            Cluster {
                shared,
                handle: handle.clone(),
            },
            spec,
        )
    }

    /// The server's pid, once one started (it changes when a supervisor
    /// restarts it).
    pub fn server(&self) -> Option<Pid> {
        self.shared.server()
    }

    /// This node's name.
    pub fn node(&self) -> &Atom {
        &self.shared.node
    }

    /// The members of the cluster as this node sees them (itself included
    /// until it stops), sorted.
    pub fn members(&self) -> Vec<Atom> {
        self.shared.members.read().clone()
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.handle.send(self.shared.server()?, make(tx));
        rx.await.ok()
    }

    /// Sends `request` to the server, if one started.
    fn tell(&self, request: Request) {
        if let Some(server) = self.shared.server() {
            self.handle.send(server, request);
        }
    }

    /// Registers `pid` (a process of this node) as `name` cluster-wide.
    /// Fails if this node's replica knows the name; a registration made at
    /// the same moment elsewhere is settled by the conflict rule (crate
    /// documentation). The name goes when the process exits.
    pub async fn register(&self, name: &str, pid: Pid) -> Result<(), RegisterError> {
        self.ask(|tx| Request::Register(name.to_owned(), pid, tx))
            .await
            .unwrap_or(Err(RegisterError::NoServer))
    }

    /// Removes `name` if a process of this node holds it.
    pub async fn unregister(&self, name: &str) -> bool {
        self.ask(|tx| Request::Unregister(name.to_owned(), tx))
            .await
            .unwrap_or(false)
    }

    /// The process registered as `name` anywhere in the cluster (a lookup
    /// in this node's replica).
    pub fn whereis(&self, name: &str) -> Option<TermPid> {
        self.shared.table.whereis(name).map(|e| e.pid)
    }

    /// Every registration (services included), sorted by name.
    pub fn registered(&self) -> Vec<(String, Entry)> {
        self.shared.table.names()
    }

    /// Adds `pid` (a process of this node) to `group`; it leaves when it
    /// exits.
    pub fn join(&self, group: &str, pid: Pid) {
        self.tell(Request::Join(group.to_owned(), pid));
    }

    /// Removes `pid` from `group` (once per join).
    pub fn leave(&self, group: &str, pid: Pid) {
        self.tell(Request::Leave(group.to_owned(), pid));
    }

    /// The members of `group` on every node.
    pub fn members_of(&self, group: &str) -> Vec<TermPid> {
        self.shared.table.members(group)
    }

    /// Starts service `name` of kind `kind` with `args` on the node that
    /// owns it. Fails with [`ServiceError::Exists`] if a service or name of
    /// that name exists.
    pub async fn start_service(
        &self,
        name: &str,
        kind: &str,
        args: Term,
    ) -> Result<ServiceInfo, ServiceError> {
        self.ask(|tx| Request::Start(name.to_owned(), kind.to_owned(), args, tx))
            .await
            .unwrap_or(Err(ServiceError::Stopping))
    }

    /// Deletes service `name` everywhere; false if there is none.
    pub async fn delete_service(&self, name: &str) -> bool {
        self.ask(|tx| Request::Delete(name.to_owned(), tx))
            .await
            .unwrap_or(false)
    }

    /// The services this node knows, sorted by name, with where they run.
    pub fn services(&self) -> Vec<ServiceInfo> {
        let names: Vec<String> = self.shared.specs.read().keys().cloned().collect();
        names
            .into_iter()
            .map(|name| {
                let entry = self.shared.table.whereis(&name);
                ServiceInfo {
                    node: entry
                        .as_ref()
                        .map_or_else(|| Atom::new(""), |e| e.pid.node.clone()),
                    pid: entry.map(|e| e.pid),
                    name,
                }
            })
            .collect()
    }

    /// The services with an instance running on this node, sorted.
    pub fn running_here(&self) -> Vec<String> {
        self.shared.running.read().iter().cloned().collect()
    }

    /// Whether a service `name` exists.
    pub fn has_service(&self, name: &str) -> bool {
        self.shared.specs.read().contains_key(name)
    }

    /// Calls service `name` wherever it runs (from inside an Ember
    /// process). [`ServiceError::Moving`] while it has no instance, or
    /// when its instance went away during the call.
    pub async fn call(
        &self,
        name: &str,
        request: Term,
        timeout: Duration,
    ) -> Result<Term, ServiceError> {
        if !self.has_service(name) {
            return Err(ServiceError::NotFound);
        }
        let pid = self
            .whereis(name)
            .and_then(|p| dist::pid_from_term(&Term::Pid(p)))
            .ok_or(ServiceError::Moving)?;
        match call_term(&TermServer::Pid(pid), request, timeout).await {
            Ok(reply) => Ok(reply),
            Err(CallError::NoProc) | Err(CallError::Exited(_)) => Err(ServiceError::Moving),
            Err(e) => Err(ServiceError::Call(e)),
        }
    }

    /// Sets the nodes this node keeps connecting to.
    pub fn set_seeds(&self, seeds: Vec<String>) {
        self.tell(Request::Seeds(seeds));
    }

    /// Leaves the cluster gracefully: tells the members, then hands every
    /// service instance of this node over to its next owner (waiting for
    /// each to give its state). Afterwards the node runs no services.
    pub async fn stop(&self) {
        let _ = self.ask(Request::Stop).await;
    }
}
