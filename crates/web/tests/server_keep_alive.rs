//! Keep-alive: several requests on one connection, served in turn by the
//! connection's process.

mod support;

use ember_web::{Config, Router, Server};
use support::{get_on, run};
use tokio::net::TcpStream;

#[test]
fn a_kept_alive_connection_serves_several_requests() {
    run(2, async {
        let server = Server::bind(
            "127.0.0.1:0",
            support::routes(Router::new()),
            Config::default(),
        )
        .unwrap();
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        for path in ["/ping", "/fact?n=10", "/fact?n=0", "/nope", "/ping"] {
            let reply = get_on(&mut s, path).await;
            let expected = if path == "/nope" { 404 } else { 200 };
            assert_eq!(reply.status, expected, "{path}");
        }
        let stats = server.stats();
        assert_eq!(stats.accepted.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(stats.requests.load(std::sync::atomic::Ordering::Relaxed), 4);
    });
}
