//! The Load page's worker count over a real socket (`docs/console-api.md`,
//! "Load"): the requested count is reached and held exactly while workers
//! crash and are restarted, `starting` turns false, shrinking and growing
//! end on the exact count, and a killed shard supervisor refills itself.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ember_runtime::{exit, registered, ExitReason};
use serde_json::{json, Value};
use support::{host, json_type, with_console};

async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let reply = support::request(addr, method, path, &[host(addr), json_type()], &body).await;
    assert!(
        matches!(reply.status, 200 | 202),
        "{method} {path}: {}\n{}",
        reply.status,
        reply.body
    );
    reply.json()
}

async fn load(addr: SocketAddr) -> Value {
    request(addr, "GET", "/api/load", None).await
}

async fn set(addr: SocketAddr, settings: Value) {
    request(addr, "POST", "/api/load", Some(settings)).await;
}

fn count(load: &Value, key: &str) -> u64 {
    load[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {load}"))
}

/// Polls `GET /api/load` until `done` holds, for up to 120 s.
async fn wait_for(addr: SocketAddr, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let value = load(addr).await;
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "never {what}: {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Samples `GET /api/load` until `crashes` more workers crashed, asserting
/// every sample shows exactly `n` live workers and no more than `n`
/// running. Returns (samples, samples with all `n` running).
async fn hold_exactly(addr: SocketAddr, n: u64, crashes: u64) -> (u64, u64) {
    let first = load(addr).await;
    let until = count(&first, "failures_total") + crashes;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut samples, mut all_running) = (0, 0);
    loop {
        let now = load(addr).await;
        samples += 1;
        assert_eq!(count(&now, "live_workers"), n, "live count not held: {now}");
        assert_eq!(now["starting"], false, "{now}");
        let running = count(&now, "running_workers");
        assert!(running <= n, "more workers running than wanted: {now}");
        if running == n {
            all_running += 1;
        }
        if count(&now, "failures_total") >= until {
            return (samples, all_running);
        }
        assert!(Instant::now() < deadline, "workers stopped crashing: {now}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn load_reaches_and_holds_exactly_the_requested_count_while_workers_crash() {
    with_console(Duration::from_secs(300), |addr| async move {
        const N: u64 = 20_000;
        set(addr, json!({ "workers": N, "failure_rate": 5 })).await;
        let reached = Instant::now();
        wait_for(addr, "reached 20,000 with starting false", |l| {
            count(l, "live_workers") == N && l["starting"] == false
        })
        .await;
        println!("reached {N} in {:?}", reached.elapsed());
        // 5% of 20,000 a second: about a thousand crashes a second.
        let (samples, all_running) = hold_exactly(addr, N, 2_000).await;
        println!(
            "held {N} live over {samples} samples and 2,000 crashes; \
             all {N} running in {all_running} of them"
        );
        assert!(all_running > 0, "restarts never caught up");
        let jobs = count(&load(addr).await, "jobs_total");
        assert!(jobs > N, "workers do their jobs: {jobs}");

        // Shrink, grow again before everyone retired, then stop.
        set(addr, json!({ "workers": 5_000 })).await;
        set(addr, json!({ "workers": 12_000 })).await;
        wait_for(addr, "back to 12,000", |l| {
            count(l, "live_workers") == 12_000 && l["starting"] == false
        })
        .await;
        hold_exactly(addr, 12_000, 500).await;
        set(addr, json!({ "workers": 0, "failure_rate": 0 })).await;
        wait_for(addr, "all stopped", |l| {
            count(l, "live_workers") == 0 && count(l, "running_workers") == 0
        })
        .await;
    });
}

#[test]
fn a_killed_load_shard_supervisor_is_restarted_and_refills_to_the_exact_count() {
    with_console(Duration::from_secs(300), |addr| async move {
        const N: u64 = 8_000;
        set(addr, json!({ "workers": N, "failure_rate": 1 })).await;
        wait_for(addr, "reached 8,000", |l| {
            count(l, "live_workers") == N
                && count(l, "running_workers") == N
                && l["starting"] == false
        })
        .await;
        for round in 0..3 {
            let shard = registered()
                .into_iter()
                .find(|(name, _)| name.ends_with("load_shard_3"))
                .map(|(_, pid)| pid)
                .expect("load_shard_3 is registered");
            exit(shard, ExitReason::Kill);
            let refilled = wait_for(addr, "refilled after the shard was killed", |l| {
                registered()
                    .iter()
                    .any(|(name, pid)| name.ends_with("load_shard_3") && *pid != shard)
                    && count(l, "live_workers") == N
                    && count(l, "running_workers") == N
                    && l["starting"] == false
            })
            .await;
            println!(
                "round {round}: shard killed, refilled to {} live, {} running",
                refilled["live_workers"], refilled["running_workers"]
            );
        }
        hold_exactly(addr, N, 100).await;
        set(addr, json!({ "workers": 0 })).await;
        wait_for(addr, "all stopped", |l| {
            count(l, "live_workers") == 0 && count(l, "running_workers") == 0
        })
        .await;
    });
}
