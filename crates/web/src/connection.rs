//! One connection's process: hyper's HTTP/1.1 state machine over the socket,
//! running each request's handler in turn.
//!
//! # Where handlers run
//!
//! HTTP/1.1 has one request in flight per connection, so the connection's
//! process runs the handlers itself, one request after another (labelled
//! with the request: `set_label`). Another connection is another process,
//! so a slow or CPU-heavy handler delays only its own client, and Ember's
//! watchdog moves the scheduler away from a handler that computes without
//! awaiting.
//!
//! * A handler that panics answers `500` for its request; the connection
//!   goes on.
//! * A client that hangs up stops its request: hyper notices while the
//!   handler awaits and drops it; a handler computing without awaiting is
//!   covered by the socket's [`HangupWatch`], armed around every handler,
//!   which kills the connection's process when the scheduler polling the
//!   sockets sees the hang-up (long loops poll `should_stop()`).
//! * Killing the process from the console ends the connection.
//!
//! (A handler process per request, or one per connection fed by messages,
//! were measured at 30 % fewer keep-alive requests per second: the cost is
//! the round trip between two processes, not the spawn.)

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use ember_runtime::net::{HangupWatch, TcpStream};
use http::{header, HeaderValue, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::response::text;
use crate::router::Lookup;
use crate::server::Shared;
use crate::Response;

/// Longest request path shown in a connection process's label.
const LABEL_PATH_MAX: usize = 80;

/// The body of a connection's process.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let config = &shared.config;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(config.keep_alive)
        .max_buf_size(config.max_head_bytes.max(8192));
    let service_shared = shared.clone();
    let hangup = stream.hangup_watch();
    let service = service_fn(move |request| {
        let shared = service_shared.clone();
        let hangup = hangup.clone();
        async move { Ok::<_, Infallible>(respond(request, &shared, &hangup).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut draining = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = stop.wait_for(|stop| *stop), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        // Client-side trouble (disconnects, timeouts, bad input already
        // answered 400) is no crash of ours.
        tracing::debug!("ember-web: connection {peer} ended: {e}");
    }
}

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

/// Disarms the hang-up watch when the request is over (or dropped).
struct Disarm<'a>(&'a HangupWatch);

impl Drop for Disarm<'_> {
    fn drop(&mut self) {
        self.0.disarm();
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

/// Answers one request: limits, routing, then the handler in its own process.
async fn respond(
    request: http::Request<Incoming>,
    shared: &Shared,
    hangup: &HangupWatch,
) -> Response {
    let (parts, body) = request.into_parts();
    let handler = match shared.router.lookup(&parts.method, parts.uri.path()) {
        Lookup::Handler(handler) => handler,
        Lookup::Answer(response) => return *response,
    };
    let limit = shared.config.max_body_bytes;
    let too_large = || {
        closing(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        ))
    };
    if content_length(&parts.headers).is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    // Most requests (GETs) have no body: no timer, nothing to collect.
    let body: Bytes = if body.is_end_stream() {
        Bytes::new()
    } else {
        let read = Limited::new(body, limit).collect();
        match tokio::time::timeout(shared.config.body_read_timeout, read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
            Ok(Err(_)) => return closing(text(StatusCode::BAD_REQUEST, "bad request body\n")),
            Err(_) => return closing(text(StatusCode::REQUEST_TIMEOUT, "request body timeout\n")),
        }
    };
    let method = &parts.method;
    let path = parts.uri.path();
    let path = match path.char_indices().nth(LABEL_PATH_MAX) {
        Some((end, _)) => &path[..end],
        None => path,
    };
    let mut label = String::with_capacity(1 + method.as_str().len() + path.len());
    label.push_str(method.as_str());
    label.push(' ');
    label.push_str(path);
    let request = http::Request::from_parts(parts, body);
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let me = ember_runtime::self_pid();
    hangup.kill_on_hangup(me);
    let _disarm = Disarm(hangup);
    ember_runtime::set_label(label);
    match CatchPanic(Some(handler.call(request))).await {
        Ok(response) => response,
        Err(()) => {
            shared.stats.crashed.fetch_add(1, Ordering::Relaxed);
            let request = ember_runtime::process_info(me).and_then(|info| info.label);
            tracing::error!(
                "ember-web: the handler of {} (process {me}) crashed; answered 500",
                request.as_deref().unwrap_or("a request")
            );
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
        }
    }
}
