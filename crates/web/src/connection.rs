//! One connection's process: hyper's HTTP/1.1 state machine over the socket,
//! and a process per request for the handler.
//!
//! # Why a process per request
//!
//! The connection's process must stay responsive while a handler runs: it is
//! the one that notices the client going away (hyper reads the socket while
//! a response is pending and fails the connection on EOF). A handler that
//! computes without awaiting would keep that process inside one poll, so the
//! disconnect would go unnoticed until the work ends. In its own process the
//! handler can hog a thread (Ember's watchdog moves everything else away
//! from it) while the connection's process keeps polling the socket.
//!
//! The handler's process sends its [`Response`] back on a oneshot channel.
//! * If it panics or is killed, its body, and with it the sender, is dropped:
//!   the connection answers `500` for that request and goes on.
//! * If the connection ends first (client disconnect, header/body timeouts,
//!   the server killing it), hyper drops the request's future, whose guard
//!   kills the handler's process. A handler stuck in native code dies at its
//!   next await; long loops should also poll `ember_runtime::should_stop()`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use ember_runtime::{ExitReason, Handle, Pid, Spawn};
use http::{header, HeaderValue, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use crate::response::text;
use crate::router::Lookup;
use crate::server::Shared;
use crate::Response;

/// Longest request path shown in a request process's label.
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
    let service = service_fn(move |request| {
        let shared = service_shared.clone();
        async move { Ok::<_, Infallible>(respond(request, &shared).await) }
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

/// Kills the handler's process when the request is abandoned.
struct KillOnDrop {
    pid: Option<Pid>,
    handle: Handle,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            self.handle.exit(pid, ExitReason::Kill);
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

/// Answers one request: limits, routing, then the handler in its own process.
async fn respond(request: http::Request<Incoming>, shared: &Shared) -> Response {
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
    let read = Limited::new(body, limit).collect();
    let body: Bytes = match tokio::time::timeout(shared.config.body_read_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(_)) => return closing(text(StatusCode::BAD_REQUEST, "bad request body\n")),
        Err(_) => return closing(text(StatusCode::REQUEST_TIMEOUT, "request body timeout\n")),
    };
    let method = parts.method.clone();
    let path: String = parts.uri.path().chars().take(LABEL_PATH_MAX).collect();
    let request = http::Request::from_parts(parts, body);
    let (reply, replied) = oneshot::channel::<Response>();
    let spawned = Spawn::new()
        .label(format!("ember-web {method} {path}"))
        .spawn(async move {
            let response = handler.call(request).await;
            let _ = reply.send(response);
        });
    let Ok(spawned) = spawned else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot start the handler\n",
        );
    };
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let mut guard = KillOnDrop {
        pid: Some(spawned.pid),
        handle: shared.handle.clone(),
    };
    match replied.await {
        Ok(response) => {
            guard.pid = None; // it is finishing on its own
            response
        }
        Err(_) => {
            guard.pid = None; // already dead
            shared.stats.crashed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "ember-web: the handler of {method} {path} (process {}) crashed; answered 500",
                spawned.pid
            );
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
        }
    }
}
