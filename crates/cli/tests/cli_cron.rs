//! `ember --cron` as a real OS process: an every-second entry makes jobs
//! that run, `GET /api/cron` shows it; the node killed with SIGKILL and
//! started again on the same `--data` repeats no slot; a bad entry stops
//! the binary at start with a message naming it.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::jobs::{request, JobsNode};

const ENTRY: &str = r#"tick=* * * * * *:fact:{"n": 3}"#;

fn start(data: &str, cron: &str) -> (JobsNode, SocketAddr) {
    let node = JobsNode::start(
        &["--data", data, "--cron", cron],
        &[("RUST_LOG", "error")],
        false,
    );
    let addr = node.addr;
    (node, addr)
}

/// `GET path`: the status and JSON body.
fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = request(addr, "GET", path, "");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Polls `GET /api/cron` (20 ms apart, for at most 20 s) until the entry's
/// last job has succeeded and is at least `after`; that job's slot.
fn wait_for_tick(addr: SocketAddr, after: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(addr, "/api/cron");
        assert_eq!(status, 200, "{body}");
        let tick = &body["entries"][0];
        assert_eq!(tick["name"], "tick", "{body}");
        assert_eq!(tick["expression"], "* * * * * *");
        if let (Some(slot), Some(id)) = (tick["last_slot"].as_i64(), tick["last_job"].as_i64()) {
            if slot > after {
                let (_, job) = get(addr, &format!("/api/jobs/{id}"));
                if job["state"] == "succeeded" {
                    assert_eq!(job["kind"], "fact");
                    assert_eq!(job["run_at"].as_i64(), Some(slot));
                    return slot;
                }
            }
        }
        assert!(Instant::now() < deadline, "no tick after {after}: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cron_entries_fire_once_per_slot_across_a_kill_and_restart() {
    let data = ember_testkit::TempDir::new("ember-cli-cron");
    let (mut node, addr) = start(&data.arg(), ENTRY);
    let first = wait_for_tick(addr, 0);
    let second = wait_for_tick(addr, first);
    assert!(second > first);
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    drop(node);
    let (node, addr) = start(&data.arg(), ENTRY);
    let (_, body) = get(addr, "/api/cron");
    let last = body["entries"][0]["last_slot"].as_i64().expect("kept");
    assert!(last >= second, "{body}");
    wait_for_tick(addr, last);
    // Every slot made one job: no run_at twice among the entry's jobs.
    let (_, jobs) = get(addr, "/api/jobs?limit=1000");
    let jobs = jobs.as_array().expect("a list");
    let slots: Vec<i64> = jobs
        .iter()
        .filter(|j| j["kind"] == "fact")
        .map(|j| j["run_at"].as_i64().unwrap())
        .collect();
    let distinct: HashSet<_> = slots.iter().collect();
    assert!(slots.len() >= 3, "{slots:?}");
    assert_eq!(distinct.len(), slots.len(), "a slot ran twice: {slots:?}");
    drop(node);
}

#[test]
fn a_bad_cron_entry_stops_the_binary_at_start() {
    let data = ember_testkit::TempDir::new("ember-cli-cron-bad");
    for (cron, why) in [
        (r#"bad=* * *:fact:{"n": 3}"#, "invalid cron expression"),
        (r#"bad=* * * * *:nope:{}"#, "unknown job kind"),
        ("bad=* * * * *:fact:not json", "ARGS is not JSON"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ember"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--data",
                &data.arg(),
                "--cron",
                cron,
            ])
            .env("RUST_LOG", "error")
            .output()
            .expect("the ember binary runs");
        assert!(!out.status.success(), "{cron} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{cron}: {err}");
    }
}
