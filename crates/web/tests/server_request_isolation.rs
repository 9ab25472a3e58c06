//! Every request on a kept-alive connection starts from a clean process:
//! whatever a handler does to its own process (priority, trap_exit, links,
//! monitors, timers, label, name, mailbox) does not reach the next request.
//! Each test changes one kind of state in a first request and inspects the
//! process of a second request on the same connection.

mod support;

use std::time::Duration;

use ember_runtime::introspect::process_info;
use ember_runtime::{
    self as ember, monitor, receive, self_pid, send, send_after, Down, Pid, Priority, TimerRef,
};
use ember_web::{text, Config, Request, Router, Server};
use http::StatusCode;
use support::{get_on, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A message a handler leaves behind.
struct Leftover;

/// Lets `/inspect` answer.
struct Go;

/// What a handler reports to the test: its pid and, for timers, the timer.
struct Served {
    pid: Pid,
    timer: Option<TimerRef>,
}

/// `/change?what=X` changes one kind of state of its process; `/inspect`
/// reports its own process. Both report to `test`.
fn router(test: Pid) -> Router {
    Router::new()
        .get("/change", move |req: Request| async move {
            let what = ember_web::query(&req).remove("what").unwrap_or_default();
            let me = self_pid();
            // A partner that outlives the request, to link to and monitor.
            let partner = ember::spawn(async {
                let _: Leftover = receive().await;
            });
            let mut timer = None;
            match what.as_str() {
                "priority" => {
                    ember::set_priority(Priority::High);
                }
                "trap_exit" => {
                    ember::trap_exit(true);
                }
                "link" => ember::link(partner).unwrap(),
                "monitor" => {
                    monitor(partner);
                }
                "timer" => timer = Some(send_after(me, Leftover, Duration::from_millis(200))),
                "label" => ember::set_label("left behind"),
                "name" => ember::register("request-isolation-name", me).unwrap(),
                "mailbox" => send(me, Leftover),
                other => return text(StatusCode::BAD_REQUEST, format!("unknown {other}")),
            }
            send(test, Served { pid: me, timer });
            text(StatusCode::OK, "changed")
        })
        .get("/inspect", move |_req: Request| async move {
            send(
                test,
                Served {
                    pid: self_pid(),
                    timer: None,
                },
            );
            // Stay alive while the test looks at this process.
            let Go = receive().await;
            text(StatusCode::OK, "inspected")
        })
}

/// Changes `what` in a first request, then returns the first request's
/// process (once it has ended) and the second's process info, taken while
/// the second request runs.
async fn change_then_inspect(what: &str) -> (Served, ember::introspect::ProcessInfo) {
    let server = Server::bind("127.0.0.1:0", router(self_pid()), Config::default()).unwrap();
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let reply = get_on(&mut s, &format!("/change?what={what}")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let first: Served = receive().await;
    // The first request's process ends once it has answered.
    let watch = monitor(first.pid);
    let _: Down = receive().matching(move |d: &Down| d.monitor == watch).await;

    let client = tokio::spawn(async move {
        let reply = get_on(&mut s, "/inspect").await;
        (reply, s)
    });
    let second: Served = receive().await;
    let info = process_info(second.pid);
    send(second.pid, Go);
    let (reply, _s) = client.await.unwrap();
    assert_eq!(reply.status, 200);
    let info = info.expect("the second request's process is alive while it runs");
    assert_ne!(
        info.pid, first.pid,
        "each request gets a process of its own"
    );
    (first, info)
}

#[test]
fn a_priority_set_by_one_request_does_not_reach_the_next() {
    run(2, async {
        let (_, info) = change_then_inspect("priority").await;
        assert_eq!(info.priority, Priority::Normal);
    });
}

#[test]
fn trap_exit_set_by_one_request_does_not_reach_the_next() {
    run(2, async {
        let (_, info) = change_then_inspect("trap_exit").await;
        assert!(!info.trap_exit);
    });
}

#[test]
fn a_link_made_by_one_request_does_not_reach_the_next() {
    run(2, async {
        let (_, info) = change_then_inspect("link").await;
        assert!(info.links.is_empty(), "{:?}", info.links);
    });
}

#[test]
fn a_monitor_set_by_one_request_does_not_reach_the_next() {
    run(2, async {
        let (_, info) = change_then_inspect("monitor").await;
        assert!(info.monitors.is_empty(), "{:?}", info.monitors);
    });
}

#[test]
fn a_timer_armed_by_one_request_is_cancelled_when_it_ends() {
    run(2, async {
        let (first, info) = change_then_inspect("timer").await;
        let timer = first.timer.expect("the first request armed a timer");
        assert_eq!(ember::read_timer(timer), None, "cancelled with its target");
        assert_eq!(info.mailbox_len, 0);
    });
}

#[test]
fn a_label_set_by_one_request_does_not_reach_the_next() {
    run(2, async {
        let (_, info) = change_then_inspect("label").await;
        assert_eq!(info.label, None);
        assert_eq!(info.spawned_as, "ember-web GET /inspect");
    });
}

#[test]
fn a_name_registered_by_one_request_is_released_when_it_ends() {
    run(2, async {
        let (_, info) = change_then_inspect("name").await;
        assert_eq!(info.name, None);
        assert_eq!(ember::whereis("request-isolation-name"), None);
    });
}

#[test]
fn messages_left_in_one_requests_mailbox_do_not_reach_the_next() {
    run(2, async {
        let (_, info) = change_then_inspect("mailbox").await;
        assert_eq!(info.mailbox_len, 0);
    });
}

/// The pid of the only connection process of the runtime.
fn the_connection() -> Pid {
    let found: Vec<Pid> = ember::introspect::processes()
        .into_iter()
        .filter(|&pid| {
            process_info(pid).is_some_and(|i| i.spawned_as.starts_with("ember-web connection"))
        })
        .collect();
    assert_eq!(found.len(), 1, "one connection process: {found:?}");
    found[0]
}

#[test]
fn a_handlers_priority_serves_its_response_but_not_the_next_request() {
    run(2, async {
        let test = self_pid();
        // `/high` asks for High and streams one event when the test says so.
        let router = router(test).get("/high", move |_req: Request| async move {
            ember::set_priority(Priority::High);
            let (tx, rx) = ember_runtime::sync::mpsc::channel(1);
            let producer = ember::spawn(async move {
                let Go = receive().await;
                let _ = tx.send("done".to_owned()).await;
            });
            send(test, producer);
            ember_web::sse(rx)
        });
        let server = Server::bind("127.0.0.1:0", router, Config::default()).unwrap();
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        s.write_all(b"GET /high HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let producer: Pid = receive().await;
        // While its response streams, the connection runs at High.
        let connection = the_connection();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while process_info(connection).map(|i| i.priority) != Some(Priority::High) {
            assert!(tokio::time::Instant::now() < deadline, "never boosted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        send(producer, Go);
        let mut raw = Vec::new();
        while !raw.ends_with(b"0\r\n\r\n") {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed mid-stream");
            raw.extend_from_slice(&buf[..n]);
        }
        // The next request on the connection: back to normal.
        let client = tokio::spawn(async move { get_on(&mut s, "/inspect").await });
        let second: Served = receive().await;
        let priority = process_info(connection).map(|i| i.priority);
        send(second.pid, Go);
        assert_eq!(client.await.unwrap().status, 200);
        assert_eq!(priority, Some(Priority::Normal));
    });
}
