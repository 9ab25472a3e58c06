//! Connections beyond `max_connections` get a clear 503, and the server
//! keeps serving the others.

mod support;

use ember_web::{Config, Router, Server};
use support::{exchange, get_on, run, status_of};
use tokio::net::TcpStream;

#[test]
fn a_connection_over_the_cap_is_answered_503_and_the_others_go_on() {
    run(2, async {
        let config = Config {
            max_connections: 2,
            ..Config::default()
        };
        let server = Server::bind("127.0.0.1:0", support::routes(Router::new()), config).unwrap();
        let addr = server.local_addr();
        // Two kept-alive connections, each proven accepted by a response.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            assert_eq!(get_on(&mut s, "/ping").await.status, 200);
            held.push(s);
        }
        let raw = exchange(addr, b"GET /ping HTTP/1.1\r\nhost: t\r\n\r\n").await;
        assert_eq!(status_of(&raw), Some(503), "{raw}");
        assert!(raw.to_ascii_lowercase().contains("retry-after: 1"), "{raw}");
        for s in &mut held {
            assert_eq!(get_on(s, "/ping").await.status, 200);
        }
    });
}
