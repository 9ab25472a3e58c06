//! One connection's process: hyper's HTTP/1.1 state machine over the socket,
//! and a process per request for the handler.
//!
//! # A process per request
//!
//! Each request's handler runs in a process of its own, spawned by the
//! connection's process, which waits for its [`Response`]. A handler may
//! change anything about its process — priority, `trap_exit`, links,
//! monitors, timers, its label, its registered name, its mailbox — and none
//! of it reaches the next request on the same connection: that one gets a
//! new process, and the old one's exit cleans up as any exit does (links
//! and monitors see `normal`, timers are cancelled, the name is released,
//! late messages to its pid are dropped). The child runs right after the
//! connection's process yields, on the same scheduler (the `next` slot), so
//! the hand-off costs a spawn and two wake-ups, not a trip across threads.
//! One thing does carry over, on purpose and only for the request's own
//! response: the priority the handler left its process at. The connection's
//! process writes the response (or event stream) at that priority, so a
//! console page that asks for `High` is also written out promptly on a
//! saturated system, and goes back to normal as soon as it reads the next
//! request.
//!
//! * A handler that panics answers `500`; the connection goes on.
//! * A handler whose process was stopped (killed from the console, or
//!   because its client reset the connection) produces no response at all,
//!   not even a placeholder: the connection is closed unanswered. Long loops
//!   poll `should_stop()` and return early; what they return is discarded.
//! * A client that *resets* the connection (or whose socket fails) while its
//!   request runs kills the handler's process, even while it computes without
//!   awaiting: the socket's [`HangupWatch`] is armed on it. A client that only
//!   *half-closes* (`shutdown(SHUT_WR)`, a FIN after a complete request, as
//!   `nc -N` and some proxies do) still gets its response (hyper runs with
//!   `half_close`). A client that closes its socket entirely also only sends
//!   a FIN, which cannot be told apart from a half-close: its request runs to
//!   the end, and the first write of the response fails (the peer answers
//!   with a reset), which ends the connection.
//! * If the connection's process ends first (killed, shut down), the guard
//!   of the request in flight kills the handler's process.
//!
//! # Slow clients and pipelining
//!
//! The socket is wrapped in [`Watched`]: a write that makes no progress for
//! [`Config::write_timeout`](crate::Config::write_timeout) fails, which closes
//! the connection (a client that never reads cannot hold its slot), and the
//! requests served since the server last had to read the socket are counted:
//! the one that reaches [`Config::max_pipelined`](crate::Config::max_pipelined)
//! is answered with `Connection: close`, and the requests pipelined behind it
//! are left unanswered (RFC 9112 §9.3.2: the client retries them on a new
//! connection).
//!
//! # Closing
//!
//! When hyper is done, the socket's write side is shut down and what the
//! client still sends is read and discarded for a moment (a *lingering
//! close*: up to 2 s after unread input, 200 ms after none), so that a final response (a `400`, a `431`, the last one before
//! the pipelining cap) is not destroyed by the reset the kernel sends when a
//! socket is closed with unread input.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ember_runtime::net::{HangupWatch, TcpStream};
use ember_runtime::sync::oneshot;
use ember_runtime::time::{self, Sleep};
use ember_runtime::{ExitReason, Pid, Priority, Spawn};
use http::{header, HeaderValue, StatusCode, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::response::text;
use crate::router::Lookup;
use crate::shared::Shared;
use crate::timer::EmberTimer;
use crate::Response;

/// Longest request path shown in a handler process's label.
const LABEL_PATH_MAX: usize = 80;

/// How long a lingering close reads what the client still sends, once it
/// found unread input.
const LINGER: Duration = Duration::from_secs(2);

/// How long a lingering close waits for input when there was none unread
/// (an idle connection closing: the client has nothing more to send).
const LINGER_IDLE: Duration = Duration::from_millis(200);

/// How long a connection being drained (the server shutting down) that has
/// not begun a request yet may still take to send its first one: it was
/// accepted, so its client expects an answer.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(500);

/// Most bytes a lingering close reads before closing anyway.
const LINGER_BYTES: usize = 256 * 1024;

/// The message that tells a connection's process to finish (the server is
/// shutting down): it closes once idle, or after its response in flight.
pub(crate) struct Drain;

/// What woke a connection's process.
enum Step {
    /// hyper is done with the connection.
    Done(hyper::Result<()>),
    /// [`Drain`] arrived.
    Drain,
    /// The first request's grace while draining is over.
    GraceOver,
}

/// The body of a connection's process.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let config = &shared.config;
    let mut builder = http1::Builder::new();
    builder
        .timer(EmberTimer::current())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(config.keep_alive)
        // A FIN after a complete request is not a hang-up: answer it.
        .half_close(true)
        .max_header_size(config.max_head_bytes)
        .max_buf_size(config.max_head_bytes.max(8192));
    let service_shared = shared.clone();
    let hangup = stream.hangup_watch();
    let state = Arc::new(ConnectionState::default());
    let connection = state.clone();
    let io = Watched {
        stream,
        write_timeout: config.write_timeout,
        stalled: None,
        state: state.clone(),
        linger: None,
    };
    let service = service_fn(move |request| {
        let shared = service_shared.clone();
        let hangup = hangup.clone();
        let state = state.clone();
        state.begun.fetch_add(1, Ordering::Relaxed);
        async move {
            state.unboost();
            let taken = state.pipelined.fetch_add(1, Ordering::Relaxed) + 1;
            let response = respond(request, &shared, &hangup, &state).await?;
            if taken >= shared.config.max_pipelined.max(1) {
                shared.stats.pipeline_capped.fetch_add(1, Ordering::Relaxed);
                return Ok::<_, Abandoned>(closing(response));
            }
            Ok(response)
        }
    });
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    let mut drain = pin!(ember_runtime::receive::<Drain>());
    let mut draining = false;
    // While draining: how long a connection that has not begun a request
    // yet may still take to send its first one.
    let mut first_request_grace: Option<Sleep> = None;
    let result = loop {
        // Everything the connection awaits is Ember's (its socket, timers,
        // channels and mailbox) or hyper's own body channels, which the
        // connection feeds itself: none needs tokio's driver.
        let step = ember_runtime::sync::woken_by_ember(poll_fn(|cx| {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Step::Done(result));
            }
            if !draining && drain.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Drain);
            }
            match first_request_grace
                .as_mut()
                .map(|grace| Pin::new(grace).poll(cx))
            {
                Some(Poll::Ready(())) => Poll::Ready(Step::GraceOver),
                _ => Poll::Pending,
            }
        }))
        .await;
        match step {
            Step::Done(result) => break result,
            Step::Drain => {
                draining = true;
                if connection.begun.load(Ordering::Relaxed) == 0 {
                    // Accepted just before the listener closed: its request
                    // is likely on its way (or already unread in the socket).
                    first_request_grace = Some(time::sleep(FIRST_REQUEST_GRACE));
                } else {
                    conn.as_mut().graceful_shutdown();
                }
            }
            Step::GraceOver => {
                first_request_grace = None;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        // Client-side trouble (disconnects, timeouts, bad input already
        // answered 400) is no crash of ours: counted, logged at debug level.
        match io_error_kind(&e) {
            Some(io::ErrorKind::TimedOut) => {
                shared.stats.write_timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Some(
                io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted,
            ) => {
                shared.stats.disconnected.fetch_add(1, Ordering::Relaxed);
            }
            _ if e.is_incomplete_message() => {
                shared.stats.disconnected.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        tracing::debug!("ember-web: connection {peer} ended: {e}");
    }
}

/// The kind of the I/O error that ended a connection, if one did.
fn io_error_kind(e: &hyper::Error) -> Option<io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        source = err.source();
    }
    None
}

/// What a connection's service and its socket wrapper share.
#[derive(Default)]
struct ConnectionState {
    /// Requests begun on this connection.
    begun: AtomicUsize,
    /// Requests taken since the socket was last read (see [`Watched`]).
    pipelined: AtomicUsize,
    /// The connection's process runs at its last handler's priority (set
    /// while writing that handler's response); back to normal when the next
    /// request is read.
    boosted: AtomicBool,
}

impl ConnectionState {
    /// The connection's process takes the priority a handler chose for its
    /// request, to write that request's response (a console page asks for
    /// `High` so it stays usable on a saturated system).
    fn boost(&self, priority: Priority) {
        if priority != Priority::Normal {
            ember_runtime::set_priority(priority);
            self.boosted.store(true, Ordering::Relaxed);
        }
    }

    /// Back to normal priority, between requests.
    fn unboost(&self) {
        if self.boosted.load(Ordering::Relaxed) {
            self.boosted.store(false, Ordering::Relaxed);
            ember_runtime::set_priority(Priority::Normal);
        }
    }
}

/// The socket as hyper sees it: writes that make no progress for the write
/// timeout fail, and every read resets the count of pipelined requests
/// (hyper reads only when its buffer holds no complete request head, so the
/// requests served since the last read were all queued at once) and the
/// connection's priority.
struct Watched {
    stream: TcpStream,
    write_timeout: Duration,
    /// Armed when a write would block; disarmed by any progress.
    stalled: Option<Sleep>,
    state: Arc<ConnectionState>,
    /// While closing: when to stop reading, and how much was read.
    linger: Option<(Sleep, usize)>,
}

impl Watched {
    /// A write returned `result`: progress disarms the stall timer; a write
    /// that would block arms it, and fails once it has run out.
    fn progress(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let timeout = self.write_timeout;
        let stalled = self.stalled.get_or_insert_with(|| time::sleep(timeout));
        match Pin::new(stalled).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {timeout:?} (write timeout)"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.state.pipelined.store(0, Ordering::Relaxed);
        self.state.unboost();
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.progress(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.progress(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// Shuts down the write side, then lingers: reads and discards what the
    /// client still sends, up to [`LINGER`] (or [`LINGER_IDLE`] if nothing
    /// was left unread) and [`LINGER_BYTES`], so that
    /// the kernel does not answer unread input with a reset that would
    /// destroy the response the client has not read yet.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
        }
        let mut sink = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut sink);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    let n = buf.filled().len();
                    let (deadline, read) =
                        this.linger.get_or_insert_with(|| (time::sleep(LINGER), 0));
                    if *read == 0 {
                        // Unread input: more may be on its way.
                        deadline.reset(Instant::now() + LINGER);
                    }
                    *read += n;
                    if *read >= LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                // The client closed too (or the socket failed): done.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    let (deadline, _) = this
                        .linger
                        .get_or_insert_with(|| (time::sleep(LINGER_IDLE), 0));
                    return match Pin::new(deadline).poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

/// A request that gets no response: its handler's process was stopped.
/// hyper closes the connection without answering.
#[derive(Debug)]
struct Abandoned;

impl fmt::Display for Abandoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request's handler was stopped; no response")
    }
}

impl std::error::Error for Abandoned {}

/// A handler's future, with panics turned into an error (then it is not
/// polled again).
struct CatchPanic<F>(Option<F>);

impl<F: Future + Unpin> Future for CatchPanic<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(future) = self.0.as_mut() else {
            return Poll::Ready(Err(()));
        };
        match panic::catch_unwind(AssertUnwindSafe(|| Pin::new(future).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(_) => {
                // The panic hook has reported it, naming this process.
                self.0 = None;
                Poll::Ready(Err(()))
            }
        }
    }
}

/// The request in flight: disarms the hang-up watch when it is over, and
/// kills the handler's process if the request is dropped unfinished (the
/// connection ended first).
struct InFlight<'a> {
    hangup: &'a HangupWatch,
    handler: Option<Pid>,
    shared: &'a Shared,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.hangup.disarm();
        if let Some(pid) = self.handler.take() {
            self.shared.handle.exit(pid, ExitReason::Kill);
        }
    }
}

fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Why a request's `Host` is unacceptable (RFC 9112 §3.2: an HTTP/1.1
/// request without one, any request with more than one, or one whose value
/// is not a valid authority), or `None` if it is fine.
fn bad_host(version: Version, headers: &http::HeaderMap) -> Option<&'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let Some(host) = hosts.next() else {
        return (version == Version::HTTP_11).then_some("missing Host header\n");
    };
    if hosts.next().is_some() {
        return Some("more than one Host header\n");
    }
    // An empty Host is allowed: the target has no authority to give.
    let valid = host.is_empty()
        || host
            .to_str()
            .ok()
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .is_some_and(|a| a.as_str().len() == host.len() && !a.as_str().contains('@'));
    (!valid).then_some("invalid Host header\n")
}

/// Answers one request: limits, routing, then the handler in its own
/// process; `Err` when that process was stopped (no response at all).
async fn respond(
    request: http::Request<Incoming>,
    shared: &Shared,
    hangup: &HangupWatch,
    state: &ConnectionState,
) -> Result<Response, Abandoned> {
    let (parts, body) = request.into_parts();
    if let Some(why) = bad_host(parts.version, &parts.headers) {
        return Ok(closing(text(StatusCode::BAD_REQUEST, why)));
    }
    let handler = match shared.router.lookup(&parts.method, parts.uri.path()) {
        Lookup::Handler(handler) => handler,
        Lookup::Answer(response) => return Ok(*response),
    };
    let limit = shared.config.max_body_bytes;
    let too_large = || {
        Ok(closing(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        )))
    };
    if content_length(&parts.headers).is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    // Most requests (GETs) have no body: no timer, nothing to collect.
    let body: Bytes = if body.is_end_stream() {
        Bytes::new()
    } else {
        let read = Limited::new(body, limit).collect();
        match time::timeout(shared.config.body_read_timeout, read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
            Ok(Err(_)) => return Ok(closing(text(StatusCode::BAD_REQUEST, "bad request body\n"))),
            Err(_) => {
                return Ok(closing(text(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body timeout\n",
                )))
            }
        }
    };
    let method = &parts.method;
    let path = parts.uri.path();
    let path = match path.char_indices().nth(LABEL_PATH_MAX) {
        Some((end, _)) => &path[..end],
        None => path,
    };
    let mut label = String::with_capacity(11 + method.as_str().len() + path.len());
    label.push_str("ember-web ");
    label.push_str(method.as_str());
    label.push(' ');
    label.push_str(path);
    let request = http::Request::from_parts(parts, body);
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let (reply, replied) = oneshot::channel::<Result<(Response, Priority), ()>>();
    let spawned = Spawn::new().label(label).spawn(async move {
        let outcome = CatchPanic(Some(handler.call(request))).await;
        // A stopped process's result is a placeholder (long loops return
        // early when `should_stop()`): it must never reach the client.
        if !ember_runtime::should_stop() {
            // The priority the handler chose serves its response too.
            let priority = ember_runtime::set_priority(Priority::Normal);
            let _ = reply.send(outcome.map(|response| (response, priority)));
        }
    });
    let Ok(spawned) = spawned else {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot start the handler\n",
        ));
    };
    let mut in_flight = InFlight {
        hangup,
        handler: Some(spawned.pid),
        shared,
    };
    hangup.kill_on_hangup(spawned.pid);
    let outcome = replied.await;
    // Finished (or dead): nothing to kill any more.
    in_flight.handler = None;
    drop(in_flight);
    match outcome {
        Ok(Ok((response, priority))) => {
            state.boost(priority);
            Ok(response)
        }
        Ok(Err(())) => {
            shared.stats.crashed.fetch_add(1, Ordering::Relaxed);
            let pid = spawned.pid;
            tracing::error!(
                "ember-web: the handler of a request (process {pid}) crashed; answered 500"
            );
            Ok(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal server error\n",
            ))
        }
        Err(_) => {
            if hangup.hung_up() {
                shared.stats.disconnected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    "ember-web: the client of process {} went away; its request was stopped",
                    spawned.pid
                );
            } else {
                shared.stats.stopped.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    "ember-web: the handler process {} was stopped; its request gets no response",
                    spawned.pid
                );
            }
            Err(Abandoned)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bad_host;
    use http::{HeaderMap, HeaderValue, Version};

    fn hosts(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(http::header::HOST, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn host_is_required_once_in_http_1_1_and_must_be_an_authority() {
        assert_eq!(bad_host(Version::HTTP_11, &hosts(&["example.com"])), None);
        assert_eq!(
            bad_host(Version::HTTP_11, &hosts(&["127.0.0.1:4000"])),
            None
        );
        assert_eq!(bad_host(Version::HTTP_11, &hosts(&["[::1]:80"])), None);
        assert_eq!(bad_host(Version::HTTP_11, &hosts(&[""])), None);
        assert_eq!(bad_host(Version::HTTP_10, &hosts(&[])), None);
        assert!(bad_host(Version::HTTP_11, &hosts(&[])).is_some());
        assert!(bad_host(Version::HTTP_11, &hosts(&["a", "b"])).is_some());
        assert!(bad_host(Version::HTTP_11, &hosts(&["a", "a"])).is_some());
        assert!(bad_host(Version::HTTP_10, &hosts(&["a", "b"])).is_some());
        assert!(bad_host(Version::HTTP_11, &hosts(&["a b"])).is_some());
        assert!(bad_host(Version::HTTP_11, &hosts(&["user@host"])).is_some());
        assert!(bad_host(Version::HTTP_11, &hosts(&["host/path"])).is_some());
    }
}
