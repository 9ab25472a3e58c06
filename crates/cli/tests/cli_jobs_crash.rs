//! The `ember` binary as a real OS process: 1,000 jobs enqueued over HTTP,
//! the node killed with SIGKILL while they run, then started again on the
//! same `--data` directory. Every job ends `succeeded` exactly once in the
//! store (one completion, one `succeeded` event), none is lost, none is left
//! `running`, and the jobs the kill interrupted were run again (by the
//! restarted node, with a larger limit on the queue).

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::jobs::{request, JobsNode};

const JOBS: usize = 1000;

/// The `default` queue's concurrency after the restart: the recovery is
/// the same with 10 (the default) at once, only slower.
const LIMIT_AFTER_RESTART: &str = "default=100";

fn start(data: &str, extra: &[&str]) -> (JobsNode, SocketAddr) {
    let args: Vec<&str> = ["--data", data].iter().chain(extra).copied().collect();
    let node = JobsNode::start(&args, &[("RUST_LOG", "error")], false);
    let addr = node.addr;
    (node, addr)
}

/// The ids of all jobs in `state`, paging through `GET /api/jobs`.
fn ids_in(addr: SocketAddr, state: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let (status, body) = request(
            addr,
            "GET",
            &format!("/api/jobs?state={state}&limit=1000&after={after}"),
            "",
        );
        assert_eq!(status, 200, "{body}");
        let page: Vec<Value> = serde_json::from_str(&body).expect("a JSON array");
        if page.is_empty() {
            return ids;
        }
        for job in &page {
            assert_eq!(job["state"], state);
            ids.push(job["id"].as_i64().unwrap());
        }
        after = *ids.last().unwrap();
    }
}

#[test]
fn a_node_killed_mid_run_loses_no_job_and_completes_each_once() {
    let data = ember_testkit::TempDir::new("ember-jobs-crash");
    // Ten at a time (the default queue's default), a third of a second
    // each: the enqueues run far ahead of the jobs.
    let (mut node, addr) = start(&data.arg(), &[]);
    let mut enqueued = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        let (status, body) = request(
            addr,
            "POST",
            "/api/jobs",
            r#"{"kind": "llm", "args": {"seconds": 0.3}, "queue": "default"}"#,
        );
        assert_eq!(status, 202, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        enqueued.push(v["id"].as_i64().expect("an id"));
    }
    // Kill it once a tenth has run, while jobs are running.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (done_before, running_at_kill) = loop {
        let done = ids_in(addr, "succeeded").len();
        let running = ids_in(addr, "running").len();
        if done >= JOBS / 10 && running > 0 {
            break (done, running);
        }
        assert!(done < JOBS, "every job finished before the kill");
        assert!(Instant::now() < deadline, "only {done} jobs ran in 120 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    node.child.kill().expect("SIGKILL");
    node.child.wait().unwrap();
    drop(node);
    println!("killed with {done_before} succeeded and {running_at_kill} running");
    assert!(done_before < JOBS, "the kill came after every job finished");

    let (mut node, addr) = start(&data.arg(), &["--queue", LIMIT_AFTER_RESTART]);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = ids_in(addr, "succeeded").len();
        if done == JOBS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {JOBS} jobs succeeded 300 s after the restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for state in [
        "running",
        "queued",
        "retrying",
        "failed",
        "cancelled",
        "scheduled",
    ] {
        assert_eq!(ids_in(addr, state), Vec::<i64>::new(), "jobs left {state}");
    }
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    drop(node);

    // The store itself.
    let db = rusqlite::Connection::open(data.path().join("jobs.db")).unwrap();
    let ids: HashSet<i64> = {
        let mut stmt = db.prepare("SELECT id FROM jobs").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        ids,
        enqueued.iter().copied().collect(),
        "no job lost or added"
    );
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT COUNT(*) FROM jobs WHERE state = 'succeeded' AND completions = 1"),
        JOBS as i64
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM (SELECT job_id, COUNT(*) AS n FROM job_events \
             WHERE type = 'state' AND json_extract(data, '$.state') = 'succeeded' \
             GROUP BY job_id HAVING n = 1)"
        ),
        JOBS as i64,
        "one succeeded event per job"
    );
    let rerun = count("SELECT COUNT(*) FROM jobs WHERE attempt >= 2");
    assert!(
        rerun >= 1,
        "the jobs running at the kill were run again ({running_at_kill} were running)"
    );
    println!("{rerun} jobs ran again after the restart");
}
