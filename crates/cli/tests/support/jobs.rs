//! A single `ember` binary for the jobs tests (no distribution): started
//! with extra arguments and environment, its HTTP address read from its
//! first line, optionally its stderr lines kept for [`JobsNode::wait_log`];
//! and plain requests to its API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running binary, killed when the test ends however it ends.
pub(crate) struct JobsNode {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    /// Its stderr lines, if kept (else stderr is the test's).
    log: Option<mpsc::Receiver<String>>,
}

impl JobsNode {
    /// Starts `ember --listen 127.0.0.1:0 --schedulers 2 ARGS...` with
    /// `env`; with `keep_log`, its stderr lines are kept for
    /// [`JobsNode::wait_log`]. Its stdout after the first line is drained.
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)], keep_log: bool) -> JobsNode {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ember"))
            .args(["--listen", "127.0.0.1:0", "--schedulers", "2"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(if keep_log {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("the ember binary starts");
        let stdout = child.stdout.take().unwrap();
        let log = child.stderr.take().map(|stderr| {
            let (tx, log) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            log
        });
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no address in {line:?} ({read:?})");
        };
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        JobsNode { child, addr, log }
    }

    /// Sends `sig` (`-STOP`, `-CONT`, ...) with `kill`.
    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig}");
    }

    /// Waits until a stderr line contains one of `what` (the node must
    /// have been started with `keep_log`).
    pub(crate) fn wait_log(&self, what: &[&str], within: Duration) -> String {
        let log = self.log.as_ref().expect("started with keep_log");
        let deadline = Instant::now() + within;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no log line with {what:?} in {within:?}"));
            match log.recv_timeout(left) {
                Ok(line) if what.iter().any(|w| line.contains(w)) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {what:?} in {within:?}: {e}"),
            }
        }
    }
}

impl Drop for JobsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request (JSON content type, `connection: close`); the status and
/// body.
pub(crate) fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("an answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a full answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_string())
}
