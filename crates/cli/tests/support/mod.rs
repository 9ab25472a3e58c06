//! What the tests of the `ember` binary share: a running binary as a
//! distribution node, and plain HTTP requests to its API; [`jobs`]: a
//! binary for the jobs tests.
#![allow(dead_code)]

pub(crate) mod jobs;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ember_testkit::DEADLINE;
use serde_json::Value;

/// A running binary, killed when dropped.
pub(crate) struct Ember {
    pub(crate) child: Child,
    pub(crate) lines: mpsc::Receiver<String>,
    pub(crate) addr: SocketAddr,
    pub(crate) node: String,
    /// Its own `--data` directory (the jobs store).
    _data: ember_testkit::TempDir,
}

impl Ember {
    /// Starts `ember --sname ALIVE --cookie COOKIE [--join SEED]` with its
    /// own data directory, registering with the port mapper on
    /// `epmd_port`; its address and node name read from its first lines.
    pub(crate) fn start(alive: &str, cookie: &str, epmd_port: u16, join: Option<&str>) -> Ember {
        Ember::start_with(alive, cookie, epmd_port, join, &[])
    }

    /// [`Ember::start`] with extra environment variables.
    pub(crate) fn start_with(
        alive: &str,
        cookie: &str,
        epmd_port: u16,
        join: Option<&str>,
        env: &[(&str, &str)],
    ) -> Ember {
        let data = ember_testkit::TempDir::new("ember-cli-cluster");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ember"));
        cmd.args(["--listen", "127.0.0.1:0", "--schedulers", "2"])
            .args(["--data", &data.arg()])
            .args(["--sname", alive, "--cookie", cookie])
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(seed) = join {
            cmd.args(["--join", seed]);
        }
        let mut child = cmd.spawn().expect("the ember binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let next = |lines: &mpsc::Receiver<String>| {
            lines
                .recv_timeout(DEADLINE)
                .expect("ember said nothing in time")
        };
        let first = next(&lines);
        let addr = first
            .strip_prefix("ember: listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        let second = next(&lines);
        let node = second
            .strip_prefix("ember: distributed as ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no node name in {second:?}"))
            .to_string();
        Ember {
            child,
            lines,
            addr,
            node,
            _data: data,
        }
    }

    /// Waits for the process to exit; what it printed meanwhile.
    pub(crate) fn wait_exit(&mut self) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut rest = Vec::new();
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => rest.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("ember did not stop: {rest:?}"),
            }
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit status {status}: {rest:?}");
        rest
    }
}

impl Drop for Ember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP response: status, headers (lower-case names), body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

impl Reply {
    /// The body as JSON (the test fails if it is not).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One request on a fresh connection (`connection: close`).
pub(crate) fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("a response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// Polls `f` every 50 ms until it holds; fails the test after
/// [`DEADLINE`]. How long it took.
pub(crate) fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < DEADLINE,
            "not within {DEADLINE:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}
