//! The response body: full bytes, or a stream of server-sent events.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ember_runtime::sync::mpsc;
use ember_runtime::time::{self, Interval};
use hyper::body::{Frame, SizeHint};

/// How often an open event stream sends a comment line, so that proxies and
/// clients keep it open and a vanished client is noticed.
pub(crate) const SSE_HEARTBEAT: Duration = Duration::from_secs(15);

/// The body of a [`Response`](crate::Response): either bytes known in full,
/// or a stream (see [`sse`](crate::sse)).
///
/// ```
/// use ember_web::Body;
/// let _ = Body::from("pong");
/// let _ = Body::from(String::from("pong"));
/// let _ = Body::from(vec![1u8, 2, 3]);
/// let _ = Body::from(bytes::Bytes::from_static(b"pong"));
/// let _ = Body::empty();
/// ```
pub struct Body {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    Events(EventStream),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Body {
        Body {
            kind: Kind::Full(None),
        }
    }

    /// A stream of server-sent events read from `events` (see [`sse`](crate::sse)).
    pub(crate) fn events(events: mpsc::Receiver<String>, heartbeat: Duration) -> Body {
        Body {
            kind: Kind::Events(EventStream {
                events: Source::Data(events),
                heartbeat: None,
                period: heartbeat,
            }),
        }
    }

    /// A stream of server-sent events with ids and types (see
    /// [`sse_events`](crate::sse_events)).
    pub(crate) fn full_events(events: mpsc::Receiver<SseEvent>, heartbeat: Duration) -> Body {
        Body {
            kind: Kind::Events(EventStream {
                events: Source::Full(events),
                heartbeat: None,
                period: heartbeat,
            }),
        }
    }

    /// The bytes of a full body (`None` for a stream); for tests and logs.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.kind {
            Kind::Full(Some(bytes)) => Some(bytes),
            Kind::Full(None) => Some(&[]),
            Kind::Events(_) => None,
        }
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(bytes) => f
                .debug_struct("Body")
                .field("len", &bytes.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Events(_) => f.debug_struct("Body").field("stream", &"sse").finish(),
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body {
            kind: Kind::Full(Some(bytes)),
        }
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::from(Bytes::from(s))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Body {
        Body::from(Bytes::from_static(s.as_bytes()))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Body::from(Bytes::from(v))
    }
}

impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Body {
        Body::from(Bytes::from_static(s))
    }
}

/// Server-sent events: each received `String` becomes one event
/// (`data: …\n\n`, one `data:` line per line of the string), a comment line
/// every heartbeat period, and the end of the body when every sender is
/// dropped. When the client disconnects, hyper drops the body, and with it
/// the receiver, so senders see the channel closed.
struct EventStream {
    events: Source,
    heartbeat: Option<Interval>,
    period: Duration,
}

enum Source {
    Data(mpsc::Receiver<String>),
    Full(mpsc::Receiver<SseEvent>),
}

/// One server-sent event with its optional `id:` (what a reconnecting
/// client sends back as `Last-Event-ID`) and `event:` type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The event's id (no newlines).
    pub id: Option<String>,
    /// The event's type (no newlines).
    pub event: Option<String>,
    /// Its data; each line becomes a `data:` line.
    pub data: String,
}

fn encode_full(ev: &SseEvent) -> Bytes {
    let mut out = String::with_capacity(ev.data.len() + 32);
    let clean = |s: &str| s.replace(['\r', '\n'], " ");
    if let Some(id) = &ev.id {
        out.push_str("id: ");
        out.push_str(&clean(id));
        out.push('\n');
    }
    if let Some(event) = &ev.event {
        out.push_str("event: ");
        out.push_str(&clean(event));
        out.push('\n');
    }
    out.push_str(std::str::from_utf8(&encode_event(&ev.data)).unwrap_or(""));
    Bytes::from(out)
}

fn encode_event(data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 8);
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

impl EventStream {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let ready = match &mut self.events {
            Source::Data(rx) => rx.poll_recv(cx).map(|e| e.map(|data| encode_event(&data))),
            Source::Full(rx) => rx.poll_recv(cx).map(|e| e.map(|ev| encode_full(&ev))),
        };
        if let Poll::Ready(event) = ready {
            return Poll::Ready(event);
        }
        let period = self.period;
        let heartbeat = self
            .heartbeat
            .get_or_insert_with(|| time::interval_at(Instant::now() + period, period));
        if heartbeat.poll_tick(cx).is_ready() {
            return Poll::Ready(Some(Bytes::from_static(b": heartbeat\n\n")));
        }
        Poll::Pending
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Events(stream) => stream.poll_next(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Events(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{encode_event, encode_full, SseEvent};

    #[test]
    fn an_event_with_several_lines_becomes_several_data_lines() {
        assert_eq!(&encode_event("a\nb")[..], b"data: a\ndata: b\n\n");
        assert_eq!(&encode_event("x")[..], b"data: x\n\n");
        let full = SseEvent {
            id: Some("7".into()),
            event: Some("state".into()),
            data: "{}".into(),
        };
        assert_eq!(
            &encode_full(&full)[..],
            b"id: 7\nevent: state\ndata: {}\n\n"
        );
    }
}
