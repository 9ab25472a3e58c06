//! A client that disconnects from a long request ends the process computing
//! it (its connection's), even while it computes without awaiting.

mod support;

use ember_runtime::{monitor, receive, self_pid, send, Down, ExitReason, Pid};
use ember_web::{endpoints, Config, Request, Router, Server};
use support::run;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[test]
fn a_client_disconnecting_from_a_huge_fact_kills_the_process_computing_it() {
    run(2, async {
        let test = self_pid();
        // /fact as mounted by endpoints::routes, reporting its process first.
        let router = Router::new().get("/fact", move |req: Request| {
            send(test, self_pid());
            endpoints::fact(req)
        });
        let server = Server::bind("127.0.0.1:0", router, Config::default()).unwrap();
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        s.write_all(b"GET /fact?n=10000000 HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let worker: Pid = receive().await;
        let watch = monitor(worker);
        drop(s);
        let down: Down = receive().matching(move |d: &Down| d.monitor == watch).await;
        assert_eq!(down.pid, worker);
        assert_eq!(down.reason, ExitReason::Killed);
    });
}
