//! Building responses: text, HTML, JSON and server-sent events.

use ember_runtime::sync::mpsc;
use http::{header, HeaderValue, StatusCode};

use crate::body::{Body, SseEvent, SSE_HEARTBEAT};
use crate::Response;

fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A `text/plain; charset=utf-8` response.
///
/// ```
/// let r = ember_web::text(http::StatusCode::OK, "pong");
/// assert_eq!(r.body().as_bytes(), Some(&b"pong"[..]));
/// ```
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    with_type(status, "text/plain; charset=utf-8", Body::from(body.into()))
}

/// A `200 OK` `text/html; charset=utf-8` response.
pub fn html(body: impl Into<Body>) -> Response {
    with_type(StatusCode::OK, "text/html; charset=utf-8", body.into())
}

/// A `200 OK` `application/json` response; a value that fails to serialize
/// (a map with non-string keys, a failing `Serialize` impl) answers 500.
///
/// ```
/// let r = ember_web::json(&serde_json::json!({"ok": true}));
/// assert_eq!(r.body().as_bytes(), Some(&br#"{"ok":true}"#[..]));
/// ```
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_type(StatusCode::OK, "application/json", Body::from(bytes)),
        Err(e) => {
            tracing::error!("ember-web: cannot serialize a JSON response: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
        }
    }
}

/// A `200 OK` `text/event-stream` response (server-sent events): each
/// `String` received from `events` is sent as one event (`data: …\n\n`; a
/// string with newlines becomes several `data:` lines of the same event).
/// The stream stays open, sends a comment line (`: heartbeat`) every 15 s,
/// and ends when every sender is dropped. When the client disconnects the
/// receiver is dropped, so `Sender::send` fails and the producer can stop.
///
/// The stream is written by the connection's process after the handler has
/// returned, so the producer is typically a process the handler spawned:
///
/// ```
/// use ember_web::{sse, Request, Response};
///
/// async fn ticks(_req: Request) -> Response {
///     let (tx, rx) = ember_runtime::sync::mpsc::channel(16);
///     ember_runtime::spawn(async move {
///         for i in 0.. {
///             if tx.send(format!("tick {i}")).await.is_err() {
///                 break; // the client went away
///             }
///             ember_runtime::sleep(std::time::Duration::from_secs(1)).await;
///         }
///     });
///     sse(rx)
/// }
/// # let _ = ember_web::Router::new().get("/ticks", ticks);
/// ```
pub fn sse(events: mpsc::Receiver<String>) -> Response {
    let mut response = with_type(
        StatusCode::OK,
        "text/event-stream",
        Body::events(events, SSE_HEARTBEAT),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Like [`sse`], with each event's `id:` and `event:` lines: a client that
/// reconnects sends the last id it saw as `Last-Event-ID`.
pub fn sse_events(events: mpsc::Receiver<SseEvent>) -> Response {
    let mut response = with_type(
        StatusCode::OK,
        "text/event-stream",
        Body::full_events(events, SSE_HEARTBEAT),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
