//! The server: an acceptor process that supervises one process per
//! connection.
//!
//! # Processes
//!
//! ```text
//! caller ──link── acceptor (traps exits) ──link── connection (runs the handlers)
//! ```
//!
//! * The **acceptor** owns the listening socket. It spawns a linked process
//!   per accepted connection and, trapping exits, learns of each one's end
//!   as an [`Exit`] message: that is how it counts connections (for the
//!   cap) and how a crashed connection is logged and contained. It is linked
//!   to the process that called [`Server::bind`]: when that process is
//!   shut down (reason `shutdown` or `{shutdown, _}`, as a supervisor stops
//!   its children) the server drains as on [`Server::shutdown`] and then
//!   exits with the same reason, so a restart of the tree around it does not
//!   cut off the responses in flight; any other abnormal exit stops the
//!   server at once (its connections die with it through their links); a
//!   normal exit leaves the server running.
//! * A **connection** process runs hyper's HTTP/1.1 state machine for one
//!   socket and spawns a process per request for its handler, one request
//!   after another (see `connection.rs`).
//! * A connection process that is killed (from the console, say) is counted
//!   in [`Stats::connections_killed`] and logged at debug level: that is not
//!   a crash, and no client can cause it (a client that goes away kills at
//!   most its request's process, counted in [`Stats::disconnected`]). Other
//!   abnormal exits are logged as errors.
//! * Beyond [`Config::max_connections`], an accepted socket is handed to a
//!   short-lived process that writes a `503` and closes it.
//!
//! # Shutdown
//!
//! [`Server::shutdown`] sends the acceptor a message. It closes the listening
//! socket, tells every connection to finish (hyper's graceful shutdown: an
//! idle connection closes at once, a busy one after its in-flight response;
//! one accepted that has not begun a request yet is given half a second to
//! send it, since its client expects an answer),
//! waits for their exits up to [`Config::shutdown_timeout`], kills the rest,
//! and answers.

use std::collections::HashSet;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use ember_runtime::net::{TcpListener, TcpStream};
use ember_runtime::sync::oneshot;
use ember_runtime::{self as ember, Exit, ExitReason, Handle, Pid, Spawn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connection;
use crate::shared::{Shared, Stats};
use crate::{Config, Router};

/// Most rejecting processes (writing a 503) alive at once; past it an
/// over-cap connection is closed without a response.
const MAX_REJECTING: usize = 1024;

/// The 503 written to connections over the cap.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 32\r\n\
retry-after: 1\r\n\
connection: close\r\n\
\r\n\
too many connections, try again\n";

/// Messages the acceptor understands (besides [`Exit`]).
enum Control {
    Shutdown(oneshot::Sender<()>),
}

/// A running HTTP server: an acceptor process, a process per connection and
/// one per request.
///
/// ```
/// use ember_web::{text, Config, Request, Router, Server};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let rt = ember_runtime::Runtime::new().unwrap();
/// rt.block_on(async {
///     let router = Router::new().get("/ping", |_req: Request| async {
///         text(http::StatusCode::OK, "pong")
///     });
///     let server = Server::bind("127.0.0.1:0", router, Config::default()).unwrap();
///     let mut s = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
///     s.write_all(b"GET /ping HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
///     let mut reply = String::new();
///     s.read_to_string(&mut reply).await.unwrap();
///     assert!(reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("pong"));
///     server.shutdown().await;
/// });
/// ```
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    acceptor: Pid,
    stats: Arc<Stats>,
    handle: Handle,
}

impl Server {
    /// Binds `addr` and starts serving `router` in a new acceptor process,
    /// linked to the caller (see the module docs for what the link means).
    /// Returns once the socket listens.
    ///
    /// # Errors
    ///
    /// If the address cannot be bound, or when called outside an Ember
    /// process (the error says so).
    pub fn bind(addr: impl ToSocketAddrs, router: Router, config: Config) -> io::Result<Server> {
        if ember::try_self_pid().is_none() {
            return Err(io::Error::other(
                "ember-web: Server::bind must be called inside an Ember process",
            ));
        }
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let handle = Handle::current();
        let shared = Arc::new(Shared {
            handle: handle.clone(),
            router,
            config,
            stats: stats.clone(),
        });
        let parent = ember::self_pid();
        let spawned = Spawn::new()
            .label(format!("ember-web acceptor {local_addr}"))
            .trap_exit(true)
            .link()
            .spawn(accept_loop(listener, shared, parent))
            .map_err(io::Error::other)?;
        Ok(Server {
            local_addr,
            acceptor: spawned.pid,
            stats,
            handle,
        })
    }

    /// The address the server listens on (with the port chosen when bound to
    /// port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The acceptor process.
    pub fn pid(&self) -> Pid {
        self.acceptor
    }

    /// The server's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Stops the server gracefully: no new connections, in-flight requests
    /// finish (up to [`Config::shutdown_timeout`], then their connections
    /// are killed), then the acceptor exits. Returns when it has. Works from
    /// any process (or a tokio task on the runtime's threads).
    pub async fn shutdown(self) {
        let (done, finished) = oneshot::channel();
        self.handle.send(self.acceptor, Control::Shutdown(done));
        // An error means the acceptor is already gone: stopped is stopped.
        let _ = finished.await;
    }
}

enum Event {
    Accepted(io::Result<(TcpStream, SocketAddr)>),
    Message(ember::Envelope),
}

/// The acceptor's next event: a message first (a shutdown is not kept
/// waiting behind a stream of new connections), else a new connection.
async fn next_event(listener: &TcpListener) -> Event {
    let is_ours = |e: &ember::Envelope| e.is::<Exit>() || e.is::<Control>();
    let mut message = pin!(ember::receive_any(is_ours));
    let mut accepted = pin!(listener.accept());
    poll_fn(|cx| {
        if let Poll::Ready(envelope) = message.as_mut().poll(cx) {
            return Poll::Ready(Event::Message(envelope));
        }
        accepted.as_mut().poll(cx).map(Event::Accepted)
    })
    .await
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, parent: Pid) -> ExitReason {
    let mut connections: HashSet<Pid> = HashSet::new();
    let rejecting = Arc::new(AtomicUsize::new(0));
    let (waiter, reason) = loop {
        let event = next_event(&listener).await;
        match event {
            Event::Accepted(Ok((stream, peer))) => {
                shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                if connections.len() >= shared.config.max_connections {
                    shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    reject(stream, &rejecting);
                    continue;
                }
                // Queued, not run right after this poll: connections
                // accepted together are served in the order they arrived,
                // behind the sockets already woken (a long request that
                // came second must not go first).
                let spawned = Spawn::new()
                    .label(format!("ember-web connection {peer}"))
                    .link()
                    .queued()
                    .spawn(connection::serve(stream, peer, shared.clone()));
                if let Ok(spawned) = spawned {
                    connections.insert(spawned.pid);
                    shared
                        .stats
                        .connections
                        .store(connections.len(), Ordering::Relaxed);
                }
            }
            Event::Accepted(Err(e)) => {
                // Out of file descriptors and the like: back off a little
                // instead of spinning on the error.
                tracing::warn!("ember-web: accept failed: {e}");
                ember::sleep(Duration::from_millis(10)).await;
            }
            Event::Message(envelope) => match envelope.downcast::<Control>() {
                Ok(Control::Shutdown(done)) => break (Some(done), ExitReason::Normal),
                Err(envelope) => {
                    let Ok(exit) = envelope.downcast::<Exit>() else {
                        continue;
                    };
                    if exit.from == parent {
                        if exit.reason.is_normal() {
                            continue;
                        }
                        if exit.reason.is_orderly() {
                            // Shut down (a supervisor stopping us): finish
                            // the responses in flight, then go.
                            break (None, exit.reason);
                        }
                        // Our links take the connections down with us.
                        return exit.reason;
                    } else if connections.remove(&exit.from) {
                        shared
                            .stats
                            .connections
                            .store(connections.len(), Ordering::Relaxed);
                        if exit.reason == ExitReason::Killed {
                            // Killed from outside (the console, say): not
                            // a crash, and clients cannot cause it.
                            shared
                                .stats
                                .connections_killed
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(
                                "ember-web: connection process {} was killed",
                                exit.from
                            );
                        } else if !exit.reason.is_orderly() {
                            tracing::error!(
                                "ember-web: connection process {} crashed: {}",
                                exit.from,
                                exit.reason
                            );
                        }
                    }
                }
            },
        }
    };
    drop(listener);
    drain(connections, &shared).await;
    if let Some(waiter) = waiter {
        let _ = waiter.send(());
    }
    // Later shutdown requests (several callers) find the acceptor gone.
    reason
}

/// Tells every connection to finish and waits for their exits, killing those
/// still running at the deadline.
async fn drain(mut connections: HashSet<Pid>, shared: &Shared) {
    for pid in &connections {
        ember::send(*pid, connection::Drain);
    }
    let deadline = Instant::now() + shared.config.shutdown_timeout;
    let mut killed = false;
    while !connections.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = if killed { Duration::from_secs(1) } else { left };
        match ember::receive::<Exit>().timeout(wait).await {
            Some(exit) => {
                connections.remove(&exit.from);
            }
            None if !killed => {
                tracing::warn!(
                    "ember-web: killing {} connections still busy after the shutdown timeout",
                    connections.len()
                );
                for pid in &connections {
                    ember::exit(*pid, ExitReason::Kill);
                }
                killed = true;
            }
            None => break,
        }
        shared
            .stats
            .connections
            .store(connections.len(), Ordering::Relaxed);
    }
}

/// Answers `503` on a connection over the cap, in a short-lived process, and
/// reads what the client sent so that closing does not reset the connection
/// before the client has read the answer.
fn reject(mut stream: TcpStream, rejecting: &Arc<AtomicUsize>) {
    if rejecting.fetch_add(1, Ordering::AcqRel) >= MAX_REJECTING {
        rejecting.fetch_sub(1, Ordering::AcqRel);
        return; // dropped: closed without a response
    }
    let slot = RejectSlot(rejecting.clone());
    let _ = Spawn::new()
        .label("ember-web reject (over capacity)")
        .spawn(async move {
            let _slot = slot;
            let _ = ember_runtime::time::timeout(Duration::from_secs(1), async {
                stream.write_all(OVER_CAPACITY).await?;
                stream.shutdown().await?;
                let mut sink = [0u8; 4096];
                while stream.read(&mut sink).await? > 0 {}
                Ok::<(), io::Error>(())
            })
            .await;
        });
}

/// One of the [`MAX_REJECTING`] places, given back when its process ends
/// (even killed).
struct RejectSlot(Arc<AtomicUsize>);

impl Drop for RejectSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
