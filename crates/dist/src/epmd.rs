//! The Erlang port mapper daemon (epmd) protocol: a client, and an
//! embedded mapper for when no epmd runs.
//!
//! Every request is `Len:16 | Request`. The client side:
//!
//! * `ALIVE2_REQ` (120) registers a node; the reply is `ALIVE2_X_RESP`
//!   (118, 32-bit creation) or the old `ALIVE2_RESP` (121, 16-bit). The
//!   connection stays open for the node's life: closing it unregisters.
//! * `PORT_PLEASE2_REQ` (122) looks a node up: `PORT2_RESP` (119).
//! * `NAMES_REQ` (110): the mapper's port, then `name N at port P` lines.
//!
//! Each client request has a 10 s deadline.
//!
//! [`EmbeddedEpmd`] serves the same three requests (enough for `erl` to
//! register and look names up); it is not a full epmd (no `KILL_REQ`,
//! `STOP_REQ`, `DUMP_REQ`).
//!
//! [`Registrar`] keeps a node registered for its whole life: when its
//! registration connection closes (the node holding the embedded mapper
//! died or stopped, or a host epmd was stopped), it registers again, and
//! if nothing answers on the port it binds the port itself (every node
//! that noticed races for the bind; the bind decides, the losers register
//! with the winner). See `docs/semantics.md` §20.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::DistError;

/// The default port mapper port.
pub const DEFAULT_PORT: u16 = 4369;

const ALIVE2_REQ: u8 = 120;
const ALIVE2_X_RESP: u8 = 118;
const ALIVE2_RESP: u8 = 121;
const PORT_PLEASE2_REQ: u8 = 122;
const PORT2_RESP: u8 = 119;
const NAMES_REQ: u8 = 110;

/// A `NAMES_REQ` answer is at most this long (epmd's own is far smaller).
const MAX_NAMES_REPLY: u64 = 1 << 20;

/// The port from `ERL_EPMD_PORT`, or 4369.
pub fn port_from_env() -> u16 {
    std::env::var("ERL_EPMD_PORT")
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(DEFAULT_PORT)
}

/// What the mapper knows about a registered node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The port its distribution listener accepts on.
    pub port: u16,
    /// 77 for a normal node, 72 for a hidden one (informational only).
    pub node_type: u8,
    /// 0: TCP/IPv4.
    pub protocol: u8,
    /// The highest distribution version it speaks.
    pub highest_version: u16,
    /// The lowest distribution version it speaks.
    pub lowest_version: u16,
    /// Its alive name (the part before `@`).
    pub name: String,
    /// Extra bytes it registered with.
    pub extra: Vec<u8>,
}

/// A live registration: dropping it closes the connection to the mapper,
/// which unregisters the node.
#[derive(Debug)]
pub struct Registration {
    stream: TcpStream,
    /// The creation the mapper handed out.
    pub creation: u32,
}

impl Registration {
    /// Resolves when the mapper closes the connection (it stopped or
    /// died, which unregistered the node). A mapper sends nothing after
    /// its reply; anything it does send is ignored.
    pub async fn closed(&mut self) {
        let mut sink = [0u8; 64];
        while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {}
    }
}

async fn request(addr: SocketAddr, body: &[u8]) -> Result<TcpStream, DistError> {
    let mut s = TcpStream::connect(addr).await?;
    let len = u16::try_from(body.len()).map_err(|_| DistError::Epmd("request too long".into()))?;
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    s.write_all(&out).await?;
    Ok(s)
}

fn name_bytes(out: &mut Vec<u8>, name: &str) -> Result<(), DistError> {
    let len = u16::try_from(name.len()).map_err(|_| DistError::BadNodeName(name.into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// How long a request to the mapper may take, connect to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn within<T>(
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, DistError>>,
) -> Result<T, DistError> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .unwrap_or(Err(DistError::Timeout(what)))
}

/// Registers `alive` (the name before `@`) as listening on `port` with the
/// mapper at `addr`. `hidden` only sets the informational node type.
pub async fn register(
    addr: SocketAddr,
    alive: &str,
    port: u16,
    hidden: bool,
) -> Result<Registration, DistError> {
    within("epmd ALIVE2_REQ", register_inner(addr, alive, port, hidden)).await
}

async fn register_inner(
    addr: SocketAddr,
    alive: &str,
    port: u16,
    hidden: bool,
) -> Result<Registration, DistError> {
    let mut body = vec![ALIVE2_REQ];
    body.extend_from_slice(&port.to_be_bytes());
    body.push(if hidden { 72 } else { 77 });
    body.push(0); // TCP/IPv4
                  // Highest 6, lowest 5, as OTP 25 registers: the accepting side also
                  // takes the old version 5 send_name (see the handshake).
    body.extend_from_slice(&6u16.to_be_bytes());
    body.extend_from_slice(&5u16.to_be_bytes());
    name_bytes(&mut body, alive)?;
    body.extend_from_slice(&0u16.to_be_bytes());
    let mut s = request(addr, &body).await?;
    let tag = s.read_u8().await?;
    let result = s.read_u8().await?;
    let creation = match tag {
        ALIVE2_X_RESP => s.read_u32().await?,
        ALIVE2_RESP => u32::from(s.read_u16().await?),
        other => return Err(DistError::Epmd(format!("unexpected reply tag {other}"))),
    };
    if result != 0 {
        return Err(DistError::Epmd(format!(
            "registering {alive} failed (result {result}; is the name taken?)"
        )));
    }
    Ok(Registration {
        stream: s,
        creation,
    })
}

/// Looks up `alive` with the mapper at `addr`.
pub async fn port_please(addr: SocketAddr, alive: &str) -> Result<NodeInfo, DistError> {
    within("epmd PORT_PLEASE2_REQ", port_please_inner(addr, alive)).await
}

async fn port_please_inner(addr: SocketAddr, alive: &str) -> Result<NodeInfo, DistError> {
    let mut body = vec![PORT_PLEASE2_REQ];
    body.extend_from_slice(alive.as_bytes());
    let mut s = request(addr, &body).await?;
    let tag = s.read_u8().await?;
    if tag != PORT2_RESP {
        return Err(DistError::Epmd(format!("unexpected reply tag {tag}")));
    }
    if s.read_u8().await? != 0 {
        return Err(DistError::NotRegistered(alive.into()));
    }
    let port = s.read_u16().await?;
    let node_type = s.read_u8().await?;
    let protocol = s.read_u8().await?;
    let highest_version = s.read_u16().await?;
    let lowest_version = s.read_u16().await?;
    let name = read_short_bytes(&mut s).await?;
    let extra = read_short_bytes(&mut s).await?;
    Ok(NodeInfo {
        port,
        node_type,
        protocol,
        highest_version,
        lowest_version,
        name: String::from_utf8_lossy(&name).into_owned(),
        extra,
    })
}

/// A 16-bit length, then that many bytes (at most 64 KiB: bounded).
async fn read_short_bytes<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, DistError> {
    let len = r.read_u16().await?;
    let mut buf = vec![0; usize::from(len)];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// The names the mapper at `addr` knows, with their ports.
pub async fn names(addr: SocketAddr) -> Result<Vec<(String, u16)>, DistError> {
    within("epmd NAMES_REQ", names_inner(addr)).await
}

async fn names_inner(addr: SocketAddr) -> Result<Vec<(String, u16)>, DistError> {
    let mut s = request(addr, &[NAMES_REQ]).await?;
    let _epmd_port = s.read_u32().await?;
    let mut text = Vec::new();
    (&mut s)
        .take(MAX_NAMES_REPLY)
        .read_to_end(&mut text)
        .await?;
    let text = String::from_utf8_lossy(&text);
    Ok(text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("name ")?;
            let (name, port) = rest.rsplit_once(" at port ")?;
            Some((name.to_string(), port.trim().parse().ok()?))
        })
        .collect())
}

/// A port mapper inside this process, serving `ALIVE2_REQ`,
/// `PORT_PLEASE2_REQ` and `NAMES_REQ`. Registrations last while their
/// connection is open; dropping the mapper stops it (and forgets them).
#[derive(Debug)]
pub struct EmbeddedEpmd {
    task: JoinHandle<()>,
    port: u16,
}

impl Drop for EmbeddedEpmd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct Table {
    nodes: HashMap<String, NodeInfo>,
    next_creation: u32,
}

impl EmbeddedEpmd {
    /// Listens on `addr` (port 0 picks a free port) with `SO_REUSEADDR`,
    /// so the port of a mapper that just died can be bound again at once.
    /// Fails if the port is taken, e.g. by a real epmd or another node's
    /// mapper (of several binding at once, exactly one succeeds).
    pub async fn start(addr: SocketAddr) -> Result<EmbeddedEpmd, DistError> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        let port = listener.local_addr()?.port();
        let table = Arc::new(Mutex::new(Table {
            nodes: HashMap::new(),
            next_creation: getrandom::u32().unwrap_or(1) % 1_000_000 + 1,
        }));
        let task = tokio::spawn(async move {
            // The connections live in this set: stopping the mapper
            // (aborting this task) closes every registration, so the
            // nodes registered here notice at once.
            let mut conns = JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    Some(_) = conns.join_next() => continue,
                };
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, say: back off, retry.
                        tracing::warn!("embedded epmd: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let table = table.clone();
                conns.spawn(async move {
                    if let Err(e) = serve(stream, table, port).await {
                        tracing::debug!("embedded epmd: connection ended: {e}");
                    }
                });
            }
        });
        Ok(EmbeddedEpmd { task, port })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// How a [`Registrar`] registers its node.
#[derive(Clone, Debug)]
struct Registrant {
    epmd_port: u16,
    alive: String,
    port: u16,
    hidden: bool,
    embedded: bool,
}

impl Registrant {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.epmd_port))
    }

    /// Registers with the mapper on the port; if none answers and an
    /// embedded one is allowed, binds the port first (losing that race
    /// to another node is fine: it then registers with the winner's).
    async fn attach(&self) -> Result<(Registration, Option<EmbeddedEpmd>), DistError> {
        match register(self.addr(), &self.alive, self.port, self.hidden).await {
            Err(DistError::Io(e))
                if self.embedded && e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                let any = SocketAddr::from(([0, 0, 0, 0], self.epmd_port));
                let embedded = match EmbeddedEpmd::start(any).await {
                    Ok(e) => Some(e),
                    Err(e) => {
                        tracing::debug!("dist: embedded epmd not started: {e}");
                        None
                    }
                };
                let reg = register(self.addr(), &self.alive, self.port, self.hidden).await?;
                Ok((reg, embedded))
            }
            other => other.map(|r| (r, None)),
        }
    }
}

/// What a [`Registrar`] and its keeper task share.
#[derive(Debug, Default)]
struct Held {
    embedded: std::sync::Mutex<Option<EmbeddedEpmd>>,
    reregistered: AtomicU64,
}

impl Held {
    fn set_embedded(&self, e: EmbeddedEpmd) {
        *self.embedded.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

/// Keeps a node registered with the port mapper on `127.0.0.1:epmd_port`
/// for as long as it lives (a [`crate::Node`] holds one).
///
/// At start it registers, first starting an [`EmbeddedEpmd`] on the port
/// if allowed and nothing answers there. Then a task watches the
/// registration connection: when the mapper closes it, the node registers
/// again the same way, so when the node holding the embedded mapper dies,
/// every survivor races to bind the port, exactly one wins (the bind
/// decides), and all register with it. Attempts that fail are retried
/// (20 ms, doubling to 1 s) until one succeeds. The node keeps the
/// creation of its first registration. Dropping the registrar
/// unregisters and stops the mapper it holds, if any.
#[derive(Debug)]
pub struct Registrar {
    task: JoinHandle<()>,
    held: Arc<Held>,
    creation: u32,
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.task.abort();
        self.held
            .embedded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

impl Registrar {
    /// Registers `alive` as listening on `port` with the mapper on
    /// `epmd_port` (`embedded`: start one if none answers). `hidden` only
    /// sets the informational node type. Fails if the name is taken or no
    /// mapper can be reached (after a few tries when several nodes start
    /// one at once).
    pub async fn start(
        epmd_port: u16,
        alive: &str,
        port: u16,
        hidden: bool,
        embedded: bool,
    ) -> Result<Registrar, DistError> {
        let who = Registrant {
            epmd_port,
            alive: alive.to_string(),
            port,
            hidden,
            embedded,
        };
        let mut tries = 0;
        let (reg, mapper) = loop {
            match who.attach().await {
                // Another node bound the port a moment ago and is not
                // listening yet, or its mapper died under the request:
                // try again.
                Err(DistError::Io(_)) if tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20 * tries)).await;
                }
                other => break other?,
            }
        };
        if let Some(m) = &mapper {
            tracing::info!(
                "dist: no epmd on port {}: started an embedded one",
                m.port()
            );
        }
        let held = Arc::new(Held::default());
        if let Some(m) = mapper {
            held.set_embedded(m);
        }
        let creation = reg.creation;
        let task = tokio::spawn(keep(who, reg, held.clone()));
        Ok(Registrar {
            task,
            held,
            creation,
        })
    }

    /// The creation the first registration handed out.
    pub fn creation(&self) -> u32 {
        self.creation
    }

    /// Whether this node runs the embedded mapper now.
    pub fn holds_mapper(&self) -> bool {
        self.held
            .embedded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// How many times the node registered again after losing its mapper.
    pub fn reregistrations(&self) -> u64 {
        self.held.reregistered.load(Ordering::Relaxed)
    }
}

/// The registrar's task: waits for the mapper to go, registers again.
async fn keep(who: Registrant, mut reg: Registration, held: Arc<Held>) {
    loop {
        reg.closed().await;
        tracing::info!(
            "dist: the port mapper on port {} closed {}'s registration: registering again",
            who.epmd_port,
            who.alive
        );
        let mut delay = Duration::from_millis(20);
        reg = loop {
            match who.attach().await {
                Ok((r, mapper)) => {
                    if let Some(m) = mapper {
                        tracing::info!(
                            "dist: {} took over the port mapper on port {}",
                            who.alive,
                            m.port()
                        );
                        held.set_embedded(m);
                    }
                    break r;
                }
                Err(e) => {
                    tracing::warn!(
                        "dist: registering {} again on port {} failed: {e}",
                        who.alive,
                        who.epmd_port
                    );
                    let jitter = u64::from(getrandom::u32().unwrap_or(0) % 20);
                    tokio::time::sleep(delay + Duration::from_millis(jitter)).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        };
        held.reregistered.fetch_add(1, Ordering::Relaxed);
    }
}

async fn serve(mut s: TcpStream, table: Arc<Mutex<Table>>, port: u16) -> Result<(), DistError> {
    let len = s.read_u16().await?;
    if len == 0 {
        return Err(DistError::Epmd("empty request".into()));
    }
    let mut req = vec![0; usize::from(len)];
    s.read_exact(&mut req).await?;
    match req[0] {
        ALIVE2_REQ => {
            let info = parse_alive2(&req[1..])
                .ok_or_else(|| DistError::Epmd("malformed ALIVE2_REQ".into()))?;
            let name = info.name.clone();
            let creation = {
                let mut t = table.lock().await;
                if t.nodes.contains_key(&name) {
                    None
                } else {
                    t.nodes.insert(name.clone(), info);
                    t.next_creation = t.next_creation.wrapping_add(1).max(1);
                    Some(t.next_creation)
                }
            };
            let Some(creation) = creation else {
                s.write_all(&[ALIVE2_X_RESP, 1, 0, 0, 0, 0]).await?;
                return Ok(());
            };
            let mut out = vec![ALIVE2_X_RESP, 0];
            out.extend_from_slice(&creation.to_be_bytes());
            let written = s.write_all(&out).await;
            if written.is_ok() {
                // Registered until the node closes the connection.
                let mut sink = [0u8; 64];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            }
            table.lock().await.nodes.remove(&name);
            written?;
        }
        PORT_PLEASE2_REQ => {
            let name = String::from_utf8_lossy(&req[1..]).into_owned();
            let info = table.lock().await.nodes.get(&name).cloned();
            let mut out = vec![PORT2_RESP];
            match info {
                None => out.push(1),
                Some(i) => {
                    out.push(0);
                    out.extend_from_slice(&i.port.to_be_bytes());
                    out.push(i.node_type);
                    out.push(i.protocol);
                    out.extend_from_slice(&i.highest_version.to_be_bytes());
                    out.extend_from_slice(&i.lowest_version.to_be_bytes());
                    name_bytes(&mut out, &i.name)?;
                    let elen = u16::try_from(i.extra.len()).unwrap_or(0);
                    out.extend_from_slice(&elen.to_be_bytes());
                    out.extend_from_slice(&i.extra[..usize::from(elen)]);
                }
            }
            s.write_all(&out).await?;
        }
        NAMES_REQ => {
            let mut out = u32::from(port).to_be_bytes().to_vec();
            for (name, info) in &table.lock().await.nodes {
                out.extend_from_slice(format!("name {name} at port {}\n", info.port).as_bytes());
            }
            s.write_all(&out).await?;
        }
        other => return Err(DistError::Epmd(format!("unsupported request {other}"))),
    }
    Ok(())
}

fn parse_alive2(b: &[u8]) -> Option<NodeInfo> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
    let port = u16_at(0)?;
    let node_type = *b.get(2)?;
    let protocol = *b.get(3)?;
    let highest_version = u16_at(4)?;
    let lowest_version = u16_at(6)?;
    let nlen = usize::from(u16_at(8)?);
    let name = b.get(10..10 + nlen)?;
    let elen = usize::from(u16_at(10 + nlen)?);
    let extra = b.get(12 + nlen..12 + nlen + elen)?.to_vec();
    let name = std::str::from_utf8(name).ok()?;
    if name.is_empty() {
        return None;
    }
    Some(NodeInfo {
        port,
        node_type,
        protocol,
        highest_version,
        lowest_version,
        name: name.to_string(),
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_alive2_requests_are_rejected_not_panicked_on() {
        assert!(parse_alive2(&[]).is_none());
        assert!(parse_alive2(&[0, 1, 77, 0, 0, 6, 0, 6, 255, 255, b'a']).is_none());
        let ok = [0, 1, 77, 0, 0, 6, 0, 6, 0, 1, b'a', 0, 0];
        assert_eq!(parse_alive2(&ok).unwrap().name, "a");
    }

    #[tokio::test]
    async fn embedded_epmd_registers_looks_up_lists_and_forgets() {
        let epmd = EmbeddedEpmd::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", epmd.port()).parse().unwrap();
        let reg = register(addr, "alpha", 4242, false).await.unwrap();
        assert!(reg.creation > 0);
        assert!(register(addr, "alpha", 4243, false).await.is_err());
        let info = port_please(addr, "alpha").await.unwrap();
        assert_eq!((info.port, info.name.as_str()), (4242, "alpha"));
        assert_eq!(
            names(addr).await.unwrap(),
            vec![("alpha".to_string(), 4242)]
        );
        assert!(matches!(
            port_please(addr, "beta").await,
            Err(DistError::NotRegistered(_))
        ));
        drop(reg);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while port_please(addr, "alpha").await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "registration outlived its connection"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Waits (deadline: the testkit's) until `done` holds.
    async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
        let deadline = std::time::Instant::now() + ember_testkit::DEADLINE;
        while !done().await {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether every one of `names` resolves, to its own port, with the
    /// mapper on `port`.
    async fn all_resolve(port: u16, names: &[(String, u16)]) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for (name, p) in names {
            match port_please(addr, name).await {
                Ok(info) if info.port == *p => {}
                _ => return false,
            }
        }
        true
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn survivors_race_for_a_dead_mappers_port_and_one_wins_each_time() {
        let port = ember_testkit::free_port();
        let holder = Registrar::start(port, "holder", 1000, false, true)
            .await
            .unwrap();
        assert!(holder.holds_mapper());
        let mut survivors = Vec::new();
        let mut names = Vec::new();
        for i in 0..5u16 {
            let name = format!("s{i}");
            let r = Registrar::start(port, &name, 2000 + i, false, true)
                .await
                .unwrap();
            assert!(!r.holds_mapper(), "{name} started a second mapper");
            survivors.push((name.clone(), r));
            names.push((name, 2000 + i));
        }
        assert!(all_resolve(port, &names).await);
        // The holder dies (its mapper and registration go at once), then
        // the winner of each race, until two nodes are left.
        drop(holder);
        let mut round = 0u64;
        loop {
            round += 1;
            let live: Vec<(String, u16)> = survivors
                .iter()
                .map(|(n, _)| (n.clone(), names.iter().find(|(m, _)| m == n).unwrap().1))
                .collect();
            until(
                &format!("round {round}: every survivor registered"),
                async || {
                    survivors.iter().filter(|(_, r)| r.holds_mapper()).count() == 1
                        && all_resolve(port, &live).await
                },
            )
            .await;
            // Exactly one bound the port: the others' binds failed.
            let holders: Vec<&String> = survivors
                .iter()
                .filter(|(_, r)| r.holds_mapper())
                .map(|(n, _)| n)
                .collect();
            assert_eq!(holders.len(), 1, "round {round}: {holders:?}");
            for (n, r) in &survivors {
                assert!(r.reregistrations() >= round, "{n} did not register again");
            }
            // The dead node's name is gone with its mapper.
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            assert!(matches!(
                port_please(addr, "holder").await,
                Err(DistError::NotRegistered(_))
            ));
            if survivors.len() == 2 {
                break;
            }
            let at = survivors
                .iter()
                .position(|(_, r)| r.holds_mapper())
                .unwrap();
            survivors.remove(at);
        }
        // A node started now finds the mapper and the survivors.
        let late = Registrar::start(port, "late", 3000, false, true)
            .await
            .unwrap();
        assert!(!late.holds_mapper());
        let mut expect: Vec<(String, u16)> = survivors
            .iter()
            .map(|(n, _)| (n.clone(), names.iter().find(|(m, _)| m == n).unwrap().1))
            .collect();
        expect.push(("late".into(), 3000));
        assert!(all_resolve(port, &expect).await);
    }

    #[tokio::test]
    async fn a_node_starting_right_after_the_holder_died_binds_its_port() {
        let port = ember_testkit::free_port();
        let holder = Registrar::start(port, "holder", 1000, false, true)
            .await
            .unwrap();
        // Connections on the port that the holder's death leaves behind
        // (closed by it first) do not keep the port from being bound.
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let _ = names(addr).await.unwrap();
        let _ = port_please(addr, "holder").await.unwrap();
        drop(holder);
        let next = Registrar::start(port, "next", 1001, false, true)
            .await
            .unwrap();
        assert!(next.holds_mapper());
        assert_eq!(port_please(addr, "next").await.unwrap().port, 1001);
    }

    #[tokio::test]
    async fn without_the_embedded_mapper_a_registrar_does_not_bind() {
        let port = ember_testkit::free_port();
        assert!(Registrar::start(port, "alone", 1000, false, false)
            .await
            .is_err());
    }
}
