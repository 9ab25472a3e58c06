//! Graceful shutdown: no new connections, in-flight requests finish.

mod support;

use std::time::Duration;

use ember_runtime::{receive, self_pid, send, Pid};
use ember_web::{text, Config, Request, Router, Server};
use http::StatusCode;
use support::{get_on, run};
use tokio::net::TcpStream;

struct Go;
struct Stopped;

#[test]
fn shutdown_lets_an_in_flight_request_finish_and_refuses_new_connections() {
    run(2, async {
        let test = self_pid();
        let router = Router::new().get("/slow", move |_req: Request| async move {
            send(test, self_pid());
            let Go = receive().await;
            text(StatusCode::OK, "finished")
        });
        let server = Server::bind("127.0.0.1:0", router, Config::default()).unwrap();
        let addr = server.local_addr();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let in_flight = tokio::spawn(async move { get_on(&mut s, "/slow").await });
        let handler: Pid = receive().await;

        let acceptor = server.pid();
        ember_runtime::spawn(async move {
            server.shutdown().await;
            send(test, Stopped);
        });
        // The acceptor stops listening first: connections are refused.
        let refused = loop {
            match TcpStream::connect(addr).await {
                Err(_) => break true,
                Ok(_) => ember_runtime::sleep(Duration::from_millis(5)).await,
            }
        };
        assert!(refused);
        assert!(
            ember_runtime::is_alive(acceptor),
            "it waits for the request in flight"
        );

        send(handler, Go);
        let reply = in_flight.await.unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "finished"));
        let Stopped = receive().await;
        assert!(!ember_runtime::is_alive(acceptor));
    });
}

#[test]
fn shutdown_kills_connections_still_busy_after_the_timeout() {
    run(2, async {
        let test = self_pid();
        let router = Router::new().get("/never", move |_req: Request| async move {
            send(test, self_pid());
            std::future::pending::<()>().await;
            text(StatusCode::OK, "unreachable")
        });
        let config = Config {
            shutdown_timeout: Duration::from_millis(100),
            ..Config::default()
        };
        let server = Server::bind("127.0.0.1:0", router, config).unwrap();
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /never HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let handler: Pid = receive().await;
        let watch = ember_runtime::monitor(handler);
        server.shutdown().await;
        let down: ember_runtime::Down = receive()
            .matching(move |d: &ember_runtime::Down| d.monitor == watch)
            .await;
        assert_eq!(down.pid, handler);
    });
}
