//! The server needs no tokio driver: on a runtime built with
//! `enable_tokio(false)` it answers, hyper's header read timeout closes an
//! idle connection, and the body read timeout answers 408 — every deadline
//! on Ember's timer wheels. The client is a plain thread with std sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ember_runtime::{receive, Runtime};
use ember_web::{endpoints, text, Config, Request, Router, Server};
use http::StatusCode;

/// How long any one read of the client waits before the test fails.
const READ_LIMIT: Duration = Duration::from_secs(20);

/// A runtime without tokio serving the endpoints and `/upload`, with 300 ms
/// header and body read timeouts. The runtime must outlive the test's use.
fn start() -> (Runtime, SocketAddr) {
    let rt = Runtime::builder()
        .schedulers(2)
        .enable_tokio(false)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    rt.handle().spawn(async move {
        let router = endpoints::routes(Router::new()).post("/upload", |req: Request| async move {
            text(StatusCode::OK, req.body().len().to_string())
        });
        let config = Config {
            header_read_timeout: Duration::from_millis(300),
            body_read_timeout: Duration::from_millis(300),
            ..Config::default()
        };
        let bound = Server::bind("127.0.0.1:0", router, config).map(|s| s.local_addr());
        let _ = tx.send(bound.map_err(|e| e.to_string()));
        // The server is linked to this process: keep it until the runtime
        // is dropped.
        receive::<()>().await;
    });
    let addr = rx
        .recv_timeout(READ_LIMIT)
        .expect("the server process did not report")
        .expect("Server::bind failed without tokio");
    (rt, addr)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_LIMIT)).unwrap();
    s
}

/// Reads one response with a `content-length` body; returns its status.
fn read_response(s: &mut TcpStream) -> u16 {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let n = s
            .read(&mut byte)
            .expect("no response head within the limit");
        assert_eq!(n, 1, "closed in the middle of a response head");
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Reads until the server closes; what it sent.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close the connection: {e}"),
    }
    out
}

#[test]
fn an_idle_connection_is_closed_by_the_header_timeout_without_tokio() {
    let (_rt, addr) = start();
    let mut s = connect(addr);
    let asked = Instant::now();
    s.write_all(b"GET /ping HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s), 200);
    let out = read_to_close(&mut s);
    let idle = asked.elapsed();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert!(
        idle >= Duration::from_millis(250),
        "closed after {idle:?}, before the 300 ms header timeout"
    );
    assert!(
        idle < Duration::from_secs(10),
        "closed after {idle:?}, long after the 300 ms header timeout"
    );
}

#[test]
fn a_slow_body_is_answered_408_without_tokio() {
    let (_rt, addr) = start();
    let mut s = connect(addr);
    let asked = Instant::now();
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nonly a part")
        .unwrap();
    assert_eq!(read_response(&mut s), 408);
    assert!(asked.elapsed() >= Duration::from_millis(250));
}
