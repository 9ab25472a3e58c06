//! The Top page of another node (`GET /api/top?node=NAME`, its event
//! stream and `GET /api/processes/<pid>?node=NAME`, `docs/console-api.md`)
//! over a real socket: node A's console shows the busiest processes of
//! node B, an Ember node with a console in the same test process, and is
//! read-only there (a kill is refused, the process lives on).

mod support;

use std::time::{Duration, Instant};

use ember_runtime::{ExitReason, Spawn};
use ember_term::Term;
use ember_testkit::{free_port, random_cookie, unique};
use serde_json::{json, Value};
use support::nodes::{start_node, with_node_console, Events};
use support::{api_get as get, api_get_until as get_until, host, json_type, request};

/// The row of the process spawned as `what` in a Top answer.
fn row<'a>(top: &'a Value, what: &str) -> Option<&'a Value> {
    top["processes"]
        .as_array()?
        .iter()
        .find(|p| p["spawned_as"] == what)
}

#[test]
fn the_top_page_shows_another_ember_nodes_processes_read_only() {
    let port = free_port();
    let cookie = random_cookie();
    let a = start_node(&unique("top_a"), &cookie, port, false);
    let b = start_node(&unique("top_b"), &cookie, port, true);
    let (a_name, b_name) = (a.name.clone(), b.name.clone());
    let b_node = b.node.clone();
    let b_handle = b.rt.handle().clone();
    // A process on B that uses CPU every few milliseconds.
    let burner = b_handle
        .spawn_with(Spawn::new().label("burns"), async {
            loop {
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(2) {
                    std::hint::spin_loop();
                }
                ember_runtime::sleep(Duration::from_millis(5)).await;
            }
        })
        .unwrap()
        .pid;
    let checker = b_handle.clone();
    with_node_console(&a, Duration::from_secs(90), move |addr| async move {
        let remote = format!("/api/top?node={}", b_name.replace('@', "%40"));
        // Not connected yet: a clear 404, and no connection made.
        let r = get(addr, &remote).await;
        assert_eq!(r.status, 404, "{}", r.body);
        assert!(r.error().contains("not connected"), "{}", r.body);
        let r = get(addr, &format!("/api/top/events?node={b_name}")).await;
        assert_eq!(r.status, 404, "{}", r.body);

        ember_runtime::dist::send_named("nobody", &b_name, Term::from(0));
        // B's top, from B's sampler: the burner is among its busiest.
        let top = get_until(addr, &remote, "B's burner in B's top", |r| {
            r.status == 200 && row(&r.json(), "burns").is_some()
        })
        .await
        .json();
        assert_eq!(top["node"], b_name.as_str());
        assert_eq!(top["kind"], "ember");
        for field in ["interval_ms", "schedulers_online", "process_count"] {
            assert!(top.get(field).is_some(), "{field} in {top}");
        }
        let burns = row(&top, "burns").unwrap();
        assert!(burns["cpu_ns"].as_u64().unwrap() > 0, "{burns}");
        let pid = burns["pid"].as_str().unwrap().to_string();
        assert_eq!(pid, burner.to_string());
        let pid_path = pid
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string();

        // This node's own top: the route as before, no `node` field, no
        // burner (it runs on B).
        let own = get_until(addr, "/api/top", "A's top", |r| r.status == 200)
            .await
            .json();
        assert!(own.get("node").is_none(), "{own}");
        assert!(row(&own, "burns").is_none(), "A shows B's process? {own}");
        let by_name = get_until(addr, &format!("/api/top?node={a_name}"), "A by name", |r| {
            r.status == 200
        })
        .await
        .json();
        assert!(by_name.get("node").is_none(), "{by_name}");

        // Its process info, from B.
        let info = get(addr, &format!("/api/processes/{pid_path}?node={b_name}")).await;
        assert_eq!(info.status, 200, "{}", info.body);
        let info = info.json();
        assert_eq!(info["node"], b_name.as_str());
        assert_eq!(info["pid"], pid.as_str());
        assert_eq!(info["spawned_as"], "burns");
        // A's own process of that number, if any, is not B's.
        let here = get(addr, &format!("/api/processes/{pid_path}")).await;
        assert!(
            here.status == 404 || here.json()["spawned_as"] != "burns",
            "{}",
            here.body
        );

        // Read-only: a kill through A is refused and the burner lives on.
        let kill = request(
            addr,
            "POST",
            &format!("/api/processes/{pid_path}/kill?node={b_name}"),
            &[host(addr), json_type()],
            "{}",
        )
        .await;
        assert_eq!(kill.status, 403, "{}", kill.body);
        assert!(kill.error().contains("read-only"), "{}", kill.body);
        assert!(checker.is_alive(burner), "the refused kill killed it");

        // The stream shows B's top too.
        let mut events = Events::open(addr, &format!("/api/top/events?node={b_name}")).await;
        let event = events
            .until("B's burner streamed", |e| row(e, "burns").is_some())
            .await;
        assert_eq!(event["node"], b_name.as_str());

        // Mistakes: a clear 4xx each.
        for (path, status) in [
            ("/api/top?node=nosuch@nowhere".to_string(), 404),
            ("/api/top/events?node=nosuch@nowhere".to_string(), 404),
            ("/api/top?node=no_host".to_string(), 400),
            ("/api/top?node=%zz".to_string(), 400),
            (format!("/api/top?node={}@h", "x".repeat(300)), 400),
            (format!("/api/processes/0.1?node={b_name}"), 400),
            (format!("/api/processes/{pid_path}/x?node={b_name}"), 404),
            (
                format!("/api/processes/{pid_path}?node=nosuch@nowhere"),
                404,
            ),
        ] {
            let r = get(addr, &path).await;
            assert_eq!(r.status, status, "GET {path}: {}", r.body);
            assert!(!r.error().is_empty(), "GET {path}: {}", r.body);
        }

        // The burner dies on B: its info is a 404 from B.
        checker.exit(burner, ExitReason::Kill);
        let gone = get_until(
            addr,
            &format!("/api/processes/{pid_path}?node={b_name}"),
            "the burner's end",
            |r| r.status == 404,
        )
        .await;
        assert!(gone.error().contains("not alive"), "{}", gone.body);

        // B goes away: the stream says so, and asking answers 404.
        assert!(b_node.disconnect(&a_name));
        let gone = events
            .until("the stream's error", |e| e["error"].is_string())
            .await;
        assert_eq!(gone["node"], b_name.as_str());
        let r = get_until(addr, &remote, "B disconnected", |r| r.status == 404).await;
        assert!(r.error().contains("not connected"), "{}", r.body);
        assert_eq!(get(addr, "/api/cluster").await.json()["nodes"], json!([]));
    });
    drop(b);
}

#[test]
fn an_ember_node_without_a_console_has_no_remote_top() {
    let port = free_port();
    let cookie = random_cookie();
    let a = start_node(&unique("top_c"), &cookie, port, false);
    let b = start_node(&unique("top_d"), &cookie, port, false);
    let b_name = b.name.clone();
    with_node_console(&a, Duration::from_secs(60), move |addr| async move {
        ember_runtime::dist::send_named("nobody", &b_name, Term::from(0));
        let remote = format!("/api/top?node={b_name}");
        let r = get_until(addr, &remote, "B connected", |r| r.status != 404).await;
        assert_eq!(r.status, 502, "{}", r.body);
        assert!(r.error().contains("ember_console:top/0"), "{}", r.body);
        let r = get(addr, &format!("/api/processes/0.1.0?node={b_name}")).await;
        assert_eq!(r.status, 502, "{}", r.body);
        // The page has its node selector.
        let page = get(addr, "/top").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("id=\"top-node\""), "no node selector");
    });
    drop(b);
}
