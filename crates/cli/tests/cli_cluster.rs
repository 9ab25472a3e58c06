//! Three `ember` binaries as one cluster, run as a user would
//! (`--sname`, `--join`), driven over the HTTP API: placement seen alike
//! from every node, calls, a node killed with SIGKILL (its services answer
//! again from survivors within 5 s), a graceful stop over
//! `POST /api/node/stop` that keeps the services' call counts, and the
//! API's error statuses.
//!
//! The first node starts the embedded port mapper on a port of its own
//! (`ERL_EPMD_PORT`) and the others register with it, so it is never the
//! node killed. Every wait has a deadline.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use ember_cluster::placement;
use ember_term::Atom;
use ember_testkit::{erl_required, free_port, random_cookie, start_erl, unique, DEADLINE};
use serde_json::Value;
use support::{eventually, http, Ember};

/// `GET /api/services`, as (name, node, pid) triples.
fn listing(e: &Ember) -> Vec<(String, Option<String>, Option<String>)> {
    let r = http(e.addr, "GET", "/api/services", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["node"].as_str().map(str::to_string),
                s["pid"].as_str().map(str::to_string),
            )
        })
        .collect()
}

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

#[test]
fn three_binaries_place_fail_over_and_hand_over_services() {
    let port = free_port();
    let cookie = random_cookie();
    let a = Ember::start(&unique("a"), &cookie, port, None);
    let mut b = Ember::start(&unique("b"), &cookie, port, Some(&a.node));
    // A seed without a host gets the node's own host.
    let seed = a.node.split('@').next().unwrap().to_string();
    let c = Ember::start(&unique("c"), &cookie, port, Some(&seed));
    // Names that put at least two services on each node.
    let members: Vec<Atom> = [&a, &b, &c].iter().map(|e| Atom::new(&e.node)).collect();
    let mut names: Vec<String> = Vec::new();
    for i in 0.. {
        let owned = |m: &Atom| {
            names
                .iter()
                .filter(|n| placement::owner(n, &members) == Some(m))
                .count()
        };
        if members.iter().all(|m| owned(m) >= 2) {
            break;
        }
        let n = format!("svc{i}");
        let owner = placement::owner(&n, &members).unwrap();
        if owned(owner) < 2 || names.len() < 6 {
            names.push(n);
        }
    }
    let count = names.len();
    for n in &names {
        let r = http(
            a.addr,
            "POST",
            "/api/services",
            Some(&format!(r#"{{"name": "{n}"}}"#)),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let v = r.json();
        assert_eq!(v["name"], n.as_str());
        assert!(v["node"].is_string() && v["pid"].is_string(), "{v}");
    }
    // Errors.
    let dup = http(a.addr, "POST", "/api/services", Some(r#"{"name": "svc0"}"#));
    assert_eq!(dup.status, 409);
    assert_eq!(
        http(a.addr, "POST", "/api/services", Some("{}")).status,
        400
    );
    assert_eq!(
        http(b.addr, "POST", "/api/services/nope/call", None).status,
        404
    );
    // Converged: the same listing everywhere, services on all three nodes.
    let nodes: BTreeSet<String> = [&a, &b, &c].iter().map(|e| e.node.clone()).collect();
    eventually("the same placement on every node, over three nodes", || {
        let (la, lb, lc) = (listing(&a), listing(&b), listing(&c));
        let used: BTreeSet<String> = la.iter().filter_map(|s| s.1.clone()).collect();
        la == lb
            && lb == lc
            && la.len() == count
            && la.iter().all(|s| s.2.is_some())
            && used == nodes
    });
    let placed = listing(&a);
    for (name, node, _) in &placed {
        let (v, _) = call_until_answered(&b, name);
        let node = node.as_deref().unwrap();
        assert_eq!(v["reply"], format!("response from {name} on {node}"));
        assert_eq!(v["node"], node);
        assert_eq!(v["calls"], 1);
    }
    // SIGKILL c: its services answer again from survivors within 5 s.
    let on_c: Vec<String> = placed
        .iter()
        .filter(|s| s.1.as_deref() == Some(c.node.as_str()))
        .map(|s| s.0.clone())
        .collect();
    let c_node = c.node.clone();
    drop(c);
    for name in &on_c {
        let (v, waited) = call_until_answered(&a, name);
        assert_ne!(v["node"], c_node.as_str());
        assert_eq!(v["calls"], 1, "a fresh instance after a crash");
        assert!(waited < Duration::from_secs(5), "{name} took {waited:?}");
        eprintln!("{name} answered again after {waited:?}");
    }
    // b stops gracefully: its services keep their counts.
    let on_b: Vec<(String, i64)> = listing(&a)
        .into_iter()
        .filter(|s| s.1.as_deref() == Some(b.node.as_str()))
        .map(|s| {
            let (v, _) = call_until_answered(&a, &s.0);
            (s.0, v["calls"].as_i64().unwrap())
        })
        .collect();
    assert!(!on_b.is_empty());
    let r = http(b.addr, "POST", "/api/node/stop", None);
    assert_eq!(r.status, 202);
    let said = b.wait_exit();
    assert!(
        said.iter().any(|l| l.contains("left the cluster")),
        "{said:?}"
    );
    for (name, calls) in &on_b {
        let (v, _) = call_until_answered(&a, name);
        assert_eq!(v["node"], a.node.as_str());
        assert_eq!(v["calls"], calls + 1, "{name} lost its count");
    }
    // Delete.
    let r = http(a.addr, "DELETE", "/api/services/svc0", None);
    assert_eq!(r.status, 204);
    assert!(listing(&a).iter().all(|s| s.0 != "svc0"));
    assert_eq!(
        http(a.addr, "POST", "/api/services/svc0/call", None).status,
        404
    );
    assert_eq!(
        http(a.addr, "DELETE", "/api/services/svc0", None).status,
        404
    );
}

#[test]
fn a_connected_erl_node_is_no_member_and_stays_healthy() {
    if !erl_required() {
        return;
    }
    let port = free_port();
    let cookie = random_cookie();
    let a = Ember::start(&unique("a"), &cookie, port, None);
    let mut erl = start_erl(&unique("erl"), &cookie, port, &[]);
    assert_eq!(erl.eval(&format!("net_adm:ping('{}').", a.node)), "pong");
    // global completes, and nothing Ember sends upsets erl's kernel.
    assert_eq!(erl.eval("global:sync()."), "ok");
    for i in 0..5 {
        let r = http(
            a.addr,
            "POST",
            "/api/services",
            Some(&format!(r#"{{"name": "e{i}"}}"#)),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        // Only Ember nodes are members: everything runs on a.
        assert_eq!(r.json()["node"], a.node.as_str());
    }
    let (v, _) = call_until_answered(&a, "e0");
    assert_eq!(v["calls"], 1);
    assert_eq!(
        erl.eval(&format!("lists:member('{}', nodes()).", a.node)),
        "true"
    );
    assert_eq!(erl.eval("global:sync()."), "ok");
    assert!(erl.alive());
}

#[test]
fn sigterm_hands_the_services_over_before_the_node_stops() {
    let port = free_port();
    let cookie = random_cookie();
    let a = Ember::start(&unique("a"), &cookie, port, None);
    let mut b = Ember::start(&unique("b"), &cookie, port, Some(&a.node));
    let members = [Atom::new(&a.node), Atom::new(&b.node)];
    let name = (0..)
        .map(|i| format!("t{i}"))
        .find(|n| placement::owner(n, &members).map(Atom::as_str) == Some(b.node.as_str()))
        .unwrap();
    let r = http(
        a.addr,
        "POST",
        "/api/services",
        Some(&format!(r#"{{"name": "{name}"}}"#)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    eventually("placed on b", || {
        listing(&a).first().and_then(|s| s.1.clone()).as_deref() == Some(b.node.as_str())
    });
    for calls in 1..=3 {
        let (v, _) = call_until_answered(&a, &name);
        assert_eq!(v["calls"], calls);
        assert_eq!(v["node"], b.node.as_str());
    }
    let pid = b.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let said = b.wait_exit();
    assert!(
        said.iter().any(|l| l.contains("left the cluster")),
        "{said:?}"
    );
    let (v, _) = call_until_answered(&a, &name);
    assert_eq!(v["node"], a.node.as_str());
    assert_eq!(v["calls"], 4, "the count moved with the service");
}
