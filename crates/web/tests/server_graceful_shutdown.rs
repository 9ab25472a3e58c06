//! Graceful shutdown: no new connections, in-flight requests finish.

mod support;

use std::time::Duration;

use ember_runtime::{receive, self_pid, send, Down, ExitReason, Pid};
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

/// Binds a server in a process of its own (as a supervisor's child start
/// does) serving `router`; returns that process, the address and the
/// acceptor.
async fn bind_in_a_parent(router: Router) -> (Pid, std::net::SocketAddr, Pid) {
    let test = self_pid();
    let parent = ember_runtime::spawn(async move {
        let server = Server::bind("127.0.0.1:0", router, Config::default()).unwrap();
        send(test, (server.local_addr(), server.pid()));
        std::future::pending::<()>().await;
    });
    let (addr, acceptor) = receive().await;
    (parent, addr, acceptor)
}

#[test]
fn a_shutdown_of_the_binding_process_drains_requests_in_flight() {
    run(2, async {
        let test = self_pid();
        let router = Router::new().get("/slow", move |_req: Request| async move {
            send(test, self_pid());
            let Go = receive().await;
            text(StatusCode::OK, "finished")
        });
        let (parent, addr, acceptor) = bind_in_a_parent(router).await;
        let watch = ember_runtime::monitor(acceptor);
        let mut s = TcpStream::connect(addr).await.unwrap();
        let in_flight = tokio::spawn(async move { get_on(&mut s, "/slow").await });
        let handler: Pid = receive().await;

        // As a supervisor stops its child: the acceptor drains.
        ember_runtime::exit(parent, ExitReason::Shutdown);
        while TcpStream::connect(addr).await.is_ok() {
            ember_runtime::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            ember_runtime::is_alive(acceptor),
            "the acceptor waits for the request in flight"
        );
        send(handler, Go);
        let reply = in_flight.await.unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "finished"));
        let down: Down = receive().matching(move |d: &Down| d.monitor == watch).await;
        assert_eq!(down.reason, ExitReason::Shutdown, "it exits as it was told");
    });
}

#[test]
fn a_crash_of_the_binding_process_stops_the_server_at_once() {
    run(2, async {
        let test = self_pid();
        let router = Router::new().get("/slow", move |_req: Request| async move {
            send(test, self_pid());
            std::future::pending::<()>().await;
            text(StatusCode::OK, "unreachable")
        });
        let (parent, addr, acceptor) = bind_in_a_parent(router).await;
        let watch = ember_runtime::monitor(acceptor);
        let mut s = TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let handler: Pid = receive().await;
        let handler_watch = ember_runtime::monitor(handler);
        ember_runtime::exit(parent, ExitReason::error("boom"));
        let down: Down = receive().matching(move |d: &Down| d.monitor == watch).await;
        assert_eq!(down.reason, ExitReason::error("boom"));
        // The connection died with it, and the request's handler with that.
        let _: Down = receive()
            .matching(move |d: &Down| d.monitor == handler_watch)
            .await;
        let mut rest = Vec::new();
        let read = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest).await;
        assert!(
            read.is_err() || rest.is_empty(),
            "no response: {:?}",
            String::from_utf8_lossy(&rest)
        );
    });
}

#[test]
fn a_connection_accepted_before_the_shutdown_gets_its_first_request_answered() {
    run(2, async {
        let test = self_pid();
        let router = support::routes(Router::new());
        let server = Server::bind("127.0.0.1:0", router, Config::default()).unwrap();
        let addr = server.local_addr();
        let stats = server.stats().clone();
        let mut s = TcpStream::connect(addr).await.unwrap();
        while stats.connections.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            ember_runtime::sleep(Duration::from_millis(1)).await;
        }
        ember_runtime::spawn(async move {
            server.shutdown().await;
            send(test, Stopped);
        });
        // The listener is closed: the drain has begun.
        while TcpStream::connect(addr).await.is_ok() {
            ember_runtime::sleep(Duration::from_millis(5)).await;
        }
        let reply = get_on(&mut s, "/ping").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "pong"));
        let Stopped = receive().await;
    });
}
