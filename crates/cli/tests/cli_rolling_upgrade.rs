//! A rolling upgrade of the demo binary, run as a user would: node A runs
//! version 1 of the `counter` kind and serves a service with state; node B
//! joins running version 2 (`EMBER_DEMO_SERVICE_VERSION=2`, the demo's
//! stand-in for a newer build); A stops gracefully, asked through B
//! (`POST /api/node/stop` with `{"node": A}`), and the service answers from B with its count
//! migrated by `code_change`. A client calls it in a loop through B the
//! whole time: every call answers 200, or 503 with `Retry-After` while the
//! service moves (bounded in number and in time), and no answered call is
//! lost (the counts are consecutive). Every wait has a deadline.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_cluster::placement;
use ember_term::Atom;
use ember_testkit::{free_port, random_cookie, unique, DEADLINE};
use serde_json::Value;
use support::{eventually, http, Ember};

/// What the client loop saw.
#[derive(Debug, Default)]
struct Seen {
    /// The `calls` of every 200, in order.
    counts: Vec<i64>,
    /// The replies, in order.
    replies: Vec<Value>,
    /// 503s with `Retry-After`.
    retries: usize,
    /// The longest run of consecutive 503s.
    longest_retry_window: Duration,
}

#[test]
fn a_rolling_upgrade_migrates_the_state_and_clients_see_only_retries() {
    let port = free_port();
    let cookie = random_cookie();
    let a_alive = unique("a");
    let b_alive = unique("b");
    let mut a = Ember::start_with(
        &a_alive,
        &cookie,
        port,
        None,
        &[("EMBER_DEMO_SERVICE_VERSION", "1")],
    );
    let host = a.node.split_once('@').unwrap().1.to_string();
    let b_node = format!("{b_alive}@{host}");
    // A name that A keeps when B joins (no rebalancing before the stop).
    let members = [Atom::new(&a.node), Atom::new(&b_node)];
    let name = (0..)
        .map(|i| format!("orders{i}"))
        .find(|n| placement::owner(n, &members).unwrap().as_str() == a.node)
        .unwrap();
    let r = http(
        a.addr,
        "POST",
        "/api/services",
        Some(&format!(r#"{{"name": "{name}"}}"#)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    for i in 1..=5 {
        let r = http(a.addr, "POST", &format!("/api/services/{name}/call"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["calls"], i);
        assert_eq!(v["version"], 1);
    }
    let b = Ember::start_with(
        &b_alive,
        &cookie,
        port,
        Some(&a.node),
        &[("EMBER_DEMO_SERVICE_VERSION", "2")],
    );
    assert_eq!(b.node, b_node);
    eventually("B sees the service on A", || {
        let r = http(b.addr, "GET", "/api/services", None);
        r.status == 200
            && r.json().as_array().is_some_and(|l| {
                l.iter()
                    .any(|s| s["name"] == name.as_str() && s["node"] == a.node.as_str())
            })
    });
    // The client: calls through B until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    // Answers the client got from the service on B.
    let answered_by_b = Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, name, addr) = (stop.clone(), name.clone(), b.addr);
        let (answered, answered_by_b) = (answered.clone(), answered_by_b.clone());
        let b_node = b.node.clone();
        std::thread::spawn(move || {
            let mut seen = Seen::default();
            let mut retrying_since: Option<Instant> = None;
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                assert!(started.elapsed() < DEADLINE * 2, "the client never stopped");
                let r = http(addr, "POST", &format!("/api/services/{name}/call"), None);
                match r.status {
                    200 => {
                        if let Some(since) = retrying_since.take() {
                            seen.longest_retry_window =
                                seen.longest_retry_window.max(since.elapsed());
                        }
                        let v = r.json();
                        if v["node"] == b_node.as_str() {
                            answered_by_b.fetch_add(1, Ordering::Relaxed);
                        }
                        seen.counts.push(v["calls"].as_i64().expect("calls"));
                        seen.replies.push(v);
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    503 => {
                        assert!(r.head.contains("retry-after:"), "503 without Retry-After");
                        seen.retries += 1;
                        retrying_since.get_or_insert_with(Instant::now);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    other => panic!("the client got {other}: {}", r.body),
                }
            }
            if let Some(since) = retrying_since {
                seen.longest_retry_window = seen.longest_retry_window.max(since.elapsed());
            }
            seen
        })
    };
    // Let the client reach v1 on A (through B) a few times.
    eventually("the client's first answers", || {
        answered.load(Ordering::Relaxed) >= 10
    });
    // B knows both members; stopping a node that is no member is a 404.
    let r = http(b.addr, "GET", "/api/node", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let mut both = vec![a.node.clone(), b.node.clone()];
    both.sort();
    assert_eq!(r.json()["members"], serde_json::json!(both));
    assert_eq!(r.json()["node"], b.node.as_str());
    let r = http(
        b.addr,
        "POST",
        "/api/node/stop",
        Some(r#"{"node": "nobody@nowhere"}"#),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // Stop A gracefully, through B (as the console's Services page does).
    let r = http(
        b.addr,
        "POST",
        "/api/node/stop",
        Some(&format!(r#"{{"node": "{}"}}"#, a.node)),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let said = a.wait_exit();
    assert!(
        said.iter().any(|l| l.contains("left the cluster")),
        "{said:?}"
    );
    eventually("the service lives on B", || {
        let r = http(b.addr, "GET", "/api/services", None);
        r.status == 200
            && r.json().as_array().is_some_and(|l| {
                l.iter()
                    .any(|s| s["name"] == name.as_str() && s["node"] == b.node.as_str())
            })
    });
    // And answers from there a few times more.
    let answered_on_b = |seen_from: &str| {
        let r = http(b.addr, "POST", &format!("/api/services/{name}/call"), None);
        r.status == 200 && r.json()["node"] == seen_from
    };
    eventually("answers from B", || answered_on_b(&b.node));
    // The client too: it may still be waiting out a retry, or its call in
    // flight may have gone to A, when the test's own call reaches B.
    eventually("the client's answers from B", || {
        answered_by_b.load(Ordering::Relaxed) >= 3
    });
    stop.store(true, Ordering::Relaxed);
    let seen = client
        .join()
        .expect("the client saw only 200s and retryable 503s");
    eprintln!(
        "client: {} answers, {} retries, longest retry window {:?}",
        seen.counts.len(),
        seen.retries,
        seen.longest_retry_window
    );
    // No answered call lost, none counted twice: consecutive counts.
    assert!(!seen.counts.is_empty());
    for w in seen.counts.windows(2) {
        assert!(
            w[1] > w[0],
            "counts went backwards across the upgrade: {:?}",
            seen.counts
        );
    }
    let on_a = seen
        .replies
        .iter()
        .filter(|v| v["node"] == a.node.as_str())
        .count();
    let on_b: Vec<&Value> = seen
        .replies
        .iter()
        .filter(|v| v["node"] == b.node.as_str())
        .collect();
    assert!(on_a > 0, "the client never reached v1 on A");
    assert!(!on_b.is_empty(), "the client never reached v2 on B");
    for v in &on_b {
        assert_eq!(v["version"], 2, "{v}");
        assert_eq!(
            v["upgraded_from"], 1,
            "state not migrated by code_change: {v}"
        );
    }
    // The documented retry window: 503s only while the service moves.
    assert!(
        seen.longest_retry_window < Duration::from_secs(5),
        "clients retried for {:?}",
        seen.longest_retry_window
    );
    assert!(seen.retries < 250, "{} retries", seen.retries);
    // The count continued: the last answer counts every answer before it.
    let r = http(b.addr, "POST", &format!("/api/services/{name}/call"), None);
    assert_eq!(r.status, 200);
    let last = r.json();
    let answered = 5 + seen.counts.len() as i64 + 1;
    assert!(
        last["calls"].as_i64().unwrap() >= answered,
        "calls {} < {answered} answered: state lost",
        last["calls"]
    );
}
