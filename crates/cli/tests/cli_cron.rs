//! `ember --cron` as a real OS process: an every-second entry makes jobs
//! that run, `GET /api/cron` shows it; the node killed with SIGKILL and
//! started again on the same `--data` repeats no slot; a bad entry stops
//! the binary at start with a message naming it.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ENTRY: &str = r#"tick=* * * * * *:fact:{"n": 3}"#;

/// The node, killed when the test ends however it ends.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &str, cron: &str) -> (Node, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--schedulers",
            "2",
            "--data",
            data,
            "--cron",
            cron,
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the ember binary starts");
    let stdout = child.stdout.take().unwrap();
    let node = Node(child);
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("ember says where it listens");
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (node, addr)
}

/// `GET path`: the status and JSON body.
fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("an answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a full answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
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
    node.0.kill().unwrap();
    node.0.wait().unwrap();
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
