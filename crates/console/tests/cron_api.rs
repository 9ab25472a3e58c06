//! `GET /api/cron`: the cron entries of the node, with their next slot and
//! the last slot fired and its job, on a real SQLite store with the demo
//! kinds.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ember_console::jobs;
use ember_jobs::{EnqueueOptions, Jobs, JobsConfig, SqliteStore};
use ember_web::{Config, Router, Server};
use serde_json::{json, Value};
use support::{host, request, run};

async fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let r = request(addr, "GET", path, &[host(addr)], "").await;
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

#[test]
fn the_cron_route_lists_entries_with_next_and_last_slots() {
    run(2, async {
        let dir = ember_testkit::TempDir::new("ember-web-cron");
        let store = SqliteStore::open(dir.path().join("jobs.db")).unwrap();
        let j = jobs::demo_kinds(Jobs::builder(store, JobsConfig::default()))
            .cron(
                "nightly",
                "0 3 * * *",
                "fact",
                json!({"n": 5}),
                EnqueueOptions::default(),
            )
            .cron(
                "tick",
                "* * * * * *",
                "fact",
                json!({"n": 3}),
                EnqueueOptions::default(),
            )
            .start()
            .await
            .unwrap();
        let router = jobs::routes(Router::new(), j.clone());
        let server = Server::bind("127.0.0.1:0", router, Config::default()).unwrap();
        let addr = server.local_addr();

        let (status, body) = get_json(addr, "/api/cron").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["node"], "nonode@nohost");
        let nightly = &body["entries"][0];
        assert_eq!(nightly["name"], "nightly");
        assert_eq!(nightly["expression"], "0 3 * * *");
        assert_eq!(nightly["kind"], "fact");
        assert_eq!(nightly["args"], json!({"n": 5}));
        assert_eq!(nightly["queue"], Value::Null);
        assert_eq!(nightly["last_slot"], Value::Null);
        assert_eq!(nightly["last_job"], Value::Null);
        let next = nightly["next_run"].as_i64().expect("a next run");
        assert_eq!(next % 86_400_000, 3 * 3_600_000, "03:00 UTC: {next}");
        assert!(next > ember_jobs::now_ms());

        // The every-second entry fires; its job runs and shows in the jobs API.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (slot, id) = loop {
            let (_, body) = get_json(addr, "/api/cron").await;
            let tick = &body["entries"][1];
            assert_eq!(tick["name"], "tick");
            if let (Some(slot), Some(id)) = (tick["last_slot"].as_i64(), tick["last_job"].as_i64())
            {
                assert!(tick["next_run"].as_i64().unwrap() > slot);
                break (slot, id);
            }
            assert!(Instant::now() < deadline, "the tick never fired: {body}");
            ember_runtime::sleep(Duration::from_millis(20)).await;
        };
        let rec = j.get(id).unwrap().expect("the tick's job");
        assert_eq!(rec.unique_key, Some(format!("cron:tick:{slot}")));
        let (status, job) = get_json(addr, &format!("/api/jobs/{id}")).await;
        assert_eq!(status, 200);
        assert_eq!(job["kind"], "fact");
        assert_eq!(job["run_at"], json!(slot));
        drop(server);
    });
}
