//! Slow clients are cut off: by the header read timeout while sending a
//! request head, by the body read timeout (408) while sending a body.
//!
//! `without_tokio`: the same deadlines on a runtime built with
//! `enable_tokio(false)` — hyper's header timer and the body timeout are on
//! Ember's timer wheels, no tokio driver runs. Its client is a plain thread
//! with std sockets.

mod support;

use std::time::{Duration, Instant};

use ember_web::{text, Config, Request, Router, Server};
use http::StatusCode;
use support::{run, status_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Binds the endpoints and `/upload` with 300 ms header and body read
/// timeouts.
fn bind() -> std::io::Result<Server> {
    let router = support::routes(Router::new()).post("/upload", |req: Request| async move {
        text(StatusCode::OK, req.body().len().to_string())
    });
    let config = Config {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    Server::bind("127.0.0.1:0", router, config)
}

fn start() -> Server {
    bind().unwrap()
}

#[test]
fn a_client_sending_its_head_too_slowly_is_disconnected() {
    run(2, async {
        let server = start();
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        let started = Instant::now();
        s.write_all(b"GET /ping HTTP/1.1\r\nhost: t\r\n")
            .await
            .unwrap(); // never finished
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await; // EOF or reset: cut off
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(
            out.is_empty() || status_of(&String::from_utf8_lossy(&out)) == Some(408),
            "{}",
            String::from_utf8_lossy(&out)
        );
    });
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    run(2, async {
        let server = start();
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        // The idle time starts once the response is written, after this.
        let asked = Instant::now();
        assert_eq!(support::get_on(&mut s, "/ping").await.status, 200);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await; // EOF or reset: closed
        assert_closed_by_the_header_timeout(asked.elapsed(), &out);
    });
}

/// The connection closed silently by the 300 ms header timeout: not at once
/// after the response, and not by something slower (a test's time limit).
fn assert_closed_by_the_header_timeout(idle: Duration, out: &[u8]) {
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(out));
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
fn a_client_sending_its_body_too_slowly_is_answered_408() {
    run(2, async {
        let server = start();
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nonly a part")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let raw = String::from_utf8_lossy(&out);
        assert_eq!(status_of(&raw), Some(408), "{raw}");
    });
}

mod without_tokio {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::assert_closed_by_the_header_timeout;

    use ember_runtime::{receive, Runtime};

    /// How long any one read of the client waits before the test fails.
    const READ_LIMIT: Duration = Duration::from_secs(20);

    /// A runtime without tokio serving [`super::bind`]'s server. The runtime
    /// must outlive the test's use.
    fn start() -> (Runtime, SocketAddr) {
        let rt = Runtime::builder()
            .schedulers(2)
            .enable_tokio(false)
            .build()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        rt.handle().spawn(async move {
            let bound = super::bind().map(|s| s.local_addr());
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
        assert_closed_by_the_header_timeout(asked.elapsed(), &out);
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
}
