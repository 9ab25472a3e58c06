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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

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
    _stream: TcpStream,
    /// The creation the mapper handed out.
    pub creation: u32,
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
        _stream: s,
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
    /// Listens on `addr` (port 0 picks a free port). Fails if the port is
    /// taken, e.g. by a real epmd.
    pub async fn start(addr: SocketAddr) -> Result<EmbeddedEpmd, DistError> {
        let listener = TcpListener::bind(addr).await?;
        let port = listener.local_addr()?.port();
        let table = Arc::new(Mutex::new(Table {
            nodes: HashMap::new(),
            next_creation: getrandom::u32().unwrap_or(1) % 1_000_000 + 1,
        }));
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, say: back off, retry.
                        tracing::warn!("embedded epmd: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let table = table.clone();
                tokio::spawn(async move {
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
}
