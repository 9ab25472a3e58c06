//! The server runs on Ember's primitives alone: serving requests (with and
//! without bodies, kept alive, an event stream) and shutting down never
//! starts tokio's driver thread. The client is a plain thread on `std`
//! sockets, so nothing in the test needs tokio either.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use ember_runtime::sync::{mpsc, oneshot};
use ember_runtime::Runtime;
use ember_web::{sse, Config, Request, Router, Server};

/// Reads one response with a `content-length` from `reader`; its body.
fn read_sized(reader: &mut BufReader<TcpStream>) -> String {
    let mut length = None;
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>().unwrap());
            }
        }
    }
    let mut body = vec![0; length.expect("a content-length")];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

/// The client: two GETs and a POST with a body on one kept-alive
/// connection, then an event stream read to its second event.
fn client(addr: SocketAddr) -> Vec<String> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut got = Vec::new();
    for _ in 0..2 {
        writer
            .write_all(b"GET /ping HTTP/1.1\r\nhost: t\r\n\r\n")
            .unwrap();
        got.push(read_sized(&mut reader));
    }
    writer
        .write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello")
        .unwrap();
    got.push(read_sized(&mut reader));

    let events = TcpStream::connect(addr).unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (&events)
        .write_all(b"GET /events HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let mut events = BufReader::new(events);
    let mut seen = 0;
    while seen < 2 {
        let mut line = String::new();
        assert!(events.read_line(&mut line).unwrap() > 0, "the stream ended");
        if let Some(data) = line.strip_prefix("data: ") {
            got.push(data.trim_end().to_owned());
            seen += 1;
        }
    }
    got
}

#[test]
fn serving_and_shutting_down_never_start_tokios_driver() {
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    let got = rt.block_on(async {
        let router = support::ping_and_echo(Router::new()).get("/events", |_req: Request| async {
            let (tx, rx) = mpsc::channel(1);
            ember_runtime::spawn(async move {
                for n in 0.. {
                    if tx.send(format!("event {n}")).await.is_err() {
                        break;
                    }
                }
            });
            sse(rx)
        });
        let server = Server::bind("127.0.0.1:0", router, Config::default()).unwrap();
        let addr = server.local_addr();
        let (done, finished) = oneshot::channel();
        thread::spawn(move || {
            let _ = done.send(client(addr));
        });
        // The client's thread drops `done` if it panics: no hang.
        let got = finished.await.expect("the client failed (see its panic)");
        server.shutdown().await;
        got
    });
    assert_eq!(got, ["pong", "pong", "hello", "event 0", "event 1"]);
    assert!(
        !rt.handle().runtime_info().threads.tokio_driver,
        "serving requests started tokio's driver thread"
    );
}
