//! Ctrl-C on the `ember` binary while requests compute natively: the server
//! shuts down, the runtime is dropped with hogs still inside their polls, and
//! the process exits cleanly (a runtime drop once freed a body a stuck thread
//! was still running).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Hog requests sent before Ctrl-C.
const HOGS: usize = 3;

/// Kills the child if the test fails before it exits.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One GET on a fresh connection; the whole reply.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
}

/// The number after `"handoffs":` in the console's system JSON.
fn handoffs(json: &str) -> u64 {
    json.split("\"handoffs\":")
        .nth(1)
        .and_then(|rest| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn stop_while_hogs_run(round: usize) {
    let data = ember_testkit::TempDir::new("ember-cli-hogs");
    let child = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["--listen", "127.0.0.1:0", "--schedulers", "2"])
        .args(["--data", &data.arg()])
        // The hogs never finish: whatever the wait, their connections are
        // killed at its end and the runtime dropped under them.
        .args(["--shutdown-timeout", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the ember binary starts");
    let mut child = Guard(child);
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut stderr = child.0.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });
    let listening = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("the binary says where it listens within 30 s");
    let addr: SocketAddr = listening
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an address in {listening:?}"));
    // Hogs that do not finish in the test: factorials of the largest n
    // (hours of work; /spin caps n at seconds).
    let hogs: Vec<TcpStream> = (0..HOGS)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            write!(s, "GET /fact?n=10000000 HTTP/1.1\r\nhost: {addr}\r\n\r\n").unwrap();
            s
        })
        .collect();
    // Wait until the watchdog has handed every hog's scheduler off: they run
    // natively on background threads.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = handoffs(&get(addr, "/api/system"));
        if seen >= HOGS as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: {seen} hand-offs of {HOGS} hogs within 60 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let pong = get(addr, "/ping");
    assert!(
        pong.ends_with("pong"),
        "the server answers beside the hogs: {pong:?}"
    );
    // Ctrl-C.
    let status = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    // The server waits `--shutdown-timeout` (1 s) for the hogs, kills their
    // connections (they die at their next await, which never comes), and
    // the runtime is dropped under them.
    let deadline = Instant::now() + Duration::from_secs(90);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: the binary exits within 90 s of Ctrl-C"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let stderr = stderr.join().unwrap();
    let stdout: Vec<String> = lines.try_iter().collect();
    assert!(
        exit.success(),
        "round {round}: clean exit, got {exit:?}; stderr: {stderr}"
    );
    assert!(
        stdout.iter().any(|l| l == "ember: stopped"),
        "round {round}: {stdout:?}"
    );
    drop(hogs);
}

#[test]
fn ctrl_c_while_native_hogs_run_stops_the_binary_cleanly() {
    for round in 0..2 {
        stop_while_hogs_run(round);
    }
    println!("2 rounds: Ctrl-C with {HOGS} hogs handed off each time");
}
