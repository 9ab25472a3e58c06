//! Bad input is answered, not served: malformed requests, oversized bodies,
//! unknown paths and wrong methods.

mod support;

use ember_web::{Config, Router, Server};
use support::{exchange, get, run, status_of};

fn start() -> Server {
    let router = support::ping_and_echo(Router::new());
    let config = Config {
        max_body_bytes: 1000,
        ..Config::default()
    };
    Server::bind("127.0.0.1:0", router, config).unwrap()
}

#[test]
fn a_malformed_request_line_is_answered_400() {
    run(2, async {
        let server = start();
        let raw = exchange(server.local_addr(), b"GARBAGE\x01 NOT HTTP\r\n\r\n").await;
        assert_eq!(status_of(&raw), Some(400), "{raw}");
    });
}

#[test]
fn a_body_announced_over_the_limit_is_answered_413() {
    run(2, async {
        let server = start();
        let raw = exchange(
            server.local_addr(),
            b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 5000\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&raw), Some(413), "{raw}");
    });
}

#[test]
fn a_chunked_body_growing_over_the_limit_is_answered_413() {
    run(2, async {
        let server = start();
        let mut raw =
            b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            raw.extend_from_slice(b"1f4\r\n");
            raw.extend_from_slice(&[b'x'; 500]);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        let reply = exchange(server.local_addr(), &raw).await;
        assert_eq!(status_of(&reply), Some(413), "{reply}");
    });
}

#[test]
fn a_body_within_the_limit_reaches_the_handler() {
    run(2, async {
        let server = start();
        let raw = exchange(
            server.local_addr(),
            b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
        )
        .await;
        assert_eq!(status_of(&raw), Some(200), "{raw}");
        assert!(raw.ends_with("hello"), "{raw}");
    });
}

#[test]
fn an_unknown_path_is_answered_404() {
    run(2, async {
        let server = start();
        assert_eq!(get(server.local_addr(), "/nope").await.status, 404);
    });
}

#[test]
fn a_wrong_method_is_answered_405_with_the_allowed_ones() {
    run(2, async {
        let server = start();
        let raw = exchange(
            server.local_addr(),
            b"DELETE /ping HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&raw), Some(405), "{raw}");
        assert!(
            raw.to_ascii_lowercase().contains("allow: get, head"),
            "{raw}"
        );
    });
}
