//! A client that resets its connection during a long request ends the
//! process computing it, even while it computes without awaiting; a client
//! that only half-closes still gets its answer; a handler stopped from
//! outside produces no response at all (never a placeholder 200).

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use ember_runtime::{exit, monitor, receive, self_pid, send, Down, ExitReason, Pid};
use ember_web::{endpoints, Config, Request, Router, Server};
use support::run;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `/fact` as mounted by `endpoints::routes`, reporting its process first.
fn reporting_fact(test: Pid) -> Router {
    Router::new().get("/fact", move |req: Request| {
        send(test, self_pid());
        endpoints::fact(req)
    })
}

#[test]
fn a_client_resetting_during_a_huge_fact_kills_the_process_computing_it() {
    run(2, async {
        let server =
            Server::bind("127.0.0.1:0", reporting_fact(self_pid()), Config::default()).unwrap();
        let s = TcpStream::connect(server.local_addr()).await.unwrap();
        let mut s = s;
        s.write_all(b"GET /fact?n=10000000 HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let worker: Pid = receive().await;
        let watch = monitor(worker);
        // Closing with SO_LINGER 0 sends a reset, not a FIN.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        let down: Down = receive().matching(move |d: &Down| d.monitor == watch).await;
        assert_eq!(down.pid, worker);
        assert_eq!(down.reason, ExitReason::Killed);
        // Counted as a client going away, not as a crash of anything.
        let stats = server.stats();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while stats.disconnected.load(Ordering::Relaxed) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.crashed.load(Ordering::Relaxed), 0);
        assert_eq!(stats.connections_killed.load(Ordering::Relaxed), 0);
    });
}

#[test]
fn a_client_half_closing_after_its_request_still_gets_the_answer() {
    run(2, async {
        let server =
            Server::bind("127.0.0.1:0", reporting_fact(self_pid()), Config::default()).unwrap();
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        s.write_all(b"GET /fact?n=20000 HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let _worker: Pid = receive().await;
        s.shutdown().await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let expected = endpoints::factorial_bits(20_000).to_string();
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(raw.ends_with(&format!("\r\n\r\n{expected}")), "{raw}");
    });
}

#[test]
fn a_handler_killed_from_outside_produces_no_response() {
    run(2, async {
        let server =
            Server::bind("127.0.0.1:0", reporting_fact(self_pid()), Config::default()).unwrap();
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        s.write_all(b"GET /fact?n=10000000 HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let worker: Pid = receive().await;
        exit(worker, ExitReason::Kill);
        // The connection closes without a byte: no placeholder answer.
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        assert!(raw.is_empty(), "{:?}", String::from_utf8_lossy(&raw));
        assert_eq!(server.stats().stopped.load(Ordering::Relaxed), 1);
    });
}
