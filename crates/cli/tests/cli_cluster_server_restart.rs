//! The `ember` binary's cluster server (`ember_cluster`) is supervised
//! (`ember_cluster_sup`): killed through the console, it is restarted, and
//! the node's services, members and calls carry on (two binaries, run as
//! a user would; every wait has a deadline).

use std::time::{Duration, Instant};

mod support;

use support::{eventually, http, Ember};

use ember_testkit::{free_port, random_cookie, unique, DEADLINE};
use serde_json::Value;

/// Calls `name` through `e` until it answers 200 (503 with Retry-After
/// meanwhile); the reply and how long it took.
fn call_until_answered(e: &Ember, name: &str) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let r = http(e.addr, "POST", &format!("/api/services/{name}/call"), None);
        match r.status {
            200 => return (r.json(), start.elapsed()),
            503 => assert!(r.head.contains("retry-after:"), "503 without Retry-After"),
            other => panic!("calling {name}: {other} {}", r.body),
        }
        assert!(start.elapsed() < DEADLINE, "{name} never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pid (`0.N.0`) of the process registered as `name` on `e`, found
/// through the console's `GET /api/processes/<pid>`.
fn registered(e: &Ember, name: &str) -> Option<String> {
    (1..=600).map(|n| format!("0.{n}.0")).find(|pid| {
        let r = http(e.addr, "GET", &format!("/api/processes/{pid}"), None);
        r.status == 200 && r.json()["name"] == name
    })
}

/// Whether `e` knows the service `name` (`GET /api/services` lists it): a
/// spec recorded on one member reaches the others a message later, and a
/// call to a name a member does not know yet is answered 404.
fn knows(e: &Ember, name: &str) -> bool {
    let r = http(e.addr, "GET", "/api/services", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
        .as_array()
        .is_some_and(|all| all.iter().any(|s| s["name"] == name))
}

fn members(e: &Ember) -> usize {
    let r = http(e.addr, "GET", "/api/node", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["members"].as_array().map_or(0, Vec::len)
}

#[test]
fn a_killed_cluster_server_is_restarted_and_services_carry_on() {
    let port = free_port();
    let cookie = random_cookie();
    let a = Ember::start(&unique("sup_a"), &cookie, port, None);
    let b = Ember::start(&unique("sup_b"), &cookie, port, Some(&a.node));
    eventually("two members on both", || {
        members(&a) == 2 && members(&b) == 2
    });
    let created = http(a.addr, "POST", "/api/services", Some(r#"{"name": "s1"}"#));
    assert_eq!(created.status, 201, "{}", created.body);
    eventually("b knows s1", || knows(&b, "s1"));
    let (reply, _) = call_until_answered(&b, "s1");
    assert_eq!(reply["calls"], 1);
    let runs_on = reply["node"].as_str().unwrap().to_string();
    let x = if runs_on == a.node { &a } else { &b };
    let y = if runs_on == a.node { &b } else { &a };

    // Kill the server of the node that runs s1, through its console.
    let old = registered(x, "ember_cluster").expect("the cluster server runs");
    assert!(
        registered(x, "ember_cluster_sup").is_some(),
        "no supervisor"
    );
    let killed = http(
        x.addr,
        "POST",
        &format!("/api/processes/{old}/kill"),
        Some("{}"),
    );
    assert_eq!(killed.status, 200, "{}", killed.body);
    assert_eq!(killed.json()["alive"], false);
    eventually("a new cluster server", || {
        registered(x, "ember_cluster").is_some_and(|new| new != old)
    });

    // Same members; s1 runs where it ran and kept its count; the API
    // works from both nodes, creating a service included.
    eventually("two members on both again", || {
        members(&a) == 2 && members(&b) == 2
    });
    let (reply, _) = call_until_answered(x, "s1");
    assert_eq!(
        (reply["node"].as_str(), reply["calls"].as_i64()),
        (Some(runs_on.as_str()), Some(2))
    );
    let (reply, _) = call_until_answered(y, "s1");
    assert_eq!(reply["calls"], 3);
    let created = http(y.addr, "POST", "/api/services", Some(r#"{"name": "s2"}"#));
    assert_eq!(created.status, 201, "{}", created.body);
    eventually("x knows s2", || knows(x, "s2"));
    assert_eq!(call_until_answered(x, "s2").0["calls"], 1);
    assert_eq!(call_until_answered(y, "s2").0["calls"], 2);
}
