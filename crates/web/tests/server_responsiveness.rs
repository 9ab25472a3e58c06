//! The headline: `/ping` is answered while ten connections compute huge
//! factorials without awaiting on a two-scheduler runtime.

mod support;

use ember_runtime::{monitor, receive, self_pid, send, Down, Pid};
use ember_web::{Config, Request, Router, Server};
use support::{get, run};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[test]
fn ping_is_answered_while_ten_connections_compute_fact_of_a_million() {
    run(2, async {
        let test = self_pid();
        let router = support::routes(Router::new()).get("/fact", move |req: Request| {
            send(test, self_pid());
            support::fact(req)
        });
        let server = Server::bind("127.0.0.1:0", router, Config::default()).unwrap();
        let addr = server.local_addr();
        let mut hogs = Vec::new();
        for _ in 0..10 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /fact?n=1000000 HTTP/1.1\r\nhost: t\r\n\r\n")
                .await
                .unwrap();
            hogs.push(s);
        }
        let mut workers = Vec::new();
        for _ in 0..10 {
            let pid: Pid = receive().await;
            workers.push((pid, monitor(pid)));
        }
        // All ten are computing; the small request still gets through.
        for _ in 0..3 {
            let reply = get(addr, "/ping").await;
            assert_eq!((reply.status, reply.body.as_str()), (200, "pong"));
        }
        // Hanging up (a reset: a FIN alone is a half-close, which still
        // wants its answer) stops the work.
        for hog in &hogs {
            socket2::SockRef::from(hog)
                .set_linger(Some(std::time::Duration::ZERO))
                .unwrap();
        }
        drop(hogs);
        for (pid, watch) in workers {
            let down: Down = receive().matching(move |d: &Down| d.monitor == watch).await;
            assert_eq!(down.pid, pid);
        }
    });
}
