//! A distribution node: its name, cookie and epmd registration, its
//! listener, and its connections by peer name.
//!
//! State: `conns` maps a peer to `Pending` (a handshake in progress, in
//! either direction) or `Up` (its queue and tasks). Only the handshake or
//! connection whose `id` is in the slot may remove it. The lock is a plain
//! mutex, never held across an `.await`.
//!
//! A connect that finds another attempt pending waits for it without
//! polling: under the lock it leaves a [`Resolved`] sender in the pending
//! slot, and whoever replaces or removes the slot (the handshake that wins
//! or fails, `stop`) drops it with the slot, which wakes the waiter to look
//! again. Registering and resolving both happen under the lock, so no
//! wake-up is lost (loom model in `loom_models.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ember_term::{Atom, Pid, Reference, Term};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::connection::{self, Outgoing, SendQueue};
use crate::epmd::{self, Registrar};
use crate::error::DistError;
use crate::flags;
use crate::handshake::{self, Local, Peer, Status};
use crate::traffic::ConnectionInfo;
use crate::transport::{self, DistStream, TlsOptions, Transport};

/// A message from a peer for a local process. Ember has no process table
/// behind distribution yet, so these go to a [`Deliver`] hook.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Delivery {
    /// `SEND`: to a pid of this node.
    ToPid {
        /// The sender, when the peer said (`SEND_SENDER`).
        from: Option<Pid>,
        /// The receiver.
        to: Pid,
        /// The message.
        message: Term,
    },
    /// `REG_SEND`: to a registered name on this node.
    ToName {
        /// The sender.
        from: Option<Pid>,
        /// The name.
        to: Atom,
        /// The message.
        message: Term,
    },
    /// `ALIAS_SEND`: to a process alias made on this node.
    ToAlias {
        /// The sender.
        from: Option<Pid>,
        /// The alias.
        alias: Reference,
        /// The message.
        message: Term,
    },
}

/// Where messages and signals from peers to local processes go: the seam
/// where a process table plugs in (Ember's runtime does, through
/// [`Node::start_in_runtime`]). The default drops messages (with a `debug`
/// log line) and answers signals as if no local process existed.
pub trait Deliver: Send + Sync + 'static {
    /// Called, in arrival order per connection, for each message from
    /// `node` that Ember does not answer itself. Must not block.
    fn deliver(&self, node: &Atom, delivery: Delivery);

    /// Called, in the same order, for every other control message
    /// (`LINK`, `EXIT`, `MONITOR_P`, `UNLINK_ID`, `SPAWN_REQUEST`, ...; the
    /// tuple's elements, and the payload if it has one) that arrived on
    /// the connection numbered `connection` (as in
    /// [`connection_up`](Deliver::connection_up)). Returns whether it
    /// handled it; if not, the connection answers it as if no local
    /// process existed (`noproc`, `notsup`). Must not block.
    fn signal(
        &self,
        _node: &Atom,
        _connection: u64,
        _control: &[Term],
        _payload: Option<&Term>,
    ) -> bool {
        false
    }

    /// A connection to `node` came up, with these negotiated flags;
    /// `connection` numbers it (unique for the node's lifetime). Called
    /// before anything from it is delivered.
    fn connection_up(&self, _node: &Atom, _connection: u64, _flags: u64) {}

    /// The connection `connection` to `node` went down; called after the
    /// last thing delivered from it (nothing from it is delivered after
    /// this, even by a reader still finishing a frame).
    fn connection_down(&self, _node: &Atom, _connection: u64) {}
}

/// The default [`Deliver`]: no local processes, so messages are dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct DropAll;

impl Deliver for DropAll {
    fn deliver(&self, node: &Atom, delivery: Delivery) {
        tracing::debug!("dist: no local process for a message from {node}: {delivery:?}");
    }
}

/// How to start a [`Node`]. [`NodeConfig::new`] holds the defaults; set
/// the fields to change them.
#[derive(Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// `alive@host`.
    pub name: String,
    /// The cookie every peer must share.
    pub cookie: String,
    /// The port mapper's port (default: `ERL_EPMD_PORT`, else 4369).
    pub epmd_port: u16,
    /// Start an [`EmbeddedEpmd`](crate::EmbeddedEpmd) when none answers on
    /// `epmd_port` (default true), at start and whenever the mapper the
    /// node registered with goes away (see [`Registrar`]).
    pub embedded_epmd: bool,
    /// Where the distribution listener binds (default `0.0.0.0:0`).
    pub listen: SocketAddr,
    /// A hidden node (no `DFLAG_PUBLISHED`): not in peers' `nodes()`.
    pub hidden: bool,
    /// `net_ticktime` (default 60 s): a tick every quarter of it, and a
    /// connection silent this long is down.
    pub net_ticktime: Duration,
    /// `net_setuptime` (default 7 s): the limit for connecting and the
    /// handshake.
    pub setup_time: Duration,
    /// How long [`Node::ping`] waits for the answer (default 7 s).
    pub ping_timeout: Duration,
    /// The largest frame accepted from a peer (default 128 MiB).
    pub max_frame: usize,
    /// The bytes each connection's send queue holds before it is busy
    /// (Erlang's `+zdbbl`; default 1 MiB): then async sends wait and
    /// [`Node::try_send`] fails with [`DistError::Busy`].
    pub send_queue_limit: usize,
    /// Where messages for local processes go (default [`DropAll`]).
    pub deliver: Arc<dyn Deliver>,
    /// TLS for every connection, accepted and outgoing (default `None`:
    /// plain TCP). See [`TlsOptions`].
    pub tls: Option<TlsOptions>,
}

impl NodeConfig {
    /// The defaults for a node called `name` with `cookie`.
    pub fn new(name: &str, cookie: &str) -> NodeConfig {
        NodeConfig {
            name: name.to_string(),
            cookie: cookie.to_string(),
            epmd_port: epmd::port_from_env(),
            embedded_epmd: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            hidden: false,
            net_ticktime: Duration::from_secs(60),
            setup_time: Duration::from_secs(7),
            ping_timeout: Duration::from_secs(7),
            max_frame: 128 << 20,
            send_queue_limit: 1 << 20,
            deliver: Arc::new(DropAll),
            tls: None,
        }
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("name", &self.name)
            .field("epmd_port", &self.epmd_port)
            .field("hidden", &self.hidden)
            .field("net_ticktime", &self.net_ticktime)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Wakes a connect waiting for a pending slot when it is dropped with the
/// slot (the receiver then sees the sender gone).
type Resolved = oneshot::Sender<()>;

enum Slot {
    /// A handshake in progress, and the connects waiting for it to end.
    Pending { id: u64, waiters: Vec<Resolved> },
    Up {
        id: u64,
        /// The peer's creation.
        creation: u32,
        tx: Arc<SendQueue>,
        tasks: connection::Tasks,
    },
}

impl Slot {
    /// A handshake `id` in progress that nobody waits for yet.
    fn pending(id: u64) -> Slot {
        Slot::Pending {
            id,
            waiters: Vec::new(),
        }
    }
}

/// An outstanding call: the connection it was sent on, and where its
/// reply goes.
type Call = (Arc<SendQueue>, oneshot::Sender<Term>);

pub(crate) struct Inner {
    pub(crate) config: NodeConfig,
    pub(crate) local: Local,
    transport: Transport,
    /// The pid Ember's own net_kernel replies and pings come from.
    own_pid: Pid,
    listen_port: u16,
    conns: Mutex<HashMap<Atom, Slot>>,
    /// Our outstanding calls (pings) by reference words, with the
    /// connection asked: that connection going down, or being replaced,
    /// fails its calls at once.
    calls: Mutex<HashMap<Vec<u32>, Call>>,
    next_id: AtomicU64,
    stopped: AtomicBool,
    background: Mutex<Vec<AbortHandle>>,
    /// The port mapper registration (and the embedded mapper, if this
    /// node holds it), kept while the node runs.
    registrar: Mutex<Option<Registrar>>,
    /// The Ember runtime whose processes this node's are
    /// ([`Node::start_in_runtime`]): plain TCP connections are read by a
    /// process of it (see `connection::spawn`).
    pub(crate) runtime: std::sync::OnceLock<ember_runtime::Handle>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn split_name(name: &str) -> Result<(&str, &str), DistError> {
    match name.split_once('@') {
        Some((alive, host)) if !alive.is_empty() && !host.is_empty() && !host.contains('@') => {
            Ok((alive, host))
        }
        _ => Err(DistError::BadNodeName(name.to_string())),
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, DistError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| DistError::BadNodeName(format!("cannot resolve host {host}")))
}

impl Inner {
    fn fresh_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// This node's name.
    pub(crate) fn local_name(&self) -> &Atom {
        &self.local.name
    }

    /// The pid Ember's own services (net_kernel, global) send from.
    pub(crate) fn own_pid(&self) -> &Pid {
        &self.own_pid
    }

    pub(crate) fn deliver(&self, node: &Atom, d: Delivery) {
        self.config.deliver.deliver(node, d);
    }

    /// A `{Ref, Reply}` answering one of our calls: hands it to the caller.
    pub(crate) fn complete_call(&self, message: &Term) -> bool {
        let Some([Term::Reference(r), reply]) = message.as_tuple() else {
            return false;
        };
        if r.node != self.local.name {
            return false;
        }
        match lock(&self.calls).remove(&r.ids) {
            Some((_, waiter)) => {
                let _ = waiter.send(reply.clone());
                true
            }
            None => false,
        }
    }

    /// net_kernel's answer to a message, if it has one (only `is_auth`).
    pub(crate) fn net_kernel(&self, peer: &Peer, message: &Term) -> Option<(Term, Term)> {
        let r = connection::is_auth_reply(&self.own_pid, peer.flags, message);
        if r.is_none() {
            tracing::debug!("dist: net_kernel ignores {message} from {}", peer.name);
        }
        r
    }

    pub(crate) fn connection_down(&self, node: &Atom, id: u64) {
        let mut conns = lock(&self.conns);
        if matches!(conns.get(node), Some(Slot::Up { id: i, .. }) if *i == id) {
            if let Some(Slot::Up { tx, .. }) = conns.remove(node) {
                tx.retire();
                drop(conns);
                self.fail_calls(&tx);
                self.config.deliver.connection_down(node, id);
            }
        }
    }

    /// Fails the calls sent on the connection `tx` (retired): dropping
    /// their senders wakes the callers with an error. A call that finds
    /// the connection retired later fails on sending (its queue is closed
    /// before this runs).
    fn fail_calls(&self, tx: &Arc<SendQueue>) {
        lock(&self.calls).retain(|_, (q, _)| !Arc::ptr_eq(q, tx));
    }

    /// Whether the slot of `node` is still the pending attempt `id`.
    fn is_pending(&self, node: &Atom, id: u64) -> bool {
        matches!(lock(&self.conns).get(node), Some(Slot::Pending { id: i, .. }) if *i == id)
    }

    fn forget_pending(&self, node: &Atom, id: u64) {
        let mut conns = lock(&self.conns);
        if matches!(conns.get(node), Some(Slot::Pending { id: i, .. }) if *i == id) {
            conns.remove(node);
        }
    }

    fn install(self: &Arc<Self>, peer: Peer, stream: DistStream, id: u64) {
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let mut conns = lock(&self.conns);
        if let Some(Slot::Up {
            tasks, tx, id: old, ..
        }) = conns.remove(&peer.name)
        {
            // `alive`: the old connection is replaced. Its reader delivers
            // nothing more (it may be in the middle of a frame), and its
            // calls (a ping) get no answer: they fail now, as they do when
            // a connection goes down (its reader, aborted, never says so).
            tx.retire();
            tasks.abort();
            self.fail_calls(&tx);
            self.config.deliver.connection_down(&peer.name, old);
        }
        // Up before the reader can deliver anything from the peer.
        self.config
            .deliver
            .connection_up(&peer.name, id, peer.flags);
        let (tx, tasks) = connection::spawn(self, stream, &peer, id);
        let creation = peer.creation;
        conns.insert(
            peer.name.clone(),
            Slot::Up {
                id,
                creation,
                tx,
                tasks,
            },
        );
        drop(conns);
        tracing::info!(
            "dist: connected to {} (creation {}, flags {:#x})",
            peer.name,
            peer.creation,
            peer.flags
        );
    }

    /// The status for a peer's `send_name`, as net_kernel decides it.
    fn decide(&self, peer: &Atom, id: u64) -> Status {
        if peer == &self.local.name || self.stopped.load(Ordering::Acquire) {
            return Status::NotAllowed;
        }
        let mut conns = lock(&self.conns);
        match conns.get(peer) {
            None => {
                conns.insert(peer.clone(), Slot::pending(id));
                Status::Ok
            }
            // Both sides are connecting: the greater name's attempt wins
            // (replacing the slot wakes its waiters to wait for this one).
            Some(Slot::Pending { .. }) => {
                if self.local.name.as_str() > peer.as_str() {
                    Status::Nok
                } else {
                    conns.insert(peer.clone(), Slot::pending(id));
                    Status::OkSimultaneous
                }
            }
            Some(Slot::Up { .. }) => Status::Alive,
        }
    }

    async fn accept(self: Arc<Self>, tcp: TcpStream, from: SocketAddr) {
        let id = self.fresh_id();
        let mut decided: Option<Atom> = None;
        let me = self.clone();
        let result = tokio::time::timeout(self.config.setup_time, async {
            let mut stream = self.transport.accept(tcp).await?;
            let accepted = handshake::accept(&mut stream, &self.local, |peer| {
                decided = Some(peer.clone());
                me.decide(peer, id)
            })
            .await
            .map_err(transport::surface_tls);
            match accepted {
                Ok(peer) => Ok((peer, stream)),
                Err(e) => {
                    // The attempt is forgotten before its socket closes:
                    // the peer learns of the refusal from the close, and a
                    // connect of ours after that must not find the attempt
                    // still pending (and wait for it to fail).
                    if let Some(peer) = &decided {
                        self.forget_pending(peer, id);
                    }
                    Err(e)
                }
            }
        })
        .await
        .unwrap_or(Err(DistError::Timeout("handshake")));
        match result {
            Ok((peer, stream)) => self.install(peer, stream, id),
            Err(e) => {
                tracing::info!("dist: refused a connection from {from}: {e}");
                if let Some(peer) = decided {
                    self.forget_pending(&peer, id);
                }
            }
        }
    }

    /// Waits, up to the setup time, until the pending connection to `node`
    /// is up (its queue) or has failed; woken each time the slot changes.
    async fn wait_up(&self, node: &Atom) -> Result<Arc<SendQueue>, DistError> {
        let deadline = tokio::time::Instant::now() + self.config.setup_time;
        loop {
            let resolved = match lock(&self.conns).get_mut(node) {
                Some(Slot::Up { tx, .. }) => return Ok(tx.clone()),
                Some(Slot::Pending { waiters, .. }) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    rx
                }
                None => {
                    return Err(DistError::Refused(
                        "the other connection attempt failed".into(),
                    ))
                }
            };
            // Nothing is ever sent: the sender is dropped with the slot.
            if tokio::time::timeout_at(deadline, resolved).await.is_err() {
                return Err(DistError::Timeout("waiting for a simultaneous connection"));
            }
        }
    }

    pub(crate) async fn connect(
        self: &Arc<Self>,
        node: &Atom,
    ) -> Result<Arc<SendQueue>, DistError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(DistError::Stopped);
        }
        let (alive, host) = split_name(node.as_str())?;
        if node == &self.local.name {
            return Err(DistError::BadNodeName(format!("{node} is this node")));
        }
        let id = self.fresh_id();
        let in_progress = {
            let mut conns = lock(&self.conns);
            match conns.get(node) {
                Some(Slot::Up { tx, .. }) => return Ok(tx.clone()),
                Some(Slot::Pending { .. }) => true,
                None => {
                    conns.insert(node.clone(), Slot::pending(id));
                    false
                }
            }
        };
        if in_progress {
            return self.wait_up(node).await;
        }
        let attempt = async {
            let epmd_addr = resolve(host, self.config.epmd_port).await?;
            let info = epmd::port_please(epmd_addr, alive).await?;
            if info.highest_version < 6 {
                return Err(DistError::Refused(format!(
                    "{node} speaks distribution versions {}..{}, not 6",
                    info.lowest_version, info.highest_version
                )));
            }
            let addr = SocketAddr::new(epmd_addr.ip(), info.port);
            let tcp = TcpStream::connect(addr).await?;
            let mut stream = self.transport.connect(tcp, host).await?;
            let peer =
                handshake::connect(&mut stream, &self.local, node, || self.is_pending(node, id))
                    .await
                    .map_err(transport::surface_tls)?;
            Ok((peer, stream))
        };
        let result = tokio::time::timeout(self.config.setup_time, attempt)
            .await
            .unwrap_or(Err(DistError::Timeout("connecting")));
        match result {
            Ok((peer, stream)) => {
                self.install(peer, stream, id);
                self.wait_up(node).await
            }
            // The peer's own simultaneous attempt wins (`nok`), or won
            // already (`alive`, answered `false`); wait for it (and if it
            // never comes, leave no stale pending slot behind).
            Err(DistError::Refused(s)) if s == "nok" || s == "alive" => {
                let up = self.wait_up(node).await;
                if up.is_err() {
                    self.forget_pending(node, id);
                }
                up
            }
            Err(e) => {
                self.forget_pending(node, id);
                match &e {
                    DistError::WrongCookie(_) => {
                        tracing::warn!("dist: {node} refused our handshake: wrong cookie");
                    }
                    DistError::Tls(m) => tracing::warn!("dist: connecting to {node}: {m}"),
                    _ => {}
                }
                Err(e)
            }
        }
    }

    /// Queues a message on the connection to `node`, connecting first.
    async fn send_to(
        self: &Arc<Self>,
        node: &Atom,
        control: Term,
        payload: Term,
    ) -> Result<(), DistError> {
        let tx = self.connect(node).await?;
        tx.send(Outgoing {
            control,
            payload: Some(payload),
        })
        .await
    }

    /// Queues a message on the existing connection to `node` unless its
    /// queue is busy; never waits.
    fn try_send_to(&self, node: &Atom, control: Term, payload: Term) -> Result<(), DistError> {
        let tx = match lock(&self.conns).get(node) {
            Some(Slot::Up { tx, .. }) => tx.clone(),
            _ => return Err(DistError::NotConnected(node.to_string())),
        };
        tx.try_send(Outgoing {
            control,
            payload: Some(payload),
        })
    }

    fn make_ref(&self) -> Reference {
        let n = self.fresh_id();
        Reference {
            node: self.local.name.clone(),
            creation: self.local.creation,
            ids: vec![
                (n & 0x3ffff) as u32,
                (n >> 18) as u32,
                getrandom::u32().unwrap_or(0),
            ],
        }
    }

    /// Every live connection with its traffic, sorted by node name.
    fn connections(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = lock(&self.conns)
            .iter()
            .filter_map(|(node, slot)| match slot {
                Slot::Up { creation, tx, .. } => {
                    Some(tx.traffic.info(node.clone(), *creation, tx.queued_bytes()))
                }
                Slot::Pending { .. } => None,
            })
            .collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        for h in lock(&self.background).drain(..) {
            h.abort();
        }
        let conns: Vec<(Atom, Slot)> = lock(&self.conns).drain().collect();
        for (node, slot) in conns {
            if let Slot::Up { tasks, tx, id, .. } = slot {
                tx.retire();
                tasks.abort();
                self.config.deliver.connection_down(&node, id);
            }
        }
        lock(&self.calls).clear();
        lock(&self.registrar).take();
    }
}

/// A distribution node. Dropping it stops it (as [`Node::stop`]).
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.local.name)
            .field("creation", &self.inner.local.creation)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts `name` (`alive@host`) with `cookie` and the defaults of
    /// [`NodeConfig::new`]. Must run inside a tokio runtime.
    pub async fn start(name: &str, cookie: &str) -> Result<Node, DistError> {
        Node::start_with(NodeConfig::new(name, cookie)).await
    }

    /// Starts a node: binds the listener, registers with epmd (starting an
    /// embedded one if allowed and none answers; registering again, or
    /// taking the mapper over, whenever it goes away), and accepts
    /// connections.
    pub async fn start_with(config: NodeConfig) -> Result<Node, DistError> {
        let (alive, _) = split_name(&config.name)?;
        let name =
            Atom::try_new(&config.name).map_err(|_| DistError::BadNodeName(config.name.clone()))?;
        let transport = Transport::new(config.tls.as_ref())?;
        let listener = TcpListener::bind(config.listen).await?;
        let port = listener.local_addr()?.port();
        let registrar = Registrar::start(
            config.epmd_port,
            alive,
            port,
            config.hidden,
            config.embedded_epmd,
        )
        .await?;
        let creation = registrar.creation();
        let mut offered = flags::OFFERED;
        if config.hidden {
            offered &= !flags::PUBLISHED;
        }
        let local = Local {
            name: name.clone(),
            cookie: config.cookie.clone(),
            creation,
            flags: offered,
        };
        if transport.is_tls() {
            tracing::info!("dist: {name} uses TLS for every connection");
        }
        let inner = Arc::new(Inner {
            config,
            transport,
            own_pid: Pid {
                node: name,
                id: 0,
                serial: 0,
                creation,
            },
            local,
            listen_port: port,
            conns: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
            background: Mutex::new(Vec::new()),
            registrar: Mutex::new(Some(registrar)),
            runtime: std::sync::OnceLock::new(),
        });
        let acceptor = inner.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, from)) => {
                        tokio::spawn(acceptor.clone().accept(stream, from));
                    }
                    Err(e) => {
                        tracing::warn!("dist: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        lock(&inner.background).push(task.abort_handle());
        tracing::info!(
            "dist: node {} up on port {port}, creation {creation}",
            inner.local.name
        );
        Ok(Node { inner })
    }

    /// This node's name.
    pub fn name(&self) -> &Atom {
        &self.inner.local.name
    }

    /// The creation epmd handed out.
    pub fn creation(&self) -> u32 {
        self.inner.local.creation
    }

    /// Connects to `node` (`alive@host`) unless already connected: epmd
    /// lookup, then the handshake. A simultaneous attempt by the peer is
    /// resolved as Erlang does (the greater node name's attempt wins).
    pub async fn connect(&self, node: &str) -> Result<(), DistError> {
        let node = Atom::try_new(node).map_err(|_| DistError::BadNodeName(node.to_string()))?;
        self.inner.connect(&node).await.map(drop)
    }

    /// `net_adm:ping/1`: connects if needed, asks the peer's `net_kernel`
    /// `is_auth`, and says whether it answered `yes` in time.
    pub async fn ping(&self, node: &str) -> bool {
        match self.try_ping(node).await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::info!("dist: ping {node} failed: {e}");
                false
            }
        }
    }

    async fn try_ping(&self, node: &str) -> Result<bool, DistError> {
        let atom = Atom::try_new(node).map_err(|_| DistError::BadNodeName(node.to_string()))?;
        let tx = self.inner.connect(&atom).await?;
        let tag = self.inner.make_ref();
        let (done, answer) = oneshot::channel();
        lock(&self.inner.calls).insert(tag.ids.clone(), (tx.clone(), done));
        let request =
            connection::is_auth_request(&self.inner.own_pid, &tag, &self.inner.local.name);
        if tx.send(request).await.is_err() {
            lock(&self.inner.calls).remove(&tag.ids);
            return Err(DistError::Refused("connection closed".into()));
        }
        let answer = tokio::time::timeout(self.inner.config.ping_timeout, answer).await;
        lock(&self.inner.calls).remove(&tag.ids);
        match answer {
            Ok(Ok(reply)) => Ok(reply.is_atom("yes")),
            Ok(Err(_)) => Err(DistError::Refused("connection closed".into())),
            Err(_) => Err(DistError::Timeout("waiting for is_auth")),
        }
    }

    /// Sends `message` to the process `to` (a [`Term::Pid`]), as `!` does:
    /// connects to its node first if needed (`SEND` to a remote pid); a
    /// pid of this node goes to the [`Deliver`] hook. Messages sent one
    /// after another (each awaited) arrive in order. Like `!`, it does not
    /// say whether the process exists; an error means the message could
    /// not be handed to a connection.
    pub async fn send(&self, to: &Term, message: Term) -> Result<(), DistError> {
        let Some(pid) = to.as_pid() else {
            return Err(DistError::BadDestination(format!("{to} is not a pid")));
        };
        if pid.node == self.inner.local.name {
            self.inner.deliver(
                &pid.node,
                Delivery::ToPid {
                    from: None,
                    to: pid.clone(),
                    message,
                },
            );
            return Ok(());
        }
        let control = connection::send_control(pid);
        self.inner.send_to(&pid.node, control, message).await
    }

    /// Sends `message` to the process registered as `name` on `node`
    /// (`{Name, Node} ! Message`, a `REG_SEND`), connecting first if
    /// needed. `node` may be this node: then it goes to the [`Deliver`]
    /// hook.
    pub async fn send_named(&self, node: &str, name: &str, message: Term) -> Result<(), DistError> {
        let node = Atom::try_new(node).map_err(|_| DistError::BadNodeName(node.to_string()))?;
        let name = Atom::try_new(name)
            .map_err(|_| DistError::BadDestination(format!("{name:?} is not an atom")))?;
        if node == self.inner.local.name {
            self.inner.deliver(
                &node,
                Delivery::ToName {
                    from: None,
                    to: name,
                    message,
                },
            );
            return Ok(());
        }
        let control = connection::reg_send_control(&self.inner.own_pid, &name);
        self.inner.send_to(&node, control, message).await
    }

    /// [`Node::send`] without waiting: queues `message` for the remote
    /// process `to` on an existing connection, or fails at once with
    /// [`DistError::Busy`] when that connection's send queue is full
    /// (the message is then not sent), [`DistError::NotConnected`] when
    /// there is no connection (a sync send does not connect).
    pub fn try_send(&self, to: &Term, message: Term) -> Result<(), DistError> {
        let Some(pid) = to.as_pid() else {
            return Err(DistError::BadDestination(format!("{to} is not a pid")));
        };
        let control = connection::send_control(pid);
        self.inner.try_send_to(&pid.node, control, message)
    }

    /// [`Node::send_named`] without waiting, as [`Node::try_send`].
    pub fn try_send_named(&self, node: &str, name: &str, message: Term) -> Result<(), DistError> {
        let node = Atom::try_new(node).map_err(|_| DistError::BadNodeName(node.to_string()))?;
        let name = Atom::try_new(name)
            .map_err(|_| DistError::BadDestination(format!("{name:?} is not an atom")))?;
        let control = connection::reg_send_control(&self.inner.own_pid, &name);
        self.inner.try_send_to(&node, control, message)
    }

    /// The bytes queued for `node` and not yet written to its socket
    /// (`None` when not connected).
    pub fn queued_bytes(&self, node: &str) -> Option<usize> {
        let node = Atom::try_new(node).ok()?;
        match lock(&self.inner.conns).get(&node) {
            Some(Slot::Up { tx, .. }) => Some(tx.queued_bytes()),
            _ => None,
        }
    }

    /// The nodes this node has a connection to (`nodes(connected)`).
    pub fn nodes(&self) -> Vec<Atom> {
        let mut v: Vec<Atom> = lock(&self.inner.conns)
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Up { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// `erlang:disconnect_node/1`: closes the connection to `node`, if
    /// there is one, and says whether there was.
    pub fn disconnect(&self, node: &str) -> bool {
        let Ok(node) = Atom::try_new(node) else {
            return false;
        };
        let removed = {
            let mut conns = lock(&self.inner.conns);
            match conns.get(&node) {
                Some(Slot::Up { .. }) => conns.remove(&node),
                _ => None,
            }
        };
        match removed {
            Some(Slot::Up { tasks, tx, id, .. }) => {
                tx.retire();
                tasks.abort();
                self.inner.fail_calls(&tx);
                self.inner.config.deliver.connection_down(&node, id);
                tracing::info!("dist: disconnected from {node}");
                true
            }
            _ => false,
        }
    }

    /// Every live connection to another node, with when it came up and
    /// its traffic so far, sorted by node name.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.inner.connections()
    }

    /// A handle that reads this node's connections without keeping the
    /// node alive (for an observer such as the console).
    pub fn view(&self) -> NodeView {
        NodeView {
            name: self.inner.local.name.clone(),
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// The port the distribution listener accepts on.
    pub fn port(&self) -> u16 {
        self.inner.listen_port
    }

    /// Closes every connection, unregisters from epmd, stops listening
    /// (and stops the embedded epmd if this node started it).
    pub fn stop(&self) {
        self.inner.stop();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.inner.stop();
    }
}

/// A weak, cloneable handle on a [`Node`] ([`Node::view`]): reads its
/// name and connections, and sees nothing once the node is stopped or
/// dropped.
#[derive(Clone)]
pub struct NodeView {
    name: Atom,
    inner: std::sync::Weak<Inner>,
}

impl NodeView {
    /// The node's name.
    pub fn name(&self) -> &Atom {
        &self.name
    }

    /// Whether the node still runs.
    pub fn is_running(&self) -> bool {
        self.inner
            .upgrade()
            .is_some_and(|inner| !inner.stopped.load(Ordering::Acquire))
    }

    /// [`Node::connections`]; empty once the node is stopped.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        match self.inner.upgrade() {
            Some(inner) if !inner.stopped.load(Ordering::Acquire) => inner.connections(),
            _ => Vec::new(),
        }
    }
}

impl std::fmt::Debug for NodeView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeView")
            .field("name", &self.name)
            .field("running", &self.is_running())
            .finish()
    }
}
