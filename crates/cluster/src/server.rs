//! The cluster server: one process per node, registered as
//! `ember_cluster`, that keeps the node's replica in step with its peers
//! and runs the services this node owns.
//!
//! Messages between servers are terms `{ember_cluster, Op, ...}` sent to
//! `{ember_cluster, Node}`:
//!
//! * `{ember_cluster, sync, Node, Members, Names, Groups, Specs}` on every
//!   connection that comes up: the sender's members, its own
//!   registrations `[{Name, Pid, Stamp, Generation}]`, its own group
//!   members `[{Group, Pid}]` and every service spec it knows
//!   `[{Name, Kind, Args, Stamp, Deleted}]`. A node that answers is a
//!   member; nodes without a cluster server (plain `erl`) never are.
//! * `{ember_cluster, members, Members}`: sent to every peer when a new
//!   member synced, so that members that synced earlier connect to it.
//! * `{ember_cluster, reg, Name, Pid, Stamp, Generation}`,
//!   `{ember_cluster, unreg, Name, Pid}`, `{ember_cluster, join, Group,
//!   Pid}`, `{ember_cluster, leave, Group, Pid}`: changes of the sender's
//!   own entries.
//! * `{ember_cluster, spec, Name, Kind, Args, Stamp, Deleted}`: a service
//!   started or deleted (the later stamp wins).
//! * `{ember_cluster, leaving, Node}`: the sender stops gracefully; it is
//!   no member any more, but its registrations stay until handed over.
//! * `{ember_cluster, ping, Pid, Node}`, answered `{ember_cluster, pong,
//!   Node}` to `Pid`: a stopping node's check that its peers have read
//!   everything it sent.
//! * `{ember_cluster, takeover, Name, Version, State, OldPid, Stamp,
//!   Generation}`: the state of an instance that stopped to move here.
//!
//! Anything malformed is logged and dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ember_runtime::dist::{self, NodeDown, NodeUp};
use ember_runtime::sync::oneshot;
use ember_runtime::{
    demonitor, monitor, receive_any, self_pid, send, send_after, Down, MonitorRef, Pid,
};
use ember_term::{Atom, Pid as TermPid, Term};
use parking_lot::RwLock;

use crate::placement;
use crate::service::{self, Control, HandedOff, Kinds};
use crate::table::{Entry, Inserted, Table};
use crate::{RegisterError, ServiceError, ServiceInfo};

/// The registered name of the server.
pub(crate) const NAME: &str = "ember_cluster";

/// How long a node waits for peers it heard of to connect before it
/// starts services nobody runs.
const PENDING_WAIT: Duration = Duration::from_secs(3);

/// How often the server retries its seeds and rebalances.
const TICK: Duration = Duration::from_millis(500);

/// How long an instance has to hand its state over.
const HANDOFF_WAIT: Duration = Duration::from_secs(5);

/// A crash loop's limit: an instance that exits abnormally `max_restarts`
/// times within `period` is not restarted until the first of those exits
/// is `period` old (a supervisor's intensity, without giving up for good).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RestartLimit {
    pub(crate) max_restarts: usize,
    pub(crate) period: Duration,
}

impl Default for RestartLimit {
    fn default() -> RestartLimit {
        RestartLimit {
            max_restarts: 5,
            period: Duration::from_secs(10),
        }
    }
}

/// What the API and the server share. It outlives the server process: a
/// server restarted by its supervisor starts from it (see
/// [`Server::recover`]).
pub(crate) struct Shared {
    pub(crate) node: Atom,
    pub(crate) table: Table,
    pub(crate) members: RwLock<Vec<Atom>>,
    pub(crate) specs: RwLock<BTreeMap<String, String>>,
    /// The services with an instance on this node (kept in step with
    /// `Server::instances` one name at a time: with thousands of
    /// services, rebuilding it per message made every message O(n)).
    pub(crate) running: RwLock<BTreeSet<String>>,
    /// The running server (the latest started), once one started.
    pub(crate) server: RwLock<Option<Pid>>,
    /// Every spec the server knows, deleted ones included (kept in step
    /// with `Server::specs`): what a restarted server starts from.
    saved_specs: RwLock<HashMap<String, Spec>>,
    /// Set when the node leaves the cluster ([`crate::Cluster::stop`]): a
    /// server restarted afterwards stays out.
    left: AtomicBool,
    /// How many servers started on this state.
    starts: AtomicU64,
    /// The latest registration stamp this node made or saw (see
    /// [`Shared::new_stamp`]). Only the running server writes it.
    clock: AtomicI64,
}

impl Shared {
    /// The state of a node that has not run a server yet.
    pub(crate) fn new(node: Atom) -> Shared {
        Shared {
            members: RwLock::new(vec![node.clone()]),
            node,
            table: Table::default(),
            specs: RwLock::new(BTreeMap::new()),
            running: RwLock::new(BTreeSet::new()),
            server: RwLock::new(None),
            saved_specs: RwLock::new(HashMap::new()),
            left: AtomicBool::new(false),
            starts: AtomicU64::new(0),
            clock: AtomicI64::new(0),
        }
    }

    /// A stamp for a new registration: the time in milliseconds, but
    /// always later than every stamp this node made or saw. So a
    /// registration made after this node learned of another (a service
    /// restarted when its node went away) ranks after it in the conflict
    /// rule even within the same millisecond, or with a clock behind.
    fn new_stamp(&self) -> i64 {
        let stamp = now_ms().max(self.clock.load(Ordering::Relaxed).saturating_add(1));
        self.clock.store(stamp, Ordering::Relaxed);
        stamp
    }

    /// Notes a stamp this node saw: its next stamps are later.
    fn saw_stamp(&self, stamp: i64) {
        self.clock.fetch_max(stamp, Ordering::Relaxed);
    }

    /// The running server, if one started.
    pub(crate) fn server(&self) -> Option<Pid> {
        *self.server.read()
    }
}

/// A request from the API.
pub(crate) enum Request {
    Register(String, Pid, oneshot::Sender<Result<(), RegisterError>>),
    Unregister(String, oneshot::Sender<bool>),
    Join(String, Pid),
    Leave(String, Pid),
    Start(
        String,
        String,
        Term,
        oneshot::Sender<Result<ServiceInfo, ServiceError>>,
    ),
    Delete(String, oneshot::Sender<bool>),
    Stop(oneshot::Sender<()>),
    Seeds(Vec<String>),
}

/// The timer message.
struct Tick;

/// A service's desired state.
#[derive(Clone)]
pub(crate) struct Spec {
    kind: String,
    args: Term,
    stamp: i64,
    deleted: bool,
}

/// Why the server monitors a local process.
enum Watched {
    Name(String),
    Group(String),
    Instance(String),
}

/// A service instance running here.
struct Instance {
    pid: Pid,
    monitor: MonitorRef,
}

pub(crate) struct Server {
    shared: Arc<Shared>,
    kinds: Kinds,
    seeds: Vec<Atom>,
    /// Peers that answered with a sync (and have not left).
    members: BTreeSet<Atom>,
    /// Peers we sent a sync to since their connection came up.
    up: BTreeSet<Atom>,
    /// Nodes a member named that have not synced yet, with a deadline.
    pending: HashMap<Atom, Instant>,
    specs: HashMap<String, Spec>,
    local_names: HashMap<String, (Pid, MonitorRef)>,
    local_groups: Vec<(String, Pid, MonitorRef)>,
    watched: HashMap<MonitorRef, Watched>,
    instances: HashMap<String, Instance>,
    leaving: bool,
    /// Recent abnormal exits of local instances, by service.
    crashes: HashMap<String, Vec<Instant>>,
    /// How many of those hold a service back, and for how long.
    restarts: RestartLimit,
    /// Peers asked for their sync after a restart (`hello`): their entries
    /// here are replaced by what their sync says.
    resync: BTreeSet<Atom>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn tag(op: &str, rest: impl IntoIterator<Item = Term>) -> Term {
    let mut v = vec![Term::atom(NAME), Term::atom(op)];
    v.extend(rest);
    Term::tuple(v)
}

fn term_pid(pid: Pid) -> TermPid {
    match dist::pid_to_term(pid) {
        Term::Pid(p) => p,
        _ => unreachable!("pid_to_term gives a pid"),
    }
}

fn entry_term(name: &str, e: &Entry) -> Term {
    Term::tuple([
        Term::from(name),
        Term::Pid(e.pid.clone()),
        Term::from(e.stamp),
        Term::from(e.generation),
    ])
}

fn parse_entry(t: &Term) -> Option<(String, Entry)> {
    let [name, pid, stamp, generation] = t.as_tuple()? else {
        return None;
    };
    Some((
        name.as_str()?.to_owned(),
        Entry {
            pid: pid.as_pid()?.clone(),
            stamp: stamp.as_int()?,
            generation: generation.as_int()?,
        },
    ))
}

fn spec_term(name: &str, s: &Spec) -> Term {
    Term::tuple([
        Term::from(name),
        Term::from(s.kind.as_str()),
        s.args.clone(),
        Term::from(s.stamp),
        Term::from(s.deleted),
    ])
}

fn parse_spec(t: &[Term]) -> Option<(String, Spec)> {
    let [name, kind, args, stamp, deleted] = t else {
        return None;
    };
    Some((
        name.as_str()?.to_owned(),
        Spec {
            kind: kind.as_str()?.to_owned(),
            args: args.clone(),
            stamp: stamp.as_int()?,
            deleted: deleted.as_bool()?,
        },
    ))
}

impl Server {
    pub(crate) fn new(
        shared: Arc<Shared>,
        kinds: Kinds,
        seeds: Vec<Atom>,
        restarts: RestartLimit,
    ) -> Server {
        Server {
            shared,
            kinds,
            seeds,
            members: BTreeSet::new(),
            up: BTreeSet::new(),
            pending: HashMap::new(),
            specs: HashMap::new(),
            local_names: HashMap::new(),
            local_groups: Vec::new(),
            watched: HashMap::new(),
            instances: HashMap::new(),
            leaving: false,
            crashes: HashMap::new(),
            restarts,
            resync: BTreeSet::new(),
        }
    }

    fn me(&self) -> &Atom {
        &self.shared.node
    }

    /// The server's loop.
    pub(crate) async fn run(mut self) {
        let restarted = self.shared.starts.fetch_add(1, Ordering::SeqCst) > 0;
        // (Its starter set it already; again for a server started otherwise.)
        *self.shared.server.write() = Some(self_pid());
        dist::monitor_nodes(true);
        let gone = if restarted {
            self.recover()
        } else {
            Vec::new()
        };
        for node in dist::nodes() {
            self.node_up(node);
        }
        if restarted && !self.leaving {
            // What changed here while no server ran, then the peers'
            // own entries and specs again (they may have changed too,
            // and what they sent meanwhile was lost).
            for message in gone {
                self.broadcast(message);
            }
            let hello = tag("hello", [Term::Atom(self.me().clone())]);
            for node in self.up.clone() {
                dist::send_named(NAME, node.as_str(), hello.clone());
                self.resync.insert(node.clone());
                // Nothing starts until they answered (or the wait ends).
                self.pending.insert(node, Instant::now() + PENDING_WAIT);
            }
            self.publish_members();
            tracing::info!(
                "cluster: {} restarted its server; asked {} peers to sync again",
                self.me(),
                self.resync.len()
            );
        }
        self.connect_seeds();
        send_after(self_pid(), Tick, TICK);
        loop {
            let m = receive_any(|m| {
                m.is::<Request>()
                    || m.is::<Term>()
                    || m.is::<Down>()
                    || m.is::<NodeUp>()
                    || m.is::<NodeDown>()
                    || m.is::<Tick>()
            })
            .await;
            let m = match m.downcast::<Request>() {
                Ok(r) => {
                    self.request(r).await;
                    continue;
                }
                Err(m) => m,
            };
            let m = match m.downcast::<Term>() {
                Ok(t) => {
                    if self.peer_message(&t).await.is_none() {
                        tracing::warn!("cluster: dropped a malformed message: {t}");
                    }
                    continue;
                }
                Err(m) => m,
            };
            let m = match m.downcast::<Down>() {
                Ok(d) => {
                    self.down(d);
                    continue;
                }
                Err(m) => m,
            };
            let m = match m.downcast::<NodeUp>() {
                Ok(up) => {
                    self.node_up(up.node);
                    continue;
                }
                Err(m) => m,
            };
            if let Ok(down) = m.downcast::<NodeDown>() {
                self.node_down(&down.node);
                // Failover at once, not at the next tick.
                self.rebalance().await;
                continue;
            }
            // The tick.
            self.connect_seeds();
            let now = Instant::now();
            self.pending.retain(|_, deadline| *deadline > now);
            self.rebalance().await;
            send_after(self_pid(), Tick, TICK);
        }
    }

    /// A restarted server takes over what its predecessor left in
    /// [`Shared`]: the specs, whether the node left, the members still
    /// connected, and this node's entries in the table: a live local
    /// process registered under a service's name is that service's
    /// instance here (it keeps running, state and all), any other live
    /// one a plain name or group member; all of them are monitored again.
    /// Entries of processes that died meanwhile are removed, and the
    /// messages that tell the peers so are returned. Other nodes' entries
    /// stay until their sync replaces them.
    fn recover(&mut self) -> Vec<Term> {
        let me = self.me().clone();
        self.leaving = self.shared.left.load(Ordering::SeqCst);
        self.specs = self.shared.saved_specs.read().clone();
        let connected = dist::nodes();
        self.members = self
            .shared
            .members
            .read()
            .iter()
            .filter(|m| **m != me && connected.contains(m))
            .cloned()
            .collect();
        self.shared.running.write().clear();
        let (names, groups) = self.shared.table.local(&me);
        let alive = |pid: &TermPid| {
            dist::pid_from_term(&Term::Pid(pid.clone())).filter(|p| ember_runtime::is_alive(*p))
        };
        let mut gone = Vec::new();
        for (name, entry) in names {
            let Some(pid) = alive(&entry.pid) else {
                self.shared.table.remove(&name, &entry.pid);
                gone.push(tag(
                    "unreg",
                    [Term::from(name.as_str()), Term::Pid(entry.pid)],
                ));
                continue;
            };
            let m = monitor(pid);
            if self.specs.get(&name).is_some_and(|s| !s.deleted) {
                self.watched.insert(m, Watched::Instance(name.clone()));
                self.add_instance(&name, Instance { pid, monitor: m });
            } else {
                self.watched.insert(m, Watched::Name(name.clone()));
                self.local_names.insert(name, (pid, m));
            }
        }
        for (group, member) in groups {
            let Some(pid) = alive(&member) else {
                self.shared.table.leave(&group, &member);
                gone.push(tag(
                    "leave",
                    [Term::from(group.as_str()), Term::Pid(member)],
                ));
                continue;
            };
            let m = monitor(pid);
            self.watched.insert(m, Watched::Group(group.clone()));
            self.local_groups.push((group, pid, m));
        }
        gone
    }

    fn publish_members(&self) {
        let mut v: Vec<Atom> = self.members.iter().cloned().collect();
        if !self.leaving {
            v.push(self.me().clone());
        }
        v.sort();
        *self.shared.members.write() = v;
    }

    /// Records a local instance of `name`, in `running` too.
    fn add_instance(&mut self, name: &str, instance: Instance) {
        self.instances.insert(name.to_owned(), instance);
        self.shared.running.write().insert(name.to_owned());
    }

    /// Forgets the local instance of `name`, in `running` too.
    fn take_instance(&mut self, name: &str) -> Option<Instance> {
        let i = self.instances.remove(name)?;
        self.shared.running.write().remove(name);
        Some(i)
    }

    /// Stores `spec` as `name`'s and publishes that one change (not the
    /// whole map: a sync carries every spec, one publish each).
    fn set_spec(&mut self, name: String, spec: Spec) {
        {
            let mut published = self.shared.specs.write();
            if spec.deleted {
                published.remove(&name);
            } else {
                published.insert(name.clone(), spec.kind.clone());
            }
        }
        self.shared
            .saved_specs
            .write()
            .insert(name.clone(), spec.clone());
        self.specs.insert(name, spec);
    }

    fn connect_seeds(&self) {
        if self.leaving {
            return;
        }
        let connected = dist::nodes();
        for seed in &self.seeds {
            if seed != self.me() && !connected.contains(seed) {
                // Connects; a failure comes back as a NodeDown.
                dist::monitor_node(seed.as_str(), true);
            }
        }
    }

    fn broadcast(&self, message: Term) {
        for node in &self.up {
            dist::send_named(NAME, node.as_str(), message.clone());
        }
    }

    fn node_up(&mut self, node: Atom) {
        if self.leaving {
            return;
        }
        let names: Vec<Term> = self
            .local_names
            .keys()
            .chain(self.instances.keys())
            .filter_map(|n| self.shared.table.whereis(n).map(|e| (n, e)))
            .filter(|(_, e)| &e.pid.node == self.me())
            .map(|(n, e)| entry_term(n, &e))
            .collect();
        let groups: Vec<Term> = self
            .local_groups
            .iter()
            .map(|(g, p, _)| Term::tuple([Term::from(g.as_str()), dist::pid_to_term(*p)]))
            .collect();
        let specs: Vec<Term> = self.specs.iter().map(|(n, s)| spec_term(n, s)).collect();
        let members: Vec<Term> = self.members.iter().map(|m| Term::Atom(m.clone())).collect();
        let sync = tag(
            "sync",
            [
                Term::Atom(self.me().clone()),
                Term::list(members),
                Term::list(names),
                Term::list(groups),
                Term::list(specs),
            ],
        );
        dist::send_named(NAME, node.as_str(), sync);
        self.up.insert(node);
    }

    fn node_down(&mut self, node: &Atom) {
        if !self.up.remove(node) && !self.members.contains(node) {
            self.pending.remove(node);
            return;
        }
        if self.members.remove(node) {
            tracing::info!("cluster: {} lost member {node}", self.me());
        }
        self.pending.remove(node);
        self.shared.table.drop_node(node);
        self.publish_members();
    }

    async fn request(&mut self, request: Request) {
        match request {
            Request::Register(name, pid, reply) => {
                let _ = reply.send(self.register(name, pid));
            }
            Request::Unregister(name, reply) => {
                let done = match self.local_names.remove(&name) {
                    Some((pid, m)) => {
                        demonitor(m, true);
                        self.watched.remove(&m);
                        self.unregister_entry(&name, pid);
                        true
                    }
                    None => false,
                };
                let _ = reply.send(done);
            }
            Request::Join(group, pid) => {
                let m = monitor(pid);
                self.watched.insert(m, Watched::Group(group.clone()));
                self.local_groups.push((group.clone(), pid, m));
                let p = term_pid(pid);
                self.shared.table.join(&group, p.clone());
                self.broadcast(tag("join", [Term::from(group.as_str()), Term::Pid(p)]));
            }
            Request::Leave(group, pid) => self.leave_group(&group, pid, true),
            Request::Start(name, kind, args, reply) => {
                let _ = reply.send(self.start_service(name, kind, args).await);
            }
            Request::Delete(name, reply) => {
                let found = self.specs.get(&name).is_some_and(|s| !s.deleted);
                if found {
                    let spec = Spec {
                        deleted: true,
                        stamp: now_ms().max(self.specs[&name].stamp + 1),
                        ..self.specs[&name].clone()
                    };
                    self.broadcast(tag("spec", spec_as_items(&name, &spec)));
                    self.set_spec(name.clone(), spec);
                    self.rebalance_one(&name).await;
                }
                let _ = reply.send(found);
            }
            Request::Stop(reply) => {
                self.stop_gracefully().await;
                let _ = reply.send(());
            }
            Request::Seeds(seeds) => {
                self.seeds = seeds.iter().filter_map(|s| Atom::try_new(s).ok()).collect();
                self.connect_seeds();
            }
        }
    }

    fn register(&mut self, name: String, pid: Pid) -> Result<(), RegisterError> {
        if let Some(e) = self.shared.table.whereis(&name) {
            return Err(RegisterError::Taken(e.pid));
        }
        if !ember_runtime::is_alive(pid) {
            return Err(RegisterError::NotAlive);
        }
        let entry = Entry {
            pid: term_pid(pid),
            stamp: self.shared.new_stamp(),
            generation: 0,
        };
        self.shared.table.insert(&name, entry.clone());
        let m = monitor(pid);
        self.watched.insert(m, Watched::Name(name.clone()));
        self.local_names.insert(name.clone(), (pid, m));
        self.broadcast(tag("reg", entry_items(&name, &entry)));
        Ok(())
    }

    fn unregister_entry(&mut self, name: &str, pid: Pid) {
        let p = term_pid(pid);
        if self.shared.table.remove(name, &p) {
            self.broadcast(tag("unreg", [Term::from(name), Term::Pid(p)]));
        }
    }

    fn leave_group(&mut self, group: &str, pid: Pid, demon: bool) {
        let Some(i) = self
            .local_groups
            .iter()
            .position(|(g, p, _)| g == group && *p == pid)
        else {
            return;
        };
        let (_, _, m) = self.local_groups.remove(i);
        if demon {
            demonitor(m, true);
        }
        self.watched.remove(&m);
        if !self
            .local_groups
            .iter()
            .any(|(g, p, _)| g == group && *p == pid)
        {
            let p = term_pid(pid);
            self.shared.table.leave(group, &p);
            self.broadcast(tag("leave", [Term::from(group), Term::Pid(p)]));
        }
    }

    async fn start_service(
        &mut self,
        name: String,
        kind: String,
        args: Term,
    ) -> Result<ServiceInfo, ServiceError> {
        if self.leaving {
            return Err(ServiceError::Stopping);
        }
        if self.kinds.get(&kind).is_none() {
            return Err(ServiceError::UnknownKind(kind));
        }
        if self.specs.get(&name).is_some_and(|s| !s.deleted)
            || self.shared.table.whereis(&name).is_some()
        {
            return Err(ServiceError::Exists);
        }
        let stamp = now_ms().max(self.specs.get(&name).map_or(0, |s| s.stamp + 1));
        let spec = Spec {
            kind,
            args,
            stamp,
            deleted: false,
        };
        self.broadcast(tag("spec", spec_as_items(&name, &spec)));
        self.set_spec(name.clone(), spec);
        let owner = self.owner(&name);
        // Only this service: a full rebalance per start made creating n
        // services O(n²).
        self.rebalance_one(&name).await;
        Ok(ServiceInfo {
            name: name.clone(),
            node: owner.clone(),
            pid: self.shared.table.whereis(&name).map(|e| e.pid),
        })
    }

    /// The member that should run `name`.
    fn owner(&self, name: &str) -> Atom {
        let me = self.me().clone();
        let all: Vec<&Atom> = self
            .members
            .iter()
            .chain((!self.leaving).then_some(&me))
            .collect();
        placement::owner(name, all.iter().copied())
            .cloned()
            .unwrap_or(me.clone())
    }

    /// Starts what this node owns and nobody runs, hands over what it runs
    /// and no longer owns, stops what was deleted.
    async fn rebalance(&mut self) {
        let mut names: Vec<String> = self.specs.keys().cloned().collect();
        names.sort();
        for name in names {
            self.rebalance_one(&name).await;
        }
    }

    /// [`Server::rebalance`] for the service `name` alone.
    async fn rebalance_one(&mut self, name: &str) {
        let Some(spec) = self.specs.get(name).cloned() else {
            return;
        };
        let running = self.instances.contains_key(name);
        if spec.deleted {
            if running {
                self.stop_instance(name);
            }
            return;
        }
        if self.leaving {
            return;
        }
        let owner = self.owner(name);
        if running {
            // Not while members are pending: the owner may still
            // change as they sync, and each move costs a handoff.
            if &owner != self.me() && self.members.contains(&owner) && self.pending.is_empty() {
                self.hand_off(name, &owner).await;
            }
        } else if &owner == self.me()
            && self.pending.is_empty()
            && self.shared.table.whereis(name).is_none()
            && !self.backing_off(name)
        {
            self.start_instance(name, &spec, None, None);
        }
    }

    /// Whether `name` crashed too often lately to be restarted now.
    fn backing_off(&mut self, name: &str) -> bool {
        let Some(recent) = self.crashes.get_mut(name) else {
            return false;
        };
        let now = Instant::now();
        let RestartLimit {
            max_restarts,
            period,
        } = self.restarts;
        recent.retain(|t| now.duration_since(*t) < period);
        if recent.is_empty() {
            self.crashes.remove(name);
            return false;
        }
        recent.len() >= max_restarts
    }

    fn start_instance(
        &mut self,
        name: &str,
        spec: &Spec,
        handed_over: Option<(u32, Term)>,
        inherited: Option<(i64, i64)>,
    ) {
        let Some(kind) = self.kinds.get(&spec.kind) else {
            tracing::warn!("cluster: cannot run {name}: unknown kind {}", spec.kind);
            return;
        };
        let pid = ember_runtime::spawn(service::run(
            name.to_owned(),
            kind,
            spec.args.clone(),
            handed_over,
        ));
        let m = monitor(pid);
        self.watched.insert(m, Watched::Instance(name.to_owned()));
        self.add_instance(name, Instance { pid, monitor: m });
        let (stamp, generation) = match inherited {
            Some((stamp, generation)) => {
                self.shared.saw_stamp(stamp);
                (stamp, generation)
            }
            None => (self.shared.new_stamp(), 0),
        };
        let entry = Entry {
            pid: term_pid(pid),
            stamp,
            generation,
        };
        match self.shared.table.insert(name, entry.clone()) {
            Inserted::Conflict { loser, .. } if loser == entry => {
                // Someone else holds it with an older registration.
                self.stop_instance(name);
            }
            _ => self.broadcast(tag("reg", entry_items(name, &entry))),
        }
        tracing::info!("cluster: {} runs {name} as {pid}", self.me());
    }

    fn stop_instance(&mut self, name: &str) {
        if let Some(i) = self.take_instance(name) {
            demonitor(i.monitor, true);
            self.watched.remove(&i.monitor);
            send(i.pid, Control::Stop);
            self.unregister_entry(name, i.pid);
        }
    }

    /// Stops the local instance of `name`, taking its state, and sends it
    /// to `to`.
    async fn hand_off(&mut self, name: &str, to: &Atom) {
        let Some(i) = self.take_instance(name) else {
            return;
        };
        self.watched.remove(&i.monitor);
        let Some(spec) = self.specs.get(name).cloned() else {
            return;
        };
        let version = self.kinds.get(&spec.kind).map_or(1, |k| k.version());
        send(i.pid, Control::Handoff(self_pid()));
        let wanted = name.to_owned();
        let (watch, pid) = (i.monitor, i.pid);
        let answer = receive_any(move |m| {
            m.downcast_ref::<HandedOff>()
                .is_some_and(|h| h.name == wanted)
                || m.downcast_ref::<Down>().is_some_and(|d| d.monitor == watch)
        })
        .timeout(HANDOFF_WAIT)
        .await;
        demonitor(watch, true);
        let state = match answer.map(|m| m.downcast::<HandedOff>()) {
            Some(Ok(h)) => Some(h.state),
            _ => None,
        };
        let entry = self.shared.table.whereis(name);
        match (state, entry) {
            (Some(state), Some(e)) if e.pid == term_pid(pid) => {
                tracing::info!("cluster: {} hands {name} over to {to}", self.me());
                dist::send_named(
                    NAME,
                    to.as_str(),
                    tag(
                        "takeover",
                        [
                            Term::from(name),
                            Term::from(version),
                            state,
                            Term::Pid(e.pid.clone()),
                            Term::from(e.stamp),
                            Term::from(e.generation),
                        ],
                    ),
                );
            }
            _ => {
                ember_runtime::exit(pid, ember_runtime::ExitReason::Kill);
                tracing::warn!("cluster: {name} did not hand its state over");
            }
        }
        self.unregister_entry(name, pid);
    }

    async fn stop_gracefully(&mut self) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.shared.left.store(true, Ordering::SeqCst);
        self.broadcast(tag("leaving", [Term::Atom(self.me().clone())]));
        self.publish_members();
        let mut names: Vec<String> = self.instances.keys().cloned().collect();
        names.sort();
        for name in names {
            let owner = self.owner(&name);
            if &owner == self.me() {
                self.stop_instance(&name);
            } else {
                self.hand_off(&name, &owner).await;
            }
        }
        self.flush_peers().await;
    }

    /// Waits (up to [`HANDOFF_WAIT`]) until every peer has read what this
    /// server sent it: one `ping` each, answered `pong` in order after
    /// everything sent before it, so nothing is lost when the node's
    /// connections close right after.
    async fn flush_peers(&mut self) {
        let me = dist::pid_to_term(self_pid());
        let mut waiting: BTreeSet<Atom> = BTreeSet::new();
        for node in self.up.clone() {
            dist::send_named(
                NAME,
                node.as_str(),
                tag("ping", [me.clone(), Term::Atom(self.me().clone())]),
            );
            waiting.insert(node);
        }
        let deadline = Instant::now() + HANDOFF_WAIT;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = receive_any(|m| {
                m.downcast_ref::<Term>()
                    .and_then(Term::as_tuple)
                    .is_some_and(|t| t.len() == 3 && t[0].is_atom(NAME) && t[1].is_atom("pong"))
            })
            .timeout(left)
            .await
            else {
                tracing::warn!("cluster: no answer from {waiting:?} before stopping");
                return;
            };
            if let Ok(t) = m.downcast::<Term>() {
                if let Some(node) = t.as_tuple().and_then(|t| t[2].as_atom()) {
                    waiting.remove(&Atom::new(node));
                }
            }
        }
    }

    fn down(&mut self, down: Down) {
        let Some(what) = self.watched.remove(&down.monitor) else {
            return;
        };
        match what {
            Watched::Name(name) => {
                if let Some((pid, _)) = self.local_names.remove(&name) {
                    self.unregister_entry(&name, pid);
                }
            }
            Watched::Group(group) => self.leave_group(&group, down.pid, false),
            Watched::Instance(name) => {
                if let Some(i) = self.take_instance(&name) {
                    self.unregister_entry(&name, i.pid);
                    let now = Instant::now();
                    let RestartLimit {
                        max_restarts,
                        period,
                    } = self.restarts;
                    let recent = self.crashes.entry(name.clone()).or_default();
                    recent.retain(|t| now.duration_since(*t) < period);
                    recent.push(now);
                    if recent.len() >= max_restarts {
                        tracing::error!(
                            "cluster: {name} exited ({}) {} times in {period:?}; \
                             not restarting it until the first of those is {period:?} old",
                            down.reason,
                            recent.len()
                        );
                    } else {
                        // The next rebalance starts it again where it belongs.
                        tracing::warn!("cluster: {name} exited ({}); restarting", down.reason);
                    }
                }
            }
        }
    }

    /// Handles a term from a peer; `None` if it is malformed.
    async fn peer_message(&mut self, t: &Term) -> Option<()> {
        let items = t.as_tuple()?;
        let (first, rest) = items.split_first()?;
        if !first.is_atom(NAME) {
            return None;
        }
        let (op, rest) = rest.split_first()?;
        match (op.as_atom()?, rest) {
            ("sync", [node, members, names, groups, specs]) => {
                let node = Atom::new(node.as_atom()?);
                let names = names
                    .as_list()?
                    .iter()
                    .map(parse_entry)
                    .collect::<Option<Vec<_>>>()?;
                let groups = groups
                    .as_list()?
                    .iter()
                    .map(|g| match g.as_tuple()? {
                        [g, p] => Some((g.as_str()?.to_owned(), p.as_pid()?.clone())),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?;
                let specs = specs
                    .as_list()?
                    .iter()
                    .map(|s| parse_spec(s.as_tuple()?))
                    .collect::<Option<Vec<_>>>()?;
                let members = members
                    .as_list()?
                    .iter()
                    .map(|m| m.as_atom().map(Atom::new))
                    .collect::<Option<Vec<_>>>()?;
                if self.leaving {
                    return Some(());
                }
                if !dist::nodes().contains(&node) {
                    // Only a connected node can be a member.
                    tracing::warn!("cluster: ignoring a sync naming {node}, not connected");
                    return Some(());
                }
                self.pending.remove(&node);
                if self.resync.remove(&node) {
                    // The answer to our `hello`: what it holds now
                    // replaces what this node knew of it. Only what it no
                    // longer holds goes (no moment without its entries);
                    // the rest is offered again below.
                    let (held, joined) = self.shared.table.local(&node);
                    for (name, entry) in held {
                        if !names.iter().any(|(n, e)| *n == name && e.pid == entry.pid) {
                            self.shared.table.remove(&name, &entry.pid);
                        }
                    }
                    for (group, pid) in joined {
                        if !groups.iter().any(|(g, p)| *g == group && *p == pid) {
                            self.shared.table.leave(&group, &pid);
                        }
                    }
                }
                let new = self.members.insert(node.clone());
                if !self.up.contains(&node) {
                    self.node_up(node.clone());
                } else if new && !members.contains(self.me()) {
                    // It does not count us a member: our sync may have
                    // gone before its server was registered there (a
                    // connection made while it started) and been lost.
                    // Once more; its next sync names us, so this ends.
                    self.up.remove(&node);
                    self.node_up(node.clone());
                }
                self.learn(members);
                if new {
                    // Members that synced before may not know the newcomer
                    // (our sync to it may have gone before theirs came).
                    let all: Vec<Term> =
                        self.members.iter().map(|m| Term::Atom(m.clone())).collect();
                    self.broadcast(tag("members", [Term::list(all)]));
                }
                for (name, entry) in names {
                    self.offer(&name, entry);
                }
                for (group, pid) in groups {
                    self.shared.table.join(&group, pid);
                }
                for (name, spec) in specs {
                    self.merge_spec(name, spec);
                }
                self.publish_members();
                tracing::info!("cluster: {} synced with {node}", self.me());
                self.rebalance().await;
            }
            ("hello", [node]) => {
                // Its server restarted: it wants our sync again.
                let node = Atom::new(node.as_atom()?);
                if !self.leaving && dist::nodes().contains(&node) {
                    self.up.remove(&node);
                    self.node_up(node);
                }
            }
            ("members", [members]) => {
                let members = members
                    .as_list()?
                    .iter()
                    .map(|m| m.as_atom().map(Atom::new))
                    .collect::<Option<Vec<_>>>()?;
                if !self.leaving {
                    self.learn(members);
                }
            }
            ("reg", [name, pid, stamp, generation]) => {
                let (name, entry) = parse_entry(&Term::tuple([
                    name.clone(),
                    pid.clone(),
                    stamp.clone(),
                    generation.clone(),
                ]))?;
                self.offer(&name, entry);
            }
            ("unreg", [name, pid]) => {
                self.shared.table.remove(name.as_str()?, pid.as_pid()?);
            }
            ("join", [group, pid]) => self
                .shared
                .table
                .join(group.as_str()?, pid.as_pid()?.clone()),
            ("leave", [group, pid]) => self.shared.table.leave(group.as_str()?, pid.as_pid()?),
            ("spec", spec) => {
                let (name, spec) = parse_spec(spec)?;
                self.merge_spec(name.clone(), spec);
                self.rebalance_one(&name).await;
            }
            ("ping", [from, _node]) => {
                let from = dist::pid_from_term(from)?;
                send(from, tag("pong", [Term::Atom(self.me().clone())]));
            }
            ("leaving", [node]) => {
                let node = Atom::new(node.as_atom()?);
                self.members.remove(&node);
                self.publish_members();
                self.rebalance().await;
            }
            ("takeover", [name, version, state, old, stamp, generation]) => {
                let name = name.as_str()?.to_owned();
                let version = u32::try_from(version.as_int()?).ok()?;
                let old = old.as_pid()?;
                let (stamp, generation) = (stamp.as_int()?, generation.as_int()?);
                self.shared.table.remove(&name, old);
                let spec = self.specs.get(&name).filter(|s| !s.deleted).cloned();
                match spec {
                    Some(spec) if !self.instances.contains_key(&name) && !self.leaving => {
                        tracing::info!("cluster: {} takes {name} over", self.me());
                        self.start_instance(
                            &name,
                            &spec,
                            Some((version, state.clone())),
                            Some((stamp, generation + 1)),
                        );
                    }
                    _ => tracing::warn!(
                        "cluster: {} drops the state handed over for {name}",
                        self.me()
                    ),
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// Connects to the members a peer named that we do not have yet;
    /// they are pending until they sync.
    fn learn(&mut self, members: Vec<Atom>) {
        for m in members {
            if &m != self.me() && !self.members.contains(&m) && !self.pending.contains_key(&m) {
                self.pending
                    .insert(m.clone(), Instant::now() + PENDING_WAIT);
                if dist::nodes().contains(&m) {
                    // Connected already: our sync went at its nodeup.
                    continue;
                }
                dist::monitor_node(m.as_str(), true);
            }
        }
    }

    fn merge_spec(&mut self, name: String, spec: Spec) {
        let newer = self.specs.get(&name).is_none_or(|s| spec.stamp > s.stamp);
        if newer {
            self.set_spec(name, spec);
        }
    }

    /// Offers a peer's registration; the loser of a clash, if local, is
    /// told (a name) or stopped (a service instance).
    fn offer(&mut self, name: &str, entry: Entry) {
        self.shared.saw_stamp(entry.stamp);
        if let Inserted::Conflict { loser, winner } = self.shared.table.insert(name, entry) {
            if &loser.pid.node != self.me() {
                return;
            }
            tracing::warn!(
                "cluster: {name} registered twice; {} keeps it, {} loses",
                winner.pid.node,
                loser.pid.node
            );
            if self
                .instances
                .get(name)
                .is_some_and(|i| term_pid(i.pid) == loser.pid)
            {
                // Stopped without handoff; its claim is withdrawn.
                self.stop_instance(name);
            } else if let Some((pid, m)) = self
                .local_names
                .get(name)
                .copied()
                .filter(|(pid, _)| term_pid(*pid) == loser.pid)
            {
                self.local_names.remove(name);
                demonitor(m, true);
                self.watched.remove(&m);
                self.unregister_entry(name, pid);
                send(
                    pid,
                    tag("name_conflict", [Term::from(name), Term::Pid(winner.pid)]),
                );
            }
        }
    }
}

fn entry_items(name: &str, e: &Entry) -> Vec<Term> {
    match entry_term(name, e) {
        Term::Tuple(v) => v,
        _ => unreachable!(),
    }
}

fn spec_as_items(name: &str, s: &Spec) -> Vec<Term> {
    match spec_term(name, s) {
        Term::Tuple(v) => v,
        _ => unreachable!(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_stamp_is_later_than_every_stamp_seen_even_one_ahead_of_the_clock() {
        let shared = Shared::new(Atom::new("n@h"));
        let first = shared.new_stamp();
        assert!(shared.new_stamp() > first, "two stamps in one millisecond");
        let ahead = now_ms() + 60_000;
        shared.saw_stamp(ahead);
        assert_eq!(shared.new_stamp(), ahead + 1);
        shared.saw_stamp(first);
        assert_eq!(
            shared.new_stamp(),
            ahead + 2,
            "an old stamp moved the clock back"
        );
    }
}
