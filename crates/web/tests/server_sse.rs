//! Server-sent events: one `data:` event per string, the end when the
//! sender is dropped.

mod support;

use ember_web::{sse, Config, Request, Router, Server};
use support::{exchange, run};

#[test]
fn sse_writes_each_string_as_an_event_and_ends_when_the_sender_is_dropped() {
    run(2, async {
        let router = Router::new().get("/events", |_req: Request| async {
            let (tx, rx) = ember_runtime::sync::mpsc::channel(4);
            ember_runtime::spawn(async move {
                for event in ["one", "two\nlines"] {
                    tx.send(event.to_owned()).await.unwrap();
                }
            });
            sse(rx)
        });
        let server = Server::bind("127.0.0.1:0", router, Config::default()).unwrap();
        let raw = exchange(
            server.local_addr(),
            b"GET /events HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(raw.contains("text/event-stream"), "{raw}");
        assert!(raw.contains("data: one\n\n"), "{raw}");
        assert!(raw.contains("data: two\ndata: lines\n\n"), "{raw}");
    });
}
