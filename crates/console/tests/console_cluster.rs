//! The console's Cluster API (`docs/console-api.md`, "Cluster") over a real
//! socket, with a second node started by the test: an Ember node in the
//! same test process, and a real `erl` node.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ember_console as console;
use ember_runtime::{receive, Runtime, Spawn};
use ember_term::Term;
use ember_testkit::{erl_required, free_port, random_cookie, start_erl, unique};
use ember_web::{Config, Router, Server};
use serde_json::Value;
use support::nodes::{start_node, with_node_console};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a whole response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    Reply {
        status,
        body: body.to_string(),
    }
}

/// `GET path` until `ok` holds for its JSON (every 20 ms, for at most 10 s).
async fn get_until(addr: SocketAddr, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = get(addr, path).await;
        if reply.status == 200 && ok(&reply.json()) {
            return reply.json();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: GET {path} never got there; last {} {}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The connection to `name` in a `/api/cluster` answer.
fn connection<'a>(cluster: &'a Value, name: &str) -> Option<&'a Value> {
    cluster["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
}

fn counter(cluster: &Value, name: &str, field: &str) -> u64 {
    connection(cluster, name)
        .and_then(|n| n[field].as_u64())
        .unwrap_or(0)
}

#[test]
fn the_cluster_page_shows_an_ember_peer_its_traffic_and_its_processes() {
    let port = free_port();
    let cookie = random_cookie();
    let a = start_node(&unique("console_a"), &cookie, port, false);
    let b = start_node(&unique("console_b"), &cookie, port, false);
    // On B: a registered process that keeps what it gets in its mailbox.
    let keeper =
        b.rt.handle()
            .spawn_with(Spawn::new().name("keeper").label("keeps mail"), async {
                receive::<u64>().await;
            })
            .unwrap()
            .pid;
    let keeper_path = format!("<0.{}.{}>", keeper.number(), keeper.serial());
    let b_name = b.name.clone();
    let a_name = a.name.clone();
    let a_view = a.node.view();
    with_node_console(&a, Duration::from_secs(60), move |addr| async move {
        // Not connected yet: nothing to show, and nothing to ask.
        let cluster = get(addr, "/api/cluster").await.json();
        assert_eq!(cluster["node"], a_name.as_str());
        assert_eq!(cluster["distributed"], true);
        assert!(connection(&cluster, &b_name).is_none(), "{cluster}");
        let top = format!("/api/cluster/nodes/{b_name}/top");
        let r = get(addr, &top).await;
        assert_eq!(r.status, 404, "{}", r.body);
        assert!(r.json()["error"]
            .as_str()
            .unwrap()
            .contains("not connected"));
        assert!(a_view.connections().is_empty());

        // Ten messages to B's keeper (connecting first).
        for i in 0..10 {
            ember_runtime::dist::send_named("keeper", &b_name, Term::from(i));
        }
        // Messages count when queued, bytes when written: wait until the
        // ten are queued and the queue is written out.
        let cluster = get_until(addr, "/api/cluster", "ten messages out and written", |c| {
            connection(c, &b_name).is_some()
                && counter(c, &b_name, "messages_out") >= 10
                && counter(c, &b_name, "queued_bytes") == 0
        })
        .await;
        let b_row = connection(&cluster, &b_name).unwrap();
        // Ten messages of at least a few bytes each, and their frames' prefixes.
        assert!(b_row["bytes_out"].as_u64().unwrap() > 10 * 4, "{b_row}");
        assert!(b_row["up_since_ms"].as_u64().unwrap() > 1_600_000_000_000);
        assert!(b_row["up_for_s"].as_f64().unwrap() >= 0.0);
        assert!(b_row["creation"].as_u64().is_some());

        // Top of B, by the reductions of its last window, as an Ember node
        // answers it.
        let top = get_until(addr, &top, "B's top", |t| t["kind"] == "ember").await;
        let rows = top["processes"].as_array().unwrap();
        assert!(!rows.is_empty() && rows.len() <= 20, "{top}");
        assert!(rows
            .iter()
            .all(|r| r["info"]["reductions"].as_u64().is_some()));
        let recent: Vec<u64> = rows
            .iter()
            .map(|r| r["info"]["ember_reductions_delta"].as_u64().unwrap())
            .collect();
        assert!(recent.windows(2).all(|w| w[0] >= w[1]), "{recent:?}");
        assert!(rows
            .iter()
            .all(|r| r["pid"].as_str().unwrap().starts_with("<0.")));

        // Info of B's keeper, with the ten messages in its mailbox.
        let info_path = format!(
            "/api/cluster/nodes/{}/processes/{}",
            b_name.replace('@', "%40"),
            keeper_path.replace('<', "%3C").replace('>', "%3E")
        );
        let info = get_until(addr, &info_path, "the keeper's ten messages", |i| {
            i["info"]["message_queue_len"] == 10
        })
        .await;
        assert_eq!(info["pid"], keeper_path.as_str());
        assert_eq!(info["node"], b_name.as_str());
        assert_eq!(info["info"]["registered_name"], "keeper");
        assert_eq!(info["info"]["ember_spawned_as"], "keeps mail");
        assert_eq!(info["info"]["ember_label"], "undefined");
        assert_eq!(info["info"]["status"], "waiting");

        // B's answers came in on the same connection.
        let cluster = get(addr, "/api/cluster").await.json();
        assert!(counter(&cluster, &b_name, "messages_in") >= 2, "{cluster}");
        assert!(counter(&cluster, &b_name, "bytes_in") > 0, "{cluster}");
        assert!(
            counter(&cluster, &b_name, "messages_out") >= 12,
            "{cluster}"
        );

        // Hostile and mistaken requests: a clear 4xx each, and the node
        // carries on.
        for (path, status) in [
            (
                format!("/api/cluster/nodes/{b_name}/processes/garbage"),
                400,
            ),
            (
                format!("/api/cluster/nodes/{b_name}/processes/%3C0.1%3E"),
                400,
            ),
            (format!("/api/cluster/nodes/{b_name}/processes/3.1.0"), 400),
            (
                format!("/api/cluster/nodes/{b_name}/processes/0.999999.0"),
                404,
            ),
            (format!("/api/cluster/nodes/{b_name}/kill"), 404),
            (format!("/api/cluster/nodes/{b_name}/top/more"), 404),
            ("/api/cluster/nodes/%zz/top".to_string(), 400),
            ("/api/cluster/nodes/%C3%28/top".to_string(), 400),
            ("/api/cluster/nodes/a@b@c/top".to_string(), 400),
            ("/api/cluster/nodes/no_host/top".to_string(), 400),
            (format!("/api/cluster/nodes/{}/top", "x".repeat(300)), 400),
            ("/api/cluster/nodes/nosuch@nowhere/top".to_string(), 404),
            ("/api/cluster/nodes/".to_string(), 404),
        ] {
            let r = get(addr, &path).await;
            assert_eq!(r.status, status, "GET {path}: {}", r.body);
            assert!(r.json()["error"].is_string(), "GET {path}: {}", r.body);
        }
        let again = get(addr, "/api/cluster").await;
        assert_eq!(again.status, 200);
        assert!(connection(&again.json(), &b_name).is_some());
        assert!(a_view.is_running());
    });
    drop(b);
}

#[test]
fn a_console_without_a_node_says_it_is_not_distributed() {
    let rt = Runtime::builder().schedulers(1).build().unwrap();
    rt.block_on(async {
        let server = Server::bind(
            "127.0.0.1:0",
            console::mount(Router::new()),
            Config::default(),
        )
        .unwrap();
        let addr = server.local_addr();
        let cluster = get(addr, "/api/cluster").await;
        assert_eq!(cluster.status, 200);
        assert_eq!(cluster.json()["distributed"], false);
        assert_eq!(cluster.json()["nodes"], serde_json::json!([]));
        let r = get(addr, "/api/cluster/nodes/b@h/top").await;
        assert_eq!(r.status, 404, "{}", r.body);
        assert!(r.json()["error"]
            .as_str()
            .unwrap()
            .contains("not distributed"));
        let page = get(addr, "/cluster").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("cluster-rows"));
        server.shutdown().await;
    });
}

#[test]
fn the_cluster_page_shows_top_and_info_of_an_erl_node() {
    if !erl_required() {
        return;
    }
    let port = free_port();
    let cookie = random_cookie();
    let a = start_node(&unique("console_e"), &cookie, port, false);
    let mut erl = start_erl(&unique("console_erl"), &cookie, port, &[]);
    assert_eq!(erl.eval(&format!("net_adm:ping('{}').", a.name)), "pong");
    // A registered erl process with three messages waiting.
    let pid = erl.eval(
        "P = spawn(fun() -> receive stop -> ok end end), register(erl_keeper, P), \
         [P ! {m, I} || I <- [1,2,3]], list_to_atom(pid_to_list(P)).",
    );
    let erl_name = erl.name.clone();
    with_node_console(&a, Duration::from_secs(60), move |addr| async move {
        let cluster = get_until(addr, "/api/cluster", "erl connected", |c| {
            connection(c, &erl_name).is_some()
        })
        .await;
        assert!(counter(&cluster, &erl_name, "bytes_in") > 0);
        let top = get(addr, &format!("/api/cluster/nodes/{erl_name}/top")).await;
        assert_eq!(top.status, 200, "{}", top.body);
        let top = top.json();
        assert_eq!(top["kind"], "erlang");
        let total = top["total"].as_u64().unwrap();
        assert!(total > 10, "{top}");
        assert_eq!(top["examined"].as_u64().unwrap(), total.min(1000));
        assert_eq!(top["processes"].as_array().unwrap().len(), 20);
        let info = get(
            addr,
            &format!(
                "/api/cluster/nodes/{erl_name}/processes/{}",
                pid.trim_matches('\'')
                    .replace('<', "%3C")
                    .replace('>', "%3E")
            ),
        )
        .await;
        assert_eq!(info.status, 200, "{}", info.body);
        let info = info.json();
        assert_eq!(info["info"]["registered_name"], "erl_keeper");
        assert_eq!(info["info"]["message_queue_len"], 3);
        assert!(info["info"]["current_function"].is_string(), "{info}");
        let gone = get(
            addr,
            &format!("/api/cluster/nodes/{erl_name}/processes/0.999999.0"),
        )
        .await;
        assert_eq!(gone.status, 404, "{}", gone.body);
    });
}
