//! Slow clients are cut off: by the header read timeout while sending a
//! request head, by the body read timeout (408) while sending a body.

mod support;

use std::time::{Duration, Instant};

use ember_web::{endpoints, text, Config, Request, Router, Server};
use http::StatusCode;
use support::{run, status_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn start() -> Server {
    let router = endpoints::routes(Router::new()).post("/upload", |req: Request| async move {
        text(StatusCode::OK, req.body().len().to_string())
    });
    let config = Config {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    Server::bind("127.0.0.1:0", router, config).unwrap()
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
        let idle = asked.elapsed();
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        // Closed by the header timeout (300 ms), not at once after the
        // response, and not by something slower (the 60 s test limit).
        assert!(
            idle >= Duration::from_millis(250),
            "closed after {idle:?}, before the 300 ms header timeout"
        );
        assert!(
            idle < Duration::from_secs(10),
            "closed after {idle:?}, long after the 300 ms header timeout"
        );
    });
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
