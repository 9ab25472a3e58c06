//! A panicking handler answers 500 for its own request only.

mod support;

use ember_runtime::{receive, self_pid, send, Pid};
use ember_web::{Config, Request, Response, Router, Server};
use support::{get, get_on, run};

struct Go;

#[test]
fn a_panicking_handler_answers_500_while_another_connection_is_served() {
    run(2, async {
        let test = self_pid();
        let router =
            support::routes(Router::new()).get("/panic", move |_req: Request| async move {
                send(test, self_pid());
                let Go = receive().await;
                panic!("the handler fails on purpose");
                #[allow(unreachable_code)]
                Response::default()
            });
        let server = Server::bind("127.0.0.1:0", router, Config::default()).unwrap();
        let addr = server.local_addr();

        let mut doomed = tokio::net::TcpStream::connect(addr).await.unwrap();
        let panicking = tokio::spawn(async move {
            let reply = get_on(&mut doomed, "/panic").await;
            (reply, doomed)
        });
        // The handler is running (and about to panic) in a process of its
        // own, which says what it serves.
        let handler: Pid = receive().await;
        let info = ember_runtime::introspect::process_info(handler).unwrap();
        assert_eq!(info.spawned_as, "ember-web GET /panic", "{info:?}");

        let ping = get(addr, "/ping").await;
        assert_eq!((ping.status, ping.body.as_str()), (200, "pong"));

        send(handler, Go);
        let (reply, mut doomed) = panicking.await.unwrap();
        assert_eq!(reply.status, 500);
        // The connection survives its request's crash.
        let again = get_on(&mut doomed, "/ping").await;
        assert_eq!((again.status, again.body.as_str()), (200, "pong"));
        assert_eq!(
            server
                .stats()
                .crashed
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    });
}
