//! The console's JSON API over a real socket (`docs/console-api.md`).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_console as console;
use ember_runtime::{receive, Handle, Runtime, Spawn};
use ember_web::{Config, Router, Server};
use serde_json::{json, Value};
use support::{json_type, ApiReply as Reply};

/// Runs `body` with a console server on 127.0.0.1:0, on a fresh runtime.
fn with_console<F, Fut>(body: F)
where
    F: FnOnce(SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    support::with_console(Duration::from_secs(60), body);
}

async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Reply {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let headers = [("host", "127.0.0.1".to_string()), json_type()];
    support::request(addr, method, path, &headers, &body).await
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, None).await
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> Reply {
    request(addr, "POST", path, Some(body)).await
}

/// Polls `GET path` until `done` holds for its JSON, for up to 20 s.
async fn wait_for(addr: SocketAddr, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        let value = reply.json();
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} never got there: {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn job<'a>(jobs: &'a Value, id: &Value) -> &'a Value {
    jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == *id)
        .expect("the job is listed")
}

#[test]
fn math_thirteen_crashes_its_own_task_and_a_thousand_gives_the_sum() {
    with_console(|addr| async move {
        let crash = post(addr, "/api/math", json!({ "n": 13 })).await;
        assert_eq!(crash.status, 202, "{}", crash.body);
        let crash = crash.json();
        // Its row as it is now: the worker may have crashed already.
        assert!(
            crash["state"] == "calculating" || crash["state"] == "error",
            "{crash}"
        );
        let fine = post(addr, "/api/math", json!({ "n": 1000, "op": "sum" })).await;
        assert_eq!(fine.status, 202);
        let fine = fine.json();

        let jobs = wait_for(addr, "/api/math", |jobs| {
            job(jobs, &crash["id"])["state"] != "calculating"
                && job(jobs, &fine["id"])["state"] != "calculating"
        })
        .await;
        let crashed = job(&jobs, &crash["id"]);
        assert_eq!(crashed["state"], "error");
        assert!(
            crashed["error"].as_str().unwrap().contains("on purpose"),
            "{crashed}"
        );
        let done = job(&jobs, &fine["id"]);
        assert_eq!(done["state"], "done");
        assert_eq!(done["result"], "500500");
        assert!(done["pid"].as_str().unwrap().starts_with("<0."));
    });
}

#[test]
fn math_factorial_reports_its_digits_and_bad_input_is_400() {
    with_console(|addr| async move {
        let f = post(addr, "/api/math", json!({ "n": 1000, "op": "factorial" }))
            .await
            .json();
        let jobs = wait_for(addr, "/api/math", |jobs| {
            job(jobs, &f["id"])["state"] == "done"
        })
        .await;
        assert_eq!(job(&jobs, &f["id"])["digits"], 2568);

        let bad = post(addr, "/api/math", json!({ "n": "many" })).await;
        assert_eq!(bad.status, 400);
        assert!(bad.json()["error"]
            .as_str()
            .unwrap()
            .contains("whole number"));
        let bad = post(addr, "/api/math", json!({ "n": 5, "op": "sqrt" })).await;
        assert_eq!(bad.status, 400);
    });
}

#[test]
fn top_lists_the_busiest_processes_with_their_info() {
    with_console(|addr| async move {
        // A process that keeps a scheduler busy, awaiting now and then.
        let hog = Spawn::new()
            .label("test hog")
            .spawn(async {
                loop {
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_millis(2) {
                        std::hint::spin_loop();
                    }
                    ember_runtime::yield_point().await;
                }
            })
            .unwrap()
            .pid;
        // The first sample with the hog may cover only a little of its
        // life: wait for one that charges it.
        let top = wait_for(addr, "/api/top", |top| {
            top["processes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["spawned_as"] == "test hog" && p["cpu_share"].as_f64() > Some(0.05))
        })
        .await;
        let row = top["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["spawned_as"] == "test hog")
            .unwrap();
        assert_eq!(row["pid"], hog.to_string());
        assert!(row["cpu_share"].as_f64().unwrap() > 0.05, "{row}");
        assert!(top["processes"].as_array().unwrap().len() <= 10);
        Handle::current().exit(hog, ember_runtime::ExitReason::Kill);
    });
}

/// A task running natively (one poll that never awaits) is charged for that
/// poll as it runs: its info's CPU time is at least the poll's running time,
/// and top lists it.
#[test]
fn info_and_top_count_the_poll_in_progress_of_a_native_hog() {
    with_console(|addr| async move {
        let release = Arc::new(AtomicBool::new(false));
        let hog = Spawn::new()
            .label("native hog")
            .spawn({
                let release = release.clone();
                async move {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !release.load(Ordering::Relaxed) && Instant::now() < deadline {
                        std::hint::spin_loop();
                    }
                }
            })
            .unwrap()
            .pid;
        let path = format!(
            "/api/processes/{}",
            hog.to_string().trim_matches(['<', '>'])
        );
        let info = wait_for(addr, &path, |info| {
            info["current_poll"]["running_for_ms"]
                .as_f64()
                .is_some_and(|ms| ms >= 300.0)
        })
        .await;
        let cpu_ms = info["cpu_time_ms"].as_f64().unwrap();
        let running_ms = info["current_poll"]["running_for_ms"].as_f64().unwrap();
        assert!(cpu_ms >= running_ms, "{info}");
        let user = ember_runtime::whereis("user").expect("the default group leader");
        assert_eq!(info["group_leader"], json!(user.to_string()), "{info}");
        let top = wait_for(addr, "/api/top", |top| {
            top["processes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["spawned_as"] == "native hog")
        })
        .await;
        let row = top["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["spawned_as"] == "native hog")
            .unwrap();
        assert!(row["cpu_time_ms"].as_f64().unwrap() >= 300.0, "{row}");
        assert!(row["cpu_ns"].as_u64().unwrap() > 0, "{row}");
        release.store(true, Ordering::Relaxed);
    });
}

#[test]
fn kill_ends_a_process_and_its_info_is_then_404() {
    with_console(|addr| async move {
        let victim = Spawn::new()
            .label("victim")
            .spawn(async {
                receive::<()>().await;
            })
            .unwrap()
            .pid;
        // Until its first poll has ended it is runnable or running.
        let deadline = Instant::now() + Duration::from_secs(10);
        while ember_runtime::introspect::process_info(victim).map(|i| i.status)
            != Some(ember_runtime::Status::Waiting)
        {
            assert!(Instant::now() < deadline, "the victim never waited");
            ember_runtime::sleep(Duration::from_millis(1)).await;
        }
        let path = format!(
            "/api/processes/{}",
            victim.to_string().trim_matches(['<', '>'])
        );
        let info = get(addr, &path).await;
        assert_eq!(info.status, 200, "{}", info.body);
        let info = info.json();
        assert_eq!(info["spawned_as"], "victim");
        assert_eq!(info["status"], "waiting");

        // The `<0.N.0>` form is accepted too (URL-encoded or not).
        let bracketed = format!("/api/processes/%3C{}%3E", &path["/api/processes/".len()..]);
        assert_eq!(get(addr, &bracketed).await.status, 200);

        let killed = post(addr, &format!("{path}/kill"), json!({})).await;
        assert_eq!(killed.status, 200, "{}", killed.body);
        assert_eq!(killed.json()["alive"], false);
        assert!(!Handle::current().is_alive(victim));

        let gone = get(addr, &path).await;
        assert_eq!(gone.status, 404);
        assert!(gone.json()["error"].as_str().unwrap().contains("not alive"));
        assert_eq!(
            post(addr, &format!("{path}/kill"), json!({})).await.status,
            404
        );
    });
}

#[test]
fn a_malformed_pid_is_400() {
    with_console(|addr| async move {
        for bad in ["abc", "0.1", "0.1.2.3", "-1.0.0"] {
            let reply = get(addr, &format!("/api/processes/{bad}")).await;
            assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
            assert!(reply.json()["error"].as_str().unwrap().contains("bad pid"));
        }
        assert_eq!(
            post(addr, "/api/processes/x/kill", json!({})).await.status,
            400
        );
    });
}

#[test]
fn system_reports_schedulers_memory_and_threads() {
    with_console(|addr| async move {
        let system = get(addr, "/api/system").await;
        assert_eq!(system.status, 200);
        let system = system.json();
        assert_eq!(system["schedulers"].as_array().unwrap().len(), 2);
        assert_eq!(system["schedulers_online"], 2);
        assert!(system["process_count"].as_u64().unwrap() > 3);
        assert!(system["memory"]["rss_bytes"].as_u64().unwrap() > 0);
        assert!(system["threads"]["workers"].as_u64().unwrap() >= 2);
    });
}

#[test]
fn load_starts_supervised_workers_restarts_crashes_and_stops_them() {
    with_console(|addr| async move {
        let set = post(
            addr,
            "/api/load",
            json!({ "workers": 200, "failure_rate": 50 }),
        )
        .await;
        assert_eq!(set.status, 202, "{}", set.body);
        let load = wait_for(addr, "/api/load", |l| {
            l["live_workers"] == 200 && l["failures_total"].as_u64().unwrap() > 20
        })
        .await;
        assert_eq!(load["workers"], 200);
        // Crashed workers were restarted: jobs keep being done.
        wait_for(addr, "/api/load", |l| {
            l["jobs_total"].as_u64().unwrap() > 100
        })
        .await;

        let set = post(
            addr,
            "/api/load",
            json!({ "workers": 0, "failure_rate": 0, "schedulers": 1 }),
        )
        .await;
        assert_eq!(set.status, 202);
        let load = wait_for(addr, "/api/load", |l| l["live_workers"] == 0).await;
        assert_eq!(load["schedulers_online"], 1);
        assert_eq!(Handle::current().schedulers_online(), 1);
        let history = load["history"].as_array().unwrap();
        assert!(!history.is_empty());
        assert_eq!(history[0]["utilization"].as_array().unwrap().len(), 2);

        for bad in [
            json!({ "workers": 2_000_000 }),
            json!({ "failure_rate": 101 }),
            json!({ "schedulers": 0 }),
            json!({ "schedulers": 3 }),
        ] {
            let reply = post(addr, "/api/load", bad.clone()).await;
            assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        }
    });
}

#[test]
fn pages_and_assets_are_served_from_the_binary() {
    with_console(|addr| async move {
        for page in ["/", "/math", "/load", "/top", "/cluster"] {
            let reply = get(addr, page).await;
            assert_eq!(reply.status, 200, "{page}");
            assert!(reply.body.contains("/assets/console/console.js"), "{page}");
        }
        for asset in ["/assets/console/console.js", "/assets/console/console.css"] {
            assert_eq!(get(addr, asset).await.status, 200, "{asset}");
        }
        assert_eq!(get(addr, "/assets/console/nope.js").await.status, 404);
    });
}

#[test]
fn math_jobs_run_in_a_pool_busy_at_once_unless_queued() {
    with_console(|addr| async move {
        // Fill every slot with a factorial of hours.
        let huge = json!({ "n": 10_000_000, "op": "factorial" });
        let first = post(addr, "/api/math", huge.clone()).await;
        assert_eq!(first.status, 202, "{}", first.body);
        let limit = get(addr, "/api/math").await.json()["pool"]["limit"]
            .as_u64()
            .expect("the pool's limit");
        assert!(limit >= 2);
        let mut running = vec![first.json()];
        for _ in 1..limit {
            let reply = post(addr, "/api/math", huge.clone()).await;
            assert_eq!(reply.status, 202, "{}", reply.body);
            running.push(reply.json());
        }
        // `run`: busy at once, and no row is left behind.
        let busy = post(addr, "/api/math", json!({ "n": 1000 })).await;
        assert_eq!(busy.status, 503, "{}", busy.body);
        assert!(busy.json()["error"].as_str().unwrap().contains("busy"));
        // `sync_queue`: accepted, waits for a slot.
        let queued = post(addr, "/api/math", json!({ "n": 1000, "queue": true })).await;
        assert_eq!(queued.status, 202, "{}", queued.body);
        let queued = queued.json();
        assert_eq!(queued["state"], "queued");
        let jobs = get(addr, "/api/math").await.json();
        assert_eq!(jobs["jobs"].as_array().unwrap().len() as u64, limit + 1);
        assert_eq!(jobs["pool"]["queued"], 1);
        // Killing one running job frees its slot for the queued one.
        let victim = wait_for(addr, "/api/math", |jobs| {
            job(jobs, &running[0]["id"])["pid"].is_string()
        })
        .await;
        let pid = job(&victim, &running[0]["id"])["pid"]
            .as_str()
            .unwrap()
            .trim_matches(['<', '>'])
            .to_string();
        let killed = post(addr, &format!("/api/processes/{pid}/kill"), json!({})).await;
        assert_eq!(killed.status, 200, "{}", killed.body);
        let jobs = wait_for(addr, "/api/math", |jobs| {
            job(jobs, &queued["id"])["state"] == "done"
        })
        .await;
        assert_eq!(job(&jobs, &queued["id"])["result"], "500500");
        // The killed job's row says so once its native loop noticed.
        let jobs = wait_for(addr, "/api/math", |jobs| {
            job(jobs, &running[0]["id"])["state"] != "calculating"
        })
        .await;
        let killed = job(&jobs, &running[0]["id"]);
        assert_eq!(killed["state"], "error");
        assert!(
            killed["error"].as_str().unwrap().contains("killed"),
            "{killed}"
        );
        // Stop the other hogs.
        for row in &running[1..] {
            let jobs = wait_for(addr, "/api/math", |jobs| {
                job(jobs, &row["id"])["pid"].is_string()
            })
            .await;
            let pid = job(&jobs, &row["id"])["pid"].as_str().unwrap().to_string();
            let pid = pid.trim_matches(['<', '>']);
            post(addr, &format!("/api/processes/{pid}/kill"), json!({})).await;
        }
    });
}

#[test]
fn a_console_whose_supervisor_gave_up_starts_again_on_the_next_request() {
    with_console(|addr| async move {
        assert_eq!(get(addr, "/api/system").await.status, 200);
        let root = ember_runtime::registered()
            .into_iter()
            .find(|(name, _)| name.ends_with("_root") && name.starts_with("ember_console_"))
            .map(|(name, pid)| (name.to_string(), pid))
            .expect("the console's root supervisor is registered");
        let sampler = root.0.replace("_root", "_sampler");
        // Kill the sampler until the root supervisor gives up.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut kills = 0;
        while Handle::current().is_alive(root.1) {
            assert!(Instant::now() < deadline, "the supervisor never gave up");
            if let Some(pid) = ember_runtime::whereis(&sampler) {
                Handle::current().exit(pid, ember_runtime::ExitReason::Kill);
                kills += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(kills >= 6, "gave up after {kills} kills");
        // The next requests start it again: live figures, jobs that run.
        let first = wait_for(addr, "/api/system", |_| true).await["uptime_s"]
            .as_f64()
            .unwrap();
        let started = post(addr, "/api/math", json!({ "n": 1000 })).await;
        assert_eq!(started.status, 202, "{}", started.body);
        let id = started.json()["id"].clone();
        let jobs = wait_for(addr, "/api/math", |jobs| job(jobs, &id)["state"] == "done").await;
        assert_eq!(job(&jobs, &id)["result"], "500500");
        wait_for(addr, "/api/system", |s| {
            s["uptime_s"].as_f64().unwrap() >= first + 1.0
        })
        .await;
        assert_ne!(
            ember_runtime::whereis(&root.0),
            Some(root.1),
            "a new root supervisor"
        );
    });
}

/// A blocking `GET path` from a plain thread: the status, and when the
/// request was sent and answered.
fn blocking_get(addr: SocketAddr, path: &str) -> (u16, Instant, Instant) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let sent = Instant::now();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let answered = Instant::now();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {raw:?}"));
    (status, sent, answered)
}

#[test]
fn simultaneous_first_requests_start_the_console_once_and_both_are_answered() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const ROUNDS: usize = 1000;
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    let (mut overlapped, mut first) = (0, [0usize; 2]);
    for round in 0..ROUNDS {
        let server = rt.block_on(async {
            Server::bind(
                "127.0.0.1:0",
                console::mount(Router::new()),
                Config::default(),
            )
            .unwrap()
        });
        let addr = server.local_addr();
        // Spin gate: both threads send their first request at once.
        let gate = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let gate = gate.clone();
                std::thread::spawn(move || {
                    gate.fetch_add(1, Ordering::SeqCst);
                    while gate.load(Ordering::SeqCst) < 2 {
                        std::hint::spin_loop();
                    }
                    blocking_get(addr, "/api/math")
                })
            })
            .collect();
        let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        for (status, _, _) in &answers {
            assert_eq!(*status, 200, "round {round}");
        }
        let (a, b) = (answers[0], answers[1]);
        if a.1.max(b.1) < a.2.min(b.2) {
            overlapped += 1;
        }
        first[usize::from(b.2 < a.2)] += 1;
        let consoles = rt.block_on(async move {
            let apps: Vec<_> = ember_otp::application::which_applications()
                .into_iter()
                .filter(|a| a.starts_with("ember_console_"))
                .collect();
            for app in &apps {
                ember_otp::application::stop(app).await.unwrap();
            }
            server.shutdown().await;
            apps.len()
        });
        assert_eq!(consoles, 1, "round {round}: one console application");
    }
    println!(
        "{ROUNDS} rounds: both first requests in flight at once in {overlapped}; \
         answered first: thread 0 {} times, thread 1 {} times",
        first[0], first[1]
    );
    assert!(overlapped > 0, "the two requests never overlapped");
}
