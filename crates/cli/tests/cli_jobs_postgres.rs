//! Two `ember` binaries (real OS processes) with `--database` on one real
//! PostgreSQL server (started by the test in a temporary directory), with a
//! short lease (`EMBER_JOBS_LEASE_MS`):
//!
//! * a node killed with SIGKILL mid-job has its jobs taken over and run to
//!   the end by the other once its lease expires;
//! * a node stopped (SIGSTOP) past its lease is fenced out: the other node
//!   takes its jobs over, and when it runs again its late writes are
//!   refused, so every job ends `succeeded` once, by the node that holds it;
//! * throughout, each job runs on one node at a time: its state events
//!   never show two attempts open at once, and `node` in
//!   `GET /api/jobs/ID` names the node that ran it.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ember_testkit::postgres::{required, TempPostgres};
use serde_json::Value;
use support::jobs::{request, JobsNode as Node};

const LEASE_MS: u64 = 1500;
const DEADLINE: Duration = Duration::from_secs(60);

/// A node on the database at `url` as jobs node `name`, with the short
/// lease, its stderr (lost leases, refused outcomes) kept.
fn start(url: &str, name: &str, data: &ember_testkit::TempDir) -> Node {
    let lease = LEASE_MS.to_string();
    Node::start(
        &[
            "--data",
            &data.arg(),
            "--database",
            url,
            "--jobs-node",
            name,
        ],
        &[("RUST_LOG", "warn"), ("EMBER_JOBS_LEASE_MS", &lease)],
        true,
    )
}

fn enqueue(node: &Node, seconds: f64) -> i64 {
    let (status, body) = request(
        node.addr,
        "POST",
        "/api/jobs",
        &format!(r#"{{"kind": "llm", "args": {{"seconds": {seconds}}}}}"#),
    );
    assert_eq!(status, 202, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["id"].as_i64().expect("an id")
}

fn job(addr: SocketAddr, id: i64) -> Value {
    let (status, body) = request(addr, "GET", &format!("/api/jobs/{id}"), "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `ok` holds for every job of `ids` (read through `addr`).
fn wait_all(addr: SocketAddr, ids: &[i64], what: &str, ok: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let jobs: Vec<Value> = ids.iter().map(|&id| job(addr, id)).collect();
        if jobs.iter().all(&ok) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "jobs not {what} within {DEADLINE:?}: {jobs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn running_on(name: &'static str) -> impl Fn(&Value) -> bool {
    move |j| j["state"] == "running" && j["node"] == name
}

fn succeeded_on(name: &'static str) -> impl Fn(&Value) -> bool {
    move |j| j["state"] == "succeeded" && j["node"] == name
}

#[test]
fn two_nodes_share_a_queue_take_over_a_killed_node_and_fence_out_a_stopped_one() {
    if !required() {
        return;
    }
    let pg = TempPostgres::start();
    let url = pg.url();
    let (da, db, dc) = (
        ember_testkit::TempDir::new("ember-pg-a"),
        ember_testkit::TempDir::new("ember-pg-b"),
        ember_testkit::TempDir::new("ember-pg-c"),
    );

    // 1. A runs jobs alone; B starts; A is killed mid-job: B takes over
    //    once A's lease expires.
    let a = start(&url, "a@test", &da);
    let first: Vec<i64> = (0..5).map(|_| enqueue(&a, 3.0)).collect();
    wait_all(a.addr, &first, "running on a", running_on("a@test"));
    let b = start(&url, "b@test", &db);
    // Each job's lease as the kill comes: A can only have renewed it since
    // (a renewal moves it later), so no take-over may come before it.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let leases: Vec<(i64, i64)> = first
        .iter()
        .map(|&id| {
            let until: i64 = client
                .query_one("SELECT lease_until FROM ember_jobs WHERE id = $1", &[&id])
                .unwrap()
                .get(0);
            (id, until)
        })
        .collect();
    a.signal("-KILL");
    drop(a);
    wait_all(b.addr, &first, "succeeded on b", succeeded_on("b@test"));
    for &id in &first {
        assert_eq!(job(b.addr, id)["attempt"], 2, "run again once, on b");
    }

    // 2. C runs jobs while B is stopped (so C claims them all); then C is
    //    stopped past its lease: B takes them over; C, resumed, is refused.
    let c = start(&url, "c@test", &dc);
    b.signal("-STOP");
    let second: Vec<i64> = (0..5).map(|_| enqueue(&c, 2.0)).collect();
    wait_all(c.addr, &second, "running on c", running_on("c@test"));
    b.signal("-CONT");
    c.signal("-STOP");
    wait_all(b.addr, &second, "succeeded on b", succeeded_on("b@test"));
    c.signal("-CONT");
    // C's jobs ran out their time while it was stopped: on resuming, each
    // either tries to record its result (refused: fenced) or is stopped by
    // C's heartbeat, which finds the lease gone, whichever comes first.
    // Wait until C has said one or the other of every job.
    let mut told: Vec<i64> = Vec::new();
    while told.len() < second.len() {
        let line = c.wait_log(&["outcome refused", "lost its lease"], DEADLINE);
        println!("c: {line}");
        for &id in &second {
            if line.contains(&format!("job {id} ")) && !told.contains(&id) {
                told.push(id);
            }
        }
    }
    for &id in &second {
        let j = job(c.addr, id);
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(
            j["node"], "b@test",
            "the fenced-out node wrote nothing: {j}"
        );
    }

    // 3. The store: every job succeeded exactly once, and no job ever had
    //    two attempts open at once.
    drop(c);
    drop(b);
    let all: Vec<i64> = first.iter().chain(&second).copied().collect();
    for &id in &all {
        let row = client
            .query_one(
                "SELECT state, completions FROM ember_jobs WHERE id = $1",
                &[&id],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "succeeded");
        assert_eq!(row.get::<_, i32>(1), 1, "job {id} completed once");
        let states: Vec<String> = client
            .query(
                "SELECT data FROM ember_job_events WHERE job_id = $1 AND type = 'state' \
                 ORDER BY seq",
                &[&id],
            )
            .unwrap()
            .iter()
            .map(|r| {
                let v: Value = serde_json::from_str(&r.get::<_, String>(0)).unwrap();
                v["state"].as_str().unwrap().to_owned()
            })
            .collect();
        let mut open = false;
        for s in &states {
            if s == "running" {
                assert!(!open, "job {id} had two attempts at once: {states:?}");
                open = true;
            } else {
                open = false;
            }
        }
        if let Some(&(_, lease_until)) = leases.iter().find(|(j, _)| *j == id) {
            // Taken back only once A's lease ran out.
            let taken: i64 = client
                .query_one(
                    "SELECT MIN(at) FROM ember_job_events WHERE job_id = $1 AND type = 'state' \
                     AND data LIKE '%\"retrying\"%'",
                    &[&id],
                )
                .unwrap()
                .get(0);
            assert!(
                taken >= lease_until,
                "job {id} taken over at {taken}, before A's lease expired at {lease_until}"
            );
        }
        assert_eq!(
            states.iter().filter(|s| *s == "succeeded").count(),
            1,
            "job {id}: {states:?}"
        );
    }
}
