//! The Load page of another node (`GET /api/load?node=NAME` and its event
//! stream, `docs/console-api.md`) over a real socket: node A's console
//! reads node B's load figures, B being an Ember node with a console in the
//! same test process, or a real `erl` node.

mod support;

use std::time::Duration;

use ember_console as console;
use ember_runtime::{receive, Runtime, Spawn};
use ember_term::Term;
use ember_testkit::{erl_required, free_port, random_cookie, start_erl, unique};
use ember_web::{Config, Router, Server};
use serde_json::Value;
use support::nodes::{start_node, with_node_console, Events};
use support::{api_get as get, api_get_until as get_until};

fn count(load: &Value) -> u64 {
    load["process_count"].as_u64().unwrap_or(0)
}

#[test]
fn the_load_page_shows_another_ember_nodes_figures() {
    let port = free_port();
    let cookie = random_cookie();
    let a = start_node(&unique("load_a"), &cookie, port, false);
    let b = start_node(&unique("load_b"), &cookie, port, true);
    let (a_name, b_name) = (a.name.clone(), b.name.clone());
    let b_node = b.node.clone();
    let b_handle = b.rt.handle().clone();
    with_node_console(&a, Duration::from_secs(90), move |addr| async move {
        let remote = format!("/api/load?node={}", b_name.replace('@', "%40"));
        // Not connected yet: a clear 404, and no connection made.
        let r = get(addr, &remote).await;
        assert_eq!(r.status, 404, "{}", r.body);
        assert!(r.error().contains("not connected"), "{}", r.body);
        let r = get(addr, &format!("/api/load/events?node={b_name}")).await;
        assert_eq!(r.status, 404, "{}", r.body);

        // Connect (a message to a name B does not have).
        ember_runtime::dist::send_named("nobody", &b_name, Term::from(0));
        // B's own figures, from B's console (started by the first ask).
        let before = get_until(addr, &remote, "B's load", |r| {
            r.status == 200 && r.json()["kind"] == "ember"
        })
        .await
        .json();
        assert_eq!(before["node"], b_name.as_str());
        for field in [
            "workers",
            "live_workers",
            "jobs_per_s",
            "failure_rate",
            "schedulers_online",
            "schedulers_total",
            "max_workers",
        ] {
            assert!(before.get(field).is_some(), "{field} in {before}");
        }
        assert!(before["history"].as_array().is_some_and(|h| !h.is_empty()));
        assert_eq!(before["run_queues"].as_array().map(Vec::len), Some(2));
        // The first figures may count a few processes that have ended
        // since (the ask's own, the console's starting ones): a margin.
        let base = count(&before);
        assert!(base > 0, "{before}");
        let grown = base + 1000 - 20;

        // B spawns a thousand processes that wait: B's figures grow by
        // them, A's do not.
        let spawned: Vec<_> = (0..1000)
            .map(|_| {
                b_handle
                    .spawn_with(Spawn::new().label("waits"), async {
                        receive::<u64>().await;
                    })
                    .unwrap()
                    .pid
            })
            .collect();
        let after = get_until(addr, &remote, "B's thousand processes", |r| {
            r.status == 200 && count(&r.json()) >= grown
        })
        .await
        .json();
        let point = after["history"].as_array().unwrap().last().unwrap().clone();
        assert!(point["process_count"].as_u64().unwrap() >= grown, "{point}");
        let local = get_until(addr, "/api/system", "A's figures", |r| r.status == 200)
            .await
            .json();
        assert!(count(&local) < grown, "A has B's processes? {local}");
        // This node's own load: the route as before, no `node` field.
        let own = get_until(addr, "/api/load", "A's load", |r| r.status == 200)
            .await
            .json();
        assert!(own.get("node").is_none(), "{own}");
        let own_by_name = get_until(
            addr,
            &format!("/api/load?node={a_name}"),
            "A's load by name",
            |r| r.status == 200,
        )
        .await
        .json();
        assert!(own_by_name.get("node").is_none(), "{own_by_name}");

        // The stream shows B's figures too.
        let mut events = Events::open(addr, &format!("/api/load/events?node={b_name}")).await;
        let event = events
            .until("B's figures streamed", |e| count(e) >= grown)
            .await;
        assert_eq!(event["node"], b_name.as_str());
        assert_eq!(event["kind"], "ember");

        // Mistakes: a clear 4xx each.
        for (path, status) in [
            ("/api/load?node=nosuch@nowhere".to_string(), 404),
            ("/api/load/events?node=nosuch@nowhere".to_string(), 404),
            ("/api/load?node=no_host".to_string(), 400),
            ("/api/load?node=a@b@c".to_string(), 400),
            ("/api/load?node=%C3%28@h".to_string(), 400),
            ("/api/load?node=%zz".to_string(), 400),
            (format!("/api/load?node={}@h", "x".repeat(300)), 400),
        ] {
            let r = get(addr, &path).await;
            assert_eq!(r.status, status, "GET {path}: {}", r.body);
            assert!(!r.error().is_empty(), "GET {path}: {}", r.body);
        }

        // B goes away: the stream says so, and asking answers 404 without
        // connecting again.
        for pid in spawned {
            b_handle.exit(pid, ember_runtime::ExitReason::Kill);
        }
        assert!(b_node.disconnect(&a_name));
        let gone = events
            .until("the stream's error", |e| e["error"].is_string())
            .await;
        assert_eq!(gone["node"], b_name.as_str());
        let r = get_until(addr, &remote, "B disconnected", |r| r.status == 404).await;
        assert!(r.error().contains("not connected"), "{}", r.body);
        let cluster = get(addr, "/api/cluster").await.json();
        assert_eq!(cluster["nodes"], serde_json::json!([]), "{cluster}");
    });
    drop(b);
}

#[test]
fn an_ember_node_without_a_console_is_a_clear_error() {
    let port = free_port();
    let cookie = random_cookie();
    let a = start_node(&unique("load_c"), &cookie, port, false);
    let b = start_node(&unique("load_d"), &cookie, port, false);
    let b_name = b.name.clone();
    with_node_console(&a, Duration::from_secs(90), move |addr| async move {
        ember_runtime::dist::send_named("nobody", &b_name, Term::from(0));
        let remote = format!("/api/load?node={b_name}");
        let r = get_until(addr, &remote, "B connected", |r| r.status != 404).await;
        assert_eq!(r.status, 502, "{}", r.body);
        assert!(r.error().contains("ember_console:load/0"), "{}", r.body);
    });
    drop(b);
}

#[test]
fn a_console_without_a_node_cannot_show_another() {
    let rt = Runtime::builder().schedulers(1).build().unwrap();
    rt.block_on(async {
        let server = Server::bind(
            "127.0.0.1:0",
            console::mount(Router::new()),
            Config::default(),
        )
        .unwrap();
        let addr = server.local_addr();
        for path in ["/api/load?node=b@h", "/api/load/events?node=b@h"] {
            let r = get(addr, path).await;
            assert_eq!(r.status, 404, "{}", r.body);
            assert!(r.error().contains("not distributed"), "{}", r.body);
        }
        let page = get(addr, "/load").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("id=\"load-node\""), "no node selector");
        server.shutdown().await;
    });
}

#[test]
fn the_load_page_shows_what_an_erl_node_tells() {
    if !erl_required() {
        return;
    }
    let port = free_port();
    let cookie = random_cookie();
    let a = start_node(&unique("load_e"), &cookie, port, false);
    let mut erl = start_erl(&unique("load_erl"), &cookie, port, &[]);
    assert_eq!(erl.eval(&format!("net_adm:ping('{}').", a.name)), "pong");
    let erl_name = erl.name.clone();
    let before: u64 = erl
        .eval("erlang:system_info(process_count).")
        .parse()
        .unwrap();
    // A thousand more processes there.
    erl.eval("[spawn(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, 1000)], ok.");
    with_node_console(&a, Duration::from_secs(90), move |addr| async move {
        let remote = format!("/api/load?node={erl_name}");
        let load = get_until(addr, &remote, "erl's load", |r| r.status == 200)
            .await
            .json();
        assert_eq!(load["kind"], "erlang", "{load}");
        assert_eq!(load["node"], erl_name.as_str());
        assert!(count(&load) >= before + 1000, "{load}");
        assert!(load["memory_bytes"].as_u64().unwrap() > 1_000_000, "{load}");
        let online = load["schedulers_online"].as_u64().unwrap();
        assert!(online >= 1);
        assert!(load["run_queues"].as_array().is_some());
        assert!(load["cpu"].is_null(), "one sample has no CPU share: {load}");
        // The stream keeps a history, and a CPU share from the second
        // sample on.
        let mut events = Events::open(addr, &format!("/api/load/events?node={erl_name}")).await;
        let event = events
            .until("two samples", |e| {
                e["history"].as_array().is_some_and(|h| h.len() >= 2)
            })
            .await;
        let cpu = event["cpu"].as_f64().expect("a CPU share");
        assert!((0.0..=1.0).contains(&cpu), "{event}");
    });
}
